"""The makespan model (issue 22 item 5): the arithmetic its calibration in bench/makespan_model.py rests on
(pure)."""

from __future__ import annotations

import pytest

from chunkwise.plan.makespan import Costs, makespan


def test_one_process_is_fixed_costs_plus_sending_plus_the_drain():
    result = makespan(1000, 1, Costs(host_rps=50.0, fixed_s=10.0, drain_s=4.0))
    assert (result.seconds, result.sending_s, result.gaps_s, result.shards_per_host) == (34.0, 20.0, 0.0, 0)


def test_hosts_run_their_shards_in_turn_with_a_gap_before_each():
    result = makespan(2160, 3, Costs(host_rps=4.0, fixed_s=13.0, gap_s=5.0), shard_requests=360)
    assert result.shards_per_host == 2 and result.sending_s == 180.0 and result.gaps_s == 10.0
    assert result.seconds == 203.0


def test_the_busiest_host_sets_the_length_when_shards_do_not_divide_evenly():
    even = makespan(170_000, 8, Costs(host_rps=45.0, fixed_s=0.0), shard_requests=900)  # 189 shards: 24 / host
    uneven = makespan(170_000, 8, Costs(host_rps=45.0, fixed_s=0.0), shard_requests=8100)  # 21 shards: 3 / host
    assert even.shards_per_host == 24 and uneven.shards_per_host == 3
    assert uneven.sending_s == pytest.approx(3 * 170_000 / 21 / 45.0)  # 24,286 requests on the busiest host
    assert even.sending_s == pytest.approx(24 * 170_000 / 189 / 45.0)  # 21,587 requests on the busiest host


def test_several_hosts_need_shards_and_nonsense_is_refused():
    with pytest.raises(ValueError, match="need shards"):
        makespan(100, 2, Costs(host_rps=1.0, fixed_s=0.0))
    with pytest.raises(ValueError, match="host_rps > 0"):
        makespan(100, 1, Costs(host_rps=0.0, fixed_s=0.0))


def test_shards_sized_by_time_end_the_hosts_together():
    """Balanced (time-sized, tapered) shards: the busiest host sends requests / hosts, whatever the shard count."""
    result = makespan(170_000, 8, Costs(host_rps=45.0, fixed_s=13.0, drain_s=9.0), shard_requests=8100,
                      balanced=True)
    assert result.sending_s == pytest.approx(170_000 / 8 / 45.0) and result.gaps_s == 0.0
    assert result.seconds == pytest.approx(13.0 + 170_000 / 8 / 45.0 + 9.0)


def test_the_first_round_is_under_way_from_the_first_request():
    """A host's slots start together: sending takes (requests - in_flight) / rate, then the drain."""
    result = makespan(3000, 1, Costs(host_rps=46.0, fixed_s=2.0, drain_s=5.0, in_flight=256))
    assert result.sending_s == pytest.approx((3000 - 256) / 46.0)
    assert result.seconds == pytest.approx(2.0 + (3000 - 256) / 46.0 + 5.0)
