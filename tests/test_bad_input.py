"""Bad input and bad configuration through `chunkwise run` (in-process `chunkwise.cli.main`), each with
its exact one-line message, its exit code, and proof that nothing was lost.

- Preflight errors (a file that cannot be used, bad parameters, a server that cannot serve) exit 2
  before Prefect starts and write no file.
- Rows that cannot be sent are quarantined with a reason and reported in results.parquet; the
  other rows are answered (one flow run).
- Resuming with another input, model digest, options or mode is refused, naming the difference,
  and leaves every file of the run as it was; --new-run starts beside it.
- A full disk while writing a checkpoint or the ledger stops the run with a clear message (exit 2),
  keeps the ledger, and a resume finishes without re-sending an answer that was recorded.

Unwritable output directory: these tests run as root, which chmod does not stop, so the output
directory is placed under a regular file (`<file>/x`): mkdir fails with ENOTDIR for any user.
"""

from __future__ import annotations

import errno
import hashlib
import json
import re
from pathlib import Path

import polars as pl
import pytest

from chunkwise.cli import main as cli_main
from chunkwise.errors import EXIT_CONFIG, EXIT_FAILED, EXIT_OK
from chunkwise.harness.sim.harness import free_port
from chunkwise.harness.sim.profiles import PROFILES
from chunkwise.inputs.summary import REASON_EMPTY, REASON_NULL
from chunkwise.store.files import read_json
from tests.support.direct_run import start
from tests.support.pipeline_helpers import params_for, write_requests
from tests.support.run_checks import (
    assert_answered_once,
    ledger_records,
    results,
)

pytestmark = pytest.mark.usefixtures("clean_process")

RESUME_REFUSED = "run t was started with different settings ({}); resume with the same settings, or pass --new-run " \
                 "to start a fresh run beside it"


@pytest.fixture
def cli(capsys):
    def call(*argv: str) -> tuple[int, str, str]:
        """Exit code, stdout, and the last line of stderr: the command's error line comes last, after
        whatever the run logged (log records also go to stderr)."""
        code = cli_main(list(argv))
        captured = capsys.readouterr()
        return code, captured.out.strip(), (captured.err.strip().splitlines() or [""])[-1]

    return call


def run_argv(sim_url: str, out: Path, *extra: str) -> list[str]:
    return ["run", "--host", sim_url, "--output-dir", str(out), "--run-name", "t", "--num-ctx", "4096",
            "--mode", "independent", "--chunk-size", "8", "--parallel", "2", *extra]


def files_under(path: Path) -> list[Path]:
    return sorted(p for p in path.rglob("*") if p.is_file()) if path.exists() else []


def make_inputs(d: Path) -> None:
    write_requests(d / "good.parquet", 5)
    (d / "adir").mkdir()
    (d / "text.parquet").write_text("id,prompt\n1,hi\n")
    pl.DataFrame(schema={"id": pl.Int64, "prompt": pl.String}).write_parquet(d / "norows.parquet")
    pl.DataFrame({"key": [1], "prompt": ["x"]}).write_parquet(d / "noid.parquet")
    pl.DataFrame({"id": [1], "text": ["x"]}).write_parquet(d / "noprompt.parquet")
    pl.DataFrame({"id": [1], "prompt": [5]}).write_parquet(d / "intprompt.parquet")
    pl.DataFrame({"id": [1, 2, 2, 3, 3, 3], "prompt": ["a"] * 6}).write_parquet(d / "dups.parquet")
    (d / "afile").write_text("a regular file")
    pl.DataFrame({"id": [1], "prompt": ["x"], "messages": [[{"role": "user", "content": "x"}]]}).write_parquet(
        d / "both.parquet")
    pl.DataFrame({"key": [1], "id": [2], "prompt": ["x"]}).write_parquet(d / "noid2.parquet")
    pl.DataFrame({"id": ["a", "b"], "messages": [[{"role": "user", "content": "hi"}], [
        {"role": "user", "content": "one"}, {"role": "assistant", "content": "1"}, {"role": "user", "content": "two"}]]}
    ).write_parquet(d / "chats.parquet")
    (d / "batch.jsonl").write_text(json.dumps({"custom_id": "a", "method": "POST", "url": "/v1/chat/completions",
                                               "body": {"messages": [{"role": "user", "content": "hi"}]}}) + "\n")


PARQUET_HINT = "write the requests with polars DataFrame.write_parquet or pyarrow.parquet.write_table"
PREFLIGHT = {
    "missing file": (["--input", "{d}/nope.parquet"], "{d}/nope.parquet: no such file; check the input path"),
    "directory": (["--input", "{d}/adir"], "{d}/adir: is a directory, not a file; give the path of one Parquet file"),
    "not parquet": (["--input", "{d}/text.parquet"],
                    "{d}/text.parquet: not a readable Parquet file (Parquet magic bytes not found in footer. Either "
                    "the file is corrupted or this is not a parquet file.); " + PARQUET_HINT),
    "no rows": (["--input", "{d}/norows.parquet"],
                "{d}/norows.parquet: has no rows; write at least one request (columns `id` and `prompt`)"),
    "no id": (["--input", "{d}/noid.parquet"],
              "{d}/noid.parquet: no `id` column (columns: key, prompt); add a unique string or integer `id` column, "
              "or name the id column with --id-column"),
    "no prompt": (["--input", "{d}/noprompt.parquet"],
                  "{d}/noprompt.parquet: no `prompt` column (columns: id, text); add a string `prompt` column (or a "
                  "`messages` column of chats), or name the column holding the requests with --prompt-column"),
    "prompt not text": (["--input", "{d}/intprompt.parquet"],
                        "{d}/intprompt.parquet: column `prompt` has type int64; requests must be strings (prompts) or "
                        "lists of {{role: string, content: string}} (chats): cast it"),
    "duplicate ids": (["--input", "{d}/dups.parquet"],
                      "{d}/dups.parquet: column `id` has 2 duplicated values in 5 rows (2 x2, 3 x3); ids must be "
                      "unique: deduplicate the rows or renumber the ids"),
    "unwritable output dir": (["--input", "{d}/good.parquet", "--output-dir", "{d}/afile/x"],
                              "cannot write the run directory {d}/afile/x/t (Not a directory); choose an "
                              "--output-dir you can write to"),
    "run name with ..": (["--input", "{d}/good.parquet", "--run-name", "../t"],
                         "--run-name: run_name '../t' is not a plain directory name: use letters, digits, '.', '_' "
                         "and '-' (no '/', no '..', not starting with '.')"),
    "run name with /": (["--input", "{d}/good.parquet", "--run-name", "a/t"],
                        "--run-name: run_name 'a/t' is not a plain directory name: use letters, digits, '.', '_' "
                        "and '-' (no '/', no '..', not starting with '.')"),
    "absolute run name": (["--input", "{d}/good.parquet", "--run-name", "/tmp/t"],
                          "--run-name: run_name '/tmp/t' is not a plain directory name: use letters, digits, '.', "
                          "'_' and '-' (no '/', no '..', not starting with '.')"),
    "file host": (["--input", "{d}/good.parquet", "--host", "file:///etc/passwd"],
                  "Ollama host 'file:///etc/passwd' uses scheme 'file'; only http and https are allowed"),
    "refused connection": (["--input", "{d}/good.parquet", "--host", "http://127.0.0.1:{port}"],
                           "cannot reach Ollama at http://127.0.0.1:{port} (ConnectError: [Errno 111] Connection "
                           "refused); start it with `ollama serve` (or set --host / OLLAMA_HOST), or try a dry run "
                           "against the simulator: `chunkwise sim`"),
    "unknown model": (["--input", "{d}/good.parquet", "--model", "nope:1b"],
                      "model 'nope:1b' not found (status 404); pull it with: ollama pull nope:1b"),
    "num_ctx 0": (["--input", "{d}/good.parquet", "--num-ctx", "0"],
                  "--num-ctx 0: must be greater than or equal to 256"),
    "num_ctx negative": (["--input", "{d}/good.parquet", "--num-ctx", "-5"],
                         "--num-ctx -5: must be greater than or equal to 256"),
    "num_ctx above the model": (["--input", "{d}/good.parquet", "--num-ctx", "200000"],
                                "num_ctx 200000 is above llama3.1:8b's maximum context of 131072 tokens (Ollama "
                                "would silently clamp it); use --num-ctx 131072 or less"),
    "chunk_size 0": (["--input", "{d}/good.parquet", "--chunk-size", "0"],
                     "--chunk-size 0: must be greater than or equal to 1"),
    "missing system prompt file": (["--input", "{d}/good.parquet", "--system-prompt-file", "{d}/nope.txt"],
                                   "system prompt file {d}/nope.txt does not exist; check --system-prompt-file"),
    "mapped id column missing": (["--input", "{d}/good.parquet", "--id-column", "key"],
                                 "{d}/good.parquet: no `key` column (--id-column) (columns: id, prompt, group); add a "
                                 "unique string or integer `id` column, or name the id column with --id-column"),
    "both prompt and messages": (["--input", "{d}/both.parquet"],
                                 "{d}/both.parquet: has both `prompt` and `messages`; name the one that holds the "
                                 "requests with --prompt-column"),
    "mapped column beside id": (["--input", "{d}/noid2.parquet", "--id-column", "key"],
                                "{d}/noid2.parquet: has a `id` column besides the mapped `key`; rename or drop `id` "
                                "(results name the ids `id`)"),
    "batch file with a column mapping": (["--input", "{d}/batch.jsonl", "--prompt-column", "text"],
                                         "--id-column and --prompt-column map a Parquet file's columns; an OpenAI "
                                         "batch file's ids are its custom_ids and its requests its bodies: leave them "
                                         "out"),
    "chats in conversation mode": (["--input", "{d}/chats.parquet", "--mode", "conversation"],
                                   "1 of the requests in {d}/chats.parquet are chats with earlier turns; conversation "
                                   "mode sends each request as one turn of its chunk's chat: use --mode independent "
                                   "(the default)"),
}


@pytest.mark.parametrize("case", list(PREFLIGHT))
def test_preflight_error_is_one_line_exit_2_and_writes_nothing(sim, tmp_path, cli, case):
    make_inputs(tmp_path)
    extra, message = PREFLIGHT[case]
    port = free_port()
    fill = lambda s: s.format(d=tmp_path, port=port)  # noqa: E731
    code, _, err = cli(*run_argv(sim.url, tmp_path / "runs"), *map(fill, extra))
    assert code == EXIT_CONFIG
    assert err == "chunkwise run: " + fill(message)
    assert [p.name for p in files_under(tmp_path / "runs")] in ([], [".lock"])  # at most the run's lock file
    assert sim.stats()["requests"].get("/api/chat") is None  # nothing was sent


@pytest.mark.parametrize("command", ["run", "plan"])
def test_an_input_with_no_row_to_send_is_one_line_exit_2_naming_the_rejects(sim, tmp_path, cli, command):
    """Every row quarantined used to end in a ZeroDivisionError traceback (zero chunks); now it is one line naming
    the reasons' file, exit 2, nothing sent; `plan` refuses it the same way."""
    source = tmp_path / "blank.parquet"
    pl.DataFrame({"id": ["a", "b"], "prompt": ["  ", None]}).write_parquet(source)
    argv = run_argv(sim.url, tmp_path / "runs", "--input", str(source))
    if command == "plan":
        argv = ["plan", "--host", sim.url, "--input", str(source)]
    code, out, err = cli(*argv)
    assert code == EXIT_CONFIG and out == ""
    rejects = tmp_path / "runs" / "t" / "rejects.parquet"
    where = f" (every reason in {rejects})" if command == "run" else ""
    assert err == (f"chunkwise {command}: {source}: none of its 2 rows can be sent{where}; the first, row 0 id 'a': "
                   "prompt is only whitespace (2 characters): give the row a prompt or remove it from the input; fix "
                   "the input and run again")
    if command == "run":
        assert pl.read_parquet(rejects)["id"].to_list() == ["a", "b"]
    assert sim.stats()["requests"].get("/api/chat") is None


def test_a_batch_file_none_of_whose_lines_can_be_sent_is_one_line_exit_2(sim, tmp_path, cli):
    source = tmp_path / "batch.jsonl"
    source.write_text("".join(json.dumps({"custom_id": f"c{i}", "method": "POST", "url": "/v1/chat/completions",
                                          "body": {"model": "other-model", "max_tokens": 16,
                                                   "messages": [{"role": "user", "content": "hi"}]}}) + "\n"
                              for i in range(3)))
    code, _, err = cli(*run_argv(sim.url, tmp_path / "runs", "--input", str(source), "--model", "llama3.1:8b"))
    assert code == EXIT_CONFIG
    assert err.startswith(f"chunkwise run: {source}: none of its 3 rows can be sent (every reason in ")
    assert "line 1: body.model is 'other-model' but the run's model is 'llama3.1:8b'" in err and "Traceback" not in err


@pytest.mark.usefixtures("prefect_harness")
def test_rows_that_cannot_be_sent_are_quarantined_and_the_rest_answered(sim_factory, tmp_path, cli):
    sim = sim_factory(answer_tokens=(4, 8))
    ten_mb = "x" * 10_000_000
    prompts = ["first question", None, "", "  \n", "y " * 10_000, ten_mb, "ab " * 4000, "last question"]
    blob = [bytes([0xFF, 0xFE, i, 0x80]) for i in range(len(prompts))]  # not UTF-8: carried, never decoded
    source = tmp_path / "rows.parquet"
    pl.DataFrame({"id": [f"q{i}" for i in range(len(prompts))], "prompt": prompts,
                  "blob": pl.Series(blob, dtype=pl.Binary)}).write_parquet(source)

    code, out, _ = cli(*run_argv(sim.url, tmp_path / "runs", "--input", str(source), "--num-ctx", "2048",
                              "--num-predict", "256"))
    assert code == EXIT_FAILED, out  # one request failed (context_truncated); rejected rows are reported
    got = results(tmp_path / "runs" / "t")
    assert got["id"].to_list() == [f"q{i}" for i in range(len(prompts))]
    assert got["blob"].to_list() == blob
    assert got["status"].to_list() == ["ok", "rejected", "rejected", "rejected", "rejected", "rejected", "failed", "ok"]
    too_long = ("prompt is {} characters, at least {} tokens even at 8 characters per token, more than num_ctx 2048 - "
                "num_predict 256 = 1792: shorten or split the prompt, or raise num_ctx")
    assert got["error_message"].to_list()[1:6] == [
        REASON_NULL, REASON_EMPTY,
        "prompt is only whitespace (3 characters): give the row a prompt or remove it from the input",
        too_long.format(20_000, 2_500), too_long.format(10_000_000, 1_250_000),
    ]
    # longer than num_ctx but possibly short enough: sent, and Ollama's 400 is recorded, not retried. The
    # simulator's default era runs llama-server, whose refusal Ollama passes on (its count of the prompt varies)
    assert re.fullmatch(r"request \(\d+ tokens\) exceeds the available context size \(2048 tokens\), try increasing "
                        r"it; raise num_ctx or shorten the prompt", got["error_message"][6])
    assert got["error_class"].to_list()[6] == "context_truncated"
    stats = (tmp_path / "runs" / "t" / "stats.json").read_text()
    assert '"reconciles": true' in stats and '"rejected": 5' in stats
    assert sim.stats()["answered_total"] == 2 and sim.stats()["received_total"] == 4  # the load, 2 answers, 1 refusal


def snapshot(run_dir: Path) -> dict[str, str]:
    return {str(p.relative_to(run_dir)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files_under(run_dir)}


@pytest.fixture
def started_run(sim, tmp_path):
    """A run with its first chunk answered and checkpointed (run directly, no Prefect needed)."""
    from chunkwise.run.chunk import run_chunk
    from chunkwise.run.session import RunSession

    source = write_requests(tmp_path / "in.parquet", 24)
    params = params_for(sim, source, tmp_path / "runs", mode="independent", num_ctx=4096, chunk_size=8, parallel=2,
                        system_prompt="")
    ctx, specs = start(params)
    with RunSession(ctx) as session:
        run_chunk(session, specs[0])
    return source, ctx.dir


def test_resume_with_another_input_is_refused_and_changes_nothing(sim, tmp_path, cli, started_run):
    source, run_dir = started_run
    other = write_requests(tmp_path / "other.parquet", 24, prompt_words=41)
    before = snapshot(run_dir)
    old = hashlib.sha256(source.read_bytes()).hexdigest()
    new = hashlib.sha256(other.read_bytes()).hexdigest()
    code, _, err = cli(*run_argv(sim.url, tmp_path / "runs", "--input", str(other)))
    assert code == EXIT_CONFIG
    assert err == "chunkwise run: " + RESUME_REFUSED.format(f"input_fingerprint: run has '{old}', now '{new}'")
    assert snapshot(run_dir) == before


def test_resume_with_another_model_digest_is_refused_and_changes_nothing(sim, tmp_path, cli, started_run):
    source, run_dir = started_run
    before = snapshot(run_dir)
    old_digest = read_json(run_dir / "manifest.json")["model_digest"]
    new_digest = PROFILES["llama3.1:8b"].build_digest("re-pulled")
    assert new_digest != old_digest
    sim.configure(model_build="re-pulled")  # `ollama pull` brought a new build of the same name
    try:
        code, _, err = cli(*run_argv(sim.url, tmp_path / "runs", "--input", str(source)))
    finally:
        sim.configure(model_build="")
    assert code == EXIT_CONFIG
    assert err == "chunkwise run: " + RESUME_REFUSED.format(f"model_digest: run has '{old_digest}', now '{new_digest}'")
    assert snapshot(run_dir) == before


@pytest.mark.parametrize("flags, phrase", [
    (["--mode", "conversation", "--parallel", "1"], "mode: run has 'independent', now 'conversation'"),
    (["--num-predict", "64"], "options: run has {'num_ctx': 4096, 'num_predict': 512, 'seed': 0, 'temperature': 0.0}, "
                              "now {'num_ctx': 4096, 'num_predict': 64, 'temperature': 0.0, 'seed': 0}"),
])
def test_resume_with_other_settings_is_refused_naming_them(sim, tmp_path, cli, started_run, flags, phrase):
    source, run_dir = started_run
    before = snapshot(run_dir)
    code, _, err = cli(*run_argv(sim.url, tmp_path / "runs", "--input", str(source), *flags))
    assert code == EXIT_CONFIG
    assert err == "chunkwise run: " + RESUME_REFUSED.format(phrase)
    assert snapshot(run_dir) == before


@pytest.mark.usefixtures("prefect_harness")
def test_new_run_starts_beside_the_old_one(sim, tmp_path, cli, started_run):
    source, run_dir = started_run
    before = snapshot(run_dir)
    code, out, _ = cli(*run_argv(sim.url, tmp_path / "runs", "--input", str(source), "--mode", "conversation",
                              "--new-run"))
    assert code == EXIT_OK, out
    assert snapshot(run_dir) == before
    assert results(tmp_path / "runs" / "t-2")["status"].to_list() == ["ok"] * 24


def enospc_once(monkeypatch, module, name: str, *, on_call: int = 1):
    """Make `module.name` raise OSError(ENOSPC) on its `on_call`-th call (a disk that filled up)."""
    real = getattr(module, name)
    calls = {"n": 0}

    def failing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == on_call:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, failing)


@pytest.mark.usefixtures("prefect_harness")
def test_disk_full_while_writing_a_checkpoint_stops_and_resume_sends_nothing_twice(sim, tmp_path, cli, monkeypatch):
    import chunkwise.store.checkpoint

    source = write_requests(tmp_path / "in.parquet", 24)
    argv = run_argv(sim.url, tmp_path / "runs", "--input", str(source))
    enospc_once(monkeypatch, chunkwise.store.checkpoint, "write_atomic")
    code, out, err = cli(*argv)
    assert code == EXIT_CONFIG, out
    assert err.endswith("(No space left on device); free space or fix the run directory, then resume with the "
                        "same run name: every answer already in the ledger is kept")
    stopped = re.search(r"run t stopped: chunk-(\d{4}) \[\d+-\d+\]: cannot write \S*/runs/t/chunks/"
                        r"chunk-(\d{5})\.parquet", err)
    assert stopped and int(stopped[1]) == int(stopped[2]), err  # names the chunk whose checkpoint failed
    records, bad = ledger_records(tmp_path / "runs" / "t")
    assert bad == 0 and len(records) == sim.stats()["answered_total"]  # every answer paid for is kept
    assert not (tmp_path / "runs" / "t" / "results.parquet").exists()

    monkeypatch.undo()
    code, out, _ = cli(*argv)
    assert code == EXIT_OK, out
    assert_answered_once(sim.stats(), expected=24)


@pytest.mark.usefixtures("prefect_harness")
def test_disk_full_while_appending_to_the_ledger_stops_every_chunk(sim, tmp_path, cli, monkeypatch):
    from chunkwise.store.ledger import Ledger

    source = write_requests(tmp_path / "in.parquet", 24)
    argv = run_argv(sim.url, tmp_path / "runs", "--input", str(source))
    enospc_once(monkeypatch, Ledger, "append", on_call=5)
    code, out, err = cli(*argv)
    assert code == EXIT_CONFIG, out
    assert err.startswith("chunkwise run: run t stopped: ") and "No space left on device" in err
    answered = sim.stats()["answered_total"]
    records, bad = ledger_records(tmp_path / "runs" / "t")
    # the answer whose record failed is lost; the requests already in flight were recorded; nothing more was sent
    assert bad == 0 and len(records) == answered - 1 < 24

    monkeypatch.undo()
    code, out, _ = cli(*argv)
    assert code == EXIT_OK, out
    stats = sim.stats()
    assert stats["answered_total"] == 25 and stats["fingerprints_answered_more_than_once"] == 1
