"""Units shared by every room: sizes are reported in MiB (NVML, Ollama's /api/ps and /api/show
arithmetic, plans and statistics all convert bytes through this one constant)."""

from __future__ import annotations

#: Bytes in a mebibyte.
MIB = 1024 * 1024
