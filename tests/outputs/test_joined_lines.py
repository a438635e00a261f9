"""A line joined to its request, as each output writes it: NDJSON (trace_id, span_id, request;
or join "ambiguous"), RFC 5424 structured data, and OTLP (the LogRecord's trace_id/span_id)."""

from __future__ import annotations

import json

from common.events import LineJoin, LogEvent
from outputs.ndjson import Renderer
from outputs.otlp import line_log_records
from outputs.records import line_run
from outputs.syslog import SyslogEncoder

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"
EV = LogEvent(path="/var/log/app.log", dev=1, ino=2, offset=0, data=b"a\nb\nc\n", lines=3,
              read_ns=1_700_000_000_000_000_000,
              joins=[LineJoin(0, TRACE, SPAN, "GET", "/x", 200), LineJoin(2, ambiguous=True)])


def test_ndjson():
    recs = [json.loads(x) for x in Renderer(fmt="ndjson", host="h").render([EV]).splitlines()]
    assert (recs[0]["trace_id"], recs[0]["span_id"]) == (TRACE, SPAN)
    assert recs[0]["request"] == {"method": "GET", "path": "/x", "status": 200}
    assert "trace_id" not in recs[1] and "join" not in recs[1]
    assert recs[2]["join"] == "ambiguous" and "trace_id" not in recs[2]


def test_syslog_structured_data():
    first, second, third = SyslogEncoder(host="h", framing="newline").messages([EV])
    assert f'trace_id="{TRACE}" span_id="{SPAN}"'.encode() in first
    assert b'http_method="GET" http_path="/x" http_status="200"' in first
    assert b"trace_id" not in second and b'join="ambiguous"' in third


def test_otlp_log_record_carries_the_ids():
    (joined, _), (plain, _), (ambiguous, _) = line_log_records(line_run(EV))
    assert joined.trace_id.hex() == TRACE and joined.span_id.hex() == SPAN
    attrs = {kv.key: kv.value for kv in joined.attributes}
    assert attrs["url.path"].string_value == "/x"
    assert attrs["http.response.status_code"].int_value == 200
    assert plain.trace_id == b"" and plain.span_id == b""
    assert {kv.key: kv.value.string_value for kv in ambiguous.attributes}["log_shuttle.join"] \
        == "ambiguous"
