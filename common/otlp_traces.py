"""Spans to OTLP trace messages and back, with the published opentelemetry-proto modules.

Agent side (``span_requests``): SpanEvents (pipeline/spans.py) become Spans of
``ExportTraceServiceRequest``s (TraceService/Export), grouped by their resource (the process:
``service.name``, ``process.pid``..., plus ``host.name``): kind SERVER/CLIENT, ids as bytes,
status ERROR with the 5xx/4xx rule, the attributes as they are, and ``log_shuttle.parent_how``
(how the parent was found).

Server side (``span_records``): each Span of a request becomes one NDJSON-ready dict, the shape
of the agent's own ``type: "span"`` records (so ``log-shuttle trace`` reads both alike); spans of
any OpenTelemetry SDK come out the same way.
"""

from __future__ import annotations

from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

from common.events import SpanEvent
from common.otlp import SCOPE, _scope_version, attributes, py_value
from common.timefmt import rfc3339_ns

ATTR_PARENT_HOW = "log_shuttle.parent_how"
_KIND = {"server": Span.SPAN_KIND_SERVER, "client": Span.SPAN_KIND_CLIENT,
         "internal": Span.SPAN_KIND_INTERNAL, "producer": Span.SPAN_KIND_PRODUCER,
         "consumer": Span.SPAN_KIND_CONSUMER}
_KIND_NAME = {v: k for k, v in _KIND.items()}


def span_proto(ev: SpanEvent) -> Span:
    attrs = dict(ev.attrs)
    if ev.parent_how:
        attrs[ATTR_PARENT_HOW] = ev.parent_how
    return Span(trace_id=bytes.fromhex(ev.trace_id), span_id=bytes.fromhex(ev.span_id),
                parent_span_id=bytes.fromhex(ev.parent_span_id) if ev.parent_span_id else b"",
                trace_state=ev.tracestate, name=ev.name, kind=_KIND.get(ev.kind, 0),
                start_time_unix_nano=ev.time_ns, end_time_unix_nano=ev.end_ns,
                attributes=attributes(attrs),
                status=Status(code=Status.STATUS_CODE_ERROR) if ev.error else Status())


def span_requests(spans: list[SpanEvent], *, host: str, max_spans: int = 1000
                  ) -> list[tuple[ExportTraceServiceRequest, int]]:
    """Spans as Export requests of at most ``max_spans`` each, with their span counts."""
    scope = InstrumentationScope(name=SCOPE, version=_scope_version())
    out = []
    for start in range(0, len(spans), max_spans):
        chunk = spans[start:start + max_spans]
        groups: dict[tuple, list[Span]] = {}
        for ev in chunk:
            key = tuple(ev.resource.items())
            groups.setdefault(key, []).append(span_proto(ev))
        request = ExportTraceServiceRequest(resource_spans=[
            ResourceSpans(resource=Resource(attributes=attributes({"host.name": host,
                                                                   **dict(res)})),
                          scope_spans=[ScopeSpans(scope=scope, spans=protos)])
            for res, protos in groups.items()])
        out.append((request, len(chunk)))
    return out


def count_spans(request: ExportTraceServiceRequest) -> int:
    return sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)


def span_records(request: ExportTraceServiceRequest) -> list[dict[str, Any]]:
    """One dict per Span, as the agent writes its span records."""
    out = []
    for rs in request.resource_spans:
        res = {kv.key: py_value(kv.value) for kv in rs.resource.attributes}
        host = res.pop("host.name", "")
        for ss in rs.scope_spans:
            for sp in ss.spans:
                attrs = {kv.key: py_value(kv.value) for kv in sp.attributes}
                rec: dict[str, Any] = {
                    "time": rfc3339_ns(sp.start_time_unix_nano), "host": host, "type": "span",
                    "end_ns": sp.end_time_unix_nano, "trace_id": sp.trace_id.hex(),
                    "span_id": sp.span_id.hex(), "parent_span_id": sp.parent_span_id.hex(),
                    "kind": _KIND_NAME.get(sp.kind, "internal"), "name": sp.name,
                    "error": sp.status.code == Status.STATUS_CODE_ERROR,
                    "attrs": attrs, "resource": res, "tracestate": sp.trace_state,
                    "parent_how": attrs.pop(ATTR_PARENT_HOW, "")}
                if ss.scope.name and ss.scope.name != SCOPE:
                    rec["scope"] = ss.scope.name
                out.append(rec)
    return out
