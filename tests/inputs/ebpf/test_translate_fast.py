"""A kernel-paired exchange's HttpEvent made in C (common/speedups/ebpf.c http_exchange, the
common case of inputs/ebpf/translate.py's feed_records) against the same made in Python:
made-up records in the probe's layout, no kernel."""

from __future__ import annotations

import struct

import msgspec
import pytest
from hypothesis import given, settings, strategies as st

from common.fastpath import http_exchange
from inputs.ebpf import translate
from common.events import HttpEvent
from inputs.ebpf.layouts import EV_HTTP_EXCHANGE, HTTP_FLAG_TLS, HTTP_OP_READ, HTTP_OP_WRITE
from inputs.ebpf.translate import Translator

compiled = pytest.mark.skipif(http_exchange is None, reason="common._speedups not built: "
                              "exchanges are made in Python (tests/common/test_fastpath.py fails)")


def record(request: bytes, status: bytes, *, pid=10, fd=5, ts=100, resp_ts=400, op=HTTP_OP_READ,
           comm=b"nginx", flags=0, copied=None, resp_len=None) -> bytes:
    """An exchange as the http probe sends it: the fixed part, then the request's bytes."""
    return (struct.pack("<IIIIQ16s", EV_HTTP_EXCHANGE, pid, pid + 1, 0, ts, comm)
            + struct.pack("<iIQIIII16s", fd, op, resp_ts, len(request),
                          len(request) if copied is None else copied,
                          len(status) if resp_len is None else resp_len, flags, status)
            + request)


def accept(pid: int, fd: int, ts: int, port: int) -> bytes:
    from inputs.ebpf.layouts import EV_ACCEPT
    return struct.pack("<IIIIQ16s", EV_ACCEPT, pid, pid, 0, ts, b"nginx") + struct.pack(
        "<iHHHHI16s16sQ", fd, 2, 8080, port, 0, 0, bytes([127, 0, 0, 1]).ljust(16, b"\0"),
        bytes([127, 0, 0, 9]).ljust(16, b"\0"), 0)


def close(pid: int, fd: int, ts: int) -> bytes:
    from inputs.ebpf.layouts import EV_FD_CLOSE
    return struct.pack("<IIIIQ16s", EV_FD_CLOSE, pid, pid, 0, ts, b"nginx") + struct.pack(
        "<iI", fd, 0)


def translate_both(records: list[bytes], packed: bool = False):
    """feed_records with the C path (its events as objects, or with ``packed`` as their msgpack
    bytes) and without: (events as msgpack, count, errors, stats) of each."""
    out = []
    for fast in (http_exchange, None):
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(translate, "http_exchange", fast)
            tr = Translator(packed=packed)
            tr.offset_ns = 1_700_000_000 * 10**9
            got = []
            for i in range(0, len(records), 7):
                events, n, errors = tr.feed_records(records[i:i + 7])
                if fast is None or not packed:
                    assert not any(type(e) is msgspec.Raw for e in events)
                got.append(([bytes(e) if type(e) is msgspec.Raw else msgspec.msgpack.encode(e)
                             for e in events], n, errors))
            out.append((got, tr.stats, tr.http.stats, dict(tr._comms)))
    return out


methods = st.sampled_from([b"GET"] * 4 + [b"POST", b"PUT", b"HEAD", b"DELETE", b"PATCH",
                                           b"OPTIONS", b"get", b"BREW", b""])
paths = st.one_of(st.sampled_from([b"/", b"/a?b=1", b"/\xff\xfe", "/é".encode(), b"", b"/a b"]),
                  st.binary(max_size=40).map(lambda b: b"/" + b.replace(b" ", b"")),
                  st.binary(max_size=40))
versions = st.sampled_from([b"HTTP/1.1"] * 4 + [b"HTTP/1.0"] * 2 + [b"HTTP/1.1 ", b"HTTP/2", b"",
                                                                    b"HTTP/1.1x"])
headers = st.lists(st.sampled_from([
    b"Host: h", b"traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    b"TraceParent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    b"tracestate: a=1", b"X-Trace: 1", b"User-Agent: curl", b"\ntrace"]), max_size=4)

requests = st.builds(
    lambda m, sp1, p, sp2, v, hs, cut, eol: (m + sp1 + p + sp2 + v + eol
                                             + b"".join(h + b"\r\n" for h in hs) + b"\r\n")[:cut],
    methods, st.sampled_from([b" "] * 6 + [b"  ", b""]), paths, st.sampled_from([b" "] * 6 + [b""]),
    versions, headers, st.one_of(st.just(4096), st.integers(0, 400)),
    st.sampled_from([b"\r\n"] * 6 + [b"\n", b""]))
common = st.builds(
    lambda m, p, v, hs, cut: (m + b" " + p + b" " + v + b"\r\n"
                              + b"".join(h + b"\r\n" for h in hs) + b"\r\n")[:cut],
    st.sampled_from(sorted(translate._METHOD_TEXT)),
    st.binary(max_size=40).map(lambda b: b"/" + b.replace(b" ", b"")),
    st.sampled_from([b"HTTP/1.1", b"HTTP/1.0"]),
    st.lists(st.sampled_from([b"Host: h", b"User-Agent: curl", b"X-Trace: 1"]), max_size=3),
    st.one_of(st.just(4096), st.integers(0, 80)))
"""METHOD SP path SP HTTP/1.x CRLF, headers, CRLF (or cut by the probe's bound): what C makes."""
requests = st.one_of(common, requests)
statuses = st.one_of(st.sampled_from([b"HTTP/1.1 200 OK\r\n", b"HTTP/1.0 404 Not", b"HTTP/1.1 2",
                                      b"HTTP/1.1 20x OK", b"HTTP/2 200 OK..", b"HTTP/1.1 \xff99"]),
                     st.binary(max_size=16))
comms = st.sampled_from([b"nginx", b"curl\0junk", b"\xff\xfeodd", b"x" * 16, b""])
exchanges = st.builds(
    lambda req, status, fd, ts, dur, op, comm, weight, copied, resp_len, low:
    record(req, status.ljust(16, b"\0")[:16], fd=fd, ts=ts, resp_ts=max(0, ts + dur), op=op, comm=comm,
           flags=weight << 16 | low, copied=copied, resp_len=resp_len),
    requests, statuses, st.sampled_from([5, 6, 7]), st.integers(400, 1000), st.integers(-50, 500),
    st.sampled_from([HTTP_OP_READ, HTTP_OP_WRITE]), comms, st.sampled_from([0, 1, 7, 65535]),
    st.sampled_from([None, 0, 3, 10**6]), st.sampled_from([None, 0, 11, 12, 16, 10**6]),
    st.sampled_from([0, 1, 2, 3]))  # the low flags: HTTP_FLAG_TLS (1), and one not known
conns = st.one_of(st.builds(accept, st.just(10), st.sampled_from([5, 6]), st.integers(0, 600),
                            st.integers(1, 65535)),
                  st.builds(close, st.just(10), st.sampled_from([5, 6]), st.integers(0, 1000)))


@compiled
@settings(max_examples=500, deadline=None)
@given(records=st.lists(st.one_of(exchanges, exchanges, conns), max_size=30))
def test_exchanges_made_in_c_are_those_made_in_python(records):
    fast, slow = translate_both(records)
    assert fast == slow


@compiled
@settings(max_examples=500, deadline=None)
@given(records=st.lists(st.one_of(exchanges, exchanges, conns), max_size=30))
def test_exchanges_packed_in_c_are_msgspec_s_bytes_of_those_made_in_python(records):
    fast, slow = translate_both(records, packed=True)
    assert fast == slow


@compiled
def test_the_common_exchange_is_made_in_c_and_the_others_are_left_to_python():
    plain = record(b"GET /a?b=1 HTTP/1.1\r\nHost: h\r\n\r\n", b"HTTP/1.1 200 OK\r\n\0",
                   flags=5 << 16)
    peers = {(10, 5): ("127.0.0.9", 41000, 8080, 50)}
    ev = http_exchange(plain, 7, peers, {}, translate._FAST_KIT)
    assert (ev.time_ns, ev.pid, ev.tid, ev.fd, ev.comm, ev.boot_ns, ev.method, ev.path, ev.status,
            ev.duration_ns, ev.peer_port, ev.weight, ev.headers_cut, ev.tls) == \
        (107, 10, 11, 5, "nginx", 100, "GET", "/a?b=1", 200, 300, 41000, 5, False, False)
    raw = http_exchange(plain, 7, peers, {}, translate._PACKED_KIT)
    assert type(raw) is msgspec.Raw and bytes(raw) == msgspec.msgpack.encode(ev)
    tls = record(b"GET /a HTTP/1.1\r\n\r\n", b"HTTP/1.1 200 OK\r\n\0", flags=HTTP_FLAG_TLS)
    assert http_exchange(tls, 7, peers, {}, translate._FAST_KIT).tls is True
    assert msgspec.msgpack.decode(bytes(http_exchange(tls, 7, peers, {}, translate._PACKED_KIT)),
                                  type=HttpEvent).tls is True
    # a clock that started at 1970 (no RTC, before NTP): the offset is negative, still C's
    assert http_exchange(plain, -7, peers, {}, translate._FAST_KIT).time_ns == 93
    assert http_exchange(plain[:87], 7, peers, {}, translate._FAST_KIT) is None  # cut short
    kit = translate._FAST_KIT[:1] + (96,) + translate._FAST_KIT[2:]  # another layout: Python's
    assert http_exchange(plain, 7, peers, {}, kit) is None
    for request, peer in [
            (b"GET /a HTTP/1.1\r\ntraceparent: 00-x\r\n\r\n", peers),  # its headers: Python
            (b"GET /a\r\n\r\n", peers),                                # no version: Python
            (b"GET /a HTTP/1.1\r\n\r\n", {}),                          # no open connection
            (b"GET /a HTTP/1.1\r\n\r\n", {(10, 5): ("127.0.0.9", 41000, 8080, 150)})]:  # later
        other = record(request, b"HTTP/1.1 200 OK\r\n\0")
        assert http_exchange(other, 7, peer, {}, translate._FAST_KIT) is None, request


@compiled
def test_a_kit_of_the_wrong_shape_is_a_type_error():
    """Found by a review's fuzzing: methods that are not (bytes, str) pairs were read unchecked
    (a crash), and a weight shift of 64 is undefined in C."""
    plain = record(b"GET / HTTP/1.1\r\n\r\n", b"HTTP/1.1 200 OK\r\n\0", flags=5 << 16)
    kit = translate._FAST_KIT
    peers = {(10, 5): ("a", 1, 2, 0)}
    for bad in (kit[:3] + (64,) + kit[4:], kit[:4] + ((1, 2),) + kit[5:],
                kit[:5] + ((b"HTTP/1.1", 1),) + kit[6:]):
        with pytest.raises(TypeError, match="kit of the wrong types"):
            http_exchange(plain, 0, peers, {}, bad)
