"""A profile as /api/show presents it: `model_info` (the GGUF's metadata), `tensors`, the Modelfile.

Field order and contents follow `v0.24.0:server/routes.go:1207-1408` (`GetModelInfo`): modelfile,
parameters, template, details, model_info, tensors, capabilities, modified_at. `model_info` drops
`general.name` and `tokenizer.chat_template`. Without `verbose` Ollama reads the GGUF with
maxArraySize 0, so every array is JSON null (`routes.go:1410-1431`, `getModelData`; the `[]any` loop
there never matches a decoded GGUF array, so `[]` only appears for an array empty in the file); with
`verbose` the arrays are complete. The simulated vocabulary has no real strings: its tokens are
placeholders `[id]`, every score 0 and every type 1 (normal).

`parameters` prints each Modelfile parameter as `%-30s %#v` (`routes.go:1317-1329`; Ollama ranges over a
Go map there, so the order of the lines varies from call to call).

`tensors` lists name, type and shape of each tensor (`routes.go:1395-1399`); the simulator derives
them from the architecture numbers (token embedding, output norm, and per block the attention and
feed-forward weights and norms; Gemma 3 adds the q/k norms and the post-attention/feed-forward norms,
236 tensors for gemma3-270m as on the real server). Types are the profile's quantization for matrices
and F32 for norms, not the mixed types a real quantizer picks.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

from chunkwise.harness.sim.profiles import PROFILES, ModelProfile
from chunkwise.harness.sim.templates import TEMPLATES

#: Tensor type name of the matrices per quantization level.
MATRIX_TYPE = {"Q4_K_M": "Q4_K", "Q4_0": "Q4_0", "Q8_0": "Q8_0", "MXFP4": "MXFP4", "F16": "F16"}


@lru_cache(maxsize=8)
def vocabulary_arrays(size: int) -> tuple[list[str], list[float], list[int]]:
    """Placeholder tokens, scores and token types of `size` entries (built once)."""
    return [f"[{i}]" for i in range(size)], [0.0] * size, [1] * size


def model_info(profile: ModelProfile, verbose: bool = False) -> dict[str, Any]:
    """GGUF metadata as /api/show returns it, sorted by key (Go marshals maps sorted)."""
    info = dict(profile.gguf_info) if profile.gguf_info is not None else _built_info(profile)
    for key, values in profile.gguf_arrays.items():
        info[key] = list(values) if verbose else None
    tokens, scores, types = vocabulary_arrays(profile.vocab_size) if verbose else (None, None, None)
    arrays = {"tokens": tokens, "scores": scores, "token_type": types}
    for name in profile.vocabulary:
        info[f"tokenizer.ggml.{name}"] = arrays[name]
    return dict(sorted(info.items()))


def _built_info(profile: ModelProfile) -> dict[str, Any]:
    a = profile.arch
    info: dict[str, Any] = {
        "general.architecture": a,
        "general.file_type": profile.file_type,
        "general.parameter_count": profile.parameter_count,
        "general.quantization_version": 2,
        f"{a}.block_count": profile.block_count,
        f"{a}.context_length": profile.context_length,
        f"{a}.embedding_length": profile.embedding_length,
        f"{a}.feed_forward_length": profile.feed_forward_length,
        f"{a}.attention.head_count": profile.head_count,
        f"{a}.attention.head_count_kv": profile.head_count_kv,
    }
    if profile.key_length is not None:
        info[f"{a}.attention.key_length"] = profile.key_length
    if profile.value_length is not None:
        info[f"{a}.attention.value_length"] = profile.value_length
    if profile.sliding_window is not None:
        info[f"{a}.attention.sliding_window"] = profile.sliding_window
    info.update(profile.extra_info)
    info["tokenizer.ggml.model"] = profile.tokenizer_model
    info["tokenizer.ggml.add_bos_token"] = profile.adds_bos
    info[f"{a}.vocab_size"] = profile.vocab_size
    return info


def tensors(profile: ModelProfile) -> list[dict[str, Any]]:
    """name, type and shape of each tensor, in the order Ollama lists a GGUF's (output ones first)."""
    embd, ffn = profile.embedding_length, profile.feed_forward_length
    head_k = profile.key_length or embd // profile.head_count
    head_v = profile.value_length or embd // profile.head_count
    q, k, v = profile.head_count * head_k, profile.head_count_kv * head_k, profile.head_count_kv * head_v
    matrix = MATRIX_TYPE.get(profile.quantization_level, "Q4_K")
    out = [{"name": "output_norm.weight", "type": "F32", "shape": [embd]},
           {"name": "token_embd.weight", "type": matrix, "shape": [embd, profile.vocab_size]}]
    per_block = [("attn_k", matrix, [embd, k]), ("attn_norm", "F32", [embd]), ("attn_output", matrix, [q, embd]),
                 ("attn_q", matrix, [embd, q]), ("attn_v", matrix, [embd, v]), ("ffn_down", matrix, [ffn, embd]),
                 ("ffn_gate", matrix, [embd, ffn]), ("ffn_norm", "F32", [embd]), ("ffn_up", matrix, [embd, ffn])]
    if profile.arch == "gemma3":
        per_block += [("attn_k_norm", "F32", [head_k]), ("attn_q_norm", "F32", [head_k]),
                      ("post_attention_norm", "F32", [embd]), ("post_ffw_norm", "F32", [embd])]
        per_block.sort()
    for block in range(profile.block_count):
        out += [{"name": f"blk.{block}.{name}.weight", "type": kind, "shape": shape} for name, kind, shape in per_block]
    return out


def details(profile: ModelProfile, parent_model: str = "") -> dict[str, Any]:
    return {
        "parent_model": parent_model,
        "format": "gguf",
        "family": profile.family,
        "families": [profile.family],
        "parameter_size": profile.parameter_size,
        "quantization_level": profile.quantization_level,
    }


@lru_cache(maxsize=32)
def show_body(name: str, verbose: bool, parent_blob: bool = True) -> bytes:
    """The encoded /api/show answer (static per profile; a verbose one carries the vocabulary arrays).
    `parent_blob`: `details.parent_model` names the GGUF blob the model was created from, as before 0.30;
    from 0.30 `ollama create` copies the GGUF into a new layer without one and it is empty (`era.py`
    create_copies_gguf)."""
    profile = PROFILES[name]
    template = TEMPLATES[profile.template]
    blob = profile.blob_path
    modelfile = ('# Modelfile generated by "ollama show"\n'
                 "# To build a new Modelfile based on this, replace FROM with:\n"
                 f"# FROM {profile.name}\n\nFROM {blob}\nTEMPLATE \"\"\"{template.template_text}\"\"\"\n"
                 + "".join(f"PARAMETER {name} {value}\n" for name, value in profile.parameters)
                 + "".join(f"PARAMETER stop {marker}\n" for marker in template.stop))
    parameters = "\n".join([*(f"{name:<30} {value}" for name, value in profile.parameters), template.parameters])
    return json.dumps({
        "modelfile": modelfile,
        "parameters": parameters,
        "template": template.template_text,
        "details": details(profile, blob if parent_blob else ""),
        "model_info": model_info(profile, verbose),
        "tensors": tensors(profile),
        "capabilities": list(profile.capabilities),
        "modified_at": profile.modified_at,
    }).encode("utf-8")
