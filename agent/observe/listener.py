"""The agent's HTTP listener, a component process of its own (kind ``service``): ``/metrics``
(Prometheus text exposition), ``/health``, ``/ready`` and ``/status`` (JSON).

``/metrics`` adds up every component process's prometheus_client multiprocess files (the per-run
directory, agent/observe/rundir.py) and adds what the supervisor's table of children gives:
restarts, each child's CPU time and resident memory (from /proc), and the build. When the RED
metrics' Prometheus output writes its exposition into the run directory, it is served here too.

The listener only reads files: it holds no queue, no privilege, and a crash of it costs nothing
but a restart.
"""

from __future__ import annotations

import json
import os
import platform
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import msgspec

from agent.observe.rundir import read_children
from common.component import BootError, Context
from common.errors import LogShuttleError
from common.net import parse_address
from common.wake import wait_readable

RED_EXPOSITION = "red-metrics.prom"
"""The RED metrics' Prometheus output writes its exposition here, in the run directory."""


class ListenerSetup(msgspec.Struct, frozen=True, kw_only=True):
    listen: str
    rundir: str
    version: str = "unknown"
    stalled_after: float = 30.0


def build(ctx: Context[ListenerSetup]) -> Listener:
    cfg = ctx.config
    host, port = parse_address(cfg.listen, who=ctx.name, listen=True)
    try:
        server = ThreadingHTTPServer((host, port), _Handler)
    except OSError as exc:
        raise BootError(f"{ctx.name}: cannot listen on {cfg.listen}: "
                        f"{exc.strerror or exc}") from exc
    server.daemon_threads = True
    return Listener(ctx, server)


class Listener:
    def __init__(self, ctx: Context[ListenerSetup], server: ThreadingHTTPServer) -> None:
        self.ctx = ctx
        self.server = server
        self.view = View(rundir=ctx.config.rundir, version=ctx.config.version,
                         stalled_after=ctx.config.stalled_after)
        server.view = self.view  # type: ignore[attr-defined]
        server.log = ctx.log  # type: ignore[attr-defined]

    def run(self) -> None:
        thread = threading.Thread(target=self.server.serve_forever, name="http", daemon=True)
        thread.start()
        self.ctx.log.info("listening on %s (/metrics, /health, /ready, /status)",
                          "%s:%d" % self.server.server_address[:2])
        try:
            while not self.ctx.stop.is_set():
                try:
                    wait_readable([self.ctx.stop.fileno()], None)
                except InterruptedError:
                    pass
        finally:
            self.server.shutdown()
            self.server.server_close()


class View:
    """What the endpoints say, computed per request from the run directory."""

    def __init__(self, *, rundir: str, version: str, stalled_after: float = 30.0) -> None:
        self.rundir = rundir
        self.version = version
        self.stalled_after = stalled_after
        self.started = time.time()
        self.clock_tick = os.sysconf("SC_CLK_TCK")
        self.page = os.sysconf("SC_PAGE_SIZE")

    # --- /metrics ---------------------------------------------------------------------------

    def exposition(self) -> bytes:
        from prometheus_client import CollectorRegistry, generate_latest
        from prometheus_client.multiprocess import MultiProcessCollector

        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=self.rundir)
        registry.register(_AgentCollector(self))
        text = generate_latest(registry)
        try:
            with open(os.path.join(self.rundir, RED_EXPOSITION), "rb") as f:
                text += f.read()
        except OSError:
            pass
        return text

    def families(self) -> list[Any]:
        from prometheus_client.multiprocess import MultiProcessCollector

        return list(MultiProcessCollector(None, path=self.rundir).collect())

    # --- /status, /ready --------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        table = read_children(self.rundir)
        comps: dict[str, dict[str, Any]] = {}
        for c in table.get("children", []):
            comps[c["role"]] = {"component": c["role"], "kind": c["kind"], "pid": c["pid"],
                                "restarts": c["restarts"], **self.process(c["pid"])}
        for fam in self.families():
            name = fam.name.removeprefix("log_shuttle_component_")
            for s in fam.samples:
                if s.name.endswith("_created"):
                    continue
                role = s.labels.get("component")
                own = name != "rotations"  # rotations_total{kind}: the rotation's kind
                entry = comps.setdefault(role, {"component": role})
                if own and "kind" in s.labels:
                    entry.setdefault("kind", s.labels["kind"])
                extra = {k: v for k, v in s.labels.items()
                         if k != "component" and not (own and k == "kind")}
                if extra:
                    detail = entry.setdefault(name + "_by", {})
                    key = ",".join(extra.values())
                    detail[key] = detail.get(key, 0) + s.value
                entry[name] = entry.get(name, 0) + s.value
        return {"time": time.time(), "agent_pid": table.get("pid"),
                "agent_started": table.get("started"), "version": self.version,
                "stopping": table.get("stopping", False),
                "components": sorted(comps.values(), key=_order)}

    def ready(self) -> tuple[bool, list[str]]:
        why = []
        status = self.status()
        outputs = [c for c in status["components"] if c.get("kind") == "output"]
        if status["stopping"]:
            why.append("the agent is stopping")
        for c in outputs:
            if not c.get("pid"):
                why.append(f"{c['component']}: not running (restarts: {c.get('restarts', 0)})")
            elif "delivering" not in c:
                why.append(f"{c['component']}: starting")
            elif not c["delivering"]:
                errors = ", ".join(f"{k}: {v:.0f}" for k, v in
                                   sorted(c.get("errors_by", {}).items()))
                why.append(f"{c['component']}: failing to deliver for "
                           f"{c.get('failing_seconds', 0):.0f}s"
                           f"{f' (errors {errors})' if errors else ''}; retried "
                           f"{c.get('output_retries', 0):.0f} times")
            elif c.get("sending_seconds", 0) >= self.stalled_after:
                why.append(f"{c['component']}: stalled: one send has taken "
                           f"{c['sending_seconds']:.0f}s (its destination takes nothing)")
        return not why, why

    def process(self, pid: int | None) -> dict[str, float]:
        """CPU seconds and resident bytes of a process, from /proc; {} when it is gone."""
        if not pid:
            return {}
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
            with open(f"/proc/{pid}/statm", "rb") as f:
                rss = int(f.read().split()[1]) * self.page
        except (OSError, IndexError, ValueError):
            return {}
        return {"cpu_seconds": (int(fields[11]) + int(fields[12])) / self.clock_tick,
                "resident_bytes": rss}


def _order(c: dict[str, Any]) -> tuple[int, str]:
    return ({"input": 0, "pipeline": 1, "output": 2}.get(c.get("kind") or "", 3),
            c.get("component") or "")


class _AgentCollector:
    """Metrics from the supervisor's table of children and /proc, made at each scrape."""

    def __init__(self, view: View) -> None:
        self.view = view

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        p = "log_shuttle_component_"
        restarts = CounterMetricFamily(p + "child_restarts", "Times the supervisor restarted "
                                       "a component process.", labels=["component", "kind"])
        cpu = CounterMetricFamily(p + "process_cpu_seconds", "CPU time of the component's "
                                  "current process (user + system).", labels=["component", "kind"])
        rss = GaugeMetricFamily(p + "process_resident_memory_bytes", "Resident memory of the "
                                "component's current process.", labels=["component", "kind"])
        table = read_children(self.view.rundir)
        rows = [("supervisor", "supervisor", table.get("pid"), None),
                ("http", "service", os.getpid(), None)]
        rows += [(c["role"], c["kind"], c["pid"], c["restarts"]) for c in table["children"]
                 if c["kind"] != "service"]
        for role, kind, pid, n in rows:
            if n is not None:
                restarts.add_metric([role, kind], n)
            proc = self.view.process(pid)
            if proc:
                cpu.add_metric([role, kind], proc["cpu_seconds"])
                rss.add_metric([role, kind], proc["resident_bytes"])
        build = GaugeMetricFamily("log_shuttle_build_info", "The agent's version (value 1).",
                                  labels=["version", "python"])
        build.add_metric([self.view.version, platform.python_version()], 1)
        return [restarts, cpu, rss, build]


class _Handler(BaseHTTPRequestHandler):
    server_version = "log-shuttle"

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        view: View = self.server.view  # type: ignore[attr-defined]
        path = self.path.split("?", 1)[0]
        try:
            if path == "/metrics":
                self._send(200, view.exposition(),
                           "text/plain; version=0.0.4; charset=utf-8")
            elif path == "/health":
                self._json(200, {"status": "alive", "pid": os.getpid(),
                                 "uptime_seconds": round(time.time() - view.started, 3)})
            elif path == "/ready":
                ok, why = view.ready()
                self._json(200 if ok else 503, {"ready": ok, "why_not": why})
            elif path == "/status":
                self._json(200, view.status())
            else:
                self._json(404, {"error": f"no {path}: try /metrics, /health, /ready, /status"})
        except (LogShuttleError, OSError, ValueError) as exc:
            self._json(500, {"error": str(exc)})

    def _json(self, code: int, body: dict[str, Any]) -> None:
        self._send(code, json.dumps(body).encode() + b"\n", "application/json")

    def _send(self, code: int, body: bytes, ctype: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt: str, *args: Any) -> None:
        self.server.log.debug("http: " + fmt, *args)  # type: ignore[attr-defined]
