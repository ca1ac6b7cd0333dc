"""Real components for the deployment and UI tests (tests/test_deployments.py, tests/test_ui.py).

    with prefect_server(tmp / "home", log=tmp / "server.log", ui=True) as api_url: ...
    with chunkwise_serve(api_url, workdir, log=...) as proc: ...   # `chunkwise serve`, deployments registered
    with chromium_page(tmp / "profile") as page: ...                # Debian's headless Chromium via Playwright

Each starts its process in a new session and, on exit (also on failure), stops the whole process
group and any descendant that left it (flow-run subprocesses), by pid. A Prefect server gets its own
temporary PREFECT_HOME, so the tests never touch .prefect/ or ~/.prefect. Child processes get a
clean Prefect environment: every PREFECT_* variable of the test process is dropped, then set here.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from chunkwise.harness.sim.harness import free_port

REPO = Path(__file__).resolve().parents[2]
PREFECT_FILE = REPO / "deployments" / "prefect.yaml"
FLOW = "chunkwise-batch"
#: Chromium flags this machine needs (no sandbox as root, no network beyond loopback).
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SERVER_START_TIMEOUT_S = 180.0


def child_env(home: Path, api_url: str | None = None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false")
    if api_url:
        env["PREFECT_API_URL"] = api_url
    env.update(extra)
    return env


def descendants(pid: int) -> list[int]:
    """Pids of every process below `pid` (read from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def stop_process_tree(proc: subprocess.Popen, timeout_s: float = 20.0) -> None:
    """SIGTERM the process group `proc` leads (it was started with start_new_session), wait, then
    SIGKILL the group and every descendant that is still alive."""
    below = descendants(proc.pid)
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    for pid in below:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)


def log_tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@contextlib.contextmanager
def prefect_server(home: Path, *, log: Path, ui: bool = False, auth_file: Path | None = None) -> Iterator[str]:
    """`prefect server start` on 127.0.0.1 and a free port, SQLite under `home`; yields the API URL
    once /api/health answers. With `auth_file`, started as `make server` starts it with a credential:
    `chunkwise prefect server start` with CHUNKWISE_PREFECT_AUTH_FILE (basic auth on)."""
    port = free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    prefect = [sys.executable, "-m", "chunkwise", "prefect"] if auth_file else [str(Path(sys.executable).parent /
                                                                                 "prefect")]
    cmd = [*prefect, "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    if not ui:
        cmd.append("--no-ui")
    extra = {"CHUNKWISE_PREFECT_AUTH_FILE": str(auth_file)} if auth_file else {}
    env = child_env(home, PREFECT_UI_API_URL=api_url,
                    # the scheduler's pass over deployments, seconds (default 60): next runs appear at once
                    PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS="2", **extra)
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"prefect server exited with {proc.returncode}:\n{log_tail(log)}")
            try:
                if httpx.get(f"{api_url}/health", timeout=2.0, trust_env=False).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"prefect server not healthy within {SERVER_START_TIMEOUT_S:.0f} s:\n{log_tail(log)}"
                )
            time.sleep(0.2)
        yield api_url
    finally:
        stop_process_tree(proc)


def read_deployment(api_url: str, name: str) -> dict[str, Any] | None:
    response = httpx.get(f"{api_url}/deployments/name/{FLOW}/{name}", timeout=10.0, trust_env=False)
    return response.json() if response.status_code == 200 else None


@contextlib.contextmanager
def chunkwise_serve(
    api_url: str, workdir: Path, *, log: Path, home: Path, **env_extra: str
) -> Iterator[subprocess.Popen]:
    """`chunkwise serve` in `workdir`; yields once both deployments are registered as served ones.

    Fast polling (1 s) and, unless overridden, short chunk retries so a failed run fails in seconds.
    """
    env = child_env(home, api_url, PREFECT_RUNNER_POLL_FREQUENCY="1", PREFECT_LOGGING_LEVEL="INFO",
                    CHUNKWISE_CHUNK_RETRIES="1", CHUNKWISE_CHUNK_RETRY_DELAY_S="0.2",
                    CHUNKWISE_RETRY_BASE_DELAY_S="0.02", CHUNKWISE_RETRY_MAX_DELAY_S="0.05",
                    CHUNKWISE_CHUNK_WORKERS="2", **env_extra)
    with open(log, "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "chunkwise", "serve"], cwd=workdir, env=env, stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"chunkwise serve exited with {proc.returncode}:\n{log_tail(log)}")
            served = [read_deployment(api_url, n) for n in ("on-demand", "nightly")]
            if all(d and d["entrypoint"] == "flows.batch.batch" and d["work_pool_name"] is None for d in served):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"chunkwise serve registered no deployments within 120 s:\n{log_tail(log)}")
            time.sleep(0.5)
        yield proc
    finally:
        stop_process_tree(proc)


def wait_for(predicate, timeout_s: float, what: str, interval_s: float = 0.25):
    """Poll `predicate()` until it returns a truthy value (returned) or `timeout_s` passes (AssertionError)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(interval_s)


def chromium_path() -> str:
    path = os.environ.get("CHUNKWISE_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).exists():
        raise RuntimeError("Chromium is not installed: apt-get install -y chromium (or set CHUNKWISE_CHROMIUM)")
    return path


@contextlib.contextmanager
def chromium_page(profile_dir: Path, width: int = 1280, height: int = 800) -> Iterator[Any]:
    """A Playwright page in Debian's headless Chromium (no browser download), with a new empty profile."""
    from playwright.sync_api import sync_playwright

    profile_dir.mkdir(parents=True, exist_ok=False)
    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(profile_dir), executable_path=chromium_path(), headless=True, args=CHROMIUM_ARGS,
            viewport={"width": width, "height": height})
        try:
            context.set_default_timeout(60_000)  # a loaded 2-core machine renders slowly
            yield context.pages[0] if context.pages else context.new_page()
        finally:
            context.close()


def screenshot_dir(tmp_path: Path) -> Path:
    """Where screenshots go: CHUNKWISE_UI_SCREENSHOTS (make ui-screenshots sets docs/img), else a temp dir."""
    target = Path(os.environ.get("CHUNKWISE_UI_SCREENSHOTS") or tmp_path / "screenshots")
    target.mkdir(parents=True, exist_ok=True)
    return target


def for_docs() -> bool:
    """Whether the screenshots are for the documentation (`make ui-screenshots`), not only evidence of a test run."""
    return bool(os.environ.get("CHUNKWISE_UI_SCREENSHOTS"))


def settle(page: Any, ms: int) -> None:
    """Wait `ms` for animations (the run graph's last nodes) before a screenshot for the documentation;
    a test run's screenshots are evidence of what the page showed, and nothing asserted waits on this."""
    if for_docs():
        page.wait_for_timeout(ms)


def save_screenshot(page: Any, path: Path, colors: int = 128, **kwargs: Any) -> Path:
    """PNG screenshot; for the documentation, quantised to `colors` colours to keep docs/img small."""
    page.screenshot(path=str(path), **kwargs)
    if not for_docs():
        return path
    from PIL import Image

    with Image.open(path) as image:
        small = image.convert("RGB").quantize(colors=colors, method=Image.Quantize.MEDIANCUT)
    small.save(path, optimize=True)
    return path


def form_field(page: Any, label: str) -> Any:
    """The schema-form property whose label starts with `label` (e.g. "Num Ctx"), innermost match."""
    return page.locator(
        "xpath=//span[contains(@class,'schema-form-property__label')][starts-with(normalize-space(), "
        f"'{label}')]/ancestor::div[contains(concat(' ', normalize-space(@class), ' '), ' schema-form-property ')][1]")


@contextlib.contextmanager
def page_evidence(page: Any, directory: Path, name: str) -> Iterator[None]:
    """On failure, save a screenshot of the page and add its URL and visible text to the error."""
    try:
        yield
    except Exception as exc:
        shot = directory / f"{name}-failure.png"
        try:
            page.screenshot(path=str(shot))
            text = page.inner_text("body")[-3000:]
        except Exception as inner:  # noqa: BLE001 - the page itself may be gone
            text = f"(page unreadable: {inner})"
        raise AssertionError(f"{exc}\n--- page {page.url} (screenshot {shot}) ---\n{text}") from exc
