"""common.cpu.relax: the CPU offered to others once a slice has passed, and the loops that work
through a batch offering it between pieces."""

from __future__ import annotations

from common import cpu
from common.events import HttpEvent
from outputs import ndjson


def test_relax_yields_once_a_slice_has_passed(monkeypatch):
    now = [10**12]
    yields = []
    monkeypatch.setattr(cpu, "_clock", lambda: now[0])
    monkeypatch.setattr(cpu, "_wall_clock", lambda: now[0])  # busy: the CPU's time is the wall's
    monkeypatch.setattr(cpu, "_yield", lambda: yields.append(now[0]))
    monkeypatch.setattr(cpu, "_last", 0)
    monkeypatch.setattr(cpu, "_next_look", 0)
    cpu.relax()
    assert len(yields) == 1  # long since the last one
    for _ in range(10):
        now[0] += cpu.SLICE_NS // 10 - 1
        cpu.relax()
    assert len(yields) == 1  # not a whole slice yet
    now[0] += 10
    cpu.relax()
    assert len(yields) == 2


def test_time_asleep_is_not_work(monkeypatch):
    """The slice is the thread's CPU time: a process that slept (or was preempted) longer than a
    slice does not give the CPU away as soon as it wakes, before doing anything; once it has
    worked a slice, it does."""
    import time

    yields = []
    monkeypatch.setattr(cpu, "_yield", lambda: yields.append(1))
    monkeypatch.setattr(cpu, "_last", cpu._clock())
    monkeypatch.setattr(cpu, "_next_look", 0)
    time.sleep(5 * cpu.SLICE_NS / 1e9)
    cpu.relax()
    assert yields == []
    start = cpu._clock()
    while cpu._clock() - start < 2 * cpu.SLICE_NS:
        pass  # work
    cpu.relax()
    assert yields == [1]


def test_the_cpu_clock_is_read_only_once_the_slice_can_have_been_worked(monkeypatch):
    """Reading the thread's CPU time is a system call: within a slice of wall time since the
    last look it is not read at all (the CPU's time cannot have grown more than the wall's), and
    after a look that found half a slice worked, not before the other half can have passed."""
    wall, cpu_ns = [10**12], [0]
    reads, yields = [], []

    def clock():
        reads.append(1)
        return cpu_ns[0]

    monkeypatch.setattr(cpu, "_clock", clock)
    monkeypatch.setattr(cpu, "_wall_clock", lambda: wall[0])
    monkeypatch.setattr(cpu, "_yield", lambda: yields.append(1))
    monkeypatch.setattr(cpu, "_last", 0)
    monkeypatch.setattr(cpu, "_next_look", wall[0] + cpu.SLICE_NS)  # as after a yield
    for _ in range(100):
        wall[0] += cpu.SLICE_NS // 100 - 1
        cpu_ns[0] += cpu.SLICE_NS // 100 - 1
        cpu.relax()
    assert reads == [] and yields == []
    wall[0] += 200  # a slice of wall time, of which the thread worked half (it was preempted)
    cpu_ns[0] = cpu.SLICE_NS // 2
    cpu.relax()
    assert len(reads) == 1 and yields == []
    wall[0] += cpu.SLICE_NS // 2 - 1  # not yet the other half
    cpu_ns[0] += cpu.SLICE_NS // 2 - 1
    cpu.relax()
    assert len(reads) == 1 and yields == []
    wall[0] += 1
    cpu_ns[0] += 1
    cpu.relax()
    assert len(reads) == 3 and yields == [1]  # read, yielded, read again


def test_rendering_a_large_batch_offers_the_cpu_between_pieces(monkeypatch):
    calls = []
    monkeypatch.setattr(ndjson, "relax", lambda: calls.append(1))
    events = [HttpEvent(time_ns=i, pid=1, tid=1, comm="x", fd=3, direction="server",
                        method="GET", path=f"/{i}") for i in range(1000)]
    out = ndjson.Renderer(fmt="ndjson", host="h").render(events)
    assert out.count(b"\n") == 1000 and b'"path":"/999"' in out
    assert len(calls) >= 1000 // ndjson.RENDER_PIECE


def test_a_batch_decoded_in_pieces_is_the_batch():
    import msgspec
    import pytest

    from common.events import (CODEC_PIECE, WHOLE_BELOW_BYTES, Batch, BatchCodec, LogEvent,
                               ProcessInfo, SpanEvent)

    codec = BatchCodec()
    proc = ProcessInfo(pid=1, cmdline=["nginx: worker process"], exe="/usr/sbin/nginx",
                       cgroup="/system.slice/nginx.service", user="www-data")
    for n in (0, 1, CODEC_PIECE, CODEC_PIECE + 1, 3 * CODEC_PIECE + 5):
        events = []
        for i in range(n):
            events.append(HttpEvent(time_ns=i, pid=1, tid=1, comm="x", fd=3, direction="server",
                                    method="GET", path=f"/{i}", process=proc, seq=i))
            if i % 3 == 0:
                events.append(SpanEvent(time_ns=i, end_ns=i + 1, trace_id="a" * 32,
                                        span_id="b" * 16, attrs={"k": i}))
            if i % 5 == 0:
                events.append(LogEvent(path="/a", dev=1, ino=2, offset=i, data=b"x\n", lines=1,
                                       read_ns=i))
        batch = Batch(events=events, source="pipeline", seq=7, acks=[(0, 3), (1, 9)])
        pieces = []
        data = codec.encode(batch)
        got = codec.decode_in_pieces(data, lambda: pieces.append(1))
        assert got == batch
        whole = len(events) <= CODEC_PIECE or len(data) <= WHOLE_BELOW_BYTES
        assert len(pieces) == (0 if whole else -(-len(events) // CODEC_PIECE))
        assert n < 3 * CODEC_PIECE or not whole  # the largest batch does go in pieces
    bad = codec.encode(Batch(events=[HttpEvent(time_ns=1, pid=1, tid=1, comm="x", fd=3,
                                               direction="server", method="GET",
                                               path="/" + "x" * 200)] * (CODEC_PIECE + 1)))
    assert len(bad) > WHOLE_BELOW_BYTES  # the bad bytes are met in a piece
    broken = bad.replace(b"GET", b"\xc1ET")  # 0xc1: never used in msgpack
    with pytest.raises(msgspec.DecodeError):
        codec.decode_in_pieces(broken, lambda: None)
    with pytest.raises(msgspec.DecodeError):
        codec.decode_in_pieces(b"\x93\x01", lambda: None)


def test_a_batch_encoded_in_pieces_is_the_same_bytes():
    from common.events import CODEC_PIECE, Batch, BatchCodec, LogEvent

    codec = BatchCodec()
    for n in (0, 5, CODEC_PIECE, CODEC_PIECE + 1, 600, 70_000):
        events = [LogEvent(path="/a", dev=1, ino=2, offset=i, data=b"x\n", lines=1, read_ns=i)
                  if i % 2 else HttpEvent(time_ns=i, pid=1, tid=1, comm="x", fd=3,
                                          direction="server", method="GET", path="/")
                  for i in range(n)]
        batch = Batch(events=events, source="pipeline", acks=[(0, n)])
        pieces = []
        assert codec.encode_in_pieces(batch, lambda: pieces.append(1)) == codec.encode(batch)
        assert len(pieces) == (0 if n <= CODEC_PIECE else -(-n // CODEC_PIECE))


def test_stdout_writes_a_large_batch_in_pieces_every_byte(tmp_path, monkeypatch):
    import os

    from outputs import stdout

    calls = []
    monkeypatch.setattr(stdout, "relax", lambda: calls.append(1))
    path = tmp_path / "out"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)
    try:
        data = bytes(range(256)) * (3 * stdout.WRITE_PIECE // 256 + 7)
        stdout.StdoutSink(fmt="ndjson", host="h", fd=fd).write(data)
    finally:
        os.close(fd)
    assert path.read_bytes() == data
    assert len(calls) == 3  # four writes, the CPU offered between them
