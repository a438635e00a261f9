"""The NDJSON renderer's compiled fast path (common/_speedups.c) against the Python path: the same
bytes for any batch, whatever its lines hold (quotes, backslashes, control bytes, non-ASCII,
invalid UTF-8) and whatever its runs carry (flags, writers, joins, ids); and which runs it takes."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings, strategies as st

from common.events import (FORMAT_ERROR, PIECE, UNTERMINATED, HttpEvent, LineJoin, LogEvent,
                           ProcessInfo)
from common.identity import Identity
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
