"""Re-runs resume (issue 21 item 4): a run given no name is named after its input's content and the options
that change its answers or chunks, so the same command again resumes it and sends nothing it recorded;
another option starts a run of its own; `--new-run` still starts a fresh one beside it."""

from __future__ import annotations

import pytest

from chunkwise.cli import main as cli_main
from chunkwise.errors import EXIT_OK
from chunkwise.params import RunParams
from chunkwise.run.manifest import run_identity
from chunkwise.store.layout import content_run_name
from tests.support.pipeline_helpers import write_requests
from tests.support.run_checks import assert_answered_once, results


def identity(**changes):
    params = RunParams(input_path="in.parquet", **changes)
    return run_identity(params, input_fingerprint="f" * 64, model_digest="d", system_prompt="s", think=None)


def test_the_identity_follows_what_changes_the_answers_and_nothing_else():
    base = identity()
    assert base == identity() and len(base) == 64
    for change in ({"model": "other:1b"}, {"num_ctx": 4096}, {"num_predict": 64}, {"temperature": 0.5}, {"seed": 1},
                   {"mode": "conversation"}, {"format": {"type": "object"}}, {"chars_per_token": 3.0},
                   {"chunk_size": 10}, {"chunk_token_budget": 50_000}, {"expected_answer_tokens": 100},
                   {"limit": 10}, {"prompt_column": "text"}, {"id_column": "key"}, {"api": "openai"}):
        assert identity(**change) != base, change
    for same in ({"host": "http://elsewhere:11434"}, {"parallel": 9}, {"max_attempts": 2}, {"keep_alive": "5m"},
                 {"output_format": "openai"}, {"breaker_threshold": 9}):
        assert identity(**same) == base, same  # how it is sent, not what is asked
    assert identity(mode="conversation", parallel=2) != identity(mode="conversation", parallel=3)  # chunk count
    other = run_identity(RunParams(input_path="in.parquet"), input_fingerprint="e" * 64, model_digest="d",
                         system_prompt="s", think=None)
    assert other != base
    assert content_run_name("data/My Requests.parquet", base) == f"My-Requests-{base[:12]}"


@pytest.mark.usefixtures("prefect_harness", "clean_process")
def test_the_same_command_again_resumes_and_sends_nothing_twice(sim_factory, tmp_path, capsys):
    sim = sim_factory(answer_tokens=(4, 8))
    source = write_requests(tmp_path / "requests.parquet", 12)
    out = tmp_path / "runs"
    argv = ["run", "--input", str(source), "--host", sim.url, "--output-dir", str(out), "--chunk-size", "4"]
    assert cli_main(argv) == EXIT_OK
    first = capsys.readouterr().out
    [run_dir] = list(out.iterdir())
    assert run_dir.name.startswith("requests-") and len(run_dir.name) == len("requests-") + 12
    assert f"run {run_dir.name}: new, in {run_dir} (the same command again resumes it)" in first
    assert cli_main(argv) == EXIT_OK
    again = capsys.readouterr().out
    assert f"run {run_dir.name}: resuming: 12 of 12 requests already answered, 0 to send" in again
    assert [p.name for p in out.iterdir()] == [run_dir.name]
    assert_answered_once(sim.stats(), 12)
    assert results(run_dir)["status"].to_list() == ["ok"] * 12
    # another option that changes the answers is another run; --new-run starts afresh beside the first
    assert cli_main([*argv, "--temperature", "0.5"]) == EXIT_OK
    assert cli_main([*argv, "--new-run"]) == EXIT_OK
    names = sorted(p.name for p in out.iterdir())
    assert len(names) == 3 and f"{run_dir.name}-2" in names
    assert sim.stats()["answered_total"] == 36
