"""Giving memory back when a process goes idle, and the code of libraries it is done with.

A component process keeps what malloc freed for the next messages while it is busy (the
thresholds set in agent/platforms/posix.py: refaulting buffers at every message was half the CPU
per line). Once it has nothing to do, that memory only inflates its RSS: :class:`IdleTrim` hands
it back to the kernel (glibc's ``malloc_trim``) when the process is about to sleep, at most once
per ``interval`` and only if it did some work since the last time, so a process woken every few
milliseconds by a trickle of lines does not trim every time. A no-op where ``malloc_trim`` is
missing (musl, Windows, macOS).

:func:`release_code` unmaps the pages of libraries' code that a process ran once and will not
run again (the eBPF input's clang and LLVM, which BCC runs in it to compile the programs).
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


MADV_DONTNEED = 4
"""Linux's madvise(2) advice (the same value on every architecture)."""


def _madvise() -> Callable[[int, int, int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(None, use_errno=True).madvise
    except (AttributeError, OSError):
        return None
    fn.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    fn.restype = ctypes.c_int
    return fn


_MADVISE = _madvise()


def release_code(names: Sequence[str], *, smaps: str = "/proc/self/smaps") -> int:
    """Unmap the resident pages of the mapped files whose name starts with one of ``names``
    (``libLLVM``: /usr/lib/.../libLLVM-14.so.1), in the read-only mappings that hold nothing of
    their own; the bytes that were resident in them.

    Such a mapping (code, read-only data) holds only the file's pages: ``MADV_DONTNEED`` drops
    the process's page table entries to them, and they stay in the page cache as any file's,
    for the kernel to reclaim when memory is short. Should the process read them again, it
    faults the same bytes back in: nothing changes but its resident memory. Left alone: a
    mapping with a page the process wrote (``Anonymous``: relocated data, made read-only after
    the loader wrote it), since ``MADV_DONTNEED`` would throw the write away; and a writable
    mapping, where a write between the look and the drop would be lost. 0 where there is no
    ``madvise`` or no smaps (not Linux)."""
    if _MADVISE is None or not names:
        return 0
    prefixes = tuple(names)
    try:
        with open(smaps, encoding="ascii", errors="replace") as f:
            text = f.read()
    except OSError:
        return 0
    mappings: list[list[int]] = []  # [start, end, rss kB, anonymous kB], read-only, of names
    mapping: list[int] | None = None
    for line in text.splitlines():
        head = line.split(maxsplit=5)  # a path may hold spaces
        if head and not head[0].endswith(":") and "-" in head[0]:  # a mapping's first line
            mapping = None
            if len(head) >= 6 and "w" not in head[1] \
                    and head[5].rsplit("/", 1)[-1].startswith(prefixes):
                start, _, end = head[0].partition("-")
                mapping = [int(start, 16), int(end, 16), 0, -1]  # -1: no Anonymous line read
                mappings.append(mapping)
        elif mapping is not None and head and head[0] == "Rss:":
            mapping[2] = int(head[1])
        elif mapping is not None and head and head[0] == "Anonymous:":
            mapping[3] = int(head[1])
    released = 0
    for start, end, rss, anonymous in mappings:
        if rss and anonymous == 0 and _MADVISE(start, end - start, MADV_DONTNEED) == 0:
            released += rss * 1024
    return released


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
