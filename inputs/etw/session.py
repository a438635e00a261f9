"""One real-time ETW session and its consumer: start, enable, consume, query, stop.

Lifecycle (every step through an :class:`~inputs.etw.api.EtwApi`)::

    start():  ControlTraceW(STOP) the stale session of the same name (a killed predecessor's:
              sessions outlive their process), StartTraceW, EnableTraceEx2 per provider,
              OpenTraceW (EVENT_RECORD callback), ProcessTrace on its own thread, then
              EnableTraceEx2(CAPTURE_STATE) on Kernel-Process for the rundown of the processes
              already running (after the consumer is open, so that none is missed)
    query():  ControlTraceW(QUERY) -> events lost, real-time / log buffers lost (cumulative)
    stop():   EnableTraceEx2(DISABLE) per provider, ControlTraceW(STOP), CloseTrace (ProcessTrace
              returns once the buffers are delivered), join the thread. Idempotent; every step
              runs even when an earlier one failed.

Windows status codes become :class:`EtwError` here, with the code kept.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

from inputs.etw import builders, kernel_process
from inputs.etw.api import EtwApi
from inputs.etw.errors import EtwError
from inputs.etw.structs import (
    ERROR_ACCESS_DENIED,
    ERROR_CANCELLED,
    ERROR_CTX_CLOSE_PENDING,
    ERROR_SUCCESS,
    ERROR_WMI_INSTANCE_NOT_FOUND,
    EVENT_CONTROL_CODE_CAPTURE_STATE,
    EVENT_CONTROL_CODE_DISABLE_PROVIDER,
    EVENT_CONTROL_CODE_ENABLE_PROVIDER,
    EVENT_RECORD_CALLBACK,
    EVENT_TRACE_CONTROL_QUERY,
    EVENT_TRACE_CONTROL_STOP,
    GUID,
    INVALID_PROCESSTRACE_HANDLE,
)

JOIN_TIMEOUT = 10.0
"""Seconds stop() waits for ProcessTrace's thread after CloseTrace."""


@dataclass(frozen=True)
class ProviderSpec:
    """A provider to enable, with its level, keywords and filters."""

    guid: str
    level: int = 4
    any_keywords: int = 0
    all_keywords: int = 0
    event_ids: tuple[int, ...] = ()
    pids: tuple[int, ...] = ()


@dataclass(frozen=True)
class SessionCounters:
    """Cumulative counters of the session, from a QUERY."""

    events_lost: int = 0
    realtime_buffers_lost: int = 0
    log_buffers_lost: int = 0
    buffers_written: int = 0


@dataclass
class Session:
    """A named real-time session delivering to ``on_record`` (called on ProcessTrace's thread
    with a pointer to each EVENT_RECORD)."""

    api: EtwApi
    name: str
    providers: list[ProviderSpec]
    on_record: object
    rundown: bool = True
    buffer_kb: int = 64
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("log_shuttle"))

    def __post_init__(self) -> None:
        self.handle = 0
        self.trace = INVALID_PROCESSTRACE_HANDLE
        self.thread: threading.Thread | None = None
        self.process_status: int | None = None
        """ProcessTrace's return status once its thread has ended."""
        self._enabled: list[ProviderSpec] = []
        self._callback = EVENT_RECORD_CALLBACK(self.on_record)
        self._logfile: builders.ConsumerLogfile | None = None
        self._keep: list[object] = []
        self._stopped = False

    # --- start ------------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the session and its consumer; on failure, undo what was done and raise EtwError."""
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
        self.stop_stale()
        props = builders.session_properties(self.name, buffer_kb=self.buffer_kb)
        status, handle = self.api.start_trace(self.name, props)
        if status != ERROR_SUCCESS:
            hint = " (run as Administrator or a member of Performance Log Users)" \
                if status == ERROR_ACCESS_DENIED else ""
            raise EtwError(f"StartTrace {self.name!r} failed{hint}", winerror=status)
        self.handle = handle
        for spec in self.providers:
            params = builders.enable_parameters(event_ids=spec.event_ids, pids=spec.pids)
            self._keep.append(params)
            status = self.api.enable_trace(handle, GUID.from_text(spec.guid),
                                           EVENT_CONTROL_CODE_ENABLE_PROVIDER, spec.level,
                                           spec.any_keywords, spec.all_keywords, params.params)
            if status != ERROR_SUCCESS:
                raise EtwError(f"EnableTraceEx2 {spec.guid} failed", winerror=status)
            self._enabled.append(spec)
        self._logfile = builders.consumer_logfile(self.name, self._callback)
        trace = self.api.open_trace(self._logfile.logfile)
        if trace == INVALID_PROCESSTRACE_HANDLE:
            raise EtwError(f"OpenTrace {self.name!r} failed")
        self.trace = trace
        self.thread = threading.Thread(target=self._process, name=f"etw {self.name}", daemon=True)
        self.thread.start()
        if self.rundown and any(p.guid == kernel_process.PROVIDER for p in self._enabled):
            status = self.api.enable_trace(handle, GUID.from_text(kernel_process.PROVIDER),
                                           EVENT_CONTROL_CODE_CAPTURE_STATE, 4,
                                           kernel_process.KEYWORD_PROCESS, 0, None)
            if status != ERROR_SUCCESS:
                self.log.warning("no rundown of running processes: EnableTraceEx2(CAPTURE_STATE) "
                                 "returned %d", status)

    def stop_stale(self) -> bool:
        """Stop a session of this name left by a killed predecessor. True if there was one."""
        props = builders.session_properties(self.name)
        status = self.api.control_trace(0, self.name, props, EVENT_TRACE_CONTROL_STOP)
        if status == ERROR_SUCCESS:
            self.log.info("stopped a stale ETW session %r", self.name)
            return True
        if status != ERROR_WMI_INSTANCE_NOT_FOUND:
            raise EtwError(f"cannot stop the stale session {self.name!r}", winerror=status)
        return False

    def _process(self) -> None:
        self.process_status = self.api.process_trace(self.trace)

    # --- running ----------------------------------------------------------------------------------

    def alive(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    def query(self) -> SessionCounters:
        props = builders.session_properties(self.name)
        status = self.api.control_trace(self.handle, None, props, EVENT_TRACE_CONTROL_QUERY)
        if status != ERROR_SUCCESS:
            raise EtwError(f"ControlTrace(QUERY) {self.name!r} failed", winerror=status)
        p = builders.properties_of(props)
        return SessionCounters(events_lost=p.EventsLost, realtime_buffers_lost=p.RealTimeBuffersLost,
                               log_buffers_lost=p.LogBuffersLost, buffers_written=p.BuffersWritten)

    # --- stop -------------------------------------------------------------------------------------

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        for spec in reversed(self._enabled):
            status = self.api.enable_trace(self.handle, GUID.from_text(spec.guid),
                                           EVENT_CONTROL_CODE_DISABLE_PROVIDER, 0, 0, 0, None)
            if status != ERROR_SUCCESS:
                self.log.warning("disabling %s returned %d", spec.guid, status)
        self._enabled.clear()
        if self.handle:
            props = builders.session_properties(self.name)
            status = self.api.control_trace(self.handle, None, props, EVENT_TRACE_CONTROL_STOP)
            if status not in (ERROR_SUCCESS, ERROR_WMI_INSTANCE_NOT_FOUND):
                self.log.warning("stopping session %r returned %d", self.name, status)
            self.handle = 0
        if self.trace != INVALID_PROCESSTRACE_HANDLE:
            status = self.api.close_trace(self.trace)
            if status not in (ERROR_SUCCESS, ERROR_CTX_CLOSE_PENDING):
                self.log.warning("CloseTrace returned %d", status)
            self.trace = INVALID_PROCESSTRACE_HANDLE
        if self.thread is not None:
            self.thread.join(JOIN_TIMEOUT)
            if self.thread.is_alive():
                self.log.warning("ProcessTrace did not return within %.0fs of CloseTrace", JOIN_TIMEOUT)
            elif self.process_status not in (None, ERROR_SUCCESS, ERROR_CANCELLED):
                self.log.warning("ProcessTrace returned %d", self.process_status)
