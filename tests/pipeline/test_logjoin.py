"""The log join's rules on made-up events (real programs: tests/pipeline/test_tracing_live.py):
a line takes its own write, never a twin's; losses clear what is pending; event loops and
same-bytes races are ambiguous; a request answered long ago is no request; the hold is bounded."""

from __future__ import annotations

from common.events import HttpEvent, LogEvent, LogWriteEvent, LossEvent
from pipeline.logjoin import JoinConfig, LogJoiner
from pipeline.spans import SpanBuilder

MS = 1_000_000
T0 = 1_700_000_000 * 10**9
FILE = (8, 99)


def exchange(fd, start_ms, dur_ms, path, pid=10, tid=11):
    return HttpEvent(time_ns=T0 + start_ms * MS, pid=pid, tid=tid, comm="srv", fd=fd,
                     direction="server", method="GET", path=path, status=200,
                     duration_ns=dur_ms * MS, boot_ns=start_ms * MS)


def write(line, at_ms, req=None, *, tid=11, resp_ms=0, multi_ms=0, lost=0, length=None):
    data = line + b"\n"
    req_fd, req_ms = req or (-1, 0)
    return LogWriteEvent(time_ns=T0 + at_ms * MS, pid=10, tid=tid, fd=3, dev=FILE[0],
                         ino=FILE[1], length=len(data) if length is None else length,
                         head=data[:128], boot_ns=at_ms * MS, req_boot_ns=req_ms * MS,
                         req_fd=req_fd, resp_boot_ns=resp_ms * MS, multi_boot_ns=multi_ms * MS,
                         lost_before=lost)


def lines(*ls, read_ms=50, offset=0):
    data = b"".join(x + b"\n" for x in ls)
    return LogEvent(path="/l", dev=FILE[0], ino=FILE[1], offset=offset, data=data,
                    lines=len(ls), read_ns=T0 + read_ms * MS)


def joiner(**cfg):
    spans = SpanBuilder()
    return spans, LogJoiner(spans, JoinConfig(**cfg))


def run(j, spans, events, now=0.0):
    """What the joiner hands on, but the http events (which always pass)."""
    spans.observe(events, now)
    return [e for e in j.feed(events, now) if not isinstance(e, HttpEvent)]


def test_identical_lines_take_their_own_writes_in_order():
    spans, j = joiner()
    evs = [exchange(4, 1, 5, "/a"), exchange(5, 10, 5, "/b"),
           write(b"same", 3, (4, 1)), write(b"same", 12, (5, 10)), write(b"later", 60)]
    assert run(j, spans, evs) == []  # no line yet
    (ev,) = run(j, spans, [lines(b"same", b"same")])
    a, b = ev.joins
    assert (a.index, a.path, b.index, b.path) == (0, "/a", 1, "/b")
    assert a.trace_id and a.span_id != b.span_id


def test_a_twin_write_by_another_thread_at_the_same_instant_makes_both_ambiguous():
    spans, j = joiner()
    evs = [exchange(4, 1, 5, "/a"), exchange(5, 1, 5, "/b", tid=12),
           write(b"same", 3, (4, 1)), write(b"same", 3, (5, 1), tid=12), write(b"x", 60)]
    run(j, spans, evs)
    (ev,) = run(j, spans, [lines(b"same", b"same")])
    assert [x.ambiguous for x in ev.joins] == [True, True]


def test_an_event_loop_thread_is_ambiguous_and_a_long_finished_request_is_none():
    spans, j = joiner()
    evs = [exchange(4, 1, 5, "/a"), write(b"loop", 3, (4, 1), multi_ms=2),
           write(b"idle", 200, (4, 1), resp_ms=6), write(b"x", 300)]
    run(j, spans, evs)
    (ev,) = run(j, spans, [lines(b"loop", b"idle", read_ms=250)])
    assert [(x.index, x.ambiguous) for x in ev.joins] == [(0, True)]
    assert j.stats.no_request == 1


def test_three_twin_writes_make_all_three_lines_ambiguous():
    spans, j = joiner()
    evs = [exchange(4, 1, 5, "/a"), exchange(5, 1, 5, "/b", tid=12),
           exchange(6, 1, 5, "/c", tid=13), write(b"same", 3, (4, 1)),
           write(b"same", 3, (5, 1), tid=12), write(b"same", 3, (6, 1), tid=13), write(b"x", 60)]
    run(j, spans, evs)
    (ev,) = run(j, spans, [lines(b"same", b"same", b"same")])
    assert [x.ambiguous for x in ev.joins] == [True, True, True]
    assert not j.poison


def test_twins_leave_nothing_behind_and_a_dropped_twin_spoils_no_later_line():
    spans, j = joiner()
    for i in range(200):  # lines that differ (a request id): every twin a content of its own
        t = 10 * i
        data = b"req %d" % i
        evs = [exchange(4, t + 1, 5, "/a"), exchange(5, t + 1, 5, "/b", tid=12),
               write(data, t + 3, (4, t + 1)), write(data, t + 3, (5, t + 1), tid=12),
               write(b"x", t + 8)]
        run(j, spans, evs, now=t / 1000)
        (ev,) = run(j, spans, [lines(data, data, read_ms=t + 9)], now=t / 1000)
        assert [x.ambiguous for x in ev.joins] == [True, True]
    assert not j.poison
    # A twin whose own line never came (its write dropped from the pending ones, unread): a
    # later line of the same bytes, alone, is its own write's, not ambiguous.
    run(j, spans, [exchange(4, 3000, 5, "/a"), exchange(5, 3000, 5, "/b", tid=12),
                   write(b"twin", 3001, (4, 3000)), write(b"twin", 3001, (5, 3000), tid=12),
                   write(b"x", 3002)], now=3.0)
    (ev,) = run(j, spans, [lines(b"twin", read_ms=3003)], now=3.0)
    assert [x.ambiguous for x in ev.joins] == [True]
    assert len(j.poison) == 1
    run(j, spans, [write(b"x", 20000)], now=20.0)  # 17 s on...
    j.release(20.0)  # ...the twin's write is dropped (WRITE_KEEP_NS)
    assert not j.poison
    run(j, spans, [exchange(7, 20001, 5, "/later"), write(b"twin", 20002, (7, 20001)),
                   write(b"x", 20010)], now=20.0)
    (ev,) = run(j, spans, [lines(b"twin", read_ms=20011)], now=20.0)
    assert [(x.ambiguous, x.path) for x in ev.joins] == [(False, "/later")]


def test_a_lost_write_clears_what_is_pending_so_no_line_takes_a_twin():
    spans, j = joiner()
    evs = [exchange(4, 1, 5, "/a"), exchange(5, 10, 5, "/b"),
           write(b"same", 3, (4, 1)), write(b"same", 12, (5, 10), lost=1), write(b"x", 60)]
    run(j, spans, evs)
    # The first line's write came before the loss; its twin's own write was lost: the pending
    # writes were cleared, and the write of 12 ms is the second line's... or the lost one's.
    (ev,) = run(j, spans, [lines(b"same", read_ms=50)], now=1.0)
    assert [x.path for x in ev.joins] == ["/b"] or ev.joins == []
    assert j.stats.resets == 1


def test_a_line_waits_for_its_write_only_while_no_later_write_came_and_never_past_max_hold():
    spans, j = joiner(max_hold=0.8, max_lag=2.0)
    run(j, spans, [write(b"old", 1)])
    assert run(j, spans, [lines(b"mine", read_ms=50)], now=0.0) == []  # its write may come
    assert j.release(1.0) == []  # no newer events: it waits (the events may be behind)
    # An exchange ending 0.8 s (host time) after the line was read: its wait is over.
    (ev,) = run(j, spans, [exchange(9, 800, 51, "/other")], now=1.1)
    assert ev.joins == [] and j.stats.unmatched == 1
    run(j, spans, [lines(b"mine2", read_ms=900)], now=1.2)
    (ev,) = run(j, spans, [write(b"newer", 910)], now=1.21)  # a later write came: not its
    assert ev.joins == [] and j.stats.unmatched == 2
    run(j, spans, [lines(b"mine3", read_ms=2000)], now=2.0)
    assert j.release(3.9) == []
    (ev,) = j.release(4.0)  # max_lag: whatever the events say
    assert ev.joins == [] and j.stats.unmatched == 3


def test_a_line_written_in_flight_waits_for_its_exchange():
    spans, j = joiner()
    run(j, spans, [write(b"working", 3, (4, 1)), write(b"x", 60)])
    assert run(j, spans, [lines(b"working")], now=0.0) == []
    (ev,) = run(j, spans, [exchange(4, 1, 30, "/slow")], now=0.05)
    assert ev.joins[0].path == "/slow"


def test_lines_of_files_without_writes_pass_at_once_and_losses_reset():
    spans, j = joiner()
    other = LogEvent(path="/o", dev=1, ino=2, offset=0, data=b"a\n", lines=1, read_ns=T0)
    assert run(j, spans, [other]) == [other]
    loss = LossEvent(time_ns=1, source="input ebpf", what="ring buffer logwrite", count=3)
    assert run(j, spans, [loss]) == [loss] and j.stats.resets == 1


def follows(at_ms, file=FILE):
    """The eBPF input's word that the probe notes the file's writes (no byte written)."""
    return LogWriteEvent(time_ns=T0 + at_ms * MS, pid=0, tid=0, fd=-1, dev=file[0], ino=file[1],
                         length=0, head=b"", boot_ns=at_ms * MS)


def test_a_file_the_input_follows_holds_its_lines_before_any_write_came():
    """Without the word, the first lines of a file pass unjoined until a write of it came (the
    file input reads a line before the eBPF input's write event reaches the pipeline)."""
    spans, j = joiner()
    before = run(j, spans, [lines(b"early", read_ms=5)])
    assert [e.joins for e in before] == [[]]  # nothing says the file is followed: it passes
    run(j, spans, [follows(6)])
    assert run(j, spans, [lines(b"first", read_ms=10)]) == []  # held for its write
    # The input's word again (its periodic reminder), later than the line: no write, so the
    # line still waits (a later write would have told it its own is not coming).
    assert run(j, spans, [follows(30)], now=0.03) == [] and j.held
    (ev,) = run(j, spans, [exchange(4, 8, 5, "/a"), write(b"first", 9, (4, 8)),
                           write(b"x", 40)], now=0.04)
    assert [(x.path, x.ambiguous) for x in ev.joins] == [("/a", False)]
    assert j.pending_writes == 1  # "x": the words are no writes


def test_a_file_stays_followed_through_a_quiet_spell_while_the_input_says_so():
    spans, j = joiner()
    run(j, spans, [follows(0), write(b"w", 1), lines(b"w", read_ms=2)])
    # 90 s without a write of it, the input's word every 20 s; another file's writes go on
    other = (8, 100)
    for t in range(20_000, 100_000, 20_000):
        run(j, spans, [follows(t), LogWriteEvent(time_ns=T0 + t * MS, pid=10, tid=11, fd=4,
                                                 dev=other[0], ino=other[1], length=2,
                                                 head=b"o\n", boot_ns=t * MS)], now=t / 1000)
        j.release(t / 1000)
    assert run(j, spans, [lines(b"after", read_ms=95_000)], now=95.0) == []  # held
    # ...and no longer once the input stops saying so, and FOLLOW_NS (60 s) passed
    run(j, spans, [LogWriteEvent(time_ns=T0, pid=10, tid=11, fd=4, dev=other[0], ino=other[1],
                                 length=2, head=b"o\n", boot_ns=200_000 * MS)], now=200.0)
    (ev,) = run(j, spans, [lines(b"much later", read_ms=200_001, offset=100)], now=200.0)
    assert ev.joins == []
