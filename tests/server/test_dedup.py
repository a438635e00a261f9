"""The server's exactly-once store (server/dedup.py): ranges per source, out-of-order runs,
persistence with the data across a kill, a partial last line."""

from __future__ import annotations

import json
import os

from server.dedup import MAX_RANGES, DedupStore, DedupWriter, split_id
from server.writer import FileWriter

A = "0123456789abcdef.00000000000000aa"


def lines(start_line: int, n: int, source: str = A) -> list[dict]:
    """n records of lines 'l<k>' (k = start_line...), each 'l' + 6 digits + newline = 8 bytes."""
    return [{"id": f"{source}.{k * 8}", "line": f"l{k:06d}"} for k in range(start_line,
                                                                            start_line + n)]


def test_ids_split_into_source_and_position():
    assert split_id(f"{A}.42") == (A, 42)
    assert split_id("a.s1-0.17") == ("a.s1-0", 17)
    assert split_id("nodot") is None and split_id(None) is None and split_id("a.b.x") is None


def test_consecutive_runs_merge_into_one_range_and_replays_are_dropped():
    s = DedupStore()
    for k in range(0, 1000, 100):
        assert s.filter(lines(k, 100)) == lines(k, 100)
        s.add(lines(k, 100))
    assert len(s.ranges[A]) == 1
    assert s.filter(lines(950, 100)) == lines(1000, 50)  # a replay overlapping the end
    assert s.dropped == 50


def test_runs_arriving_out_of_order_leave_the_gap_open():
    s = DedupStore()
    s.add(lines(500, 500))          # gRPC request 2 before request 1
    s.add(lines(1500, 500))         # and request 4 before 3
    assert s.filter(lines(0, 500)) == lines(0, 500)
    assert s.filter(lines(1000, 500)) == lines(1000, 500)
    s.add(lines(0, 500))
    s.add(lines(1000, 500))
    assert len(s.ranges[A]) == 1 and s.filter(lines(0, 2000)) == []


def test_events_and_irregular_records_never_lose_a_gap():
    s = DedupStore()
    # pieces: their successor is unknown, so each run stays a range of its own ...
    for k in range(0, 100):
        s.add([{"id": f"{A}.{k * 10}", "line": "x", "piece": 0}])
    assert len(s.ranges[A]) <= MAX_RANGES
    # ... and the smallest gaps are joined first: a large real gap stays open
    s.add([{"id": f"{A}.{100_000}", "line": "x", "piece": 0}])
    assert s.filter([{"id": f"{A}.{50_000}", "line": "y"}]) != []
    assert s.filter([{"id": f"{A}.{500}", "line": "y"}]) == []


def test_kept_with_the_data_across_a_kill(tmp_path):
    w = DedupWriter(FileWriter(directory=str(tmp_path), file_bytes=1 << 30, max_files=3))
    w.write(lines(0, 100))
    w._snapshot()
    w.write(lines(100, 100))  # written after the last snapshot: found again in the file
    os.write(w.writer.fd, b'{"id": "' + A.encode() + b'.16000", "li')  # a write cut by kill -9
    # (no close: as if killed)
    again = DedupWriter(FileWriter(directory=str(tmp_path), file_bytes=1 << 30, max_files=3))
    again.write(lines(50, 200))
    again.close()
    recs = [json.loads(x) for x in (tmp_path / "received.ndjson").read_bytes().splitlines()]
    assert [r["line"] for r in recs] == [f"l{k:06d}" for k in range(250)]
    assert again.dropped == 150
