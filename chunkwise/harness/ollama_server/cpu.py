"""Which SIMD CPU backend of ggml this machine loads: the variants a source defines, and ggml's own pick.

Both Ollama versions load `libggml-cpu-<variant>.so` from `lib/ollama` at run time and keep the one that
scores highest among those whose features this CPU has (`ggml_backend_cpu_x86_score`,
`ggml/src/ggml-cpu/arch/x86/cpu-feats.cpp`: 0 when a feature is missing, else 1 + the sum of 2**bit of
its features). Only that variant is built (one library, about 45 s, against all of them in minutes).

The variants come from the source being built, never from a table here: the
`ggml_add_cpu_backend_variant(name FEATURE...)` lines of its `ggml/src/CMakeLists.txt` (v0.24.0's tree has
seven x86 variants; the llama.cpp behind v0.33.0 adds cooperlake, zen4 and sapphirerapids, so the same
AMD EPYC loads icelake under v0.24.0 and zen4 under v0.33.0). The table is kept beside the libraries
(`variants.json`), so a setup on another CPU can tell which variant it is missing without the source.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

#: x86 ggml features in the bit order of `ggml_backend_cpu_x86_score`; AMX_TILE is required, not scored.
SCORED = ("FMA", "F16C", "SSE42", "BMI2", "AVX", "AVX2", "AVX_VNNI", "AVX512", "AVX512_VBMI", "AVX512_BF16",
          "AVX512_VNNI", "AMX_INT8")
#: ggml feature -> the /proc/cpuinfo flags that mean it (AVX512 = F, CD, VL, DQ, BW, as the score checks).
CPU_FLAGS = {"FMA": ("fma",), "F16C": ("f16c",), "SSE42": ("sse4_2",), "BMI2": ("bmi2",), "AVX": ("avx",),
             "AVX2": ("avx2",), "AVX_VNNI": ("avx_vnni",),
             "AVX512": ("avx512f", "avx512cd", "avx512vl", "avx512dq", "avx512bw"),
             "AVX512_VBMI": ("avx512vbmi",), "AVX512_BF16": ("avx512_bf16",), "AVX512_VNNI": ("avx512_vnni",),
             "AMX_TILE": ("amx_tile",), "AMX_INT8": ("amx_int8",), "AMX_BF16": ("amx_bf16",)}
#: Every x86 feature switch ggml's CMake has (`GGML_<F>`): a one-variant build sets each ON or OFF.
FEATURES = tuple(CPU_FLAGS)

Variants = dict[str, tuple[str, ...]]


def parse_variants(cmake_text: str) -> Variants:
    """The x86 variants of a ggml `src/CMakeLists.txt`: from `ggml_add_cpu_backend_variant(x64` up to the
    next architecture's `elseif`. ValueError when there are none (not a ggml CMakeLists)."""
    start = cmake_text.find("ggml_add_cpu_backend_variant(x64")
    if start < 0:
        raise ValueError("no ggml_add_cpu_backend_variant(x64 ...) line")
    end = cmake_text.find("elseif", start)
    x86 = cmake_text[start:end if end > 0 else len(cmake_text)]
    return {m[1]: tuple(m[2].split()) for m in re.finditer(r"ggml_add_cpu_backend_variant\(([\w.]+)\s*([^)]*)\)", x86)}


def pick_variant(variants: Variants, cpu_flags: set[str]) -> str:
    """The variant ggml would load on a CPU with these /proc/cpuinfo flags: every feature present,
    highest score (x64, the plain one, always qualifies)."""
    def ok(features: tuple[str, ...]) -> bool:
        return all(flag in cpu_flags for f in features for flag in CPU_FLAGS.get(f, (f.lower(),)))

    def score(features: tuple[str, ...]) -> int:
        return 1 + sum(1 << SCORED.index(f) for f in features if f in SCORED)

    usable = [name for name, features in variants.items() if ok(features)]
    if not usable:
        raise ValueError(f"none of the variants {sorted(variants)} runs on this CPU")
    return max(usable, key=lambda name: score(variants[name]))


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str]:
    """The feature flags of this machine's first CPU (empty when /proc/cpuinfo cannot be read: x64)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return set()
    line = next((ln for ln in text.splitlines() if ln.startswith("flags")), "")
    return set(line.partition(":")[2].split())


def cmake_switches(features: tuple[str, ...]) -> list[str]:
    """`-DGGML_<F>=ON|OFF` for every feature: exactly this variant's set, as a one-variant build needs."""
    return [f"-DGGML_{f}={'ON' if f in features else 'OFF'}" for f in sorted({*FEATURES, *features})]


def read_variants(path: Path) -> Variants | None:
    """A variants.json written by `write_variants`, or None when missing or unreadable."""
    try:
        data = json.loads(path.read_text())
        return {str(name): tuple(str(f) for f in feats) for name, feats in data.items()}
    except (OSError, ValueError, AttributeError):
        return None


def write_variants(path: Path, variants: Variants) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.part")
    partial.write_text(json.dumps({k: list(v) for k, v in variants.items()}, indent=1) + "\n")
    partial.replace(path)


def backend_name(variant: str) -> str:
    return f"libggml-cpu-{variant}.so"
