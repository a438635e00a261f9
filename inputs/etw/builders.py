"""Buffers handed to StartTraceW / ControlTraceW / OpenTraceW / EnableTraceEx2, built in memory.

Pure ctypes: nothing here calls Windows, so the tests check every byte on Linux.

- :func:`session_properties`: an EVENT_TRACE_PROPERTIES followed by room for the session's name
  (and, for ControlTraceW, the log file name it writes back), real-time mode, QPC clock.
- :func:`enable_parameters`: an ENABLE_TRACE_PARAMETERS (version 2) with EVENT_FILTER_DESCRIPTORs
  for an event-id filter (EVENT_FILTER_TYPE_EVENT_ID: FilterIn, Count, Events[]) and a process-id
  filter (EVENT_FILTER_TYPE_PID: up to 8 ULONGs). The object keeps every buffer its pointers
  point to alive.
- :func:`consumer_logfile`: an EVENT_TRACE_LOGFILEW for a real-time consumer of EVENT_RECORDs.
"""

from __future__ import annotations

import ctypes
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from inputs.etw.structs import (
    CLIENT_CONTEXT_QPC,
    ENABLE_TRACE_PARAMETERS,
    ENABLE_TRACE_PARAMETERS_VERSION_2,
    EVENT_FILTER_DESCRIPTOR,
    EVENT_FILTER_TYPE_EVENT_ID,
    EVENT_FILTER_TYPE_PID,
    EVENT_TRACE_LOGFILEW,
    EVENT_TRACE_PROPERTIES,
    EVENT_TRACE_REAL_TIME_MODE,
    MAX_EVENT_FILTER_EVENT_ID_COUNT,
    MAX_EVENT_FILTER_PID_COUNT,
    PROCESS_TRACE_MODE_EVENT_RECORD,
    PROCESS_TRACE_MODE_REAL_TIME,
    WNODE_FLAG_TRACED_GUID,
    wstr_buffer,
)

MAX_NAME_CHARS = 1024
"""Room for each name after the properties (ControlTraceW writes the names back)."""


def session_properties(name: str, *, buffer_kb: int = 64, min_buffers: int = 0, max_buffers: int = 0,
                       flush_seconds: int = 1) -> ctypes.Array:
    """An EVENT_TRACE_PROPERTIES for a real-time session named ``name``, in a buffer with room for
    the logger name (at LoggerNameOffset) and a log file name (at LogFileNameOffset). The same
    buffer serves StartTraceW and ControlTraceW (query / stop)."""
    encoded = name.encode("utf-16-le")
    if not name or len(encoded) // 2 >= MAX_NAME_CHARS:
        raise ValueError(f"a session name must have 1 to {MAX_NAME_CHARS - 1} characters")
    base = ctypes.sizeof(EVENT_TRACE_PROPERTIES)
    names = 2 * MAX_NAME_CHARS
    buf = (ctypes.c_uint8 * (base + 2 * names))()
    props = EVENT_TRACE_PROPERTIES.from_buffer(buf)
    props.Wnode.BufferSize = len(buf)
    props.Wnode.Flags = WNODE_FLAG_TRACED_GUID
    props.Wnode.ClientContext = CLIENT_CONTEXT_QPC
    props.BufferSize = buffer_kb
    props.MinimumBuffers = min_buffers
    props.MaximumBuffers = max_buffers
    props.LogFileMode = EVENT_TRACE_REAL_TIME_MODE
    props.FlushTimer = flush_seconds
    props.LoggerNameOffset = base
    props.LogFileNameOffset = base + names
    ctypes.memmove(ctypes.addressof(buf) + base, encoded, len(encoded))  # NUL: already zero
    return buf


def properties_of(buf: ctypes.Array) -> EVENT_TRACE_PROPERTIES:
    """The EVENT_TRACE_PROPERTIES at the start of a buffer made by :func:`session_properties`."""
    return EVENT_TRACE_PROPERTIES.from_buffer(buf)


@dataclass
class EnableParameters:
    """ENABLE_TRACE_PARAMETERS and the buffers it points to (kept alive with it)."""

    params: ENABLE_TRACE_PARAMETERS | None
    descriptors: Any = None
    buffers: list[Any] = field(default_factory=list)


def event_id_filter(event_ids: Sequence[int], *, filter_in: bool = True) -> bytes:
    """EVENT_FILTER_EVENT_ID: BOOLEAN FilterIn, UCHAR Reserved, USHORT Count, USHORT Events[Count]."""
    ids = sorted(set(event_ids))
    if not 0 < len(ids) <= MAX_EVENT_FILTER_EVENT_ID_COUNT:
        raise ValueError(f"an event-id filter takes 1 to {MAX_EVENT_FILTER_EVENT_ID_COUNT} ids, got {len(ids)}")
    if any(not 0 <= i <= 0xFFFF for i in ids):
        raise ValueError("event ids are 0 to 65535")
    return struct.pack(f"<BBH{len(ids)}H", 1 if filter_in else 0, 0, len(ids), *ids)


def pid_filter(pids: Sequence[int]) -> bytes:
    """EVENT_FILTER_TYPE_PID's data: the process ids as ULONGs."""
    unique = sorted(set(pids))
    if not 0 < len(unique) <= MAX_EVENT_FILTER_PID_COUNT:
        raise ValueError(f"a pid filter takes 1 to {MAX_EVENT_FILTER_PID_COUNT} pids, got {len(unique)}")
    if any(not 0 <= p <= 0xFFFF_FFFF for p in unique):
        raise ValueError("pids are 32-bit unsigned integers")
    return struct.pack(f"<{len(unique)}I", *unique)


def enable_parameters(*, event_ids: Sequence[int] = (), filter_in: bool = True,
                      pids: Sequence[int] = ()) -> EnableParameters:
    """What EnableTraceEx2 takes as EnableParameters: None (no parameters) without filters."""
    blobs: list[tuple[int, bytes]] = []
    if event_ids:
        blobs.append((EVENT_FILTER_TYPE_EVENT_ID, event_id_filter(event_ids, filter_in=filter_in)))
    if pids:
        blobs.append((EVENT_FILTER_TYPE_PID, pid_filter(pids)))
    if not blobs:
        return EnableParameters(params=None)
    descriptors = (EVENT_FILTER_DESCRIPTOR * len(blobs))()
    buffers = []
    for d, (kind, blob) in zip(descriptors, blobs):
        data = (ctypes.c_uint8 * len(blob)).from_buffer_copy(blob)
        buffers.append(data)
        d.Ptr = ctypes.addressof(data)
        d.Size = len(blob)
        d.Type = kind
    params = ENABLE_TRACE_PARAMETERS()
    params.Version = ENABLE_TRACE_PARAMETERS_VERSION_2
    params.EnableFilterDesc = ctypes.addressof(descriptors)
    params.FilterDescCount = len(blobs)
    return EnableParameters(params=params, descriptors=descriptors, buffers=buffers)


@dataclass
class ConsumerLogfile:
    """An EVENT_TRACE_LOGFILEW and what it points to: the name buffer and the callback."""

    logfile: EVENT_TRACE_LOGFILEW
    name: Any
    callback: Any


def consumer_logfile(name: str, callback: Any) -> ConsumerLogfile:
    """A real-time, EVENT_RECORD consumer of session ``name``; ``callback`` is an
    EVENT_RECORD_CALLBACK (keep the returned object alive while the trace is open)."""
    name_buf = wstr_buffer(name)
    logfile = EVENT_TRACE_LOGFILEW()
    logfile.LoggerName = ctypes.addressof(name_buf)
    logfile.ProcessTraceMode = PROCESS_TRACE_MODE_REAL_TIME | PROCESS_TRACE_MODE_EVENT_RECORD
    logfile.EventRecordCallback = ctypes.cast(callback, ctypes.c_void_p).value
    return ConsumerLogfile(logfile=logfile, name=name_buf, callback=callback)
