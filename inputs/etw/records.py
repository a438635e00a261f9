"""From one EVENT_RECORD (on ProcessTrace's thread) to one Event, and on to the runner.

:class:`RecordHandler` is what the EVENT_RECORD_CALLBACK calls. It dispatches on the provider:

- Microsoft-Windows-Kernel-Process, ids 1 / 2 / 15 -> ``kernel_process`` (fixed layouts by
  version) -> ProcessEvent;
- the real-time lost-event notices ({6a399ae0-...}, RT_LostEvent / RT_LostBuffer / RT_LostFile)
  -> counted, and reported as LossEvents by the runner;
- any other provider -> TDH schema (cached per provider, id, version) -> EtwEvent.

It never raises: a payload that does not decode is counted (``decode_errors``) and skipped. The
events go into :class:`Pending`, a bounded hand-off to the runner's thread: ProcessTrace must not
wait on the shared-memory queue (a stalled consumer makes the session drop whole buffers), so a
full hand-off drops the event and counts it instead, like the eBPF input's ring buffer.
"""

from __future__ import annotations

import ctypes
import logging
import threading
from dataclasses import dataclass, fields

from common.events import EtwEvent, Event
from inputs.etw import kernel_process
from inputs.etw.errors import PayloadError
from inputs.etw.structs import (
    EVENT_HEADER_EXT_TYPE_EVENT_SCHEMA_TL,
    EVENT_HEADER_EXTENDED_DATA_ITEM,
    EVENT_HEADER_FLAG_32_BIT_HEADER,
    EVENT_HEADER_FLAG_CLASSIC_HEADER,
    EVENT_HEADER_FLAG_STRING_ONLY,
    EVENT_HEADER_FLAG_TRACE_MESSAGE,
    EVENT_RECORD,
    filetime_to_unix_ns,
    guid_bytes,
    guid_text,
)
from inputs.etw.tdh import SchemaCache, decode_fields

LOST_EVENT_PROVIDER = "{6a399ae0-4bc6-4de9-870b-3657f8947e7e}"
LOST_EVENT_BYTES = guid_bytes(LOST_EVENT_PROVIDER)
RT_LOST_EVENT, RT_LOST_BUFFER, RT_LOST_FILE = 32, 33, 34  # its opcodes
_MAX_LOGGED_ERRORS = 10


@dataclass
class EtwInputStats:
    """Counters of the ETW input, one per occurrence."""

    records: int = 0
    process_events: int = 0
    provider_events: int = 0
    decode_errors: int = 0
    """Payloads that did not match their layout or schema (skipped)."""
    schema_misses: int = 0
    schema_failures: int = 0
    skipped: int = 0
    """Records of no interest (other Kernel-Process ids, WPP / classic events)."""
    rt_lost_events: int = 0
    """RT_LostEvent notices: the session dropped events for this consumer."""
    rt_lost_buffers: int = 0
    handoff_dropped: int = 0
    """Events dropped because the runner had not taken the previous ones (hand-off full)."""
    session_events_lost: int = 0
    session_buffers_lost: int = 0
    batches_sent: int = 0

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


class Pending:
    """A bounded hand-off of events from the ProcessTrace thread to the runner."""

    def __init__(self, *, capacity: int) -> None:
        self.capacity = capacity
        self.ready = threading.Event()
        self._lock = threading.Lock()
        self._events: list[Event] = []
        self._dropped = 0

    def add(self, event: Event) -> bool:
        with self._lock:
            if len(self._events) >= self.capacity:
                self._dropped += 1
                return False
            self._events.append(event)
        self.ready.set()
        return True

    def take(self) -> tuple[list[Event], int]:
        """Everything added so far, and how many were dropped since the last take."""
        with self._lock:
            events, self._events = self._events, []
            dropped, self._dropped = self._dropped, 0
            self.ready.clear()
        return events, dropped


class RecordHandler:
    """Called with a pointer to each EVENT_RECORD (``__call__``); see the module docstring."""

    def __init__(self, *, schemas: SchemaCache, pending: Pending, stats: EtwInputStats,
                 log: logging.Logger) -> None:
        self.schemas = schemas
        self.pending = pending
        self.stats = stats
        self.log = log
        self._errors_logged = 0

    def __call__(self, record_ptr: ctypes._Pointer) -> None:
        try:
            event = self.handle(record_ptr)
        except Exception as exc:  # a callback must never raise into ProcessTrace
            self._error(exc)
            return
        if event is not None and not self.pending.add(event):
            self.stats.handoff_dropped += 1

    def handle(self, record_ptr: ctypes._Pointer) -> Event | None:
        """The Event for one record, or None (nothing to send, or counted as an error)."""
        rec: EVENT_RECORD = record_ptr.contents
        header = rec.EventHeader
        desc = header.EventDescriptor
        self.stats.records += 1
        provider = bytes(header.ProviderId)
        payload = ctypes.string_at(rec.UserData, rec.UserDataLength) if rec.UserDataLength else b""
        time_ns = filetime_to_unix_ns(header.TimeStamp)
        if provider == kernel_process.PROVIDER_BYTES:
            if not kernel_process.handles(desc.Id):
                self.stats.skipped += 1
                return None
            try:
                event = kernel_process.process_event(desc.Id, desc.Version, payload, time_ns=time_ns)
            except PayloadError as exc:
                self._error(exc)
                return None
            self.stats.process_events += 1
            return event
        if provider == LOST_EVENT_BYTES:
            if desc.Opcode == RT_LOST_EVENT:
                self.stats.rt_lost_events += 1
            elif desc.Opcode in (RT_LOST_BUFFER, RT_LOST_FILE):
                self.stats.rt_lost_buffers += 1
            return None
        if header.Flags & (EVENT_HEADER_FLAG_TRACE_MESSAGE | EVENT_HEADER_FLAG_CLASSIC_HEADER):
            self.stats.skipped += 1  # WPP and MOF events have no TDH manifest schema to cache by id
            return None
        return self._provider_event(record_ptr, rec, provider, payload, time_ns)

    def _provider_event(self, record_ptr: ctypes._Pointer, rec: EVENT_RECORD, provider: bytes,
                        payload: bytes, time_ns: int) -> Event | None:
        header = rec.EventHeader
        desc = header.EventDescriptor
        if header.Flags & EVENT_HEADER_FLAG_STRING_ONLY:
            fields_: dict = {"message": payload.decode("utf-16-le", "replace").rstrip("\0")}
            schema = None
        else:
            key = (provider, desc.Id, desc.Version, _tracelogging_schema(rec))
            before = self.schemas.failures
            schema = self.schemas.get(key, record_ptr)
            self.stats.schema_misses = self.schemas.misses
            if schema is None:
                if self.schemas.failures != before:
                    self.stats.schema_failures += 1
                    self._error(PayloadError(f"no TDH schema for {guid_text(provider)} event "
                                             f"{desc.Id} v{desc.Version}"))
                else:
                    self.stats.decode_errors += 1
                return None
            pointer_size = 4 if header.Flags & EVENT_HEADER_FLAG_32_BIT_HEADER else 8
            try:
                fields_ = decode_fields(schema, payload, pointer_size=pointer_size)
            except PayloadError as exc:
                self._error(exc)
                return None
        self.stats.provider_events += 1
        return EtwEvent(time_ns=time_ns, provider=guid_text(provider), event_id=desc.Id,
                        version=desc.Version, opcode=desc.Opcode, level=desc.Level,
                        keywords=desc.Keyword, pid=header.ProcessId, tid=header.ThreadId,
                        provider_name=schema.provider_name if schema else "",
                        task=schema.task if schema else "", fields=fields_)

    def _error(self, exc: Exception) -> None:
        self.stats.decode_errors += 1
        if self._errors_logged < _MAX_LOGGED_ERRORS:
            self._errors_logged += 1
            self.log.warning("skipped an event: %s%s", exc,
                             " (further errors are only counted)"
                             if self._errors_logged == _MAX_LOGGED_ERRORS else "")


def _tracelogging_schema(rec: EVENT_RECORD) -> bytes | None:
    """A TraceLogging event's own schema (its metadata), which keys its cache entry: such events
    share ids (often 0) across shapes. None for manifest events."""
    if not rec.ExtendedDataCount or not rec.ExtendedData:
        return None
    items = ctypes.cast(rec.ExtendedData, ctypes.POINTER(EVENT_HEADER_EXTENDED_DATA_ITEM))
    for i in range(rec.ExtendedDataCount):
        item = items[i]
        if item.ExtType == EVENT_HEADER_EXT_TYPE_EVENT_SCHEMA_TL and item.DataPtr:
            return ctypes.string_at(item.DataPtr, item.DataSize)
    return None
