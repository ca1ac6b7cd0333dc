"""A newcomer's first hour, as the README's first screen tells it (issue 21, "Done when").

The commands are read from the README itself (its "Getting started" code blocks and its Polars line), so the
README and this walk-through cannot drift apart: a command the README shows that stops working, or a README
that stops showing it, fails here. Each command runs as its own process in an empty directory holding only
the user's file, the way a person types it; only the server's URL is filled in (`--host`), since the
README's servers run on their default ports and these run on free ones.

- the demo (`make demo` runs `chunkwise demo`): exit 0 and 5,000 answered rows;
- the user's own Parquet file against the Ollama simulator: `plan`, a `--limit 20` trial, the full command
  stopped by Ctrl-C mid-run, `chunkwise status` of the stopped run, the same command again resuming (it says
  what was done and the simulator answers every request exactly once), the results read with the README's
  Polars line;
- an OpenAI-compatible server: the README's `--api openai` command and its OpenAI batch-file command against
  the real llama-server of `make engine`, the batch file a plain Batch API file with a `max_tokens` per line
  and no other flag, its output files read as an OpenAI Batch consumer reads them.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest

from chunkwise.errors import EXIT_INTERRUPTED, EXIT_OK
from tests.support.openai_batch import check_batch_files
from tests.support.pipeline_helpers import write_requests
from tests.support.run_checks import assert_answered_once, ledger_records

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]

README = Path(__file__).resolve().parents[1] / "README.md"
N = 60


def section(title: str) -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end >= 0 else None]


def readme_commands(title: str = "Getting started") -> list[list[str]]:
    """The `chunkwise ...` commands of a README section's bash blocks, as argv lists (comments dropped)."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", section(title), flags=re.S):
        for line in block.splitlines():
            line = line.split("  #", 1)[0].strip()
            if line.startswith("chunkwise "):
                commands.append(shlex.split(line))
    return commands


def readme_command(*must: str, without: str = "") -> list[str]:
    """The one README command holding every word of `must` (and not `without`)."""
    found = [c for c in readme_commands() if all(word in c for word in must) and without not in c]
    assert len(found) == 1, f"the README's getting-started shows no single command with {must}: {readme_commands()}"
    return found[0]


def with_host(argv: list[str], url: str) -> list[str]:
    """`argv` with its server at `url`: the README's --host value replaced, or --host added."""
    if "--host" in argv:
        i = argv.index("--host")
        return [*argv[:i + 1], url, *argv[i + 2:]]
    return [*argv, "--host", url]


@pytest.fixture
def user_dir(tmp_path):
    """An empty working directory, the user's own (runs/ lands here, as the README says)."""
    home = tmp_path / "work"
    home.mkdir()
    return home


@pytest.fixture
def env(tmp_path):
    from prefect.settings import get_current_settings

    values = dict(os.environ)
    values.update(PREFECT_API_URL=str(get_current_settings().api.url), PREFECT_HOME=str(tmp_path / "prefect-home"),
                  PREFECT_LOGGING_LEVEL="WARNING", PREFECT_SERVER_ANALYTICS_ENABLED="false", PYTHONUNBUFFERED="1")
    return values


def start(argv: list[str], cwd: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    assert argv[0] == "chunkwise"
    return subprocess.Popen([sys.executable, "-m", "chunkwise", *argv[1:]], cwd=cwd, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def run(argv: list[str], cwd: Path, env: dict[str, str], timeout: float = 300) -> tuple[int, str]:
    proc = start(argv, cwd, env)
    try:
        out, _ = proc.communicate(timeout=timeout)
    finally:  # a command that overran (or a test stopped meanwhile) does not outlive the test
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return proc.returncode, out


def run_dirs(cwd: Path) -> set[Path]:
    return set((cwd / "runs").glob("*")) if (cwd / "runs").is_dir() else set()


def read_with_readme_polars(results: Path) -> pl.DataFrame:
    """The README's Polars line, its example path replaced by `results`."""
    line = next(x for x in section("What comes out").splitlines() if x.startswith("import polars as pl;"))
    statement, expression = (part.strip() for part in line.split(";", 1))
    expression = re.sub(r'"runs/[^"]+/results\.parquet"', repr(str(results)), expression)
    scope: dict[str, object] = {}
    assert statement == "import polars as pl"
    exec(statement, scope)
    frame = eval(expression, scope)  # the README's own expression, with the path filled in
    assert isinstance(frame, pl.DataFrame)
    return frame


@pytest.mark.timeout(900)  # 5,000 requests: about 80 s on 2 idle cores, several minutes on a busy machine
def test_the_demo_of_the_first_screen(user_dir, env):
    assert "make demo" in section("Getting started")
    assert "\tpython -m chunkwise demo" in (README.parent / "Makefile").read_text().replace("$(PY)", "python")
    code, out = run(["chunkwise", "demo"], user_dir, env, timeout=600)
    assert code == EXIT_OK, out
    path = re.search(r"results: (\S+results\.parquet)", out)
    assert path, out
    frame = read_with_readme_polars(Path(path.group(1)))
    assert frame.height == 5000 and set(frame["status"]) == {"ok"} and frame["response"].is_not_null().all()


def test_own_parquet_file_trial_interrupt_and_resume_by_the_same_command(user_dir, env, sim_factory):
    sim = sim_factory(answer_tokens=(30, 60), parallel=4, decode_tps=400)
    write_requests(user_dir / "requests.parquet", N, prompt_words=12)

    code, out = run(with_host(readme_command("plan"), sim.url), user_dir, env)
    assert code == EXIT_OK, out
    assert "requests.parquet: 60 rows, 60 accepted, 0 rejected" in out
    assert "mode         independent, model llama3.1:8b, num_ctx 8192, parallel 4" in out  # the README's defaults
    assert not run_dirs(user_dir)  # a plan sends and writes nothing

    trial = with_host(readme_command("run", "--limit"), sim.url)
    code, out = run(trial, user_dir, env)
    assert code == EXIT_OK, out
    (trial_dir,) = run_dirs(user_dir)
    assert read_with_readme_polars(trial_dir / "results.parquet").height == int(trial[trial.index("--limit") + 1])
    sim.reset()

    full = with_host(readme_command("run", "--model", "llama3.1:8b", "--input", "requests.parquet", without="--limit"),
                     sim.url)
    proc = start(full, user_dir, env)
    deadline = time.monotonic() + 120
    while not (new := run_dirs(user_dir) - {trial_dir}) or len(ledger_records(next(iter(new)))[0]) < 12:
        assert proc.poll() is None and time.monotonic() < deadline, "the run ended before it could be interrupted"
        time.sleep(0.02)
    (run_dir,) = new
    proc.send_signal(signal.SIGINT)  # Ctrl-C
    try:
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == EXIT_INTERRUPTED, out
    recorded = len(ledger_records(run_dir)[0])
    assert 12 <= recorded < N

    code, out = run(["chunkwise", "status", "--json", f"runs/{run_dir.name}"], user_dir, env)
    assert code == EXIT_OK, out
    status = json.loads(out)
    assert (status["total"], status["ok"], status["pending"]) == (N, recorded, N - recorded)

    code, out = run(full, user_dir, env)  # the same command again
    assert code == EXIT_OK, out
    assert f"run {run_dir.name}: resuming: {recorded} of {N} requests already answered" in out
    assert run_dirs(user_dir) == {trial_dir, run_dir}  # no new run beside it
    assert_answered_once(sim.stats(), expected=N)  # nothing recorded was sent again
    frame = read_with_readme_polars(run_dir / "results.parquet")
    assert frame["id"].to_list() == [f"r{i:04d}" for i in range(N)]
    assert set(frame["status"]) == {"ok"} and frame["response"].is_not_null().all()


@pytest.mark.engine
def test_an_openai_compatible_server_and_a_plain_batch_file(user_dir, env, engine):
    write_requests(user_dir / "requests.parquet", 4, prompt_words=8)
    argv = readme_command("--api", "openai", "--input", "requests.parquet")
    # A 270M base model on 2 CPU cores writes on to num_predict: the default 512 would take minutes a request
    argv = [*with_host(argv, f"{engine.url}/v1"), "--num-predict", "24"]
    code, out = run(argv, user_dir, env, timeout=240)
    assert code in (EXIT_OK, 1), out  # a small model may run into num_predict: flagged, still answered
    (run_dir,) = run_dirs(user_dir)
    frame = read_with_readme_polars(run_dir / "results.parquet")
    assert frame.height == 4 and frame["response"].is_not_null().all()

    lines = [{"custom_id": f"line-{i}", "method": "POST", "url": "/v1/chat/completions",
              "body": {"model": "gemma3-270m", "max_tokens": 8 + i,
                       "messages": [{"role": "user", "content": f"Count from {i} to {i + 3}."}]}} for i in range(4)]
    (user_dir / "batch.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    argv = readme_command("--input", "batch.jsonl")
    code, out = run(with_host(argv, f"{engine.url}/v1"), user_dir, env, timeout=240)
    assert code in (EXIT_OK, 1), out
    (batch_dir,) = run_dirs(user_dir) - {run_dir}
    out_lines, err_lines = check_batch_files(batch_dir / "batch_output.jsonl", batch_dir / "batch_errors.jsonl",
                                             [x["custom_id"] for x in lines])
    assert not err_lines and len(out_lines) == 4  # every line answered, a max_tokens stop included
    for item in out_lines:
        assert item.response is not None
        assert item.response.body.usage.completion_tokens <= 8 + int(item.custom_id.split("-")[1])
