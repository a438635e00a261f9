"""A bounded single-producer, single-consumer queue of byte messages in shared memory.

The agent's processes (forked by the supervisor) pass msgspec-encoded batches to each other
through these queues, one queue per edge of the topology. The queue takes no lock anywhere, so
a process killed at any instant (SIGKILL, OOM killer) can neither deadlock the other side nor
make it read a torn message:

- the producer copies a record (8-byte header, payload, padding to 8 bytes) into the ring, and
  only then publishes it with one aligned 8-byte store of the new ``tail``;
- the consumer copies a message out and only then releases its bytes with one aligned 8-byte
  store of the new ``head`` (``commit``). A consumer killed before it commits leaves the
  message in the ring for the next consumer: delivery is at-least-once, never torn.

Blocking uses two wake-up signals (eventfds on Linux): the producer sets ``data`` after every
publish, the consumer sets ``space`` after every commit. A side that finds the ring empty (or
full) clears its signal, looks at the ring again, and only then sleeps, so no wake-up is lost.

The supervisor calls :meth:`ShmQueue.create` before forking; the producing process calls
:meth:`ShmQueue.producer`, the consuming one :meth:`ShmQueue.consumer`; the supervisor calls
:meth:`ShmQueue.destroy` at exit. At most one live producer and one live consumer per queue: a
replacement is started only after its predecessor has been reaped. ``Producer`` and
``Consumer`` objects are not thread-safe. docs/queue.md explains the design.
"""

from __future__ import annotations

import mmap
import time
from collections.abc import Sequence, Callable
from typing import Protocol

import msgspec

from common import _shm_linux
from common.errors import LogShuttleError
from common.wake import wait_readable

__all__ = [
    "Closed",
    "Consumer",
    "Empty",
    "Full",
    "MessageTooLarge",
    "Producer",
    "QueueCorrupt",
    "QueueError",
    "QueueStats",
    "ShmQueue",
]


class QueueError(LogShuttleError):
    """Base of the errors of shared-memory queues."""


class Full(QueueError):
    """``put`` timed out, or ``put_nowait`` found no room for the message."""


class Empty(QueueError):
    """``get`` timed out, or ``get_nowait`` found no message."""


class Closed(QueueError):
    """Consumer: the producer closed the queue and every message was read. Producer: put after close."""


class MessageTooLarge(QueueError, ValueError):
    """The message can never fit: it is longer than the capacity less the 8-byte record header."""


class QueueCorrupt(QueueError):
    """The consumer found a published record whose header is not what the producer writes."""


class QueueStats(msgspec.Struct, frozen=True, kw_only=True):
    """A snapshot of a queue's counters, for metrics. Counters only grow while the queue exists."""

    capacity: int
    used_bytes: int  # published and not yet committed, record headers and padding included
    messages_put: int
    messages_committed: int
    bytes_put: int  # payload bytes
    bytes_committed: int
    closed: bool


# Layout of the segment, in 8-byte words (read and written through a memoryview cast to 'Q':
# an aligned 8-byte access, single-copy atomic on x86-64 and arm64). Each owner gets its own
# 128-byte block (two 64-byte cache lines; Apple's arm64 cores have 128-byte lines), so the
# producer's stores do not keep invalidating the line the consumer writes, and vice versa.
_MAGIC = 0x3151_4D48_534C_534C  # b"LSLSHMQ1" read as a little-endian u64
_VERSION = 2  # 2: skip records (HOT_BYTES)
_W_MAGIC, _W_VERSION, _W_CAPACITY, _W_DATA = 0, 1, 2, 3  # written once by create()
_W_TAIL, _W_CLOSED, _W_MSGS_PUT, _W_BYTES_PUT = 16, 17, 18, 19  # producer's block (byte 128)
_W_HEAD, _W_MSGS_COMMITTED, _W_BYTES_COMMITTED = 32, 33, 34  # consumer's block (byte 256)
_HEADER_SIZE = 384  # the data area starts here

# A record at ring position p starts with one u64 word: length | stamp << 32, where
# stamp = (p & 0xffffffff) ^ _STAMP. A slot that was never written for position p (zeroes,
# or an older record) fails the check, so the consumer raises instead of returning garbage.
_STAMP = 0x5153_4C4C
_SKIP = 0xFFFF_FFFF
"""The length of a skip record: the producer went back to the ring's start (HOT_BYTES); the
record's position up to the end of its lap holds nothing. No message is that long."""
_RECORD_HEADER = 8
_MIN_CAPACITY = 64
RELEASE_AFTER = 1 << 20
"""The producer gives the ring's pages back to the kernel when it finds the ring empty and has
written at least this much since it last did: a ring of 16 MiB that carries a trickle then holds
about this much memory, not 16 MiB in each process that maps it (a burst that filled it is
given back once drained)."""
RELEASE_INTERVAL = 1.0
"""...and at most once in this many seconds. A stream that the consumer keeps up with empties
the ring after every message: giving its pages back each time made both sides fault them in
again, page by page, for every message (a page fault per 4 KiB written and another per 4 KiB
read), which halved the file input's throughput at full speed (docs/benchmarks.md)."""
HOT_BYTES = RELEASE_AFTER
"""When the producer finds the ring empty with its write position past this, it goes back to
the ring's start (a skip record tells the consumer), so that a stream the consumer keeps up
with stays in the ring's first HOT_BYTES: pages that stay in memory, not every page of the ring
in turn, each faulted in on both sides lap after lap once an empty ring's pages had been given
back. Those pages are the ones a stream keeps when the others go (``release``)."""
_MAX_CAPACITY = 1 << 32  # the record length is a u32


class _Segment(Protocol):
    """Shared memory inherited across fork: ``mm`` is the mapping (zero-filled when made)."""

    mm: mmap.mmap

    def close(self) -> None: ...


class _Signal(Protocol):
    """A wake-up between processes: level-triggered, waitable with a timeout."""

    def fileno(self) -> int: ...
    def set(self) -> None: ...
    def clear(self) -> None: ...
    def wait(self, timeout: float | None) -> None: ...
    def close(self) -> None: ...


def _backend() -> tuple[Callable[..., _Segment], Callable[[], _Signal]]:
    """The OS-specific classes: the one place where the platform's backend is chosen."""
    if _shm_linux.available():
        return _shm_linux.Segment, _shm_linux.Signal
    from common import _shm_windows  # imports anywhere; its classes work on Windows only

    if _shm_windows.available():
        return _shm_windows.Segment, _shm_windows.Signal
    raise QueueError(
        "shared-memory queues need os.memfd_create and os.eventfd (Linux, Python 3.10+) or "
        "Windows; this platform has no backend"
    )


def wait_any(consumers: Sequence[Consumer], *, also: Sequence[object] = (),
             timeout: float | None = None) -> None:
    """Sleep until one of ``consumers`` may have a message, one of ``also`` (objects with a
    ``fileno()``: a stop flag) is readable, or ``timeout`` passes. The one place where a process
    waits on several queues, so that each platform does it its way: Linux polls the eventfds
    (``poll``, so descriptors above 1024 work); Windows waits on the queues' events, looking at
    ``also`` between slices (its select takes sockets only, and its stop flags are sockets)."""
    _segment, signal_cls = _backend()
    if signal_cls is _shm_linux.Signal:
        wait_readable([*consumers, *also], timeout)
        return
    from common import _shm_windows

    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        slice_ = 0.05 if also else timeout
        if deadline is not None:
            slice_ = max(0.0, min(slice_ if slice_ is not None else 1e9, deadline - time.monotonic()))
        _shm_windows.wait_any([c._data for c in consumers], slice_)
        if any(c.pending() for c in consumers):
            return
        if also and wait_readable(also, 0):
            return
        if deadline is not None and time.monotonic() >= deadline:
            return


class ShmQueue:
    """The shared part of a queue: the segment and the two signals, inherited across fork."""

    def __init__(self, *, name: str, capacity: int, segment: _Segment, data: _Signal, space: _Signal) -> None:
        # Private: use ShmQueue.create().
        self.name = name
        self.capacity = capacity
        self._segment = segment
        self._mm = segment.mm
        self._words = memoryview(segment.mm).cast("Q")
        self._data = data
        self._space = space
        self._destroyed = False

    @classmethod
    def create(cls, *, name: str, capacity: int) -> ShmQueue:
        """Make a new, empty queue of ``capacity`` bytes (rounded up to 8). Supervisor only,
        before forking the processes that will use it."""
        if not isinstance(capacity, int) or not _MIN_CAPACITY <= capacity <= _MAX_CAPACITY:
            raise ValueError(f"capacity must be an int from {_MIN_CAPACITY} to {_MAX_CAPACITY} bytes, "
                             f"got {capacity!r}")
        capacity = (capacity + 7) & ~7
        segment_cls, signal_cls = _backend()
        try:
            segment = segment_cls(name=f"shmqueue:{name}", size=_HEADER_SIZE + capacity)
        except OSError as exc:
            raise QueueError(f"cannot create the shared memory of queue {name!r}: {exc}") from exc
        signals: list[_Signal] = []
        try:
            signals.append(signal_cls())
            signals.append(signal_cls())
        except OSError as exc:
            for signal in signals:
                signal.close()
            segment.close()
            raise QueueError(f"cannot create the wake-up signals of queue {name!r}: {exc}") from exc
        queue = cls(name=name, capacity=capacity, segment=segment, data=signals[0], space=signals[1])
        words = queue._words
        words[_W_VERSION] = _VERSION
        words[_W_CAPACITY] = capacity
        words[_W_DATA] = _HEADER_SIZE
        words[_W_MAGIC] = _MAGIC
        return queue

    def producer(self) -> Producer:
        """The producing end, in the process that will put (after fork). It starts at the
        published tail, overwriting whatever a killed predecessor left half-written."""
        self._check()
        return Producer(self)

    def consumer(self) -> Consumer:
        """The consuming end, in the process that will get (after fork). It starts at the
        committed head, so it re-reads what a killed predecessor read but did not commit."""
        self._check()
        return Consumer(self)

    def reopen(self) -> None:
        """Clear the closed flag, before starting a new producer after a graceful close."""
        self._check()
        self._words[_W_CLOSED] = 0

    def stats(self) -> QueueStats:
        self._check()
        words = self._words
        head = words[_W_HEAD]  # before tail: head only grows and never passes tail
        tail = words[_W_TAIL]
        return QueueStats(
            capacity=self.capacity,
            used_bytes=min(tail - head, self.capacity),
            messages_put=words[_W_MSGS_PUT],
            messages_committed=words[_W_MSGS_COMMITTED],
            bytes_put=words[_W_BYTES_PUT],
            bytes_committed=words[_W_BYTES_COMMITTED],
            closed=bool(words[_W_CLOSED]),
        )

    def destroy(self) -> None:
        """Close this process's handles (the supervisor, at exit). Idempotent. Processes that
        inherited the queue keep working; the memory goes when the last of them exits."""
        if self._destroyed:
            return
        self._destroyed = True
        self._words.release()
        self._data.close()
        self._space.close()
        self._segment.close()

    def _check(self) -> None:
        if self._destroyed:
            raise QueueError(f"queue {self.name!r} was destroyed in this process")
        words = self._words
        if words[_W_MAGIC] != _MAGIC or words[_W_VERSION] != _VERSION or words[_W_CAPACITY] != self.capacity:
            raise QueueCorrupt(f"queue {self.name!r}: the segment header is not a version {_VERSION} queue's")

    def __repr__(self) -> str:
        return f"ShmQueue(name={self.name!r}, capacity={self.capacity})"


class Producer:
    """The producing end of a queue. Get it with :meth:`ShmQueue.producer`."""

    __slots__ = ("_queue", "_mm", "_words", "_cap", "_base", "_max", "_tail", "_notify", "_space",
                 "_written", "_release", "_released_at", "_puts")

    def __init__(self, queue: ShmQueue) -> None:
        self._queue = queue
        self._mm = queue._mm
        self._words = queue._words
        self._cap = queue.capacity
        self._base = _HEADER_SIZE
        self._max = queue.capacity - _RECORD_HEADER
        self._tail = queue._words[_W_TAIL]
        self._notify = queue._data.set
        self._space = queue._space
        self._written = 0
        """Bytes written into the ring since its pages were last given back."""
        self._release = getattr(queue._segment, "release", None)
        self._released_at = float("-inf")
        """time.monotonic() of the last release."""
        self._puts = 0
        """Messages put since the last release: none, the ring is idle (all its pages may go)."""

    def put(self, data: bytes | bytearray | memoryview, *, timeout: float | None = None) -> None:
        """Append one message, blocking while there is no room (at most ``timeout`` seconds,
        None: no limit). Raises Full on timeout, Closed after close(), MessageTooLarge."""
        if timeout is not None and timeout < 0:
            raise ValueError("timeout must be None or a non-negative number of seconds")
        words = self._words
        if words[_W_CLOSED]:
            raise Closed(f"queue {self._queue.name!r} is closed")
        if type(data) is not bytes and type(data) is not bytearray:
            data = memoryview(data).cast("B")  # any contiguous buffer, counted in bytes
        n = len(data)
        if n > self._max:
            raise MessageTooLarge(f"a message of {n} bytes never fits in queue {self._queue.name!r} "
                                  f"(at most {self._max} bytes)")
        need = (n + 15) & ~7  # record header + payload padded to 8
        cap = self._cap
        tail = self._tail
        head = words[_W_HEAD]
        base = self._base
        pos = tail % cap
        if head == tail:
            # Empty: every byte of the ring is free, and free bytes are the producer's alone
            # (the consumer reads only below tail).
            if self._written >= RELEASE_AFTER and self._release is not None \
                    and time.monotonic() - self._released_at >= RELEASE_INTERVAL:
                self._give_back(HOT_BYTES)  # a stream's: the pages it goes on writing stay
            if pos > HOT_BYTES and need <= pos:
                # Back to the ring's start: a skip record, then this one at 0 (published
                # together below). The bytes skipped count as used until the consumer has read
                # past them, and what is free from 0 is exactly what was behind ``pos``.
                words[(base + pos) >> 3] = _SKIP | (((tail & 0xFFFF_FFFF) ^ _STAMP) << 32)
                tail += cap - pos
                pos = 0
        if need > cap - (tail - head):
            self._wait_for_space(need, timeout)
        words[(base + pos) >> 3] = n | (((tail & 0xFFFF_FFFF) ^ _STAMP) << 32)
        start = pos + _RECORD_HEADER
        if start == cap:
            start = 0
        end = start + n
        if end <= cap:
            self._mm[base + start:base + end] = data
        else:  # the payload wraps around the end of the ring
            first = cap - start
            view = memoryview(data)
            self._mm[base + start:base + cap] = view[:first]
            self._mm[base:base + n - first] = view[first:]
            view.release()
        tail += need
        self._written += need
        self._puts += 1
        # Local first: should an exception (a signal handler's) come between the two lines, the
        # record is published with the next one instead of being overwritten by it.
        self._tail = tail
        words[_W_TAIL] = tail  # publish: the record is visible from this store on, not before
        words[_W_MSGS_PUT] += 1
        words[_W_BYTES_PUT] += n
        self._notify()

    def release(self) -> bool:
        """When the ring is empty, give the pages the producer wrote since it last did back to
        the kernel (put does it by itself once RELEASE_AFTER bytes went through; a producer
        that goes idle calls this, so that a burst's pages do not stay). The first HOT_BYTES
        stay while messages come (some were put since the last release): a stream writes there
        again at once; once none came, they go too. Whether every page written is given back
        (False: call again later, the ring was being read or its first pages were kept)."""
        if self._written and self._words[_W_HEAD] == self._tail and self._release is not None:
            keep = HOT_BYTES if self._puts else 0
            self._give_back(keep)
            return not keep
        return False

    def _give_back(self, keep: int = 0) -> None:
        """Give back the pages of the ring past its first ``keep`` bytes."""
        if keep < self._cap:
            self._release(self._base + keep, self._base + self._cap)
        self._written = 1 if keep else 0  # what was kept is still there: an idle release takes it
        self._puts = 0
        self._released_at = time.monotonic()

    def put_nowait(self, data: bytes | bytearray | memoryview) -> None:
        """put() without waiting: raises Full when the message does not fit now."""
        self.put(data, timeout=0.0)

    def close(self) -> None:
        """Put no more messages: the consumer reads what is left, then gets Closed. Idempotent."""
        self._words[_W_CLOSED] = 1
        self._notify()

    def fileno(self) -> int:
        """The space signal's fd: readable when room may have appeared."""
        return self._space.fileno()

    def free_bytes(self) -> int:
        """Room left now, in bytes; a message of n bytes takes 8 + n rounded up to 8."""
        return self._cap - (self._tail - self._words[_W_HEAD])

    def _wait_for_space(self, need: int, timeout: float | None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        words, space, cap, tail = self._words, self._space, self._cap, self._tail
        while True:
            # Clear, then look: a commit after the look sets the signal after we cleared it.
            space.clear()
            if need <= cap - (tail - words[_W_HEAD]):
                return
            remaining = None
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise Full(f"queue {self._queue.name!r} has no room for {need} bytes")
            space.wait(remaining)


class Consumer:
    """The consuming end of a queue. Get it with :meth:`ShmQueue.consumer`."""

    __slots__ = ("_queue", "_mm", "_words", "_cap", "_base", "_read", "_head", "_msgs", "_bytes",
                 "_notify", "_data")

    def __init__(self, queue: ShmQueue) -> None:
        self._queue = queue
        self._mm = queue._mm
        self._words = queue._words
        self._cap = queue.capacity
        self._base = _HEADER_SIZE
        self._head = queue._words[_W_HEAD]  # committed position (this consumer is its only writer)
        self._read = self._head  # position of the next message to read
        self._msgs = 0  # read and not committed
        self._bytes = 0
        self._notify = queue._space.set
        self._data = queue._data

    def get(self, *, timeout: float | None = None, commit: bool = True) -> bytes:
        """The next message, waiting at most ``timeout`` seconds (None: no limit). Raises Empty
        on timeout, Closed when the queue is closed and drained. With ``commit`` (the default)
        its bytes, and those of every message read before it, go back to the producer at once;
        with ``commit=False`` they stay in the ring until :meth:`commit` (commit before holding
        a ring's worth: the producer cannot reuse uncommitted bytes, so a get that waits for
        more would wait for itself)."""
        if timeout is not None and timeout < 0:
            raise ValueError("timeout must be None or a non-negative number of seconds")
        words = self._words
        pos = self._read
        tail = words[_W_TAIL]
        cap, base = self._cap, self._base
        while True:
            if pos == tail:
                tail = self._wait_for_data(timeout)
            off = pos % cap
            header = words[(base + off) >> 3]
            n = header & 0xFFFF_FFFF
            if n != _SKIP or header >> 32 != (pos & 0xFFFF_FFFF) ^ _STAMP:
                break
            # The producer went back to the ring's start: the next record is at the next lap.
            pos += cap - off
            if pos > tail:
                break  # not published that far: corrupt (below)
            self._read = pos
        need = (n + 15) & ~7
        if header >> 32 != (pos & 0xFFFF_FFFF) ^ _STAMP or need > tail - pos:
            raise QueueCorrupt(f"queue {self._queue.name!r}: no valid record at published position {pos} "
                               f"(header {header:#018x}, tail {tail})")
        start = off + _RECORD_HEADER
        if start == cap:
            start = 0
        end = start + n
        if end <= cap:
            message = self._mm[base + start:base + end]
        else:  # the payload wraps around the end of the ring
            message = self._mm[base + start:base + cap] + self._mm[base:base + end - cap]
        self._read = pos + need
        self._msgs += 1
        self._bytes += n
        if commit:
            self.commit()
        return message

    def get_nowait(self, *, commit: bool = True) -> bytes:
        """get() without waiting: raises Empty (having cleared the data signal, so a select loop
        on fileno() sleeps until the next put) or Closed."""
        return self.get(timeout=0.0, commit=commit)

    def commit(self) -> None:
        """Release every message read so far to the producer."""
        pos = self._read
        if pos != self._head:
            words = self._words
            self._head = pos  # local first: rewind() must never go back past the shared head
            words[_W_HEAD] = pos  # the messages were copied out before this store
            words[_W_MSGS_COMMITTED] += self._msgs
            words[_W_BYTES_COMMITTED] += self._bytes
            self._msgs = self._bytes = 0
            self._notify()

    def rewind(self) -> None:
        """Forget the reads not committed: the next get starts again at the committed head."""
        self._read = self._head
        self._msgs = self._bytes = 0

    def fileno(self) -> int:
        """The data signal's fd: readable when a message may have been published (or the queue
        closed). After get_nowait() raised Empty it is not readable until the next put."""
        return self._data.fileno()

    def pending(self) -> int:
        """Bytes published and not yet read by this consumer (record headers included)."""
        return self._words[_W_TAIL] - self._read

    def _wait_for_data(self, timeout: float | None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        words, data, pos = self._words, self._data, self._read
        while True:
            # Clear, then look: a publish after the look sets the signal after we cleared it.
            data.clear()
            tail = words[_W_TAIL]
            if tail != pos:
                return tail
            if words[_W_CLOSED]:
                # The producer stores its last tail before the flag: look once more.
                tail = words[_W_TAIL]
                if tail != pos:
                    return tail
                raise Closed(f"queue {self._queue.name!r} is closed and drained")
            remaining = None
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise Empty(f"queue {self._queue.name!r} is empty")
            data.wait(remaining)
