"""Giving memory back when a process goes idle.

A component process keeps what malloc freed for the next messages while it is busy (the
thresholds set in agent/platforms/posix.py: refaulting buffers at every message was half the CPU
per line). Once it has nothing to do, that memory only inflates its RSS: :class:`IdleTrim` hands
it back to the kernel (glibc's ``malloc_trim``) when the process is about to sleep, at most once
per ``interval`` and only if it did some work since the last time, so a process woken every few
milliseconds by a trickle of lines does not trim every time. A no-op where ``malloc_trim`` is
missing (musl, Windows, macOS).
"""

from __future__ import annotations

import ctypes
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any


def _malloc_trim() -> Callable[[int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(None).malloc_trim
    except (AttributeError, OSError):
        return None
    fn.argtypes = [ctypes.c_size_t]
    fn.restype = ctypes.c_int
    return fn


_TRIM = _malloc_trim()


def trim() -> bool:
    """Return the free memory of malloc's heaps to the kernel now; whether any was."""
    return bool(_TRIM(0)) if _TRIM is not None else False


class IdleTrim:
    """Call :meth:`busy` after work and :meth:`idle` before sleeping. ``producers`` (the
    process's queue producers) also give their rings' pages back then, when the consumer has
    read everything (common.shmqueue.Producer.release)."""

    __slots__ = ("interval", "_last", "_worked", "_producers")

    def __init__(self, *, interval: float = 1.0, producers: Sequence[Any] = ()) -> None:
        self.interval = interval
        self._last = 0.0
        self._worked = False
        self._producers = list(producers)

    @property
    def pending(self) -> bool:
        """Work was done since the last trim: a process about to sleep without a deadline
        should wake within ``interval`` to call :meth:`idle` again (its rings may still have
        been being read the last time)."""
        return self._worked

    def busy(self) -> None:
        self._worked = True

    def idle(self) -> None:
        if not self._worked:
            return
        now = time.monotonic()
        if now - self._last >= self.interval:
            self._last = now
            released = all([p.release() for p in self._producers])
            self._worked = not released  # a ring still being read: look again next time
            if _TRIM is not None:
                _TRIM(0)
