"""RED metrics through the real agent: `log-shuttle --config` with the eBPF input, the pipeline's
aggregator (1 s intervals) and every metric output at once (InfluxDB over HTTP, Prometheus,
JSON lines, OTLP metrics into `log-shuttle server`), and metric records on stdout. nginx serves
a known load; what each store holds equals nginx's access log."""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections import Counter

from tests.harness import Agent, wait_for
from tests.inputs.ebpf.conftest import Nginx, needs, needs_ebpf
from tests.outputs.peers import Influx, Prometheus, free_port
from tests.outputs.test_red_nginx import ROUTES_CONF, route_of, workload

pytestmark = [needs_ebpf, needs("nginx", "curl", "influxd", "prometheus")]


def test_agent_streams_red_metrics_to_every_store(tmp_path):
    nginx = Nginx(tmp_path)
    conf = (nginx.dir / "nginx.conf").read_text()
    conf = re.sub(r"        location = /ok.*?location / \{ return 404; \}\n", ROUTES_CONF, conf,
                  flags=re.S)
    (nginx.dir / "nginx.conf").write_text(conf)
    subprocess.run(["nginx", "-p", str(nginx.dir), "-c", str(nginx.dir / "nginx.conf"), "-s",
                    "reload"], check=True, capture_output=True)
    influx = Influx(tmp_path)
    influx.create("red")
    prom_port = free_port()
    jsonl = tmp_path / "metrics" / "red.jsonl"
    config = tmp_path / "agent.toml"
    config.write_text(f"""
[inputs.ebpf]
probes = ["process", "tcp", "http"]

[pipeline.metrics]
interval = 1.0
stdout = true

[outputs.stdout]

[[outputs.influxdb]]
url = "{influx.url}"
database = "red"

[outputs.prometheus]
listen = "127.0.0.1:{prom_port}"

[[outputs.metrics_jsonl]]
path = "{jsonl}"
""")
    prom = None
    try:
        with Agent(tmp_path, "--config", str(config)) as agent:
            wait_for(lambda: "tracing with probes" in agent.stderr()
                     or agent.proc.poll() is not None, timeout=90, what="the eBPF input")
            assert agent.proc.poll() is None, agent.stderr()
            children = agent.children()
            assert {"log-shuttle: output influxdb", "log-shuttle: output prometheus",
                    "log-shuttle: output metrics_jsonl"} <= set(children), children
            prom = Prometheus(tmp_path, [f"127.0.0.1:{prom_port}"], interval=0.5)
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
            logged = Counter((route_of(a["path"]), f"{a['status'] // 100}xx") for a in access)
            assert sum(logged.values()) == 2000

            def influx_counts():
                rows = influx.query(
                    'SELECT sum("count") FROM "http.server.request.duration" WHERE '
                    '"service.name" = \'nginx\' GROUP BY "http.route", '
                    '"http.response.status_class"', db="red")
                return {(r["tags"]["http.route"], r["tags"]["http.response.status_class"]):
                        r["values"][0][1] for r in rows}

            wait_for(lambda: influx_counts() == dict(logged), timeout=60,
                     what="InfluxDB to hold the access log's counts")
            q = ('sum by (http_route, http_response_status_class) '
                 '(http_server_request_duration_seconds_count{service_name="nginx"})')

            def scraped():
                return {(r["metric"]["http_route"], r["metric"]["http_response_status_class"]):
                        int(float(r["value"][1])) for r in prom.query(q)}

            wait_for(lambda: scraped() == dict(logged), timeout=60,
                     what="Prometheus to scrape the access log's counts")
            assert agent.stop() == 0
        # JSON lines: the same counts; stdout: metric records beside the http events.
        points = [json.loads(line) for line in jsonl.read_text().splitlines()]
        from_file = Counter()
        for p in points:
            if p["name"] == "http.server.request.duration" and \
                    p["attributes"]["service.name"] == "nginx":
                from_file[(p["attributes"]["http.route"],
                           p["attributes"]["http.response.status_class"])] += p["count"]
        assert from_file == logged
        records = [json.loads(line) for line in agent.stdout().splitlines()]
        metric = [r for r in records if r.get("type") == "metric"]
        assert sum(r["count"] for r in metric if r["name"] == "http.server.request.duration"
                   and r["attrs"]["service.name"] == "nginx") == 2000
        assert any(r.get("type") == "http" for r in records)
    finally:
        if prom is not None:
            prom.stop()
        influx.stop()
        nginx.stop()
