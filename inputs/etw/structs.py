"""ctypes layouts of the ETW structures (advapi32 / tdh), with fixed-width field types.

Every field uses a fixed-width ctypes type (``c_uint16``, ``c_uint32``, ``c_uint64``) or a pointer
(``c_void_p``), never ``c_ulong`` / ``c_wchar``: those are 8 and 4 bytes on Linux and 4 and 2 on
Windows, and the layouts must come out the same on both, so that the tests (which run on Linux)
check the sizes and offsets that Windows x64 uses. Strings are handed to Windows as pointers to
buffers this package fills itself (``wstr_buffer``), never as ``c_wchar_p``.

The sizes asserted by the tests are the documented x64 ones: EVENT_TRACE_PROPERTIES 120,
EVENT_HEADER 80, EVENT_RECORD 112, EVENT_TRACE_LOGFILEW 448, TRACE_EVENT_INFO 112 + 24 per
property, ENABLE_TRACE_PARAMETERS 48, EVENT_FILTER_DESCRIPTOR 16.
"""

from __future__ import annotations

import ctypes
import uuid
from ctypes import Structure, c_int32, c_int64, c_uint8, c_uint16, c_uint32, c_uint64, c_void_p

# --- constants (evntrace.h, evntcons.h, evntprov.h, tdh.h, winerror.h) --------------------------

WNODE_FLAG_TRACED_GUID = 0x0002_0000
EVENT_TRACE_REAL_TIME_MODE = 0x0000_0100
PROCESS_TRACE_MODE_REAL_TIME = 0x0000_0100
PROCESS_TRACE_MODE_EVENT_RECORD = 0x1000_0000
CLIENT_CONTEXT_QPC = 1
"""Wnode.ClientContext: QueryPerformanceCounter stamps (ProcessTrace converts them to FILETIME)."""

EVENT_TRACE_CONTROL_QUERY = 0
EVENT_TRACE_CONTROL_STOP = 1

EVENT_CONTROL_CODE_DISABLE_PROVIDER = 0
EVENT_CONTROL_CODE_ENABLE_PROVIDER = 1
EVENT_CONTROL_CODE_CAPTURE_STATE = 2

ENABLE_TRACE_PARAMETERS_VERSION_2 = 2
EVENT_FILTER_TYPE_PID = 0x8000_0004
EVENT_FILTER_TYPE_EVENT_ID = 0x8000_0200
MAX_EVENT_FILTER_PID_COUNT = 8
MAX_EVENT_FILTER_EVENT_ID_COUNT = 64

EVENT_HEADER_FLAG_STRING_ONLY = 0x0004
EVENT_HEADER_FLAG_TRACE_MESSAGE = 0x0008
EVENT_HEADER_FLAG_32_BIT_HEADER = 0x0020
EVENT_HEADER_FLAG_64_BIT_HEADER = 0x0040
EVENT_HEADER_FLAG_CLASSIC_HEADER = 0x0100
EVENT_HEADER_EXT_TYPE_EVENT_SCHEMA_TL = 11
"""Extended data item of a TraceLogging event: its self-described schema."""

INVALID_PROCESSTRACE_HANDLE = 0xFFFF_FFFF_FFFF_FFFF

ERROR_SUCCESS = 0
ERROR_ACCESS_DENIED = 5
ERROR_INVALID_PARAMETER = 87
ERROR_INSUFFICIENT_BUFFER = 122
ERROR_ALREADY_EXISTS = 183
ERROR_MORE_DATA = 234
ERROR_NOT_FOUND = 1168
ERROR_CANCELLED = 1223
ERROR_WMI_INSTANCE_NOT_FOUND = 4201
ERROR_CTX_CLOSE_PENDING = 7007

FILETIME_UNIX_EPOCH = 116_444_736_000_000_000
"""1970-01-01 in FILETIME units (100 ns since 1601-01-01)."""

# --- GUID -----------------------------------------------------------------------------------------


class GUID(Structure):
    _fields_ = [("Data1", c_uint32), ("Data2", c_uint16), ("Data3", c_uint16), ("Data4", c_uint8 * 8)]

    @classmethod
    def from_text(cls, text: str) -> GUID:
        """``{22fb2cd6-0e7b-422b-a0c7-2fad1fd0e716}`` (braces optional) as a GUID; ValueError if not one."""
        return cls.from_buffer_copy(uuid.UUID(text.strip().strip("{}")).bytes_le)

    def text(self) -> str:
        return guid_text(bytes(self))


def guid_text(raw: bytes) -> str:
    """16 bytes as Windows lays a GUID out in memory -> ``{lower-case-text}``."""
    return "{" + str(uuid.UUID(bytes_le=bytes(raw))) + "}"


def guid_bytes(text: str) -> bytes:
    """The in-memory form of a GUID given as text (ValueError if it is not one)."""
    return uuid.UUID(text.strip().strip("{}")).bytes_le


def is_guid(text: str) -> bool:
    try:
        guid_bytes(text)
    except ValueError:
        return False
    return True


def filetime_to_unix_ns(ft: int) -> int:
    """FILETIME (100 ns since 1601, UTC) -> ns since the Unix epoch; 0 stays 0 (unknown)."""
    return (ft - FILETIME_UNIX_EPOCH) * 100 if ft else 0


# --- session control ------------------------------------------------------------------------------


class WNODE_HEADER(Structure):
    _fields_ = [
        ("BufferSize", c_uint32),
        ("ProviderId", c_uint32),
        ("HistoricalContext", c_uint64),  # union with {Version, Linkage}
        ("TimeStamp", c_int64),  # union with CountLost / KernelHandle
        ("Guid", GUID),
        ("ClientContext", c_uint32),
        ("Flags", c_uint32),
    ]


class EVENT_TRACE_PROPERTIES(Structure):
    _fields_ = [
        ("Wnode", WNODE_HEADER),
        ("BufferSize", c_uint32),
        ("MinimumBuffers", c_uint32),
        ("MaximumBuffers", c_uint32),
        ("MaximumFileSize", c_uint32),
        ("LogFileMode", c_uint32),
        ("FlushTimer", c_uint32),
        ("EnableFlags", c_uint32),
        ("AgeLimit", c_int32),  # union with FlushThreshold
        ("NumberOfBuffers", c_uint32),
        ("FreeBuffers", c_uint32),
        ("EventsLost", c_uint32),
        ("BuffersWritten", c_uint32),
        ("LogBuffersLost", c_uint32),
        ("RealTimeBuffersLost", c_uint32),
        ("LoggerThreadId", c_void_p),  # a HANDLE
        ("LogFileNameOffset", c_uint32),
        ("LoggerNameOffset", c_uint32),
    ]


class EVENT_FILTER_DESCRIPTOR(Structure):
    _fields_ = [("Ptr", c_uint64), ("Size", c_uint32), ("Type", c_uint32)]


class ENABLE_TRACE_PARAMETERS(Structure):
    _fields_ = [
        ("Version", c_uint32),
        ("EnableProperty", c_uint32),
        ("ControlFlags", c_uint32),
        ("SourceId", GUID),
        ("EnableFilterDesc", c_void_p),  # EVENT_FILTER_DESCRIPTOR*
        ("FilterDescCount", c_uint32),
    ]


# --- events ---------------------------------------------------------------------------------------


class EVENT_DESCRIPTOR(Structure):
    _fields_ = [
        ("Id", c_uint16),
        ("Version", c_uint8),
        ("Channel", c_uint8),
        ("Level", c_uint8),
        ("Opcode", c_uint8),
        ("Task", c_uint16),
        ("Keyword", c_uint64),
    ]


class EVENT_HEADER(Structure):
    _fields_ = [
        ("Size", c_uint16),
        ("HeaderType", c_uint16),
        ("Flags", c_uint16),
        ("EventProperty", c_uint16),
        ("ThreadId", c_uint32),
        ("ProcessId", c_uint32),
        ("TimeStamp", c_int64),
        ("ProviderId", GUID),
        ("EventDescriptor", EVENT_DESCRIPTOR),
        ("ProcessorTime", c_uint64),  # union with {KernelTime, UserTime}
        ("ActivityId", GUID),
    ]


class ETW_BUFFER_CONTEXT(Structure):
    _fields_ = [("ProcessorIndex", c_uint16), ("LoggerId", c_uint16)]


class EVENT_HEADER_EXTENDED_DATA_ITEM(Structure):
    _fields_ = [
        ("Reserved1", c_uint16),
        ("ExtType", c_uint16),
        ("Linkage", c_uint16),  # Linkage:1, Reserved2:15
        ("DataSize", c_uint16),
        ("DataPtr", c_uint64),
    ]


class EVENT_RECORD(Structure):
    _fields_ = [
        ("EventHeader", EVENT_HEADER),
        ("BufferContext", ETW_BUFFER_CONTEXT),
        ("ExtendedDataCount", c_uint16),
        ("UserDataLength", c_uint16),
        ("ExtendedData", c_void_p),  # EVENT_HEADER_EXTENDED_DATA_ITEM*
        ("UserData", c_void_p),
        ("UserContext", c_void_p),
    ]


# --- the consumer's logfile (OpenTraceW) ----------------------------------------------------------


class EVENT_TRACE_HEADER(Structure):
    _fields_ = [
        ("Size", c_uint16),
        ("FieldTypeFlags", c_uint16),
        ("Version", c_uint32),
        ("ThreadId", c_uint32),
        ("ProcessId", c_uint32),
        ("TimeStamp", c_int64),
        ("Guid", GUID),
        ("ProcessorTime", c_uint64),
    ]


class EVENT_TRACE(Structure):
    _fields_ = [
        ("Header", EVENT_TRACE_HEADER),
        ("InstanceId", c_uint32),
        ("ParentInstanceId", c_uint32),
        ("ParentGuid", GUID),
        ("MofData", c_void_p),
        ("MofLength", c_uint32),
        ("ClientContext", c_uint32),  # union with ETW_BUFFER_CONTEXT
    ]


class SYSTEMTIME(Structure):
    _fields_ = [(name, c_uint16) for name in
                ("wYear", "wMonth", "wDayOfWeek", "wDay", "wHour", "wMinute", "wSecond", "wMilliseconds")]


class TIME_ZONE_INFORMATION(Structure):
    _fields_ = [
        ("Bias", c_int32),
        ("StandardName", c_uint16 * 32),  # WCHAR[32]
        ("StandardDate", SYSTEMTIME),
        ("StandardBias", c_int32),
        ("DaylightName", c_uint16 * 32),
        ("DaylightDate", SYSTEMTIME),
        ("DaylightBias", c_int32),
    ]


class TRACE_LOGFILE_HEADER(Structure):
    _fields_ = [
        ("BufferSize", c_uint32),
        ("Version", c_uint32),
        ("ProviderVersion", c_uint32),
        ("NumberOfProcessors", c_uint32),
        ("EndTime", c_int64),
        ("TimerResolution", c_uint32),
        ("MaximumFileSize", c_uint32),
        ("LogFileMode", c_uint32),
        ("BuffersWritten", c_uint32),
        ("LogInstanceGuid", GUID),  # union with {StartBuffers, PointerSize, EventsLost, CpuSpeedInMHz}
        ("LoggerName", c_void_p),
        ("LogFileName", c_void_p),
        ("TimeZone", TIME_ZONE_INFORMATION),
        ("BootTime", c_int64),
        ("PerfFreq", c_int64),
        ("StartTime", c_int64),
        ("ReservedFlags", c_uint32),
        ("BuffersLost", c_uint32),
    ]


class EVENT_TRACE_LOGFILEW(Structure):
    _fields_ = [
        ("LogFileName", c_void_p),  # LPWSTR
        ("LoggerName", c_void_p),  # LPWSTR
        ("CurrentTime", c_int64),
        ("BuffersRead", c_uint32),
        ("ProcessTraceMode", c_uint32),  # union with LogFileMode
        ("CurrentEvent", EVENT_TRACE),
        ("LogfileHeader", TRACE_LOGFILE_HEADER),
        ("BufferCallback", c_void_p),
        ("BufferSize", c_uint32),
        ("Filled", c_uint32),
        ("EventsLost", c_uint32),
        ("EventRecordCallback", c_void_p),  # union with EventCallback
        ("IsKernelTrace", c_uint32),
        ("Context", c_void_p),
    ]


# --- TDH ------------------------------------------------------------------------------------------


class EVENT_PROPERTY_INFO(Structure):
    _fields_ = [
        ("Flags", c_uint32),
        ("NameOffset", c_uint32),
        ("InType", c_uint16),  # structType: StructStartIndex
        ("OutType", c_uint16),  # structType: NumOfStructMembers
        ("MapNameOffset", c_uint32),
        ("count", c_uint16),  # or countPropertyIndex
        ("length", c_uint16),  # or lengthPropertyIndex
        ("Tags", c_uint32),
    ]


class TRACE_EVENT_INFO(Structure):
    _fields_ = [
        ("ProviderGuid", GUID),
        ("EventGuid", GUID),
        ("EventDescriptor", EVENT_DESCRIPTOR),
        ("DecodingSource", c_uint32),
        ("ProviderNameOffset", c_uint32),
        ("LevelNameOffset", c_uint32),
        ("ChannelNameOffset", c_uint32),
        ("KeywordsNameOffset", c_uint32),
        ("TaskNameOffset", c_uint32),
        ("OpcodeNameOffset", c_uint32),
        ("EventMessageOffset", c_uint32),
        ("ProviderMessageOffset", c_uint32),
        ("BinaryXMLOffset", c_uint32),
        ("BinaryXMLSize", c_uint32),
        ("EventNameOffset", c_uint32),
        ("EventAttributesOffset", c_uint32),
        ("PropertyCount", c_uint32),
        ("TopLevelPropertyCount", c_uint32),
        ("Flags", c_uint32),
        # EVENT_PROPERTY_INFO EventPropertyInfoArray[] follows (offset 112)
    ]


class TRACE_PROVIDER_INFO(Structure):
    _fields_ = [("ProviderGuid", GUID), ("SchemaSource", c_uint32), ("ProviderNameOffset", c_uint32)]


class PROVIDER_ENUMERATION_INFO(Structure):
    _fields_ = [("NumberOfProviders", c_uint32), ("Reserved", c_uint32)]
    # TRACE_PROVIDER_INFO TraceProviderInfoArray[] follows (offset 8)


# PROPERTY_FLAGS
PropertyStruct = 0x1
PropertyParamLength = 0x2
PropertyParamCount = 0x4
PropertyWBEMXmlFragment = 0x8
PropertyParamFixedLength = 0x10
PropertyParamFixedCount = 0x20

EVENT_RECORD_CALLBACK = getattr(ctypes, "WINFUNCTYPE", ctypes.CFUNCTYPE)(None, ctypes.POINTER(EVENT_RECORD))
"""``VOID WINAPI EventRecordCallback(PEVENT_RECORD)``; stdcall and cdecl are one convention on
x64, so the same type drives the callback in the tests (on Linux) and under ProcessTrace."""


def wstr_buffer(text: str) -> ctypes.Array:
    """A NUL-terminated UTF-16LE copy of ``text`` that Windows can read as an LPCWSTR (ctypes'
    own wide strings are UTF-32 on Linux, so they are not used)."""
    data = text.encode("utf-16-le") + b"\0\0"
    return (c_uint8 * len(data)).from_buffer_copy(data)
