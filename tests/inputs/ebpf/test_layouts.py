"""Decoding raw event bytes as the kernel lays them out, with no kernel: made-up bytes built
field by field, and the struct offsets of bpf/events.h checked against the decoder's."""

from __future__ import annotations

import shutil
import socket
import struct
import subprocess

import pytest

import bpf
from inputs.ebpf import layouts as L


def header(type_: int, *, pid=100, tid=101, uid=1000, ts=123_456_789, comm=b"nginx") -> bytes:
    return struct.pack("<IIIIQ16s", type_, pid, tid, uid, ts, comm)


def test_header_fields_and_comm_stop_at_nul():
    data = header(L.EV_FORK, comm=b"curl\0garbage") + struct.pack("<II", 555, 0)
    ev = L.decode(data)
    assert isinstance(ev, L.Fork)
    assert ev.h == L.Header(L.EV_FORK, 100, 101, 1000, 123_456_789, "curl")
    assert ev.child_pid == 555


def test_exec_args_takes_argc_arguments_each_to_its_nul():
    slots = [b"/bin/sh\0junk", b"-c\0", b"exit 3\0", b"ignored"]
    raw = b"".join(s.ljust(L.ARG_LEN, b"\xff") for s in slots).ljust(L.ARGV_MAX * L.ARG_LEN, b"\xee")
    ev = L.decode(header(L.EV_EXEC_ARGS) + struct.pack("<II", 3, 1) + raw)
    assert isinstance(ev, L.ExecArgs)
    assert ev.argv == ["/bin/sh", "-c", "exit 3"]
    assert ev.truncated is True


def test_exec():
    data = header(L.EV_EXEC, pid=42, tid=42) + struct.pack("<II", 7, 43) + b"/usr/bin/env".ljust(128, b"\0")
    ev = L.decode(data)
    assert (ev.ppid, ev.old_pid, ev.filename) == (7, 43, "/usr/bin/env")


@pytest.mark.parametrize("flags, code, sig, expected", [
    (L.EXIT_HAS_CODE, 3, 0, 3),
    (L.EXIT_HAS_SIGNAL, 0, 9, -9),
    (L.EXIT_HAS_CODE | L.EXIT_HAS_SIGNAL, 0, 9, 0),  # exit_group() said it: the SIGKILL of
    (0, 0, 0, None),                                 # the other threads is not the status
])
def test_exit_status(flags, code, sig, expected):
    ev = L.decode(header(L.EV_EXIT) + struct.pack("<IIii", 1, flags, code, sig))
    assert ev.code == expected and ev.ppid == 1


def _conn(type_: int, family: int, saddr: bytes, daddr: bytes) -> bytes:
    return header(type_) + struct.pack("<iHHHHI16s16sQ", 9, family, 8080, 51000, 0, 0,
                                       saddr.ljust(16, b"\0"), daddr.ljust(16, b"\0"), 1500)


def test_conn_ipv4():
    ev = L.decode(_conn(L.EV_ACCEPT, L.AF_INET, bytes([127, 0, 0, 1]), bytes([10, 1, 2, 3])))
    assert isinstance(ev, L.Conn)
    assert (ev.fd, ev.family, ev.saddr, ev.sport, ev.daddr, ev.dport, ev.duration_ns) == \
        (9, 4, "127.0.0.1", 8080, "10.1.2.3", 51000, 1500)


def test_conn_ipv6_and_v4_mapped():
    v6 = socket.inet_pton(socket.AF_INET6, "2001:db8::1")
    mapped = socket.inet_pton(socket.AF_INET6, "::ffff:192.0.2.7")
    ev = L.decode(_conn(L.EV_CLOSE, L.AF_INET6, v6, mapped))
    assert (ev.family, ev.saddr, ev.daddr) == (6, "2001:db8::1", "192.0.2.7")


def test_http_data_is_cut_to_copied():
    payload = b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n"
    data = header(L.EV_HTTP) + struct.pack("<iIII", 5, L.HTTP_OP_READ, 999, len(payload)) + \
        payload.ljust(256, b"\xaa")
    ev = L.decode(data)
    assert (ev.fd, ev.op, ev.length, ev.data) == (5, L.HTTP_OP_READ, 999, payload)


def test_http_exchange_request_cut_to_copied_and_status_to_response_length():
    request = b"GET /x?y=1 HTTP/1.1\r\nHost: a\r\n\r\n"
    data = header(L.EV_HTTP_EXCHANGE, ts=1000) + struct.pack(
        "<iIQIIII16s", 7, L.HTTP_OP_READ, 5000, 999, len(request), 12, 0,
        b"HTTP/1.1 404 Not") + request.ljust(256, b"\xaa")
    ev = L.decode(data)
    assert isinstance(ev, L.HttpExchange)
    assert (ev.h.ts_ns, ev.fd, ev.op, ev.response_ts_ns, ev.length, ev.response_length) == \
        (1000, 7, L.HTTP_OP_READ, 5000, 999, 12)
    assert ev.data == request and ev.status_line == b"HTTP/1.1 404"


def test_fd_close():
    ev = L.decode(header(L.EV_FD_CLOSE) + struct.pack("<iI", 12, 0))
    assert isinstance(ev, L.FdClose) and ev.fd == 12


def test_short_or_unknown_bytes_are_decode_errors():
    with pytest.raises(L.DecodeError, match="header"):
        L.decode(b"\x01\x00")
    with pytest.raises(L.DecodeError, match="unknown event type 99"):
        L.decode(header(99))
    with pytest.raises(L.DecodeError, match="conn_ev"):
        L.decode(header(L.EV_CONNECT) + b"\0" * 8)


OFFSETS_C = r"""
#include <stddef.h>
#include <stdio.h>
typedef unsigned char u8; typedef unsigned short u16; typedef unsigned int u32;
typedef int s32; typedef unsigned long long u64;
#define EVENTS_LAYOUT_ONLY
#include "events.h"
#define P(s, f) printf(#s "." #f " %zu\n", offsetof(struct s, f))
#define S(s) printf(#s " %zu\n", sizeof(struct s))
int main(void) {
    S(ev_header); S(exec_args_ev); S(exec_ev); S(fork_ev); S(exit_ev); S(conn_ev); S(fd_close_ev);
    P(http_exchange_ev, fd); P(http_exchange_ev, response_ts_ns); P(http_exchange_ev, copied);
    P(http_exchange_ev, response_len); P(http_exchange_ev, status); P(http_exchange_ev, data);
    P(ev_header, ts_ns); P(ev_header, comm);
    P(exec_args_ev, argc); P(exec_args_ev, argv); P(exec_ev, filename); P(exit_ev, signal);
    P(conn_ev, fd); P(conn_ev, family); P(conn_ev, saddr); P(conn_ev, daddr); P(conn_ev, duration_ns);
    P(http_ev, copied); P(http_ev, data); P(fd_close_ev, fd);
    printf("HTTP_FLAG_TLS %d\nHTTP_WEIGHT_SHIFT %d\n", HTTP_FLAG_TLS, HTTP_WEIGHT_SHIFT);
    return 0;
}
"""


@pytest.mark.skipif(shutil.which("cc") is None, reason="needs a C compiler (gcc: ./scripts/setup "
                                                        "installs it with the test extras)")
def test_decoder_offsets_match_the_c_header(tmp_path):
    src = tmp_path / "offsets.c"
    src.write_text(OFFSETS_C)
    exe = tmp_path / "offsets"
    subprocess.run(["cc", f"-I{bpf.DIR}", "-o", str(exe), str(src)], check=True)
    got = dict(line.rsplit(" ", 1) for line in subprocess.check_output([str(exe)], text=True).splitlines())
    got = {k: int(v) for k, v in got.items()}
    h = L.HEADER.size
    for name, size in L.SIZES.items():
        if name not in ("http_ev", "http_exchange_ev"):
            assert got[name] == size, name
    assert got["ev_header.ts_ns"] == 16 and got["ev_header.comm"] == 24
    assert got["exec_args_ev.argc"] == h and got["exec_args_ev.argv"] == h + 8
    assert got["exec_ev.filename"] == h + 8
    assert got["exit_ev.signal"] == h + 12
    assert (got["conn_ev.fd"], got["conn_ev.family"]) == (h, h + 4)
    assert (got["conn_ev.saddr"], got["conn_ev.daddr"], got["conn_ev.duration_ns"]) == \
        (h + 16, h + 32, h + 48)
    assert (got["http_ev.copied"], got["http_ev.data"]) == (h + 12, L.SIZES["http_ev"])
    assert got["fd_close_ev.fd"] == h
    assert (got["http_exchange_ev.fd"], got["http_exchange_ev.response_ts_ns"]) == (h, h + 8)
    assert (got["http_exchange_ev.copied"], got["http_exchange_ev.response_len"]) == (h + 20, h + 24)
    assert (got["http_exchange_ev.status"], got["http_exchange_ev.data"]) == \
        (h + 32, L.SIZES["http_exchange_ev"])
    assert (got["HTTP_FLAG_TLS"], got["HTTP_WEIGHT_SHIFT"]) == (L.HTTP_FLAG_TLS, L.HTTP_WEIGHT_SHIFT)
