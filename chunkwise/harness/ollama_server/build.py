"""Build what one Ollama version needs, and only what is missing: the Go binary, its engine, this CPU's variant.

One flow for both versions; what differs is the recipe (`RECIPES`): v0.24.0 compiles ggml into the binary
with cgo and loads a SIMD CPU backend (`cgo_recipe.py`), v0.33.0 runs llama.cpp's llama-server built from
a PyPI sdist's llama.cpp (`llama_server_recipe.py`). Shared: the Go toolchain and environment
(`toolchain.py`), the module and the binary (`source.py`), the CPU variant pick (`cpu.py`), the paths and
the per-version lock the caller holds (`paths.py`, `setup.py`).

A cache is complete for this machine when the binary runs and names its version, the recipe's engine
files are in lib/ollama, and so is the variant ggml would load on *this* CPU (read from `variants.json`,
which the first setup writes from the source). A cache built on another CPU, or copied to another
machine, therefore gets this CPU's variant built beside the other one (45 s to a few minutes), not the
whole build again.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from chunkwise.harness.ollama_server.cgo_recipe import CgoRecipe
from chunkwise.harness.ollama_server.cpu import (
    Variants,
    backend_name,
    cpu_flags,
    pick_variant,
    read_variants,
    write_variants,
)
from chunkwise.harness.ollama_server.llama_server_recipe import LlamaServerRecipe
from chunkwise.harness.ollama_server.paths import NEXT_VERSION, VERSION, OllamaPaths
from chunkwise.harness.ollama_server.source import binary_works, build_binary, module_source
from chunkwise.harness.ollama_server.toolchain import GoEnv, OllamaSetupError, find_go, need_compilers


class Recipe(Protocol):
    """What differs between the versions' builds."""

    engine_files: tuple[str, ...]

    def variants(self, module: Path, paths: OllamaPaths, log: Callable[[str], None]) -> Variants: ...

    def prepare(self, module: Path, paths: OllamaPaths, log: Callable[[str], None]) -> Path: ...

    def build_engine(self, src: Path, paths: OllamaPaths, variant: str, features: tuple[str, ...], log: Path,
                     jobs: int) -> None: ...

    def build_variant(self, src: Path, paths: OllamaPaths, variant: str, features: tuple[str, ...], log: Path,
                      jobs: int) -> None: ...


RECIPES: dict[str, Recipe] = {VERSION: CgoRecipe(), NEXT_VERSION: LlamaServerRecipe()}


def recipe_for(paths: OllamaPaths) -> Recipe:
    try:
        return RECIPES[paths.version]
    except KeyError:
        raise OllamaSetupError(f"no recipe for Ollama v{paths.version}: the versions built here are "
                               f"{', '.join(RECIPES)}") from None


def backend_lib(paths: OllamaPaths, variant: str) -> Path:
    return paths.lib_dir / backend_name(variant)


def this_cpu_variant(paths: OllamaPaths) -> str | None:
    """The variant this CPU loads from the cached variants table; None before the first setup wrote it."""
    variants = read_variants(paths.variants)
    return pick_variant(variants, cpu_flags()) if variants else None


def missing(paths: OllamaPaths, recipe: Recipe, variant: str | None) -> list[str]:
    """What the cache lacks for this machine, by name ("binary", "engine", "libggml-cpu-<v>.so",
    "variants.json"); empty when it is complete."""
    out = [] if binary_works(paths) else ["binary"]
    if not all((paths.lib_dir / name).exists() for name in recipe.engine_files):
        out.append("engine")
    if variant is None:
        out.append("variants.json")
    elif not backend_lib(paths, variant).is_file():
        out.append(backend_name(variant))
    return out


def ensure_built(paths: OllamaPaths, log: Callable[[str], None] = print,
                 jobs: int | None = None) -> tuple[Path, Path]:
    """The cached binary and this CPU's backend, building what is missing; the caller holds the lock of
    `paths.version_dir`."""
    recipe = recipe_for(paths)
    variant = this_cpu_variant(paths)
    lacking = missing(paths, recipe, variant)
    if not lacking:
        assert variant is not None  # complete means known
        return paths.binary, backend_lib(paths, variant)
    go, go_version = find_go(paths)
    goenv = GoEnv(go, paths)
    paths.build_dir.mkdir(parents=True, exist_ok=True)
    build_log = paths.build_dir / "build.log"
    module = module_source(goenv, paths.version, build_log)
    if variant is None:  # the first setup, or a cache from before variants.json: read the source's table
        write_variants(paths.variants, recipe.variants(module, paths, log))
        variant = this_cpu_variant(paths)
        assert variant is not None  # just written
        lacking = missing(paths, recipe, variant)
    if lacking:
        need_compilers(paths.setup_command)
        jobs = jobs or os.cpu_count() or 2
        features = (read_variants(paths.variants) or {}).get(variant, ())
        log(f"ollama: building {', '.join(lacking)} of Ollama v{paths.version} with "
            f"go{'.'.join(map(str, go_version))} and {jobs} jobs (CPU variant {variant}); log {build_log}")
        start = time.monotonic()
        src = recipe.prepare(module, paths, log)
        if "binary" in lacking:
            build_binary(goenv, src, paths, build_log, jobs)
            log(f"ollama: binary built in {time.monotonic() - start:.0f} s -> {paths.binary}")
        if "engine" in lacking:
            recipe.build_engine(src, paths, variant, features, build_log, jobs)
        elif backend_name(variant) in lacking:
            recipe.build_variant(src, paths, variant, features, build_log, jobs)
        log(f"ollama: v{paths.version} built in {time.monotonic() - start:.0f} s (CPU variant {variant})")
    still = missing(paths, recipe, variant)
    if still:  # the build tree and its log stay for a look
        raise OllamaSetupError(f"Ollama v{paths.version} was built but {', '.join(still)} is still missing or does "
                               f"not run; see {build_log} and run `{paths.setup_command}` again")
    shutil.rmtree(paths.build_dir, ignore_errors=True)
    return paths.binary, backend_lib(paths, variant)
