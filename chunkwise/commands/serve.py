"""`chunkwise serve`: serve the batch flow's deployments from this process with Prefect's `serve()`.

The deployments are defined once, in `deployments/prefect.yaml`. `prefect deploy` reads that file to
register them on a process work pool (then a worker runs them); this command reads the same file and
registers the same deployments (names, descriptions, tags, parameters, schedules, parameter-schema
enforcement) bound to this process instead, so no work pool or worker is needed. Only the fields
below are honoured; `work_pool` is ignored here (serve() needs none).

It needs a real Prefect server (`make server`, then `PREFECT_API_URL=http://127.0.0.1:4200/api`):
against Prefect's ephemeral API the deployments would vanish with this process and the UI could not
see them. Flow runs execute in subprocesses whose working directory is this process's, so relative
`input_path` / `output_dir` parameters resolve against the directory `chunkwise serve` runs in.
"""

from __future__ import annotations

import argparse
import importlib
import os
from pathlib import Path
from typing import Any

from chunkwise.errors import SetupError

NAME = "serve"
HELP = ("Serve the deployments of deployments/prefect.yaml from this process (Prefect serve(), no work pool): "
        "runs started in the Prefect UI, by the API or on schedule execute here.")

#: deployments/prefect.yaml of the source tree this package was installed from (editable install).
DEFAULT_PREFECT_FILE = Path(__file__).resolve().parents[2] / "deployments" / "prefect.yaml"
#: prefect.yaml deployment keys that serve() honours, and the ones it ignores on purpose.
SERVED_KEYS = ("name", "description", "tags", "version", "parameters", "schedules", "enforce_parameter_schema",
               "concurrency_limit", "paused")
IGNORED_KEYS = ("entrypoint", "work_pool", "pull", "build", "push")


class DeploymentFileError(SetupError):
    """prefect.yaml cannot be used as written; the message names the file, the entry and the fix."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--prefect-file", type=Path, default=DEFAULT_PREFECT_FILE,
                        help=f"deployment definitions (default: {DEFAULT_PREFECT_FILE})")
    parser.add_argument("--deployment", action="append", dest="deployments", metavar="NAME",
                        help="serve only this deployment (repeatable; default: all in the file)")
    parser.add_argument("--limit", type=int, default=1,
                        help="flow runs executed at once by this process (default 1: one batch at a time per Ollama)")


def load_definitions(path: Path, only: list[str] | None = None) -> list[dict[str, Any]]:
    """The `deployments:` entries of a prefect.yaml, checked; `only` selects entries by name."""
    import yaml

    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DeploymentFileError(f"{path} does not exist; give --prefect-file deployments/prefect.yaml "
                                  "from a chunkwise source checkout") from None
    except (OSError, yaml.YAMLError) as exc:
        raise DeploymentFileError(f"{path} cannot be read as YAML ({exc}); fix the file") from None
    entries = (document or {}).get("deployments") if isinstance(document, dict) else None
    if not isinstance(entries, list) or not entries:
        raise DeploymentFileError(f"{path} has no `deployments:` list; add at least one deployment")
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or not entry.get("name") or not entry.get("entrypoint"):
            raise DeploymentFileError(f"{path}: deployments[{i}] needs a `name` and an `entrypoint`")
        unknown = set(entry) - set(SERVED_KEYS) - set(IGNORED_KEYS)
        if unknown:
            raise DeploymentFileError(f"{path}: deployment {entry['name']!r} has keys chunkwise serve does not "
                                      f"support: {', '.join(sorted(unknown))}; remove them or extend {__name__}")
    if only:
        names = [e["name"] for e in entries]
        missing = [n for n in only if n not in names]
        if missing:
            raise DeploymentFileError(f"{path} has no deployment named {', '.join(missing)}; it has {', '.join(names)}")
        entries = [e for e in entries if e["name"] in only]
    return entries


def flow_for(entrypoint: str) -> Any:
    """The flow object behind a `path/to/module.py:flow_function` entrypoint, imported as a module
    (`flows/batch.py:batch` -> `flows.batch.batch`) so that it is the installed package's code."""
    path, sep, attr = entrypoint.partition(":")
    if not sep or not path.endswith(".py") or path.startswith("/") or ".." in Path(path).parts:
        raise DeploymentFileError(f"entrypoint {entrypoint!r} is not a relative `path/to/module.py:flow` entrypoint")
    module = importlib.import_module(path[:-3].replace("/", "."))
    flow = getattr(module, attr, None)
    if flow is None or not hasattr(flow, "to_deployment"):
        raise DeploymentFileError(f"entrypoint {entrypoint!r}: {module.__name__} has no flow named {attr!r}")
    return flow


def deployment_kwargs(entry: dict[str, Any]) -> dict[str, Any]:
    """`Flow.to_deployment` keyword arguments for one prefect.yaml entry (schedules converted exactly as
    `prefect deploy` converts them)."""
    from prefect.cli.deploy._schedules import _schedule_config_to_deployment_schedule
    from prefect.types.entrypoint import EntrypointType

    kwargs = {key: entry[key] for key in SERVED_KEYS if entry.get(key) is not None}
    if "schedules" in kwargs:
        kwargs["schedules"] = [_schedule_config_to_deployment_schedule(s) for s in kwargs["schedules"]]
    # The flow subprocess imports `flows.batch` from the installed package, whatever its cwd.
    kwargs["entrypoint_type"] = EntrypointType.MODULE_PATH
    return kwargs


def runner_deployments(entries: list[dict[str, Any]]) -> list[Any]:
    """One `RunnerDeployment` per entry (nothing is sent to the API until served)."""
    return [flow_for(entry["entrypoint"]).to_deployment(**deployment_kwargs(entry)) for entry in entries]


def check_api_url() -> str | None:
    """A one-line reason serve() cannot work here, or None: PREFECT_API_URL must name a live server."""
    import httpx
    from prefect.settings import get_current_settings

    url = get_current_settings().api.url
    if not url:
        return ("PREFECT_API_URL is not set: start a Prefect server (`make server`) and export "
                "PREFECT_API_URL=http://127.0.0.1:4200/api; the ephemeral API keeps no deployments for the UI")
    try:
        httpx.get(f"{str(url).rstrip('/')}/health", timeout=10.0, trust_env=False).raise_for_status()
    except httpx.HTTPError as exc:
        return f"the Prefect server at PREFECT_API_URL={url} does not answer ({exc}); start it with `make server`"
    return None


def pool_bound(deployments: list[Any]) -> list[str]:
    """`flow/name (pool)` of each deployment already registered on a work pool (by `prefect deploy`).

    serve() would re-register it without clearing its work pool, so a worker on that pool and this
    process would both poll its runs; chunkwise serve refuses instead.
    """
    from prefect import get_client
    from prefect.exceptions import ObjectNotFound

    bound = []
    with get_client(sync_client=True) as client:
        for deployment in deployments:
            try:
                existing = client.read_deployment_by_name(deployment.full_name)
            except ObjectNotFound:
                continue
            if existing.work_pool_name:
                bound.append(f"{deployment.full_name} (pool {existing.work_pool_name})")
    return bound


def run(args: argparse.Namespace) -> int:
    entries = load_definitions(args.prefect_file, args.deployments)
    if args.limit < 1:
        raise SetupError(f"--limit {args.limit}: give 1 or more flow runs at once")
    problem = check_api_url()
    if problem:
        raise SetupError(problem)
    from chunkwise.prefect_auth import check_configured_api

    check_configured_api()  # a server with authentication: one line when the credential is missing or wrong
    try:
        deployments = runner_deployments(entries)
    except DeploymentFileError as exc:
        raise SetupError(f"{args.prefect_file}: {exc}") from None
    bound = pool_bound(deployments)
    if bound:
        raise SetupError(f"{', '.join(bound)} already registered on a work pool (make deploy); serve a work "
                         "pool's deployments with a worker (make worker), or delete them first: prefect deployment "
                         "delete NAME")
    from prefect import serve

    print(f"chunkwise serve: {', '.join(d.name for d in deployments)} from {args.prefect_file} "
          f"(cwd {os.getcwd()}, at most {args.limit} flow run(s) at once)", flush=True)
    serve(*deployments, limit=args.limit)
    return 0
