"""The CPU-variant choice of the draft v0.33.0 recipe (build_next): read from llama.cpp's own CMake, and the
same pick ggml's `ggml_backend_cpu_x86_score` makes at load time (a wrong pick either fails to load or
builds a slower variant than the one ggml would choose)."""

from pathlib import Path

from chunkwise.harness.ollama_server.build_next import pick_variant, x86_variants

#: The x86 part of ggml/src/CMakeLists.txt of llama.cpp 4df29be4f (llama-cpp-python 0.3.35), shortened.
CMAKE = """
if (GGML_SYSTEM_ARCH STREQUAL "x86")
ggml_add_cpu_backend_variant(x64)
ggml_add_cpu_backend_variant(sse42 SSE42)
ggml_add_cpu_backend_variant(haswell SSE42 AVX F16C FMA AVX2 BMI2)
ggml_add_cpu_backend_variant(skylakex SSE42 AVX F16C FMA AVX2 BMI2 AVX512)
ggml_add_cpu_backend_variant(icelake SSE42 AVX F16C FMA AVX2 BMI2 AVX512 AVX512_VBMI AVX512_VNNI)
if (NOT MSVC)
ggml_add_cpu_backend_variant(cooperlake SSE42 AVX F16C FMA AVX2 BMI2 AVX512 AVX512_VNNI AVX512_BF16)
ggml_add_cpu_backend_variant(zen4 SSE42 AVX F16C FMA AVX2 BMI2 AVX512 AVX512_VBMI AVX512_VNNI AVX512_BF16)
endif()
ggml_add_cpu_backend_variant(alderlake SSE42 AVX F16C FMA AVX2 BMI2 AVX_VNNI)
ggml_add_cpu_backend_variant(sapphirerapids SSE42 AVX F16C FMA AVX2 BMI2 AVX512 AVX512_VBMI AVX512_VNNI AVX512_BF16
    AMX_TILE AMX_INT8)
elseif(GGML_SYSTEM_ARCH STREQUAL "ARM")
ggml_add_cpu_backend_variant(armv8.0_1)
ggml_add_cpu_backend_variant(armv8.2_1    DOTPROD)
endif()
"""
HASWELL = {"sse4_2", "avx", "f16c", "fma", "avx2", "bmi2"}
AVX512 = HASWELL | {"avx512f", "avx512cd", "avx512vl", "avx512dq", "avx512bw"}
ICELAKE = AVX512 | {"avx512vbmi", "avx512_vnni"}


def variants(tmp_path: Path) -> dict[str, tuple[str, ...]]:
    (tmp_path / "ggml" / "src").mkdir(parents=True)
    (tmp_path / "ggml" / "src" / "CMakeLists.txt").write_text(CMAKE)
    return x86_variants(tmp_path)


def test_reads_only_the_x86_variants_with_their_features(tmp_path: Path) -> None:
    found = variants(tmp_path)
    assert list(found) == ["x64", "sse42", "haswell", "skylakex", "icelake", "cooperlake", "zen4", "alderlake",
                           "sapphirerapids"]
    assert found["x64"] == ()
    assert found["zen4"][-1] == "AVX512_BF16"


def test_picks_the_highest_scoring_variant_whose_features_are_all_present(tmp_path: Path) -> None:
    found = variants(tmp_path)
    # This machine's AMD EPYC: ggml loaded libggml-cpu-zen4.so (BF16 outscores icelake's feature set).
    assert pick_variant(found, ICELAKE | {"avx512_bf16"}) == "zen4"
    assert pick_variant(found, ICELAKE) == "icelake"
    # AVX512F without CD (or any of the five) is not AVX512 in ggml's check.
    assert pick_variant(found, ICELAKE - {"avx512cd"}) == "haswell"
    assert pick_variant(found, HASWELL | {"avx_vnni"}) == "alderlake"
    assert pick_variant(found, ICELAKE | {"avx512_bf16", "amx_tile", "amx_int8"}) == "sapphirerapids"
    assert pick_variant(found, {"sse4_2"}) == "sse42"
    assert pick_variant(found, set()) == "x64"
