"""Events to OTLP log messages and back, with the published opentelemetry-proto modules.

Agent side (``export_requests``, ``attributes``, ``process_attributes``; records are made from
the outputs' record view by outputs.otlp): records grouped into Export requests, the resource
holding ``host.name``, ``service.name`` when configured, and each record's extra resource
attributes (its container).

Server side (``records_of``): every LogRecord of a request becomes one NDJSON-ready dict; a
record that came from log-shuttle reads back as the agent's own record (time, host, path,
offset, line, flags) so that agent -> server -> file gives the lines the agent read.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Any

import msgspec
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import (AnyValue, ArrayValue, InstrumentationScope,
                                                        KeyValue, KeyValueList)
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from common.timefmt import rfc3339_ns

SCOPE = "log-shuttle"
EVENT_PREFIX = "log_shuttle."
ATTR_OFFSET = "log_shuttle.offset"
ATTR_ID = "log_shuttle.record_id"
"""The record's stable id (common.identity): a receiver can drop what it already has."""
FLAG_ATTRS = ("log_shuttle.piece", "log_shuttle.last_piece", "log_shuttle.invalid_utf8",
              "log_shuttle.unterminated")


def _scope_version() -> str:
    try:
        return version("log-shuttle")
    except PackageNotFoundError:
        return ""


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
    if ATTR_ID in attrs:
        rec["id"] = attrs.pop(ATTR_ID)
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
