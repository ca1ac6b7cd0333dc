"""The conformance catalogue: requests sent in order to a real Ollama and to the simulator, each
answer reduced to what must agree (issue 18 item 4).

A probe's answer becomes a *summary*: the HTTP status, the media type, and the body's shape (every
JSON object's key set at every nesting level, with the JSON type of each value; arrays by the
distinct shapes of their elements), plus the exact values that are behaviour rather than prose:
`done`, `done_reason`, `error` texts, `role`, `object`, `finish_reason`, the error `type`, and per probe
a few more (`details`, `model_info`, `capabilities` of /api/show; facts such as "prompt_eval_count
equals num_ctx"). A stream becomes the list of its line summaries with runs of equal lines folded
into one, so a 3-token and an 8-token answer have the same summary. The model's text and the token
counts are never compared (a base model's prose and a simulated tokenizer's counts differ by design).

The probes run in order against one server that starts with nothing loaded: the first chat loads the
model, a later one unloads it, and /api/ps is asked in between. Every /api chat probe sends the same
options (`OPTIONS`: num_ctx 256, temperature 0, seed 42, num_predict 8) so the model loads once; the
over-long prompts are about 3x num_ctx tokens in any tokenizer.

The queue probe (`queue_scenario`) needs its own server with one slot and OLLAMA_MAX_QUEUE=1: a
streamed request holds the only slot, a request with another num_ctx then needs a reload and waits
for it in Ollama's pending queue (`v0.24.0:server/sched.go:126-139` sends every request that is not
served by the loaded runner to `pendingReqCh`, a channel of OLLAMA_MAX_QUEUE entries, and answers
ErrMaxQueue when it is full; `processPending` holds the one it took while the runner drains,
`sched.go:163-260`), and four more such requests overflow it: at least two are 503, every time.

Used by tests/test_sim_conformance.py (the simulator against the committed fixtures, and live against
`running_ollama()`), and by `python -m tests.support.ollama_catalogue record [--version V]` (`make
ollama-fixtures [OLLAMA_VERSION=V]`), which writes the fixtures in tests/fixtures/ollama-<version>/. The
same catalogue is recorded against each built version (`VERSIONS`: 0.24.0, and 0.33.0 whose engine is
llama-server); the simulator answers it in that version's era.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

MODEL = "gemma3-270m"
DAMAGED_MODEL = "gemma3-270m-damaged"
#: The real Ollamas the catalogue is recorded against (chunkwise.harness.ollama_server.paths.VERSIONS).
VERSIONS = ("0.24.0", "0.33.0")
VERSION = VERSIONS[0]


def fixtures_dir(version: str = VERSION) -> Path:
    return Path(__file__).resolve().parent.parent / "fixtures" / f"ollama-{version}"


FIXTURES = fixtures_dir()
NUM_CTX = 256
OPTIONS: dict[str, Any] = {"num_ctx": NUM_CTX, "temperature": 0, "seed": 42, "num_predict": 8}
#: Keys whose values are behaviour wherever they occur (not under model_info: those are GGUF metadata).
VALUE_KEYS = frozenset({"done", "done_reason", "error", "role", "object", "finish_reason"})
#: Keys of an OpenAI error object (`{"error": {"message", "type", "param", "code"}}`).
ERROR_KEYS = frozenset({"message", "type", "param", "code"})
#: Scalars per list kept as values (a longer list keeps only its shape).
SHORT_LIST = 16

SKY = "Why is the sky blue? Answer in one sentence."
#: About 900 tokens by any tokenizer (words, digits, punctuation): over 3x NUM_CTX.
LONG = " ".join(f"item{i}: value {i * 7 % 1000}," for i in range(150)) + " Summarize."
SCHEMA = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
          "required": ["name", "age"]}


def user(text: str = SKY) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def opts(**changes: Any) -> dict[str, Any]:
    return {**OPTIONS, **changes}


@dataclass(frozen=True)
class Probe:
    """One request. `body` is sent as JSON unless `raw` is set (bytes, sent as they are)."""

    name: str
    method: str
    path: str
    body: Any = None
    raw: bytes | None = None
    #: Path prefixes (dotted, `[]` for list elements) whose scalar leaves are kept as values.
    exact: tuple[str, ...] = ()
    #: Named facts computed from the final JSON object (see `FACTS`).
    facts: tuple[str, ...] = ()
    note: str = ""
    #: Ask again (GET) until `models` is empty, up to SETTLE_S.
    settle: bool = False


def chat(name: str, messages: list[dict[str, str]] | None = None, *, note: str = "",
         facts: tuple[str, ...] = (), **fields: Any) -> Probe:
    body: dict[str, Any] = {"model": MODEL, "messages": user() if messages is None else messages, "options": OPTIONS}
    body.update(fields)
    return Probe(name, "POST", "/api/chat", body, facts=facts, note=note)


SHOW_EXACT = ("details", "capabilities", "model_info", "parameters", "template")
PS_EXACT = ("models[].name", "models[].model", "models[].details", "models[].context_length", "models[].size_vram")

PROBES: tuple[Probe, ...] = (
    Probe("version", "GET", "/api/version"),
    Probe("tags", "GET", "/api/tags", note="shape only: the model stores differ (the simulator has more models)"),
    Probe("ps_empty", "GET", "/api/ps", exact=PS_EXACT, note="nothing loaded yet"),
    chat("chat_load", [], note="empty messages only load the model: done_reason load"),
    Probe("ps_loaded", "GET", "/api/ps", exact=PS_EXACT),
    chat("chat_nostream", stream=False, facts=("eval_count<=num_predict",)),
    chat("chat_stream", stream=True),
    chat("chat_stream_default", note="stream left out: Ollama streams"),
    chat("chat_multiturn", [{"role": "system", "content": "Be brief."}, *user("Hello."),
                            {"role": "assistant", "content": "Hello! How can I help?"}, *user()], stream=False),
    chat("chat_stop", stream=False, options=opts(stop=[" "]), note="a stop string met: done_reason stop"),
    chat("chat_num_predict_0", stream=False, options=opts(num_predict=0, num_ctx=64), shift=False,
         note="num_predict 0 sets no limit in 0.24.0 (`llm/server.go:1621`, `runner/ollamarunner/runner.go:798`): "
              "without shift the context (64 tokens here, to keep it short) ends it"),
    chat("chat_num_predict_1", stream=False, options=opts(num_predict=1), facts=("eval_count",)),
    chat("chat_num_predict_1_stream", stream=True, options=opts(num_predict=1), facts=("eval_count",)),
    chat("chat_overlong", user(LONG), stream=False, facts=("prompt_eval_count==num_ctx",),
         note="silently cut to num_ctx (`v0.24.0:runner/ollamarunner/runner.go:149-188`)"),
    chat("chat_overlong_stream", user(LONG), stream=True, facts=("prompt_eval_count==num_ctx",)),
    chat("chat_overlong_truncate_false", user(LONG), stream=False, truncate=False),
    chat("chat_overlong_truncate_false_stream", user(LONG), stream=True, truncate=False),
    chat("chat_think_true", stream=False, think=True),
    chat("chat_think_false", stream=False, think=False),
    chat("chat_think_high", stream=False, think="high"),
    chat("chat_think_invalid", stream=False, think="bogus"),
    chat("chat_think_number", stream=False, think=5),
    chat("chat_format_json", stream=False, format="json"),
    chat("chat_format_schema", stream=False, format=SCHEMA),
    chat("chat_format_invalid", stream=False, format=5),
    chat("chat_option_num_ctx_string", stream=False, options=opts(num_ctx="big")),
    chat("chat_option_temperature_string", stream=False, options=opts(temperature="hot")),
    chat("chat_option_num_predict_float", stream=False, options=opts(num_predict=1.5), facts=("eval_count",)),
    chat("chat_option_stop_string", stream=False, options=opts(stop="x")),
    chat("chat_option_stop_numbers", stream=False, options=opts(stop=[1, 2])),
    chat("chat_option_unknown", stream=False, options=opts(no_such_option=1)),
    chat("chat_options_not_object", stream=False, options=[1]),
    chat("chat_messages_not_list", "hi", stream=False),  # type: ignore[arg-type]
    chat("chat_keep_alive_invalid", stream=False, keep_alive="forever"),
    chat("chat_keep_alive_bool", stream=False, keep_alive=True),
    chat("chat_unknown_model", stream=False, model="no-such-model"),
    Probe("chat_no_model", "POST", "/api/chat", {"messages": user(), "stream": False}),
    Probe("chat_not_json", "POST", "/api/chat", raw=b'{"model":'),
    Probe("chat_empty_body", "POST", "/api/chat", raw=b""),
    Probe("generate_nostream", "POST", "/api/generate",
          {"model": MODEL, "prompt": SKY, "stream": False, "options": OPTIONS}),
    Probe("generate_stream", "POST", "/api/generate", {"model": MODEL, "prompt": SKY, "options": OPTIONS}),
    Probe("show", "POST", "/api/show", {"model": MODEL}, exact=SHOW_EXACT),
    Probe("show_verbose", "POST", "/api/show", {"model": MODEL, "verbose": True}, exact=SHOW_EXACT),
    Probe("show_unknown", "POST", "/api/show", {"model": "no-such-model"}),
    Probe("show_verbose_string", "POST", "/api/show", {"model": MODEL, "verbose": "yes"}),
    Probe("show_no_model", "POST", "/api/show", {}),
    Probe("v1_chat", "POST", "/v1/chat/completions",
          {"model": MODEL, "messages": user(), "max_tokens": 8, "temperature": 0, "seed": 42}),
    Probe("v1_chat_stream", "POST", "/v1/chat/completions",
          {"model": MODEL, "messages": user(), "max_tokens": 8, "temperature": 0, "seed": 42, "stream": True}),
    Probe("v1_chat_unknown_model", "POST", "/v1/chat/completions",
          {"model": "no-such-model", "messages": user(), "max_tokens": 8}),
    Probe("v1_chat_not_json", "POST", "/v1/chat/completions", raw=b'{"model":'),
    Probe("v1_models", "GET", "/v1/models"),
    chat("chat_unload", [], keep_alive=0, note="empty messages with keep_alive 0: done_reason unload"),
    Probe("ps_after_unload", "GET", "/api/ps", exact=PS_EXACT, settle=True,
          note="the unload is asynchronous (`v0.24.0:server/sched.go` expireRunner): asked until it is empty, "
               "10 s at most"),
    chat("damaged_load", stream=False, model=DAMAGED_MODEL, note="every load of the damaged GGUF fails"),
    chat("damaged_load_again", stream=False, model=DAMAGED_MODEL, note="and again: a persistent error"),
)


# -- summaries -------------------------------------------------------------------------------------

def json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def shape(value: Any) -> Any:
    """Key sets at every level with the JSON type of each leaf; an array is the sorted list of the
    distinct shapes of its elements (so a 3- and a 262,144-entry vocabulary have the same shape)."""
    if isinstance(value, dict):
        return {key: shape(item) for key, item in sorted(value.items())}
    if isinstance(value, list):
        distinct: dict[str, Any] = {}
        for item in value:
            s = shape(item)
            distinct.setdefault(json.dumps(s, sort_keys=True), s)
        return [distinct[k] for k in sorted(distinct)]
    return json_type(value)


def _matches(path: str, prefixes: tuple[str, ...]) -> bool:
    return any(path == p or path.startswith(p + ".") for p in prefixes)


#: A model blob's path (in /api/show's parent_model and modelfile, and in a runner's load error): it names
#: the machine's model store, not behaviour.
BLOB = re.compile(r"\S*/blobs/sha256-[0-9a-f]{64}")


#: The prompt's length in llama-server's refusal of an over-long prompt, which Ollama >= 0.30 passes on as its
#: error text (`request (1526 tokens) exceeds ...`, `"n_prompt_tokens":1526`): a token count, which may differ
#: (the simulator's tokenizer is its own); the context size next to it must not.
PROMPT_TOKENS = (re.compile(r"request \(\d+ tokens\)"), re.compile(r'"n_prompt_tokens":\d+'))


def _scalar(value: Any, path: str = "") -> Any:
    if path == "parameters" and isinstance(value, str):  # one line per parameter, in Go's random map order
        return "\n".join(sorted(value.splitlines()))
    if not isinstance(value, str):
        return value
    value = PROMPT_TOKENS[0].sub("request (<n> tokens)", BLOB.sub("<blob>", value))
    return PROMPT_TOKENS[1].sub('"n_prompt_tokens":<n>', value)


def _is_value_key(path: str, key: str) -> bool:
    if path.startswith("model_info."):
        return False
    return key in VALUE_KEYS or (path.startswith("error.") and key in ERROR_KEYS)


def values(value: Any, exact: tuple[str, ...] = (), path: str = "") -> dict[str, Any]:
    """Behaviour values by dotted path: every VALUE_KEYS leaf (outside model_info; ERROR_KEYS inside an
    OpenAI error object) and the scalar leaves under the `exact` prefixes. A short list of scalars counts
    as one value. Under a list (`[]` in the path) the distinct values of all elements are kept, sorted."""
    out: dict[str, Any] = {}
    if isinstance(value, dict):
        for key, item in value.items():
            sub = f"{path}.{key}" if path else key
            scalar_list = isinstance(item, list) and len(item) <= SHORT_LIST and all(
                not isinstance(x, (dict, list)) for x in item)
            if _matches(sub, exact) and (not isinstance(item, (dict, list)) or scalar_list):
                out[sub] = [_scalar(x) for x in item] if isinstance(item, list) else _scalar(item, sub)
            elif _is_value_key(sub, key) and not isinstance(item, (dict, list)):
                out[sub] = _scalar(item)
            else:
                out.update(values(item, exact, sub))
    elif isinstance(value, list):
        seen: dict[str, dict[str, Any]] = {}
        for item in value:
            for sub, leaf in values(item, exact, f"{path}[]").items():
                seen.setdefault(sub, {})[json.dumps(leaf, sort_keys=True)] = leaf
        for sub, distinct in seen.items():
            out[sub] = [distinct[k] for k in sorted(distinct)]
    return out


FACTS: dict[str, Callable[[dict[str, Any]], Any]] = {
    "prompt_eval_count==num_ctx": lambda body: body.get("prompt_eval_count") == NUM_CTX,
    "eval_count<=num_predict": lambda body: 0 < body.get("eval_count", 0) <= OPTIONS["num_predict"],
    "eval_count": lambda body: body.get("eval_count"),
}


def summarize_object(body: Any, probe: Probe) -> dict[str, Any]:
    return {"shape": shape(body), "values": values(body, probe.exact)}


def _fold(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Runs of equal consecutive line summaries folded into one."""
    out: list[dict[str, Any]] = []
    for line in lines:
        if not out or out[-1] != line:
            out.append(line)
    return out


def summarize(probe: Probe, status: int, content_type: str, text: str) -> dict[str, Any]:
    """What must agree for one answer (see the module docstring)."""
    media = content_type.split(";")[0].strip()
    summary: dict[str, Any] = {"status": status, "content_type": content_type.replace(" ", "").lower()}
    final: Any = None
    if media == "application/x-ndjson" or (media == "text/event-stream"):
        lines: list[dict[str, Any]] = []
        for raw_line in text.splitlines():
            line = raw_line.strip()
            if not line:
                continue
            if media == "text/event-stream":
                if not line.startswith("data: "):
                    lines.append({"raw": line})
                    continue
                line = line[len("data: "):]
                if line == "[DONE]":
                    lines.append({"data": "[DONE]"})
                    continue
            body = json.loads(line)
            final = body
            lines.append(summarize_object(body, probe))
        summary["lines"] = _fold(lines)
    else:
        try:
            final = json.loads(text)
        except ValueError:
            summary["text"] = text
        else:
            summary.update(summarize_object(final, probe))
    if probe.facts and isinstance(final, dict):
        summary["facts"] = {name: FACTS[name](final) for name in probe.facts}
    return summary


# -- running the catalogue -------------------------------------------------------------------------

SETTLE_S = 10.0


def send(client: httpx.Client, url: str, probe: Probe) -> dict[str, Any]:
    """Send one probe and summarize the answer (streams are read to the end)."""
    kwargs: dict[str, Any] = {}
    if probe.raw is not None:
        kwargs["content"] = probe.raw
        kwargs["headers"] = {"Content-Type": "application/json"}
    elif probe.body is not None:
        kwargs["json"] = probe.body
    deadline = time.monotonic() + SETTLE_S
    while True:
        response = client.request(probe.method, url + probe.path, **kwargs)
        if not probe.settle or not response.json().get("models") or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    return summarize(probe, response.status_code, response.headers.get("content-type", ""), response.text)


def run_catalogue(url: str, probes: tuple[Probe, ...] = PROBES,
                  timeout_s: float = 600.0) -> Iterator[tuple[Probe, dict[str, Any]]]:
    """Each probe with its summary, in order, against the server at `url`."""
    with httpx.Client(timeout=timeout_s, trust_env=False) as client:
        for probe in probes:
            yield probe, send(client, url, probe)


#: The queue scenario's requests: a streamed request holding the one slot, then overflowing reloads.
QUEUE_HOLD = {"model": MODEL, "messages": user(), "stream": True, "options": opts(num_predict=2048)}
QUEUE_RELOAD = {"model": MODEL, "messages": user(), "stream": False, "options": opts(num_ctx=NUM_CTX * 2)}
QUEUE_OVERFLOW = 4


def queue_scenario(url: str, timeout_s: float = 600.0) -> dict[str, Any]:
    """Against a server with one slot and OLLAMA_MAX_QUEUE=1 (see the module docstring): the summary of
    the first 503 among the overflowing requests, and how many there were (at least 2 by the source)."""
    hold_started = threading.Event()
    stop_hold = threading.Event()

    def hold() -> None:
        with httpx.Client(timeout=timeout_s, trust_env=False) as client, \
                client.stream("POST", url + "/api/chat", json=QUEUE_HOLD) as response:
            for _ in response.iter_lines():
                hold_started.set()
                if stop_hold.is_set():
                    return  # closing the stream cancels the request: the slot is freed

    holder = threading.Thread(target=hold, daemon=True)
    holder.start()
    if not hold_started.wait(timeout_s):
        raise RuntimeError("the holding request produced no token")
    results: list[tuple[int, str, str]] = []
    lock = threading.Lock()

    def reload_request() -> None:
        with httpx.Client(timeout=timeout_s, trust_env=False) as client:
            response = client.post(url + "/api/chat", json=QUEUE_RELOAD)
        with lock:
            results.append((response.status_code, response.headers.get("content-type", ""), response.text))

    first = threading.Thread(target=reload_request, daemon=True)
    first.start()
    time.sleep(0.5)  # the scheduler takes it off the queue and waits for the slot to drain
    rest = [threading.Thread(target=reload_request, daemon=True) for _ in range(QUEUE_OVERFLOW)]
    for thread in rest:
        thread.start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with lock:
            if sum(1 for r in results if r[0] == 503) >= 2:
                break
        time.sleep(0.05)
    stop_hold.set()
    for thread in [first, *rest, holder]:
        thread.join(timeout_s)
    busy = [r for r in results if r[0] == 503]
    probe = Probe("queue_full", "POST", "/api/chat", QUEUE_RELOAD)
    summary = summarize(probe, *busy[0]) if busy else {"status": None}
    summary["facts"] = {"at_least_two_busy": len(busy) >= 2,
                        "others_answered": sorted({r[0] for r in results if r[0] != 503})}
    return summary


# -- fixtures --------------------------------------------------------------------------------------

def fixture_path(name: str, directory: Path = FIXTURES) -> Path:
    return directory / f"{name}.json"


def write_fixture(name: str, probe: Probe | None, summary: dict[str, Any], directory: Path = FIXTURES) -> None:
    record: dict[str, Any] = {"probe": name}
    if probe is not None:
        record["request"] = {"method": probe.method, "path": probe.path}
        if probe.raw is not None:
            record["request"]["raw"] = probe.raw.decode()
        elif probe.body is not None:
            record["request"]["body"] = probe.body
        if probe.note:
            record["note"] = probe.note
    record["summary"] = summary
    directory.mkdir(parents=True, exist_ok=True)
    fixture_path(name, directory).write_text(json.dumps(record, indent=1, sort_keys=False) + "\n")


def read_fixture(name: str, directory: Path = FIXTURES) -> dict[str, Any]:
    record: dict[str, Any] = json.loads(fixture_path(name, directory).read_text())
    summary: dict[str, Any] = record["summary"]
    return summary


# -- comparing -------------------------------------------------------------------------------------

def sim_options(version: str = VERSION) -> dict[str, Any]:
    """The simulator as the conformance test runs it, matching the recorded server: Ollama `version`, one
    slot, the default context (4096 on that machine), a CPU (no VRAM), non-zero rates (Go omits zero
    durations), and answers longer than any limit in the catalogue, as a base model's that never stops on
    its own."""
    return {"ollama_version": version, "parallel": 1, "vram_mib": 0, "prefill_tps": 1e7, "decode_tps": 1e7,
            "answer_tokens": (1024, 1024)}


def queue_sim_options(version: str = VERSION) -> dict[str, Any]:
    """The queue scenario's server: one slot and OLLAMA_MAX_QUEUE=1."""
    return {**sim_options(version), "max_queue": 1, "decode_tps": 200.0, "answer_tokens": (4096, 4096)}


SIM_OPTIONS = sim_options()
QUEUE_SIM_OPTIONS = queue_sim_options()


def _shape_diffs(real: Any, sim: Any, path: str) -> list[str]:
    if isinstance(real, dict) and isinstance(sim, dict):
        out: list[str] = []
        for key in sorted(set(real) | set(sim)):
            sub = f"{path}.{key}"
            if key not in sim:
                out.append(f"{sub}: only in Ollama")
            elif key not in real:
                out.append(f"{sub}: only in the simulator")
            else:
                out += _shape_diffs(real[key], sim[key], sub)
        return out
    if isinstance(real, list) and isinstance(sim, list):
        if len(real) == 1 and len(sim) == 1:
            return _shape_diffs(real[0], sim[0], path + "[]")
        if json.dumps(real, sort_keys=True) != json.dumps(sim, sort_keys=True):
            return [f"{path}[]: Ollama {json.dumps(real)} simulator {json.dumps(sim)}"]
        return []
    if real != sim:
        return [f"{path}: Ollama {json.dumps(real)} simulator {json.dumps(sim)}"]
    return []


def _object_diffs(real: dict[str, Any], sim: dict[str, Any], where: str) -> list[str]:
    out = _shape_diffs(real.get("shape"), sim.get("shape"), f"{where}shape")
    rv, sv = real.get("values", {}), sim.get("values", {})
    for key in sorted(set(rv) | set(sv)):
        if rv.get(key, "<absent>") != sv.get(key, "<absent>"):
            out.append(f"{where}values.{key}: Ollama {json.dumps(rv.get(key, '<absent>'))} "
                       f"simulator {json.dumps(sv.get(key, '<absent>'))}")
    for key in ("data", "raw"):
        if real.get(key) != sim.get(key):
            out.append(f"{where}{key}: Ollama {json.dumps(real.get(key))} simulator {json.dumps(sim.get(key))}")
    return out


def compare(real: dict[str, Any], sim: dict[str, Any]) -> list[str]:
    """Every difference between two summaries, as `<where>: Ollama X simulator Y` lines (sorted)."""
    out: list[str] = []
    for key in ("status", "content_type", "text"):
        if real.get(key) != sim.get(key):
            out.append(f"{key}: Ollama {json.dumps(real.get(key))} simulator {json.dumps(sim.get(key))}")
    if "lines" in real or "lines" in sim:
        rl, sl = real.get("lines", []), sim.get("lines", [])
        if len(rl) != len(sl):
            out.append(f"lines: Ollama {len(rl)} kinds of line, simulator {len(sl)}")
        for i, (r, s) in enumerate(zip(rl, sl, strict=False)):
            out += _object_diffs(r, s, f"lines[{i}].")
    else:
        out += _object_diffs(real, sim, "")
    rf, sf = real.get("facts", {}), sim.get("facts", {})
    for key in sorted(set(rf) | set(sf)):
        if rf.get(key) != sf.get(key):
            out.append(f"facts.{key}: Ollama {json.dumps(rf.get(key))} simulator {json.dumps(sf.get(key))}")
    return sorted(out)


def difference_key(line: str) -> str:
    """The part of a difference line that names where it is (what an allow-list entry names)."""
    return line.split(": ", 1)[0]


# -- recording -------------------------------------------------------------------------------------

def record_catalogue(url: str, directory: Path = FIXTURES) -> list[str]:
    """Run the catalogue against `url` (a fresh server with one slot) and write one fixture per probe."""
    written = []
    for probe, summary in run_catalogue(url):
        write_fixture(probe.name, probe, summary, directory)
        written.append(probe.name)
        print(f"{probe.name}: {summary['status']}", flush=True)
    return written


def record_queue(url: str, directory: Path = FIXTURES) -> None:
    """Run the queue scenario against `url` (one slot, OLLAMA_MAX_QUEUE=1) and write its fixture."""
    summary = queue_scenario(url)
    write_fixture("queue_full", Probe("queue_full", "POST", "/api/chat", QUEUE_RELOAD, note="see queue_scenario"),
                  summary, directory)
    print(f"queue_full: {summary['status']} {summary['facts']}", flush=True)


def main(argv: list[str] | None = None) -> int:
    """`record`: start the built Ollama `--version` twice (`make ollama`, `make ollama-next`) and re-record
    its fixtures, or use running servers with `--url URL --queue-url URL` (fresh ones: the catalogue starts
    with nothing loaded)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m tests.support.ollama_catalogue")
    parser.add_argument("command", choices=["record"])
    parser.add_argument("--version", choices=VERSIONS, default=VERSION, help="which built Ollama (default %(default)s)")
    parser.add_argument("--url", help="a running Ollama of that version with one slot, nothing loaded")
    parser.add_argument("--queue-url", help="a running Ollama of that version with one slot and OLLAMA_MAX_QUEUE=1")
    parser.add_argument("--out", type=Path, default=None, help="fixture directory (default tests/fixtures/ollama-V)")
    args = parser.parse_args(argv)
    out = args.out or fixtures_dir(args.version)
    if args.url and args.queue_url:
        record_catalogue(args.url, out)
        record_queue(args.queue_url, out)
        return 0
    import tempfile

    from chunkwise.harness.ollama_server.paths import ollama_paths
    from chunkwise.harness.ollama_server.server import running_ollama

    paths = ollama_paths(version=args.version)
    with tempfile.TemporaryDirectory(prefix="chunkwise-ollama-fixtures-") as logs:
        with running_ollama(1, paths=paths, log_path=Path(logs) / "catalogue.log") as server:
            record_catalogue(server.url, out)
        with running_ollama(1, max_queue=1, paths=paths, log_path=Path(logs) / "queue.log") as server:
            record_queue(server.url, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
