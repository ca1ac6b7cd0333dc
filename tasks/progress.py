"""Progress of a run as chunks finish: a Prefect progress artifact (0-100 %) and a log line.

Artifact updates are throttled (at most one per `min_interval_s`, plus the last) so a 1,532-chunk run
does not flood the API; the log line names the chunk and its counts, never prompt or answer text.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from chunkwise.logs import logger
from chunkwise.run.manifest import touch_session


def log():
    return logger("tasks.progress")


class Progress:
    def __init__(self, total: int, run_name: str, *, min_interval_s: float = 1.0, artifacts: bool = True,
                 manifest: Path | None = None, heartbeat_s: float = 15.0) -> None:
        self.total = max(total, 1)
        self.done = 0
        #: Prefect retries of chunk tasks in this session (a run count above 1).
        self.chunk_task_retries = 0
        self.run_name = run_name
        self.min_interval_s = min_interval_s
        self._last = 0.0
        self._artifact_id = None
        self._manifest, self._heartbeat_s, self._last_beat = manifest, heartbeat_s, time.monotonic()
        if artifacts:
            from prefect.artifacts import create_progress_artifact

            self._artifact_id = create_progress_artifact(
                0.0, key="chunkwise-progress", description=f"chunkwise run {run_name}: chunks finished"
            )

    @property
    def percent(self) -> float:
        return round(100.0 * self.done / self.total, 2)

    def chunk_finished(self, summary: dict[str, Any] | None, label: str) -> None:
        self.done += 1
        if summary:
            self.chunk_task_retries += max(0, int(summary.get("task_run_count", 1)) - 1)
            how = "from checkpoint" if summary.get("from_checkpoint") else f"sent {summary.get('sent', 0)}"
            log().info("%s finished: %d ok, %d failed, %s [%d/%d chunks, %.1f%%]", label, summary["ok"],
                     summary["failed"], how, self.done, self.total, self.percent)
        else:
            log().warning("%s did not finish [%d/%d chunks]", label, self.done, self.total)
        now = time.monotonic()
        if self._manifest is not None and now - self._last_beat >= self._heartbeat_s:
            touch_session(self._manifest)
            self._last_beat = now
        if self._artifact_id is not None and (now - self._last >= self.min_interval_s or self.done == self.total):
            from prefect.artifacts import update_progress_artifact

            update_progress_artifact(self._artifact_id, self.percent)
            self._last = now
