"""Prefect flow for `chunkwise measure`: orchestration only; the logic is chunkwise.measure.run.

The flow loads the model at each num_ctx on `host` and fits memory against num_ctx; the result
table becomes a markdown artifact (key `measure-<model>`). The GPU sampler measures the machine
the flow runs on; a remote Ollama host needs the flow (or `chunkwise measure`) run there.
"""

from __future__ import annotations

import re
from contextlib import closing
from pathlib import Path
from typing import Any

from prefect import flow
from prefect.artifacts import create_markdown_artifact
from prefect.context import FlowRunContext

from chunkwise.measure.run import measure_run_dir, run_measurement
from chunkwise.servers import backend_for
from chunkwise.settings import get_settings
from chunkwise.store.confine import RUNS_ROOT_SETTING, inside
from chunkwise.store.files import apply_umask


def artifact_key(model: str) -> str:
    """Prefect artifact keys allow lowercase letters, digits and dashes only."""
    return "measure-" + (re.sub(r"[^a-z0-9]+", "-", model.lower()).strip("-") or "model")


@flow(name="chunkwise-measure", log_prints=True)
def measure_flow(
    model: str,
    contexts: list[int],
    host: str | None = None,
    output_dir: str = "runs",
    parallel: int = 1,
    num_predict: int = 32,
    kv_cache_type: str = "f16",
    vram_mib: float | None = None,
) -> dict[str, Any]:
    """Measure `model` at each num_ctx; returns the report as a JSON-ready dict."""
    settings = get_settings()
    inside(settings.runs_root_path(), output_dir, what="output_dir", setting=RUNS_ROOT_SETTING)
    apply_umask()
    out_dir = measure_run_dir(Path(output_dir), model)
    backend = backend_for("ollama")  # a per-request measurement: the server loads the model at each num_ctx
    with closing(backend.client(backend.resolve_host(host, settings), settings,
                                connect_timeout_s=settings.connect_timeout_s,
                                read_timeout_s=settings.read_timeout_s)) as client:
        report = run_measurement(client, model, contexts, out_dir, parallel=parallel, num_predict=num_predict,
                                 kv_cache_type=kv_cache_type, vram_mib=vram_mib, backend=backend)
    if FlowRunContext.get() is not None:  # not when called as measure_flow.fn() in tests
        create_markdown_artifact(markdown=report.markdown, key=artifact_key(model),
                                 description=f"chunkwise measure: {model}, memory against num_ctx")
    print(f"measure {model}: {report.slope_mib_per_token} MiB/token measured, "
          f"{report.formula_mib_per_token} by the formula; files in {out_dir}")
    return report.as_dict()
