"""Bytes and records built by hand for the ETW tests: payloads from the manifest's layouts,
EVENT_RECORDs in memory, TRACE_EVENT_INFO buffers, and a fake of the Windows calls (the only kind
of mock the project allows)."""

from __future__ import annotations

import ctypes
import struct
import threading
from dataclasses import dataclass, field

from inputs.etw.structs import (
    ERROR_SUCCESS,
    ERROR_WMI_INSTANCE_NOT_FOUND,
    EVENT_RECORD,
    EVENT_RECORD_CALLBACK,
    EVENT_TRACE_CONTROL_QUERY,
    EVENT_TRACE_CONTROL_STOP,
    EVENT_TRACE_PROPERTIES,
    FILETIME_UNIX_EPOCH,
    guid_bytes,
)

KP = "{22fb2cd6-0e7b-422b-a0c7-2fad1fd0e716}"
CREATE_NS = 1_700_000_000_123_456_700  # a multiple of 100 ns
EXIT_NS = CREATE_NS + 5_000_000_000


def ft(ns: int) -> bytes:
    return struct.pack("<Q", ns // 100 + FILETIME_UNIX_EPOCH)


def u16z(text: str) -> bytes:
    return text.encode("utf-16-le") + b"\0\0"


def sid(authority: int, *subs: int) -> bytes:
    return bytes([1, len(subs)]) + authority.to_bytes(6, "big") + struct.pack(f"<{len(subs)}I", *subs)


IMAGE = "\\Device\\HarddiskVolume3\\Windows\\System32\\notepad.exe"


def start_payload(version: int, *, pid: int = 4242, ppid: int = 100, image: str = IMAGE) -> bytes:
    """ProcessStart (and ProcessRundown) as the manifest lays it out, by version."""
    u32 = lambda v: struct.pack("<I", v)  # noqa: E731
    u64 = lambda v: struct.pack("<Q", v)  # noqa: E731
    if version == 0:
        return u32(pid) + ft(CREATE_NS) + u32(ppid) + u32(1) + u16z(image)
    if version == 1:
        return u32(pid) + ft(CREATE_NS) + u32(ppid) + u32(1) + u32(0) + u16z(image)
    if version == 2:
        return (u32(pid) + ft(CREATE_NS) + u32(ppid) + u32(1) + u32(0) + u16z(image) + u32(0xABCD)
                + u32(0x5F000000) + u16z("Pkg_1.0_x64") + u16z("App"))
    if version == 3:
        return (u32(pid) + u64(77) + ft(CREATE_NS) + u32(ppid) + u64(76) + u32(1) + u32(0) + u32(1)
                + u32(0) + sid(16, 8192) + u16z(image) + u32(0xABCD) + u32(0x5F000000)
                + u16z("") + u16z(""))
    raise ValueError(version)


def stop_payload(version: int, *, pid: int = 4242, exit_code: int = 3, image: str = "notepad.exe") -> bytes:
    u32 = lambda v: struct.pack("<I", v)  # noqa: E731
    u64 = lambda v: struct.pack("<Q", v)  # noqa: E731
    common = ft(CREATE_NS) + ft(EXIT_NS) + u32(exit_code) + u32(1) + u32(12) + u64(4096) + u64(8192)
    io = u64(123456) + u32(1) + u32(2) + u32(3) + u32(4) + u32(5)
    name = image.encode("latin-1") + b"\0"
    if version == 0:
        return u32(pid) + common + name
    if version == 1:
        return u32(pid) + common + io + name
    if version == 2:
        return u32(pid) + u64(77) + common + io + name
    raise ValueError(version)


@dataclass
class SyntheticRecord:
    """An EVENT_RECORD in memory, with its payload kept alive beside it."""

    record: EVENT_RECORD
    payload: ctypes.Array | None
    extra: list = field(default_factory=list)

    def pointer(self) -> ctypes._Pointer:
        return ctypes.pointer(self.record)


def make_record(provider: str, event_id: int, version: int, payload: bytes, *, opcode: int = 0,
                level: int = 4, keyword: int = 0, flags: int = 0x40, pid: int = 4, tid: int = 8,
                time_ns: int = EXIT_NS) -> SyntheticRecord:
    rec = EVENT_RECORD()
    h = rec.EventHeader
    h.Size = 80
    h.Flags = flags
    h.ThreadId, h.ProcessId = tid, pid
    h.TimeStamp = time_ns // 100 + FILETIME_UNIX_EPOCH
    ctypes.memmove(ctypes.addressof(h.ProviderId), guid_bytes(provider), 16)
    d = h.EventDescriptor
    d.Id, d.Version, d.Opcode, d.Level, d.Keyword = event_id, version, opcode, level, keyword
    buf = None
    if payload:
        buf = (ctypes.c_uint8 * len(payload)).from_buffer_copy(payload)
        rec.UserData = ctypes.addressof(buf)
        rec.UserDataLength = len(payload)
        rec.keep_payload_alive = buf  # a pointer to the record alone must keep its payload
    return SyntheticRecord(record=rec, payload=buf)


def event_info(properties: list[tuple], *, provider_name: str = "Demo-Provider", task: str = "Work",
               top_level: int | None = None) -> bytes:
    """A TRACE_EVENT_INFO buffer as TdhGetEventInformation returns it: the 112-byte header, one
    24-byte EVENT_PROPERTY_INFO per property, then the UTF-16 names the offsets point to.
    ``properties``: (name, flags, in_type_or_struct_start, out_type_or_member_count, count, length)."""
    n = len(properties)
    strings = bytearray()
    base = 112 + 24 * n

    def add(text: str) -> int:
        off = base + len(strings)
        strings.extend(u16z(text))
        return off

    provider_off, task_off = add(provider_name), add(task)
    epis = b""
    for name, flags, a, b, count, length in properties:
        epis += struct.pack("<IIHHIHHI", flags, add(name), a, b, 0, count, length, 0)
    head = bytearray(112)
    struct.pack_into("<I", head, 52, provider_off)  # ProviderNameOffset
    struct.pack_into("<I", head, 68, task_off)  # TaskNameOffset
    struct.pack_into("<II", head, 100, n, n if top_level is None else top_level)
    return bytes(head) + epis + bytes(strings)


class FakeWindowsApi:
    """Stands in for advapi32 / tdh (the EtwApi methods), recording every call. ProcessTrace
    calls the real EVENT_RECORD_CALLBACK (through its function pointer, as Windows would) with
    ``records``, then blocks until CloseTrace, as a real-time ProcessTrace does."""

    def __init__(self, *, records: list[SyntheticRecord] = (), schemas: dict | None = None,
                 stale: bool = False, lost: tuple[int, int, int] = (0, 0, 0),
                 start_status: int = ERROR_SUCCESS, providers_blob: bytes = b"") -> None:
        self.calls: list[tuple] = []
        self.records = list(records)
        self.schemas = schemas or {}
        self.stale = stale
        self.lost = lost
        self.start_status = start_status
        self.providers_blob = providers_blob
        self.closed = threading.Event()
        self.delivered = threading.Event()
        self.callback_addr = 0
        self.tdh_calls = 0

    def start_trace(self, name, props):
        p = EVENT_TRACE_PROPERTIES.from_buffer(props)
        logged = bytes(props)[p.LoggerNameOffset:p.LoggerNameOffset + 2 * len(name)].decode("utf-16-le")
        self.calls.append(("start", logged, p.LogFileMode))
        return self.start_status, (0x1234 if self.start_status == ERROR_SUCCESS else 0)

    def control_trace(self, handle, name, props, code):
        self.calls.append(("control", handle, name, code))
        if code == EVENT_TRACE_CONTROL_STOP and handle == 0:
            if self.stale:
                self.stale = False
                return ERROR_SUCCESS
            return ERROR_WMI_INSTANCE_NOT_FOUND
        if code == EVENT_TRACE_CONTROL_QUERY:
            p = EVENT_TRACE_PROPERTIES.from_buffer(props)
            p.EventsLost, p.RealTimeBuffersLost, p.LogBuffersLost = self.lost
        return ERROR_SUCCESS

    def enable_trace(self, handle, provider, code, level, any_keyword, all_keyword, params):
        self.calls.append(("enable", provider.text(), code, level, any_keyword, all_keyword, params))
        return ERROR_SUCCESS

    def open_trace(self, logfile):
        self.calls.append(("open", logfile.ProcessTraceMode))
        self.callback_addr = logfile.EventRecordCallback
        return 0x5678

    def process_trace(self, trace):
        self.calls.append(("process", trace))
        callback = ctypes.cast(self.callback_addr, EVENT_RECORD_CALLBACK)
        for r in self.records:
            callback(r.pointer())
        self.delivered.set()
        self.closed.wait(30)
        return ERROR_SUCCESS

    def close_trace(self, trace):
        self.calls.append(("close", trace))
        self.closed.set()
        return ERROR_SUCCESS

    def event_information(self, record_ptr):
        self.tdh_calls += 1
        d = record_ptr.contents.EventHeader.EventDescriptor
        try:
            return self.schemas[(d.Id, d.Version)]
        except KeyError:
            from inputs.etw.errors import EtwError
            raise EtwError("TdhGetEventInformation failed", winerror=1168) from None

    def enumerate_providers(self):
        return self.providers_blob

    def names(self) -> list[str]:
        return [c[0] for c in self.calls]
