"""The RED aggregator (pipeline/metrics.py): series per service, direction, method, route and
status class; OpenTelemetry buckets; errors; TCP; the series cap and its overflow series;
intervals on the wall clock; expiry."""

from __future__ import annotations

import random

from common.events import ConnEvent, HttpEvent, MetricEvent, ProcessInfo
from pipeline.metrics import (HTTP_BOUNDS, HTTP_CLIENT, HTTP_SERVER, OVERFLOW, TCP_DURATION,
                              TCP_OPENED, Aggregator)

S = 1_000_000_000


class Clock:
    def __init__(self, t: int = 1_700_000_003 * S) -> None:
        self.t = t

    def __call__(self) -> int:
        return self.t


def http(path: str, status: int = 200, ms: float = 3.0, *, direction: str = "server",
         pid: int = 10, comm: str = "nginx", method: str = "GET", process=None) -> HttpEvent:
    return HttpEvent(time_ns=0, pid=pid, tid=pid, comm=comm, fd=4, direction=direction,
                     method=method, path=path, status=status, duration_ns=int(ms * 1e6),
                     process=process)


def by_route(points: list[MetricEvent], name: str = HTTP_SERVER) -> dict:
    return {(p.attrs["http.route"], p.attrs["http.response.status_class"]): p
            for p in points if p.name == name}


def test_counts_errors_buckets_and_intervals():
    clock = Clock()
    agg = Aggregator(interval=10, clock=clock)
    assert agg.next_ns == 1_700_000_010 * S and agg.time_left() == 7.0
    durations = [random.uniform(0.001, 12.0) for _ in range(500)]
    for i, d in enumerate(durations):
        agg.observe([http(f"/users/{i}", 200 if i % 5 else 500, d * 1e3)])
    agg.observe([http("/users/1", 404, 1.0), http("/users/1", 503, 2.0, direction="client",
                                                 comm="curl", pid=11)])
    assert not agg.due()
    clock.t = 1_700_000_010 * S + 5
    assert agg.due()
    points = agg.collect()
    server = by_route(points)
    ok, bad, missing = server[("/users/{id}", "2xx")], server[("/users/{id}", "5xx")], \
        server[("/users/{id}", "4xx")]
    assert ok.count == 400 and ok.errors == 0
    assert bad.count == 100 and bad.errors == 100
    assert missing.count == 1 and missing.errors == 0  # a 404 is the client's error, not the server's
    assert abs(ok.sum + bad.sum - sum(durations) - 0) < 1e-6 * len(durations)
    assert ok.bounds == list(HTTP_BOUNDS) and len(ok.buckets) == len(HTTP_BOUNDS) + 1
    expect = [0] * (len(HTTP_BOUNDS) + 1)
    for i, d in enumerate(durations):
        if i % 5:
            expect[sum(1 for b in HTTP_BOUNDS if b < d)] += 1
    assert ok.buckets == expect and sum(ok.buckets) == ok.count
    assert ok.start_ns == 1_700_000_003 * S and ok.time_ns == 1_700_000_010 * S
    assert ok.attrs == {"service.name": "nginx", "http.request.method": "GET",
                        "http.route": "/users/{id}", "http.response.status_class": "2xx"}
    (client,) = [p for p in points if p.name == HTTP_CLIENT]
    assert client.attrs["service.name"] == "curl" and client.errors == 1
    # The next interval starts empty; a quiet series sends nothing.
    agg.observe([http("/users/7")])
    clock.t = 1_700_000_020 * S
    (p,) = agg.collect()
    assert (p.count, p.start_ns, p.time_ns) == (1, 1_700_000_010 * S, 1_700_000_020 * S)
    clock.t = 1_700_000_030 * S
    assert agg.collect() == []


def test_bucket_edges_are_inclusive_upper_bounds():
    agg = Aggregator(clock=Clock())
    agg.observe([http("/", ms=5.0), http("/", ms=5.0001), http("/", ms=10_000.0),
                 http("/", ms=10_001.0)])
    (p,) = agg.collect()
    assert p.buckets[0] == 1 and p.buckets[1] == 1  # 0.005 is in le=0.005
    assert p.buckets[-2] == 1 and p.buckets[-1] == 1  # 10 s in le=10, above it in +Inf


def test_service_names_from_executable_container_and_overrides():
    host = ProcessInfo(pid=10, comm="nginx", exe="/usr/sbin/nginx", start_ns=5)
    boxed = ProcessInfo(pid=20, comm="python3", exe="/usr/bin/python3.11", start_ns=6,
                        container_id="a" * 64)
    agg = Aggregator(clock=Clock(), services={"aaaaaaaaaaaa": "shop", "/usr/sbin/nginx": "edge"})
    agg.observe([http("/", process=host), http("/", pid=20, comm="python3", process=boxed),
                 http("/", pid=30, comm="ruby")])
    names = sorted((p.attrs["service.name"], p.attrs.get("container.id", "")) for p in agg.collect())
    assert names == [("edge", ""), ("ruby", ""), ("shop", "a" * 12)]
    plain = Aggregator(clock=Clock())
    plain.observe([http("/", pid=20, comm="python3", process=boxed)])
    (p,) = plain.collect()
    assert p.attrs["service.name"] == "python3.11" and p.attrs["container.id"] == "a" * 12


def test_unknown_methods_are_other():
    agg = Aggregator(clock=Clock())
    agg.observe([http("/", method="BREW"), http("/", method="POST")])
    assert sorted(p.attrs["http.request.method"] for p in agg.collect()) == ["POST", "_OTHER"]


def test_cap_counts_the_rest_in_one_overflow_series(caplog):
    agg = Aggregator(clock=Clock(), max_series=50)
    n = 100_000
    agg.observe(http(f"/p{i}/x", ms=1.0) for i in range(n))  # 100,000 distinct routes
    agg.observe([http("/other", pid=99, comm="other")])  # another service has its own cap
    points = agg.collect()
    nginx = [p for p in points if p.attrs["service.name"] == "nginx"]
    assert len(nginx) == 51
    (over,) = [p for p in nginx if OVERFLOW in p.attrs]
    assert over.attrs == {"service.name": "nginx", OVERFLOW: "true"}
    assert over.count == n - 50 and sum(p.count for p in nginx) == n
    assert agg.services[("nginx", "")].overflowed == n - 50
    assert sum(1 for r in caplog.records if "further series" in r.getMessage()) == 1
    assert "service nginx: 99950 observations past max_series (50) counted in its overflow " \
        "series this interval (99950 since start)" in caplog.text
    assert [p.count for p in points if p.attrs["service.name"] == "other"] == [1]
    assert agg.series_count() == 52


def test_idle_series_expire_and_free_their_place():
    clock = Clock()
    agg = Aggregator(clock=clock, max_series=1, series_expiry=60, interval=10)
    agg.observe([http("/a")])
    agg.collect()
    clock.t += 30 * S
    agg.observe([http("/b")])  # /a still holds the only place
    assert OVERFLOW in agg.collect()[0].attrs
    clock.t += 120 * S
    agg.collect()
    agg.observe([http("/b")])
    (p,) = agg.collect()
    assert p.attrs["http.route"] == "/b"


def test_tcp_connections_per_peer():
    agg = Aggregator(clock=Clock())

    def conn(kind, s, sp, d, dp, dur=0, pid=10, comm="nginx"):
        return ConnEvent(kind=kind, time_ns=0, pid=pid, comm=comm, saddr=s, sport=sp, daddr=d,
                         dport=dp, duration_ns=dur)

    agg.observe([conn("accept", "127.0.0.1", 80, "127.0.0.9", 5000),
                 conn("accept", "127.0.0.1", 80, "127.0.0.9", 5001),
                 conn("connect", "127.0.0.9", 5002, "127.0.0.1", 80, pid=11, comm="curl"),
                 conn("close", "127.0.0.1", 80, "127.0.0.9", 5000, dur=S // 4, pid=0, comm=""),
                 conn("close", "127.0.0.9", 5002, "127.0.0.1", 80, dur=3 * S, pid=0, comm="")])
    points = {(p.name, p.attrs["service.name"]): p for p in agg.collect()}
    opened = points[(TCP_OPENED, "nginx")]
    assert opened.kind == "counter" and opened.count == 2
    assert opened.attrs == {"service.name": "nginx", "network.peer.address": "127.0.0.9",
                            "server.port": "80", "direction": "server"}
    assert points[(TCP_OPENED, "curl")].attrs["direction"] == "client"
    dur = points[(TCP_DURATION, "nginx")]  # the close found its accept: nginx's, server side
    assert (dur.count, dur.sum, dur.attrs["direction"]) == (1, 0.25, "server")
    assert points[(TCP_DURATION, "curl")].sum == 3.0
