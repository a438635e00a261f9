"""Garbage on the server's ports: each bad connection is closed with a counted error, the server
never crashes, and a well-behaved client on the same port is not affected."""

from __future__ import annotations

import json
import socket

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.harness import wait_for
from tests.server.helpers import Server, free_port


def _closed_by_server(sock: socket.socket) -> bool:
    """Whatever the server answers (gRPC says GOAWAY), it ends with the connection closed."""
    sock.settimeout(30)
    try:
        for _ in range(1000):
            if sock.recv(4096) == b"":
                return True
    except ConnectionResetError:
        return True
    return False


def test_garbage_closes_only_its_connection(tmp_path):
    config = tmp_path / "server.toml"
    config.write_text("[server]\nmax_message_bytes = 65536\nmax_connections = 8\n"
                      "idle_timeout = 5.0\n")
    gport, tport = free_port(), free_port()
    with Server(tmp_path, "--insecure", "-c", str(config), grpc_port=gport,
                tcp_port=tport) as server:
        good = socket.create_connection(("127.0.0.1", tport))
        good.sendall(b'{"n": 0}\n')
        cases = {
            "random bytes": b"\x00\xff\x13garbage\xfe\n",
            "wrong length prefix": b"12x <13>1 - - - - - - hi",
            "length over the limit": b"999999 <13>1",
            "not JSON": b"{oops\n",
        }
        for name, data in cases.items():
            with socket.create_connection(("127.0.0.1", tport)) as bad:
                bad.sendall(data)
                assert _closed_by_server(bad), name
            good.sendall(b'{"n": "keep-alive"}\n')
        with socket.create_connection(("127.0.0.1", tport)) as half:
            half.sendall(b"100 <13>1 - - - - - - half a frame")   # then the client goes away
        with socket.create_connection(("127.0.0.1", tport)) as endless:
            try:
                for _ in range(64):                               # 1 MiB, never a newline
                    endless.sendall(b"<" + b"a" * 16383)
            except (BrokenPipeError, ConnectionResetError):
                pass
            assert _closed_by_server(endless)
        with socket.create_connection(("127.0.0.1", gport)) as on_grpc:
            on_grpc.sendall(b"GET / HTTP/1.1\r\n\r\n" + bytes(range(256)) * 4)
            assert _closed_by_server(on_grpc)
        for n in range(1, 51):
            good.sendall(json.dumps({"n": n}).encode() + b"\n")
        wait_for(lambda: len(server.records()) >= 51 + len(cases), timeout=30, what="the good client's lines")
        good.close()
        with socket.create_connection(("127.0.0.1", tport)) as idle:
            assert _closed_by_server(idle)                        # idle_timeout
        with grpc.insecure_channel(f"127.0.0.1:{gport}") as channel:
            assert health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=10).status == \
                health_pb2.HealthCheckResponse.SERVING
        assert server.stop() == 0
    assert [r["n"] for r in server.records() if r["n"] != "keep-alive"] == list(range(51))
    stats = server.stats()
    assert stats["tcp_error_garbage"] == 2                   # random bytes, not JSON
    assert stats["tcp_error_framing"] == 4                   # prefix, limit, half, endless
    assert stats["tcp_error_idle"] == 1
    assert "Traceback" not in server.stderr()


def test_connections_beyond_the_limit_are_refused(tmp_path):
    config = tmp_path / "server.toml"
    config.write_text("[server]\nmax_connections = 2\n")
    tport = free_port()
    with Server(tmp_path, "--insecure", "-c", str(config), tcp_port=tport) as server:
        a = socket.create_connection(("127.0.0.1", tport))
        b = socket.create_connection(("127.0.0.1", tport))
        a.sendall(b'{"from": "a"}\n')
        b.sendall(b'{"from": "b"}\n')
        wait_for(lambda: len(server.records()) >= 2, timeout=30, what="a and b")
        with socket.create_connection(("127.0.0.1", tport)) as c:
            assert _closed_by_server(c)
        a.close()
        b.close()
        assert server.stop() == 0
    assert server.stats()["tcp_error_too_many_connections"] == 1


def test_grpc_calls_beyond_the_limit_are_refused_with_retry_info(tmp_path):
    """A health Watch holds the only call allowed; an Export meanwhile is refused with
    RESOURCE_EXHAUSTED and a RetryInfo, so that log-shuttle's own gRPC output retries it
    (rather than dropping it) and delivers once the call is free."""
    import time

    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from common.events import Batch, LogEvent
    from outputs.base import Verdict
    from outputs.grpc import GrpcSink

    config = tmp_path / "server.toml"
    config.write_text("[server]\nmax_connections = 1\n")
    gport = free_port()
    with Server(tmp_path, "--insecure", "-c", str(config), grpc_port=gport) as server:
        channel = grpc.insecure_channel(f"127.0.0.1:{gport}")
        watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest())
        assert next(watch).status == health_pb2.HealthCheckResponse.SERVING  # the call is on
        sink = GrpcSink(name="test", target=f"127.0.0.1:{gport}", credentials=None, host="h",
                        max_records=100, concurrency=1, timeout=10)
        batch = Batch(events=[LogEvent("/a.log", 1, 2, 0, b"one\ntwo\n", 2, time.time_ns())])
        try:
            assert sink.send(batch) is Verdict.RETRY
            assert sink._not_before >= time.monotonic() + 0.5   # the server's RetryInfo
            watch.cancel()
            wait_for(lambda: sink.send(batch) is Verdict.OK, timeout=30, interval=0.2,
                     what="the export once the call is free")
        finally:
            sink.close()
            channel.close()
        wait_for(lambda: len(server.records()) >= 2, timeout=30, what="the two lines")
        assert server.stop() == 0
    assert server.stats()["grpc_error_too_many_calls"] >= 1
    assert [r["line"] for r in server.records()] == ["one", "two"]
