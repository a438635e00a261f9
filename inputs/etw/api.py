"""The Windows side: advapi32 and tdh through ctypes, loaded only on Windows.

:func:`load` returns a :class:`WindowsApi` whose methods are the few calls the session makes, with
their argument types set, returning the raw Windows status (``ULONG``) so that the session decides
what an error means. Nothing here is touched at import: ``ctypes.WinDLL`` exists only on Windows,
and :func:`load` raises :class:`EtwUnavailable` anywhere else. The tests replace this object by a
fake with the same methods (the only mocks in the project are of these Windows calls).
"""

from __future__ import annotations

import ctypes
import sys
from ctypes import POINTER, byref, c_uint32, c_uint64, c_void_p
from typing import Any, Protocol

from inputs.etw.errors import EtwError, EtwUnavailable
from inputs.etw.structs import (
    ERROR_INSUFFICIENT_BUFFER,
    ERROR_SUCCESS,
    EVENT_RECORD,
    EVENT_TRACE_LOGFILEW,
    GUID,
)


class EtwApi(Protocol):
    """What the session needs of Windows. Each call returns the status Windows returned."""

    def start_trace(self, name: str, props: ctypes.Array) -> tuple[int, int]: ...
    def control_trace(self, handle: int, name: str | None, props: ctypes.Array, code: int) -> int: ...
    def enable_trace(self, handle: int, provider: GUID, code: int, level: int, any_keyword: int,
                     all_keyword: int, params: Any) -> int: ...
    def open_trace(self, logfile: EVENT_TRACE_LOGFILEW) -> int: ...
    def process_trace(self, trace: int) -> int: ...
    def close_trace(self, trace: int) -> int: ...
    def event_information(self, record: Any) -> bytes: ...
    def enumerate_providers(self) -> bytes: ...


def load() -> WindowsApi:
    """advapi32 and tdh, with prototypes. Raises EtwUnavailable off Windows."""
    if sys.platform != "win32" or not hasattr(ctypes, "WinDLL"):
        raise EtwUnavailable(f"ETW is a Windows facility; this is {sys.platform}")
    try:
        return WindowsApi(ctypes.WinDLL("advapi32", use_last_error=True), ctypes.WinDLL("tdh"))
    except OSError as exc:
        raise EtwUnavailable(f"cannot load advapi32/tdh: {exc}") from exc


class WindowsApi:
    """The real calls. Only ever made by :func:`load`, on Windows."""

    def __init__(self, advapi32: Any, tdh: Any) -> None:
        ulong, handle = c_uint32, c_uint64  # ULONG, TRACEHANDLE
        a = advapi32
        a.StartTraceW.argtypes = [POINTER(handle), c_void_p, c_void_p]
        a.StartTraceW.restype = ulong
        a.ControlTraceW.argtypes = [handle, c_void_p, c_void_p, ulong]
        a.ControlTraceW.restype = ulong
        a.EnableTraceEx2.argtypes = [handle, POINTER(GUID), ulong, ctypes.c_uint8, c_uint64, c_uint64,
                                     ulong, c_void_p]
        a.EnableTraceEx2.restype = ulong
        a.OpenTraceW.argtypes = [POINTER(EVENT_TRACE_LOGFILEW)]
        a.OpenTraceW.restype = handle
        a.ProcessTrace.argtypes = [POINTER(handle), ulong, c_void_p, c_void_p]
        a.ProcessTrace.restype = ulong
        a.CloseTrace.argtypes = [handle]
        a.CloseTrace.restype = ulong
        tdh.TdhGetEventInformation.argtypes = [POINTER(EVENT_RECORD), ulong, c_void_p, c_void_p,
                                               POINTER(ulong)]
        tdh.TdhGetEventInformation.restype = ulong
        tdh.TdhEnumerateProviders.argtypes = [c_void_p, POINTER(ulong)]
        tdh.TdhEnumerateProviders.restype = ulong
        self._a, self._tdh = a, tdh

    def start_trace(self, name: str, props: ctypes.Array) -> tuple[int, int]:
        handle = c_uint64(0)
        status = self._a.StartTraceW(byref(handle), ctypes.c_wchar_p(name), ctypes.addressof(props))
        return status, handle.value

    def control_trace(self, handle: int, name: str | None, props: ctypes.Array, code: int) -> int:
        return self._a.ControlTraceW(handle, None if name is None else ctypes.c_wchar_p(name),
                                     ctypes.addressof(props), code)

    def enable_trace(self, handle: int, provider: GUID, code: int, level: int, any_keyword: int,
                     all_keyword: int, params: Any) -> int:
        return self._a.EnableTraceEx2(handle, byref(provider), code, level, any_keyword, all_keyword,
                                      0, None if params is None else ctypes.addressof(params))

    def open_trace(self, logfile: EVENT_TRACE_LOGFILEW) -> int:
        return self._a.OpenTraceW(byref(logfile))

    def process_trace(self, trace: int) -> int:
        handles = (c_uint64 * 1)(trace)
        return self._a.ProcessTrace(handles, 1, None, None)

    def close_trace(self, trace: int) -> int:
        return self._a.CloseTrace(trace)

    def event_information(self, record: Any) -> bytes:
        size = c_uint32(0)
        status = self._tdh.TdhGetEventInformation(record, 0, None, None, byref(size))
        for _ in range(3):
            if status != ERROR_INSUFFICIENT_BUFFER:
                break
            buf = ctypes.create_string_buffer(size.value)
            status = self._tdh.TdhGetEventInformation(record, 0, None, buf, byref(size))
            if status == ERROR_SUCCESS:
                return buf.raw[:size.value]
        raise EtwError("TdhGetEventInformation failed", winerror=status)

    def enumerate_providers(self) -> bytes:
        size = c_uint32(0)
        status = self._tdh.TdhEnumerateProviders(None, byref(size))
        for _ in range(3):
            if status != ERROR_INSUFFICIENT_BUFFER:
                break
            buf = ctypes.create_string_buffer(size.value)
            status = self._tdh.TdhEnumerateProviders(buf, byref(size))
            if status == ERROR_SUCCESS:
                return buf.raw[:size.value]
        raise EtwError("TdhEnumerateProviders failed", winerror=status)
