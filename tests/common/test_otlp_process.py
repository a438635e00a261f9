"""The pipeline's process enrichment reaches OTLP as OpenTelemetry's process attributes."""

from __future__ import annotations

from common.events import HttpEvent, LogEvent, ProcessInfo
from common.otlp import event_log_record, line_log_record, py_value
from outputs.records import log_records

WRITER = ProcessInfo(pid=42, ppid=1, comm="app", exe="/usr/bin/app", cmdline=["app", "-v"],
                     user="www", container_id="ab" * 32, how="fd")


def attrs(record) -> dict:
    return {kv.key: py_value(kv.value) for kv in record.attributes}


def test_a_lines_writer_becomes_process_attributes():
    ev = LogEvent(path="/var/log/app.log", dev=1, ino=2, offset=0, data=b"hello\n", lines=1,
                  read_ns=5, writers=[WRITER])
    (rec,) = log_records(ev, "h")
    lr, _ = line_log_record(rec, read_ns=5)
    a = attrs(lr)
    assert a["process.pid"] == 42 and a["process.executable.path"] == "/usr/bin/app"
    assert a["process.command_args"] == ["app", "-v"] and a["process.owner"] == "www"
    assert a["container.id"] == "ab" * 32 and a["log_shuttle.process.how"] == "fd"
    two = LogEvent(path="/a", dev=1, ino=2, offset=0, data=b"x\n", lines=1, read_ns=5,
                   writers=[WRITER, ProcessInfo(pid=43)])
    (rec,) = log_records(two, "h")
    a = attrs(line_log_record(rec, read_ns=5)[0])
    assert a["log_shuttle.writers.pid"] == [42, 43] and "process.pid" not in a


def test_an_events_process_becomes_attributes_not_a_string_in_the_body():
    ev = HttpEvent(time_ns=1, pid=42, tid=42, comm="app", fd=3, direction="server",
                   method="GET", path="/x", status=200, process=WRITER)
    lr, _ = event_log_record(ev, now_ns=2)
    a = attrs(lr)
    assert a["process.pid"] == 42 and a["process.executable.path"] == "/usr/bin/app"
    assert a["http.request.method"] == "GET"
    body = py_value(lr.body)
    assert "process" not in body and body["path"] == "/x"
