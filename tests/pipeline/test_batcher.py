"""Batching by count, bytes and time."""

from __future__ import annotations

from common.events import LogEvent
from pipeline.batcher import Batcher


def run(lines: int, size: int = 10) -> LogEvent:
    data = (b"x" * (size - 1) + b"\n") * lines
    return LogEvent(path="/a", dev=1, ino=1, offset=0, data=data, lines=lines, read_ns=0)


def test_closes_at_max_events_counting_lines():
    b = Batcher(max_events=100, max_bytes=10**9, max_delay=60)
    b.add([run(60)], now=0)
    assert not b.full()
    b.add([run(50)], now=0)
    assert b.full()
    assert sum(e.lines for e in b.take()) == 110  # a run is never split
    assert not b.full() and len(b) == 0


def test_closes_at_max_bytes():
    b = Batcher(max_events=10**9, max_bytes=1000, max_delay=60)
    b.add([run(5, size=100)], now=0)
    assert not b.full()
    b.add([run(5, size=100)], now=0)
    assert b.full()


def test_timer_starts_with_the_first_event():
    b = Batcher(max_events=10**9, max_bytes=10**9, max_delay=0.2)
    assert b.time_left(100.0) is None and not b.due(100.0)
    b.add([run(1)], now=100.0)
    b.add([run(1)], now=100.15)  # later events do not restart the timer
    assert abs(b.time_left(100.1) - 0.1) < 1e-9
    assert not b.due(100.19)
    assert b.due(100.2)
    b.take()
    assert b.time_left(100.3) is None and not b.due(1000.0)


def test_a_list_counts_as_its_events_one_by_one():
    """events_size (the batcher's one pass) sums what event_lines and event_bytes say."""
    from common.events import HttpEvent, LogEvent, event_bytes, event_lines, events_size

    log = LogEvent(path="/a", dev=1, ino=2, offset=0, data=b"a\nbb\n", lines=2, read_ns=1)
    http = HttpEvent(time_ns=1, pid=2, tid=2, comm="x", fd=3, direction="server",
                     method="GET", path="/")
    for events in ([], [http], [log], [log, http, log, http, http]):
        assert events_size(events) == (sum(map(event_lines, events)),
                                       sum(map(event_bytes, events)))
