"""The NDJSON renderer's compiled fast paths (common/speedups/) against the Python path: the same
bytes for any batch, whatever its lines hold (quotes, backslashes, control bytes, non-ASCII,
invalid UTF-8) and whatever its runs carry (flags, writers, joins, ids); and which runs it takes.
Likewise events other than lines rendered from their msgpack bytes (``render_events``), of every
kind, against decoding and rendering them in Python."""

from __future__ import annotations

import json

import msgspec
import pytest
from hypothesis import given, settings, strategies as st

from common.events import (FORMAT_ERROR, PIECE, UNTERMINATED, Batch, BatchCodec, ConnEvent,
                           EtwEvent, HttpEvent, LineJoin, LogEvent, LogWriteEvent, LossEvent,
                           MetricEvent, ProcessEvent, ProcessInfo, SpanEvent)
from common.identity import Identity, event_seq
from outputs import ndjson
from outputs.ndjson import FAST_PATH, Renderer, plain

pytestmark = pytest.mark.skipif(not FAST_PATH, reason="common._speedups not built: both sides "
                                "would be the Python path (tests/common/test_fastpath.py fails)")

ID = Identity(agent="0123456789abcdef", session="89abcdef")


def ev(data: bytes, *, offset=100, fid=0xfeed, path="/var/log/a.log", **kw) -> LogEvent:
    return LogEvent(path=path, dev=1, ino=2, offset=offset, data=data, lines=data.count(b"\n"),
                    read_ns=1_700_000_000_123_456_789, fid=fid, **kw)


def both(events, identity=ID, host="web-1"):
    fast = Renderer(fmt="ndjson", host=host, identity=identity, fast=True).render(events)
    slow = Renderer(fmt="ndjson", host=host, identity=identity, fast=False).render(events)
    return fast, slow


def test_plain_lines_render_as_the_python_path_does():
    data = b'GET /a?q="x" 200\n\\back\\slash\n\ttab\x01\x1f\x7f\n\n' + "é ü 漢\n".encode()
    fast, slow = both([ev(data)])
    assert fast == slow
    rows = [json.loads(x) for x in fast.splitlines()]
    assert [r["line"] for r in rows] == data.decode().split("\n")[:-1]
    assert [r["offset"] for r in rows] == [100, 117, 129, 137, 138]
    assert rows[0]["id"] == "0123456789abcdef.000000000000feed.100"
    assert rows[0]["host"] == "web-1" and rows[0]["path"] == "/var/log/a.log"


def test_plain_runs_go_through_the_compiled_renderer(monkeypatch):
    calls = []
    real = ndjson.render_lines
    monkeypatch.setattr(ndjson, "render_lines", lambda *a: calls.append(a[2]) or real(*a))
    h = HttpEvent(time_ns=5, pid=10, tid=11, comm="nginx", fd=3, direction="server",
                  method="GET", path="/x")
    Renderer(fmt="ndjson", host="h", identity=ID).render(
        [ev(b"a\n", offset=1), h, ev(b"bad\xff\n", offset=2), ev(b"b\n", offset=3)])
    assert calls == [1, 3]  # the plain runs' offsets; the invalid one and the event in Python


def test_which_runs_take_the_fast_path():
    assert plain(ev(b"a\n")) and plain(ev("é\n".encode()))
    assert not plain(ev(b"bad\xff\n"))  # invalid UTF-8: flagged by the Python path
    assert not plain(ev(b"a\n", flags=PIECE)) and not plain(ev(b"a", flags=UNTERMINATED))
    assert not plain(ev(b"a\n", flags=FORMAT_ERROR))
    assert not plain(ev(b"a\n", writers=[ProcessInfo(pid=1)]))
    assert not plain(ev(b"a\n", joins=[LineJoin(index=0, trace_id="t" * 32)]))


def test_no_ids_without_an_identity_or_a_file_id():
    for events, identity in (([ev(b"a\nb\n")], None), ([ev(b"a\nb\n", fid=0)], ID)):
        fast, slow = both(events, identity)
        assert fast == slow and b'"id"' not in fast


def test_a_mixed_batch_keeps_its_order():
    h = HttpEvent(time_ns=5, pid=10, tid=11, comm="nginx", fd=3, direction="server",
                  method="GET", path="/x")
    events = [ev(b"one\ntwo\n"), h, ev(b"bad\xff\n", offset=5), ev(b"three\n", offset=9),
              ev(b"four\n", writers=[ProcessInfo(pid=7, comm="app")]), h]
    fast, slow = both(events)
    assert fast == slow
    assert [json.loads(x).get("line", "http") for x in fast.splitlines()] == [
        "one", "two", "http", "bad\ufffd", "three", "four", "http"]


lines = st.lists(st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"")) |
                 st.text(max_size=20).map(lambda s: s.replace("\n", "").encode()),
                 max_size=8)


@settings(max_examples=300, deadline=None)
@given(runs=st.lists(st.tuples(lines, st.integers(0, 2**40), st.sampled_from([0, 1, 2**63])),
                     min_size=1, max_size=4),
       host=st.text(max_size=10), path=st.text(min_size=1, max_size=20))
def test_any_batch_renders_the_same_bytes_both_ways(runs, host, path):
    events = [ev(b"".join(x + b"\n" for x in ls), offset=off, fid=fid, path=path)
              for ls, off, fid in runs]
    fast, slow = both(events, host=host)
    assert fast == slow


# --- events other than lines, rendered from their msgpack bytes (BatchCodec.decode_lines) ------

CODEC = BatchCodec()
PROC = ProcessInfo(pid=1234, ppid=1, comm="nginx", exe="/usr/sbin/nginx",
                   cmdline=["nginx: worker \"process\"", "é\t"], uid=33, start_ns=5, how="event")


def as_bytes(events):
    """The batch as an output reads it when its renderer takes events as their bytes: lines
    decoded, the others msgspec.Raw."""
    batch = CODEC.decode_lines(CODEC.encode(Batch(events=events)), lambda: None)
    assert [type(e) is LogEvent for e in batch.events] == [type(e) is LogEvent for e in events]
    return batch.events


def from_bytes_and_decoded(events, identity=ID, host="web-1"):
    fast = Renderer(fmt="ndjson", host=host, identity=identity).render(as_bytes(events))
    slow = Renderer(fmt="ndjson", host=host, identity=identity, fast=False).render(events)
    return fast, slow


def every_kind() -> list:
    seq = event_seq(2, 77, 5)
    return [
        SpanEvent(1_700_000_001_000_000_000, 1_700_000_001_000_000_500, "a" * 32, "b" * 16,
                  "c" * 16, "client", "GET", True,
                  {"url.path": "/漢?q=\"x\"\\", "http.response.status_code": 503, "neg": -40000,
                   "big": 2**64 - 1, "small": -2**63, "ctl": "\x00\x1f\x7f"},
                  {"service.name": "nginx", "process.pid": 1234}, "k=v", "connection"),
        HttpEvent(1_700_000_000_123_456_789, 1234, 1235, "nginx", 10, "server", "GET",
                  "/ok?a=\x01b", 200, 40000, "127.0.0.1", 40001, "HTTP/1.1", PROC, 987,
                  seq=seq, headers_cut=True, weight=4),
        ProcessEvent("exec", 1_699_999_999_999_999_999, 42, 1, 42, 0, "sh", "/bin/sh",
                     ["sh", "-c", "échec"], exit_code=None, process=PROC, seq=seq + 1),
        ProcessEvent("exit", 5, 42, exit_code=-9),
        ConnEvent("accept", 1_700_000_000_000_000_000, 42, 43, "nginx", 6, "::1", 8080,
                  "::1", 50000, process=PROC),
        LossEvent(0, "input ebpf", "ring buffer http", 3, seq=seq + 2),
        EtwEvent(1_700_000_000_000_000_000, "prov", 7, fields={"a": 1, "b": "x", "c": True,
                                                               "d": None}),
    ]


def test_every_kind_renders_from_its_bytes_as_the_python_path_does():
    events = every_kind()
    for identity in (ID, None):
        fast, slow = from_bytes_and_decoded(events, identity)
        assert fast == slow
    rows = [json.loads(x) for x in fast.splitlines()]
    assert [r["type"] for r in rows] == ["span", "http", "process", "process", "conn", "loss",
                                         "etw"]
    assert rows[0]["attrs"]["url.path"] == "/漢?q=\"x\"\\" and rows[0]["attrs"]["big"] == 2**64 - 1
    assert rows[1]["process"]["cmdline"] == ["nginx: worker \"process\"", "é\t"]


def test_events_from_bytes_go_through_the_compiled_renderer(monkeypatch):
    taken = []
    real = ndjson.render_events

    def spy(raws, start, stop, *rest):
        data, nxt = real(raws, start, stop, *rest)
        taken.append(nxt - start)
        return data, nxt

    monkeypatch.setattr(ndjson, "render_events", spy)
    events = every_kind()
    Renderer(fmt="ndjson", host="h", identity=ID).render(as_bytes(events))
    # every one in C but those with a process (a nested struct: decoded, in order)
    assert sum(taken) == len([e for e in events if getattr(e, "process", None) is None]) == 4


def test_what_the_compiled_renderer_does_not_take_is_decoded_in_order():
    metric = MetricEvent(name="http.server.request.duration", time_ns=1_700_000_000_000_000_000,
                         start_ns=5, attrs={"service.name": "x"}, count=2, sum=0.25)
    write = LogWriteEvent(5, 1, 1, 3, 1, 2, 4, b"\xffhead", 7)
    events = [every_kind()[0], metric, ev(b"a\nb\n"), write, every_kind()[1]]
    fast, slow = from_bytes_and_decoded(events)
    assert fast == slow
    assert [json.loads(x).get("type", "line") for x in fast.splitlines()] == [
        "span", "metric", "line", "line", "logwrite", "http"]


def test_an_event_whose_bytes_do_not_decode_raises_as_decoding_would():
    # a span whose time is text: msgspec rejects it; the compiled path hands it back
    bad = msgspec.msgpack.encode(["span", "noon", 2, "a" * 32, "b" * 16, "", "server", "",
                                  False, {}, {}, "", ""])
    good = as_bytes(every_kind()[:1])
    with pytest.raises(msgspec.ValidationError):
        Renderer(fmt="ndjson", host="h").render(good + [msgspec.Raw(bad)])
    with pytest.raises(msgspec.DecodeError):
        Renderer(fmt="ndjson", host="h").render([msgspec.Raw(b"\x9d\xa4span\xcb")])


attr_values = st.one_of(st.integers(-2**63, 2**64 - 1), st.text(max_size=12))


@settings(max_examples=300, deadline=None)
@given(spans=st.lists(st.tuples(st.integers(0, 2**63 - 1), st.text(max_size=16),
                                st.dictionaries(st.text(max_size=8), attr_values, max_size=5),
                                st.booleans()), min_size=1, max_size=6),
       host=st.text(max_size=10), with_lines=st.booleans())
def test_any_span_renders_from_its_bytes_as_the_python_path_does(spans, host, with_lines):
    events = [SpanEvent(t, t + 1, "a" * 32, "b" * 16, name=name, error=err, attrs=attrs,
                        resource={"service.name": name}) for t, name, attrs, err in spans]
    if with_lines:
        events.insert(1, ev(b"line\n"))
    fast, slow = from_bytes_and_decoded(events, host=host)
    assert fast == slow


# Any event of every kind, and bytes that are not quite one: the compiled path renders what the
# Python path renders, byte for byte, or hands the event back (then msgspec decodes it, or says
# what is wrong with it); it never reads or writes past what it was given.

any_text = st.text(max_size=24) | st.sampled_from(["", "\x00\x1f\x7f", "\u2028", "\U0001f600",
                                                   '"\\', "é" * 40])
i64 = st.integers(-2**63, 2**64 - 1)
any_time = st.integers(0, 2**64 - 1) | st.integers(-2**63, -1)
any_seq = st.just(0) | st.integers(1, 2**64 - 1) | st.integers(-2**63, -1)
any_proc = st.none() | st.builds(ProcessInfo, pid=i64, comm=any_text, exe=any_text,
                                 cmdline=st.lists(any_text, max_size=3), exited=st.booleans())
any_attrs = st.dictionaries(any_text, any_text | i64, max_size=5)
any_event = st.one_of(
    st.builds(SpanEvent, any_time, i64, any_text, any_text, any_text, any_text, any_text,
              st.booleans(), any_attrs, any_attrs, any_text, any_text),
    st.builds(HttpEvent, any_time, i64, i64, any_text, i64, any_text, any_text, any_text, i64,
              i64, any_text, i64, any_text, any_proc, i64, any_text, any_text, st.booleans(),
              any_seq, i64),
    st.builds(ProcessEvent, any_text, any_time, i64, i64, i64, i64, any_text, any_text,
              st.lists(any_text, max_size=4), st.none() | i64, i64, any_text, any_proc, any_seq),
    st.builds(ConnEvent, any_text, any_time, i64, i64, any_text, i64, any_text, i64, any_text,
              i64, i64, i64, any_proc, any_seq),
    st.builds(LossEvent, any_time, any_text, any_text, i64, any_seq),
    st.builds(EtwEvent, any_time, any_text, i64, i64, i64, i64, i64, i64, i64, any_text,
              any_text, st.dictionaries(any_text, any_text | i64 | st.booleans() | st.none()
                                        | st.floats(), max_size=4), any_seq))


@settings(max_examples=500, deadline=None)
@given(events=st.lists(any_event, min_size=1, max_size=5), host=any_text, ids=st.booleans())
def test_any_event_of_any_kind_renders_from_its_bytes_as_the_python_path_does(events, host, ids):
    fast, slow = from_bytes_and_decoded(events, identity=ID if ids else None, host=host)
    assert fast == slow


@settings(max_examples=1000, deadline=None)
@given(ev=any_event, ids=st.booleans(), data=st.data())
def test_bytes_that_are_not_quite_an_event_render_alike_or_are_handed_back(ev, ids, data):
    raw = bytearray(msgspec.msgpack.encode(ev))
    for _ in range(data.draw(st.integers(1, 3))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    raw = bytes(raw)
    renderer = Renderer(fmt="ndjson", host="h", identity=ID if ids else None)
    out, taken = ndjson.render_events([msgspec.Raw(raw)], 0, 1, renderer._shapes,
                                      renderer._id_prefix, ndjson.INPUT_SHIFT)
    if not taken:
        assert out == b""
        return
    decoded = ndjson._ANY_EVENT.decode(raw)  # raises if the C took what msgspec would not
    slow = Renderer(fmt="ndjson", host="h", identity=ID if ids else None, fast=False)
    assert out == slow.render([decoded])


def test_what_msgspec_would_reject_or_rewrite_is_handed_back():
    def taken(raw: bytes, identity=None) -> int:
        r = Renderer(fmt="ndjson", host="h", identity=identity)
        return ndjson.render_events([msgspec.Raw(raw)], 0, 1, r._shapes, r._id_prefix,
                                    ndjson.INPUT_SHIFT)[1]

    enc = msgspec.msgpack.encode
    assert taken(enc(["loss", 5, "src", "what", 3, 0])) == 1
    assert taken(enc(["loss", 5, "src", "what", 3, "x"])) == 0  # a seq that is not an int
    span = ["span", 1, 2, "a", "b", "", "server", "GET", False, {}, {}, "", ""]
    assert taken(enc(span)) == 1
    dup = enc(span[:9]) + b"\x82\xa1a\x01\xa1a\x02" + enc(span[10:])[1:]  # attrs {"a":1,"a":2}
    dup = bytes([0x9d]) + dup[1:]
    assert taken(dup) == 0  # msgspec keeps the last value only
    assert taken(b"") == 0 and taken(b"\xdc") == 0
    proc = ProcessEvent("exec", 5, 42, process=ProcessInfo(pid=42))
    assert taken(enc(proc)) == 0  # a process: decoded (msgspec rewrites a struct's map)


def test_times_render_as_rfc3339_ns_does_at_the_calendar_s_edges():
    # the compiled path computes the date itself (no gmtime_r): leap days, centuries, the
    # epoch and the last nanosecond a u64 holds (2554)
    day = 86400 * 10**9
    edges = [0, 1, day - 1, day, 951782400 * 10**9, 951868799 * 10**9 + 5, 4107542400 * 10**9,
             4102444800 * 10**9 - 1, 2**63, 2**64 - 1]
    events = [LossEvent(t, "input ebpf", "ring buffer", 1) for t in edges]
    fast, slow = from_bytes_and_decoded(events)
    assert fast == slow
    assert json.loads(fast.splitlines()[4])["time"] == "2000-02-29T00:00:00.000000000Z"
    assert json.loads(fast.splitlines()[-1])["time"].startswith("2554-07-21T")
