"""Built-in model profiles of the simulator: the architecture numbers of real Ollama models.

Numbers are the models' published configurations (layers, attention heads, KV heads, head size, training
context: meta-llama/llama-models `models/sku_list.py` for Llama 3.x, the Qwen2.5 technical report arXiv
2412.15115 Table 1, Hugging Face `google/gemma-2-9b` config.json) plus the size of the usual Ollama
download. They drive /api/show `model_info`, the num_ctx clamp, the /api/ps memory figure (via
`chunkwise.ollama.kv`) and, for the `half` truncation mode, whether the tokenizer adds a BOS token
(Ollama counts it in num_keep).

Names: a profile is found by its exact name (`llama3.1:8b`). A name without a tag gets `:latest`,
as Ollama does, and `ALIASES` maps `<family>:latest` to the tag the Ollama library serves under
`latest` (llama3.1 -> llama3.1:8b, ...). Anything else is `model 'X' not found`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

# The chat template the simulator applies; it describes `chunkwise.harness.sim.tokenizer.render_chat`.
TEMPLATE = (
    "{{- range .Messages }}<|start_header_id|>{{ .Role }}<|end_header_id|>\n\n{{ .Content }}<|eot_id|>{{ end }}"
    "<|start_header_id|>assistant<|end_header_id|>\n\n"
)
STOP_MARKERS = ("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>")
PARAMETERS = "\n".join(f'stop                           "{marker}"' for marker in STOP_MARKERS)


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

    @property
    def digest(self) -> str:
        """sha256 hex of a fixed string per profile. NOT the registry's digest (tests must not rely on it)."""
        return self.build_digest("")

    def build_digest(self, build: str) -> str:
        """The digest of another build of this model (`SimOptions.model_build`); "" is the usual one."""
        return hashlib.sha256(f"chunkwise-sim-model:{self.name}{':' + build if build else ''}".encode()).hexdigest()

    def model_info(self, verbose: bool = False) -> dict[str, Any]:
        """GGUF metadata as /api/show returns it. The GGUF's arrays are the vocabulary's
        `tokenizer.ggml.tokens` and `tokenizer.ggml.token_type` (vocab_size entries each; the
        simulated vocabulary has no real strings, so the tokens are placeholders `[id]` and every type
        is 1, normal). Without `verbose` Ollama collects no array values at all and every non-empty
        array is JSON null (`v0.33.0-rc2:server/routes.go:1600-1605` passes maxArraySize 0 to
        `llm.LoadModel`; `fs/ggml/gguf.go:457-483` keeps `values` nil then and marshals them as
        null). The `[]any` loop of `routes.go:1612-1618` (arrays > 5 become `[]`) never matches a
        decoded GGUF array (`*array[T]`), so `[]` only appears for an array that is empty in the file."""
        a = self.arch
        info: dict[str, Any] = {
            "general.architecture": a,
            "general.file_type": self.file_type,
            "general.parameter_count": self.parameter_count,
            "general.quantization_version": 2,
            f"{a}.block_count": self.block_count,
            f"{a}.context_length": self.context_length,
            f"{a}.embedding_length": self.embedding_length,
            f"{a}.feed_forward_length": self.feed_forward_length,
            f"{a}.attention.head_count": self.head_count,
            f"{a}.attention.head_count_kv": self.head_count_kv,
        }
        if self.key_length is not None:
            info[f"{a}.attention.key_length"] = self.key_length
        if self.value_length is not None:
            info[f"{a}.attention.value_length"] = self.value_length
        if self.sliding_window is not None:
            info[f"{a}.attention.sliding_window"] = self.sliding_window
        info.update(self.extra_info)
        info["tokenizer.ggml.model"] = self.tokenizer_model
        info["tokenizer.ggml.add_bos_token"] = self.adds_bos
        info[f"{a}.vocab_size"] = self.vocab_size
        tokens, types = vocabulary_arrays(self.vocab_size) if verbose else (None, None)
        info["tokenizer.ggml.tokens"] = tokens
        info["tokenizer.ggml.token_type"] = types
        return dict(sorted(info.items()))

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


@lru_cache(maxsize=8)
def vocabulary_arrays(size: int) -> tuple[list[str], list[int]]:
    """Placeholder `tokenizer.ggml.tokens` and `token_type` arrays of `size` entries (built once)."""
    return [f"[{i}]" for i in range(size)], [1] * size


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
        ),
        ModelProfile(
            name="gemma2:9b", arch="gemma2", family="gemma2", parameter_size="9.2B",
            parameter_count=9241705984, quantization_level="Q4_0", file_type=2,
            weights_bytes=5443152417, block_count=42, head_count=16, head_count_kv=8,
            embedding_length=3584, feed_forward_length=14336, context_length=8192,
            vocab_size=256000, adds_bos=True, tokenizer_model="llama",
            key_length=256, value_length=256, sliding_window=4096,
            extra_info={"gemma2.attn_logit_softcapping": 50, "gemma2.final_logit_softcapping": 30},
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
        ),
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
