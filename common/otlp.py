"""Events to OTLP log messages and back, with the published opentelemetry-proto modules.

Agent side (``line_log_record``, ``event_log_record``, ``export_requests``; the output expands
a LogEvent into lines with outputs.records first): a log line becomes a LogRecord whose body is the line (a
string; invalid UTF-8 became U+FFFD and is flagged), ``observed_time_unix_nano`` the time it was
read (``time_unix_nano`` stays 0, "unknown": the agent does not parse times out of lines), a
severity guessed from the line's level word, and attributes ``log.file.path``,
``log.file.name`` (semantic conventions), ``log_shuttle.offset`` (byte offset of the line) and
the piece / invalid-UTF-8 / unterminated flags when set. Any other event becomes a LogRecord
with ``event_name`` ``log_shuttle.<kind>`` (``log_shuttle.process``...), its time, a body that is
a map of all its fields, and the semantic-convention attributes of the fields that have one
(``process.pid``, ``http.request.method``...). The resource holds ``host.name``,
``service.name`` when configured, and the container and Kubernetes pod a file's path names
(``/var/log/containers/POD_NS_CONTAINER-ID.log``, ``/var/log/pods/NS_POD_UID/CONTAINER/N.log``,
``/var/lib/docker/containers/ID/ID-json.log``).

Server side (``records_of``): every LogRecord of a request becomes one NDJSON-ready dict; a
record that came from log-shuttle reads back as the agent's own record (time, host, path,
offset, line, flags) so that agent -> server -> file gives the lines the agent read.
"""

from __future__ import annotations

import os
import re
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import msgspec
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import (AnyValue, ArrayValue, InstrumentationScope,
                                                        KeyValue, KeyValueList)
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from common.events import Event
from common.severity import OTLP_NUMBER, OTLP_TEXT, event_severity, line_severity
from common.timefmt import rfc3339_ns

SCOPE = "log-shuttle"
EVENT_PREFIX = "log_shuttle."
ATTR_OFFSET = "log_shuttle.offset"
FLAG_ATTRS = ("log_shuttle.piece", "log_shuttle.last_piece", "log_shuttle.invalid_utf8",
              "log_shuttle.unterminated")

# Event fields that have a semantic-convention attribute.
_SEMCONV = {
    "pid": "process.pid", "ppid": "process.parent_pid", "comm": "process.executable.name",
    "filename": "process.executable.path", "argv": "process.command_args",
    "exit_code": "process.exit.code", "uid": "process.owner.uid",
    "method": "http.request.method", "status": "http.response.status_code",
    "path": "url.path", "peer_addr": "network.peer.address", "peer_port": "network.peer.port",
    "saddr": "source.address", "sport": "source.port", "daddr": "destination.address",
    "dport": "destination.port",
}

_K8S = re.compile(r"/var/log/containers/(?P<pod>[^_/]+)_(?P<ns>[^_/]+)_(?P<container>.+)-"
                  r"(?P<id>[0-9a-f]{64})\.log$")
_PODS = re.compile(r"/var/log/pods/(?P<ns>[^_/]+)_(?P<pod>[^_/]+)_(?P<uid>[^_/]+)/"
                   r"(?P<container>[^/]+)/[^/]+\.log$")
_DOCKER = re.compile(r"/var/lib/docker/containers/(?P<id>[0-9a-f]{64})/[^/]+\.log$")


def _scope_version() -> str:
    try:
        return version("log-shuttle")
    except PackageNotFoundError:
        return ""


def container_attributes(path: str) -> tuple[tuple[str, str], ...]:
    """Resource attributes a container log's path names (empty for other files)."""
    if m := _K8S.search(path):
        return (("k8s.pod.name", m["pod"]), ("k8s.namespace.name", m["ns"]),
                ("k8s.container.name", m["container"]), ("container.id", m["id"]))
    if m := _PODS.search(path):
        return (("k8s.namespace.name", m["ns"]), ("k8s.pod.name", m["pod"]),
                ("k8s.pod.uid", m["uid"]), ("k8s.container.name", m["container"]))
    if m := _DOCKER.search(path):
        return (("container.id", m["id"]),)
    return ()


# --- Python values <-> AnyValue ------------------------------------------------------------------


def process_attributes(p: Any) -> dict[str, Any]:
    """A ProcessInfo (the pipeline's enrichment) as OpenTelemetry's process/container
    attributes, plus how it was found (``log_shuttle.process.how``: event, fd or line)."""
    out: dict[str, Any] = {"process.pid": p.pid}
    for key, value in (("process.parent_pid", p.ppid), ("process.executable.name", p.comm),
                       ("process.executable.path", p.exe),
                       ("process.command_args", list(p.cmdline)), ("process.owner", p.user),
                       ("container.id", p.container_id), ("k8s.pod.uid", p.pod_uid),
                       ("log_shuttle.process.how", p.how)):
        if value:
            out[key] = value
    return out


def any_value(value: Any) -> AnyValue:
    if isinstance(value, msgspec.Struct):
        value = {k: v for k, v in msgspec.structs.asdict(value).items()
                 if v not in (None, "", [], ())}
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value) if -(1 << 63) <= value < (1 << 63) \
            else AnyValue(string_value=str(value))
    if isinstance(value, float):
        return AnyValue(double_value=value)
    if isinstance(value, str):
        return AnyValue(string_value=value)
    if isinstance(value, bytes):
        return AnyValue(bytes_value=value)
    if isinstance(value, (list, tuple)):
        return AnyValue(array_value=ArrayValue(values=[any_value(v) for v in value]))
    if isinstance(value, dict):
        return AnyValue(kvlist_value=KeyValueList(values=attributes(value)))
    if value is None:
        return AnyValue()
    return AnyValue(string_value=str(value))


def attributes(values: dict[str, Any]) -> list[KeyValue]:
    return [KeyValue(key=k, value=any_value(v)) for k, v in values.items()]


def py_value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [py_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: py_value(kv.value) for kv in value.kvlist_value.values}
    if kind == "bytes_value":
        return value.bytes_value.hex()
    return getattr(value, kind)


# --- agent side: events -> requests ---------------------------------------------------------------


def line_log_record(rec: Any, *, read_ns: int, res: tuple = ()) -> tuple[LogRecord, tuple]:
    """One line as a LogRecord. ``rec`` is a line record as outputs.records renders it (path,
    offset, line, piece, last_piece, invalid_utf8, unterminated); ``res``: extra resource
    attributes (``container_attributes(path)``)."""
    sev = line_severity(rec.line)
    attrs = [KeyValue(key="log.file.path", value=AnyValue(string_value=rec.path)),
             KeyValue(key="log.file.name", value=AnyValue(string_value=os.path.basename(rec.path))),
             KeyValue(key=ATTR_OFFSET, value=AnyValue(int_value=rec.offset))]
    if rec.piece is not None:
        attrs.append(KeyValue(key=FLAG_ATTRS[0], value=AnyValue(int_value=rec.piece)))
        attrs.append(KeyValue(key=FLAG_ATTRS[1], value=AnyValue(bool_value=bool(rec.last_piece))))
    if rec.invalid_utf8:
        attrs.append(KeyValue(key=FLAG_ATTRS[2], value=AnyValue(bool_value=True)))
    if rec.unterminated:
        attrs.append(KeyValue(key=FLAG_ATTRS[3], value=AnyValue(bool_value=True)))
    trace_id = getattr(rec, "trace_id", None)
    if trace_id:  # the request the line was written for (pipeline/logjoin.py)
        req = rec.request
        attrs += attributes({"http.request.method": req["method"], "url.path": req["path"],
                             "http.response.status_code": req["status"]})
    elif getattr(rec, "join", None):
        attrs.append(KeyValue(key="log_shuttle.join", value=AnyValue(string_value=rec.join)))
    process = getattr(rec, "process", None)
    if process is not None:
        attrs += attributes(process_attributes(process))
    elif getattr(rec, "writers", None):
        attrs.append(KeyValue(key="log_shuttle.writers.pid",
                              value=any_value([w.pid for w in rec.writers])))
    return LogRecord(observed_time_unix_nano=read_ns, severity_number=OTLP_NUMBER[sev],
                     severity_text=OTLP_TEXT[sev], body=AnyValue(string_value=rec.line),
                     attributes=attrs,
                     trace_id=bytes.fromhex(trace_id) if trace_id else b"",
                     span_id=bytes.fromhex(rec.span_id) if trace_id else b""), res


def event_log_record(ev: Event, *, now_ns: int) -> tuple[LogRecord, tuple]:
    fields = msgspec.structs.asdict(ev)
    kind = type(ev).__struct_config__.tag
    ts = fields.pop("time_ns", 0)
    sev = event_severity(ev)
    process = fields.pop("process", None)
    attrs = {_SEMCONV[k]: v for k, v in fields.items()
             if k in _SEMCONV and v not in (None, "", [], 0)}
    if process is not None:
        attrs.update(process_attributes(process))
    return LogRecord(time_unix_nano=ts, observed_time_unix_nano=now_ns,
                     severity_number=OTLP_NUMBER[sev], severity_text=OTLP_TEXT[sev],
                     event_name=EVENT_PREFIX + kind, body=any_value(fields),
                     attributes=attributes(attrs)), ()


def export_requests(records: list[tuple[LogRecord, tuple]], *, host: str,
                    service_name: str = "", max_records: int
                    ) -> list[tuple[ExportLogsServiceRequest, int]]:
    """Records (each with its extra resource attributes) as Export requests of at most
    ``max_records`` records each (no default here: the gRPC output's configuration has the one
    default), in order, each with its record count."""
    base = {"host.name": host}
    if service_name:
        base["service.name"] = service_name
    scope = InstrumentationScope(name=SCOPE, version=_scope_version())
    out = []
    for start in range(0, len(records), max_records):
        chunk = records[start:start + max_records]
        groups: dict[tuple, list[LogRecord]] = {}
        for rec, res in chunk:
            groups.setdefault(res, []).append(rec)
        request = ExportLogsServiceRequest(resource_logs=[
            ResourceLogs(resource=Resource(attributes=attributes({**base, **dict(res)})),
                         scope_logs=[ScopeLogs(scope=scope, log_records=recs)])
            for res, recs in groups.items()])
        out.append((request, len(chunk)))
    return out


# --- server side: requests -> records ------------------------------------------------------------


def count_records(request: ExportLogsServiceRequest) -> int:
    return sum(len(sl.log_records) for rl in request.resource_logs for sl in rl.scope_logs)


def records_of(request: ExportLogsServiceRequest) -> list[dict[str, Any]]:
    """One dict per LogRecord, ready to be written as NDJSON."""
    out = []
    for rl in request.resource_logs:
        res = {kv.key: py_value(kv.value) for kv in rl.resource.attributes}
        host = res.pop("host.name", "")
        for sl in rl.scope_logs:
            for lr in sl.log_records:
                out.append(_record(lr, host, res, sl.scope.name))
    return out


def _record(lr: LogRecord, host: Any, res: dict[str, Any], scope: str) -> dict[str, Any]:
    attrs = {kv.key: py_value(kv.value) for kv in lr.attributes}
    rec: dict[str, Any] = {"time": rfc3339_ns(lr.time_unix_nano or lr.observed_time_unix_nano),
                           "host": host}
    if "log.file.path" in attrs:
        rec["path"] = attrs.pop("log.file.path")
        attrs.pop("log.file.name", None)
        if ATTR_OFFSET in attrs:
            rec["offset"] = attrs.pop(ATTR_OFFSET)
    if lr.event_name:
        rec["type"] = lr.event_name.removeprefix(EVENT_PREFIX)
    body = py_value(lr.body) if lr.HasField("body") else None
    if isinstance(body, str):
        rec["line"] = body
    elif body is not None:
        rec["body"] = body
    for key in FLAG_ATTRS:
        if key in attrs:
            rec[key.removeprefix(EVENT_PREFIX)] = attrs.pop(key)
    if lr.severity_text or lr.severity_number:
        rec["severity"] = lr.severity_text or int(lr.severity_number)
    if lr.trace_id:
        rec["trace_id"] = lr.trace_id.hex()
    if lr.span_id:
        rec["span_id"] = lr.span_id.hex()
    if attrs:
        rec["attributes"] = attrs
    if res:
        rec["resource"] = res
    if scope and scope != SCOPE:
        rec["scope"] = scope
    return rec
