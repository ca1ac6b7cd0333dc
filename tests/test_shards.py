"""Shard planning: disjoint, covering, contiguous, balanced; recorded and re-read unchanged."""

import json

import pytest

from chunkwise.plan.chunks import plan_chunks
from chunkwise.plan.shards import load_or_write, load_recorded, plan_shards, requests_per_shard, shards_path


@pytest.mark.parametrize(("n", "chunk", "target"), [(1000, 37, 200), (170_000, 111, 900), (50, 10, 1000),
                                                    (12, 1, 5), (300, 100, 1), (9, 3, 3)])
def test_shards_cover_every_chunk_once_in_order_and_are_balanced(n, chunk, target):
    specs = plan_chunks(n, chunk)
    shards = plan_shards(specs, target)
    flat = [i for s in shards for i in s.chunks]
    assert flat == [s.index for s in specs]  # disjoint, covering, contiguous, in order
    assert [s.index for s in shards] == list(range(len(shards)))
    assert all(s.chunks for s in shards)
    assert sum(s.requests for s in shards) == n
    expected = min(len(specs), max(1, int(n / target + 0.5)))  # round half up, one chunk at least per shard
    assert len(shards) == expected
    largest_chunk = max(s.size for s in specs)
    sizes = [s.requests for s in shards]
    assert max(sizes) - min(sizes) <= 2 * largest_chunk


def test_170k_reference_run_gives_few_minute_shards():
    specs = plan_chunks(170_000, 111)
    shards = plan_shards(specs, requests_per_shard(180, 5))
    assert requests_per_shard(180, 5) == 900
    assert 180 <= len(shards) <= 200
    assert all(800 <= s.requests <= 1000 for s in shards)


def test_bad_targets_are_refused():
    with pytest.raises(ValueError, match="at least 1"):
        plan_shards(plan_chunks(10, 2), 0)
    with pytest.raises(ValueError, match="positive"):
        requests_per_shard(0, 5)
    assert plan_shards([], 10) == []


def test_recorded_plan_is_reused_and_a_different_chunk_plan_replaces_it(tmp_path):
    specs = plan_chunks(1000, 50)
    first = load_or_write(tmp_path, specs, 200)
    assert json.loads(shards_path(tmp_path).read_text())["sizing"] == [{"source": "fixed", "requests": 200}]
    assert load_or_write(tmp_path, specs, 300) == first  # a restarted parent sees the same shards
    other = plan_chunks(1000, 100)
    replanned = load_or_write(tmp_path, other, 300)
    assert [i for s in replanned for i in s.chunks] == list(range(len(other)))
    assert len(replanned) == 3


def test_a_shard_flow_reads_its_chunk_descriptors_from_the_record(tmp_path):
    specs = plan_chunks(1000, 50)
    shards = load_or_write(tmp_path, specs, 200)
    assert [s.index for s in load_recorded(tmp_path, 1)] == list(shards[1].chunks)
    assert load_recorded(tmp_path, 1)[0] == specs[shards[1].chunks[0]]
    with pytest.raises(ValueError, match=r"shard 99 is not in .*stale"):
        load_recorded(tmp_path, 99)
