"""Building the real Ollamas without building: the CPU-variant pick (read from ggml's own CMake, scored as
ggml scores at load time), what a cache lacks on this machine and what gets built for it, the paths of two
versions side by side, and the damaged model of each version.

A wrong variant pick either fails to load or is slower than the one ggml would choose; a cache moved to
another CPU must get that CPU's variant, not be taken as complete because some variant is there.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from chunkwise.harness.ollama_server import build, cpu
from chunkwise.harness.ollama_server.models import damaged_copy
from chunkwise.harness.ollama_server.paths import NEXT_VERSION, VERSION, ollama_paths
from chunkwise.harness.ollama_server.toolchain import OllamaSetupError

#: The x86 part of ggml/src/CMakeLists.txt of llama.cpp 4df29be4f (llama-cpp-python 0.3.35), shortened.
CMAKE_NEXT = """
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
#: The same part of v0.24.0's ml/backend/ggml/ggml/src/CMakeLists.txt (after the function definition).
CMAKE_024 = """
function(ggml_add_cpu_backend_variant tag_name)
    set(GGML_CPU_TAG_NAME ${tag_name})
endfunction()
    if (GGML_SYSTEM_ARCH STREQUAL "x86")
        ggml_add_cpu_backend_variant(x64)
        ggml_add_cpu_backend_variant(sse42        SSE42)
        ggml_add_cpu_backend_variant(sandybridge  SSE42 AVX)
        ggml_add_cpu_backend_variant(haswell      SSE42 AVX F16C AVX2 BMI2 FMA)
        ggml_add_cpu_backend_variant(skylakex     SSE42 AVX F16C AVX2 BMI2 FMA AVX512)
        ggml_add_cpu_backend_variant(icelake      SSE42 AVX F16C AVX2 BMI2 FMA AVX512 AVX512_VBMI AVX512_VNNI)
        ggml_add_cpu_backend_variant(alderlake    SSE42 AVX F16C AVX2 BMI2 FMA AVX_VNNI)
    elseif(GGML_SYSTEM_ARCH STREQUAL "ARM")
"""
HASWELL = {"sse4_2", "avx", "f16c", "fma", "avx2", "bmi2"}
AVX512 = HASWELL | {"avx512f", "avx512cd", "avx512vl", "avx512dq", "avx512bw"}
ICELAKE = AVX512 | {"avx512vbmi", "avx512_vnni"}
#: This machine's AMD EPYC (the flags that matter).
EPYC = ICELAKE | {"avx512_bf16"}


def test_reads_only_the_x86_variants_with_their_features() -> None:
    found = cpu.parse_variants(CMAKE_NEXT)
    assert list(found) == ["x64", "sse42", "haswell", "skylakex", "icelake", "cooperlake", "zen4", "alderlake",
                           "sapphirerapids"]
    assert found["x64"] == () and found["zen4"][-1] == "AVX512_BF16"
    assert found["sapphirerapids"][-2:] == ("AMX_TILE", "AMX_INT8")
    old = cpu.parse_variants(CMAKE_024)  # not confused by the function definition above the calls
    assert list(old) == ["x64", "sse42", "sandybridge", "haswell", "skylakex", "icelake", "alderlake"]
    with pytest.raises(ValueError, match="x64"):
        cpu.parse_variants("project(not-ggml)")


def test_picks_the_highest_scoring_variant_whose_features_are_all_present() -> None:
    found = cpu.parse_variants(CMAKE_NEXT)
    # ggml loaded libggml-cpu-zen4.so on this EPYC under v0.33.0 (BF16 outscores icelake's feature set) ...
    assert cpu.pick_variant(found, EPYC) == "zen4"
    # ... and icelake under v0.24.0, whose ggml has no zen4
    assert cpu.pick_variant(cpu.parse_variants(CMAKE_024), EPYC) == "icelake"
    assert cpu.pick_variant(found, ICELAKE) == "icelake"
    # AVX512F without CD (or any of the five) is not AVX512 in ggml's check.
    assert cpu.pick_variant(found, ICELAKE - {"avx512cd"}) == "haswell"
    assert cpu.pick_variant(found, HASWELL | {"avx_vnni"}) == "alderlake"
    assert cpu.pick_variant(found, EPYC | {"amx_tile", "amx_int8"}) == "sapphirerapids"
    assert cpu.pick_variant(found, {"sse4_2"}) == "sse42"
    assert cpu.pick_variant(found, set()) == "x64"


def test_a_one_variant_build_switches_on_exactly_its_features() -> None:
    switches = cpu.cmake_switches(("SSE42", "AVX", "F16C", "FMA", "AVX2", "BMI2"))
    on = {s.removeprefix("-DGGML_").removesuffix("=ON") for s in switches if s.endswith("=ON")}
    assert on == {"SSE42", "AVX", "F16C", "FMA", "AVX2", "BMI2"}
    assert "-DGGML_AVX512=OFF" in switches and "-DGGML_AMX_TILE=OFF" in switches
    assert len(switches) == len(set(switches)) == len(cpu.FEATURES)


def test_cpu_flags_come_from_the_first_flags_line(tmp_path: Path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse4_2 avx2\nprocessor\t: 1\nflags\t\t: other\n")
    assert cpu.cpu_flags(info) == {"fpu", "sse4_2", "avx2"}
    assert cpu.cpu_flags(tmp_path / "missing") == set()


def test_two_versions_live_side_by_side_under_one_root(tmp_path: Path) -> None:
    old, new = ollama_paths(tmp_path), ollama_paths(tmp_path, NEXT_VERSION)
    assert old.version == VERSION and old.binary == tmp_path / "v0.24.0" / "bin" / "ollama"
    assert new.binary == tmp_path / "v0.33.0" / "bin" / "ollama" and new.lib_dir == tmp_path / "v0.33.0/lib/ollama"
    assert old.build_dir != new.build_dir and old.models != new.models and old.stamp != new.stamp
    assert (old.setup_command, new.setup_command) == ("make ollama", "make ollama-next")
    assert old.toolchain == new.toolchain  # one Go for both


class FakeRecipe:
    """Records what the flow asks of a recipe; builds by touching files."""

    engine_files: tuple[str, ...] = ("llama-server",)

    def __init__(self, variants: cpu.Variants) -> None:
        self.table = variants
        self.calls: list[str] = []

    def variants(self, module, paths, log):
        self.calls.append("variants")
        return self.table

    def prepare(self, module, paths, log):
        self.calls.append("prepare")
        return paths.build_dir / "src"

    def build_engine(self, src, paths, variant, features, log, jobs):
        self.calls.append(f"engine:{variant}:{','.join(features)}")
        (paths.lib_dir / "llama-server").touch()
        (paths.lib_dir / cpu.backend_name(variant)).touch()

    def build_variant(self, src, paths, variant, features, log, jobs):
        self.calls.append(f"variant:{variant}")
        (paths.lib_dir / cpu.backend_name(variant)).touch()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A v0.33.0 cache with a working binary (stubbed), llama-server and the zen4 variant, on a fake
    toolchain that records whether the Go module was asked for."""
    paths = ollama_paths(tmp_path, NEXT_VERSION)
    paths.lib_dir.mkdir(parents=True)
    (paths.lib_dir / "llama-server").touch()
    (paths.lib_dir / "libggml-cpu-zen4.so").touch()
    recipe = FakeRecipe(cpu.parse_variants(CMAKE_NEXT))
    went_to_go: list[str] = []
    monkeypatch.setitem(build.RECIPES, NEXT_VERSION, recipe)
    monkeypatch.setattr(build, "binary_works", lambda p: True)
    monkeypatch.setattr(build, "find_go", lambda p: ("go", (1, 26, 8)))
    monkeypatch.setattr(build, "module_source", lambda goenv, version, log: went_to_go.append(version) or tmp_path)
    monkeypatch.setattr(build, "need_compilers", lambda command: None)
    monkeypatch.setattr(build, "build_binary", lambda *a: pytest.fail("the binary works: must not rebuild it"))
    monkeypatch.setattr(build, "cpu_flags", lambda: EPYC)
    return paths, recipe, went_to_go


def test_a_complete_cache_is_used_as_it_is(cache) -> None:
    paths, recipe, went_to_go = cache
    cpu.write_variants(paths.variants, recipe.table)
    assert build.ensure_built(paths, log=lambda _: None) == (paths.binary, paths.lib_dir / "libggml-cpu-zen4.so")
    assert recipe.calls == [] and went_to_go == []


def test_a_cache_on_another_cpu_gets_that_cpu_s_variant_and_nothing_else(cache, monkeypatch) -> None:
    paths, recipe, _ = cache
    cpu.write_variants(paths.variants, recipe.table)
    monkeypatch.setattr(build, "cpu_flags", lambda: HASWELL)  # the cache was built on the EPYC (zen4)
    _, lib = build.ensure_built(paths, log=lambda _: None)
    assert lib == paths.lib_dir / "libggml-cpu-haswell.so" and lib.is_file()
    assert recipe.calls == ["prepare", "variant:haswell"]
    assert (paths.lib_dir / "libggml-cpu-zen4.so").is_file()  # the other CPU's stays


def test_a_cache_without_its_variants_table_reads_it_from_the_source_and_builds_nothing(cache) -> None:
    paths, recipe, went_to_go = cache  # as every v0.24.0 cache built before variants.json existed
    build.ensure_built(paths, log=lambda _: None)
    assert recipe.calls == ["variants"] and went_to_go == [NEXT_VERSION]
    assert cpu.read_variants(paths.variants) == recipe.table


def test_a_missing_engine_is_built_with_this_cpu_s_features(cache) -> None:
    paths, recipe, _ = cache
    cpu.write_variants(paths.variants, recipe.table)
    (paths.lib_dir / "llama-server").unlink()
    build.ensure_built(paths, log=lambda _: None)
    assert recipe.calls == ["prepare", "engine:zen4:" + ",".join(recipe.table["zen4"])]


def test_a_build_that_leaves_something_missing_is_an_error_naming_it(cache, monkeypatch) -> None:
    paths, recipe, _ = cache
    cpu.write_variants(paths.variants, recipe.table)
    monkeypatch.setattr(build, "cpu_flags", lambda: HASWELL)
    monkeypatch.setattr(recipe, "build_variant", lambda *a: None)  # builds nothing
    with pytest.raises(OllamaSetupError, match=r"libggml-cpu-haswell\.so is still missing.*make ollama-next"):
        build.ensure_built(paths, log=lambda _: None)


def test_an_unknown_version_has_no_recipe(tmp_path) -> None:
    with pytest.raises(OllamaSetupError, match=r"no recipe for Ollama v0\.99\.0"):
        build.ensure_built(ollama_paths(tmp_path, "0.99.0"))


def gguf_head() -> bytes:
    """The start of a GGUF header with the two string keys the damaged copies change."""
    def kv(key: bytes, value: bytes) -> bytes:
        string = (8).to_bytes(4, "little") + len(value).to_bytes(8, "little") + value
        return len(key).to_bytes(8, "little") + key + string

    return b"GGUF" + kv(b"general.architecture", b"gemma3") + kv(b"tokenizer.ggml.model", b"llama") + b"\0" * 64


@pytest.mark.parametrize(("version", "damaged", "intact"), [
    (VERSION, b"gemmq3", b"llama"),  # v0.24.0 loads no model of an unknown architecture
    (NEXT_VERSION, b"llamq", b"gemma3"),  # v0.33.0's create refuses that, but not an unknown tokenizer
])
def test_each_version_s_damaged_model_changes_one_value_and_keeps_every_offset(tmp_path, version, damaged, intact):
    source = tmp_path / "g.gguf"
    source.write_bytes(gguf_head())
    out = damaged_copy(source, tmp_path / "d.gguf", version).read_bytes()
    assert len(out) == len(source.read_bytes()) and damaged in out and intact in out
    assert sum(a != b for a, b in zip(out, source.read_bytes(), strict=True)) == 1


def test_a_gguf_without_the_value_is_refused(tmp_path) -> None:
    source = tmp_path / "g.gguf"
    source.write_bytes(gguf_head().replace(b"llama", b"gpt2x"))
    with pytest.raises(OllamaSetupError, match=r"no tokenizer\.ggml\.model = llama"):
        damaged_copy(source, tmp_path / "d.gguf", NEXT_VERSION)
