"""chunkwise.openai.gguf reads GGUF metadata: scalars, strings, kept and skipped arrays, bad files."""

from __future__ import annotations

import struct

import pytest

from chunkwise.openai.gguf import MAX_ARRAY, GGUFError, read_metadata


def _s(text: str) -> bytes:
    raw = text.encode()
    return struct.pack("<Q", len(raw)) + raw


def _kv(name: str, kind: int, payload: bytes) -> bytes:
    return _s(name) + struct.pack("<I", kind) + payload


def write_gguf(path, entries: list[bytes], version: int = 3) -> None:
    path.write_bytes(b"GGUF" + struct.pack("<IQQ", version, 0, len(entries)) + b"".join(entries) + b"\0" * 64)


def test_reads_scalars_strings_and_arrays(tmp_path):
    path = tmp_path / "m.gguf"
    tokens = [f"tok{i}" for i in range(300)]
    write_gguf(path, [
        _kv("general.architecture", 8, _s("gemma3")),
        _kv("gemma3.block_count", 4, struct.pack("<I", 18)),
        _kv("gemma3.rope.freq_base", 6, struct.pack("<f", 0.5)),
        _kv("tokenizer.ggml.add_bos_token", 7, struct.pack("<?", True)),
        _kv("big.u64", 10, struct.pack("<Q", 2**40)),
        _kv("gemma3.attention.head_count_kv", 9, struct.pack("<IQ", 5, 3) + struct.pack("<3i", 1, 2, 8)),
        _kv("tokenizer.ggml.tokens", 9, struct.pack("<IQ", 8, len(tokens)) + b"".join(_s(t) for t in tokens)),
        _kv("long.array", 9, struct.pack("<IQ", 0, MAX_ARRAY + 1) + b"\1" * (MAX_ARRAY + 1)),
        _kv("after.skips", 4, struct.pack("<I", 7)),
    ])
    meta = read_metadata(path)
    assert meta["general.architecture"] == "gemma3" and meta["gemma3.block_count"] == 18
    assert meta["gemma3.rope.freq_base"] == 0.5 and meta["tokenizer.ggml.add_bos_token"] is True
    assert meta["big.u64"] == 2**40
    assert meta["gemma3.attention.head_count_kv"] == [1, 2, 8]
    assert meta["tokenizer.ggml.tokens"] == [] and meta["long.array"] == []
    assert meta["after.skips"] == 7  # the skipped arrays left the reader at the right offset


def test_bad_magic_names_the_file(tmp_path):
    path = tmp_path / "x.gguf"
    path.write_bytes(b"NOPE" + b"\0" * 40)
    with pytest.raises(GGUFError, match=r"x\.gguf: not a GGUF file"):
        read_metadata(path)


def test_truncated_header_is_reported(tmp_path):
    path = tmp_path / "t.gguf"
    path.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 0, 2) + _s("general.architecture"))
    with pytest.raises(GGUFError, match="truncated"):
        read_metadata(path)


def test_unsupported_version(tmp_path):
    path = tmp_path / "v.gguf"
    path.write_bytes(b"GGUF" + struct.pack("<IQQ", 1, 0, 0))
    with pytest.raises(GGUFError, match="version 1"):
        read_metadata(path)
