"""A self-pipe that wakes a process blocked in select/poll: from a signal handler (through
``signal.set_wakeup_fd``) or from another thread (a watchdog observer)."""

from __future__ import annotations

import os


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
