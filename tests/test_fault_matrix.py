"""The fault matrix's own arithmetic (bench/faults): how re-sent requests are charged to the fault that lost
them, how a stopped run's ending is classed, how exit codes fold in the table. The matrix itself runs with
`make faults` (real processes, minutes), not here."""

from __future__ import annotations

from collections import Counter

from bench.faults.common import ending, receipts, resent_per_session, stops
from bench.faults.report import exits_cell


def test_a_request_sent_again_is_charged_to_the_session_that_last_sent_it():
    deltas = [Counter({"a": 1, "b": 1}), Counter({"c": 1}), Counter({"b": 1, "c": 1, "d": 1})]
    # session 0 left b unrecorded (session 2 sent it again), session 1 left c; nothing of a was re-sent
    assert resent_per_session(deltas) == [1, 1, 0]


def test_a_request_a_session_sent_twice_itself_is_charged_to_that_session():
    assert resent_per_session([Counter({"a": 2, "b": 1}), Counter({"c": 1})]) == [1, 0]


def test_receipts_count_answered_once_and_received_more_than_once():
    fps = {"a": {"received": 1, "answered": 1}, "b": {"received": 2, "answered": 1},
           "c": {"received": 2, "answered": 2}, "d": {"received": 1, "answered": 0}}
    assert receipts(fps) == (2, 2)


def test_a_traceback_anywhere_in_the_output_is_not_a_one_line_stop():
    clean = "12:00 INFO chunk 3 done\nchunkwise run: the disk is full (/x): free space, then run again\n"
    assert ending(clean) == ("one line", "chunkwise run: the disk is full (/x): free space, then run again")
    messy = "Traceback (most recent call last):\n  File ...\nOSError: [Errno 28]\n"
    assert ending(messy)[0] == "traceback"
    assert stops([clean, messy])[0] == "traceback"
    assert stops([]) == ("-", [])


def test_exit_codes_fold_runs_of_one_code():
    assert exits_cell([-9] * 10 + [0]) == "-9 x10, 0"
    assert exits_cell([130, 0]) == "130, 0"


def test_a_row_is_lost_unless_its_answer_is_recorded(tmp_path):
    import polars as pl

    from bench.faults.common import lost

    assert lost(tmp_path, ["a", "b"]) == 2  # no results.parquet: nothing recorded
    pl.DataFrame({"id": ["a", "b", "c", "d"], "status": ["ok", "failed", "failed", "ok"],
                  "error_class": [None, "output_truncated", "transient", None]}).write_parquet(
        tmp_path / "results.parquet")
    # b's whole answer is recorded (cut at num_predict); c failed; e has no row at all
    assert lost(tmp_path, ["a", "b", "c", "e"]) == 2
