"""Progress of a run in Prefect: a progress artifact and log lines that move with every answer.

The flow calls `chunk_finished()` for each chunk that ended and then `tick()`, about once a second
while chunks run. Both read the run's ledger (`chunkwise.run.progress`): every fsynced ledger line is one
finished request, so progress advances request by request, never sits at 0 % while answers arrive,
and shows failures by class, requests/s and an ETA. Artifact updates are throttled (at most one per
`min_interval_s`, plus the last) and a progress log line is written at most every `log_interval_s`,
so a 170,000-request run does not flood the API. Log lines carry counts, never prompt or answer text.

The tick also refreshes the session's end in the manifest every `heartbeat_s`, so a session that is
killed still has its active time counted (`chunkwise.results.sessions`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any
from uuid import UUID

from chunkwise.logs import logger
from chunkwise.run.manifest import touch_session
from chunkwise.run.progress import ProgressWatch, Snapshot
from chunkwise.store.layout import RunPaths
from chunkwise.store.records import ChunkSummary


def log() -> Any:
    return logger("tasks.progress")


class Progress:
    def __init__(self, total: int, run_name: str, *, run_dir: Path, requests_total: int,
                 min_interval_s: float = 1.0, log_interval_s: float = 10.0, artifacts: bool = True,
                 manifest: Path | None = None, heartbeat_s: float = 15.0) -> None:
        self.total = max(total, 1)
        self.done = 0
        #: Prefect retries of chunk tasks in this session (a run count above 1).
        self.chunk_task_retries = 0
        self.run_name = run_name
        self.min_interval_s, self.log_interval_s = min_interval_s, log_interval_s
        self.watch = ProgressWatch(run_dir, requests_total, total).start()
        now = time.monotonic()
        self._last = self._last_log = 0.0
        self._artifact_id: UUID | None = None
        self._changed = False
        self._ledger_names = RunPaths(run_dir)
        self._manifest, self._heartbeat_s, self._last_beat = manifest, heartbeat_s, now
        if artifacts:
            from prefect.artifacts import create_progress_artifact

            self._artifact_id = create_progress_artifact(  # type: ignore[assignment]  # sync in a flow
                self.snapshot().percent, key="chunkwise-progress",
                description=f"chunkwise run {run_name}: {self.snapshot().line()}",
            )

    def snapshot(self) -> Snapshot:
        return self.watch.model.snapshot()

    @property
    def percent(self) -> float:
        return self.snapshot().percent

    def tick(self, *, force: bool = False) -> None:
        """Read the answers appended since the last tick; update the artifact, log and heartbeat (throttled)."""
        changed = self.watch.poll() or force or self._changed
        self._changed = False
        now = time.monotonic()
        if self._manifest is not None and now - self._last_beat >= self._heartbeat_s:
            touch_session(self._manifest)
            self._last_beat = now
        if not changed:
            return
        snap = self.snapshot()
        finished = self.done == self.total
        if now - self._last_log >= self.log_interval_s and not finished:
            log().info("%s", snap.line())
            self._last_log = now
        if self._artifact_id is not None and (now - self._last >= self.min_interval_s or finished):
            from prefect.artifacts import update_progress_artifact

            update_progress_artifact(self._artifact_id, snap.percent,
                                     description=f"chunkwise run {self.run_name}: {snap.line()}")
            self._last = now

    def chunk_finished(self, summary: ChunkSummary | None, label: str) -> None:
        """Count a finished chunk and read its own ledger's last lines (not every chunk's: the flow
        ticks once after handling the chunks that finished together, and that tick reads the rest
        and updates the artifact)."""
        self.done += 1
        self.watch.model.chunks_done = self.done
        self._changed = True
        if summary and "index" in summary:
            self.watch.poll([self._ledger_names.ledger(int(summary["index"])).name])
        if summary:
            self.chunk_task_retries += max(0, int(summary.get("task_run_count", 1)) - 1)
            how = "from checkpoint" if summary.get("from_checkpoint") else f"sent {summary.get('sent', 0)}"
            how += " by the head start" if summary.get("head_start") else ""
            log().info("%s finished: %d ok, %d failed, %s [%d/%d chunks, %.1f%% of requests]", label, summary["ok"],
                       summary["failed"], how, self.done, self.total, self.percent)
        else:
            log().warning("%s did not finish [%d/%d chunks]", label, self.done, self.total)
