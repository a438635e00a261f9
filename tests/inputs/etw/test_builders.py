"""The buffers handed to StartTraceW / ControlTraceW / EnableTraceEx2 / OpenTraceW, byte by byte."""

from __future__ import annotations

import ctypes
import struct

import pytest

from inputs.etw import builders
from inputs.etw import structs as s


def test_session_properties_layout():
    buf = builders.session_properties("log-shuttle", buffer_kb=128, flush_seconds=1)
    raw = bytes(buf)
    assert len(raw) == 120 + 2 * 2 * builders.MAX_NAME_CHARS
    (wnode_size,) = struct.unpack_from("<I", raw, 0)
    assert wnode_size == len(raw)
    client_context, flags = struct.unpack_from("<II", raw, 40)
    assert client_context == s.CLIENT_CONTEXT_QPC and flags == s.WNODE_FLAG_TRACED_GUID
    buffer_kb, = struct.unpack_from("<I", raw, 48)
    log_mode, flush = struct.unpack_from("<II", raw, 64)
    assert (buffer_kb, log_mode, flush) == (128, s.EVENT_TRACE_REAL_TIME_MODE, 1)
    logfile_off, logger_off = struct.unpack_from("<II", raw, 112)
    assert logger_off == 120 and logfile_off == 120 + 2 * builders.MAX_NAME_CHARS
    name = raw[logger_off:logger_off + 24]
    assert name == "log-shuttle".encode("utf-16-le") + b"\0\0"


@pytest.mark.parametrize("name", ["", "x" * builders.MAX_NAME_CHARS])
def test_session_names_are_bounded(name):
    with pytest.raises(ValueError):
        builders.session_properties(name)


def test_no_filters_means_no_parameters():
    assert builders.enable_parameters().params is None


def test_event_id_and_pid_filters():
    p = builders.enable_parameters(event_ids=[5, 1, 5], pids=[300, 200], filter_in=True)
    params = p.params
    assert params.Version == s.ENABLE_TRACE_PARAMETERS_VERSION_2 and params.FilterDescCount == 2
    descs = (s.EVENT_FILTER_DESCRIPTOR * 2).from_address(params.EnableFilterDesc)
    assert [d.Type for d in descs] == [s.EVENT_FILTER_TYPE_EVENT_ID, s.EVENT_FILTER_TYPE_PID]
    ids = ctypes.string_at(descs[0].Ptr, descs[0].Size)
    assert ids == struct.pack("<BBH2H", 1, 0, 2, 1, 5)  # FilterIn, Reserved, Count, sorted unique ids
    pids = ctypes.string_at(descs[1].Ptr, descs[1].Size)
    assert pids == struct.pack("<2I", 200, 300)


def test_filter_out_flag():
    assert builders.event_id_filter([7], filter_in=False)[0] == 0


@pytest.mark.parametrize("kwargs", [
    {"event_ids": list(range(65))}, {"event_ids": [70000]}, {"pids": list(range(1, 10))},
    {"pids": [-1]},
])
def test_filter_limits(kwargs):
    with pytest.raises(ValueError):
        builders.enable_parameters(**kwargs)


def test_consumer_logfile_is_real_time_event_record_mode():
    callback = s.EVENT_RECORD_CALLBACK(lambda _r: None)
    c = builders.consumer_logfile("sess", callback)
    lf = c.logfile
    assert lf.ProcessTraceMode == s.PROCESS_TRACE_MODE_REAL_TIME | s.PROCESS_TRACE_MODE_EVENT_RECORD
    assert ctypes.string_at(lf.LoggerName, 10) == "sess".encode("utf-16-le") + b"\0\0"
    assert lf.EventRecordCallback == ctypes.cast(callback, ctypes.c_void_p).value
