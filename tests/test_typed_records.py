"""The typed records that cross rooms say what the code writes: an outcome (`OutcomeRecord`, the ledger,
checkpoints and results.parquet), a chunk's summary (`ChunkSummary`, a chunk task's result) and the
statistics document (`StatsDoc`, stats.json)."""

from __future__ import annotations

from typing import get_type_hints

from chunkwise.plan.chunks import ChunkSpec
from chunkwise.results import statsdoc
from chunkwise.results.stats import compute_stats
from chunkwise.run.chunk import summarize
from chunkwise.store.records import OUTCOME_FIELDS, ChunkSummary, OutcomeRecord, outcome
from tests.test_stats import ROWS, write_results


def test_an_outcome_record_has_the_columns_of_the_outcome_schema_in_order():
    assert tuple(OutcomeRecord.__annotations__) == OUTCOME_FIELDS
    assert tuple(outcome(_row=3, status="ok")) == OUTCOME_FIELDS


def test_a_chunk_summary_has_the_keys_its_type_names():
    spec = ChunkSpec(index=2, start=0, stop=2, first_row=0, last_row=1)
    records = [outcome(_row=0, status="ok"), outcome(_row=1, status="failed", error_class="transient")]
    summary = summarize(spec, records, "d", sent=2, from_checkpoint=False)
    assert set(summary) <= set(ChunkSummary.__annotations__) and ChunkSummary.__required_keys__ <= set(summary)
    assert (summary["ok"], summary["failed"], summary["failed_by_class"]) == (1, 1, {"transient": 1})


def test_the_statistics_document_has_its_sections_and_each_section_its_keys(tmp_path):
    stats = compute_stats(write_results(tmp_path / "results.parquet", ROWS), mode="independent", system_prompt="",
                          chars_per_token=4.0, active_seconds=2.0, chunks=2)
    assert set(stats) == statsdoc.StatsDoc.__required_keys__
    sections = get_type_hints(statsdoc.StatsDoc)
    for key in ("requests", "tokens", "throughput", "latency_ms"):
        assert set(stats[key]) == set(sections[key].__annotations__), key
