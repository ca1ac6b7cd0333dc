"""Run paths confined to their roots (issue 23, point 2): every run's output_dir inside the runs root
(CHUNKWISE_RUNS_ROOT, default the output dir), its input and system prompt files inside the inputs root
(CHUNKWISE_INPUTS_ROOT, default the working directory), a shard's run_dir inside the runs root. `..`
that climbs out, an absolute path elsewhere and a symlink leaving the root are refused with one line,
before anything is read or written, on every entry: the CLI, the batch flow (what the UI form and a
deployment start) and the shard flow.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from chunkwise.errors import EXIT_CONFIG, UnsafePathError
from chunkwise.params import RunParams
from chunkwise.settings import Settings, get_settings
from chunkwise.store.confine import inside, no_escaping_links, run_dir_inside
from tests.support.pipeline_helpers import params_for, write_requests

#: A port nothing listens on: a check that ran after the server probe would fail with "cannot reach".
CLOSED = "http://127.0.0.1:9"


@pytest.fixture
def world(tmp_path, monkeypatch):
    """runs/ (the runs root), inputs/ (the inputs root) with a request file and a system prompt, and
    elsewhere/ outside both, holding files a crafted run would like to read or write; the settings
    point at the two roots for the test."""
    runs, inputs, elsewhere = (tmp_path / d for d in ("runs", "inputs", "elsewhere"))
    for d in (runs, inputs, elsewhere):
        d.mkdir()
    write_requests(inputs / "in.parquet", 3)
    write_requests(elsewhere / "secret.parquet", 3)
    (inputs / "system.txt").write_text("Be terse.")
    (elsewhere / "system.txt").write_text("secret")
    os.symlink(elsewhere, runs / "out")  # a directory inside the runs root that leads out of it
    os.symlink(elsewhere / "secret.parquet", inputs / "link.parquet")
    os.symlink(elsewhere / "system.txt", inputs / "link.txt")
    os.symlink(runs / "real", runs / "alias")  # a link that stays inside
    monkeypatch.setenv("CHUNKWISE_RUNS_ROOT", str(runs))
    monkeypatch.setenv("CHUNKWISE_INPUTS_ROOT", str(inputs))
    get_settings.cache_clear()
    yield tmp_path
    get_settings.cache_clear()


def tree(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


def test_inside_accepts_paths_that_stay_and_refuses_every_escape(world):
    runs = world / "runs"
    assert inside(runs, runs, what="output_dir", setting="S") == runs
    assert inside(runs, runs / "a" / ".." / "b", what="output_dir", setting="S") == runs / "b"
    assert inside(runs, runs / "alias" / "x", what="output_dir", setting="S") == runs / "real" / "x"
    for escape in (runs / ".." / "elsewhere", runs / "a" / ".." / ".." / "x", world / "elsewhere", Path("/etc"),
                   runs / "out", runs / "out" / "run"):
        with pytest.raises(UnsafePathError, match=r"outside .*\(S\); use a path inside it, or set S"):
            inside(runs, escape, what="output_dir", setting="S")
    with pytest.raises(UnsafePathError, match="resolves through a symlink to"):
        inside(runs, runs / "out", what="output_dir", setting="S")
    with pytest.raises(UnsafePathError, match="cannot be resolved"):
        inside(runs, "a\x00b", what="output_dir", setting="S")


def test_relative_paths_resolve_against_the_working_directory(world, monkeypatch):
    monkeypatch.chdir(world / "runs")
    assert inside(world / "runs", "sub", what="output_dir", setting="S") == world / "runs" / "sub"
    with pytest.raises(UnsafePathError):
        inside(world / "runs", "../elsewhere", what="output_dir", setting="S")


def test_the_roots_default_to_the_output_dir_and_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ("CHUNKWISE_RUNS_ROOT", "CHUNKWISE_INPUTS_ROOT", "CHUNKWISE_OUTPUT_DIR"):
        monkeypatch.delenv(name, raising=False)
    assert Settings().runs_root_path() == tmp_path / "runs"
    assert Settings().inputs_root_path() == tmp_path
    monkeypatch.setenv("CHUNKWISE_OUTPUT_DIR", str(tmp_path / "shared"))
    assert Settings().runs_root_path() == tmp_path / "shared"


#: (parameter changes, the parameter the refusal names, the setting it names); paths relative to the world.
ESCAPES = {
    "output_dir ..": ({"output_dir": "runs/../elsewhere"}, "output_dir", "CHUNKWISE_RUNS_ROOT"),
    "output_dir absolute": ({"output_dir": "/var/tmp"}, "output_dir", "CHUNKWISE_RUNS_ROOT"),
    "output_dir symlink": ({"output_dir": "runs/out"}, "output_dir", "CHUNKWISE_RUNS_ROOT"),
    "input ..": ({"input_path": "inputs/../elsewhere/secret.parquet"}, "input_path", "CHUNKWISE_INPUTS_ROOT"),
    "input absolute": ({"input_path": "/etc/passwd"}, "input_path", "CHUNKWISE_INPUTS_ROOT"),
    "input symlink": ({"input_path": "inputs/link.parquet"}, "input_path", "CHUNKWISE_INPUTS_ROOT"),
    "system prompt ..": ({"system_prompt_file": "inputs/../elsewhere/system.txt", "system_prompt": ""},
                         "system_prompt_file", "CHUNKWISE_INPUTS_ROOT"),
    "system prompt symlink": ({"system_prompt_file": "inputs/link.txt", "system_prompt": ""},
                              "system_prompt_file", "CHUNKWISE_INPUTS_ROOT"),
}


def crafted(world: Path, changes: dict[str, str]) -> RunParams:
    values = {"input_path": str(world / "inputs" / "in.parquet"), "output_dir": str(world / "runs"), "run_name": "t",
              "host": CLOSED, "num_ctx": 8192, "system_prompt": "You are terse."}
    values.update({k: (v if not v or v.startswith("/") else str(world / v)) for k, v in changes.items()})
    return RunParams(**values)


@pytest.mark.parametrize("case", list(ESCAPES))
def test_prepare_run_refuses_each_escape_before_contacting_the_server_or_writing(world, case):
    from chunkwise.run.prepare import prepare_run

    changes, what, setting = ESCAPES[case]
    before = {d: tree(world / d) for d in ("runs", "elsewhere")}
    with pytest.raises(UnsafePathError) as info:
        prepare_run(crafted(world, changes))
    message = str(info.value)
    assert message.startswith(f"{what} ") and f"({setting})" in message and "\n" not in message
    assert {d: tree(world / d) for d in ("runs", "elsewhere")} == before  # nothing written anywhere


def test_paths_inside_their_roots_pass_the_check(world):
    """The same run with every path inside: the check lets it through to the server probe (which fails on
    the closed port, proving the check is not what stopped it)."""
    from chunkwise.errors import SetupError
    from chunkwise.run.prepare import prepare_run

    params = crafted(world, {"system_prompt_file": "inputs/system.txt", "system_prompt": "",
                             "output_dir": "runs/alias"})
    with pytest.raises(SetupError, match=r"127\.0\.0\.1:9") as info:
        prepare_run(params)
    assert not isinstance(info.value, UnsafePathError)


def test_an_existing_run_directory_with_a_symlink_out_of_the_root_is_refused(world):
    from chunkwise.run.rundir import open_run_dir

    run = world / "runs" / "t"
    (run / "ledger").mkdir(parents=True)
    os.symlink(world / "elsewhere", run / "chunks")
    with pytest.raises(UnsafePathError, match=r"holds a symlink .*/chunks -> .*elsewhere, outside the runs root"):
        open_run_dir(crafted(world, {}))
    os.symlink(world / "elsewhere" / "system.txt", run / "ledger" / "chunk-00000.jsonl")  # deeper, a file
    (run / "chunks").unlink()
    with pytest.raises(UnsafePathError, match=r"chunk-00000\.jsonl"):
        no_escaping_links(run, world / "runs")
    (run / "ledger" / "chunk-00000.jsonl").unlink()
    os.symlink(world / "runs" / "real", run / "inside")  # a link that stays inside the root is fine
    paths, existing = open_run_dir(crafted(world, {}))
    assert paths.root == run and existing is None


def test_a_shard_run_dir_must_be_a_directory_strictly_inside_the_runs_root(world):
    runs = world / "runs"
    (runs / "r").mkdir()
    assert run_dir_inside(runs, runs / "r") == runs / "r"
    for bad, match in ((runs, "is the runs root itself"), (world / "elsewhere", "outside"),
                       (runs / "out", "through a symlink"), (runs / "r" / ".." / ".." / "elsewhere", "outside"),
                       ("/", "outside")):
        with pytest.raises(UnsafePathError, match=match):
            run_dir_inside(runs, bad)
    os.symlink(world / "elsewhere", runs / "r" / "locks")
    with pytest.raises(UnsafePathError, match="holds a symlink"):
        run_dir_inside(runs, runs / "r")


def test_the_cli_refuses_an_output_dir_outside_the_runs_root_in_one_line(world, capsys, clean_process):
    from chunkwise.cli import main

    code = main(["run", "--input", str(world / "inputs" / "in.parquet"), "--host", CLOSED, "--output-dir",
                 str(world / "elsewhere" / "runs"), "--run-name", "t"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == EXIT_CONFIG
    assert err == [f"chunkwise run: output_dir '{world}/elsewhere/runs' resolves to {world}/elsewhere/runs, outside "
                   f"{world}/runs (CHUNKWISE_RUNS_ROOT); use a path inside it, or set CHUNKWISE_RUNS_ROOT on the "
                   "machine running the flow"]
    assert tree(world / "elsewhere") == ["secret.parquet", "system.txt"]


@pytest.mark.usefixtures("prefect_harness")
def test_the_batch_and_shard_flows_refuse_crafted_paths_before_reading_or_writing(world, sim):
    """What a Prefect UI form, a deployment run or a crafted shard run hands the flows: refused in the
    flow itself (the worker's own roots), the flow run Failed with the one-line reason, nothing written."""
    from flows.batch import batch
    from flows.shard import shard

    elsewhere = world / "elsewhere"
    before = tree(elsewhere)
    params = params_for(sim, world / "inputs" / "in.parquet", elsewhere / "runs")
    state = batch(params, return_state=True)
    assert state.is_failed()
    assert "outside" in str(state.message) and "CHUNKWISE_RUNS_ROOT" in str(state.message)
    state = batch(params_for(sim, elsewhere / "secret.parquet", world / "runs"), return_state=True)
    assert state.is_failed() and "CHUNKWISE_INPUTS_ROOT" in str(state.message)
    # a shard run pointed at a directory outside the runs root that looks like a run directory
    (elsewhere / "cluster.json").write_text(json.dumps({"ctx": {}}))
    state = shard(run_dir=str(elsewhere), shard=0, attempt=0, return_state=True)
    assert state.is_failed() and "run_dir" in str(state.message) and "CHUNKWISE_RUNS_ROOT" in str(state.message)
    assert tree(elsewhere) == sorted([*before, "cluster.json"])
    assert sim.stats()["requests"].get("/api/chat") is None  # nothing was sent either
