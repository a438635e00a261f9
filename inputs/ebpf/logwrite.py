"""The logwrite probe's events (bpf/logwrite.h): a write() to a tailed log file, with the
exchange the writing thread was serving, decoded and turned into a LogWriteEvent.

Nothing here needs a kernel: tests feed made-up bytes (and compare the offsets with the header,
compiled by the system's C compiler).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import NamedTuple

from common.events import LogWriteEvent
from inputs.ebpf.layouts import HEADER, DecodeError, Header, decode_header

EV_LOG_WRITE = 32
LOG_HEAD = 128
LOG_WRITE = struct.Struct("<iIQQQQiHH")   # after the header; then ``copied`` bytes of data
SIZE = HEADER.size + LOG_WRITE.size        # plus LOG_HEAD


class LogWrite(NamedTuple):
    h: Header
    fd: int
    length: int
    seq: int
    req_ts: int
    resp_ts: int
    multi_ts: int
    req_fd: int
    cpu: int
    data: bytes


def decode_log_write(data: bytes) -> LogWrite:
    if len(data) < SIZE:
        raise DecodeError(f"log_write_ev: {len(data)} bytes, want at least {SIZE}")
    h = decode_header(data)
    fd, length, seq, req, resp, multi, req_fd, cpu, copied = LOG_WRITE.unpack_from(
        data, HEADER.size)
    return LogWrite(h, fd, length, seq, req, resp, multi, req_fd, cpu,
                    data[SIZE:SIZE + min(copied, LOG_HEAD)])


FileOf = Callable[[int, int], "tuple[int, int] | None"]
"""(pid, fd) -> the (device, inode) of the log file it is, as user space found it."""


class LogWriteTranslator:
    """LogWrite -> LogWriteEvent, with the file's identity and wall-clock times; notes gaps in
    each CPU's sequence (events the ring buffer had no room for) as ``lost`` on the next event."""

    def __init__(self, file_of: FileOf) -> None:
        self.file_of = file_of
        self.next_seq: dict[int, int] = {}
        self.gaps = 0

    def event(self, raw: LogWrite, offset_ns: int) -> LogWriteEvent | None:
        want = self.next_seq.get(raw.cpu)
        lost = 0
        if want is not None and raw.seq > want:
            lost = raw.seq - want
            self.gaps += lost
        if want is None or raw.seq >= want:
            self.next_seq[raw.cpu] = raw.seq + 1
        ident = self.file_of(raw.h.pid, raw.fd)
        if ident is None:
            return None  # a descriptor user space no longer follows
        h = raw.h
        return LogWriteEvent(
            time_ns=h.ts_ns + offset_ns, pid=h.pid, tid=h.tid, fd=raw.fd, dev=ident[0],
            ino=ident[1], length=raw.length, head=raw.data, boot_ns=h.ts_ns,
            req_boot_ns=raw.req_ts, req_fd=raw.req_fd, resp_boot_ns=raw.resp_ts,
            multi_boot_ns=raw.multi_ts, lost_before=lost)
