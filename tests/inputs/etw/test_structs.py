"""The ctypes layouts against the documented Windows x64 sizes and offsets."""

from __future__ import annotations

import ctypes

import pytest

from inputs.etw import structs as s


@pytest.mark.parametrize("struct, size", [
    (s.EVENT_TRACE_PROPERTIES, 120), (s.WNODE_HEADER, 48), (s.EVENT_HEADER, 80),
    (s.EVENT_RECORD, 112), (s.EVENT_TRACE_LOGFILEW, 448), (s.TRACE_LOGFILE_HEADER, 280),
    (s.EVENT_TRACE, 88), (s.EVENT_TRACE_HEADER, 48), (s.TIME_ZONE_INFORMATION, 172),
    (s.EVENT_DESCRIPTOR, 16), (s.GUID, 16), (s.TRACE_EVENT_INFO, 112), (s.EVENT_PROPERTY_INFO, 24),
    (s.ENABLE_TRACE_PARAMETERS, 48), (s.EVENT_FILTER_DESCRIPTOR, 16),
    (s.EVENT_HEADER_EXTENDED_DATA_ITEM, 16), (s.TRACE_PROVIDER_INFO, 24),
])
def test_sizes_are_the_documented_x64_ones(struct, size):
    assert ctypes.sizeof(struct) == size


@pytest.mark.parametrize("struct, field, offset", [
    (s.EVENT_TRACE_PROPERTIES, "BufferSize", 48), (s.EVENT_TRACE_PROPERTIES, "LogFileMode", 64),
    (s.EVENT_TRACE_PROPERTIES, "EventsLost", 88), (s.EVENT_TRACE_PROPERTIES, "LogBuffersLost", 96),
    (s.EVENT_TRACE_PROPERTIES, "RealTimeBuffersLost", 100),
    (s.EVENT_TRACE_PROPERTIES, "LoggerThreadId", 104),
    (s.EVENT_TRACE_PROPERTIES, "LogFileNameOffset", 112),
    (s.EVENT_TRACE_PROPERTIES, "LoggerNameOffset", 116),
    (s.WNODE_HEADER, "Guid", 24), (s.WNODE_HEADER, "ClientContext", 40), (s.WNODE_HEADER, "Flags", 44),
    (s.EVENT_HEADER, "ThreadId", 8), (s.EVENT_HEADER, "ProcessId", 12), (s.EVENT_HEADER, "TimeStamp", 16),
    (s.EVENT_HEADER, "ProviderId", 24), (s.EVENT_HEADER, "EventDescriptor", 40),
    (s.EVENT_HEADER, "ActivityId", 64),
    (s.EVENT_RECORD, "BufferContext", 80), (s.EVENT_RECORD, "ExtendedDataCount", 84),
    (s.EVENT_RECORD, "UserDataLength", 86), (s.EVENT_RECORD, "ExtendedData", 88),
    (s.EVENT_RECORD, "UserData", 96), (s.EVENT_RECORD, "UserContext", 104),
    (s.EVENT_TRACE_LOGFILEW, "LoggerName", 8), (s.EVENT_TRACE_LOGFILEW, "ProcessTraceMode", 28),
    (s.EVENT_TRACE_LOGFILEW, "CurrentEvent", 32), (s.EVENT_TRACE_LOGFILEW, "LogfileHeader", 120),
    (s.EVENT_TRACE_LOGFILEW, "BufferCallback", 400), (s.EVENT_TRACE_LOGFILEW, "EventsLost", 416),
    (s.EVENT_TRACE_LOGFILEW, "EventRecordCallback", 424),
    (s.EVENT_TRACE_LOGFILEW, "IsKernelTrace", 432), (s.EVENT_TRACE_LOGFILEW, "Context", 440),
    (s.TRACE_LOGFILE_HEADER, "LoggerName", 56), (s.TRACE_LOGFILE_HEADER, "TimeZone", 72),
    (s.TRACE_LOGFILE_HEADER, "BootTime", 248), (s.TRACE_LOGFILE_HEADER, "BuffersLost", 276),
    (s.EVENT_DESCRIPTOR, "Level", 4), (s.EVENT_DESCRIPTOR, "Task", 6), (s.EVENT_DESCRIPTOR, "Keyword", 8),
    (s.ENABLE_TRACE_PARAMETERS, "SourceId", 12), (s.ENABLE_TRACE_PARAMETERS, "EnableFilterDesc", 32),
    (s.ENABLE_TRACE_PARAMETERS, "FilterDescCount", 40),
    (s.TRACE_EVENT_INFO, "ProviderNameOffset", 52), (s.TRACE_EVENT_INFO, "TaskNameOffset", 68),
    (s.TRACE_EVENT_INFO, "PropertyCount", 100), (s.TRACE_EVENT_INFO, "TopLevelPropertyCount", 104),
    (s.EVENT_PROPERTY_INFO, "count", 16), (s.EVENT_PROPERTY_INFO, "length", 18),
])
def test_key_offsets(struct, field, offset):
    assert getattr(struct, field).offset == offset


def test_guid_text_round_trips_through_the_windows_memory_layout():
    g = s.GUID.from_text("{22FB2CD6-0E7B-422B-A0C7-2FAD1FD0E716}")
    assert (g.Data1, g.Data2, g.Data3) == (0x22FB2CD6, 0x0E7B, 0x422B)
    assert bytes(g.Data4) == bytes.fromhex("a0c72fad1fd0e716")
    assert g.text() == "{22fb2cd6-0e7b-422b-a0c7-2fad1fd0e716}"
    with pytest.raises(ValueError):
        s.GUID.from_text("Microsoft-Windows-Kernel-Process")


def test_filetime_conversion():
    assert s.filetime_to_unix_ns(s.FILETIME_UNIX_EPOCH + 15) == 1500
    assert s.filetime_to_unix_ns(0) == 0


def test_wide_strings_are_utf16_even_where_wchar_is_not():
    buf = s.wstr_buffer("Ab€")
    assert bytes(buf) == "Ab€".encode("utf-16-le") + b"\0\0"
