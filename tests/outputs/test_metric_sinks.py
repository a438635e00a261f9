"""The metric outputs against real peers: InfluxDB 1.x (HTTP /write, UDP; TCP and /api/v2/write
through a relay of the test's, as Debian's InfluxDB 1.6 has neither), Prometheus scraping the
listener (and promtool checking the exposition), an OTLP MetricsService receiver decoding with
the published protos, JSON lines files rotated by size. Verdicts and health on failures."""

from __future__ import annotations

import http.server
import json
import socket
import subprocess
import threading
import time
import urllib.request
from concurrent import futures

import grpc
import pytest
from opentelemetry.proto.collector.metrics.v1 import (metrics_service_pb2,
                                                      metrics_service_pb2_grpc)

from common.events import Batch
from common.otlp_metrics import CUMULATIVE, DELTA, metric_records
from outputs.base import Verdict
from outputs.influx import HttpSink, SocketSink
from outputs.jsonlines import JsonLinesSink, records_as_dicts
from outputs.otlpmetrics import OtlpMetricsSink
from outputs.prometheus import render
from outputs.promsink import PrometheusSink
from tests.outputs.metric_load import load
from tests.outputs.peers import Influx, Prometheus, needs

SUM_BY_ROUTE = ('SELECT sum("count"), sum("errors"), sum("sum") FROM '
                '"http.server.request.duration" GROUP BY "http.route", '
                '"http.response.status_class"')


def influx_counts(influx: Influx, db: str) -> tuple[dict, dict, dict]:
    counts, errors, sums = {}, {}, {}
    for s in influx.query(SUM_BY_ROUTE, db=db):
        key = (s["tags"]["http.route"], s["tags"]["http.response.status_class"])
        _, counts[key], errors[key], sums[key] = s["values"][0]
    return counts, errors, sums


def influx_http(influx: Influx, db: str, **kw) -> HttpSink:
    return HttpSink(name="influx", host="127.0.0.1", port=influx.http_port,
                    target=f"/write?db={db}&precision=ns", headers={}, agent_host="h", **kw)


@needs("influxd")
def test_influxdb_http_udp_tcp_and_v2(tmp_path):
    intervals, want, durations = load(1200)
    influx = Influx(tmp_path)
    try:
        # HTTP /write: a missing database is retried (with the error), then delivered.
        sink = influx_http(influx, "red", max_lines=7)
        assert sink.send(Batch(events=intervals[0])) is Verdict.RETRY
        assert not sink.healthy and sink.failures.counts == {"404": 1}
        influx.create("red")
        for points in intervals:
            batch = Batch(events=points)
            assert sink.send(batch) is Verdict.OK
        assert sink.healthy
        counts, errors, sums = influx_counts(influx, "red")
        assert counts == dict(want)
        assert errors == {k: (n if k[1] == "5xx" else 0) for k, n in want.items()}
        for key, ds in durations.items():
            assert abs(sums[key] - sum(ds)) < 1e-9 * len(ds)
        # The cumulative buckets: le_+Inf is the count, every bucket no more than the next.
        (series,) = influx.query('SELECT sum("le_0.005"), sum("le_0.025"), sum("le_+Inf") FROM '
                                 '"http.server.request.duration" WHERE "http.route" = '
                                 "'/users/{id}'", db="red")
        _, b1, b2, inf = series["values"][0]
        assert b1 <= b2 <= inf == want[("/users/{id}", "2xx")]
        assert b1 == sum(1 for d in durations[("/users/{id}", "2xx")] if d <= 0.005)
        # A 400 (a point InfluxDB refuses: a field changing type) is dropped and counted.
        bad = HttpSink(name="influx", host="127.0.0.1", port=influx.http_port,
                       target="/write?db=red&precision=ns", headers={}, agent_host="h")
        influx.query('CREATE DATABASE "typed"')
        post = urllib.request.Request(f"{influx.url}/write?db=typed", method="POST",
                                      data=b'http.server.request.duration count="text" '
                                      + str(intervals[0][0].time_ns).encode())
        urllib.request.urlopen(post).read()
        bad.target = "/write?db=typed&precision=ns"
        assert bad.send(Batch(events=intervals[0])) is Verdict.OK
        assert bad.points_rejected == len(intervals[0])

        # UDP, into the listener's database.
        influx.create("udp")
        udp = SocketSink(name="udp", host="127.0.0.1", port=influx.udp_port, udp=True,
                         agent_host="h", max_datagram=600)
        for points in intervals:
            assert udp.send(Batch(events=points)) is Verdict.OK
        udp.close()
        deadline = time.monotonic() + 20
        while influx_counts(influx, "udp")[0] != dict(want) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert influx_counts(influx, "udp")[0] == dict(want)

        # TCP and /api/v2/write, through a relay that InfluxDB 1.6's /write then parses.
        influx.create("tcp")
        influx.create("v2")
        relay = Relay(influx)
        try:
            tcp = SocketSink(name="tcp", host="127.0.0.1", port=relay.tcp_port, udp=False,
                             agent_host="h")
            for points in intervals:
                assert tcp.send(Batch(events=points)) is Verdict.OK
            tcp.close()
            v2 = HttpSink(name="v2", host="127.0.0.1", port=relay.http_port,
                          target="/api/v2/write?bucket=v2&org=o&precision=ns",
                          headers={"Authorization": "Token s3cret"}, agent_host="h")
            for points in intervals:
                assert v2.send(Batch(events=points)) is Verdict.OK
            v2.close()
            deadline = time.monotonic() + 20
            while influx_counts(influx, "tcp")[0] != dict(want) and time.monotonic() < deadline:
                time.sleep(0.2)
            assert influx_counts(influx, "tcp")[0] == dict(want)
            assert influx_counts(influx, "v2")[0] == dict(want)
            assert relay.v2_requests and all(h == "Token s3cret" for h in relay.v2_auth)
        finally:
            relay.close()
        # A server that went away: RETRY, unhealthy.
        influx.stop()
        assert sink.send(Batch(events=intervals[0])) is Verdict.RETRY and not sink.healthy
    finally:
        influx.stop()


class Relay:
    """What InfluxDB 1.6 lacks, in front of it: a TCP line-protocol listener (Telegraf's
    socket_listener) writing into database ``tcp``, and ``/api/v2/write`` (InfluxDB 1.8+/2.x:
    ``bucket``, ``org``, ``precision``, ``Authorization: Token``) into database = bucket."""

    def __init__(self, influx: Influx) -> None:
        self.influx = influx
        self.v2_requests = 0
        self.v2_auth: list[str] = []
        relay = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):  # noqa: N802
                path, _, query = self.path.partition("?")
                params = dict(p.split("=", 1) for p in query.split("&"))
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if path != "/api/v2/write" or params.get("precision") != "ns" \
                        or "org" not in params:
                    self.send_response(400)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                relay.v2_requests += 1
                relay.v2_auth.append(self.headers.get("Authorization", ""))
                status = relay.write(params["bucket"], body)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.http = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.http_port = self.http.server_address[1]
        self.tcp = socket.create_server(("127.0.0.1", 0))
        self.tcp_port = self.tcp.getsockname()[1]
        self.threads = [threading.Thread(target=self.http.serve_forever),
                        threading.Thread(target=self._tcp)]
        for t in self.threads:
            t.start()

    def write(self, db: str, body: bytes) -> int:
        req = urllib.request.Request(f"{self.influx.url}/write?db={db}&precision=ns", data=body,
                                     method="POST")
        try:
            return urllib.request.urlopen(req).status
        except urllib.error.HTTPError as exc:
            return exc.code

    def _tcp(self) -> None:
        conn, _ = self.tcp.accept()
        data = b""
        with conn:
            while chunk := conn.recv(65536):
                data += chunk
        self.tcp_status = self.write("tcp", data)

    def close(self) -> None:
        self.http.shutdown()
        self.http.server_close()
        self.tcp.close()
        for t in self.threads:
            t.join(timeout=10)


@needs("prometheus")
def test_prometheus_scrapes_the_listener(tmp_path):
    intervals, want, durations = load(900)
    sink = PrometheusSink(host="127.0.0.1", port=0)
    prom = None
    try:
        for points in intervals:
            assert sink.send(Batch(events=points)) is Verdict.OK
        text = urllib.request.urlopen(
            f"http://127.0.0.1:{sink.listener.port}/metrics").read().decode()
        assert "# TYPE http_server_request_duration_seconds histogram" in text
        check = subprocess.run(["promtool", "check", "metrics"], input=text, text=True,
                               capture_output=True)
        assert check.returncode == 0, check.stdout + check.stderr
        prom = Prometheus(tmp_path, [f"127.0.0.1:{sink.listener.port}"], interval=0.5)

        def scraped():
            return prom.query("sum by (http_route, http_response_status_class) "
                              "(http_server_request_duration_seconds_count)")

        deadline = time.monotonic() + 30
        while not scraped() and time.monotonic() < deadline:
            time.sleep(0.3)
        got = {(r["metric"]["http_route"], r["metric"]["http_response_status_class"]):
               int(float(r["value"][1])) for r in scraped()}
        assert got == dict(want)
        sums = {(r["metric"]["http_route"], r["metric"]["http_response_status_class"]):
                float(r["value"][1]) for r in prom.query(
                    "sum by (http_route, http_response_status_class) "
                    "(http_server_request_duration_seconds_sum)")}
        for key, ds in durations.items():
            assert abs(sums[key] - sum(ds)) < 1e-6
        errors = {r["metric"]["http_route"]: int(float(r["value"][1])) for r in prom.query(
            "sum by (http_route) (http_server_request_errors_total)")}
        assert errors == {"/boom/{id}": want[("/boom/{id}", "5xx")], "/users/{id}": 0,
                          "/orders/{id}/items": 0, "/missing/{id}": 0}
        le = prom.query('sum(http_server_request_duration_seconds_bucket{le="0.01"})')
        assert int(float(le[0]["value"][1])) == sum(1 for ds in durations.values() for d in ds
                                                    if d <= 0.01)
        assert sink.listener.scrapes > 0
        assert urllib.request.urlopen(
            f"http://127.0.0.1:{sink.listener.port}/metrics").status == 200
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(f"http://127.0.0.1:{sink.listener.port}/other")
    finally:
        if prom is not None:
            prom.stop()
        sink.close()


def test_prometheus_label_escaping_and_names():
    from outputs.metricstate import Series

    s = Series("http.client.request.duration", "histogram",
               {"service.name": 'a"b\\c\nd', "9x": "v"}, [0.5, 1.0], 0, 0, 2, 1, 1.25, [1, 0, 1])
    text = render([s]).decode()
    assert 'service_name="a\\"b\\\\c\\nd"' in text and '_9x="v"' in text
    assert 'http_client_request_duration_seconds_bucket{_9x="v",service_name="a\\"b\\\\c\\nd",le="1"} 1' in text
    assert "http_client_request_errors_total{" in text
    check = subprocess.run(["promtool", "check", "metrics"], input=text, text=True,
                           capture_output=True)
    assert check.returncode == 0, check.stdout + check.stderr


class Receiver(metrics_service_pb2_grpc.MetricsServiceServicer):
    def __init__(self, fail: int = 0) -> None:
        self.requests = []
        self.fail = fail

    def Export(self, request, context):  # noqa: N802
        if self.fail:
            self.fail -= 1
            context.abort(grpc.StatusCode.UNAVAILABLE, "not yet")
        self.requests.append(metrics_service_pb2.ExportMetricsServiceRequest.FromString(
            request.SerializeToString()))
        return metrics_service_pb2.ExportMetricsServiceResponse()


@pytest.fixture
def otlp_receiver():
    servers, pools = [], []

    def start(fail: int = 0):
        rec = Receiver(fail)
        pool = futures.ThreadPoolExecutor(max_workers=2)
        pools.append(pool)
        server = grpc.server(pool)
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(rec, server)
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        servers.append(server)
        return rec, port

    yield start
    for s in servers:
        s.stop(0).wait()
    for p in pools:
        p.shutdown(wait=True)


@pytest.mark.parametrize("cumulative", [True, False])
def test_otlp_metrics_decode_with_the_published_protos(otlp_receiver, cumulative):
    intervals, want, durations = load(600)
    rec, port = otlp_receiver(fail=1)
    sink = OtlpMetricsSink(target=f"127.0.0.1:{port}", credentials=None, metadata=[],
                           host="web1", cumulative=cumulative)
    try:
        batches = [Batch(events=points) for points in intervals]
        assert sink.send(batches[0]) is Verdict.RETRY  # UNAVAILABLE; the runner tries it again
        assert not sink.healthy
        for batch in batches:
            while (v := sink.send(batch)) is Verdict.RETRY:
                time.sleep(0.05)
            assert v is Verdict.OK
    finally:
        sink.close()
    assert sink.healthy and len(rec.requests) == len(intervals)
    last: dict = {}
    total: dict = {}
    for request in rec.requests:
        (rm,) = request.resource_metrics
        res = {kv.key: kv.value.string_value for kv in rm.resource.attributes}
        assert res == {"host.name": "web1", "service.name": "nginx"}
        (sm,) = rm.scope_metrics
        assert sm.scope.name == "log-shuttle"
        by_name = {m.name: m for m in sm.metrics}
        hist = by_name["http.server.request.duration"]
        assert hist.unit == "s"
        assert hist.histogram.aggregation_temporality == (CUMULATIVE if cumulative else DELTA)
        assert by_name["http.server.request.errors"].sum.is_monotonic
        for dp in hist.histogram.data_points:
            attrs = {kv.key: kv.value.string_value for kv in dp.attributes}
            key = (attrs["http.route"], attrs["http.response.status_class"])
            assert sum(dp.bucket_counts) == dp.count
            assert list(dp.explicit_bounds)[:3] == [0.005, 0.01, 0.025]
            last[key] = dp.count
            total[key] = total.get(key, 0) + dp.count
            assert dp.start_time_unix_nano < dp.time_unix_nano
    # cumulative: the last point holds the totals; delta: the points add up to them
    assert (last if cumulative else total) == dict(want)
    records = metric_records(rec.requests[-1])
    assert {r["name"] for r in records} >= {"http.server.request.duration",
                                            "http.server.request.errors"}
    assert all(r["type"] == "metric" and r["host"] == "web1" for r in records)


def test_json_lines_rotate_by_size(tmp_path):
    intervals, want, _ = load(3000, intervals=6)
    path = tmp_path / "m" / "metrics.jsonl"
    sink = JsonLinesSink(path=str(path), host="h", max_bytes=4096, max_files=50)
    for points in intervals:
        assert sink.send(Batch(events=points)) is Verdict.OK
    sink.close()
    files = sorted(path.parent.iterdir())
    assert len(files) > 2 and all(f.stat().st_size <= 4096 or f == path for f in files)
    records = [r for f in files for r in records_as_dicts(f.read_bytes())]
    assert sum(1 for p in intervals for _ in p) == len(records)
    got: dict = {}
    for r in records:
        if r["name"] == "http.server.request.duration":
            key = (r["attributes"]["http.route"], r["attributes"]["http.response.status_class"])
            got[key] = got.get(key, 0) + r["count"]
            assert sum(r["buckets"]) == r["count"] and len(r["buckets"]) == 15
            assert r["time"] > r["start"] and r["host"] == "h"
    assert got == dict(want)
    json.dumps(records)  # plain JSON


@needs("influxd")
def test_influxdb_with_authentication_built_from_its_config(tmp_path):
    import logging

    from common.component import Context, Stop
    from outputs.influx import InfluxOutputConfig, build

    intervals, want, _ = load(300, intervals=1)
    influx = Influx(tmp_path, auth=True)
    try:
        influx.query("CREATE USER admin WITH PASSWORD 'adm1n' WITH ALL PRIVILEGES")
        influx.auth = ("admin", "adm1n")
        influx.create("secured")
        secret = tmp_path / "password"
        cfg = InfluxOutputConfig(url=influx.url, database="secured", username="admin",
                                 password_file=str(secret))
        secret.write_text("wrong\n")
        assert cfg.problems() == []

        def sink():
            ctx = Context(name="output influxdb", config=cfg, host="h", stop=Stop(),
                          consumers=[None], log=logging.getLogger("test"))
            return build(ctx).sink

        bad = sink()
        assert bad.send(Batch(events=intervals[0])) is Verdict.RETRY  # 401: retried, an error
        assert bad.failures.counts == {"401": 1} and not bad.healthy
        secret.write_text("adm1n\n")
        good = sink()
        assert good.send(Batch(events=intervals[0])) is Verdict.OK and good.healthy
        assert influx_counts(influx, "secured")[0] == dict(want)
        assert InfluxOutputConfig(protocol="udp").problems() == ["address: empty: give HOST:PORT"]
        assert InfluxOutputConfig(url="ftp://x").problems() == [
            "url: 'ftp://x' is not http(s)://HOST[:PORT]"]
    finally:
        influx.stop()


def test_100000_distinct_paths_expose_at_most_the_cap_plus_one_overflow_series():
    from common.events import HttpEvent
    from pipeline.metrics import Aggregator

    agg = Aggregator(max_series=100)
    agg.observe(HttpEvent(time_ns=0, pid=5, tid=5, comm="api", fd=3, direction="server",
                          method="GET", path=f"/page-{i}/view", status=200,
                          duration_ns=1_000_000) for i in range(100_000))
    sink = PrometheusSink(host="127.0.0.1", port=0)
    try:
        assert sink.send(Batch(events=agg.collect())) is Verdict.OK
        text = urllib.request.urlopen(
            f"http://127.0.0.1:{sink.listener.port}/metrics").read().decode()
    finally:
        sink.close()
    counts = [line for line in text.splitlines()
              if line.startswith("http_server_request_duration_seconds_count{")]
    assert len(counts) == 101
    (overflow,) = [line for line in counts if 'otel_metric_overflow="true"' in line]
    assert overflow.endswith(" 99900")
    assert sum(int(line.rsplit(" ", 1)[1]) for line in counts) == 100_000


def test_a_keep_alive_connection_the_server_closed_costs_no_retry():
    seen = []

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self):  # noqa: N802
            seen.append(self.rfile.read(int(self.headers["Content-Length"])))
            self.send_response(204)
            self.end_headers()
            self.close_connection = True  # as an idle timeout would, without saying so

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    try:
        intervals, _, _ = load(100)
        sink = HttpSink(name="i", host="127.0.0.1", port=server.server_address[1],
                        target="/write?db=x", headers={}, agent_host="h")
        for points in intervals:
            assert sink.send(Batch(events=points)) is Verdict.OK
            time.sleep(0.05)
        sink.close()
        assert len(seen) == len(intervals) and sink.failures.attempts == 0
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
