"""Statistics per session: a killed session's time ends at its last ledger line (pure)."""

from __future__ import annotations

from datetime import UTC, datetime

from chunkwise.results.sessions import session_figures
from chunkwise.store.ledger import encode_line


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds")


def test_each_session_is_charged_its_own_requests_and_time(tmp_path):
    ledger = tmp_path / "ledger"
    ledger.mkdir()
    t0 = 1_700_000_000.0
    lines = [encode_line({"_row": i, "status": "ok", "_t": t0 + 5 + i * 0.1}) for i in range(300)]  # 5 s .. 34.9 s
    lines += [encode_line({"_row": 300 + i, "status": "ok", "_t": t0 + 105 + i * 0.05}) for i in range(300)]
    (ledger / "chunk-00000.jsonl").write_bytes(b"".join(lines[:150] + lines[300:450]))
    (ledger / "chunk-00001.jsonl").write_bytes(b"".join(lines[150:300] + lines[450:]))
    manifest = {"sessions": [
        {"started_at": iso(t0), "ended_at": None},  # SIGKILLed before its first heartbeat
        {"started_at": iso(t0 + 100), "ended_at": iso(t0 + 125)},
    ]}
    figures = session_figures(manifest, ledger)
    first, second = figures["sessions"]
    assert first["requests_finished"] == 300 and abs(first["active_seconds"] - 34.9) < 0.01
    assert first["end_from"] == "ledger" and second["end_from"] == "manifest"
    assert second["requests_finished"] == 300 and second["active_seconds"] == 25.0
    assert figures["active_seconds"] == round(34.9 + 25.0, 3)
    assert figures["requests_per_s"] == round(600 / 59.9, 3)  # not 600 / 25, and not counting the 65 s stopped
    assert first["requests_per_s"] == round(300 / 34.9, 3) and second["requests_per_s"] == 12.0


def test_a_heartbeat_later_than_the_last_line_is_the_end(tmp_path):
    ledger = tmp_path / "ledger"
    ledger.mkdir()
    t0 = 1_700_000_000.0
    (ledger / "chunk-00000.jsonl").write_bytes(encode_line({"_row": 0, "status": "ok", "_t": t0 + 3}))
    figures = session_figures({"sessions": [{"started_at": iso(t0), "ended_at": iso(t0 + 10)}]}, ledger)
    assert figures["active_seconds"] == 10.0 and figures["sessions"][0]["end_from"] == "manifest"
