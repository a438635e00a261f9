"""The record view as OTLP LogRecords: the pipeline's process enrichment as OpenTelemetry's
process attributes, the pipeline's container as resource attributes (the path is not parsed
again)."""

from __future__ import annotations

from common.events import HttpEvent, LogEvent, ProcessInfo
from common.otlp import export_requests, py_value, records_of
from outputs.otlp import container_resource, otlp_records
from pipeline.containers import from_log_path

WRITER = ProcessInfo(pid=42, ppid=1, comm="app", exe="/usr/bin/app", cmdline=["app", "-v"],
                     user="www", container_id="ab" * 32, how="fd")


def attrs(record) -> dict:
    return {kv.key: py_value(kv.value) for kv in record.attributes}


def test_a_lines_writer_becomes_process_attributes():
    ev = LogEvent(path="/var/log/app.log", dev=1, ino=2, offset=0, data=b"hello\n", lines=1,
                  read_ns=5, writers=[WRITER])
    ((lr, res),) = otlp_records([ev], now_ns=9)
    a = attrs(lr)
    assert a["process.pid"] == 42 and a["process.executable.path"] == "/usr/bin/app"
    assert a["process.command_args"] == ["app", "-v"] and a["process.owner"] == "www"
    assert a["container.id"] == "ab" * 32 and a["log_shuttle.process.how"] == "fd"
    assert lr.observed_time_unix_nano == 5 and lr.body.string_value == "hello" and res == ()
    two = LogEvent(path="/a", dev=1, ino=2, offset=0, data=b"x\n", lines=1, read_ns=5,
                   writers=[WRITER, ProcessInfo(pid=43)])
    a = attrs(otlp_records([two], now_ns=9)[0][0])
    assert a["log_shuttle.writers.pid"] == [42, 43] and "process.pid" not in a


def test_lines_offsets_and_flags_read_back_by_the_server():
    ev = LogEvent(path="/var/log/app.log", dev=1, ino=2, offset=10, data=b"ERROR a\nb\xff\n",
                  lines=2, read_ns=5)
    ((request, n),) = export_requests(otlp_records([ev], now_ns=9), host="h", max_records=1000)
    got = records_of(request)
    assert n == 2 and [(r["offset"], r["line"], r["severity"]) for r in got] == [
        (10, "ERROR a", "ERROR"), (18, "b\ufffd", "INFO")]
    assert got[1]["invalid_utf8"] is True and "invalid_utf8" not in got[0]


def test_container_resource_from_the_pipelines_container():
    path = ("/var/log/containers/web-7d9_shop_nginx-" + "c" * 64 + ".log")
    c = from_log_path(path)
    ev = LogEvent(path=path, dev=1, ino=2, offset=0, data=b"x\n", lines=1, read_ns=5,
                  container=c)
    ((_, res),) = otlp_records([ev], now_ns=9)
    assert dict(res) == {"container.id": "c" * 64, "k8s.pod.name": "web-7d9",
                         "k8s.namespace.name": "shop", "k8s.container.name": "nginx"}
    assert container_resource(None) == ()
    # Without the pipeline's container, the path alone gives nothing: it is not parsed again.
    bare = LogEvent(path=path, dev=1, ino=2, offset=0, data=b"x\n", lines=1, read_ns=5)
    assert otlp_records([bare], now_ns=9)[0][1] == ()


def test_an_events_process_becomes_attributes_not_a_string_in_the_body():
    ev = HttpEvent(time_ns=1, pid=42, tid=42, comm="app", fd=3, direction="server",
                   method="GET", path="/x", status=200, process=WRITER)
    ((lr, _),) = otlp_records([ev], now_ns=2)
    a = attrs(lr)
    assert a["process.pid"] == 42 and a["process.executable.path"] == "/usr/bin/app"
    assert a["http.request.method"] == "GET" and lr.event_name == "log_shuttle.http"
    body = py_value(lr.body)
    assert "process" not in body and body["path"] == "/x"
