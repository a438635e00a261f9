"""RED metrics from what the eBPF input saw: HTTP exchanges (HttpEvent) and TCP connections
(ConnEvent) added up per series over fixed intervals, handed on as MetricEvents (delta: each
point covers one interval).

Series:

- ``http.server.request.duration`` / ``http.client.request.duration`` (histograms, seconds,
  OpenTelemetry's buckets), per service, method, route (pipeline/routes.py) and status class
  (``2xx``...): ``count`` requests, ``errors`` (server: 5xx; client: 4xx and 5xx), ``sum`` and
  bucket counts of the durations; an exchange the http probe sampled 1 in N counts N times
  (estimates while the input's budget is exceeded, exact otherwise);
- ``tcp.connection.opened`` (counter) per service, direction (client: connect, server: accept),
  peer address and server port; ``tcp.connection.duration`` (histogram) of the connections that
  closed, with how long they were open.

The service is the process's or container's: ``service.name`` is the executable's name (a
container's processes also get ``container.id``), unless ``services`` maps the executable's path,
its name or the container id (or its first 12 characters) to a name of the user's choice.

Cardinality is bounded: each service has at most ``max_series`` series; an observation that would
make one more is counted in that metric's one overflow series of the service, whose only other
attribute is ``otel.metric.overflow = "true"`` (OpenTelemetry's convention), and the first
overflow of a service is logged. Series not seen for ``series_expiry`` seconds are forgotten (and
free their place).

Intervals are aligned on the wall clock (``interval`` 10 s: ..:00, ..:10, ...); an event counts in
the interval in which the pipeline got it (events come at most ``send_interval`` + the pipeline's
batch delay after they happened).
"""

from __future__ import annotations

import logging
import os
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable

from common.events import ConnEvent, HttpEvent, MetricEvent, ProcessInfo
from pipeline.config import MetricsConfig
from pipeline.routes import RouteCache

HTTP_BOUNDS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
"""OpenTelemetry's advice for http.server.request.duration and http.client.request.duration."""
TCP_BOUNDS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
"""OpenTelemetry's advice for connection durations (e.g. kestrel.connection.duration)."""

HTTP_SERVER = "http.server.request.duration"
HTTP_CLIENT = "http.client.request.duration"
TCP_OPENED = "tcp.connection.opened"
TCP_DURATION = "tcp.connection.duration"
OVERFLOW = "otel.metric.overflow"

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE",
                     "PATCH"})
"""Any other method is counted as ``_OTHER`` (OpenTelemetry's rule: methods are unbounded)."""


class _Series:
    __slots__ = ("attrs", "name", "kind", "bounds", "count", "errors", "sum", "buckets", "seen")

    def __init__(self, name: str, kind: str, attrs: dict[str, str], bounds: tuple[float, ...],
                 seen: int) -> None:
        self.name = name
        self.kind = kind
        self.attrs = attrs
        self.bounds = bounds
        self.count = 0
        self.errors = 0
        self.sum = 0.0
        self.buckets = [0] * (len(bounds) + 1) if bounds else []
        self.seen = seen


class _Service:
    __slots__ = ("name", "base", "series", "overflow", "overflowed", "reported")

    def __init__(self, name: str, container_id: str) -> None:
        self.name = name
        self.base = {"service.name": name}
        if container_id:
            self.base["container.id"] = container_id[:12]
        self.series: dict[tuple, _Series] = {}
        self.overflow: dict[str, _Series] = {}
        self.overflowed = 0
        """Observations counted in overflow series, since start."""
        self.reported = 0
        """``overflowed`` when it was last logged."""


class Aggregator:
    """Adds events up into series; ``collect`` closes the interval and returns its points."""

    def __init__(self, *, interval: float = 10.0, max_series: int = 2000,
                 series_expiry: float = 3600.0, services: dict[str, str] | None = None,
                 http: bool = True, tcp: bool = True, log: logging.Logger | None = None,
                 clock: Callable[[], int] = time.time_ns) -> None:
        self.interval_ns = max(1, int(interval * 1e9))
        self.max_series = max_series
        self.expiry_ns = int(series_expiry * 1e9)
        self.overrides = dict(services or {})
        self.http = http
        self.tcp = tcp
        self.log = log or logging.getLogger("log_shuttle")
        self.clock = clock
        self.routes = RouteCache()
        self.services: dict[tuple[str, str], _Service] = {}
        self._by_process: dict[tuple[int, int, str], _Service] = {}
        self._conns: dict[tuple, tuple[str, _Service]] = {}
        now = clock()
        self.start_ns = now
        self.next_ns = (now // self.interval_ns + 1) * self.interval_ns
        self.observed = 0
        self.points = 0

    @classmethod
    def from_config(cls, cfg: MetricsConfig, *, log: logging.Logger | None = None,
                    clock: Callable[[], int] = time.time_ns) -> Aggregator:
        return cls(interval=cfg.interval, max_series=cfg.max_series,
                   series_expiry=cfg.series_expiry, services=cfg.services, http=cfg.http,
                   tcp=cfg.tcp, log=log, clock=clock)

    # --- services ------------------------------------------------------------------------------

    def service_of(self, pid: int, comm: str, proc: ProcessInfo | None) -> _Service:
        key = (pid, proc.start_ns if proc is not None else 0, comm)
        svc = self._by_process.get(key)
        if svc is None:
            if len(self._by_process) >= 65536:
                self._by_process.clear()
            name, container = self.service_name(comm, proc)
            svc = self.services.get((name, container))
            if svc is None:
                svc = self.services[(name, container)] = _Service(name, container)
            self._by_process[key] = svc
        return svc

    def service_name(self, comm: str, proc: ProcessInfo | None) -> tuple[str, str]:
        """(service.name, container id) of a process: the user's override for its container,
        executable path or name, else the executable's name."""
        exe = proc.exe if proc is not None else ""
        container = proc.container_id if proc is not None else ""
        name = comm or (proc.comm if proc is not None else "")
        over = self.overrides
        if over:
            for key in (container, container[:12], exe, os.path.basename(exe), name):
                if key and key in over:
                    return over[key], container
        return (os.path.basename(exe) or name or "unknown"), container

    # --- observing ------------------------------------------------------------------------------

    def observe(self, events: Iterable[object]) -> None:
        # The hot path (every exchange): one loop with its names bound locally.
        http, tcp = self.http, self.tcp
        by_process = self._by_process
        routes = self.routes
        bounds = HTTP_BOUNDS
        seen = self.next_ns
        n = 0
        for ev in events:
            kind = type(ev)
            if kind is HttpEvent:
                if not http:
                    continue
                proc = ev.process
                svc = by_process.get((ev.pid, proc.start_ns if proc is not None else 0, ev.comm))
                if svc is None:
                    svc = self.service_of(ev.pid, ev.comm, proc)
                server = ev.direction == "server"
                method = ev.method
                if method not in METHODS:
                    method = "_OTHER"
                status = ev.status
                key = (server, method, routes(ev.path), status // 100)
                series = svc.series.get(key)
                if series is None:
                    series = self._new_http(svc, key)
                seconds = ev.duration_ns / 1e9
                w = ev.weight  # N when the probe sampled 1 in N: it stands for N exchanges
                series.count += w
                series.sum += seconds * w
                series.buckets[bisect_left(bounds, seconds)] += w
                if status >= 500 or (status >= 400 and not server) or not status:
                    series.errors += w
                series.seen = seen
                n += 1
            elif kind is ConnEvent and tcp:
                self.observe_conn(ev)
        self.observed += n

    def observe_http(self, ev: HttpEvent) -> None:
        self.observe((ev,))

    def _new_http(self, svc: _Service, key: tuple) -> _Series:
        server, method, route, klass = key
        name = HTTP_SERVER if server else HTTP_CLIENT
        if len(svc.series) >= self.max_series:
            return self._overflow(svc, name, "histogram", HTTP_BOUNDS)
        attrs = {**svc.base, "http.request.method": method, "http.route": route,
                 "http.response.status_class": f"{klass}xx" if klass else "none"}
        series = svc.series[key] = _Series(name, "histogram", attrs, HTTP_BOUNDS, self.next_ns)
        return series

    def _overflow(self, svc: _Service, name: str, kind: str, bounds: tuple) -> _Series:
        series = svc.overflow.get(name)
        if series is None:
            series = svc.overflow[name] = _Series(name, kind, {**svc.base, OVERFLOW: "true"},
                                                  bounds, self.next_ns)
            self.log.warning("metrics: service %s has %d series (max_series): further series of "
                             "%s are counted in one overflow series (%s=true)", svc.name,
                             len(svc.series), name, OVERFLOW)
        svc.overflowed += 1
        return series

    def observe_conn(self, ev: ConnEvent) -> None:
        conn = (ev.saddr, ev.sport, ev.daddr, ev.dport)
        if ev.kind == "close":
            known = self._conns.pop(conn, None)
            if not ev.duration_ns:
                return
            if known is not None:
                direction, svc = known
            else:
                direction, svc = "", self.service_of(ev.pid, ev.comm, ev.process)
            name = TCP_DURATION
        else:
            direction = "client" if ev.kind == "connect" else "server"
            svc = self.service_of(ev.pid, ev.comm, ev.process)
            if len(self._conns) >= 65536:
                self._conns.clear()
            self._conns[conn] = (direction, svc)
            name = TCP_OPENED
        port = ev.dport if direction == "client" else ev.sport
        key = (name, direction, ev.daddr, port)
        series = svc.series.get(key)
        if series is None:
            kind, bounds = ("histogram", TCP_BOUNDS) if name == TCP_DURATION else ("counter", ())
            if len(svc.series) >= self.max_series:
                series = self._overflow(svc, name, kind, bounds)
            else:
                attrs = {**svc.base, "network.peer.address": ev.daddr,
                         "server.port": str(port)}
                if direction:
                    attrs["direction"] = direction
                series = svc.series[key] = _Series(name, kind, attrs, bounds, self.next_ns)
        series.count += 1
        if name == TCP_DURATION:
            seconds = ev.duration_ns / 1e9
            series.sum += seconds
            series.buckets[bisect_left(TCP_BOUNDS, seconds)] += 1
        series.seen = self.next_ns
        self.observed += 1

    # --- intervals -----------------------------------------------------------------------------

    def time_left(self, now_ns: int | None = None) -> float:
        """Seconds until the current interval ends."""
        now_ns = self.clock() if now_ns is None else now_ns
        return max(0.0, (self.next_ns - now_ns) / 1e9)

    def due(self, now_ns: int | None = None) -> bool:
        return (self.clock() if now_ns is None else now_ns) >= self.next_ns

    def collect(self, now_ns: int | None = None) -> list[MetricEvent]:
        """Close the interval (at its boundary, or at ``now`` when stopping early) and return
        one point per series that saw something in it; forget series idle past the expiry."""
        now_ns = self.clock() if now_ns is None else now_ns
        end = min(now_ns, self.next_ns)
        start = self.start_ns
        points: list[MetricEvent] = []
        stale = now_ns - self.expiry_ns
        for svc in self.services.values():
            if svc.overflowed != svc.reported:
                self.log.warning("metrics: service %s: %d observations past max_series (%d) "
                                 "counted in its overflow series this interval (%d since start)",
                                 svc.name, svc.overflowed - svc.reported, self.max_series,
                                 svc.overflowed)
                svc.reported = svc.overflowed
            for table in (svc.series, svc.overflow):
                gone = []
                for key, s in table.items():
                    if s.count:
                        points.append(MetricEvent(
                            name=s.name, time_ns=end, start_ns=start, attrs=s.attrs, kind=s.kind,
                            count=s.count, errors=s.errors, sum=s.sum, bounds=list(s.bounds),
                            buckets=s.buckets))
                        s.count = s.errors = 0
                        s.sum = 0.0
                        if s.bounds:
                            s.buckets = [0] * (len(s.bounds) + 1)
                    elif s.seen < stale:
                        gone.append(key)
                for key in gone:
                    del table[key]
        self.start_ns = end
        if now_ns >= self.next_ns:
            self.next_ns = (now_ns // self.interval_ns + 1) * self.interval_ns
        self.points += len(points)
        return points

    def series_count(self) -> int:
        return sum(len(s.series) + len(s.overflow) for s in self.services.values())
