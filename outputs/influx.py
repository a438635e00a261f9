"""The InfluxDB output: metric points as line protocol (outputs/lineproto.py), over HTTP to
``/write`` (InfluxDB 1.x) or ``/api/v2/write`` (InfluxDB 2.x and 1.8+), or over UDP or TCP
(InfluxDB 1.x's UDP listener, Telegraf's socket_listener).

Each point is one line: the measurement is the metric's name (``http.server.request.duration``),
the tags its attributes plus ``host``, the fields ``count``, and for histograms ``errors``,
``sum`` (seconds) and the cumulative bucket counts ``le_0.005`` ... ``le_+Inf``; the timestamp
(ns) is the end of the interval. Values are per interval (delta): ``sum("count")`` over a time
range gives the requests in it.

Verdicts: HTTP 2xx is OK; 400 (InfluxDB could not parse or store some points: it says which)
drops the batch, logged; 413 (too large) splits the batch in halves, retried at once; 401, 403
and 404 (no such database or bucket) are retried with an error (a misconfiguration that someone
can fix, the points wait); 429 and 5xx are retried, honouring Retry-After; a connection failure
is retried. UDP: every datagram at most ``max_datagram`` bytes, cut at line ends (a longer line
is dropped and counted); OK once sent (UDP says no more). TCP: OK once written.
"""

from __future__ import annotations

import http.client
import logging
import socket
import ssl
import time
import urllib.parse


from common.component import BootError, Context
from common.events import Batch, MetricEvent
from common.net import parse_address, read_token
from outputs.base import Verdict
from outputs.failures import FailureReporter
from outputs.lineproto import lines
from outputs.metricstate import flat_fields, metric_events
from outputs.runner import Backoff, OutputRunner
from outputs.influx_config import InfluxOutputConfig




def encode(events: list[MetricEvent], *, host: str) -> list[bytes]:
    """One line (with its newline) per point."""
    out = []
    for ev in events:
        tags = dict(ev.attrs)
        if host:
            tags.setdefault("host", host)
        data = lines([(ev.name, tags, flat_fields(ev), ev.time_ns)])
        if data:
            out.append(data)
    return out


def build(ctx: Context) -> OutputRunner:
    cfg: InfluxOutputConfig = ctx.config
    ctx.one_consumer()
    if cfg.protocol in ("udp", "tcp"):
        host, port = parse_address(cfg.address, who=ctx.name)
        sink: object = SocketSink(name=f"influxdb {cfg.protocol} {cfg.address}", host=host,
                                  port=port, udp=cfg.protocol == "udp", agent_host=ctx.host,
                                  max_datagram=cfg.max_datagram, timeout=cfg.timeout,
                                  log=ctx.log)
    else:
        url = urllib.parse.urlsplit(cfg.url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise BootError(f"{ctx.name}: url {cfg.url!r} is not http(s)://HOST[:PORT]")
        headers = {"Content-Type": "text/plain; charset=utf-8"}
        if cfg.protocol == "http-v2":
            params = {"bucket": cfg.bucket, "precision": "ns"}
            if cfg.org:
                params["org"] = cfg.org
            path = "/api/v2/write"
        else:
            params = {"db": cfg.database, "precision": "ns"}
            if cfg.retention_policy:
                params["rp"] = cfg.retention_policy
            if cfg.username:
                params["u"] = cfg.username
                params["p"] = read_token(cfg.password_file, who=ctx.name) \
                    if cfg.password_file else ""
            path = "/write"
        if cfg.token_file:
            headers["Authorization"] = "Token " + read_token(cfg.token_file, who=ctx.name)
        tls = None
        if url.scheme == "https":
            tls = ssl.create_default_context(cafile=cfg.tls_ca or None)
        elif cfg.token_file or cfg.username:
            ctx.log.warning("%s: credentials over plain http", ctx.name)
        base = url.path.rstrip("/")
        sink = HttpSink(name=f"influxdb {cfg.url}", host=url.hostname,
                        port=url.port or (443 if tls else 80), tls=tls,
                        target=f"{base}{path}?{urllib.parse.urlencode(params)}", headers=headers,
                        agent_host=ctx.host, max_lines=cfg.max_lines, timeout=cfg.timeout,
                        log=ctx.log)
    return OutputRunner(ctx, sink, backoff=Backoff(maximum=cfg.backoff_max))


class HttpSink:
    def __init__(self, *, name: str, host: str, port: int, target: str,
                 headers: dict[str, str], agent_host: str, tls: ssl.SSLContext | None = None,
                 max_lines: int = 5000, timeout: float = 10.0,
                 log: logging.Logger | None = None) -> None:
        self.name = name
        self.host, self.port, self.tls = host, port, tls
        self.target = target
        self.headers = headers
        self.agent_host = agent_host
        self.max_lines = max_lines
        self.timeout = timeout
        self.log = log or logging.getLogger("log_shuttle")
        self.failures = FailureReporter(who=f"output {name}", log=self.log)
        self.conn: http.client.HTTPConnection | None = None
        self.pending: list[list[bytes]] = []
        self._batch: Batch | None = None
        self._not_before = 0.0
        self.points_sent = 0
        self.points_rejected = 0

    @property
    def healthy(self) -> bool:
        return self.failures.since is None

    def send(self, batch: Batch) -> Verdict:
        if self._batch is not batch:
            self._batch = batch
            body = encode(metric_events(batch.events), host=self.agent_host)
            self.pending = [body[i:i + self.max_lines]
                            for i in range(0, len(body), self.max_lines)]
        wait = self._not_before - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        while self.pending:
            chunk = self.pending[0]
            verdict = self._post(chunk)
            if verdict is Verdict.RETRY:
                return Verdict.RETRY
            self.pending.pop(0)
        self.failures.ok()
        self._batch = None
        return Verdict.OK

    def _post(self, chunk: list[bytes]) -> Verdict:
        body = b"".join(chunk)
        for attempt in (0, 1):
            reused = self.conn is not None
            try:
                status, text, response = self._request(body)
                break
            except (OSError, http.client.HTTPException) as exc:
                self._close()
                if reused and attempt == 0:
                    continue  # the server closed an idle keep-alive connection: a new one
                self.failures.failed("connect",
                                     f"write to {self.host}:{self.port} failed: {exc}")
                return Verdict.RETRY
        if 200 <= status < 300:
            self.points_sent += len(chunk)
            return Verdict.OK
        if status == 413 and len(chunk) > 1:
            half = len(chunk) // 2
            self.pending[0:1] = [chunk[:half], chunk[half:]]
            return self._post(self.pending[0])
        if status in (400, 413, 422):
            self.points_rejected += len(chunk)
            self.log.error("output %s: InfluxDB rejected %d point(s) for good (HTTP %d): %s",
                           self.name, len(chunk), status, text)
            return Verdict.OK  # the rest of the batch goes on; these points are counted
        retry_after = response.getheader("Retry-After")
        if retry_after and retry_after.isdigit():
            self._not_before = time.monotonic() + int(retry_after)
        level = logging.ERROR if status in (401, 403, 404) else logging.WARNING
        self.failures.failed(str(status), f"InfluxDB answered HTTP {status}: {text.strip()}",
                             level=level)
        return Verdict.RETRY

    def _request(self, body: bytes) -> tuple[int, str, http.client.HTTPResponse]:
        if self.conn is None:
            if self.tls is not None:
                self.conn = http.client.HTTPSConnection(self.host, self.port,
                                                        timeout=self.timeout, context=self.tls)
            else:
                self.conn = http.client.HTTPConnection(self.host, self.port,
                                                       timeout=self.timeout)
        self.conn.request("POST", self.target, body=body, headers=self.headers)
        response = self.conn.getresponse()
        text = response.read()[:500].decode("utf-8", "replace")
        return response.status, text, response

    def _close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def close(self) -> None:
        self._close()


class SocketSink:
    def __init__(self, *, name: str, host: str, port: int, udp: bool, agent_host: str,
                 max_datagram: int = 1400, timeout: float = 10.0,
                 log: logging.Logger | None = None) -> None:
        self.name = name
        self.host, self.port, self.udp = host, port, udp
        self.agent_host = agent_host
        self.max_datagram = max_datagram
        self.timeout = timeout
        self.log = log or logging.getLogger("log_shuttle")
        self.failures = FailureReporter(who=f"output {name}", log=self.log)
        self.sock: socket.socket | None = None
        self.points_sent = 0
        self.points_too_large = 0

    @property
    def healthy(self) -> bool:
        return self.failures.since is None

    def send(self, batch: Batch) -> Verdict:
        body = encode(metric_events(batch.events), host=self.agent_host)
        if not body:
            return Verdict.OK
        try:
            if self.sock is None:
                kind = socket.SOCK_DGRAM if self.udp else socket.SOCK_STREAM
                self.sock = socket.create_connection((self.host, self.port), self.timeout) \
                    if not self.udp else self._udp(kind)
            if self.udp:
                for datagram in self._datagrams(body):
                    self.sock.send(datagram)
            else:
                self.sock.sendall(b"".join(body))
        except OSError as exc:
            if self.sock is not None:
                self.sock.close()
                self.sock = None
            self.failures.failed("send", f"sending to {self.host}:{self.port} failed: {exc}")
            return Verdict.RETRY
        self.points_sent += len(body)
        self.failures.ok()
        return Verdict.OK

    def _udp(self, kind: int) -> socket.socket:
        family, _, _, _, addr = socket.getaddrinfo(self.host, self.port, type=kind)[0]
        sock = socket.socket(family, kind)
        sock.connect(addr)
        return sock

    def _datagrams(self, body: list[bytes]):
        current: list[bytes] = []
        size = 0
        for text in body:
            if len(text) > self.max_datagram:
                self.points_too_large += 1
                self.log.warning("output %s: a point of %d bytes does not fit a datagram of "
                                 "%d: dropped", self.name, len(text), self.max_datagram)
                continue
            if size + len(text) > self.max_datagram:
                yield b"".join(current)
                current, size = [], 0
            current.append(text)
            size += len(text)
        if current:
            yield b"".join(current)

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
