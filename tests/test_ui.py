"""The Prefect UI path, driven in Debian's headless Chromium (Playwright, no browser download).

Real components: a Prefect server with its UI on loopback (temporary home), `chunkwise serve` as a
subprocess, the Ollama simulator. A person's steps: open the on-demand deployment, start a custom
run from the parameter form (an invalid value first, refused before any run exists), watch it
complete, read the progress and statistics artifacts; then a run that fails because Ollama went
away, Ollama back, Retry pressed in the UI, and the run completes without re-sending what was
answered. Screenshots go to a temporary directory, or to docs/img with `make ui-screenshots`.
"""

from __future__ import annotations

import json
import re

import polars as pl
import pytest

from chunkwise.harness.sim.harness import running_simulator
from chunkwise.harness.sim.options import SimOptions
from tests.support.pipeline_helpers import write_requests
from tests.support.ui_helpers import (
    FLOW,
    chromium_page,
    chunkwise_serve,
    form_field,
    page_evidence,
    prefect_server,
    save_screenshot,
    screenshot_dir,
    settle,
    wait_for,
)

pytestmark = pytest.mark.slow

RUN_TIMEOUT_MS = 120_000


@pytest.fixture(scope="module")
def ui(tmp_path_factory):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    tmp = tmp_path_factory.mktemp("ui")
    (tmp / "serve-cwd").mkdir()
    with prefect_server(tmp / "server-home", log=tmp / "server.log", ui=True) as api_url, \
            running_simulator(SimOptions(parallel=2)) as sim, \
            temporary_settings({PREFECT_API_URL: api_url}), \
            chunkwise_serve(api_url, tmp / "serve-cwd", log=tmp / "serve.log", home=tmp / "serve-home"), \
            chromium_page(tmp / "chromium-profile") as page:
        yield {"api": api_url, "base": api_url.removesuffix("/api"), "sim": sim, "page": page, "tmp": tmp,
               "shots": screenshot_dir(tmp)}


def flow_runs_of(name: str) -> list:
    from prefect import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName

    with get_client(sync_client=True) as client:
        return client.read_flow_runs(deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=[name])))


def read_flow_run(flow_run_id):
    from prefect import get_client

    with get_client(sync_client=True) as client:
        return client.read_flow_run(flow_run_id)


def test_custom_run_from_the_parameter_form(ui, tmp_path):
    with page_evidence(ui["page"], ui["tmp"], "custom-run"):
        custom_run(ui, tmp_path)


def test_retry_in_the_ui_resumes_a_failed_run(ui, tmp_path):
    """Ollama goes away mid-run; the run fails; Ollama is back; Retry in the UI; nothing answered is re-sent."""
    with page_evidence(ui["page"], ui["tmp"], "retry"):
        retry_failed_run(ui, tmp_path)


def custom_run(ui, tmp_path) -> None:
    page, shots, base = ui["page"], ui["shots"], ui["base"]
    ui["sim"].reset()
    source = write_requests(tmp_path / "requests.parquet", 45)
    out = tmp_path / "runs"

    page.goto(f"{base}/deployments")
    page.get_by_role("link", name="nightly", exact=True).wait_for()
    page.get_by_text("At 02:00 AM every day").first.wait_for(state="attached")
    save_screenshot(page, shots / "deployments.png")
    page.get_by_role("link", name="nightly", exact=True).click()
    page.get_by_text("At 02:00 AM every day").first.wait_for()  # its schedule, switched off as shipped
    save_screenshot(page, shots / "nightly.png")
    page.get_by_role("link", name="Deployments", exact=True).first.click()

    page.get_by_role("link", name="on-demand", exact=True).click()
    page.get_by_role("button", name="Run", exact=True).click()
    page.get_by_text("Custom run", exact=True).click()
    form_field(page, "Input Path").locator("textarea").fill(str(source))
    host = form_field(page, "Host")
    host.get_by_role("button", name="str", exact=True).click()
    host.locator("input, textarea").first.fill(ui["sim"].url)
    form_field(page, "Output Dir").locator("input, textarea").first.fill(str(out))
    chunk_size = form_field(page, "Chunk Size")
    chunk_size.get_by_role("button", name="int", exact=True).click()
    chunk_size.locator("input").fill("10")
    form_field(page, "Parallel").first.locator("input").fill("2")  # "Parallel Auto" follows it
    num_ctx = form_field(page, "Num Ctx").locator("input")
    num_ctx.fill("8192")
    form_field(page, "Input Path").scroll_into_view_if_needed()
    save_screenshot(page, shots / "form.png")

    # A value outside RunParams' bounds is refused by the server before any flow run exists.
    num_ctx.fill("100")
    page.get_by_role("button", name="Submit").click()
    page.get_by_text("Validation failed for field 'params.num_ctx'. Failure reason: 100 is less than the minimum "
                     "of 256").first.wait_for()
    num_ctx.scroll_into_view_if_needed()
    page.wait_for_timeout(800)  # let the toast finish sliding in
    save_screenshot(page, shots / "form-rejected.png")
    assert flow_runs_of("on-demand") == []

    num_ctx.fill("8192")
    page.get_by_role("button", name="Submit").click()
    # the toast's "View run" (the UI draws each toast twice, one hidden; its countdown never rests)
    page.locator("button.toast-flow-run-create__button:visible").first.click(force=True)

    page.get_by_text("Completed", exact=True).first.wait_for(timeout=RUN_TIMEOUT_MS)
    (flow_run,) = flow_runs_of("on-demand")
    assert flow_run.state.is_completed()
    assert page.url.endswith(str(flow_run.id))
    assert {k: flow_run.parameters["params"][k] for k in ("num_ctx", "chunk_size", "parallel")} == {
        "num_ctx": 8192, "chunk_size": 10, "parallel": 2}
    (run_dir,) = out.iterdir()
    results = pl.read_parquet(run_dir / "results.parquet")
    assert results["status"].to_list() == ["ok"] * 45
    assert ui["sim"].stats()["answered_total"] == 45
    last = results.with_row_index("row").filter(pl.col("chunk") == pl.col("chunk").max())
    label = f"chunk-{last['chunk'][0]:04d} [{last['row'].min()}-{last['row'].max()}]"  # input rows, inclusive
    # logs say what happens (counts, never prompt text); the graph is a canvas, so names are read below
    page.reload()  # the header's task-run count and the graph refresh lazily
    page.get_by_text(f"{label} finished: {len(last)} ok, 0 failed, sent {len(last)}").first.wait_for()
    settle(page, 1500)  # the run graph draws its last nodes
    save_screenshot(page, shots / "run-completed.png")
    page.locator("li.p-tab#task-runs").click()
    page.get_by_text(label, exact=True).first.wait_for()

    def artifacts_tab() -> None:
        page.locator("li.p-tab#artifacts").click()
        page.get_by_text("Task runs", exact=True).scroll_into_view_if_needed()  # that section loads when seen
        page.get_by_text("chunkwise-stats", exact=True).last.wait_for()

    artifacts_tab()
    save_screenshot(page, shots / "run-artifacts.png")
    page.get_by_text("chunkwise-progress", exact=True).last.click()
    page.get_by_text("Progress: 100%").wait_for()
    save_screenshot(page, shots / "artifact-progress.png")
    page.go_back()
    artifacts_tab()
    page.get_by_text("chunkwise-stats", exact=True).last.click()
    table = page.locator("table")
    table.get_by_text("requests total / succeeded / failed / rejected").wait_for()
    assert "45 / 45 / 0 / 0" in table.inner_text()
    save_screenshot(page, shots / "artifact-stats.png")


def retry_failed_run(ui, tmp_path) -> None:
    page, shots, base, sim = ui["page"], ui["shots"], ui["base"], ui["sim"]
    sim.reset()
    # ~0.15 s per answer: a 6-request conversation chunk takes about a second, the run about 5 s
    sim.configure(decode_tps=200.0, answer_tokens=[20, 40])
    source = write_requests(tmp_path / "requests.parquet", 60)
    out = tmp_path / "runs"
    params = {"input_path": str(source), "host": sim.url, "output_dir": str(out), "num_ctx": 8192,
              "chunk_size": 6, "parallel": 2, "max_attempts": 2}  # run_name empty: named after the flow run
    # The sync client, not run_deployment: under Playwright's sync API an event loop is set on this
    # thread, so Prefect's async_dispatch would hand back an un-awaited coroutine.
    from prefect import get_client

    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name(f"{FLOW}/on-demand")
        flow_run = client.create_flow_run_from_deployment(deployment.id, parameters={"params": params})
    try:
        wait_for(lambda: len(list(out.glob("*/chunks/*.parquet"))) >= 3, 120, "3 chunks checkpointed")
    finally:
        sim.stop()
    failed = wait_for(lambda: (r := read_flow_run(flow_run.id)).state.is_final() and r, 120, "the run to end")
    assert failed.state.is_failed() and "chunks did not finish" in failed.state.message, failed.state
    (run_dir,) = out.iterdir()
    finished_first = len(list(run_dir.glob("chunks/*.parquet")))
    assert 3 <= finished_first < json.loads((run_dir / "manifest.json").read_text())["chunk_plan"]["chunks"]

    page.goto(f"{base}/runs/flow-run/{flow_run.id}")
    page.get_by_text("Failed", exact=True).first.wait_for()
    settle(page, 1500)  # the run graph draws its last nodes
    save_screenshot(page, shots / "run-failed.png")

    sim.start()
    page.get_by_role("button", name="Retry").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_text("Any task runs without a persisted result").wait_for()
    save_screenshot(page, shots / "retry-dialog.png")
    dialog.get_by_role("button", name="Retry").click()
    page.get_by_text("Completed", exact=True).first.wait_for(timeout=RUN_TIMEOUT_MS)
    page.reload()  # the graph then shows both attempts: the Retry's cached chunks are slivers
    page.get_by_text("Completed", exact=True).first.wait_for()
    settle(page, 1500)  # the run graph draws its last nodes
    save_screenshot(page, shots / "run-retried.png")
    # the log list loads lazily from the oldest line: sort it newest first (the select answers the keyboard)
    page.locator(".logs-sort button").click()
    page.keyboard.press("ArrowDown")
    page.keyboard.press("Enter")
    page.locator(".logs-sort").get_by_text("Newest to oldest").wait_for()
    last_line = re.compile(r"finished: \d+ ok, 0 failed, .*\[(\d+)/\1 chunks, 100\.0% of requests\]")
    last_chunk = page.get_by_text(last_line).first
    last_chunk.scroll_into_view_if_needed()
    save_screenshot(page, shots / "run-retried-logs.png")

    retried = read_flow_run(flow_run.id)
    assert retried.state.is_completed() and retried.run_count == 2
    assert list(out.iterdir()) == [run_dir]  # the Retry resumed the same run directory
    results = pl.read_parquet(run_dir / "results.parquet")
    assert results["id"].to_list() == [f"r{i:04d}" for i in range(60)]
    assert set(results["status"]) == {"ok"}
    stats = sim.stats(fingerprints=False)
    assert stats["answered_total"] == 60  # before the outage and after the Retry together
    assert stats["max_answered_per_fingerprint"] == 1
