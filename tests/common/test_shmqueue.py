"""Tests of common.shmqueue with real processes (os.fork) and real shared memory.

The crash tests SIGKILL producers and consumers at random instants and check that the other
side never sees a torn message (every message carries a SHA-1 of its body), never hangs (every
wait has a generous bound, so a bug fails the test instead of hanging it) and loses nothing.
An autouse fixture fails any test that leaves a child process, a file descriptor or a named
shared-memory segment behind.
"""

from __future__ import annotations

import hashlib
import os
import random
import selectors
import signal
import struct
import sys
import time
import traceback
from collections.abc import Callable, Iterator

import pytest

from common import shmqueue
from common.errors import LogShuttleError
from common.shmqueue import (
    Closed,
    Consumer,
    Empty,
    Full,
    MessageTooLarge,
    QueueCorrupt,
    QueueError,
    ShmQueue,
)

pytestmark = [
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the queue has a Linux backend only"),
    pytest.mark.timeout(120),
]

GENEROUS = 20.0  # bound of every wait that should end much sooner: a bug fails, it does not hang
KIB = 1024
MIB = 1024 * KIB


def _need(n: int) -> int:
    """Bytes a message of n bytes takes in the ring: 8-byte header, payload padded to 8."""
    return 8 + (n + 7) // 8 * 8


# --- fixtures: leak checks, queues, children ---------------------------------------------------


def _live_children() -> list[int]:
    pids = []
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/children") as f:
                pids.extend(int(p) for p in f.read().split())
        except FileNotFoundError:
            pass
    return pids


def _open_files() -> list[str]:
    """What this process's descriptors point at (not their numbers: gRPC, once another test has
    loaded it, replaces its eventfd at every fork, under another number)."""
    targets = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            targets.append(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            pass  # the descriptor listdir itself used
    return sorted(targets)


@pytest.fixture(autouse=True)
def no_leaks() -> Iterator[None]:
    """Fail a test that leaves a child process, an fd, or a queue segment in /dev/shm."""
    shm_before = set(os.listdir("/dev/shm"))
    fds_before = _open_files()
    yield
    left = _live_children()
    for pid in left:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    assert not left, f"child processes left running: {left}"
    # Other programs may use /dev/shm meanwhile: only our names count.
    new_shm = [n for n in set(os.listdir("/dev/shm")) - shm_before if "shmqueue" in n or "test-q" in n]
    assert not new_shm, f"segments left in /dev/shm: {new_shm}"
    assert _open_files() == fds_before, "file descriptors leaked"


@pytest.fixture
def make_queue() -> Iterator[Callable[..., ShmQueue]]:
    made: list[ShmQueue] = []

    def make(*, capacity: int) -> ShmQueue:
        queue = ShmQueue.create(name=f"test-q{len(made)}", capacity=capacity)
        made.append(queue)
        return queue

    yield make
    for queue in made:
        queue.destroy()


class Children:
    """Forked children of one test; whatever is still running at teardown is killed and reaped."""

    def __init__(self) -> None:
        self.pids: set[int] = set()

    def spawn(self, target: Callable[[], object]) -> int:
        pid = os.fork()
        if pid == 0:  # the child: never return into pytest
            code = 70
            try:
                target()
                code = 0
            except BaseException:  # noqa: BLE001 - report whatever killed the child
                traceback.print_exc()
            finally:
                sys.stderr.flush()
                os._exit(code)
        self.pids.add(pid)
        return pid

    def reap(self, pid: int, *, timeout: float = GENEROUS) -> int:
        """Wait for the child to exit (SIGKILL it if it does not in time); its wait status."""
        pidfd = os.pidfd_open(pid)
        try:
            sel = selectors.DefaultSelector()
            try:
                sel.register(pidfd, selectors.EVENT_READ)
                exited = bool(sel.select(timeout))
            finally:
                sel.close()
        finally:
            os.close(pidfd)
        if not exited:
            os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        self.pids.discard(pid)
        assert exited, f"child {pid} did not exit within {timeout} s"
        return status

    def kill(self, pid: int) -> None:
        os.kill(pid, signal.SIGKILL)
        status = self.reap(pid)
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, (
            f"child {pid} had already exited with status {status:#x} before the kill"
        )

    def join(self, pid: int) -> None:
        """Wait for the child and require a clean exit."""
        status = self.reap(pid)
        assert os.waitstatus_to_exitcode(status) == 0, f"child {pid} failed (status {status:#x}); see stderr"

    def cleanup(self) -> None:
        for pid in list(self.pids):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            os.waitpid(pid, 0)
        self.pids.clear()


@pytest.fixture
def children() -> Iterator[Children]:
    kids = Children()
    yield kids
    kids.cleanup()


def _timed(fn: Callable[[], object]) -> float:
    t0 = time.monotonic()
    fn()
    return time.monotonic() - t0


# --- messages that can be checked: sequence number and hash of the body ------------------------

_MSG = struct.Struct("<QQQ20s")  # seq, incarnation, body length, SHA-1 of the body


class Bodies:
    """Random message bodies made once per test (in the parent, so children inherit them), each
    in a buffer with room for the header, so a producer only packs the header before a put."""

    def __init__(self, rng: random.Random, *, count: int, low: int, high: int) -> None:
        pool = rng.randbytes(high * 2)
        self.items: list[tuple[bytearray, int, bytes]] = []
        for _ in range(count):
            size = rng.randint(low, high)
            offset = rng.randrange(len(pool) - size)
            body = pool[offset:offset + size]
            buf = bytearray(_MSG.size + size)
            buf[_MSG.size:] = body
            self.items.append((buf, size, hashlib.sha1(body).digest()))

    def message(self, index: int, *, seq: int, incarnation: int) -> bytearray:
        buf, size, digest = self.items[index % len(self.items)]
        _MSG.pack_into(buf, 0, seq, incarnation, size, digest)
        return buf


def _check(message: bytes) -> tuple[int, int]:
    """(seq, incarnation) of an intact message; AssertionError for a torn or garbled one."""
    assert len(message) >= _MSG.size, f"message of {len(message)} bytes is too short"
    seq, incarnation, size, digest = _MSG.unpack_from(message)
    assert len(message) == _MSG.size + size, f"seq {seq}: length {len(message)} != {_MSG.size + size}"
    assert hashlib.sha1(memoryview(message)[_MSG.size:]).digest() == digest, f"seq {seq}: torn message"
    return seq, incarnation


def _produce(queue: ShmQueue, bodies: Bodies, *, incarnation: int, count: int | None, seed: int,
             close: bool = False) -> None:
    """Child: put messages 0, 1, 2, ... (forever when count is None)."""
    rng = random.Random(seed)
    producer = queue.producer()
    seq = 0
    while count is None or seq < count:
        producer.put(bodies.message(rng.randrange(1 << 30), seq=seq, incarnation=incarnation), timeout=GENEROUS)
        seq += 1
    if close:
        producer.close()


# Reports from a consumer child to the test, through a pipe: b"D" + seq when a message was
# delivered (checked, before its commit), b"C" + seq after a commit up to and including seq.
_REPORT = struct.Struct("<cQ")


def _consume_and_report(queue: ShmQueue, report_fd: int, *, seed: int, limit: int | None = None) -> None:
    """Child: get messages in batches of 1-4 with commit=False, report each, commit each batch.
    After ``limit`` messages, stop reading and sleep (until killed)."""
    rng = random.Random(seed)
    consumer = queue.consumer()
    got = 0
    while limit is None or got < limit:
        seq = -1
        for _ in range(rng.randint(1, 4)):
            seq, _ = _check(consumer.get(timeout=GENEROUS, commit=False))
            os.write(report_fd, _REPORT.pack(b"D", seq))
            got += 1
            if limit is not None and got >= limit:
                break
        if rng.random() < 0.8:  # sometimes leave the batch uncommitted until the next one
            consumer.commit()
            os.write(report_fd, _REPORT.pack(b"C", seq))
    time.sleep(GENEROUS * 3)


class Reports:
    """The reading end of the report pipe."""

    def __init__(self) -> None:
        self.read_fd, self.write_fd = os.pipe()
        os.set_blocking(self.read_fd, False)
        self._buf = b""

    def read(self, *, timeout: float = 0.0) -> list[tuple[bytes, int]]:
        """The reports available now, waiting up to ``timeout`` for at least one byte."""
        if timeout > 0:
            sel = selectors.DefaultSelector()
            try:
                sel.register(self.read_fd, selectors.EVENT_READ)
                sel.select(timeout)
            finally:
                sel.close()
        while True:
            try:
                chunk = os.read(self.read_fd, 65536)
            except BlockingIOError:
                break
            self._buf += chunk
        whole = len(self._buf) // _REPORT.size * _REPORT.size
        out = [_REPORT.unpack_from(self._buf, i) for i in range(0, whole, _REPORT.size)]
        self._buf = self._buf[whole:]
        return out

    def close(self) -> None:
        os.close(self.read_fd)
        os.close(self.write_fd)


class Ledger:
    """What consumers reported, across consumer incarnations: checks at-least-once delivery in
    order, with duplicates only of messages a killed consumer had not committed."""

    def __init__(self) -> None:
        self.last_delivered = -1  # highest seq delivered so far
        self.last_committed = -1  # highest seq reported committed (the truth may be a little higher)
        self.delivered = 0
        self.duplicates = 0

    def incarnation(self, reports: list[tuple[bytes, int]]) -> None:
        """Check the reports of one consumer, from its start to its death."""
        previous = None
        for kind, seq in reports:
            if kind == b"C":
                assert seq == previous, f"commit report {seq} after delivery {previous}"
                self.last_committed = max(self.last_committed, seq)
                continue
            if previous is None:  # first message of this consumer: resumes at the committed head
                assert self.last_committed + 1 <= seq <= self.last_delivered + 1, (
                    f"restart at seq {seq}: committed up to {self.last_committed}, "
                    f"delivered up to {self.last_delivered}"
                )
                self.duplicates += self.last_delivered + 1 - seq
            else:
                assert seq == previous + 1, f"seq {seq} after {previous}: not contiguous"
            previous = seq
            self.delivered += 1
            self.last_delivered = max(self.last_delivered, seq)


# --- behaviour ---------------------------------------------------------------------------------


def test_errors_are_project_errors() -> None:
    for cls in (Full, Empty, Closed, MessageTooLarge, QueueCorrupt):
        assert issubclass(cls, QueueError)
    assert issubclass(QueueError, LogShuttleError)
    assert issubclass(MessageTooLarge, ValueError)


def test_order_and_content_across_processes(make_queue, children) -> None:
    queue = make_queue(capacity=8 * KIB)  # small: the producer wraps and blocks many times
    count, seed = 3000, 1234

    def produce() -> None:
        rng = random.Random(seed)
        producer = queue.producer()
        for _ in range(count):
            producer.put(rng.randbytes(rng.randint(0, 3000)), timeout=GENEROUS)

    pid = children.spawn(produce)
    consumer = queue.consumer()
    rng = random.Random(seed)
    for i in range(count):
        assert consumer.get(timeout=GENEROUS) == rng.randbytes(rng.randint(0, 3000)), f"message {i}"
    children.join(pid)
    stats = queue.stats()
    assert (stats.messages_put, stats.messages_committed, stats.used_bytes) == (count, count, 0)
    assert stats.bytes_put == stats.bytes_committed


def test_put_nowait_full_exactly_when_bytes_do_not_fit(make_queue) -> None:
    capacity = 1024
    queue = make_queue(capacity=capacity)
    producer, consumer = queue.producer(), queue.consumer()
    used = 0
    sizes = [0, 1, 7, 8, 9, 100, 255, 3]
    for n in sizes * 10:
        assert producer.free_bytes() == capacity - used
        if _need(n) <= capacity - used:
            producer.put_nowait(bytes([n % 256]) * n)
            used += _need(n)
        else:
            with pytest.raises(Full):
                producer.put_nowait(b"x" * n)
    rest = capacity - used
    assert rest < _need(255)
    if rest >= 8:
        producer.put_nowait(b"r" * (rest - 8))  # fills the ring to the last byte
    assert producer.free_bytes() == 0
    assert queue.stats().used_bytes == capacity
    with pytest.raises(Full):
        producer.put_nowait(b"")  # even an empty message needs its 8-byte header
    assert consumer.get_nowait() == b""  # sizes[0]: frees 8 bytes
    producer.put_nowait(b"")
    with pytest.raises(Full):
        producer.put_nowait(b"")
    assert consumer.get_nowait() == b"\x01"  # frees 16 bytes
    with pytest.raises(Full):
        producer.put_nowait(b"x" * 9)  # needs 24
    producer.put_nowait(b"x" * 8)


def test_records_wrap_around_the_end(make_queue) -> None:
    capacity = 256
    queue = make_queue(capacity=capacity)
    producer, consumer = queue.producer(), queue.consumer()
    rng = random.Random(7)
    tail = 0
    in_flight: list[bytes] = []
    straddled = header_last = 0
    for _ in range(5000):
        n = rng.randint(0, capacity - 8)
        if _need(n) <= producer.free_bytes() and len(in_flight) < 3:
            message = rng.randbytes(n)
            pos = tail % capacity
            straddled += pos + 8 < capacity < pos + 8 + n
            header_last += pos + 8 == capacity
            producer.put_nowait(message)
            in_flight.append(message)
            tail += _need(n)
        else:
            assert consumer.get_nowait() == in_flight.pop(0)
    for message in in_flight:
        assert consumer.get_nowait() == message
    assert straddled > 100 and header_last > 5  # both wrap cases were exercised


def test_message_too_large(make_queue) -> None:
    queue = make_queue(capacity=1024)
    producer, consumer = queue.producer(), queue.consumer()
    with pytest.raises(MessageTooLarge):
        producer.put_nowait(b"x" * 1017)
    with pytest.raises(ValueError):
        producer.put(b"x" * 5000, timeout=GENEROUS)  # raises at once, does not wait
    producer.put_nowait(b"a")
    with pytest.raises(Full):  # would fit an empty ring: Full, not MessageTooLarge
        producer.put_nowait(b"x" * 1016)
    consumer.get_nowait()
    producer.put_nowait(b"y" * 1016)
    assert consumer.get_nowait() == b"y" * 1016


def test_capacity_is_rounded_up_and_checked() -> None:
    queue = ShmQueue.create(name="test-q-round", capacity=1001)
    try:
        assert queue.capacity == 1008 == queue.stats().capacity
        assert queue.producer().free_bytes() == 1008
    finally:
        queue.destroy()
    for bad in (0, 10, -1, 1 << 40):
        with pytest.raises(ValueError):
            ShmQueue.create(name="test-q-bad", capacity=bad)


def test_blocking_put_unblocks_when_another_process_gets(make_queue, children) -> None:
    queue = make_queue(capacity=1024)
    producer = queue.producer()
    while producer.free_bytes() >= _need(100):
        producer.put_nowait(b"f" * 100)
    pid = children.spawn(lambda: (time.sleep(0.2), queue.consumer().get(timeout=GENEROUS)))
    elapsed = _timed(lambda: producer.put(b"n" * 100, timeout=GENEROUS))
    assert 0.1 <= elapsed < GENEROUS / 2
    children.join(pid)


def test_blocking_get_unblocks_when_another_process_puts(make_queue, children) -> None:
    queue = make_queue(capacity=1024)
    consumer = queue.consumer()
    pid = children.spawn(lambda: (time.sleep(0.2), queue.producer().put(b"hello")))
    result: list[bytes] = []
    elapsed = _timed(lambda: result.append(consumer.get(timeout=GENEROUS)))
    assert result == [b"hello"]
    assert 0.1 <= elapsed < GENEROUS / 2
    children.join(pid)


def test_timeouts_raise_full_and_empty(make_queue) -> None:
    queue = make_queue(capacity=256)
    producer, consumer = queue.producer(), queue.consumer()
    with pytest.raises(Empty):
        consumer.get_nowait()
    start = time.monotonic()
    with pytest.raises(Empty):
        consumer.get(timeout=0.3)
    assert 0.3 <= time.monotonic() - start < 5
    producer.put_nowait(b"x" * 200)
    with pytest.raises(Full):
        producer.put_nowait(b"x" * 200)
    start = time.monotonic()
    with pytest.raises(Full):
        producer.put(b"x" * 200, timeout=0.3)
    assert 0.3 <= time.monotonic() - start < 5
    with pytest.raises(ValueError):
        consumer.get(timeout=-1)
    with pytest.raises(ValueError):
        producer.put(b"", timeout=-1)


def test_close_then_drain_then_closed(make_queue, children) -> None:
    queue = make_queue(capacity=4096)

    def produce() -> None:
        producer = queue.producer()
        for i in range(5):
            producer.put(b"m%d" % i)
        time.sleep(0.2)  # the consumer is waiting in get() when the close comes
        producer.close()

    pid = children.spawn(produce)
    consumer = queue.consumer()
    assert [consumer.get(timeout=GENEROUS) for _ in range(5)] == [b"m%d" % i for i in range(5)]
    start = time.monotonic()
    with pytest.raises(Closed):
        consumer.get(timeout=GENEROUS)
    assert time.monotonic() - start < GENEROUS / 2  # woken by close, not by the timeout
    with pytest.raises(Closed):
        consumer.get_nowait()
    with pytest.raises(Closed):
        consumer.get()  # no timeout: raises at once rather than blocking forever
    assert queue.stats().closed
    children.join(pid)


def test_closed_queue_is_drained_before_closed(make_queue) -> None:
    queue = make_queue(capacity=4096)
    producer, consumer = queue.producer(), queue.consumer()
    producer.put(b"a")
    producer.put(b"b")
    producer.close()
    assert consumer.get() == b"a"
    assert consumer.get(commit=False) == b"b"
    with pytest.raises(Closed):
        consumer.get()
    consumer.rewind()  # an uncommitted message is still there after close
    assert consumer.get() == b"b"


def test_put_after_close_raises_closed_and_reopen(make_queue) -> None:
    queue = make_queue(capacity=4096)
    producer, consumer = queue.producer(), queue.consumer()
    producer.close()
    producer.close()  # idempotent
    with pytest.raises(Closed):
        producer.put(b"late")
    with pytest.raises(Closed):
        producer.put_nowait(b"late")
    with pytest.raises(Closed):
        consumer.get_nowait()
    queue.reopen()
    assert not queue.stats().closed
    successor = queue.producer()
    successor.put(b"again")
    assert consumer.get_nowait() == b"again"
    with pytest.raises(Empty):
        consumer.get_nowait()


def test_commit_false_and_rewind_redeliver(make_queue) -> None:
    queue = make_queue(capacity=4096)
    producer, consumer = queue.producer(), queue.consumer()
    for i in range(4):
        producer.put(b"%d" % i)
    used = queue.stats().used_bytes
    assert [consumer.get(commit=False) for _ in range(3)] == [b"0", b"1", b"2"]
    assert queue.stats().used_bytes == used  # nothing released yet
    assert consumer.pending() == _need(1)
    consumer.rewind()
    assert consumer.pending() == used
    assert consumer.get(commit=False) == b"0"
    assert consumer.get(commit=False) == b"1"
    consumer.commit()
    assert queue.stats().messages_committed == 2
    assert consumer.get(commit=False) == b"2"
    # A consumer that dies now (here: is dropped) did not commit b"2": its successor gets it.
    successor = queue.consumer()
    assert successor.get() == b"2"
    assert successor.get() == b"3"  # commit=True commits everything read so far
    assert queue.stats().used_bytes == 0


def test_select_on_consumer_fileno_wakes_on_put_and_does_not_spin(make_queue, children) -> None:
    queue = make_queue(capacity=4096)
    consumer = queue.consumer()
    sel = selectors.DefaultSelector()
    try:
        sel.register(consumer.fileno(), selectors.EVENT_READ)
        with pytest.raises(Empty):
            consumer.get_nowait()
        assert sel.select(timeout=0) == []
        pid = children.spawn(lambda: (time.sleep(0.2), queue.producer().put(b"ping")))
        assert sel.select(timeout=GENEROUS), "not woken by the put"
        assert consumer.get_nowait() == b"ping"
        children.join(pid)
        with pytest.raises(Empty):
            consumer.get_nowait()
        start = time.monotonic()
        assert sel.select(timeout=0.2) == []  # drained by the Empty: the loop sleeps
        assert time.monotonic() - start >= 0.19
    finally:
        sel.close()


def test_select_on_producer_fileno_wakes_on_commit(make_queue, children) -> None:
    queue = make_queue(capacity=256)
    producer = queue.producer()
    producer.put_nowait(b"x" * 200)
    with pytest.raises(Full):
        producer.put_nowait(b"x" * 200)
    sel = selectors.DefaultSelector()
    try:
        sel.register(producer.fileno(), selectors.EVENT_READ)
        assert sel.select(timeout=0) == []
        pid = children.spawn(lambda: (time.sleep(0.1), queue.consumer().get()))
        assert sel.select(timeout=GENEROUS), "not woken by the commit"
        children.join(pid)
        producer.put_nowait(b"x" * 200)
    finally:
        sel.close()


def test_stats_count_messages_and_bytes(make_queue) -> None:
    queue = make_queue(capacity=4096)
    producer, consumer = queue.producer(), queue.consumer()
    for n in (0, 10, 100):
        producer.put(b"z" * n)
    consumer.get()
    consumer.get(commit=False)
    stats = queue.stats()
    assert (stats.messages_put, stats.bytes_put) == (3, 110)
    assert (stats.messages_committed, stats.bytes_committed) == (1, 0)
    assert stats.used_bytes == _need(10) + _need(100)
    assert not stats.closed


def test_consumer_detects_unpublished_or_garbled_records(make_queue) -> None:
    # Reaches into the header words to fake what the protocol never does.
    queue = make_queue(capacity=1024)
    consumer = queue.consumer()
    queue._words[shmqueue._W_TAIL] = 64  # "published" 64 bytes nobody wrote
    with pytest.raises(QueueCorrupt):
        consumer.get_nowait()
    queue._words[shmqueue._W_TAIL] = 0
    producer = queue.producer()
    producer.put(b"fine")
    queue._words[shmqueue._HEADER_SIZE // 8] ^= 1 << 40  # flip a bit of the stamp
    with pytest.raises(QueueCorrupt):
        consumer.get_nowait()


def test_buffers_of_any_item_size(make_queue) -> None:
    queue = make_queue(capacity=1024)
    producer, consumer = queue.producer(), queue.consumer()
    producer.put(bytearray(b"ba"))
    producer.put(memoryview(b"0123456789")[2:5])
    producer.put(memoryview(bytes(range(16))).cast("I"))  # counted in bytes, not items
    assert consumer.get() == b"ba"
    assert consumer.get() == b"234"
    assert consumer.get() == bytes(range(16))


def test_no_named_segment_and_destroy_is_idempotent() -> None:
    fds = sorted(os.listdir("/proc/self/fd"))
    queue = ShmQueue.create(name="test-q-anon", capacity=4096)
    with open("/proc/self/maps") as f:
        assert "/memfd:shmqueue:test-q-anon (deleted)" in f.read()
    assert not [n for n in os.listdir("/dev/shm") if "test-q-anon" in n]
    queue.destroy()
    queue.destroy()
    assert sorted(os.listdir("/proc/self/fd")) == fds
    with pytest.raises(QueueError):
        queue.producer()


def test_unsupported_platform_raises_a_clear_error(monkeypatch) -> None:
    monkeypatch.delattr(os, "eventfd")
    with pytest.raises(QueueError, match="memfd_create and os.eventfd"):
        ShmQueue.create(name="test-q-nope", capacity=4096)


# --- crash tests -------------------------------------------------------------------------------


@pytest.fixture
def rng() -> random.Random:
    seed = int.from_bytes(os.urandom(4), "little")
    print(f"random seed {seed}")  # shown when the test fails
    return random.Random(seed)


def test_producer_killed_mid_put(make_queue, children, rng) -> None:
    """SIGKILL producers at random instants; a new producer resumes on the same queue each time."""
    queue = make_queue(capacity=4 * MIB)
    bodies = Bodies(rng, count=16, low=100 * KIB, high=MIB)
    consumer = queue.consumer()
    rounds, total, half_written = 100, 0, 0
    for incarnation in range(rounds):
        pid = children.spawn(lambda: _produce(queue, bodies, incarnation=incarnation, count=None, seed=incarnation))
        kept: list[bytes] = []  # checked after the kill, so the consumer keeps up with the producer
        kept.append(consumer.get(timeout=GENEROUS))  # the producer is running
        deadline = time.monotonic() + rng.uniform(0.0, 0.02)
        drain_meanwhile = rng.random() < 0.8  # otherwise the producer fills the ring and blocks
        while drain_meanwhile and (remaining := deadline - time.monotonic()) > 0:
            try:
                kept.append(consumer.get(timeout=remaining))
            except Empty:
                break
        if not drain_meanwhile:
            time.sleep(max(0.0, deadline - time.monotonic()))
        children.kill(pid)
        tail = queue._words[shmqueue._W_TAIL]
        header = queue._words[(shmqueue._HEADER_SIZE + tail % queue.capacity) // 8]
        half_written += header >> 32 == (tail & 0xFFFF_FFFF) ^ shmqueue._STAMP  # died inside put()
        while True:  # what the dead producer published is all there and intact
            try:
                kept.append(consumer.get_nowait())
            except Empty:
                break
        for expected, message in enumerate(kept):
            assert _check(message) == (expected, incarnation)
        total += len(kept)
    stats = queue.stats()
    print(f"{rounds} producers killed, {total} messages, {half_written} killed with a record half-written")
    assert stats.used_bytes == 0 and stats.messages_committed == total


def test_consumer_killed_mid_get(make_queue, children, rng) -> None:
    """SIGKILL consumers at random instants while the producer keeps putting; each new consumer
    resumes at the committed head."""
    queue = make_queue(capacity=4 * MIB)
    bodies = Bodies(rng, count=16, low=100 * KIB, high=MIB)
    reports = Reports()
    ledger = Ledger()
    try:
        producer_pid = children.spawn(lambda: _produce(queue, bodies, incarnation=0, count=None, seed=1))
        for incarnation in range(70):
            pid = children.spawn(lambda: _consume_and_report(queue, reports.write_fd, seed=incarnation))
            got = reports.read(timeout=GENEROUS)  # the consumer is running
            assert got, "the consumer reported nothing"
            deadline = time.monotonic() + rng.uniform(0.0, 0.02)
            while (remaining := deadline - time.monotonic()) > 0:
                got += reports.read(timeout=remaining)
            children.kill(pid)
            ledger.incarnation(got + reports.read())
        children.kill(producer_pid)
    finally:
        reports.close()
    print(f"{ledger.delivered} deliveries, {ledger.duplicates} redelivered after a kill")
    assert ledger.last_delivered > 70


def test_blocked_producer_freed_by_a_new_consumer(make_queue, children, rng) -> None:
    """The producer waits on a full queue; its consumer is killed; a new consumer frees it."""
    count, size = 12, 300 * KIB
    bodies = Bodies(rng, count=4, low=size, high=size)
    need = _need(_MSG.size + size)
    for round_ in range(20):
        queue = make_queue(capacity=MIB)  # three messages fit, the fourth does not
        reports = Reports()
        try:
            ledger = Ledger()
            producer_pid = children.spawn(
                lambda: _produce(queue, bodies, incarnation=round_, count=count, seed=round_, close=True)
            )
            limit = rng.randint(0, 3)  # a consumer holding 4 uncommitted would wait for itself
            consumer_pid = children.spawn(
                lambda: _consume_and_report(queue, reports.write_fd, seed=round_, limit=limit)
            )
            got: list[tuple[bytes, int]] = []
            deadline = time.monotonic() + GENEROUS
            while sum(kind == b"D" for kind, _ in got) < limit or queue.stats().used_bytes < 3 * need:
                assert time.monotonic() < deadline, f"the queue never filled up: {queue.stats()} {got} {limit}"
                got += reports.read(timeout=0.005)
            time.sleep(rng.uniform(0.0, 0.01))  # the producer is blocked in put()
            assert queue.stats().messages_put < count
            children.kill(consumer_pid)
            ledger.incarnation(got + reports.read())
            consumer = queue.consumer()
            mine: list[tuple[bytes, int]] = []
            while True:
                try:
                    seq, incarnation = _check(consumer.get(timeout=GENEROUS))
                except Closed:
                    break
                assert incarnation == round_
                mine.append((b"D", seq))
            ledger.incarnation(mine)
            assert ledger.last_delivered == count - 1
            children.join(producer_pid)
        finally:
            reports.close()


def test_consumer_can_wait_for_several_queues(make_queue, children) -> None:
    """One process waiting on several queues with a selector (the pipeline's use)."""
    queues = [make_queue(capacity=4096) for _ in range(3)]
    consumers: list[Consumer] = [q.consumer() for q in queues]

    def produce() -> None:
        for i in (2, 0, 1):
            time.sleep(0.05)
            producer = queues[i].producer()
            producer.put(b"from %d" % i)
            producer.close()

    pid = children.spawn(produce)
    sel = selectors.DefaultSelector()
    got: list[bytes] = []
    try:
        for consumer in consumers:
            sel.register(consumer.fileno(), selectors.EVENT_READ, consumer)
        open_ = len(consumers)
        deadline = time.monotonic() + GENEROUS
        while open_:
            assert time.monotonic() < deadline
            for key, _ in sel.select(timeout=GENEROUS):
                consumer = key.data
                while True:
                    try:
                        got.append(consumer.get_nowait())
                    except Empty:
                        break
                    except Closed:
                        sel.unregister(consumer.fileno())
                        open_ -= 1
                        break
    finally:
        sel.close()
    children.join(pid)
    assert got == [b"from 2", b"from 0", b"from 1"]


def _ring_rss_kib(name: str) -> int:
    """Resident KiB of this process's mapping of the queue called ``name``."""
    rss, inside = 0, False
    with open("/proc/self/smaps") as f:
        for ln in f:
            if "-" in ln.split(" ", 1)[0] and len(ln.split()) >= 5:
                inside = f"shmqueue:{name}" in ln
            elif inside and ln.startswith("Rss:"):
                rss += int(ln.split()[1])
    return rss


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/smaps (Linux)")
def test_an_empty_ring_gives_its_pages_back(make_queue, children, monkeypatch) -> None:
    """A burst fills the ring's pages; once drained, the producer's next put frees them (in
    every process that maps the ring), and what crosses the ring after is still exact."""
    monkeypatch.setattr(shmqueue, "RELEASE_INTERVAL", 0.0)  # every time it empties
    capacity = 8 * shmqueue.RELEASE_AFTER
    queue = make_queue(capacity=capacity)
    producer, consumer = queue.producer(), queue.consumer()
    rng = random.Random(7)
    bodies = [rng.randbytes(64 * KIB) for _ in range(100)]
    for body in bodies:  # a burst: 6.4 MiB in the ring at once
        producer.put(body, timeout=GENEROUS)
    for body in bodies:
        assert consumer.get(timeout=GENEROUS) == body
    assert _ring_rss_kib(queue.name) >= 6 * 1024
    producer.put(b"x" * 100)  # the ring was empty: its pages go first, but a stream's first ones
    assert _ring_rss_kib(queue.name) <= shmqueue.HOT_BYTES // KIB + 64
    assert consumer.get(timeout=GENEROUS) == b"x" * 100
    assert not producer.release()  # messages came since the last release: the first pages stay
    assert _ring_rss_kib(queue.name) <= shmqueue.HOT_BYTES // KIB + 64
    assert producer.release()  # none came since: idle, every page goes
    assert _ring_rss_kib(queue.name) <= 64
    # Across processes and many releases, every message is what was put (the child, forked,
    # releases as often as this process does).
    count = 400

    def produce() -> None:
        p = queue.producer()
        r = random.Random(11)
        for _ in range(count):
            p.put(r.randbytes(r.randint(1, 200 * KIB)), timeout=GENEROUS)

    pid = children.spawn(produce)
    r = random.Random(11)
    for i in range(count):
        assert consumer.get(timeout=GENEROUS) == r.randbytes(r.randint(1, 200 * KIB)), f"message {i}"
    children.join(pid)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="pages are given back on Linux")
def test_a_stream_the_consumer_keeps_up_with_gives_pages_back_at_most_once_a_second(make_queue):
    """The ring empties after every message of a stream the consumer keeps up with: its pages go
    back at most once per RELEASE_INTERVAL, not each time (each release made both sides fault
    every page in again: half the file input's full speed)."""
    queue = make_queue(capacity=4 * shmqueue.RELEASE_AFTER)
    producer, consumer = queue.producer(), queue.consumer()
    calls = []
    release = producer._release
    producer._release = lambda *a: (calls.append(time.monotonic()), release(*a))[1]
    body = b"y" * (256 * KIB)
    t0 = time.monotonic()
    for _ in range(400):  # 100 MiB, each message read before the next is put
        producer.put(body, timeout=GENEROUS)
        assert consumer.get(timeout=GENEROUS) == body
    elapsed = time.monotonic() - t0
    assert 1 <= len(calls) <= 1 + elapsed / shmqueue.RELEASE_INTERVAL, (len(calls), elapsed)
    assert all(b - a >= shmqueue.RELEASE_INTERVAL for a, b in zip(calls, calls[1:]))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/smaps (Linux)")
def test_a_stream_the_consumer_keeps_up_with_stays_in_the_ring_s_first_pages(make_queue, children):
    """Found empty past HOT_BYTES, the producer goes back to the ring's start (a skip record):
    a stream of 40 MiB through a 16 MiB ring touches about HOT_BYTES of it, not all of it, in a
    consumer of another process too, and every message is what was put."""
    queue = make_queue(capacity=16 * MIB)
    count, size = 400, 100 * KIB

    def consume() -> None:
        c = queue.consumer()
        r = random.Random(5)
        for i in range(count):
            assert c.get(timeout=GENEROUS) == r.randbytes(size), f"message {i}"
            os.write(ack_w, b".")

    ack_r, ack_w = os.pipe()
    try:
        pid = children.spawn(consume)
        producer = queue.producer()
        r = random.Random(5)
        for _ in range(count):
            producer.put(r.randbytes(size), timeout=GENEROUS)
            assert os.read(ack_r, 1) == b"."  # read before the next is put: empty each time
        children.join(pid)
    finally:
        os.close(ack_r)
        os.close(ack_w)
    stats = queue.stats()
    assert stats.messages_committed == count and stats.used_bytes == 0
    assert stats.bytes_put == count * size  # 40 MiB: past the ring's end twice and more
    assert _ring_rss_kib(queue.name) <= (shmqueue.HOT_BYTES + 2 * size) // KIB + 64


def test_a_skip_record_is_read_past_and_redelivered_after_rewind(make_queue) -> None:
    """The skip record between a message near the ring's end and the next at its start: read
    past with or without commit; a rewind reads the same messages again; positions line up."""
    queue = make_queue(capacity=4 * MIB)
    producer, consumer = queue.producer(), queue.consumer()
    first = b"a" * (shmqueue.HOT_BYTES + 1000)  # the write position ends up past HOT_BYTES
    producer.put(first)
    assert consumer.get() == first  # committed: the ring is empty
    producer.put(b"b" * 10)  # goes back to the start (a skip record before it)
    producer.put(b"c" * 20)
    assert producer._tail == queue.capacity + _need(10) + _need(20)  # the next lap's start
    got = [consumer.get(commit=False), consumer.get(commit=False)]
    assert got == [b"b" * 10, b"c" * 20]
    consumer.rewind()
    assert [consumer.get(commit=False), consumer.get(commit=False)] == got
    with pytest.raises(Empty):
        consumer.get_nowait()
    consumer.commit()
    stats = queue.stats()
    assert stats.used_bytes == 0 and stats.messages_committed == 3
    assert stats.bytes_put == len(first) + 30 == stats.bytes_committed
