"""Hundreds of requests in flight (issue 22): how many chunk tasks and sender threads a run opens, and
whether answers are streamed (pure: no server, no Prefect)."""

from __future__ import annotations

from chunkwise.params import RunParams
from chunkwise.run.session import chunk_workers, streams_answers
from chunkwise.settings import Settings


def params(mode: str, parallel: int) -> RunParams:
    return RunParams(input_path="x.parquet", mode=mode, parallel=parallel)


def test_independent_mode_runs_just_enough_chunks_to_keep_the_slots_fed():
    settings = Settings(chunk_workers=8)
    # 256 slots, chunks of 113 rows: ceil(512 / 113) + 1 = 6 chunks keep 2 x 256 rows queued; the floor is 8
    assert chunk_workers(params("independent", 256), settings, 113) == 8
    # 1,024 slots: ceil(2048 / 113) + 1 = 20, not one task per slot
    assert chunk_workers(params("independent", 1024), settings, 113) == 20
    assert chunk_workers(params("independent", 256), settings, 10) == 53


def test_conversation_mode_runs_one_chunk_task_per_slot():
    settings = Settings(chunk_workers=8)
    assert chunk_workers(params("conversation", 256), settings, 113) == 256
    assert chunk_workers(params("conversation", 4), settings, 113) == 8


def test_whole_answers_from_64_in_flight_unless_the_setting_says_otherwise():
    assert streams_answers(16, Settings()) is None  # the backend's own default: Ollama streams
    assert streams_answers(63, Settings()) is None
    assert streams_answers(64, Settings()) is False
    assert streams_answers(256, Settings(stream="on")) is True
    assert streams_answers(4, Settings(stream="off")) is False


def test_parallel_takes_an_engine_s_slot_count():
    assert RunParams(input_path="x.parquet", parallel=1024).parallel == 1024
