"""The raw events of the BPF programs, decoded: one function per layout of ``bpf/events.h``.

The kernel lays the structs out little-endian with natural alignment (x86-64 and arm64 alike);
the ``struct.Struct`` formats below are those layouts, field for field. Nothing here needs a
kernel: tests feed these functions made-up bytes (and check the offsets against the header,
compiled by the system's C compiler).
"""

from __future__ import annotations

import socket
import struct
from typing import NamedTuple

from common.errors import LogShuttleError

# enum ev_type
EV_EXEC_ARGS = 1
EV_EXEC = 2
EV_FORK = 3
EV_EXIT = 4
EV_CONNECT = 5
EV_ACCEPT = 6
EV_CLOSE = 7
EV_HTTP = 8
EV_FD_CLOSE = 9
EV_HTTP_EXCHANGE = 10

ARGV_MAX = 8
ARG_LEN = 64
FILENAME_LEN = 128
EXIT_HAS_CODE = 1
EXIT_HAS_SIGNAL = 2
HTTP_OP_READ = 0
HTTP_OP_WRITE = 1
AF_INET = 2
AF_INET6 = 10
HTTP_STATUS_LEN = 16
HTTP_FLAG_TLS = 1
"""An exchange's flags & HTTP_FLAG_TLS: seen in the TLS library's plaintext (HTTPS)."""
HTTP_WEIGHT_SHIFT = 16
"""An exchange's flags >> HTTP_WEIGHT_SHIFT: how many exchanges it stands for when the http
probe samples (1 in N: N; 0 means 1)."""

HEADER = struct.Struct("<IIIIQ16s")                   # struct ev_header (40 bytes)
EXEC_ARGS = struct.Struct(f"<II{ARGV_MAX * ARG_LEN}s")  # after the header
EXEC = struct.Struct(f"<II{FILENAME_LEN}s")
FORK = struct.Struct("<II")
EXIT = struct.Struct("<IIii")
CONN = struct.Struct("<iHHHHI16s16sQ")
HTTP = struct.Struct("<iIII")                          # then ``copied`` bytes of data
FD_CLOSE = struct.Struct("<iI")
HTTP_EXCHANGE = struct.Struct(f"<iIQIIII{HTTP_STATUS_LEN}s")  # then ``copied`` bytes of data

SIZES = {
    "ev_header": HEADER.size,
    "exec_args_ev": HEADER.size + EXEC_ARGS.size,
    "exec_ev": HEADER.size + EXEC.size,
    "fork_ev": HEADER.size + FORK.size,
    "exit_ev": HEADER.size + EXIT.size,
    "conn_ev": HEADER.size + CONN.size,
    "http_ev": HEADER.size + HTTP.size,  # plus HTTP_PAYLOAD
    "fd_close_ev": HEADER.size + FD_CLOSE.size,
    "http_exchange_ev": HEADER.size + HTTP_EXCHANGE.size,  # plus HTTP_PAYLOAD
}


class DecodeError(LogShuttleError):
    """Bytes that are not an event of bpf/events.h (too short, or of an unknown type)."""


class Header(NamedTuple):
    type: int
    pid: int
    tid: int
    uid: int
    ts_ns: int
    """CLOCK_BOOTTIME."""
    comm: str


class ExecArgs(NamedTuple):
    h: Header
    argv: list[str]
    truncated: bool


class Exec(NamedTuple):
    h: Header
    ppid: int
    old_pid: int
    filename: str


class Fork(NamedTuple):
    h: Header
    child_pid: int


class Exit(NamedTuple):
    h: Header
    ppid: int
    code: int | None
    """The exit status, or -signal when a fatal signal ended the process; None if unknown."""


class Conn(NamedTuple):
    h: Header
    fd: int
    family: int
    """4 or 6 (0 when accept() gave no address)."""
    saddr: str
    sport: int
    daddr: str
    dport: int
    duration_ns: int


class HttpData(NamedTuple):
    h: Header
    fd: int
    op: int
    length: int
    """Bytes the read or write moved (of its first buffer for readv/writev)."""
    data: bytes
    """The first bytes of them (at most the payload size the programs were built with)."""


class FdClose(NamedTuple):
    h: Header
    fd: int


class HttpExchange(NamedTuple):
    """A request and its final response, paired by the http probe."""

    h: Header
    """The request's: its thread, and the time of its first bytes."""
    fd: int
    op: int
    """The request's: HTTP_OP_READ (the server side) or HTTP_OP_WRITE (the client side)."""
    response_ts_ns: int
    length: int
    response_length: int
    status_line: bytes
    """The response's first bytes (at most HTTP_STATUS_LEN)."""
    data: bytes
    """The request's first bytes (at most the payload size the programs were built with)."""
    weight: int = 1
    """How many exchanges it stands for (the probe sampled 1 in ``weight``)."""
    tls: bool = False
    """Seen in the TLS library's plaintext (HTTP_FLAG_TLS)."""


Raw = ExecArgs | Exec | Fork | Exit | Conn | HttpData | FdClose | HttpExchange


def _cstr(b: bytes) -> str:
    return b.split(b"\0", 1)[0].decode("utf-8", "replace")


def _need(data: bytes, size: int, what: str) -> None:
    if len(data) < size:
        raise DecodeError(f"{what}: {len(data)} bytes, expected at least {size}")


def decode_header(data: bytes) -> Header:
    _need(data, HEADER.size, "event header")
    t, pid, tid, uid, ts, comm = HEADER.unpack_from(data)
    return Header(t, pid, tid, uid, ts, _cstr(comm))


def decode_exec_args(h: Header, data: bytes) -> ExecArgs:
    _need(data, SIZES["exec_args_ev"], "exec_args_ev")
    argc, truncated, raw = EXEC_ARGS.unpack_from(data, HEADER.size)
    argc = min(argc, ARGV_MAX)
    argv = [_cstr(raw[i * ARG_LEN:(i + 1) * ARG_LEN]) for i in range(argc)]
    return ExecArgs(h, argv, bool(truncated))


def decode_exec(h: Header, data: bytes) -> Exec:
    _need(data, SIZES["exec_ev"], "exec_ev")
    ppid, old_pid, filename = EXEC.unpack_from(data, HEADER.size)
    return Exec(h, ppid, old_pid, _cstr(filename))


def decode_fork(h: Header, data: bytes) -> Fork:
    _need(data, SIZES["fork_ev"], "fork_ev")
    child, _pad = FORK.unpack_from(data, HEADER.size)
    return Fork(h, child)


def decode_exit(h: Header, data: bytes) -> Exit:
    _need(data, SIZES["exit_ev"], "exit_ev")
    ppid, flags, code, sig = EXIT.unpack_from(data, HEADER.size)
    status: int | None = None
    if flags & EXIT_HAS_CODE:
        status = code
    elif flags & EXIT_HAS_SIGNAL:
        status = -sig
    return Exit(h, ppid, status)


def format_addr(family: int, raw: bytes) -> str:
    """The text form of an address as the programs store it (IPv4 in the first 4 bytes); an
    IPv4-mapped IPv6 address is shown as its IPv4 address."""
    if family == AF_INET:
        return socket.inet_ntop(socket.AF_INET, raw[:4])
    if family == AF_INET6:
        if raw[:12] == b"\0" * 10 + b"\xff\xff":
            return socket.inet_ntop(socket.AF_INET, raw[12:16])
        return socket.inet_ntop(socket.AF_INET6, raw[:16])
    return ""


def decode_conn(h: Header, data: bytes) -> Conn:
    _need(data, SIZES["conn_ev"], "conn_ev")
    fd, family, sport, dport, _p, _p2, saddr, daddr, duration = CONN.unpack_from(data, HEADER.size)
    fam = 4 if family == AF_INET else 6 if family == AF_INET6 else 0
    return Conn(h, fd, fam, format_addr(family, saddr), sport, format_addr(family, daddr), dport,
                duration)


def decode_http(h: Header, data: bytes) -> HttpData:
    _need(data, SIZES["http_ev"], "http_ev")
    fd, op, length, copied = HTTP.unpack_from(data, HEADER.size)
    start = SIZES["http_ev"]
    return HttpData(h, fd, op, length, bytes(data[start:start + copied]))


def decode_fd_close(h: Header, data: bytes) -> FdClose:
    _need(data, SIZES["fd_close_ev"], "fd_close_ev")
    fd, _pad = FD_CLOSE.unpack_from(data, HEADER.size)
    return FdClose(h, fd)


def decode_http_exchange(h: Header, data: bytes) -> HttpExchange:
    _need(data, SIZES["http_exchange_ev"], "http_exchange_ev")
    fd, op, resp_ts, length, copied, resp_len, flags, status = HTTP_EXCHANGE.unpack_from(
        data, HEADER.size)
    start = SIZES["http_exchange_ev"]
    return HttpExchange(h, fd, op, resp_ts, length, resp_len,
                        status[:min(resp_len, HTTP_STATUS_LEN)], bytes(data[start:start + copied]),
                        flags >> HTTP_WEIGHT_SHIFT or 1, bool(flags & HTTP_FLAG_TLS))


_DECODERS = {
    EV_EXEC_ARGS: decode_exec_args,
    EV_EXEC: decode_exec,
    EV_FORK: decode_fork,
    EV_EXIT: decode_exit,
    EV_CONNECT: decode_conn,
    EV_ACCEPT: decode_conn,
    EV_CLOSE: decode_conn,
    EV_HTTP: decode_http,
    EV_FD_CLOSE: decode_fd_close,
    EV_HTTP_EXCHANGE: decode_http_exchange,
}


def decode(data: bytes) -> Raw:
    """One raw event, as the ring buffer holds it, decoded by its type."""
    h = decode_header(data)
    fn = _DECODERS.get(h.type)
    if fn is None:
        raise DecodeError(f"unknown event type {h.type}")
    return fn(h, data)
