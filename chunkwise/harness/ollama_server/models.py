"""The models the built Ollama serves, created from the packaged Gemma 3 270M GGUF.

The GGUF (the one `make engine` fetches) has no `tokenizer.chat_template`, so the Modelfile carries a
TEMPLATE in Ollama's Go-template language for Gemma's turns (`<start_of_turn>user ... <end_of_turn>`,
`<start_of_turn>model`); a system message becomes a user turn, as in Ollama's own gemma3 template. Without
it Ollama would render the bare prompt. `PARAMETER stop "<end_of_turn>"` ends an answer at the turn's end.
`PARAMETER num_thread 1` is the harness's choice for a 2-core machine shared with the client and the tests
(as `-t 1` for llama-server in bench/real_engine.py): 40 requests on 4 slots took 25.3 s with one thread
against 103.5 s with Ollama's default (one per core) at load average ~8 here (2026-12-06), where two runner
threads spin against the client for the same two cores. chunkwise never sends num_thread, so the model's
default applies; changing it per request would reload the model.

Two more models make the server errors the failure tests need, on the real server rather than a fake:

- `gemma3-270m-damaged`: a copy of the GGUF with one metadata value that `ollama create` accepts and every
  load rejects the same way: a persistent server error. Which value depends on the version (`DAMAGE`):
  - v0.24.0: `general.architecture` reads `gemmq3`. create checks only tensor offsets against the file size
    (a truncated copy is refused at create); every load fails with 500 `unable to load model: <blob>`
    (llama.cpp: "unknown model architecture"), about 0.5 s per request here.
  - v0.33.0: create copies every GGUF through `llama-quantize COPY` (`v0.33.0:server/create.go:767`,
    `copyLayerWithLlamaQuantize`), which builds the model from its architecture, so an unknown one is
    refused at create. It reads the hyper-parameters but not the vocabulary (llama.cpp 4df29be4f
    `src/llama-quant.cpp`: `llama_model_create`, `load_hparams`, `load_stats`), and copies the metadata
    as it is; so here `tokenizer.ggml.model` reads `llamq`, which every load of llama-server rejects
    (`src/llama-vocab.cpp`: "unknown tokenizer: 'llamq'").
- `gemma3-270m-poison`: the same GGUF (no new blob) with a template that fails to render a user message whose
  content is exactly `POISON`: 500 `template: ... error calling index: index out of range: 99`, streamed or
  not, every time, while every other message is answered: a poison row (a renderer error is one of the
  deterministic per-request 5xx of Ollama's routes.go).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from chunkwise.harness.ollama_server.paths import (
    BROKEN_MODEL_NAME,
    MODEL_NAME,
    NEXT_VERSION,
    POISON_MODEL_NAME,
    VERSION,
    OllamaPaths,
)
from chunkwise.harness.ollama_server.server import RunningOllama
from chunkwise.harness.ollama_server.toolchain import OllamaSetupError

TEMPLATE = '''{{- range $i, $_ := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1 }}
{{- if or (eq .Role "user") (eq .Role "system") }}<start_of_turn>user
{{ .Content }}<end_of_turn>
{{ if $last }}<start_of_turn>model
{{ end }}
{{- else if eq .Role "assistant" }}<start_of_turn>model
{{ .Content }}{{ if not $last }}<end_of_turn>
{{ end }}
{{- end }}
{{- end }}'''

#: The user message the poison model cannot render.
POISON = "POISON"
POISON_TEMPLATE = TEMPLATE.replace(
    '{{- if or (eq .Role "user")',
    f'{{{{- if and (eq .Role "user") (eq .Content "{POISON}") }}}}{{{{ index $.Messages 99 }}}}{{{{ end }}}}\n'
    '{{- if or (eq .Role "user")', 1)
#: The damaged copy per version: (GGUF string key, its value in the Gemma GGUF, the damaged value of the
#: same length, so every offset stays).
DAMAGE = {VERSION: (b"general.architecture", b"gemma3", b"gemmq3"),
          NEXT_VERSION: (b"tokenizer.ggml.model", b"llama", b"llamq")}


def modelfile(gguf: Path, template: str = TEMPLATE) -> str:
    return f'FROM {gguf}\nTEMPLATE """{template}"""\nPARAMETER stop "<end_of_turn>"\nPARAMETER num_thread 1\n'


def manifest(paths: OllamaPaths, name: str) -> Path:
    """Where Ollama keeps a local model's manifest (`server/modelpath.go`: registry.ollama.ai/library/NAME/latest)."""
    return paths.models / "manifests" / "registry.ollama.ai" / "library" / name / "latest"


def damaged_copy(gguf: Path, dest: Path, version: str = VERSION) -> Path:
    """A copy of `gguf` with `version`'s DAMAGE applied (the GGUF header: key, type 8 = string, uint64
    length, value)."""
    key, value, damaged = DAMAGE[version]
    data = bytearray(gguf.read_bytes())
    at = data.find(key) + len(key) + 12
    if data.find(key) < 0 or data[at - 12:at] != (8).to_bytes(4, "little") + len(value).to_bytes(8, "little") \
            or data[at:at + len(value)] != value:
        raise OllamaSetupError(f"{gguf}: no {key.decode()} = {value.decode()} in its header; is it the Gemma 3 GGUF?")
    data[at:at + len(damaged)] = damaged
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(dest.name + ".part")
    partial.write_bytes(data)
    partial.replace(dest)
    return dest


def create(server: RunningOllama, name: str, gguf: Path, workdir: Path, template: str = TEMPLATE) -> None:
    """`ollama create NAME -f Modelfile` against `server` (the CLI a user would run; ~1 s)."""
    workdir.mkdir(parents=True, exist_ok=True)
    file = workdir / f"{name}.Modelfile"
    file.write_text(modelfile(gguf, template))
    env = {**os.environ, "OLLAMA_HOST": server.url.removeprefix("http://"), "HOME": str(server.config.paths.home)}
    done = subprocess.run([str(server.config.paths.binary), "create", name, "-f", str(file)], env=env,
                          capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        said = " ".join((done.stderr or done.stdout).split()[-30:])
        raise OllamaSetupError(f"ollama create {name} failed: {said}; run `make ollama` again")


def ensure_models(server: RunningOllama, gguf: Path) -> list[str]:
    """Create the models missing from the cache's store, or created from another Modelfile than today's
    (the Modelfile each was created from is kept beside the store); returns the names created."""
    paths = server.config.paths
    workdir = paths.version_dir / "modelfiles"
    damaged = workdir / "gemma-3-270m-damaged.gguf"
    created = []
    for name, source, template in ((MODEL_NAME, gguf, TEMPLATE), (POISON_MODEL_NAME, gguf, POISON_TEMPLATE),
                                   (BROKEN_MODEL_NAME, damaged, TEMPLATE)):
        written = workdir / f"{name}.Modelfile"
        if manifest(paths, name).is_file() and written.is_file() and written.read_text() == modelfile(source, template):
            continue
        if source == damaged:  # the damaged copy lives only until `ollama create` has copied it into a blob
            damaged_copy(gguf, damaged, paths.version)
        create(server, name, source, workdir, template)
        damaged.unlink(missing_ok=True)
        created.append(name)
    return created
