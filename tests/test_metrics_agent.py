"""RED metrics through the real agent: `log-shuttle --config` with the eBPF input, the pipeline's
aggregator (1 s intervals) and every metric output at once (InfluxDB over HTTP, Prometheus, JSON
lines, OTLP metrics into `log-shuttle server`), and metric records on stdout beside the http
events. Debian's nginx serves a known load
(2,000 requests over 4 routes with ids, 15% 404 and 10% 500, from 4 curls with keep-alive): the
counts per route and status class that InfluxDB returns to a query and that Prometheus scraped
equal nginx's own access log; the histograms' count and sum equal the exchanges' durations (the
http events on stdout); TCP connections are counted per peer. nginx and curl run from copies
that ``[pipeline.metrics] services`` names by executable path (the probes see the whole host,
where other nginx and curl may be busy), which tests the overrides too."""

from __future__ import annotations

import json
import os
import shutil
from collections import Counter

from tests.harness import Agent, wait_for
from tests.inputs.ebpf.conftest import Nginx, needs, needs_ebpf
from tests.outputs.peers import Influx, Prometheus, free_port
from tests.server.helpers import Server
from tests.outputs.nginx_load import route_of, run_load, serve_routes, workload

pytestmark = [needs_ebpf, needs("nginx", "curl", "influxd", "prometheus")]


def test_agent_streams_red_metrics_to_every_store(tmp_path, monkeypatch):
    # The probes see the whole host, where other nginx and curl may run: this test's own run
    # from copies, which the configuration names as services of their own (by executable path).
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for tool in ("nginx", "curl"):
        shutil.copy2(shutil.which(tool) or f"/usr/sbin/{tool}", bindir / tool)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    nginx = Nginx(tmp_path)
    serve_routes(nginx)
    influx = Influx(tmp_path)
    influx.create("red")
    prom_port = free_port()
    grpc_port = free_port()
    server = Server(tmp_path, "--insecure", grpc_port=grpc_port)
    jsonl = tmp_path / "metrics" / "red.jsonl"
    config = tmp_path / "agent.toml"
    config.write_text(f"""
[inputs.ebpf]
probes = ["process", "tcp", "http"]
ring_buffer_bytes = 67108864   # room for bursts on a busy 2-core machine (a loss fails the test)
max_exchanges_per_second = 0   # every exchange: the counts are checked exactly

[pipeline.spans]
http_events = true   # the exchanges' own durations, to check the histograms' sums against

[pipeline.metrics]
interval = 1.0
stdout = true
services = {{ "{bindir}/nginx" = "red-nginx", "{bindir}/curl" = "red-curl" }}

[outputs.stdout]

[[outputs.influxdb]]
url = "{influx.url}"
database = "red"

[outputs.prometheus]
listen = "127.0.0.1:{prom_port}"

[[outputs.metrics_jsonl]]
path = "{jsonl}"

[[outputs.otlp_metrics]]
address = "127.0.0.1:{grpc_port}"
insecure = true
temporality = "delta"
""")
    prom = None
    try:
        with Agent(tmp_path, "--config", str(config)) as agent:
            wait_for(lambda: "tracing with probes" in agent.stderr()
                     or agent.proc.poll() is not None, timeout=90, what="the eBPF input")
            assert agent.proc.poll() is None, agent.stderr()
            children = agent.children()
            assert {"log-shuttle: output influxdb", "log-shuttle: output prometheus",
                    "log-shuttle: output metrics_jsonl",
                    "log-shuttle: output otlp_metrics"} <= set(children), children
            prom = Prometheus(tmp_path, [f"127.0.0.1:{prom_port}"], interval=0.5)
            run_load(nginx, tmp_path, workload())
            access = [a for a in nginx.access() if not a["path"].startswith("/ok")]
            logged = Counter((route_of(a["path"]), f"{a['status'] // 100}xx") for a in access)
            assert sum(logged.values()) == 2000

            def influx_counts():
                rows = influx.query(
                    'SELECT sum("count") FROM "http.server.request.duration" WHERE '
                    '"service.name" = \'red-nginx\' GROUP BY "http.route", '
                    '"http.response.status_class"', db="red")
                return {(r["tags"]["http.route"], r["tags"]["http.response.status_class"]):
                        r["values"][0][1] for r in rows}

            try:
                wait_for(lambda: influx_counts() == dict(logged), timeout=60,
                         what="InfluxDB to hold the access log's counts")
            except AssertionError as exc:
                losses = [line for line in agent.stdout().splitlines() if b'"loss"' in line]
                raise AssertionError(f"{exc}: {influx_counts()} != {dict(logged)}; "
                                     f"losses {losses[:5]}; {agent.stderr()[-3000:]}") from None
            rows = influx.query(
                'SELECT sum("count"), sum("errors"), sum("sum"), sum("le_+Inf") FROM '
                '"http.server.request.duration" WHERE "service.name" = \'red-nginx\' '
                'GROUP BY "http.route", "http.response.status_class"', db="red")
            stored = {(r["tags"]["http.route"], r["tags"]["http.response.status_class"]):
                      r["values"][0][1:] for r in rows}
            assert {k: v[1] for k, v in stored.items()} == \
                {k: (n if k[1] == "5xx" else 0) for k, n in logged.items()}
            assert all(v[3] == v[0] for v in stored.values())  # le_+Inf is the count
            def clients():
                rows = influx.query('SELECT sum("count") FROM "http.client.request.duration" '
                                    'GROUP BY "service.name"', db="red")
                return {r["tags"]["service.name"]: r["values"][0][1] for r in rows}

            # the client side's last interval may be flushed after the server side's
            try:
                wait_for(lambda: clients().get("red-curl") == 2000, timeout=30,
                         what="curl's 2,000 client exchanges in InfluxDB")
            except AssertionError as exc:
                raise AssertionError(f"{exc}: {clients()}") from None

            def tcp(measurement):
                found = influx.query(f'SELECT sum("count") FROM "{measurement}" WHERE '
                                     '"service.name" = \'red-nginx\' AND "direction" = \'server\' '
                                     'GROUP BY "network.peer.address", "server.port"', db="red")
                return {(r["tags"]["network.peer.address"], r["tags"]["server.port"]):
                        r["values"][0][1] for r in found}

            # one keep-alive connection per curl: 4 accepted by nginx, closed when curl ended
            peer = ("127.0.0.1", str(nginx.port))
            try:
                wait_for(lambda: tcp("tcp.connection.opened") == {peer: 4}
                         and tcp("tcp.connection.duration") == {peer: 4}, timeout=30,
                         what="nginx's 4 connections in InfluxDB")
            except AssertionError as exc:
                losses = [line for line in agent.stdout().splitlines() if b'"loss"' in line]
                raise AssertionError(f"{exc}: {tcp('tcp.connection.opened')}, "
                                     f"{tcp('tcp.connection.duration')}; losses {losses[:5]}"
                                     ) from None
            q = ('sum by (http_route, http_response_status_class) '
                 '(http_server_request_duration_seconds_count{service_name="red-nginx"})')

            def scraped():
                return {(r["metric"]["http_route"], r["metric"]["http_response_status_class"]):
                        int(float(r["value"][1])) for r in prom.query(q)}

            last: list = []

            def prom_done():
                last[:] = [scraped(), [(t["health"], t["lastError"]) for t in prom.targets()]]
                return last[0] == dict(logged)

            try:
                wait_for(prom_done, timeout=60, what="Prometheus to scrape the access log's counts")
            except AssertionError as exc:
                raise AssertionError(f"{exc}: it has {last}") from None
            (total,) = prom.query(
                'sum(http_server_request_duration_seconds_sum{service_name="red-nginx"})')
            prom_sum = float(total["value"][1])
            assert agent.stop() == 0
        # JSON lines: the same counts; stdout: metric records beside the http events.
        points = [json.loads(line) for line in jsonl.read_text().splitlines()]
        from_file = Counter()
        for p in points:
            if p["name"] == "http.server.request.duration" and \
                    p["attributes"]["service.name"] == "red-nginx":
                from_file[(p["attributes"]["http.route"],
                           p["attributes"]["http.response.status_class"])] += p["count"]
        assert from_file == logged
        # OTLP metrics (delta), as log-shuttle server stored them.
        assert server.stop() == 0
        from_server = Counter()
        for r in server.records():
            if r["name"] == "http.server.request.duration" and \
                    r["resource"]["service.name"] == "red-nginx":
                assert r["temporality"] == "delta"
                from_server[(r["attributes"]["http.route"],
                             r["attributes"]["http.response.status_class"])] += r["count"]
        assert from_server == logged
        records = [json.loads(line) for line in agent.stdout().splitlines()]
        metric = [r for r in records if r.get("type") == "metric"]
        assert sum(r["count"] for r in metric if r["name"] == "http.server.request.duration"
                   and r["attrs"]["service.name"] == "red-nginx") == 2000
        # The histograms' sums are the exchanges' durations, as the http events say.
        servers = nginx.pids()
        exchanges = [r for r in records if r.get("type") == "http" and r["pid"] in servers
                     and r["direction"] == "server"]
        assert len(exchanges) == 2000
        durations = Counter()
        for r in exchanges:
            durations[(route_of(r["path"]), f"{r['status'] // 100}xx")] += r["duration_ns"] / 1e9
        for key, (count, _, total, _) in stored.items():
            assert abs(total - durations[key]) < 1e-6, key
        assert abs(prom_sum - sum(durations.values())) < 1e-6
    finally:
        if prom is not None:
            prom.stop()
        server.stop()
        influx.stop()
        nginx.stop()
