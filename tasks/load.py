"""Loading: check the configuration and the server, stage the Parquet input into the run directory."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from chunkwise.params import RunParams
from chunkwise.run.prepare import PreparedRun, prepare_run


@task(name="load-requests", cache_policy=NO_CACHE, persist_result=False)
def load_requests(params: RunParams) -> PreparedRun:
    """Validate and stage the requests (Polars, streaming); quarantine bad rows with a reason."""
    return prepare_run(params)
