"""Linux backend of :mod:`common.shmqueue`: the shared segment and the wake-up signal.

The segment is an anonymous ``memfd`` mapped ``MAP_SHARED``: it never has a name in
``/dev/shm``, children made by ``os.fork()`` inherit the mapping, and the kernel frees the memory
when the last mapping goes, whichever process dies last and however it dies. The signal is a
non-blocking ``eventfd``: ``set()`` adds one to its counter, ``clear()`` reads it back to zero,
and it is readable (so ``poll``/``select`` wake) while the counter is not zero.

These are the only two OS-specific pieces of the queue. A Windows backend would provide the
same two classes (a file mapping made with an inheritable handle, an auto-reset event). This
module imports on any platform; the classes need ``os.memfd_create`` and ``os.eventfd``
(Linux 3.17+, Python 3.10+), which :func:`available` checks.
"""

from __future__ import annotations

import math
import mmap
import os
import select
import sys

_ONE = (1).to_bytes(8, sys.byteorder)


def available() -> bool:
    """True when this platform has what the classes below need."""
    return hasattr(os, "memfd_create") and hasattr(os, "eventfd")


class Segment:
    """Shared memory of ``size`` bytes, zero-filled, as ``self.mm`` (an ``mmap.mmap``)."""

    __slots__ = ("mm",)

    def __init__(self, *, name: str, size: int) -> None:
        # CLOEXEC only matters for exec(); fork() keeps the mapping, which is all children use.
        fd = os.memfd_create(name, os.MFD_CLOEXEC)
        try:
            os.ftruncate(fd, size)
            self.mm = mmap.mmap(fd, size, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ | mmap.PROT_WRITE)
        finally:
            # The mapping (and the private duplicate of the fd that mmap keeps) hold the memory.
            os.close(fd)

    def release(self, start: int, end: int) -> None:
        """Give the pages of bytes ``start`` to ``end`` back to the kernel (``start`` rounded up,
        ``end`` down, to pages): they read as zeroes after, and take no memory until written.
        MADV_REMOVE frees the shared memory itself (not just this process's view of it) and
        unmaps it from every process that maps it."""
        page = mmap.PAGESIZE
        start = -(-start // page) * page
        end = end // page * page
        if end > start:
            self.mm.madvise(mmap.MADV_REMOVE, start, end - start)

    def close(self) -> None:
        self.mm.close()


class Signal:
    """A level-triggered wake-up between processes; ``fileno()`` works with select/poll."""

    __slots__ = ("_fd", "_poll")

    def __init__(self) -> None:
        self._fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        # poll(), not select(): an eventfd may well be numbered above FD_SETSIZE in a busy agent.
        self._poll = select.poll()
        self._poll.register(self._fd, select.POLLIN)

    def fileno(self) -> int:
        return self._fd

    def set(self) -> None:
        try:
            os.write(self._fd, _ONE)
        except BlockingIOError:
            pass  # the counter is at its maximum: it is certainly not zero, so waiters wake

    def clear(self) -> None:
        try:
            os.read(self._fd, 8)
        except BlockingIOError:
            pass  # already zero

    def wait(self, timeout: float | None) -> None:
        """Sleep until the signal is set or ``timeout`` seconds pass (None: no limit)."""
        # Round up, so a wait of 0.3 ms does not become poll(0) and spin until the deadline.
        self._poll.poll(None if timeout is None else math.ceil(timeout * 1000.0))

    def close(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)
