"""Built-in model profiles of the simulator: the architecture numbers of real Ollama models.

Numbers are the models' published configurations (layers, attention heads, KV heads, head size, training
context: meta-llama/llama-models `models/sku_list.py` for Llama 3.x, the Qwen2.5 technical report arXiv
2412.15115 Table 1, Hugging Face `google/gemma-2-9b` config.json) plus the size of the usual Ollama
download. They drive /api/show (`gguf_view.py`), the num_ctx clamp, the /api/ps memory figure
(`memory.py`), the chat template (`templates.py`) and whether the prompt starts with a BOS token.
`gemma3-270m` is the real-Ollama tier's model, every figure taken from a real Ollama 0.24.0;
`gemma3-270m-damaged` is the same model with a GGUF that no runner can load.

Names: a profile is found by its exact name (`llama3.1:8b`). A name without a tag gets `:latest`,
as Ollama does, and `ALIASES` maps `<family>:latest` to the tag the Ollama library serves under
`latest` (llama3.1 -> llama3.1:8b, ...). Anything else is `model 'X' not found`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from typing import Any


@dataclass(frozen=True)
class ModelProfile:
    """One simulated model. Sizes in bytes, lengths in tokens."""

    name: str
    arch: str
    family: str
    parameter_size: str
    parameter_count: int
    quantization_level: str
    file_type: int
    weights_bytes: int
    block_count: int
    head_count: int
    head_count_kv: int
    embedding_length: int
    feed_forward_length: int
    context_length: int
    vocab_size: int
    adds_bos: bool
    tokenizer_model: str
    key_length: int | None = None
    value_length: int | None = None
    sliding_window: int | None = None
    #: /api/show capabilities (`v0.33.0-rc2:types/model/capability.go`): "completion" always,
    #: "tools"/"thinking"/"vision" only where the real model has them.
    capabilities: tuple[str, ...] = ("completion",)
    #: The model takes think levels and cannot stop thinking: `think: false` still yields a trace
    #: (gpt-oss; `v0.33.0-rc2:docs/capabilities/thinking.mdx:12,151`).
    think_levels_only: bool = False
    modified_at: str = "2024-11-26T10:00:00.000000Z"
    extra_info: dict[str, Any] = field(default_factory=dict)
    #: Chat template family (`templates.py`).
    template: str = "llama3"
    #: Bytes of tensor data (the weights a runner holds), when not `weights_bytes` (the download size).
    tensor_bytes: int | None = None
    #: Bytes of a token embedding that also serves as the output layer (tied embeddings): Ollama's own
    #: engine loads it a second time as `output` (`v0.24.0:model/models/gemma3/model_text.go:51`,
    #: `gguf:"output,alt:token_embd"`), llama.cpp does not.
    tied_embedding_bytes: int = 0
    #: The GGUF's scalar metadata exactly, when known (replaces the keys built from the fields above).
    gguf_info: dict[str, Any] | None = None
    #: The GGUF's array metadata besides the vocabulary: key -> values (JSON null unless verbose).
    gguf_arrays: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    #: The vocabulary arrays in the GGUF (`tokenizer.ggml.` + each name).
    vocabulary: tuple[str, ...] = ("tokens", "token_type")
    #: Every load of this model fails (a damaged GGUF: the runner dies while loading it).
    load_fails: bool = False
    #: Modelfile PARAMETERs besides the template's stop strings: (name, value as Ollama prints it).
    parameters: tuple[tuple[str, str], ...] = ()

    @property
    def blob_path(self) -> str:
        """Where the model's GGUF would be in a model store (/api/show `parent_model`, load errors)."""
        return f"/sim/models/blobs/sha256-{self.digest}"

    @property
    def resident_tensor_bytes(self) -> int:
        return self.tensor_bytes if self.tensor_bytes is not None else self.weights_bytes

    @property
    def digest(self) -> str:
        """sha256 hex of a fixed string per profile. NOT the registry's digest (tests must not rely on it)."""
        return self.build_digest("")

    def build_digest(self, build: str) -> str:
        """The digest of another build of this model (`SimOptions.model_build`); "" is the usual one."""
        return hashlib.sha256(f"chunkwise-sim-model:{self.name}{':' + build if build else ''}".encode()).hexdigest()

    def model_info(self, verbose: bool = False) -> dict[str, Any]:
        """/api/show `model_info` of this profile (`gguf_view.model_info`)."""
        from chunkwise.harness.sim.gguf_view import model_info  # gguf_view imports this module

        return model_info(self, verbose)

    @property
    def thinks(self) -> bool:
        return "thinking" in self.capabilities

    def details(self) -> dict[str, Any]:
        return {
            "parent_model": "",
            "format": "gguf",
            "family": self.family,
            "families": [self.family],
            "parameter_size": self.parameter_size,
            "quantization_level": self.quantization_level,
        }


#: The packaged Gemma 3 270M GGUF (Q4_K_M) as `ollama create` stores it with the Gemma Modelfile of
#: chunkwise/harness/ollama_server (the real-Ollama tier's model): every figure from a real Ollama 0.24.0
#: (`/api/show`, `/api/tags`; 2026-12-06). Tensor data 246,587,904 bytes (the sum over /api/show's
#: tensors); the Q8_0 token embedding (640 x 262,144: 178,257,920 bytes) doubles as the output layer,
#: which Ollama's engine loads twice: its log says "model weights" 405.2 MiB = the two together.
GEMMA3_270M = ModelProfile(
    name="gemma3-270m:latest", arch="gemma3", family="gemma3", parameter_size="268.10M",
    parameter_count=268098176, quantization_level="Q4_K_M", file_type=15,
    weights_bytes=253113837, tensor_bytes=246587904, tied_embedding_bytes=178257920,
    block_count=18, head_count=4, head_count_kv=1, embedding_length=640, feed_forward_length=2048,
    context_length=32768, vocab_size=262144, adds_bos=True, tokenizer_model="llama",
    key_length=256, value_length=256, sliding_window=512, template="gemma",
    modified_at="2026-12-06T22:45:10.624668002Z",
    gguf_info={
        "gemma3.attention.head_count": 4, "gemma3.attention.head_count_kv": 1,
        "gemma3.attention.key_length": 256, "gemma3.attention.layer_norm_rms_epsilon": 1e-06,
        "gemma3.attention.sliding_window": 512, "gemma3.attention.value_length": 256, "gemma3.block_count": 18,
        "gemma3.context_length": 32768, "gemma3.embedding_length": 640, "gemma3.feed_forward_length": 2048,
        "gemma3.rope.freq_base": 1000000, "general.architecture": "gemma3", "general.basename": "gemma-3",
        "general.file_type": 15, "general.license": "gemma", "general.parameter_count": 268098176,
        "general.quantization_version": 2, "general.size_label": "270M", "general.type": "model",
        "tokenizer.ggml.add_bos_token": True, "tokenizer.ggml.add_eos_token": False,
        "tokenizer.ggml.add_sep_token": False, "tokenizer.ggml.add_space_prefix": False,
        "tokenizer.ggml.bos_token_id": 2, "tokenizer.ggml.eos_token_id": 1, "tokenizer.ggml.model": "llama",
        "tokenizer.ggml.padding_token_id": 0, "tokenizer.ggml.pre": "default", "tokenizer.ggml.unknown_token_id": 3,
    },
    gguf_arrays={"general.tags": ("gemma3", "gemma", "google", "text-generation")},
    vocabulary=("tokens", "scores", "token_type"),
    parameters=(("num_thread", "1"),),  # the harness's Modelfile (chunkwise/harness/ollama_server/models.py)
)

#: `gemma3-270m-damaged` of the real-Ollama tier: the same GGUF with `general.architecture` changed to
#: "gemmq3" (chunkwise/harness/ollama_server/models.py), which `ollama create` accepts and no runner loads.
#: The real tier's twin for 0.30 and later keeps gemma3 and damages the tokenizer instead (their create
#: refuses an unknown architecture); in those eras only its load error follows it (`faults.DAMAGED_VOCABULARY`),
#: the architecture /api/show would report is not modelled.
GEMMA3_270M_DAMAGED = replace(
    GEMMA3_270M, name="gemma3-270m-damaged:latest", arch="gemmq3", family="gemmq3", load_fails=True,
    gguf_info={**(GEMMA3_270M.gguf_info or {}), "general.architecture": "gemmq3"},
)

_LLAMA3_EXTRA = {"llama.rope.freq_base": 500000, "llama.attention.layer_norm_rms_epsilon": 1e-05}

PROFILES: dict[str, ModelProfile] = {
    p.name: p
    for p in (
        ModelProfile(
            name="llama3.1:8b", arch="llama", family="llama", parameter_size="8.0B",
            parameter_count=8030261248, quantization_level="Q4_K_M", file_type=15,
            weights_bytes=4920753328, block_count=32, head_count=32, head_count_kv=8,
            embedding_length=4096, feed_forward_length=14336, context_length=131072,
            vocab_size=128256, adds_bos=True, tokenizer_model="gpt2",
            capabilities=("completion", "tools"),
            extra_info={**_LLAMA3_EXTRA, "llama.rope.dimension_count": 128},
        ),
        ModelProfile(
            name="llama3.2:3b", arch="llama", family="llama", parameter_size="3.2B",
            parameter_count=3212749888, quantization_level="Q4_K_M", file_type=15,
            weights_bytes=2019393189, block_count=28, head_count=24, head_count_kv=8,
            embedding_length=3072, feed_forward_length=8192, context_length=131072,
            vocab_size=128256, adds_bos=True, tokenizer_model="gpt2",
            capabilities=("completion", "tools"),
            extra_info={**_LLAMA3_EXTRA, "llama.rope.dimension_count": 128},
        ),
        ModelProfile(
            name="qwen2.5:7b", arch="qwen2", family="qwen2", parameter_size="7.6B",
            parameter_count=7615616512, quantization_level="Q4_K_M", file_type=15,
            weights_bytes=4683087332, block_count=28, head_count=28, head_count_kv=4,
            embedding_length=3584, feed_forward_length=18944, context_length=32768,
            vocab_size=152064, adds_bos=False, tokenizer_model="gpt2",
            capabilities=("completion", "tools"),
            extra_info={"qwen2.rope.freq_base": 1000000, "qwen2.attention.layer_norm_rms_epsilon": 1e-06},
            template="chatml",
        ),
        ModelProfile(
            name="gemma2:9b", arch="gemma2", family="gemma2", parameter_size="9.2B",
            parameter_count=9241705984, quantization_level="Q4_0", file_type=2,
            weights_bytes=5443152417, block_count=42, head_count=16, head_count_kv=8,
            embedding_length=3584, feed_forward_length=14336, context_length=8192,
            vocab_size=256000, adds_bos=True, tokenizer_model="llama",
            key_length=256, value_length=256, sliding_window=4096,
            extra_info={"gemma2.attn_logit_softcapping": 50, "gemma2.final_logit_softcapping": 30},
            template="gemma",
        ),
        # Thinking models (research ollama-fidelity-audit.md #14). qwen3:8b: Qwen3-8B config (36 layers,
        # 32 heads, 8 KV heads, head_dim 128, hidden 4096, 40,960 context); gpt-oss:20b: 24 layers,
        # 64 heads, 8 KV heads, head_dim 64, hidden 2880, 131,072 context, 128-token sliding window.
        ModelProfile(
            name="qwen3:8b", arch="qwen3", family="qwen3", parameter_size="8.2B",
            parameter_count=8190735360, quantization_level="Q4_K_M", file_type=15,
            weights_bytes=5225387923, block_count=36, head_count=32, head_count_kv=8,
            embedding_length=4096, feed_forward_length=12288, context_length=40960,
            vocab_size=151936, adds_bos=False, tokenizer_model="gpt2",
            key_length=128, value_length=128,
            capabilities=("completion", "tools", "thinking"),
            extra_info={"qwen3.rope.freq_base": 1000000, "qwen3.attention.layer_norm_rms_epsilon": 1e-06},
            template="chatml",
        ),
        ModelProfile(
            name="gpt-oss:20b", arch="gptoss", family="gptoss", parameter_size="20.9B",
            parameter_count=20914757184, quantization_level="MXFP4", file_type=4,
            weights_bytes=13780162412, block_count=24, head_count=64, head_count_kv=8,
            embedding_length=2880, feed_forward_length=2880, context_length=131072,
            vocab_size=201088, adds_bos=False, tokenizer_model="gpt2",
            key_length=64, value_length=64, sliding_window=128,
            capabilities=("completion", "tools", "thinking"), think_levels_only=True,
            extra_info={"gptoss.expert_count": 32, "gptoss.expert_used_count": 4},
            template="harmony",
        ),
        GEMMA3_270M,
        GEMMA3_270M_DAMAGED,
    )
}

#: `<name>:latest` -> profile name, as the Ollama library tags them.
ALIASES: dict[str, str] = {
    "llama3.1:latest": "llama3.1:8b",
    "llama3.2:latest": "llama3.2:3b",
    "qwen2.5:latest": "qwen2.5:7b",
    "gemma2:latest": "gemma2:9b",
    "qwen3:latest": "qwen3:8b",
    "gpt-oss:latest": "gpt-oss:20b",
}


def resolve(name: object) -> ModelProfile | None:
    """The profile a request's `model` names, or None (-> 404 `model 'X' not found`)."""
    if not isinstance(name, str):
        return None
    full = name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"
    return PROFILES.get(full) or PROFILES.get(ALIASES.get(full, ""))
