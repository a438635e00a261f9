"""Metric points to OTLP metrics messages and back, with the published opentelemetry-proto
modules (the agent's OTLP metrics output and the server share it, so it lives in common/).

Agent side (``export_request``): points (per-interval deltas, or cumulative totals) are grouped
by resource, which is the service: ``service.name`` and ``container.id`` move from the point's
attributes to the resource, with ``host.name``; one ScopeMetrics (scope ``log-shuttle``); one
Metric per name: the durations as Histograms (unit ``s``, explicit bounds, bucket counts, count,
sum), their errors as a monotonic Sum ``http.server.request.errors`` (unit ``{request}``), TCP
connections opened as a monotonic Sum (unit ``{connection}``), all with the temporality asked
for.

Server side (``metric_records``): every data point of a request as one NDJSON-ready dict.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import (AggregationTemporality, Histogram,
                                                        HistogramDataPoint, Metric,
                                                        NumberDataPoint, ResourceMetrics,
                                                        ScopeMetrics, Sum)
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from common.timefmt import rfc3339_ns

SCOPE = "log-shuttle"
RESOURCE_KEYS = ("service.name", "container.id")
DELTA = AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA
CUMULATIVE = AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
_UNITS = {"tcp.connection.opened": "{connection}"}


def _kv(attrs: Iterable[tuple[str, str]]) -> list[KeyValue]:
    return [KeyValue(key=k, value=AnyValue(string_value=v)) for k, v in attrs]


def export_request(points: Iterable[Any], *, host: str, cumulative: bool = True
                   ) -> ExportMetricsServiceRequest:
    """``points``: MetricEvents (deltas) or outputs.metricstate.Series (totals); each has
    name, kind, attrs, start_ns, time_ns, count, errors, sum, bounds, buckets."""
    temporality = CUMULATIVE if cumulative else DELTA
    resources: dict[tuple, dict[str, list]] = {}
    for p in points:
        res = tuple((k, p.attrs[k]) for k in RESOURCE_KEYS if k in p.attrs)
        attrs = _kv(sorted((k, v) for k, v in p.attrs.items() if k not in RESOURCE_KEYS))
        metrics = resources.setdefault(res, {})
        if p.kind == "histogram":
            metrics.setdefault(p.name, []).append(HistogramDataPoint(
                attributes=attrs, start_time_unix_nano=p.start_ns, time_unix_nano=p.time_ns,
                count=p.count, sum=p.sum, bucket_counts=list(p.buckets),
                explicit_bounds=list(p.bounds)))
            if p.name.startswith("http."):
                metrics.setdefault(p.name.removesuffix(".duration") + ".errors", []).append(
                    NumberDataPoint(attributes=attrs, start_time_unix_nano=p.start_ns,
                                    time_unix_nano=p.time_ns, as_int=p.errors))
        else:
            metrics.setdefault(p.name, []).append(NumberDataPoint(
                attributes=attrs, start_time_unix_nano=p.start_ns, time_unix_nano=p.time_ns,
                as_int=p.count))
    scope = InstrumentationScope(name=SCOPE)
    out = []
    for res, metrics in resources.items():
        built = []
        for name, dps in metrics.items():
            if isinstance(dps[0], HistogramDataPoint):
                built.append(Metric(name=name, unit="s", histogram=Histogram(
                    data_points=dps, aggregation_temporality=temporality)))
            else:
                built.append(Metric(name=name, unit=_UNITS.get(name, "{request}"), sum=Sum(
                    data_points=dps, aggregation_temporality=temporality, is_monotonic=True)))
        out.append(ResourceMetrics(resource=Resource(attributes=_kv((("host.name", host),)
                                                                    + res)),
                                   scope_metrics=[ScopeMetrics(scope=scope, metrics=built)]))
    return ExportMetricsServiceRequest(resource_metrics=out)


def count_points(request: ExportMetricsServiceRequest) -> int:
    n = 0
    for rm in request.resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                kind = m.WhichOneof("data")
                if kind is not None:
                    n += len(getattr(m, kind).data_points)
    return n


def _value(v: AnyValue) -> Any:
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind in ("string_value", "int_value", "double_value",
                                        "bool_value") else str(v)


def metric_records(request: ExportMetricsServiceRequest) -> list[dict[str, Any]]:
    """One dict per data point: ``type`` ``metric``, name, unit, kind, temporality, times,
    resource and attributes, and the values."""
    out = []
    for rm in request.resource_metrics:
        res = {kv.key: _value(kv.value) for kv in rm.resource.attributes}
        host = res.pop("host.name", "")
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                kind = m.WhichOneof("data")
                if kind not in ("histogram", "sum", "gauge"):
                    continue
                data = getattr(m, kind)
                temporality = {DELTA: "delta", CUMULATIVE: "cumulative"}.get(
                    getattr(data, "aggregation_temporality", 0), "")
                for dp in data.data_points:
                    rec: dict[str, Any] = {
                        "time": rfc3339_ns(dp.time_unix_nano), "host": host, "type": "metric",
                        "name": m.name, "unit": m.unit, "kind": kind,
                        "start": rfc3339_ns(dp.start_time_unix_nano),
                        "attributes": {kv.key: _value(kv.value) for kv in dp.attributes}}
                    if temporality:
                        rec["temporality"] = temporality
                    if kind == "histogram":
                        rec.update(count=dp.count, sum=dp.sum, bounds=list(dp.explicit_bounds),
                                   buckets=list(dp.bucket_counts))
                    else:
                        rec["value"] = dp.as_int if dp.WhichOneof("value") == "as_int" \
                            else dp.as_double
                    if res:
                        rec["resource"] = res
                    if sm.scope.name and sm.scope.name != SCOPE:
                        rec["scope"] = sm.scope.name
                    out.append(rec)
    return out
