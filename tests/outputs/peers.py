"""Real metric stores from Debian, started by the tests on loopback with temporary directories
(never as system services): InfluxDB 1.x (``influxdb``) and Prometheus (``prometheus``)."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def needs(tool: str) -> pytest.MarkDecorator:
    return pytest.mark.skipif(shutil.which(tool) is None,
                              reason=f"needs {tool} from Debian (./scripts/setup installs it "
                                     "with the test extras)")


def _wait_http(url: str, proc: subprocess.Popen, log: Path, what: str) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(url, timeout=1).read()
            return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"{what} did not start: {log.read_text()[-2000:]}")
            time.sleep(0.1)


INFLUX_CONF = """
reporting-enabled = false
bind-address = "127.0.0.1:{rpc}"
[meta]
  dir = "{dir}/meta"
[data]
  dir = "{dir}/data"
  wal-dir = "{dir}/wal"
  query-log-enabled = false
[monitor]
  store-enabled = false
[subscriber]
  enabled = false
[http]
  enabled = true
  auth-enabled = {auth}
  bind-address = "127.0.0.1:{http}"
  log-enabled = false
  pprof-enabled = false
[continuous_queries]
  enabled = false
[[udp]]
  enabled = true
  bind-address = "127.0.0.1:{udp}"
  database = "udp"
  batch-size = 1
  batch-timeout = "10ms"
"""


class Influx:
    """InfluxDB 1.x (Debian's influxdb) with HTTP and a UDP listener (database ``udp``)."""

    def __init__(self, tmp: Path, *, auth: bool = False) -> None:
        self.dir = tmp / "influxdb"
        self.dir.mkdir()
        self.http_port = free_port()
        self.udp_port = free_port(socket.SOCK_DGRAM)
        conf = self.dir / "influxdb.conf"
        conf.write_text(INFLUX_CONF.format(dir=self.dir, rpc=free_port(), http=self.http_port,
                                           udp=self.udp_port, auth=str(auth).lower()))
        self.auth = ("", "")
        self.log = self.dir / "influxd.log"
        self.proc = subprocess.Popen(["influxd", "run", "-config", str(conf)],
                                     stdout=open(self.log, "wb"), stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        _wait_http(f"{self.url}/ping", self.proc, self.log, "influxd")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def query(self, q: str, db: str = "") -> list[dict]:
        """The results' series of an InfluxQL query (raises on an error)."""
        params = {"q": q, "epoch": "ns"}
        if db:
            params["db"] = db
        data = urllib.parse.urlencode(params).encode()
        creds = "?" + urllib.parse.urlencode({"u": self.auth[0], "p": self.auth[1]}) \
            if self.auth[0] else ""  # InfluxDB reads credentials from the URL only
        with urllib.request.urlopen(f"{self.url}/query{creds}", data=data, timeout=30) as r:
            body = json.load(r)
        out = []
        for result in body["results"]:
            if "error" in result:
                raise AssertionError(f"influx query {q!r}: {result['error']}")
            out += result.get("series", [])
        return out

    def create(self, db: str) -> None:
        self.query(f'CREATE DATABASE "{db}"')

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def influx(tmp_path):
    server = Influx(tmp_path)
    yield server
    server.stop()


class Prometheus:
    """Prometheus (Debian's) scraping ``targets`` every ``interval`` seconds."""

    def __init__(self, tmp: Path, targets: list[str], *, interval: float = 1.0) -> None:
        self.dir = tmp / "prometheus"
        self.dir.mkdir()
        self.port = free_port()
        conf = self.dir / "prometheus.yml"
        conf.write_text(
            "global:\n"
            f"  scrape_interval: {int(interval * 1000)}ms\n"
            f"  evaluation_interval: {int(interval * 1000)}ms\n"
            "scrape_configs:\n"
            "  - job_name: log-shuttle\n"
            f"    static_configs:\n      - targets: {json.dumps(targets)}\n")
        self.log = self.dir / "prometheus.log"
        self.proc = subprocess.Popen(
            ["prometheus", f"--config.file={conf}", f"--storage.tsdb.path={self.dir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
            stdout=open(self.log, "wb"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        _wait_http(f"{self.url}/-/ready", self.proc, self.log, "prometheus")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def query(self, q: str) -> list[dict]:
        url = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": q})
        with urllib.request.urlopen(url, timeout=30) as r:
            body = json.load(r)
        assert body["status"] == "success", body
        return body["data"]["result"]

    def targets(self) -> list[dict]:
        with urllib.request.urlopen(f"{self.url}/api/v1/targets", timeout=30) as r:
            return json.load(r)["data"]["activeTargets"]

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
