"""The server's gRPC receiver: OTLP LogsService/Export, OTLP TraceService/Export (each span a
record of ``type`` span, common.otlp_traces), OTLP MetricsService/Export (each data
point a record of ``type`` metric, common.otlp_metrics) and the standard grpc.health.v1 service,
on grpc.aio (the same asyncio loop as the TCP receiver).

An Export is answered only after its records were written (common.otlp maps them to NDJSON
records): a success tells the client that the server has them. A token, when configured, must
come as ``authorization: Bearer <token>`` on every Export (the health service is open, as load
balancers probe it without credentials); a wrong or missing one is UNAUTHENTICATED. Limits: the
largest message (``max_message_bytes``, RESOURCE_EXHAUSTED beyond), idle connections closed
after ``idle_timeout``, and at most ``max_calls`` calls at once (more are answered
RESOURCE_EXHAUSTED with a RetryInfo of RETRY_AFTER seconds, so that OTLP clients retry rather
than drop, and counted).
"""

from __future__ import annotations

import hmac
import logging
from collections import Counter
from collections.abc import Callable
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.collector.metrics.v1 import (metrics_service_pb2,
                                                      metrics_service_pb2_grpc)
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from common.otlp import records_of
from common.otlp_metrics import metric_records
from common.otlp_traces import span_records

SERVICE = "opentelemetry.proto.collector.logs.v1.LogsService"
METRICS_SERVICE = "opentelemetry.proto.collector.metrics.v1.MetricsService"
_HEALTH_PREFIX = "/grpc.health.v1.Health/"
RETRY_AFTER = 1.0
"""Seconds a client refused for too many calls at once is told to wait (RetryInfo)."""


def _retry_info(seconds: float) -> tuple[tuple[str, bytes], ...]:
    from google.protobuf import duration_pb2
    from google.rpc import code_pb2, error_details_pb2, status_pb2

    status = status_pb2.Status(code=code_pb2.RESOURCE_EXHAUSTED, message="too many calls at once")
    status.details.add().Pack(error_details_pb2.RetryInfo(
        retry_delay=duration_pb2.Duration(seconds=int(seconds),
                                          nanos=int(seconds % 1 * 1e9))))
    return (("grpc-status-details-bin", status.SerializeToString()),)


class CallLimit(grpc.aio.ServerInterceptor):
    """At most ``limit`` calls at once (a health Watch holds one for as long as it watches)."""

    def __init__(self, *, limit: int, counts: Counter, log: logging.Logger) -> None:
        self.limit = limit
        self.active = 0
        self.counts = counts
        self.log = log
        self.trailer = _retry_info(RETRY_AFTER)

    async def _refuse(self, context: grpc.aio.ServicerContext) -> None:
        self.counts["grpc_error_too_many_calls"] += 1
        self.log.warning("grpc: refused a call: %d calls at once already", self.active)
        await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "too many calls at once",
                            trailing_metadata=self.trailer)

    async def intercept_service(self, continuation, details):
        handler = await continuation(details)
        if handler is None:
            return None
        if handler.unary_unary is not None:
            inner = handler.unary_unary

            async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
                if self.active >= self.limit:
                    await self._refuse(context)
                self.active += 1
                try:
                    return await inner(request, context)
                finally:
                    self.active -= 1

            return grpc.unary_unary_rpc_method_handler(
                unary, request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer)
        if handler.unary_stream is not None:
            inner_stream = handler.unary_stream

            async def stream(request: Any, context: grpc.aio.ServicerContext) -> None:
                if self.active >= self.limit:
                    await self._refuse(context)
                self.active += 1
                try:
                    result = inner_stream(request, context)
                    if hasattr(result, "__aiter__"):
                        async for item in result:
                            await context.write(item)
                    else:
                        await result
                finally:
                    self.active -= 1

            return grpc.unary_stream_rpc_method_handler(
                stream, request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer)
        return handler  # no streaming-request methods are served


class LogsServicer(logs_service_pb2_grpc.LogsServiceServicer):
    def __init__(self, *, write: Callable[[list[dict[str, Any]]], None], counts: Counter) -> None:
        self.write = write
        self.counts = counts

    async def Export(self, request, context):  # noqa: N802 - the proto's name
        records = records_of(request)
        self.write(records)
        self.counts["grpc_exports"] += 1
        self.counts["grpc_records"] += len(records)
        return logs_service_pb2.ExportLogsServiceResponse()


class TraceServicer(trace_service_pb2_grpc.TraceServiceServicer):
    """OTLP traces: each span written as a ``type: "span"`` record (the agent's own shape)."""

    def __init__(self, *, write: Callable[[list[dict[str, Any]]], None], counts: Counter) -> None:
        self.write = write
        self.counts = counts

    async def Export(self, request, context):  # noqa: N802 - the proto's name
        records = span_records(request)
        self.write(records)
        self.counts["grpc_trace_exports"] += 1
        self.counts["grpc_spans"] += len(records)
        return trace_service_pb2.ExportTraceServiceResponse()


class MetricsServicer(metrics_service_pb2_grpc.MetricsServiceServicer):
    """OTLP metrics: every data point stored as one record of ``type`` metric
    (common.otlp_metrics.metric_records), answered once written, as the logs are."""

    def __init__(self, *, write: Callable[[list[dict[str, Any]]], None], counts: Counter) -> None:
        self.write = write
        self.counts = counts

    async def Export(self, request, context):  # noqa: N802 - the proto's name
        records = metric_records(request)
        self.write(records)
        self.counts["grpc_metric_exports"] += 1
        self.counts["grpc_metric_points"] += len(records)
        return metrics_service_pb2.ExportMetricsServiceResponse()


class TokenInterceptor(grpc.aio.ServerInterceptor):
    """Every call but the health service's must carry ``authorization: Bearer <token>``."""

    def __init__(self, *, token: str, counts: Counter, log: logging.Logger) -> None:
        self.expected = f"Bearer {token}".encode()
        self.counts = counts
        self.log = log

        async def deny(_request: Any, context: grpc.aio.ServicerContext) -> None:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED,
                                "missing or wrong bearer token (authorization metadata)")

        self._deny = grpc.unary_unary_rpc_method_handler(deny)

    async def intercept_service(self, continuation, details):
        if details.method.startswith(_HEALTH_PREFIX):
            return await continuation(details)
        given = next((v for k, v in details.invocation_metadata or () if k == "authorization"), "")
        if isinstance(given, str):
            given = given.encode()
        if hmac.compare_digest(given, self.expected):
            return await continuation(details)
        self.counts["grpc_error_auth"] += 1
        self.log.warning("grpc: refused a call to %s: missing or wrong token", details.method)
        return self._deny


class GrpcReceiver:
    def __init__(self, *, addresses: list[str], credentials: grpc.ServerCredentials | None,
                 token: str, max_message_bytes: int, idle_timeout: float,
                 write: Callable[[list[dict[str, Any]]], None], counts: Counter,
                 log: logging.Logger, max_calls: int = 1024) -> None:
        interceptors: list[grpc.aio.ServerInterceptor] = [
            CallLimit(limit=max_calls, counts=counts, log=log)]
        if token:
            interceptors.append(TokenInterceptor(token=token, counts=counts, log=log))
        self.server = grpc.aio.server(
            interceptors=interceptors,
            options=[("grpc.max_receive_message_length", max_message_bytes),
                     ("grpc.max_connection_idle_ms", int(idle_timeout * 1000)),
                     ("grpc.so_reuseport", 0)])
        logs_service_pb2_grpc.add_LogsServiceServicer_to_server(
            LogsServicer(write=write, counts=counts), self.server)
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(
            TraceServicer(write=write, counts=counts), self.server)
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(
            MetricsServicer(write=write, counts=counts), self.server)
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        self.ports: list[int] = []
        for address in addresses:
            if credentials is None:
                port = self.server.add_insecure_port(address)
            else:
                port = self.server.add_secure_port(address, credentials)
            if not port:
                raise OSError(f"cannot listen on {address}")
            self.ports.append(port)

    async def start(self) -> None:
        await self.server.start()
        for name in ("", SERVICE, METRICS_SERVICE):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)

    async def drain(self, timeout: float) -> None:
        """Say NOT_SERVING, refuse new calls, let calls in flight finish (up to ``timeout``)."""
        for name in ("", SERVICE, METRICS_SERVICE):
            await self.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        await self.server.stop(timeout)
