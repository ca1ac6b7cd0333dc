"""Which Ollama release the simulator imitates: the behaviours that changed between versions.

`SimOptions.ollama_version` (the string GET /api/version reports) selects the era. The default is
current Ollama (v0.33.0-rc2, llama-server engine). A source build reports "0.0.0"
(`v0.33.0-rc2:version/version.go`) and is treated as current. Each switch cites the tag where the
behaviour starts:

  thinks_by_default   v0.12.4: a thinking-capable model thinks when `think` is unset
                      (`v0.12.4:server/routes.go`; `v0.33.0-rc2:server/routes.go:2615-2620`).
  truncate_fields     v0.12.6: /api/chat and /api/generate read `truncate` and `shift`
                      (commit 6544e1473, #12582); older servers ignore unknown fields.
  truncation          how an over-long prompt is cut when `truncate` is on:
                      keep-tail  v0.4-v0.29 Go runners: first num_keep(+BOS) tokens and the tail,
                                 exactly num_ctx (`v0.13.0:runner/llamarunner/runner.go:143-153`);
                      minus-one  v0.30.0-v0.30.10: num_ctx - 1 (`v0.30.0:llm/llama_server.go:277-294`);
                      half       v0.30.11+: num_ctx - max((num_ctx - keep) // 2, 1)
                                 (`v0.33.0-rc2:llm/llama_server.go:279-331`).
  llama_server        v0.30.0+: the engine is llama-server; `truncate: false` over-length errors carry
                      llama-server's JSON body as the message (`v0.33.0-rc2:llm/llama_server.go:1648-1654`),
                      runner errors say "llama-server process has terminated" (`:1306-1325`).
  uncached_count      exactly v0.30.0: prompt_eval_count counted only the tokens not found in the
                      prefix cache (`v0.30.0:llm/llama_server.go:1470`; fixed by #16428 in v0.30.1,
                      `v0.33.0-rc2:llm/llama_server.go:1511-1513`).
  queue_loads_only    v0.11.5+: OLLAMA_MAX_QUEUE bounds only requests that need a (re)load; requests
                      for a loaded runner wait without limit (`v0.33.0-rc2:server/sched.go:197-208`).

Read in the real Ollama 0.33.0 built here (tests/fixtures/ollama-0.33.0/) and its tag's source. Where a
change lies between two tags read (v0.24.0, v0.30.0, v0.30.1, v0.31.0, v0.32.15, v0.33.0), it is taken to
start at the later one; the tags between were not read:

  list_cache          v0.30.0: /api/tags answers from the model-list cache, whose details add
                      `context_length` and `embedding_length` and whose entries carry `capabilities`
                      (`v0.33.0:server/model_list_cache.go:322-375`; absent in v0.24.0).
  show_display_name   v0.30.0: /api/show's 404 names the model with its tag, `'x:latest'` (the handler sets
                      `req.Model = name.DisplayShortest()` first, `v0.33.0:server/routes.go:1355,1367`).
  create_copies_gguf  v0.30.0: `ollama create` rewrites a GGUF through `llama-quantize COPY` into a new
                      layer that has no `From`, so /api/show's `parent_model` (`layer.From`,
                      `v0.33.0:server/images.go:719`) is empty (`server/create.go:767,942`).
  openai_finish_chunk v0.32.15 (not in v0.31.0): an OpenAI stream names the role only in its first chunk
                      and ends with a chunk of its own, empty delta and `finish_reason`, after the last
                      content chunk; the metrics-only trailer is not sent as a content chunk
                      (`v0.33.0:middleware/openai.go:100-160`, `openai/openai.go:301-340,369-395`).
  (llama_server)      with `truncate: false` an over-long prompt is refused by llama-server itself, whose
                      JSON error body Ollama passes on as the message (`v0.33.0:llm/llama_server.go:1648-1654`,
                      `statusErrorMessage` :1782): `{"error":{"code":400,"message":"request (N tokens) exceeds
                      the available context size (C tokens), try increasing it",...}}` (llama.cpp 4df29be4f
                      `tools/server/server-context.cpp:3113-3118`, `server-common.cpp:52`).

Facts of the Go-runner eras (before v0.30.0), read in `v0.24.0`:

  first_token_in_prompt  prompt_eval_duration runs until the first generated token and eval_duration
                      covers only the tokens after it (`runner/ollamarunner/runner.go:750-754,984-986`,
                      `runner/llamarunner/runner.go:518-524`): a one-token answer has no eval_duration.
  zero_predict_unbounded  num_predict 0 sets no limit: the server caps only negative or > 10 x num_ctx
                      values (`llm/server.go:1621-1623`) and the runners stop on a count only when it is
                      > 0 (`runner/ollamarunner/runner.go:798`, `runner/llamarunner/runner.go:425`).
  engine              which runner serves an architecture (`engine_of`): Ollama's own engine for the
                      architectures `fs/ggml/ggml.go:277-303` requires it for (gemma3, gpt-oss, qwen3,
                      ...), the vendored llama.cpp runner for the rest (llama, qwen2, gemma2); from
                      v0.30.0 llama-server for all. The lists of eras before v0.24.0 are taken to be
                      v0.24.0's (not read).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

#: The release the simulator imitates by default.
CURRENT_VERSION = "0.33.0-rc2"


def version_tuple(text: str) -> tuple[int, int, int]:
    """(major, minor, patch) of a version string; pre-release tails ("-rc2") are ignored."""
    parts = [int("".join(ch for ch in p if ch.isdigit()) or 0) for p in text.split("-")[0].split(".")[:3]]
    parts += [0] * (3 - len(parts))
    return parts[0], parts[1], parts[2]


@dataclass(frozen=True)
class Era:
    version: tuple[int, int, int]
    thinks_by_default: bool
    truncate_fields: bool
    truncation: str
    llama_server: bool
    uncached_count: bool
    queue_loads_only: bool
    first_token_in_prompt: bool = False
    zero_predict_unbounded: bool = False
    list_cache: bool = False
    show_display_name: bool = False
    create_copies_gguf: bool = False
    openai_finish_chunk: bool = False


#: Architectures Ollama's own engine serves in the Go-runner eras (`v0.24.0:fs/ggml/ggml.go:277-303`).
OLLAMA_ENGINE_ARCHS = frozenset({
    "bert", "deepseek2", "deepseekocr", "gemma3", "gemma3n", "gemma4", "gptoss", "gpt-oss", "laguna", "llama4",
    "mistral3", "mllama", "nemotron_h", "nemotron_h_moe", "nemotron_h_omni", "nomic-bert", "olmo3", "qwen25vl",
    "qwen3", "qwen3moe", "qwen35", "qwen35moe", "qwen3next", "qwen3vl", "qwen3vlmoe", "glm4moelite", "glmocr",
    "lfm2", "lfm2moe",
})


def engine_of(era: Era, arch: str) -> str:
    """"llama-server" (v0.30+), "ollama" (Ollama's own engine) or "llamarunner" (vendored llama.cpp)."""
    if era.llama_server:
        return "llama-server"
    return "ollama" if arch in OLLAMA_ENGINE_ARCHS else "llamarunner"


@lru_cache(maxsize=32)
def era_of(version: str) -> Era:
    """The behaviours of Ollama `version` ("0.0.0", a source build, counts as current)."""
    v = version_tuple(version)
    if v == (0, 0, 0):
        v = version_tuple(CURRENT_VERSION)
    if v >= (0, 30, 11):
        truncation = "half"
    elif v >= (0, 30, 0):
        truncation = "minus-one"
    else:
        truncation = "keep-tail"
    return Era(
        version=v,
        thinks_by_default=v >= (0, 12, 4),
        truncate_fields=v >= (0, 12, 6),
        truncation=truncation,
        llama_server=v >= (0, 30, 0),
        uncached_count=v == (0, 30, 0),
        queue_loads_only=v >= (0, 11, 5),
        first_token_in_prompt=v < (0, 30, 0),
        zero_predict_unbounded=v < (0, 30, 0),
        list_cache=v >= (0, 30, 0),
        show_display_name=v >= (0, 30, 0),
        create_copies_gguf=v >= (0, 30, 0),
        openai_finish_chunk=v >= (0, 32, 15),
    )
