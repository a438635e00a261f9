"""`log-shuttle server` accepts OTLP metrics (MetricsService/Export) and stores every data point
as a record of type metric: from the agent's OTLP metrics sink (the points of a known load add up
to what it was), and from the OpenTelemetry SDK's own OTLP metric exporter (a real peer)."""

from __future__ import annotations

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from common.events import Batch
from outputs.base import Verdict
from outputs.otlpmetrics import OtlpMetricsSink
from tests.harness import wait_for
from tests.outputs.metric_load import load
from tests.server.helpers import Server, free_port


def test_server_stores_the_agents_otlp_metrics(tmp_path):
    intervals, want, durations = load(900)
    port = free_port()
    with Server(tmp_path, "--insecure", grpc_port=port) as server:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(
                service="opentelemetry.proto.collector.metrics.v1.MetricsService"), timeout=10)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        sink = OtlpMetricsSink(target=f"127.0.0.1:{port}", credentials=None, metadata=[],
                               host="web1", cumulative=True)
        try:
            for points in intervals:
                assert sink.send(Batch(events=points)) is Verdict.OK
        finally:
            sink.close()
        records = wait_for(lambda: server.records(), timeout=30, what="the metric records")
        assert server.stop() == 0
    hist = [r for r in records if r["name"] == "http.server.request.duration"]
    assert all(r["type"] == "metric" and r["kind"] == "histogram" and r["unit"] == "s"
               and r["temporality"] == "cumulative" and r["host"] == "web1"
               and r["resource"] == {"service.name": "nginx"} for r in hist)
    totals = {}
    for r in hist:  # cumulative: each record holds the totals so far; the last one all
        key = (r["attributes"]["http.route"], r["attributes"]["http.response.status_class"])
        totals[key] = (r["count"], r["sum"])
        assert sum(r["buckets"]) == r["count"] and len(r["bounds"]) == 14
    assert {k: c for k, (c, _) in totals.items()} == dict(want)
    for key, (_, total) in totals.items():
        assert abs(total - sum(durations[key])) < 1e-9 * len(durations[key])
    errors = {r["attributes"]["http.route"]: r["value"] for r in records
              if r["name"] == "http.server.request.errors"}
    assert errors["/boom/{id}"] == want[("/boom/{id}", "5xx")] and errors["/users/{id}"] == 0
    assert server.stats()["grpc_metric_points"] == len(records)


def test_server_stores_the_opentelemetry_sdks_metrics(tmp_path):
    from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from opentelemetry.sdk.resources import Resource

    port = free_port()
    with Server(tmp_path, "--insecure", grpc_port=port) as server:
        reader = PeriodicExportingMetricReader(
            OTLPMetricExporter(endpoint=f"127.0.0.1:{port}", insecure=True),
            export_interval_millis=60_000)
        provider = MeterProvider(metric_readers=[reader],
                                 resource=Resource.create({"service.name": "checkout"}))
        meter = provider.get_meter("sdk-test")
        orders = meter.create_counter("orders", unit="{order}")
        latency = meter.create_histogram("checkout.duration", unit="s")
        for i in range(50):
            orders.add(2, {"region": "eu" if i % 2 else "us"})
            latency.record(i / 100, {"region": "eu"})
        provider.shutdown()  # exports once more and stops the reader's thread
        records = wait_for(lambda: server.records(), timeout=30, what="the SDK's points")
        assert server.stop() == 0
    by = {(r["name"], r["attributes"].get("region")): r for r in records}
    assert by[("orders", "eu")]["value"] == 50 and by[("orders", "us")]["value"] == 50
    hist = by[("checkout.duration", "eu")]
    assert hist["count"] == 50 and abs(hist["sum"] - sum(i / 100 for i in range(50))) < 1e-9
    assert hist["resource"]["service.name"] == "checkout" and hist["scope"] == "sdk-test"
