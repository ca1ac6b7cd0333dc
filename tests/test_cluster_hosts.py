"""Per-host accounting: a host's share of a chunk's ledger, summed into rows that add up."""

from chunkwise.cluster import hosts
from chunkwise.store.ledger import Ledger


def rec(row, status="ok", p=10, e=5):
    return {"_row": row, "status": status, "prompt_eval_count": p, "eval_count": e}


def test_each_host_is_credited_with_the_ledger_lines_it_appended(tmp_path):
    path = tmp_path / "ledger" / "chunk-00000.jsonl"
    with Ledger(path) as ledger:
        for r in (rec(0), rec(1, "failed", 0, 0)):
            ledger.append(r)
    start_b = len(hosts.valid_records(path))
    with path.open("ab") as f:
        f.write(b"torn line without crc\n")
    with Ledger(path) as ledger:
        ledger.append(rec(1))
        ledger.append(rec(2))
    a = hosts.chunk_facts(hosts.valid_records(path)[:start_b])
    b = hosts.chunk_facts(hosts.valid_records(path)[start_b:])
    assert a == {"requests": 2, "ok": 1, "prompt_tokens": 10, "output_tokens": 5}
    assert b == {"requests": 2, "ok": 2, "prompt_tokens": 20, "output_tokens": 10}
    for label, facts, busy in (("gpu/1", a, 10.0), ("gpu2", b, 4.0)):
        hosts.append_fact(tmp_path, label, {"kind": "chunk", "at": 5.0, "chunk": 0, **facts})
        hosts.append_fact(tmp_path, label, {"kind": "shard", "at": 6.0, "outcome": "completed", "digest": "d",
                                            "busy_s": busy, "gpu_peak_mib": None, "endpoint": "http://x"})
    hosts.append_fact(tmp_path, "gpu3", {"kind": "shard", "at": 6.0, "outcome": "refused", "busy_s": 0.1,
                                         "error": "host gpu3 serves m with digest bbb, but the run needs digest aaa"})
    rows = {r["host"]: r for r in hosts.host_rows(tmp_path)}
    assert set(rows) == {"gpu-1", "gpu2", "gpu3"}  # labels made safe as file names
    assert rows["gpu-1"]["req_per_s"] == 0.2 and rows["gpu2"]["req_per_s"] == 0.5
    assert sum(r["ok"] for r in rows.values()) == 3 == len({0, 1, 2})
    assert rows["gpu3"]["digest_check"].startswith("refused: host gpu3 serves m with digest bbb")
    assert rows["gpu2"]["digest_check"] == "ok" and rows["gpu2"]["shards"] == 1
    assert hosts.host_rows(tmp_path, since=7.0) == []  # facts before the session are not its


def test_a_holder_that_died_inside_a_chunk_is_credited_by_the_next_holder(tmp_path):
    path = tmp_path / "ledger" / "chunk-00004.jsonl"
    hosts.open_chunk(tmp_path, "dead", 4, 0)  # gpu "dead" took the chunk, appended 3 records, was killed
    with Ledger(path) as ledger:
        for row in range(3):
            ledger.append(rec(row))
    records = hosts.valid_records(path)
    assert hosts.credit_orphans(tmp_path, "alive", 4, records) == 3
    start = hosts.open_chunk(tmp_path, "alive", 4, len(records))
    with Ledger(path) as ledger:
        ledger.append(rec(3))
    hosts.append_fact(tmp_path, "alive", {"kind": "chunk", "id": start, "at": 9.9e9, "chunk": 4,
                                          **hosts.chunk_facts(hosts.valid_records(path)[3:])})
    assert hosts.credit_orphans(tmp_path, "parent", 4, hosts.valid_records(path)) == 0  # nothing left open
    rows = {r["host"]: r for r in hosts.host_rows(tmp_path)}
    assert set(rows) == {"dead", "alive"}  # the crediting writers ("alive", "parent") add no row of their own
    assert (rows["dead"]["ok"], rows["alive"]["ok"]) == (3, 1)
