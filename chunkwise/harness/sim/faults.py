"""Seeded fault draws for /api/chat and /api/generate.

A request's fault depends only on (SimOptions.seed, request fingerprint, how many times that
fingerprint was received before), never on timing or concurrency, so a run is reproducible and a
retried request gets a fresh draw. u = first 8 bytes of sha256("seed:fingerprint:n") / 2**64 picks
the kind by cumulative rates in the order error, reset, stall, incomplete:

  error       HTTP 500 `RUNNER_STOPPED` at once.
  reset       headers and part of the body are sent, then the TCP connection is aborted.
  stall       the request holds its slot silently for stall_s, then is answered normally; if the
              client went away meanwhile it is recorded as 499 and not answered (Ollama cancels
              generation when the client disconnects).
  incomplete  HTTP 200 whose body never reaches `done: true` and has no metrics (Ollama's
              repeated-token abort, research ollama.md section 1).
  stream_error  a runner crash after the first token: the 200 stream carries about half of the
              answer, then one `{"error": STREAM_CRASH}` line, and closes. Ollama writes an error that
              arrives after the first byte as an NDJSON line and keeps the 200
              (`v0.33.0-rc2:server/routes.go:2109-2123`); with `stream: false` the collected answer
              is dropped and the error is a 500 (`routes.go:2406-2418`). The text is llama-server's
              crash message when the connection drops mid-answer (`llm/llama_server.go:1759-1767`).

Persistent failures (`SimOptions.load_failure`) are not draws: every load attempt fails the same
way, and each request that needs the model tries the load again (`server/sched.go:575-600,733-738`;
`handleScheduleError` answers 500 with the error text, `server/routes.go:3107-3118`).

Faults of one request (`persistent_fault`) are not draws per receipt either: they depend only on (seed,
fingerprint), so every retry of the same request meets them again, as on a real server:

  poison  HTTP 500 with a template error, every time, once the model is loaded: Ollama renders the chat
          template after scheduling the runner and answers a render error 500 (`v0.24.0:server/routes.go:
          2432-2436`). The text is what the real Ollama 0.24.0 of `make ollama` answers for the
          `gemma3-270m-poison` model's one unrenderable message (harness/ollama_server/models.py). Other
          real errors of one request behave the same: a builtin parser that cannot read the model's
          answer (`v0.33.0-rc2:server/routes.go:2892-2895`), llama-server refusing that prompt
          (`llm/llama_server.go:1648-1655`).
  repeat  at temperature 0 (greedy decoding: the same tokens every time) the answer repeats one token:
          Ollama aborts a completion once more than 30 identical tokens arrived in a row and ends the
          answer without its final line (`v0.24.0:llm/server.go:1697-1706`: `tokenRepeat > 30` returns
          before the callback); 31 tokens are sent, then the stream ends (`stream: false`: 200 with
          `done: false`). Seen on the real 0.24.0 for the prompt `"a " * 60` at temperature 0 and 0.4.
          Any temperature above 0 samples and escapes the loop here (on the real model a warmer retry
          escapes it only sometimes: 0.8 with seed 0 did, 0.8 with seed 1 did not).
"""

from __future__ import annotations

import hashlib

from chunkwise.harness.sim.era import engine_of
from chunkwise.harness.sim.options import SimOptions
from chunkwise.harness.sim.profiles import ModelProfile

RUNNER_STOPPED = (
    "model runner has unexpectedly stopped, this may be due to resource limitations or an internal error, "
    "check ollama server logs for details"
)
#: A runner of Ollama's own engine that died while loading (`v0.24.0:llm/server.go:1241`).
MODEL_FAILED_TO_LOAD = (
    "model failed to load, this may be due to resource limitations or an internal error, check ollama server logs "
    "for details"
)
#: Error line inside a 200 stream (`v0.33.0-rc2:llm/llama_server.go:1766`; msg = "unexpected EOF"
#: when llama-server left no error line in its log).
STREAM_CRASH = "an error was encountered while running the model: unexpected EOF"
#: What llama-server's failed load leaves in Ollama's status writer for the damaged GGUF of the llama-server
#: eras (the harness damages `tokenizer.ggml.model` there, as 0.33.0's create refuses an unknown architecture:
#: chunkwise/harness/ollama_server/models.py): llama.cpp's loader line (4df29be4f `src/llama.cpp:355,372`)
#: twice, each captured from "error loading model" on and joined by a newline (`v0.33.0:llm/status.go`
#: AppendError, errorPrefixes); as a real 0.33.0 answered (tests/fixtures/ollama-0.33.0/damaged_load.json).
DAMAGED_VOCABULARY = "\n".join(["error loading model: error loading model vocabulary: unknown tokenizer: 'llamq'"] * 2)
#: Order matters: the cumulative draw adds kinds in this order (new kinds go last, so old seeds keep their draws).
KINDS = ("error", "reset", "stall", "incomplete", "stream_error")
#: Faults of one request, whatever the receipt (`persistent_fault`).
PERSISTENT_KINDS = ("poison", "repeat")
#: The render error of the real poison model (`gemma3-270m-poison`, Ollama 0.24.0).
POISON_ERROR = 'template: :3:57: executing "" at <index $.Messages 99>: error calling index: index out of range: 99'
#: Ollama aborts an answer once a token repeats more than this many times in a row (`llm/server.go:1704`).
REPEAT_LIMIT = 30


def load_error(options: SimOptions, num_ctx: int, profile: ModelProfile | None = None) -> str | None:
    """The 500 message of a failed model load under `options`, or None when the load succeeds.

    A profile that `load_fails` (a damaged GGUF) fails every load whatever the options. Texts by engine
    (`era.engine_of`): llama-server era `llm/llama_server.go:1306-1309` ("llama-server process has
    terminated: exit status 1: <last error line>"); the vendored llama.cpp runner of the Go eras
    `v0.24.0:llm/server.go:1396` ("llama runner process has terminated: <error>"); Ollama's own engine,
    whose runner dies while answering the load request, `v0.24.0:llm/server.go:1239-1241` ("model failed
    to load, ...": seen on a real 0.24.0 with a gemma3 GGUF whose tensor table was damaged). A GGUF whose
    architecture no engine knows goes to the llama.cpp runner, whose model loader fails: "unable to load
    model: <blob path>" (`v0.24.0:llama/llama.go:308-311`, seen on a real 0.24.0). The last error lines are the ones
    `llm/status.go:67-97` recognises: "error loading model" and CUDA's "cudaMalloc failed: out of memory"."""
    mode = "load" if profile is not None and profile.load_fails else options.load_failure
    if mode == "none" or (mode == "oom" and num_ctx < options.oom_num_ctx):
        return None
    engine = engine_of(options.era, profile.arch if profile is not None else "llama")
    if mode == "oom":
        detail = "cudaMalloc failed: out of memory"
    elif engine == "ollama":
        return MODEL_FAILED_TO_LOAD
    elif engine == "llamarunner" and profile is not None and profile.load_fails:
        return f"unable to load model: {profile.blob_path}"  # `v0.24.0:llama/llama.go:308-311`
    elif engine == "llama-server" and profile is not None and profile.load_fails:
        detail = DAMAGED_VOCABULARY
    else:
        detail = "error loading model: llama_model_loader: failed to load model from the model blob"
    if engine == "llama-server":
        return f"llama-server process has terminated: exit status 1: {detail}"
    return f"llama runner process has terminated: {detail}"


def draw(seed: int, fingerprint: str, previous_receipts: int) -> float:
    """Uniform [0, 1) number for this receipt of this fingerprint."""
    digest = hashlib.sha256(f"{seed}:{fingerprint}:{previous_receipts}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def pick_fault(options: SimOptions, fingerprint: str, previous_receipts: int) -> str | None:
    """The fault kind for this receipt, or None."""
    rates = (options.fail_rate, options.reset_rate, options.stall_rate, options.incomplete_rate,
             options.stream_error_rate)
    if not any(rates):
        return None
    u = draw(options.seed, fingerprint, previous_receipts)
    edge = 0.0
    for kind, rate in zip(KINDS, rates, strict=True):
        edge += rate
        if u < edge:
            return kind
    return None


def persistent_fault(options: SimOptions, fingerprint: str, temperature: object, num_predict: int) -> str | None:
    """"poison", "repeat" or None for this request, the same on every receipt (see the module docstring). A
    repeat needs greedy decoding (temperature 0) and room for more than `REPEAT_LIMIT + 1` tokens."""
    if options.poison_rate and draw(options.seed, f"poison:{fingerprint}", 0) < options.poison_rate:
        return "poison"
    greedy = isinstance(temperature, int | float) and temperature <= 0
    room = num_predict <= 0 or num_predict > REPEAT_LIMIT + 1
    if options.repeat_rate and greedy and room and draw(options.seed, f"repeat:{fingerprint}", 0) < options.repeat_rate:
        return "repeat"
    return None
