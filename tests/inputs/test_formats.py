"""Container log formats and multiline joining, fed runs of lines as the tailer cuts them."""

from __future__ import annotations

import calendar

import pytest

from common.events import FORMAT_ERROR, PIECE, RECORD, LogEvent
from inputs.file.formats import Multiline, RecordChain, parse_rfc3339_ns


def run(text: bytes, offset: int = 0) -> LogEvent:
    return LogEvent(path="/c.log", dev=1, ino=2, offset=offset, data=text,
                    lines=text.count(b"\n"), read_ns=0)


def feed(chain: RecordChain, *texts: bytes, now: float = 0.0):
    out, off = [], 0
    for t in texts:
        out += list(chain.feed(run(t, off), now))
        off += len(t)
    return out


def test_rfc3339():
    base = calendar.timegm((2016, 10, 6, 0, 17, 9, 0, 0, 0)) * 10**9
    assert parse_rfc3339_ns(b"2016-10-06T00:17:09.669794202Z") == base + 669794202
    assert parse_rfc3339_ns(b"2016-10-06T00:17:09Z") == base
    assert parse_rfc3339_ns(b"2016-10-06T02:17:09.5+02:00") == base + 500_000_000
    with pytest.raises(ValueError):
        parse_rfc3339_ns(b"yesterday")


def test_cri_records_and_partials_per_stream():
    lines = (b"2016-10-06T00:17:09.669794202Z stdout F first line\n"
             b"2016-10-06T00:17:10.000000000Z stdout P part one, \n"
             b"2016-10-06T00:17:10.100000000Z stderr F an error\n"
             b"2016-10-06T00:17:10.200000000Z stdout P part two, \n"
             b"2016-10-06T00:17:10.300000000Z stdout F end\n")
    chain = RecordChain(fmt="cri", multiline=None)
    recs = feed(chain, lines)
    assert [(r.data, r.stream) for r in recs] == [
        (b"first line", "stdout"), (b"an error", "stderr"),
        (b"part one, part two, end", "stdout")]
    joined = recs[2]
    assert joined.offset == lines.index(b"2016-10-06T00:17:10.000000000Z")
    assert joined.end == len(lines)
    assert joined.time_ns == parse_rfc3339_ns(b"2016-10-06T00:17:10.000000000Z")
    assert all(r.flags == RECORD for r in recs)


def test_cri_partial_is_held_and_checkpoints_stop_before_it():
    chain = RecordChain(fmt="cri", multiline=None)
    first = b"2016-10-06T00:17:09Z stdout F done\n"
    held = b"2016-10-06T00:17:10Z stdout P not finished\n"
    recs = feed(chain, first + held)
    assert [r.data for r in recs] == [b"done"]
    assert chain.held_from() == len(first)


def test_cri_garbage_is_kept_raw_and_flagged():
    chain = RecordChain(fmt="cri", multiline=None)
    (r,) = feed(chain, b"not a cri line at all\n")
    assert r.data == b"not a cri line at all" and r.flags == RECORD | FORMAT_ERROR


def test_docker_json_file_with_a_split_line():
    lines = (b'{"log":"hello\\n","stream":"stdout","time":"2019-01-01T11:11:11.111111111Z"}\n'
             b'{"log":"a long li","stream":"stderr","time":"2019-01-01T11:11:12Z"}\n'
             b'{"log":"ne \\u00e9\\n","stream":"stderr","time":"2019-01-01T11:11:12.5Z"}\n'
             b'{"broken json\n')
    recs = feed(RecordChain(fmt="docker", multiline=None), lines)
    assert [(r.data, r.stream, bool(r.flags & FORMAT_ERROR)) for r in recs] == [
        (b"hello", "stdout", False), ("a long line é".encode(), "stderr", False),
        (b'{"broken json', "", True)]
    assert recs[0].time_ns == parse_rfc3339_ns(b"2019-01-01T11:11:11.111111111Z")


TRACEBACK = (b"2026-11-25 10:00:00 ERROR request failed\n"
             b"Traceback (most recent call last):\n"
             b'  File "app.py", line 3, in <module>\n'
             b"ZeroDivisionError: division by zero\n"
             b"2026-11-25 10:00:01 INFO next request\n")


def test_multiline_joins_a_python_traceback():
    chain = RecordChain(fmt="raw", multiline=Multiline(start=r"\d{4}-\d\d-\d\d ", timeout=1.0,
                                                       max_bytes=10_000))
    recs = feed(chain, TRACEBACK, now=0.0)
    assert [r.data for r in recs] == [TRACEBACK.split(b"\n2026-11-25 10:00:01")[0]]
    assert chain.held_from() == TRACEBACK.index(b"2026-11-25 10:00:01")
    assert list(chain.due(0.5)) == []              # not yet
    (last,) = list(chain.due(1.0))                 # the flush timeout
    assert last.data == b"2026-11-25 10:00:01 INFO next request"
    assert last.end == len(TRACEBACK)
    assert chain.held_from() is None


def test_multiline_java_stack_over_cri_and_a_size_bound():
    java = [b"2026-11-25 10:00:00 Exception in thread main java.lang.IllegalStateException: x",
            b"\tat com.example.App.run(App.java:10)",
            b"\tat com.example.App.main(App.java:3)",
            b"2026-11-25 10:00:02 started"]
    cri = b"".join(b"2026-11-25T10:00:00Z stdout F " + ln + b"\n" for ln in java)
    chain = RecordChain(fmt="cri", multiline=Multiline(start=r"\d{4}-", timeout=1.0,
                                                       max_bytes=10_000))
    recs = feed(chain, cri)
    assert [r.data for r in recs] == [b"\n".join(java[:3])]
    small = RecordChain(fmt="raw", multiline=Multiline(start=r"\d{4}-", timeout=1.0, max_bytes=40))
    recs = feed(small, b"2026- start\n" + b"continuation line number one\n" * 3 + b"2026- x\n")
    assert all(len(r.data) <= 40 for r in recs)
    assert b"\n".join(r.data for r in recs) + b"\n" == (
        b"2026- start\n" + b"continuation line number one\n" * 3)


def test_pieces_pass_through_and_flush_what_is_held():
    chain = RecordChain(fmt="raw", multiline=Multiline(start="S", timeout=9, max_bytes=100))
    recs = feed(chain, b"S one\ncont\n")
    assert recs == []
    piece = LogEvent(path="/c", dev=1, ino=2, offset=11, data=b"x" * 50, lines=1, read_ns=0,
                     flags=PIECE)
    out = list(chain.feed(piece, 0.0))
    assert [r.data for r in out] == [b"S one\ncont", b"x" * 50]
    assert out[1].flags == PIECE
