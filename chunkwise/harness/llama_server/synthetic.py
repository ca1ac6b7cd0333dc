"""Write a synthetic GGUF: a llama-architecture model with random weights and a byte-level SPM
vocabulary, for measuring an engine's memory where no real model can travel (the GPU machine has
no network and a 64 MiB upload limit; the 241 MiB Gemma file cannot go there).

Stdlib only (struct, random), so it runs with any Python 3.10+. The weights are one block of
random f16 values in [-0.05, 0.05) repeated: finite, so the engine computes and answers (garbage);
the shape, not the values, decides the memory. GGUF layout as read by `chunkwise.openai.gguf`:
header, key/values, tensor infos, padding to `ALIGNMENT`, tensor data each padded to it.

The KV cost is `layers x kv_heads x 2 x head_dim x 2 bytes` per token (f16, all layers global):
the defaults (32 x 8 x 128) give 128 KiB per token, like Llama 3.1 8B, with 0.45 GB of weights.
"""

from __future__ import annotations

import argparse
import random
import struct
from pathlib import Path

ALIGNMENT = 32
F32, F16 = 0, 1
_STR, _U32, _F32, _BOOL, _ARR, _I32 = 8, 4, 6, 7, 9, 5
BLOCK_VALUES = 1 << 16


def _s(text: str) -> bytes:
    raw = text.encode()
    return struct.pack("<Q", len(raw)) + raw


def _kv(key: str, kind: int, value: object) -> bytes:
    head = _s(key) + struct.pack("<I", kind)
    if kind == _STR:
        return head + _s(str(value))
    if kind == _U32:
        return head + struct.pack("<I", value)
    if kind == _F32:
        return head + struct.pack("<f", value)
    if kind == _BOOL:
        return head + struct.pack("<?", value)
    raise ValueError(kind)


def _array(key: str, item: int, values: list[str] | list[float] | list[int]) -> bytes:
    head = _s(key) + struct.pack("<IIQ", _ARR, item, len(values))
    if item == _STR:
        return head + b"".join(_s(str(v)) for v in values)
    fmt = {_F32: "f", _I32: "i"}[item]
    return head + struct.pack(f"<{len(values)}{fmt}", *values)


def _vocab() -> tuple[list[str], list[float], list[int]]:
    """<unk>, <s>, </s> and the 256 byte tokens <0x00>..<0xFF> (SPM byte fallback): any text tokenizes."""
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    types = [2, 3, 3] + [6] * 256  # unknown, control, control, byte (llama.cpp LLAMA_TOKEN_TYPE_*)
    return tokens, [0.0] * len(tokens), types


def tensor_shapes(layers: int, embd: int, heads: int, kv_heads: int, head_dim: int, ff: int,
                  vocab: int) -> list[tuple[str, tuple[int, ...], int]]:
    """(name, ggml ne (fastest dimension first), type) of every tensor llama.cpp's llama loader needs."""
    out = [("token_embd.weight", (embd, vocab), F16), ("output_norm.weight", (embd,), F32),
           ("output.weight", (embd, vocab), F16)]
    for i in range(layers):
        b = f"blk.{i}."
        out += [(b + "attn_norm.weight", (embd,), F32), (b + "attn_q.weight", (embd, heads * head_dim), F16),
                (b + "attn_k.weight", (embd, kv_heads * head_dim), F16),
                (b + "attn_v.weight", (embd, kv_heads * head_dim), F16),
                (b + "attn_output.weight", (heads * head_dim, embd), F16), (b + "ffn_norm.weight", (embd,), F32),
                (b + "ffn_gate.weight", (embd, ff), F16), (b + "ffn_down.weight", (ff, embd), F16),
                (b + "ffn_up.weight", (embd, ff), F16)]
    return out


def write_synthetic_gguf(path: Path, *, layers: int = 32, embd: int = 1024, heads: int = 8, kv_heads: int = 8,
                         head_dim: int = 128, ff: int = 1024, context: int = 32768, seed: int = 0) -> Path:
    """Write the model to `path`; returns it. Sizes in elements; `context` is the training context."""
    tokens, scores, types = _vocab()
    meta = [
        _kv("general.architecture", _STR, "llama"), _kv("general.name", _STR, "chunkwise synthetic llama"),
        _kv("general.alignment", _U32, ALIGNMENT), _kv("general.file_type", _U32, 1),
        _kv("llama.context_length", _U32, context), _kv("llama.embedding_length", _U32, embd),
        _kv("llama.block_count", _U32, layers), _kv("llama.feed_forward_length", _U32, ff),
        _kv("llama.attention.head_count", _U32, heads), _kv("llama.attention.head_count_kv", _U32, kv_heads),
        _kv("llama.attention.key_length", _U32, head_dim), _kv("llama.attention.value_length", _U32, head_dim),
        _kv("llama.rope.dimension_count", _U32, head_dim), _kv("llama.rope.freq_base", _F32, 10000.0),
        _kv("llama.attention.layer_norm_rms_epsilon", _F32, 1e-5), _kv("llama.vocab_size", _U32, len(tokens)),
        _kv("tokenizer.ggml.model", _STR, "llama"), _array("tokenizer.ggml.tokens", _STR, tokens),
        _array("tokenizer.ggml.scores", _F32, scores), _array("tokenizer.ggml.token_type", _I32, types),
        _kv("tokenizer.ggml.unknown_token_id", _U32, 0), _kv("tokenizer.ggml.bos_token_id", _U32, 1),
        _kv("tokenizer.ggml.eos_token_id", _U32, 2), _kv("tokenizer.ggml.add_bos_token", _BOOL, True),
    ]
    shapes = tensor_shapes(layers, embd, heads, kv_heads, head_dim, ff, len(tokens))
    infos, offset, sizes = [], 0, []
    for name, ne, kind in shapes:
        count = 1
        for n in ne:
            count *= n
        size = count * (4 if kind == F32 else 2)
        infos.append(_s(name) + struct.pack("<I", len(ne)) + struct.pack(f"<{len(ne)}Q", *ne)
                     + struct.pack("<IQ", kind, offset))
        sizes.append((kind, size))
        offset += -(-size // ALIGNMENT) * ALIGNMENT
    rng = random.Random(seed)
    f16_block = struct.pack(f"<{BLOCK_VALUES}e", *(rng.uniform(-0.05, 0.05) for _ in range(BLOCK_VALUES)))
    ones = struct.pack("<f", 1.0) * BLOCK_VALUES
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
        f.write(b"GGUF" + struct.pack("<IQQ", 3, len(shapes), len(meta)))
        f.write(b"".join(meta) + b"".join(infos))
        f.write(b"\0" * (-f.tell() % ALIGNMENT))
        for kind, size in sizes:
            block = ones if kind == F32 else f16_block
            left = size
            while left:
                piece = block[: min(left, len(block))]
                f.write(piece)
                left -= len(piece)
            f.write(b"\0" * (-size % ALIGNMENT))
    return path


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m chunkwise.harness.llama_server.synthetic",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("path", type=Path)
    for name, default in (("layers", 32), ("embd", 1024), ("heads", 8), ("kv-heads", 8), ("head-dim", 128),
                          ("ff", 1024), ("context", 32768)):
        ap.add_argument(f"--{name}", type=int, default=default)
    a = ap.parse_args(argv)
    path = write_synthetic_gguf(a.path, layers=a.layers, embd=a.embd, heads=a.heads, kv_heads=a.kv_heads,
                                head_dim=a.head_dim, ff=a.ff, context=a.context)
    kv = a.layers * a.kv_heads * 2 * a.head_dim * 2
    print(f"{path}: {path.stat().st_size / 2**20:.0f} MiB, KV {kv / 1024:g} KiB per token (f16)")


if __name__ == "__main__":
    main()
