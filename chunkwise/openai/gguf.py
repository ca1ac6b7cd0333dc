"""Read the metadata of a GGUF model file, as the `model_info` mapping the KV formula takes.

llama-server does not expose the model's metadata over HTTP (`/props` and `/v1/models` give
`n_ctx_train`, `n_embd`, `n_params`, `size`, but no layer counts or sliding window), so chunkwise
reads the file's header itself. The layout is GGUF v2/v3 (llama.cpp `ggml/include/gguf.h`,
`gguf-py/gguf/constants.py` GGUFValueType): magic `GGUF`, u32 version, u64 tensor count, u64 key
count, then per key a string name, a u32 type and the value; all little-endian.

Arrays of strings (the vocabulary: 262,144 tokens for Gemma 3) and long numeric arrays are skipped
and reported as an empty list, like Ollama's non-verbose `/api/show`; numeric arrays up to
`MAX_ARRAY` elements (per-layer values such as `head_count_kv` or `sliding_window_pattern`) are kept.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any, BinaryIO

from chunkwise.errors import SetupError

MAGIC = b"GGUF"
#: Numeric arrays longer than this are replaced by [] (per-layer arrays are a few hundred at most).
MAX_ARRAY = 4096
# GGUFValueType -> struct format (sizes in bytes follow from it).
_SCALAR = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9


class GGUFError(SetupError):
    """The file is not a readable GGUF; the message names the file and the offset."""


def _read(f: BinaryIO, n: int, path: Path) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise GGUFError(f"{path}: truncated GGUF header at byte {f.tell()}; the file is incomplete, fetch it again")
    return data


def _unpack(f: BinaryIO, fmt: str, path: Path) -> Any:
    return struct.unpack(fmt, _read(f, struct.calcsize(fmt), path))[0]


def _string(f: BinaryIO, path: Path) -> str:
    return _read(f, _unpack(f, "<Q", path), path).decode("utf-8", errors="replace")


def _value(f: BinaryIO, kind: int, path: Path) -> Any:
    if kind in _SCALAR:
        return _unpack(f, _SCALAR[kind], path)
    if kind == _STRING:
        return _string(f, path)
    if kind == _ARRAY:
        item, count = _unpack(f, "<I", path), _unpack(f, "<Q", path)
        if item == _STRING:
            for _ in range(count):
                f.seek(_unpack(f, "<Q", path), 1)
            return []
        if item not in _SCALAR:
            raise GGUFError(f"{path}: unsupported GGUF array element type {item} at byte {f.tell()}")
        size = struct.calcsize(_SCALAR[item])
        if count > MAX_ARRAY:
            f.seek(size * count, 1)
            return []
        return list(struct.unpack("<" + _SCALAR[item][1] * count, _read(f, size * count, path)))
    raise GGUFError(f"{path}: unknown GGUF value type {kind} at byte {f.tell()}; not a GGUF v2/v3 file?")


def read_metadata(path: Path) -> dict[str, Any]:
    """The key/value metadata of the GGUF at `path` (tensor data is not read)."""
    path = Path(path)
    with path.open("rb") as f:
        if f.read(4) != MAGIC:
            raise GGUFError(f"{path}: not a GGUF file (no 'GGUF' magic); pass a .gguf model file")
        version = _unpack(f, "<I", path)
        if version not in (2, 3):
            raise GGUFError(f"{path}: GGUF version {version}; chunkwise reads versions 2 and 3")
        _unpack(f, "<Q", path)  # tensor count
        keys = _unpack(f, "<Q", path)
        out: dict[str, Any] = {}
        for _ in range(keys):
            name = _string(f, path)
            out[name] = _value(f, _unpack(f, "<I", path), path)
    return out
