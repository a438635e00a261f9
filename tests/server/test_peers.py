"""``log-shuttle server`` receiving from real clients written by others: the OpenTelemetry Python
SDK's OTLP gRPC log exporter, and rsyslog's omfwd (octet-counted RFC 5424)."""

from __future__ import annotations

import logging
import socket

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.harness import wait_for
from tests.server.helpers import Server, free_port, rsyslog


def test_otel_sdk_exporter_records_arrive_intact(tmp_path):
    from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
    from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
    from opentelemetry.sdk.resources import Resource

    port = free_port()
    with Server(tmp_path, "--insecure", grpc_port=port) as server:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(
                    service="opentelemetry.proto.collector.logs.v1.LogsService"), timeout=10)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        provider = LoggerProvider(resource=Resource.create({"service.name": "checkout",
                                                            "host.name": "sdk-host"}))
        provider.add_log_record_processor(BatchLogRecordProcessor(
            OTLPLogExporter(endpoint=f"127.0.0.1:{port}", insecure=True)))
        logger = logging.getLogger("sdk-test")
        logger.propagate = False
        handler = LoggingHandler(level=logging.DEBUG, logger_provider=provider)
        logger.addHandler(handler)
        try:
            for i in range(200):
                logger.warning("order %d: payment \"declined\" é", i, extra={"order.id": i})
            logger.error("last one")
        finally:
            logger.removeHandler(handler)
            provider.shutdown()          # flushes the batch processor, stops its thread
        records = wait_for(lambda: len(server.records()) >= 201 and server.records(),
                           timeout=30, what="the SDK's records")
        assert server.stop() == 0
    lines = [r["line"] for r in records]
    assert lines == [f"order {i}: payment \"declined\" é" for i in range(200)] + ["last one"]
    first = records[0]
    assert first["host"] == "sdk-host"
    assert first["resource"]["service.name"] == "checkout"
    assert first["severity"] == "WARN" and records[-1]["severity"] == "ERROR"
    assert first["attributes"]["order.id"] == 0
    assert first["scope"] == "sdk-test"
    assert server.stats()["grpc_records"] == 201


def test_rsyslog_omfwd_octet_counted_to_server(tmp_path):
    server_port, rsyslog_port = free_port(), free_port()
    with Server(tmp_path, "--insecure", tcp_port=server_port) as server:
        with rsyslog(tmp_path, port=rsyslog_port, out=tmp_path / "rsyslog.out",
                     forward_to=server_port):
            with socket.create_connection(("127.0.0.1", rsyslog_port)) as s:
                s.sendall(b"".join(
                    b'<134>1 2026-11-25T01:02:03.000004Z web-1 shop 42 ID7 '
                    b'[x@32473 k="v\\"q"] message %d with spaces\n' % i for i in range(100)))
            records = wait_for(lambda: len(server.records()) >= 100 and server.records(),
                               timeout=30, what="rsyslog's forwarded messages")
        assert server.stop() == 0
    assert [r["line"] for r in records] == [f"message {i} with spaces" for i in range(100)]
    r = records[0]
    assert (r["host"], r["app"], r["procid"], r["msgid"]) == ("web-1", "shop", "42", "ID7")
    assert (r["facility"], r["severity"]) == ("local0", "info")
    assert r["sd"] == {"x@32473": {"k": 'v"q'}}
    assert r["time"].startswith("2026-11-25T01:02:03.000004")
    assert server.stats()["tcp_records"] == 100
