"""Windows backend of :mod:`common.shmqueue`: the shared segment and the wake-up signal.

The same two classes as ``common._shm_linux``, with Windows objects:

- ``Segment``: a pagefile-backed file mapping made by ``mmap.mmap(-1, size, tagname=...)`` under
  a random name in the session's ``Local\\`` namespace. Windows has no fork: a child process
  started by the supervisor opens the same mapping by that name (``Segment.attach``). Nothing
  is left behind: the kernel frees a mapping with its last handle, however its holders die.
- ``Signal``: a named manual-reset event (``CreateEventW``): ``set`` = SetEvent, ``clear`` =
  ResetEvent, ``wait`` = WaitForSingleObject. It stays set until cleared (level-triggered), as
  the queue's clear-then-look protocol needs. ``fileno()`` is the event's HANDLE, for
  :func:`wait_any` (WaitForMultipleObjects), not for ``select``, which takes only sockets there.

This module imports anywhere; creating or opening anything off Windows raises
:class:`WindowsOnly`. :func:`object_name` and :func:`timeout_ms` are plain logic (tested on Linux).
"""

from __future__ import annotations

import math
import mmap
import os
import secrets
import sys
from collections.abc import Sequence
from typing import Any

from common.errors import LogShuttleError

INFINITE = 0xFFFF_FFFF
WAIT_FAILED = 0xFFFF_FFFF
_SYNCHRONIZE = 0x0010_0000
_EVENT_MODIFY_STATE = 0x0002
_MAXIMUM_WAIT_OBJECTS = 64


class WindowsOnly(LogShuttleError):
    """A Windows object was asked for on another platform."""


def available() -> bool:
    return sys.platform == "win32"


def object_name(kind: str, *, token: str | None = None, pid: int | None = None) -> str:
    """A name for a mapping or an event, unique to this supervisor and unguessable by others
    (a squatter that created the name first would otherwise be opened instead)."""
    token = token or secrets.token_hex(16)
    return f"Local\\log-shuttle-{os.getpid() if pid is None else pid}-{kind}-{token}"


def timeout_ms(timeout: float | None) -> int:
    """A wait in seconds (None: no limit) as WaitForSingleObject's milliseconds, rounded up, so
    that a wait of 0.3 ms does not become a zero wait that spins until the deadline."""
    if timeout is None:
        return INFINITE
    return min(max(0, math.ceil(timeout * 1000.0)), INFINITE - 1)


_k32: Any = None


def _kernel32() -> Any:
    global _k32
    if _k32 is None:
        if not available():
            raise WindowsOnly(f"Windows events and file mappings do not exist on {sys.platform}")
        import ctypes
        from ctypes import c_uint32, c_void_p, c_wchar_p

        k = ctypes.WinDLL("kernel32", use_last_error=True)
        k.CreateEventW.argtypes = [c_void_p, ctypes.c_int, ctypes.c_int, c_wchar_p]
        k.CreateEventW.restype = c_void_p
        k.OpenEventW.argtypes = [c_uint32, ctypes.c_int, c_wchar_p]
        k.OpenEventW.restype = c_void_p
        for fn in (k.SetEvent, k.ResetEvent, k.CloseHandle):
            fn.argtypes = [c_void_p]
            fn.restype = ctypes.c_int
        k.WaitForSingleObject.argtypes = [c_void_p, c_uint32]
        k.WaitForSingleObject.restype = c_uint32
        k.WaitForMultipleObjects.argtypes = [c_uint32, c_void_p, ctypes.c_int, c_uint32]
        k.WaitForMultipleObjects.restype = c_uint32
        _k32 = k
    return _k32


def _last_error(what: str) -> OSError:
    import ctypes

    code = ctypes.get_last_error()  # type: ignore[attr-defined]  # Windows only
    return OSError(code, f"{what}: {ctypes.FormatError(code)}")  # type: ignore[attr-defined]


class Segment:
    """Shared memory of ``size`` bytes, zero-filled when made, as ``self.mm``; ``tag`` names it."""

    __slots__ = ("mm", "tag", "size")

    def __init__(self, *, name: str, size: int, tag: str | None = None) -> None:
        if not available():
            raise WindowsOnly(f"file mappings: Windows only (this is {sys.platform})")
        self.tag = tag or object_name("shm")
        self.size = size
        self.mm = mmap.mmap(-1, size, tagname=self.tag)  # creates it, or opens it by its name

    @classmethod
    def attach(cls, *, tag: str, size: int) -> Segment:
        """The segment another process made (a child opening its queue)."""
        return cls(name="", size=size, tag=tag)

    def close(self) -> None:
        self.mm.close()


class Signal:
    """A level-triggered wake-up between processes: a named manual-reset event."""

    __slots__ = ("_h", "tag")

    def __init__(self, *, tag: str | None = None, _open: bool = False) -> None:
        k = _kernel32()
        self.tag = tag or object_name("event")
        if _open:
            h = k.OpenEventW(_SYNCHRONIZE | _EVENT_MODIFY_STATE, 0, self.tag)
        else:
            h = k.CreateEventW(None, 1, 0, self.tag)  # manual reset, not set
        if not h:
            raise _last_error("OpenEventW" if _open else "CreateEventW")
        self._h = h

    @classmethod
    def attach(cls, tag: str) -> Signal:
        return cls(tag=tag, _open=True)

    def fileno(self) -> int:
        """The event's HANDLE (for :func:`wait_any`; ``select`` cannot wait on it)."""
        return self._h

    def set(self) -> None:
        _kernel32().SetEvent(self._h)

    def clear(self) -> None:
        _kernel32().ResetEvent(self._h)

    def wait(self, timeout: float | None) -> None:
        if _kernel32().WaitForSingleObject(self._h, timeout_ms(timeout)) == WAIT_FAILED:
            raise _last_error("WaitForSingleObject")

    def close(self) -> None:
        if self._h:
            h, self._h = self._h, 0
            _kernel32().CloseHandle(h)


def wait_any(signals: Sequence[Signal], timeout: float | None) -> None:
    """Sleep until any of ``signals`` is set or ``timeout`` passes: what a select over several
    queues' fileno() does on Linux (at most 64 signals, WaitForMultipleObjects' limit)."""
    if not 0 < len(signals) <= _MAXIMUM_WAIT_OBJECTS:
        raise ValueError(f"wait_any takes 1 to {_MAXIMUM_WAIT_OBJECTS} signals, got {len(signals)}")
    import ctypes

    handles = (ctypes.c_void_p * len(signals))(*(s.fileno() for s in signals))
    if _kernel32().WaitForMultipleObjects(len(signals), handles, 0, timeout_ms(timeout)) == WAIT_FAILED:
        raise _last_error("WaitForMultipleObjects")
