"""Waking a process that sleeps on descriptors: :class:`Wakeup`, a self-pipe set from a signal
handler (through ``signal.set_wakeup_fd``) or from another thread, and
:func:`wait_readable`, the sleep itself, with ``poll`` so that descriptors numbered above
FD_SETSIZE (1024; a busy agent has them) work."""

from __future__ import annotations

import math
import os
import select
from collections.abc import Sequence
from typing import Protocol


class HasFileno(Protocol):
    def fileno(self) -> int: ...


def wait_readable(waitables: Sequence[int | HasFileno], timeout: float | None) -> list[int]:
    """Sleep until one of these descriptors (or objects with ``fileno()``) is readable, or
    ``timeout`` seconds pass (None: no limit); the descriptors that are ready (also on hang-up
    or error: a read will say which). ``poll``, not ``select``, whose sets stop at 1024; where
    there is no poll (Windows, whose select takes sockets and any number of them) ``select``."""
    fds = [w if isinstance(w, int) else w.fileno() for w in waitables]
    if not hasattr(select, "poll"):
        return select.select(fds, [], [], timeout)[0]
    poller = select.poll()
    for fd in fds:
        poller.register(fd, select.POLLIN)
    # Round up, so that a wait of 0.3 ms does not become poll(0) and spin until the deadline.
    ms = None if timeout is None else math.ceil(max(0.0, timeout) * 1000.0)
    return [fd for fd, _events in poller.poll(ms)]


class Wakeup:
    """A non-blocking pipe: ``set`` writes a byte, ``fileno`` is readable until ``clear``."""

    def __init__(self) -> None:
        self._r, self._w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    def fileno(self) -> int:
        return self._r

    def write_fd(self) -> int:
        return self._w

    def set(self) -> None:
        try:
            os.write(self._w, b"\0")
        except BlockingIOError:
            pass  # the pipe is full: it is readable already

    def clear(self) -> None:
        try:
            while os.read(self._r, 4096):
                pass
        except BlockingIOError:
            pass

    def close(self) -> None:
        for fd in (self._r, self._w):
            try:
                os.close(fd)
            except OSError:
                pass
