"""The record view (one LineRun per event, column by column) and its NDJSON and text forms:
offsets, flags, formats."""

from __future__ import annotations

import json

from common.events import (LAST_PIECE, PIECE, RECORD, UNTERMINATED, ContainerRef, HttpEvent,
                           LogEvent)
from outputs.ndjson import Renderer, records
from common.timefmt import rfc3339_ns
from outputs.records import EventRecord, LineRun, view


def ev(data: bytes, *, offset=100, lines=None, flags=0, piece=0, **kw) -> LogEvent:
    return LogEvent(path="/var/log/a.log", dev=1, ino=2, offset=offset, data=data,
                    lines=data.count(b"\n") if lines is None else lines,
                    read_ns=1_700_000_000_123_456_789, flags=flags, piece=piece, **kw)


def test_rfc3339_with_nanoseconds():
    assert rfc3339_ns(1_700_000_000_123_456_789) == "2023-11-14T22:13:20.123456789Z"
    assert rfc3339_ns(5) == "1970-01-01T00:00:00.000000005Z"


def test_one_view_item_per_event_with_columns_not_objects_per_line():
    h = HttpEvent(time_ns=5, pid=10, tid=11, comm="nginx", fd=3, direction="server",
                  method="GET", path="/x")
    run, other = view([ev(b"a\n\nccc\n"), h])
    assert type(run) is LineRun and type(other) is EventRecord
    assert run.texts == ["a", "", "ccc"] and list(run.offsets) == [100, 102, 103]
    assert run.invalid is None and run.piece is None and not run.unterminated
    assert other.kind == "http" and other.time_ns == 5 and "time_ns" not in other.fields
    assert other.fields["method"] == "GET" and other.process is None


def test_utf8_and_invalid_bytes_keep_byte_offsets():
    (run,) = view([ev("é\n".encode() + b"bad\xff\xfe\n" + b"z\n")])
    assert list(zip(run.offsets, run.texts, run.invalid)) == [
        (100, "é", False), (103, "bad\ufffd\ufffd", True), (109, "z", False)]
    (run,) = view([ev("é\nü\n".encode())])
    assert list(run.offsets) == [100, 103] and run.invalid is None


def test_piece_and_unterminated_flags():
    (r,) = records([ev(b"abc", flags=PIECE, piece=0, lines=1)], "h")
    assert (r.line, r.piece, r.last_piece) == ("abc", 0, False)
    (r,) = records([ev(b"de\n", flags=PIECE | LAST_PIECE, piece=1, lines=1)], "h")
    assert (r.line, r.piece, r.last_piece) == ("de", 1, True)
    (r,) = records([ev(b"end", flags=UNTERMINATED, lines=1)], "h")
    assert (r.line, r.unterminated, r.piece) == ("end", True, None)


def test_container_record_keeps_its_time_stream_and_container():
    c = ContainerRef(id="ab" * 32, runtime="docker")
    (r,) = records([ev(b"hi", flags=RECORD, lines=1, time_ns=7, stream="stderr",
                       container=c)], "h")
    assert (r.line, r.log_time, r.stream, r.container) == (
        "hi", "1970-01-01T00:00:00.000000007Z", "stderr", c)


def test_ndjson_has_the_documented_keys_and_omits_unset_flags():
    out = Renderer(fmt="ndjson", host="web-1").render([ev(b"hello \"x\"\n")])
    assert out.endswith(b"\n") and out.count(b"\n") == 1
    assert json.loads(out) == {"time": "2023-11-14T22:13:20.123456789Z", "host": "web-1",
                               "path": "/var/log/a.log", "offset": 100, "line": 'hello "x"'}
    out = Renderer(fmt="ndjson", host="web-1").render([ev(b"ok\n\xff\n")])
    assert [json.loads(x).get("invalid_utf8", False) for x in out.splitlines()] == [False, True]


def test_text_format():
    out = Renderer(fmt="text", host="web-1").render([ev(b"hi\n"), ev(b"p", flags=PIECE, lines=1)])
    assert out.decode().splitlines() == [
        "2023-11-14T22:13:20.123456789Z web-1 /var/log/a.log:100 hi",
        "2023-11-14T22:13:20.123456789Z web-1 /var/log/a.log:100 [piece 0] p"]


def test_other_events_render_with_their_type_and_fields():
    h = HttpEvent(time_ns=5, pid=10, tid=11, comm="nginx", fd=3, direction="server",
                  method="GET", path="/x", status=404, duration_ns=1500)
    out = Renderer(fmt="ndjson", host="h").render([h])
    rec = json.loads(out)
    assert rec["type"] == "http" and rec["time"] == "1970-01-01T00:00:00.000000005Z"
    assert (rec["method"], rec["path"], rec["status"], rec["pid"]) == ("GET", "/x", 404, 10)
    text = Renderer(fmt="text", host="h").render([h]).decode()
    assert text.startswith("1970-01-01T00:00:00.000000005Z h [http] pid=10") and "status=404" in text


def test_a_plain_line_encodes_as_the_full_record_would():
    """PlainLine (the common case's six fields) and LineRecord give the same JSON, with and
    without an id, for lines that need escaping too."""
    import msgspec

    from outputs.ndjson import LineRecord, PlainLine

    enc = msgspec.json.Encoder()
    for line in ("GET / 200", 'ua="x\\y"\tz', "caf\u00e9 \u2603", "\x00\x1f"):
        for rid in ("", "a1b2.0000000000000007.4096"):
            args = ("2026-12-06T16:33:01.343787705Z", "h\"ost", "/var/log/a b.log", 4096, line,
                    rid)
            assert enc.encode(PlainLine(*args)) == enc.encode(LineRecord(*args))
    assert list(msgspec.structs.fields(PlainLine)) == list(msgspec.structs.fields(LineRecord))[:6]


def _reference_object(ev, host: str, identity) -> dict:
    """What an event other than a LogEvent is in NDJSON, written out from the documented rule
    (docs/outputs.md): time, host, type, id (once numbered), its other fields as declared,
    process (when set)."""
    import msgspec

    from common.identity import event_id

    fields = msgspec.structs.asdict(ev)
    out = {"time": rfc3339_ns(fields.pop("time_ns")), "host": host,
           "type": type(ev).__struct_config__.tag}
    seq = fields.pop("seq", 0)
    if identity is not None and seq:
        out["id"] = event_id(identity.agent, identity.session, seq)
    process = fields.pop("process", None)
    out.update(fields)
    if process is not None:
        out["process"] = msgspec.to_builtins(process)
    return out


def test_every_other_event_kind_renders_its_keys_in_order():
    """Each kind of event but LogEvent, with and without a record id and a process: the same
    keys in the same order and the same values as the rule says, bytes parsed back."""
    from common.events import (ConnEvent, EtwEvent, LossEvent, MetricEvent, ProcessEvent,
                               ProcessInfo, SpanEvent)
    from common.identity import Identity

    proc = ProcessInfo(pid=10, ppid=1, comm="nginx", exe="/usr/sbin/nginx",
                       cmdline=["nginx", "-g", "daemon off;"], how="event")
    events = [
        ProcessEvent(kind="exec", time_ns=7, pid=10, ppid=1, argv=["a", "b"], exit_code=None,
                     seq=3),
        ProcessEvent(kind="exit", time_ns=8, pid=10, exit_code=-9, process=proc),
        ConnEvent(kind="accept", time_ns=9, pid=10, saddr="10.0.0.1", sport=80, seq=4,
                  process=proc),
        HttpEvent(time_ns=5, pid=10, tid=11, comm="nginx", fd=3, direction="server",
                  method="GET", path='/x?"q"', status=404, duration_ns=1500, process=proc,
                  traceparent="00-" + "1" * 32 + "-" + "2" * 16 + "-01", seq=5),
        LossEvent(time_ns=10, source="input ebpf", what="ring buffer http", count=2, seq=6),
        EtwEvent(time_ns=11, provider="{x}", event_id=1, fields={"a": 1, "b": None}),
        MetricEvent(name="http.server.request.duration", time_ns=12, start_ns=2,
                    attrs={"service.name": "nginx"}, count=3, sum=0.5, bounds=[0.1],
                    buckets=[2, 1]),
        SpanEvent(time_ns=13, end_ns=20, trace_id="a" * 32, span_id="b" * 16, name="GET",
                  attrs={"url.path": "/x", "http.response.status_code": 200},
                  resource={"service.name": "nginx", "process.pid": 10}),
    ]
    for identity in (None, Identity(agent="0123456789abcdef", session="89abcdef")):
        out = Renderer(fmt="ndjson", host="web-1", identity=identity).render(events)
        got = [json.loads(line) for line in out.splitlines()]
        want = [_reference_object(e, "web-1", identity) for e in events]
        assert [list(g) for g in got] == [list(w) for w in want]  # the keys' order
        assert got == want
    with_id = json.loads(Renderer(fmt="ndjson", host="h", identity=identity).render(events[:1]))
    assert with_id["id"].startswith("0123456789abcdef.89abcdef-")
