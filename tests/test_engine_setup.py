"""`make engine` logic without building: cache paths, sha256 checks, reuse of a cached binary,
extraction of only the vendored llama.cpp, and the server command line."""

from __future__ import annotations

import io
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from chunkwise.harness.llama_server import build, fetch
from chunkwise.harness.llama_server.paths import SDIST_SHA256, TEMPLATE, cache_root, engine_paths
from chunkwise.harness.llama_server.server import EngineConfig, EngineStartError, free_port, start_engine


def test_cache_root_follows_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache_root() == tmp_path / "chunkwise" / "engine"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/dir")  # the spec says: ignore a relative path
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_root() == tmp_path / "home" / ".cache" / "chunkwise" / "engine"


def test_server_is_cached_per_version_and_sdist_hash(tmp_path):
    paths = engine_paths(tmp_path)
    assert paths.server == tmp_path / "llama-server-0.3.36-832db0699007" / "llama-server"
    assert SDIST_SHA256.startswith("832db0699007")


def test_a_sdist_with_the_wrong_hash_is_refused(tmp_path):
    paths = engine_paths(tmp_path)
    paths.sdist.parent.mkdir(parents=True)
    paths.sdist.write_bytes(b"not the sdist")
    with pytest.raises(fetch.EngineSetupError, match=r"llama_cpp_python-0\.3\.36\.tar\.gz: sha256 .* delete the file"):
        fetch.ensure_sdist(paths, log=lambda _: None)


def _fake_binary(path: Path, code: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\necho version: fake\nexit {code}\n")
    path.chmod(0o755)


def test_a_working_cached_binary_is_reused_without_building(tmp_path, monkeypatch):
    paths = engine_paths(tmp_path)
    _fake_binary(paths.server, 0)
    monkeypatch.setattr(build, "build_server", lambda *a, **k: pytest.fail("must not build"))
    assert build.ensure_server(paths) == paths.server


def test_a_broken_cached_binary_is_rebuilt(tmp_path, monkeypatch):
    paths = engine_paths(tmp_path)
    _fake_binary(paths.server, 1)
    calls = []
    monkeypatch.setattr(build, "build_server", lambda p, log=print: calls.append(p) or p.server)
    assert build.ensure_server(paths) == paths.server and calls == [paths]


def test_only_the_vendored_llama_cpp_is_extracted(tmp_path):
    sdist = tmp_path / "s.tar.gz"
    with tarfile.open(sdist, "w:gz") as tar:
        for name in ("llama_cpp_python-0.3.36/llama_cpp/__init__.py",
                     "llama_cpp_python-0.3.36/vendor/llama.cpp/CMakeLists.txt",
                     "llama_cpp_python-0.3.36/vendor/llama.cpp/tools/server/server.cpp"):
            info = tarfile.TarInfo(name)
            info.size = 2
            tar.addfile(info, io.BytesIO(b"x\n"))
    src = build.extract_sources(sdist, tmp_path / "out")
    assert (src / "CMakeLists.txt").is_file() and (src / "tools/server/server.cpp").is_file()
    assert not (tmp_path / "out/llama_cpp_python-0.3.36/llama_cpp").exists()


@pytest.mark.parametrize("python", ["3.11.4+", "3.11.2"])
def test_extraction_refuses_what_the_data_filter_refuses_on_every_python(tmp_path, monkeypatch, python):
    """Debian 12's /usr/bin/python3 (3.11.2) has no `extractall(filter=...)`: the same refusals by hand there."""
    if python == "3.11.4+" and not hasattr(tarfile, "data_filter"):
        # Skipped only on a Python without the filter (before 3.11.4): that case cannot exist there, and the
        # hand-made refusals it would compare against are tested by the "3.11.2" parameter in the same run.
        pytest.skip(f"Python {sys.version.split()[0]} has no tarfile data filter to test (the 3.11.2 case runs)")
    if python == "3.11.2":
        monkeypatch.delattr(tarfile, "data_filter", raising=False)  # absent already on a real 3.11.2
    top = "llama_cpp_python-0.3.36/vendor/llama.cpp"
    for bad in (f"{top}/../../../../escape.txt", f"{top}/link"):
        sdist = tmp_path / f"{python}-{len(bad)}.tar.gz"
        with tarfile.open(sdist, "w:gz") as tar:
            good = tarfile.TarInfo(f"{top}/CMakeLists.txt")
            good.size = 2
            tar.addfile(good, io.BytesIO(b"x\n"))
            evil = tarfile.TarInfo(bad)
            if bad.endswith("link"):
                evil.type, evil.linkname = tarfile.SYMTYPE, "/etc/passwd"
            else:
                evil.size = 2
            tar.addfile(evil, io.BytesIO(b"x\n"))
        with pytest.raises((build.EngineSetupError, tarfile.FilterError) if python != "3.11.2"  # 3.11.4+ only
                           else build.EngineSetupError):
            build.extract_sources(sdist, tmp_path / "out")
        assert not (tmp_path / "escape.txt").exists()
    sdist = tmp_path / "ok.tar.gz"
    with tarfile.open(sdist, "w:gz") as tar:
        setuid = tarfile.TarInfo(f"{top}/tool")
        setuid.size, setuid.mode = 2, 0o4777
        tar.addfile(setuid, io.BytesIO(b"x\n"))
    src = build.extract_sources(sdist, tmp_path / "out")
    assert (src / "tool").stat().st_mode & 0o7777 == 0o755


def test_build_flags_are_portable_offline_and_static():
    flags = set(build.CMAKE_FLAGS)
    assert {"-DGGML_NATIVE=OFF", "-DLLAMA_USE_PREBUILT_UI=OFF", "-DLLAMA_CURL=OFF", "-DLLAMA_OPENSSL=OFF",
            "-DBUILD_SHARED_LIBS=OFF"} <= flags


def test_server_command_line_binds_loopback_with_the_measured_flags(tmp_path):
    argv = EngineConfig(tmp_path / "llama-server", tmp_path / "m.gguf", 9000, parallel=3, ctx=6144).argv()
    pairs = dict(zip(argv[1::2], argv[2::2], strict=False))
    assert pairs["--host"] == "127.0.0.1" and pairs["--port"] == "9000"
    assert (pairs["-np"], pairs["-c"], pairs["--cache-ram"], pairs["-fit"]) == ("3", "6144", "0", "off")
    assert pairs["--alias"] == "gemma3-270m" and pairs["--chat-template-file"] == str(TEMPLATE)
    assert "--metrics" in argv and "--no-webui" in argv


def test_template_is_gemma_turns():
    text = TEMPLATE.read_text()
    assert "<start_of_turn>" in text and "<end_of_turn>" in text and "add_generation_prompt" in text


def test_starting_without_make_engine_names_the_fix(tmp_path):
    config = EngineConfig(tmp_path / "missing", tmp_path / "m.gguf", free_port())
    with pytest.raises(EngineStartError, match="make engine"):
        start_engine(config)


def test_engine_command_refuses_a_slot_context_below_256():
    done = subprocess.run([sys.executable, "-m", "chunkwise", "engine", "--parallel", "8", "--num-ctx", "128"],
                          capture_output=True, text=True)
    assert done.returncode == 2 and "--num-ctx 128: a slot needs at least 256 tokens" in done.stderr


def test_engine_command_reads_the_old_total_ctx_as_per_slot_with_one_deprecation_line():
    """`--ctx` was the total over all slots; it still works, as total / parallel per slot, and says what to write."""
    done = subprocess.run([sys.executable, "-m", "chunkwise", "engine", "--parallel", "8", "--ctx", "1024"],
                          capture_output=True, text=True)
    lines = done.stderr.strip().splitlines()
    assert lines[0] == "chunkwise: --ctx is deprecated; write --num-ctx (per slot: the old --ctx / --parallel)"
    assert done.returncode == 2 and "--num-ctx 128: a slot needs at least 256 tokens" in lines[1] and len(lines) == 2
