"""The record view (outputs.records) as OTLP LogRecords, each with the extra resource
attributes it belongs under (common.otlp groups them into Export requests).

A line: body = the line (a string; invalid UTF-8 became U+FFFD and is flagged),
``observed_time_unix_nano`` = when it was read (``time_unix_nano`` stays 0, "unknown": the agent
does not parse times out of lines), a severity guessed from the line's level word, attributes
``log.file.path``, ``log.file.name`` (semantic conventions), ``log_shuttle.offset`` and the
piece / invalid-UTF-8 / unterminated flags when set, and the writer as OpenTelemetry's process
attributes. The resource of a container's log holds the container the pipeline found for the file
(``container.id``, ``container.runtime``, ``k8s.pod.name``, ``k8s.namespace.name``,
``k8s.pod.uid``, ``k8s.container.name``). Any other event: ``event_name``
``log_shuttle.<kind>``, its time, a body that is a map of its fields, and the
semantic-convention attributes of the fields that have one (``process.pid``,
``http.request.method``...).
"""

from __future__ import annotations

import os
from itertools import repeat
from typing import Any

from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord

from common.events import ContainerRef, Event
from common.identity import Identity
from common.otlp import (ATTR_ID, ATTR_OFFSET, EVENT_PREFIX, FLAG_ATTRS, any_value, attributes,
                         process_attributes)
from common.severity import OTLP_NUMBER, OTLP_TEXT, event_severity, line_severity
from outputs.records import EventRecord, LineRun, view

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

_CONTAINER = (("id", "container.id"), ("runtime", "container.runtime"),
              ("pod", "k8s.pod.name"), ("namespace", "k8s.namespace.name"),
              ("pod_uid", "k8s.pod.uid"), ("name", "k8s.container.name"))


def container_resource(container: ContainerRef | None) -> tuple[tuple[str, str], ...]:
    """The resource attributes of a container (empty for none)."""
    if container is None:
        return ()
    return tuple((key, getattr(container, field)) for field, key in _CONTAINER
                 if getattr(container, field))


def line_log_records(run: LineRun) -> list[tuple[LogRecord, tuple]]:
    res = container_resource(run.container)
    common = [KeyValue(key="log.file.path", value=AnyValue(string_value=run.path)),
              KeyValue(key="log.file.name",
                       value=AnyValue(string_value=os.path.basename(run.path)))]
    flags = []
    if run.piece is not None:
        flags.append(KeyValue(key=FLAG_ATTRS[0], value=AnyValue(int_value=run.piece)))
        flags.append(KeyValue(key=FLAG_ATTRS[1], value=AnyValue(bool_value=bool(run.last_piece))))
    invalid_attr = KeyValue(key=FLAG_ATTRS[2], value=AnyValue(bool_value=True))
    rest = []
    if run.unterminated:
        rest.append(KeyValue(key=FLAG_ATTRS[3], value=AnyValue(bool_value=True)))
    if run.process is not None:
        rest += attributes(process_attributes(run.process))
    elif run.writers:
        rest.append(KeyValue(key="log_shuttle.writers.pid",
                             value=any_value([w.pid for w in run.writers])))
    read_ns = run.read_ns
    invalid = run.invalid or [False] * len(run.texts)
    ids = run.ids or repeat("")
    out = []
    for text, off, bad, rid in zip(run.texts, run.offsets, invalid, ids):
        sev = line_severity(text)
        attrs = [*common, KeyValue(key=ATTR_OFFSET, value=AnyValue(int_value=off)), *flags]
        if rid:
            attrs.append(KeyValue(key=ATTR_ID, value=AnyValue(string_value=rid)))
        if bad:
            attrs.append(invalid_attr)
        out.append((LogRecord(observed_time_unix_nano=read_ns, severity_number=OTLP_NUMBER[sev],
                              severity_text=OTLP_TEXT[sev], body=AnyValue(string_value=text),
                              attributes=attrs + rest), res))
    for j in run.joins:  # the request each joined line was written for (pipeline/logjoin.py)
        if j.index < len(out):
            rec = out[j.index][0]
            if j.ambiguous:
                rec.attributes.append(KeyValue(key="log_shuttle.join",
                                               value=AnyValue(string_value="ambiguous")))
                continue
            rec.trace_id = bytes.fromhex(j.trace_id)
            rec.span_id = bytes.fromhex(j.span_id)
            rec.attributes.extend(attributes({"http.request.method": j.method,
                                              "url.path": j.path,
                                              "http.response.status_code": j.status}))
    return out


def event_log_record(rec: EventRecord, *, now_ns: int) -> tuple[LogRecord, tuple]:
    sev = event_severity(rec.event)
    attrs: dict[str, Any] = {_SEMCONV[k]: v for k, v in rec.fields.items()
                             if k in _SEMCONV and v not in (None, "", [], 0)}
    if rec.process is not None:
        attrs.update(process_attributes(rec.process))
    if rec.id:
        attrs[ATTR_ID] = rec.id
    return LogRecord(time_unix_nano=rec.time_ns, observed_time_unix_nano=now_ns,
                     severity_number=OTLP_NUMBER[sev], severity_text=OTLP_TEXT[sev],
                     event_name=EVENT_PREFIX + rec.kind, body=any_value(rec.fields),
                     attributes=attributes(attrs)), ()


def otlp_records(events: list[Event], *, now_ns: int, identity: Identity | None = None
                 ) -> list[tuple[LogRecord, tuple]]:
    """Every record of the events as (LogRecord, extra resource attributes), in order; spans
    are not records (the gRPC output sends them through TraceService/Export)."""
    out: list[tuple[LogRecord, tuple]] = []
    for item in view(events, identity):
        if type(item) is LineRun:
            out += line_log_records(item)
        elif item.kind == "span":
            continue
        else:
            out.append(event_log_record(item, now_ns=now_ns))
    return out
