"""The output runner (outputs/runner.py) around real parts: a real shared-memory queue and
acknowledgement board, the real TCP sink writing to a socket served by a thread of this test
(or a real gRPC receiver, or a pipe for stdout): retry with backoff, drop, a fatal sink, the
acknowledgements, and poison batches set aside in the dead-letter file."""

from __future__ import annotations

import logging
import os
import select
import socket
import threading
import time

import grpc
import msgspec
import pytest
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc

from common.component import Context, SinkClosed, Stop
from common.events import Batch, BatchCodec, LogEvent
from common.progress import ProgressBoard
from common.shmqueue import ShmQueue
from outputs import deadletter
from outputs.deadletter import DeadLetters
from outputs.ndjson import Renderer
from outputs.runner import Backoff, OutputRunner
from outputs.stdout import StdoutSink
from outputs.tcp import TcpSink
from tests.harness import wait_for

CODEC = BatchCodec()


class Receiver:
    """A TCP listener in a thread that keeps every line it reads, in order."""

    def __init__(self, port: int = 0) -> None:
        self.sock = socket.create_server(("127.0.0.1", port))
        self.port = self.sock.getsockname()[1]
        self.lines: list[bytes] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        conns: list[socket.socket] = []
        buf: dict[socket.socket, bytes] = {}
        while not self._stop.is_set():
            ready, _, _ = select.select([self.sock, *conns], [], [], 0.05)
            for s in ready:
                if s is self.sock:
                    c, _ = s.accept()
                    conns.append(c)
                    buf[c] = b""
                    continue
                data = s.recv(65536)
                if not data:
                    conns.remove(s)
                    s.close()
                    continue
                *whole, buf[s] = (buf[s] + data).split(b"\n")
                self.lines += whole
        for c in conns:
            c.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


class Rig:
    """A queue from a producer (the test, in the pipeline's place) to the runner, running in a
    thread, and a board with one input and one output."""

    def __init__(self, tmp_path, sink, **runner_kw) -> None:
        self.queue = ShmQueue.create(name="test-runner", capacity=1 << 20)
        self.board = ProgressBoard.create(inputs=1, outputs=1)
        self.producer = self.queue.producer()
        self.ctx = Context(name="output test", config=None, host="h", stop=Stop(),
                           consumers=[self.queue.consumer()], progress=self.board.output(0),
                           log=logging.getLogger("log_shuttle.test_runner"))
        self.dead = DeadLetters(directory=str(tmp_path / "state"), output="output test")
        self.runner = OutputRunner(self.ctx, sink, dead_letters=self.dead, **runner_kw)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.runner.run()
        except BaseException as exc:  # noqa: BLE001 - the test looks at it
            self.error = exc

    def put(self, seq: int, *lines: str) -> None:
        data = "".join(f"{s}\n" for s in lines).encode()
        ev = LogEvent("/var/log/a.log", 1, 2, 0, data, len(lines), time.time_ns())
        self.producer.put(CODEC.encode(Batch(events=[ev], acks=[(0, seq)])))

    def acked(self) -> int:
        return self._acked if self.closed else self.board.input(0).acked()

    def committed(self) -> int:
        return self._committed if self.closed else self.queue.stats().messages_committed

    closed = False

    def close(self) -> None:
        self.producer.close()
        self.thread.join(timeout=20)
        assert not self.thread.is_alive()
        self._acked, self._committed = self.acked(), self.committed()
        self.closed = True
        self.queue.destroy()
        self.board.destroy()


def tcp_sink(port: int, encode=None, *, raw: bool = False) -> TcpSink:
    """raw: events other than lines come to the renderer as their bytes (as outputs/tcp.py's
    build sets it up for NDJSON)."""
    renderer = Renderer(fmt="ndjson", host="h")
    return TcpSink(name=f"tcp 127.0.0.1:{port}", host="127.0.0.1", port=port,
                   encode=encode or renderer.render, takes_raw=raw and renderer.takes_raw,
                   connect_timeout=2, write_timeout=2)


def lines_of(receiver: Receiver) -> list[str]:
    import json
    return [json.loads(x)["line"] for x in receiver.lines]


def test_each_batch_is_acknowledged_once_the_receiver_has_it(tmp_path):
    rx = Receiver()
    rig = Rig(tmp_path, tcp_sink(rx.port))
    try:
        for seq in range(1, 6):
            rig.put(seq, *(f"b{seq} l{j}" for j in range(10)))
        wait_for(lambda: rig.acked() == 5, what="5 batches acknowledged")
        wait_for(lambda: len(rx.lines) == 50, what="50 lines at the receiver")
        assert lines_of(rx) == [f"b{s} l{j}" for s in range(1, 6) for j in range(10)]
    finally:
        rig.close()
        rx.close()
    assert rig.error is None
    assert rig.runner.stats.batches_sent == 5 and rig.committed() == 5


def test_backoff_delays_grow_to_the_maximum_with_bounded_jitter():
    exact = Backoff(initial=0.1, maximum=1.0, jitter=0.0).delays()
    assert [round(next(exact), 3) for _ in range(6)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    jittered = Backoff(initial=1.0, maximum=1.0, jitter=0.2).delays()
    got = [next(jittered) for _ in range(200)]
    assert all(0.8 <= d <= 1.2 for d in got) and max(got) - min(got) > 0.1


def test_a_batch_is_retried_with_backoff_until_the_receiver_comes_back(tmp_path):
    with socket.socket() as s:  # a port with no listener: connections are refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    rig = Rig(tmp_path, tcp_sink(port), backoff=Backoff(initial=0.02, maximum=0.1, jitter=0.0))
    rx = None
    try:
        for seq in range(1, 4):
            rig.put(seq, f"line {seq}")
        wait_for(lambda: rig.runner.stats.batches_retried >= 5, what="retries")
        # Held: nothing acknowledged, nothing committed, while the receiver is away.
        assert rig.acked() == 0 and rig.committed() == 0
        assert rig.runner.sink.failures.counts.get("connect", 0) >= 5
        rx = Receiver(port)
        wait_for(lambda: rig.acked() == 3, what="the batches acknowledged after the outage")
        wait_for(lambda: len(rx.lines) == 3, what="3 lines")
        assert lines_of(rx) == ["line 1", "line 2", "line 3"]
    finally:
        rig.close()
        if rx:
            rx.close()
    assert rig.error is None and rig.runner.stats.batches_sent == 3


class Rejecting(logs_service_pb2_grpc.LogsServiceServicer):
    """Rejects the first call's records for good (INVALID_ARGUMENT), takes the others."""

    def __init__(self) -> None:
        self.calls = 0
        self.bodies: list[str] = []

    def Export(self, request, context):  # noqa: N802
        self.calls += 1
        if self.calls == 1:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "not for us")
        self.bodies += [lr.body.string_value for rl in request.resource_logs
                        for sl in rl.scope_logs for lr in sl.log_records]
        return logs_service_pb2.ExportLogsServiceResponse()


def test_a_dropped_batch_is_counted_acknowledged_and_passed(tmp_path):
    from concurrent import futures

    from outputs.grpc import GrpcSink

    servicer = Rejecting()
    pool = futures.ThreadPoolExecutor(max_workers=2)
    server = grpc.server(pool)
    logs_service_pb2_grpc.add_LogsServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    sink = GrpcSink(name="grpc test", target=f"127.0.0.1:{port}", credentials=None, host="h",
                    max_records=500)
    rig = Rig(tmp_path, sink)
    try:
        rig.put(1, "rejected")
        rig.put(2, "taken")
        wait_for(lambda: rig.acked() == 2, what="both batches acknowledged")
    finally:
        rig.close()
        server.stop(None).wait()
        pool.shutdown(wait=True)
    assert rig.runner.stats.batches_dropped == 1 and rig.runner.stats.batches_sent == 1
    assert servicer.bodies == ["taken"] and rig.committed() == 2


def test_a_sink_gone_for_good_stops_the_runner_without_acknowledging(tmp_path):
    r, w = os.pipe()
    os.close(r)  # stdout piped into `head`, which has exited
    rig = Rig(tmp_path, StdoutSink(fmt="ndjson", host="h", fd=w))
    try:
        rig.put(1, "nobody reads this")
        rig.thread.join(timeout=20)
        assert isinstance(rig.error, SinkClosed)
        # Not acknowledged, not committed: a successor would read the batch again.
        assert rig.acked() == 0 and rig.committed() == 0
    finally:
        rig.close()
        os.close(w)


def poison_then_a_line(tmp_path, poison: bytes, *, raw: bool = False):
    """A TCP output given a poison message, then a batch of one line: the rig and the dead
    letter, once the line is delivered and acknowledged."""
    rx = Receiver()
    sink = tcp_sink(rx.port, raw=raw)
    assert sink.takes_raw == raw
    rig = Rig(tmp_path, sink)
    try:
        rig.producer.put(poison)
        rig.put(2, "after the poison")
        wait_for(lambda: rig.acked() == 2, what="the good batch acknowledged")
        wait_for(lambda: len(rx.lines) == 1, what="the good line")
    finally:
        rig.close()
        rx.close()
    assert rig.error is None and lines_of(rx) == ["after the poison"]
    assert rig.runner.stats.batches_dead == 1 and rig.committed() == 2
    (entry,) = deadletter.read(rig.dead.path)
    assert entry.reason == "undecodable" and entry.output == "output test"
    assert deadletter.message_of(entry) == poison and entry.bytes == len(poison)
    return rig, entry


def test_an_undecodable_message_is_set_aside_and_the_next_batch_delivered(tmp_path, caplog):
    _, entry = poison_then_a_line(tmp_path, b"\x93\xa4this is not a Batch\xc1")
    assert entry.events is None and ("DecodeError" in entry.error or "ValidationError" in entry.error)
    assert entry.time.startswith(time.strftime("%Y-%m-%dT", time.gmtime()))


def test_an_event_that_does_not_decode_when_rendered_from_its_bytes_sets_its_batch_aside(
        tmp_path, caplog):
    # A TCP output renders events other than lines from their msgpack bytes (not decoded by
    # the runner): one whose bytes msgspec rejects sets its batch aside as undecodable, at
    # once, as decoding the batch would have; the next batch goes.
    span = ["span", 1, 2, "a" * 32, "b" * 16, "", "server", "GET", False, {}, {}, "", ""]
    bad = CODEC.encode(Batch(events=[], acks=[(0, 1)]))
    # the batch with one span whose end is text: a Batch's bytes, the span's spliced in
    poison = bad[:1] + b"\x91" + msgspec.msgpack.encode(span[:2] + ["later"] + span[3:]) + bad[2:]
    _, entry = poison_then_a_line(tmp_path, poison, raw=True)
    assert "ValidationError" in entry.error


def test_a_batch_the_sink_raises_on_is_set_aside_after_a_few_attempts(tmp_path, caplog):
    render = Renderer(fmt="ndjson", host="h").render

    def encode(events):  # a renderer with a bug that only some data triggers
        if any(b"POISON" in ev.data for ev in events):
            raise KeyError("a renderer bug")
        return render(events)

    rx = Receiver()
    rig = Rig(tmp_path, tcp_sink(rx.port, encode), poison_after=3,
              backoff=Backoff(initial=0.01, maximum=0.02))
    caplog.set_level(logging.DEBUG, logger="log_shuttle.test_runner")
    try:
        rig.put(1, "one")
        rig.put(2, "POISON a")
        rig.put(3, "POISON b")
        rig.put(4, "four")
        wait_for(lambda: rig.acked() == 4, what="every batch acknowledged")
        wait_for(lambda: len(rx.lines) == 2, what="the good lines")
    finally:
        rig.close()
        rx.close()
    assert rig.error is None and lines_of(rx) == ["one", "four"]
    stats = rig.runner.stats
    assert (stats.batches_sent, stats.batches_dead, stats.batches_retried) == (2, 2, 4)
    entries = deadletter.read(rig.dead.path)
    assert [e.reason for e in entries] == ["send raised"] * 2
    assert all("KeyError" in e.error and e.events == 1 for e in entries)
    batches = [CODEC.decode(deadletter.message_of(e)) for e in entries]
    assert [b.events[0].data for b in batches] == [b"POISON a\n", b"POISON b\n"]
    # Said once: the second one is counted, not logged as an error again.
    errors = [r for r in caplog.records if r.levelno == logging.ERROR and "set a batch aside"
              in r.getMessage()]
    assert len(errors) == 1 and rig.dead.path in errors[0].getMessage()


def test_the_dead_letter_file_is_bounded(tmp_path):
    dead = DeadLetters(directory=str(tmp_path), output="output tcp", max_bytes=8192)
    for i in range(40):
        dead.add(message=bytes([i]) * 700, reason="undecodable", error=ValueError("x"))
    sizes = [os.path.getsize(dead.path), os.path.getsize(dead.path + ".1")]
    assert all(s <= 4096 for s in sizes) and sum(sizes) <= 8192
    last = deadletter.read(dead.path)[-1]
    assert deadletter.message_of(last) == bytes([39]) * 700 and not last.truncated
    big = dead.add(message=b"y" * 10_000, reason="undecodable", error=ValueError("x"))
    entry = deadletter.read(big)[-1]
    assert entry.truncated and entry.bytes == 10_000 and len(deadletter.message_of(entry)) < 2048
