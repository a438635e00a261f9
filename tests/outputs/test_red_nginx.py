"""RED metrics from what the kernel saw: Debian's nginx under a known load (2,000 requests over 4
routes with ids, 15% 404 and 10% 500, from 4 curl processes with keep-alive), the eBPF input on,
its events aggregated (pipeline/metrics.py) and written to a real InfluxDB 1.x and scraped by a
real Prometheus: the counts per route and status that each returns equal nginx's own access log,
and the histograms' count and sum equal the exchanges' durations."""

from __future__ import annotations

import re
import subprocess
import time
import uuid
from collections import Counter, defaultdict

from common.events import Batch, HttpEvent, LossEvent
from outputs.base import Verdict
from outputs.influx import HttpSink
from outputs.promsink import PrometheusSink
from pipeline.metrics import Aggregator
from tests.inputs.ebpf.conftest import Nginx, live_input, needs, needs_ebpf  # noqa: F401
from tests.outputs.peers import Influx, Prometheus

pytestmark = [needs_ebpf, needs("nginx", "curl", "influxd", "prometheus")]

ROUTES_CONF = """
        location ~ ^/users/[0-9]+$ { return 200 "user\\n"; }
        location ~ ^/orders/[0-9a-f-]+/items$ { return 200 "items\\n"; }
        location ~ ^/boom/[0-9]+$ { return 500 "boom\\n"; }
        location / { return 404; }
"""
# What nginx logs, and the route each request must be counted under (the test's own mapping).
EXPECTED_ROUTE = [(re.compile(r"^/users/\d+$"), "/users/{id}"),
                  (re.compile(r"^/orders/[0-9a-f-]{36}/items$"), "/orders/{id}/items"),
                  (re.compile(r"^/missing/[0-9a-f]{12}$"), "/missing/{id}"),
                  (re.compile(r"^/boom/\d+$"), "/boom/{id}")]


def route_of(uri: str) -> str:
    for pattern, route in EXPECTED_ROUTE:
        if pattern.match(uri):
            return route
    raise AssertionError(f"unexpected request {uri}")


def workload() -> list[str]:
    paths = []
    for i in range(2000):
        k = i % 20
        if k < 10:
            paths.append(f"/users/{1000 + i}")
        elif k < 15:
            paths.append(f"/orders/{uuid.uuid4()}/items")
        elif k < 18:
            paths.append(f"/missing/5f3a9c2e{i:04x}")
        else:
            paths.append(f"/boom/{i}")
    return paths


def test_red_metrics_of_nginx_match_its_access_log(live_input, tmp_path):  # noqa: F811
    nginx = Nginx(tmp_path)
    conf = (nginx.dir / "nginx.conf").read_text()
    conf = re.sub(r"        location = /ok.*?location / \{ return 404; \}\n", ROUTES_CONF, conf,
                  flags=re.S)
    (nginx.dir / "nginx.conf").write_text(conf)
    subprocess.run(["nginx", "-p", str(nginx.dir), "-c", str(nginx.dir / "nginx.conf"), "-s",
                    "reload"], check=True, capture_output=True)
    influx = prom = sink = None
    li = live_input(probes=["process", "tcp", "http"])
    try:
        time.sleep(1.0)  # the reload's new workers
        paths = workload()
        procs = []
        for part in range(4):
            cfg = tmp_path / f"curl{part}.cfg"
            cfg.write_text("".join(f'url = "{nginx.url(p)}"\noutput = "/dev/null"\n'
                                   for p in paths[part::4]))
            procs.append(subprocess.Popen(["curl", "-s", "-K", str(cfg)]))
        for p in procs:
            assert p.wait(timeout=120) == 0
        access = [a for a in nginx.access() if not a["path"].startswith("/ok")]
        assert len(access) == 2000
        servers = nginx.pids()

        def served(events):
            return [e for e in events if isinstance(e, HttpEvent) and e.pid in servers]

        li.wait_for(lambda evs: len(served(evs)) >= 2000, timeout=120,
                    what="2000 server-side exchanges of nginx")
        time.sleep(0.5)
        events = li.collect()
        assert not [e for e in events if isinstance(e, LossEvent)], "events were lost"
        exchanges = served(events)

        # The aggregator, as the pipeline runs it, over two intervals.
        agg = Aggregator(interval=1.0)
        half = len(events) // 2
        agg.observe(events[:half])
        first = agg.collect()
        agg.observe(events[half:])
        second = agg.collect()

        influx = Influx(tmp_path)
        influx.create("red")
        writer = HttpSink(name="influx", host="127.0.0.1", port=influx.http_port,
                          target="/write?db=red&precision=ns", headers={}, agent_host="test")
        sink = PrometheusSink(host="127.0.0.1", port=0)
        for points in (first, second):
            assert writer.send(Batch(events=points)) is Verdict.OK
            assert sink.send(Batch(events=points)) is Verdict.OK
        writer.close()

        logged = Counter((route_of(a["path"]), f"{a['status'] // 100}xx") for a in access)
        assert logged == {("/users/{id}", "2xx"): 1000, ("/orders/{id}/items", "2xx"): 500,
                          ("/missing/{id}", "4xx"): 300, ("/boom/{id}", "5xx"): 200}
        durations = defaultdict(float)
        for e in exchanges:
            durations[(route_of(e.path), f"{e.status // 100}xx")] += e.duration_ns / 1e9

        rows = influx.query(
            'SELECT sum("count"), sum("errors"), sum("sum"), sum("le_+Inf") FROM '
            '"http.server.request.duration" WHERE "service.name" = \'nginx\' '
            'GROUP BY "http.route", "http.response.status_class"', db="red")
        got = {(r["tags"]["http.route"], r["tags"]["http.response.status_class"]): r["values"][0]
               for r in rows}
        assert {k: v[1] for k, v in got.items()} == dict(logged)
        assert {k: v[2] for k, v in got.items()} == {k: (n if k[1] == "5xx" else 0)
                                                      for k, n in logged.items()}
        for key, (_, count, _, total, inf) in got.items():
            assert inf == count
            assert abs(total - durations[key]) < 1e-6, key
        # curl's side, as client requests, by the same routes.
        (client,) = influx.query('SELECT sum("count") FROM "http.client.request.duration" '
                                 'WHERE "service.name" = \'curl\'', db="red")
        assert client["values"][0][1] == 2000

        prom = Prometheus(tmp_path, [f"127.0.0.1:{sink.listener.port}"], interval=0.5)
        q = ('sum by (http_route, http_response_status_class) '
             '(http_server_request_duration_seconds_count{service_name="nginx"})')
        deadline = time.monotonic() + 30
        while not prom.query(q) and time.monotonic() < deadline:
            time.sleep(0.3)
        scraped = {(r["metric"]["http_route"], r["metric"]["http_response_status_class"]):
                   int(float(r["value"][1])) for r in prom.query(q)}
        assert scraped == dict(logged)
        sums = prom.query('sum(http_server_request_duration_seconds_sum{service_name="nginx"})')
        assert abs(float(sums[0]["value"][1]) - sum(durations.values())) < 1e-6
    finally:
        if prom is not None:
            prom.stop()
        if sink is not None:
            sink.close()
        if influx is not None:
            influx.stop()
        nginx.stop()
