"""Spans through OTLP TraceService/Export: the agent's gRPC output to a real `log-shuttle
server` (spans stored as ``type: "span"`` records beside the lines joined to them, which carry
the same trace and span ids), the published protos' round trip, and the OpenTelemetry SDK's
own span exporter to the same server."""

from __future__ import annotations

import time

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from common.events import SpanEvent
from common.otlp_traces import span_records, span_requests
from tests.harness import wait_for
from tests.inputs.ebpf.conftest import needs_ebpf
from tests.server.helpers import Server, free_port

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


def written(server: Server) -> list[dict]:
    """The records the server has written so far (a line being written is left out)."""
    import json
    path = server.dir / "received.ndjson"
    if not path.exists():
        return []
    data = path.read_bytes()
    return [json.loads(x) for x in data[:data.rfind(b"\n") + 1].splitlines()]


def span(**kw) -> SpanEvent:
    base = dict(time_ns=1_700_000_000_000_000_000, end_ns=1_700_000_000_003_000_000,
                trace_id=TRACE, span_id="00f067aa0ba902b7", parent_span_id="1111111111111111",
                kind="server", name="GET", error=True,
                attrs={"http.request.method": "GET", "url.path": "/x",
                       "http.response.status_code": 503},
                resource={"service.name": "nginx", "process.pid": 42}, tracestate="a=b",
                parent_how="connection")
    base.update(kw)
    return SpanEvent(**base)


def test_spans_round_trip_through_the_published_protos():
    (request, n), = span_requests([span(), span(span_id="2222222222222222", kind="client",
                                                error=False)], host="web-1")
    assert n == 2
    parsed = ExportTraceServiceRequest.FromString(request.SerializeToString())
    (rs,) = parsed.resource_spans
    res = {kv.key: kv.value for kv in rs.resource.attributes}
    assert res["service.name"].string_value == "nginx" and res["host.name"].string_value == "web-1"
    first = rs.scope_spans[0].spans[0]
    assert first.trace_id.hex() == TRACE and first.kind == first.SPAN_KIND_SERVER
    assert first.status.code == first.status.STATUS_CODE_ERROR
    assert first.end_time_unix_nano - first.start_time_unix_nano == 3_000_000
    recs = span_records(parsed)
    assert recs[0] == {"time": "2023-11-14T22:13:20.000000000Z", "host": "web-1", "type": "span",
                       "end_ns": 1_700_000_000_003_000_000, "trace_id": TRACE,
                       "span_id": "00f067aa0ba902b7", "parent_span_id": "1111111111111111",
                       "kind": "server", "name": "GET", "error": True,
                       "attrs": {"http.request.method": "GET", "url.path": "/x",
                                 "http.response.status_code": 503},
                       "resource": {"service.name": "nginx", "process.pid": 42},
                       "tracestate": "a=b", "parent_how": "connection"}
    assert recs[1]["kind"] == "client" and recs[1]["error"] is False


def test_the_opentelemetry_sdk_exporter_still_works(tmp_path):
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    port = free_port()
    with Server(tmp_path, "--insecure", grpc_port=port) as server:
        provider = TracerProvider(resource=Resource.create({"service.name": "sdk-app"}))
        provider.add_span_processor(SimpleSpanProcessor(
            OTLPSpanExporter(endpoint=f"127.0.0.1:{port}", insecure=True)))
        tracer = provider.get_tracer("sdk-test")
        with tracer.start_as_current_span("outer") as outer:
            with tracer.start_as_current_span("inner"):
                pass
        provider.shutdown()
        recs = wait_for(lambda: [r for r in written(server) if r.get("type") == "span"]
                        if len(written(server)) >= 2 else None, what="the SDK's spans")
        assert server.stop() == 0
    by = {r["name"]: r for r in recs}
    ctx = outer.get_span_context()
    assert by["outer"]["trace_id"] == by["inner"]["trace_id"] == f"{ctx.trace_id:032x}"
    assert by["inner"]["parent_span_id"] == by["outer"]["span_id"] == f"{ctx.span_id:016x}"
    assert by["outer"]["resource"]["service.name"] == "sdk-app"
    assert by["outer"]["scope"] == "sdk-test" and by["outer"]["kind"] == "internal"
    assert server.stats()["grpc_spans"] == 2


@needs_ebpf
def test_spans_and_joined_lines_reach_the_server_through_the_grpc_output(tmp_path):
    from tests.pipeline.test_tracing_live import Service, get, start_agent, warm_up
    from tests.pipeline.test_tracing_live import free_port as port_for

    grpc_port, app_port, log = free_port(), port_for(), tmp_path / "app.log"
    svc = Service("backend", str(app_port), str(log))
    try:
        with Server(tmp_path, "--insecure", grpc_port=grpc_port) as server:
            with start_agent(tmp_path, "--input-file", str(log), "--output-grpc",
                             f"127.0.0.1:{grpc_port}", "--insecure") as agent:
                def joined_in_server():
                    get(app_port, "/warm/up")
                    return any(r.get("trace_id") and r.get("path") == str(log)
                               for r in written(server))
                wait_for(joined_in_server, timeout=60, interval=0.3, what="a joined line")
                for i in range(20):
                    assert get(app_port, f"/g/r{i}") == 200

                def all_there():
                    recs = written(server)
                    lines = [r for r in recs if r.get("path") == str(log) and "id=r" in
                             r["line"]]
                    return recs if len(lines) >= 20 else None
                recs = wait_for(all_there, timeout=30, what="the lines in the server")
                time.sleep(1)  # the spans of the last requests
                assert agent.stop() == 0, agent.stderr()
            assert server.stop() == 0
            recs = server.records()
    finally:
        svc.stop()
    spans = {r["span_id"]: r for r in recs if r.get("type") == "span"
             and r["resource"].get("process.pid") == svc.proc.pid}
    lines = [r for r in recs if r.get("path") == str(log) and "id=r" in r["line"]]
    assert len(lines) == 20
    for r in lines:
        rid = r["line"].rsplit("id=", 1)[1]
        s = spans[r["span_id"]]
        assert s["trace_id"] == r["trace_id"] and s["attrs"]["url.path"] == f"/g/{rid}"
        assert s["kind"] == "server" and s["attrs"]["http.response.status_code"] == 200
        assert r["attributes"]["url.path"] == f"/g/{rid}"
        assert s["resource"]["service.name"].startswith("python")
