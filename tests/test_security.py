"""Security properties of a run:

- only http and https Ollama hosts are ever contacted;
- run names and paths cannot write outside the output directory ('..', '/', absolute names,
  a symlinked run directory pointing elsewhere);
- prompt and answer text never reach a log above DEBUG: not the Python loggers, not the console,
  not the logs shipped to the Prefect API (a flow run at INFO with failures and retries on the way);
- the servers chunkwise starts (the simulator) listen on 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager

import polars as pl
import pytest
from pydantic import ValidationError

from chunkwise.errors import ConfigError
from chunkwise.harness.sim.harness import running_simulator
from chunkwise.harness.sim.options import SimOptions
from chunkwise.ollama.client import OllamaClient, parse_host
from chunkwise.params import RunParams
from chunkwise.store.files import UnsafePathError, contained
from chunkwise.store.layout import run_paths
from tests.support.pipeline_helpers import params_for


@pytest.mark.parametrize("host", ["file:///etc/passwd", "ftp://127.0.0.1:11434", "gopher://x", "unix:///var/run/o.sock",
                                  "javascript:alert(1)", "http://", "http://host:notaport"])
def test_only_http_and_https_hosts(host):
    with pytest.raises(ConfigError):
        parse_host(host)
    with pytest.raises(ConfigError):
        OllamaClient(host)


@pytest.mark.parametrize("host, url", [("127.0.0.1", "http://127.0.0.1:11434"), ("https://ollama.example:443/",
                                       "https://ollama.example:443"), ("[::1]:8080", "http://[::1]:8080")])
def test_http_hosts_are_normalised(host, url):
    assert parse_host(host) == url


@pytest.mark.parametrize("name", ["..", "../x", "a/b", "/etc", "/", ".hidden", "a\\b", "x/../..", "", "~root", "a b",
                                  "a\x00b"])
def test_run_names_that_could_leave_the_output_dir_are_refused(tmp_path, name):
    if name == "":
        assert RunParams(input_path="in.parquet", run_name=name).run_name is None  # empty means "derive one"
        return
    with pytest.raises(ValidationError, match="is not a plain directory name"):
        RunParams(input_path="in.parquet", run_name=name)


@pytest.mark.parametrize("parts", [("..",), ("a", "..", ".."), ("/etc",), ("a/../../b",)])
def test_contained_refuses_every_escape(tmp_path, parts):
    with pytest.raises(UnsafePathError):
        contained(tmp_path, *parts)


def test_a_symlinked_run_directory_pointing_outside_is_refused(tmp_path):
    out, elsewhere = tmp_path / "runs", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    os.symlink(elsewhere, out / "t")
    with pytest.raises(UnsafePathError, match="would write outside"):
        run_paths(out, "t")


MARKER = "SECRET-MARKER-7f3a"


@contextmanager
def captured_logs(level: int, *names: str) -> Iterator[list[logging.LogRecord]]:
    """Every record at `level` or above reaching the root logger, with `level` set on the root,
    `prefect` and `chunkwise` loggers (and `names`) for the block."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler(level)
    handler.emit = records.append
    loggers = [logging.getLogger(n) for n in ("", "prefect", "chunkwise", *names)]
    saved = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(level)
    logging.getLogger().addHandler(handler)
    try:
        yield records
    finally:
        logging.getLogger().removeHandler(handler)
        for lg, old in zip(loggers, saved, strict=True):
            lg.setLevel(old)


@pytest.mark.usefixtures("prefect_harness")
def test_prompt_and_answer_text_never_logged_above_debug(sim_factory, tmp_path, capfd):
    """A flow run at INFO with prompts carrying a unique marker, transient retries, a cut prompt and
    cut answers: neither the marker nor any answer text appears in any log. At DEBUG answers do
    appear (the check can see them)."""
    from flows.batch import batch

    source = tmp_path / "in.parquet"
    prompts = [f"{MARKER} question {i}" for i in range(11)] + [f"{MARKER} " + "ab " * 3000]  # the last is too long
    pl.DataFrame({"id": list(range(12)), "prompt": prompts}).write_parquet(source)
    sim = sim_factory(fail_rate=0.3, answer_tokens=(10, 40), seed=5)
    params = params_for(sim, source, tmp_path / "runs", mode="independent", num_ctx=2048, num_predict=24,
                        chunk_size=4, system_prompt="")
    with captured_logs(logging.INFO) as records:
        state = batch(params, return_state=True)
    assert state.is_completed()
    results = pl.read_parquet(tmp_path / "runs" / "t" / "results.parquet")
    answers = [a for a in results["response"].to_list() if a]
    assert len(answers) >= 11 and set(results["error_class"].drop_nulls()) >= {"output_truncated"}
    assert "context_truncated" in results["error_class"].to_list() and results["attempts"].max() > 1

    from prefect import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=30)
    with get_client(sync_client=True) as client:
        api_logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[state.state_details.flow_run_id])))
    captured = capfd.readouterr()
    texts = {
        "python loggers": "\n".join(r.getMessage() for r in records),
        "console": captured.out + captured.err,
        "prefect api logs": "\n".join(log.message for log in api_logs),
    }
    assert "finished:" in texts["python loggers"] and api_logs  # INFO lines were captured
    for where, text in texts.items():
        assert MARKER not in text, f"a prompt reached the {where}"
        leaked = [a for a in answers if a in text]
        assert not leaked, f"an answer reached the {where}: {leaked[0]!r}"

    with captured_logs(logging.DEBUG, "chunkwise.run.send") as records:
        batch(params.model_copy(update={"run_name": "debug"}))
    debug = "\n".join(r.getMessage() for r in records if r.levelno == logging.DEBUG)
    assert any(repr(a) in debug for a in answers)


def listening_address(port: int) -> str:
    """The local address a TCP socket listening on `port` is bound to, from /proc/net/tcp."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as handle:
            for line in handle.readlines()[1:]:
                local, state = line.split()[1], line.split()[3]
                hex_addr, hex_port = local.split(":")
                if int(hex_port, 16) == port and state == "0A":  # LISTEN
                    if len(hex_addr) == 8:
                        return socket.inet_ntoa(bytes.fromhex(hex_addr)[::-1])
                    return hex_addr
    raise AssertionError(f"nothing listens on port {port}")


@pytest.mark.parametrize("process", [False, True])
def test_simulator_listens_on_loopback_by_default(process):
    assert SimOptions().host == "127.0.0.1"
    with running_simulator(process=process) as sim:
        port = int(sim.url.rsplit(":", 1)[1])
        assert sim.url.startswith("http://127.0.0.1:")
        assert listening_address(port) == "127.0.0.1"
