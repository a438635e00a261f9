"""The gRPC sink's verdicts against a scripted OTLP receiver in this process: OTLP's retryable
codes, RetryInfo, partial success, non-retryable rejections, and a retried batch that resends
only the requests that failed."""

from __future__ import annotations

import threading
import time
from concurrent import futures

import grpc
import pytest
from google.protobuf import duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc

from common.events import Batch, LogEvent
from outputs.base import Verdict
from outputs.grpc import GrpcSink


class Scripted(logs_service_pb2_grpc.LogsServiceServicer):
    """Answers each call with the next scripted reply: None (ok), an int (partial success
    rejecting that many), or (code, retry delay or None)."""

    def __init__(self, replies):
        self.replies = list(replies)
        self.calls = []
        self.bytes = []
        self.lock = threading.Lock()

    def Export(self, request, context):  # noqa: N802
        with self.lock:
            self.calls.append(sum(len(sl.log_records) for rl in request.resource_logs
                                  for sl in rl.scope_logs))
            self.bytes.append(request.ByteSize())
            reply = self.replies.pop(0) if self.replies else None
        if reply is None:
            return logs_service_pb2.ExportLogsServiceResponse()
        if isinstance(reply, int):
            return logs_service_pb2.ExportLogsServiceResponse(
                partial_success=logs_service_pb2.ExportLogsPartialSuccess(
                    rejected_log_records=reply, error_message="too old"))
        code, delay = reply
        if delay is not None:
            detail = status_pb2.Status(code=code_pb2.RESOURCE_EXHAUSTED, message="slow down")
            detail.details.add().Pack(error_details_pb2.RetryInfo(
                retry_delay=duration_pb2.Duration(seconds=0, nanos=int(delay * 1e9))))
            context.set_trailing_metadata(
                (("grpc-status-details-bin", detail.SerializeToString()),))
        context.abort(code, "scripted")


@pytest.fixture
def receiver():
    made = []

    def make(replies):
        servicer = Scripted(replies)
        pool = futures.ThreadPoolExecutor(max_workers=4)
        server = grpc.server(pool)
        logs_service_pb2_grpc.add_LogsServiceServicer_to_server(servicer, server)
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        sink = GrpcSink(name="test", target=f"127.0.0.1:{port}", credentials=None,
                        host="h", max_records=10, concurrency=2, timeout=10)
        made.append((server, pool, sink))
        return servicer, sink
    yield make
    for server, pool, sink in made:
        sink.close()
        server.stop(None).wait()
        pool.shutdown(wait=True)


def _batch(lines=30):
    data = b"".join(b"line %d\n" % i for i in range(lines))
    return Batch(events=[LogEvent("/a.log", 1, 2, 0, data, lines, time.time_ns())])


def test_all_requests_ok(receiver):
    servicer, sink = receiver([])
    assert sink.send(_batch()) is Verdict.OK
    assert sorted(servicer.calls) == [10, 10, 10]      # one batch, three requests


def test_a_retried_batch_resends_only_the_failed_requests(receiver):
    servicer, sink = receiver([None, (grpc.StatusCode.UNAVAILABLE, None), None])
    batch = _batch()
    assert sink.send(batch) is Verdict.RETRY
    assert sink.send(batch) is Verdict.OK
    assert len(servicer.calls) == 4                    # 3 + the one that failed
    assert sink.stats.records_sent == 30
    # bytes sent: what the receiver took, the failed request counted once (when it got through)
    assert sink.bytes_sent == sum(servicer.bytes) - servicer.bytes[1] > 0


def test_resource_exhausted_is_retried_only_with_retry_info(receiver):
    servicer, sink = receiver([(grpc.StatusCode.RESOURCE_EXHAUSTED, 0.3)])
    batch = _batch(5)
    assert sink.send(batch) is Verdict.RETRY
    assert sink._not_before > time.monotonic()          # the next call waits for RetryInfo
    assert sink.send(batch) is Verdict.OK
    servicer, sink = receiver([(grpc.StatusCode.RESOURCE_EXHAUSTED, None)])
    assert sink.send(_batch(5)) is Verdict.DROP
    assert sink.stats.records_rejected == 5


def test_partial_success_and_rejections_are_counted(receiver):
    servicer, sink = receiver([4, (grpc.StatusCode.INVALID_ARGUMENT, None), None])
    assert sink.send(_batch()) is Verdict.OK           # some records were accepted
    assert sink.stats.records_rejected == 4 + 10
    assert sink.stats.records_sent == 6 + 10


def test_misconfiguration_is_retried_not_dropped(receiver):
    servicer, sink = receiver([(grpc.StatusCode.UNAUTHENTICATED, None)] * 3)
    assert sink.send(_batch(5)) is Verdict.RETRY
    assert sink.stats.records_rejected == 0
