"""The gRPC output: OTLP logs (opentelemetry.proto.collector.logs.v1.LogsService/Export), so
that any OpenTelemetry receiver takes what log-shuttle ships; spans through
opentelemetry.proto.collector.trace.v1.TraceService/Export on the same endpoint, and a line
joined to its request with the span's ``trace_id``/``span_id`` (what backends join on).

One batch becomes one or more Export requests of at most ``max_records`` records (the mapping is
in outputs.otlp); up to ``concurrency`` of them are in flight at once, each with a deadline,
gzip-compressed, with the configured headers and ``authorization: Bearer <token>``. The batch is
OK only when every request of it succeeded: the runner acknowledges it to the inputs only then.
When some requests fail retryably the sink remembers which ones succeeded, and the runner's next
attempt with the same batch sends only the others (fewer duplicates; delivery is at least once).

Status codes, per the OTLP specification: CANCELLED, DEADLINE_EXCEEDED, ABORTED, OUT_OF_RANGE,
UNAVAILABLE and DATA_LOSS are retried; RESOURCE_EXHAUSTED only when the server sent RetryInfo,
whose delay is honoured (the sink waits at least that long before its next call). Departing
from the specification, UNAUTHENTICATED, PERMISSION_DENIED, UNIMPLEMENTED and NOT_FOUND are
retried too, with an error message: they say the receiver or the credentials are misconfigured,
not that the data is bad, and dropping would lose every line until someone fixed them. Any
other code rejects the request's records for good: they are counted and dropped. A response's
``partial_success`` is logged and counted the same way (the rest of the request was accepted).
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any
from dataclasses import dataclass, field

# gRPC's core logs every failed handshake on stderr; the sink says it once, in its own words.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

import grpc  # noqa: E402
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2_grpc  # noqa: E402
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (  # noqa: E402
    ExportLogsServiceRequest)
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc  # noqa: E402
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (  # noqa: E402
    ExportTraceServiceRequest)

from common.component import Context
from common.events import Batch
from common.net import format_address, parse_address, read_token
from common.events import SpanEvent
from common.otlp import export_requests
from common.otlp_traces import span_requests
from common.tls import TlsFiles, grpc_channel_credentials
from outputs.base import Verdict
from outputs.failures import FailureReporter
from outputs.grpc_config import GrpcOutputConfig
from outputs.otlp import otlp_records
from outputs.runner import Backoff, OutputRunner

Code = grpc.StatusCode
RETRYABLE = frozenset({Code.CANCELLED, Code.DEADLINE_EXCEEDED, Code.ABORTED, Code.OUT_OF_RANGE,
                       Code.UNAVAILABLE, Code.DATA_LOSS})
MISCONFIGURED = frozenset({Code.UNAUTHENTICATED, Code.PERMISSION_DENIED, Code.UNIMPLEMENTED,
                           Code.NOT_FOUND})
_DETAILS_KEY = "grpc-status-details-bin"


def build(ctx: Context[GrpcOutputConfig]) -> OutputRunner:
    cfg = ctx.config
    ctx.one_consumer()
    host, port = parse_address(cfg.address, who=ctx.name)
    files = TlsFiles(ca=cfg.tls_ca, cert=cfg.tls_cert, key=cfg.tls_key,
                     server_name=cfg.tls_server_name)
    token = read_token(cfg.auth_token_file, who=ctx.name)
    credentials = None if cfg.insecure else grpc_channel_credentials(files, who=ctx.name)
    metadata = [(k.lower(), v) for k, v in cfg.headers.items()]
    if token:
        metadata.append(("authorization", f"Bearer {token}"))
    sink = GrpcSink(
        name=f"grpc {format_address(host, port)}", target=format_address(host, port),
        credentials=credentials, server_name=cfg.tls_server_name, metadata=metadata,
        gzip=cfg.compression == "gzip", timeout=cfg.timeout, concurrency=cfg.concurrency,
        max_records=cfg.max_records, host=ctx.host, service_name=cfg.service_name,
        reconnect_max=min(cfg.backoff_max, 5.0), log=ctx.log, identity=ctx.identity)
    return OutputRunner(ctx, sink, backoff=Backoff(maximum=cfg.backoff_max))


@dataclass
class GrpcStats:
    requests_ok: int = 0
    requests_retried: int = 0
    records_sent: int = 0
    records_rejected: int = 0
    """Dropped for good: a non-retryable status, or the receiver's partial_success."""
    codes: dict[str, int] = field(default_factory=dict)


@dataclass
class _Outcome:
    rejected: int = 0
    retry: bool = False
    delay: float = 0.0
    message: str = ""
    code: str = ""


class GrpcSink:
    def __init__(self, *, name: str, target: str, credentials: grpc.ChannelCredentials | None,
                 server_name: str = "", metadata: list[tuple[str, str]] = (), gzip: bool = True,
                 timeout: float = 10.0, concurrency: int = 4, max_records: int,
                 host: str, service_name: str = "", reconnect_max: float = 5.0,
                 log: logging.Logger | None = None, identity: Any = None) -> None:
        self.identity = identity
        self.name = name
        self.target = target
        self.metadata = tuple(metadata)
        self.compression = grpc.Compression.Gzip if gzip else grpc.Compression.NoCompression
        self.timeout = timeout
        self.concurrency = max(1, concurrency)
        self.max_records = max(1, max_records)
        self.host = host
        self.service_name = service_name
        self.log = log or logging.getLogger("log_shuttle")
        self.failures = FailureReporter(who=f"output {name}", log=self.log)
        self.stats = GrpcStats()
        self.bytes_sent = 0
        """Bytes of the Export requests the receiver accepted (serialized, before compression)."""
        options = [("grpc.initial_reconnect_backoff_ms", 100),
                   ("grpc.min_reconnect_backoff_ms", 100),
                   ("grpc.max_reconnect_backoff_ms", int(reconnect_max * 1000)),
                   ("grpc.max_send_message_length", -1),
                   ("grpc.keepalive_time_ms", 30_000)]
        if server_name:
            options.append(("grpc.ssl_target_name_override", server_name))
        if credentials is None:
            self.channel = grpc.insecure_channel(target, options=options)
        else:
            self.channel = grpc.secure_channel(target, credentials, options=options)
        self.stub = logs_service_pb2_grpc.LogsServiceStub(self.channel)
        self.trace_stub = trace_service_pb2_grpc.TraceServiceStub(self.channel)
        self._batch: Batch | None = None
        self._requests: list[tuple[ExportLogsServiceRequest | ExportTraceServiceRequest, int]] = []
        self._done: set[int] = set()
        self._rejected = 0
        self._not_before = 0.0

    def send(self, batch: Batch) -> Verdict:
        wait = self._not_before - time.monotonic()
        if wait > 0:
            time.sleep(wait)  # the receiver's RetryInfo asked for at least this long
        if self._batch is not batch:
            self._batch = batch
            self._requests = export_requests(otlp_records(batch.events, now_ns=time.time_ns(),
                                                          identity=self.identity), host=self.host,
                                             service_name=self.service_name,
                                             max_records=self.max_records)
            spans = [ev for ev in batch.events if type(ev) is SpanEvent]
            if spans:  # spans to the same endpoint, through TraceService/Export
                self._requests += span_requests(spans, host=self.host,
                                                max_spans=self.max_records)
            self._done = set()
            self._rejected = 0
        retry: list[_Outcome] = []
        for index, outcome in self._export([i for i in range(len(self._requests))
                                            if i not in self._done]):
            if outcome.retry:
                retry.append(outcome)
                continue
            self._done.add(index)
            self.bytes_sent += self._requests[index][0].ByteSize()
            if outcome.rejected:
                self._rejected += outcome.rejected
                self.stats.records_rejected += outcome.rejected
                self.log.warning("output %s: the receiver rejected %d record(s) for good: %s",
                                 self.name, outcome.rejected, outcome.message)
        if retry:
            self.stats.requests_retried += len(retry)
            delay = max(o.delay for o in retry)
            if delay:
                self._not_before = time.monotonic() + delay
            worst = next((o for o in retry if o.code in {c.name for c in MISCONFIGURED}), retry[0])
            level = logging.ERROR if worst.code in {c.name for c in MISCONFIGURED} \
                or "ssl" in worst.message.lower() or "handshake" in worst.message.lower() \
                else logging.WARNING
            self.failures.failed(worst.code, f"export to {self.target} failed: {worst.message}",
                                 level=level)
            return Verdict.RETRY
        self.failures.ok()
        total = sum(n for _, n in self._requests)
        rejected = self._rejected
        self._batch, self._requests = None, []
        if total and rejected >= total:
            return Verdict.DROP
        return Verdict.OK

    def _export(self, indexes: list[int]):
        """Run the requests with at most ``concurrency`` in flight; yield (index, outcome)."""
        flight: list[tuple[int, grpc.Future]] = []
        pending = list(indexes)
        while pending or flight:
            while pending and len(flight) < self.concurrency:
                i = pending.pop(0)
                stub = self.trace_stub if type(self._requests[i][0]) is ExportTraceServiceRequest \
                    else self.stub
                future = stub.Export.future(
                    self._requests[i][0], timeout=self.timeout, metadata=self.metadata,
                    compression=self.compression)
                flight.append((i, future))
            i, future = flight.pop(0)
            yield i, self._outcome(future, self._requests[i][1])

    def _outcome(self, future: grpc.Future, count: int) -> _Outcome:
        try:
            response = future.result()
        except grpc.RpcError as exc:
            code = exc.code()
            self.stats.codes[code.name] = self.stats.codes.get(code.name, 0) + 1
            message = f"{code.name}: {exc.details()}"
            delay = _retry_delay(exc)
            if code in RETRYABLE or code in MISCONFIGURED or \
                    (code is Code.RESOURCE_EXHAUSTED and delay is not None):
                return _Outcome(retry=True, delay=delay or 0.0, message=message, code=code.name)
            return _Outcome(rejected=count, message=message, code=code.name)
        self.stats.requests_ok += 1
        partial = response.partial_success
        rejected = min(getattr(partial, "rejected_log_records", 0) or
                       getattr(partial, "rejected_spans", 0), count)
        self.stats.records_sent += count - rejected
        return _Outcome(rejected=rejected, message=partial.error_message or "partial success")

    def close(self) -> None:
        self.channel.close()


def _retry_delay(exc: grpc.RpcError) -> float | None:
    """The delay of a google.rpc.RetryInfo in the status details, if the server sent one."""
    try:
        trailers = exc.trailing_metadata() or ()
    except Exception:  # noqa: BLE001 - a failed call may carry no metadata at all
        return None
    for key, value in trailers:
        if key != _DETAILS_KEY:
            continue
        from google.rpc import error_details_pb2, status_pb2

        status = status_pb2.Status()
        try:
            status.ParseFromString(value)
        except Exception:  # noqa: BLE001 - garbage details: as if none
            return None
        for detail in status.details:
            info = error_details_pb2.RetryInfo()
            if detail.Unpack(info):
                return info.retry_delay.seconds + info.retry_delay.nanos / 1e9
    return None
