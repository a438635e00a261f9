"""``log-shuttle status`` and ``log-shuttle top``: ask the running agent through its HTTP
listener (``/status``) and show each component: throughput now, totals, errors, retries, lag,
queue, restarts, CPU and memory; ``top`` live (rich), with the progress and an estimate of the
end of a backlog being caught up.

Throughput is what the totals grew between two readings (``status`` takes two, ``interval``
apart). Why the listener and no unix socket: one way in, the same for Prometheus, a load
balancer's health check and these commands; docs/operating.md.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any

from rich import box
from rich.console import Console, Group
from rich.progress import BarColumn, Progress, TextColumn
from rich.table import Table
from rich.text import Text

from common.errors import LogShuttleError


class AgentUnreachable(LogShuttleError):
    """No agent answered at the listener's address."""


def fetch(address: str, *, timeout: float = 3.0) -> dict[str, Any]:
    """The agent's ``/status``."""
    url = f"http://{address}/status"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return json.load(r)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise AgentUnreachable(
            f"no agent answers at {url} ({reason}): is it running with --http-listen "
            f"{address} (or [agent.http] listen)?") from exc


@dataclass
class Backlog:
    """A file input's lag over time: progress from the largest lag seen, and an estimate."""

    peak: float = 0.0
    points: list[tuple[float, float]] = field(default_factory=list)

    def add(self, t: float, lag: float) -> None:
        self.peak = max(self.peak, lag)
        self.points.append((t, lag))
        self.points = [p for p in self.points if t - p[0] <= 10.0]  # the last 10 s

    def rate(self) -> float:
        """Bytes per second the lag shrinks by (0 when it does not)."""
        if len(self.points) < 2:
            return 0.0
        (t0, l0), (t1, l1) = self.points[0], self.points[-1]
        return max(0.0, (l0 - l1) / (t1 - t0)) if t1 > t0 else 0.0

    def eta(self) -> float | None:
        lag = self.points[-1][1] if self.points else 0.0
        r = self.rate()
        return lag / r if lag > 0 and r > 0 else None


class Watch:
    """Successive readings of ``/status``, and what they say together."""

    WINDOW = 3.0
    """Seconds the rates are taken over: each component publishes once a second, at its own
    moment, so two readings a second apart would alias (0, then twice the rate)."""

    def __init__(self) -> None:
        self.history: list[dict[str, Any]] = []
        self.prev: dict[str, Any] | None = None
        self.now: dict[str, Any] | None = None
        self.backlogs: dict[str, Backlog] = {}

    def add(self, status: dict[str, Any]) -> None:
        self.history.append(status)
        while len(self.history) > 2 and \
                status["time"] - self.history[1]["time"] >= self.WINDOW:
            self.history.pop(0)
        self.prev = self.history[0] if len(self.history) > 1 else None
        self.now = status
        for c in status["components"]:
            if "file_lag_bytes" in c:
                self.backlogs.setdefault(c["component"], Backlog()).add(
                    status["time"], c["file_lag_bytes"])

    def rate(self, comp: dict[str, Any], key: str) -> float | None:
        if self.prev is None:
            return None
        before = {c["component"]: c for c in self.prev["components"]}.get(comp["component"])
        dt = self.now["time"] - self.prev["time"]
        if before is None or dt <= 0:
            return None
        cpu = key == "cpu_seconds"
        if cpu and before.get("pid") != comp.get("pid"):
            return None
        return max(0.0, (comp.get(key, 0) - before.get(key, 0)) / dt)

    def table(self) -> Table:
        t = Table(title=self._title(), title_justify="left", expand=False, box=box.SIMPLE_HEAD)
        for col in ("component", "pid", "in/s", "out/s", "in", "out", "errors", "retries",
                    "lag", "queue", "restarts", "cpu", "memory"):
            t.add_column(col, justify="left" if col == "component" else "right", no_wrap=True)
        for c in self.now["components"]:
            if c.get("kind") == "service":
                continue
            cpu = self.rate(c, "cpu_seconds")
            queue = c.get("queue_bytes")
            t.add_row(
                c["component"], str(c.get("pid") or "-"),
                _num(self.rate(c, "received_events")), _num(self.rate(c, "sent_events")),
                _num(c.get("received_events")), _num(c.get("sent_events")),
                _num(c.get("errors")), _num(c.get("output_retries")),
                _bytes(c.get("file_lag_bytes")),
                "-" if queue is None else f"{100 * queue / max(1, c['queue_capacity_bytes']):.0f}%",
                str(c.get("restarts", "-")),
                "-" if cpu is None else f"{100 * cpu:.0f}%", _bytes(c.get("resident_bytes")))
        return t

    def backlog_lines(self) -> list[str]:
        out = []
        for role, b in self.backlogs.items():
            lag = b.points[-1][1] if b.points else 0
            if lag <= 0:
                continue
            eta = b.eta()
            out.append(f"{role}: backlog {_bytes(lag)} of {_bytes(b.peak)} "
                       f"({100 * (1 - lag / b.peak):.0f}% caught up), "
                       + (f"{_bytes(b.rate())}/s, done in about {_duration(eta)}"
                          if eta is not None else "not shrinking"))
        return out

    def progress(self) -> Progress | None:
        active = [(r, b) for r, b in self.backlogs.items() if b.points and b.points[-1][1] > 0]
        if not active:
            return None
        p = Progress(TextColumn("{task.description}"), BarColumn(),
                     TextColumn("{task.percentage:>3.0f}%"), TextColumn("{task.fields[eta]}"),
                     auto_refresh=False)
        for role, b in active:
            lag = b.points[-1][1]
            eta = b.eta()
            p.add_task(f"{role} backlog {_bytes(lag)}", total=b.peak, completed=b.peak - lag,
                       eta=f"ETA {_duration(eta)}" if eta is not None else "ETA -")
        return p

    def _title(self) -> str:
        s = self.now
        up = s["time"] - (s.get("agent_started") or s["time"])
        ready = "" if not s.get("stopping") else " (stopping)"
        return (f"log-shuttle {s.get('version', '')}: agent pid {s.get('agent_pid')}, "
                f"up {_duration(up)}{ready}")

    def render(self) -> Group:
        parts: list[Any] = [self.table()]
        prog = self.progress()
        if prog is not None:
            parts.append(prog)
        return Group(*parts)


def status(address: str, *, interval: float = 2.0, console: Console | None = None) -> None:
    """Print the table once (two readings ``interval`` apart, for the rates)."""
    console = console or _console()
    w = Watch()
    w.add(fetch(address))
    if interval > 0:
        time.sleep(interval)
        w.add(fetch(address))
    console.print(w.table())
    for line in w.backlog_lines():
        console.print(line)


def top(address: str, *, interval: float = 1.0, console: Console | None = None,
        count: int | None = None) -> None:
    """Show the table live until interrupted (or ``count`` refreshes)."""
    from rich.live import Live

    console = console or _console()
    w = Watch()
    w.add(fetch(address))
    n = 0
    with Live(w.render(), console=console, auto_refresh=False, screen=False) as live:
        while count is None or n < count:
            time.sleep(interval)
            try:
                w.add(fetch(address))
                live.update(w.render(), refresh=True)
            except AgentUnreachable as exc:
                live.update(Text(str(exc), style="red"), refresh=True)
            n += 1


def _console() -> Console:
    """The terminal's width; a pipe gets a table wide enough not to cut the columns."""
    c = Console()
    return c if c.is_terminal else Console(width=140)


def _num(v: float | None) -> str:
    if v is None:
        return "-"
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(v) >= div:
            return f"{v / div:.1f}{unit}"
    return f"{v:.0f}" if v == int(v) else f"{v:.1f}"


def _bytes(v: float | None) -> str:
    if v is None:
        return "-"
    for unit, div in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(v) >= div:
            return f"{v / div:.1f} {unit}"
    return f"{v:.0f} B"


def _duration(s: float | None) -> str:
    if s is None:
        return "-"
    s = int(s)
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"
