"""What the metric outputs share: picking the MetricEvents out of a batch, their flat record
(JSON lines, line protocol), and the cumulative state that Prometheus and OTLP (cumulative
temporality) keep by adding up the pipeline's per-interval deltas.

Cumulative values start when the output process starts (its ``start_ns``, reported as each
series' start time): an output restarted counts from zero again, which Prometheus (a counter
reset) and OTLP (a new start time) both understand. A series not updated for ``expiry`` seconds
is dropped from the state.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from common.events import Event, MetricEvent

ERRORS_SUFFIX = ".errors"


def metric_events(events: Iterable[Event]) -> list[MetricEvent]:
    return [e for e in events if type(e) is MetricEvent]


def errors_name(name: str) -> str:
    """``http.server.request.duration`` -> ``http.server.request.errors``."""
    return name.removesuffix(".duration") + ERRORS_SUFFIX


def fmt_bound(bound: float) -> str:
    return repr(bound) if bound != int(bound) else f"{int(bound)}"


def flat_fields(ev: MetricEvent) -> dict[str, object]:
    """The point's values as fields: ``count`` (and ``errors``, ``sum``, cumulative bucket counts
    ``le_<bound>`` up to ``le_+Inf`` for a histogram)."""
    fields: dict[str, object] = {"count": ev.count}
    if ev.kind == "histogram":
        fields["errors"] = ev.errors
        fields["sum"] = float(ev.sum)
        running = 0
        for bound, n in zip(ev.bounds, ev.buckets):
            running += n
            fields[f"le_{fmt_bound(bound)}"] = running
        fields["le_+Inf"] = ev.count
    return fields


@dataclass
class Series:
    """One series' totals since ``start_ns``."""

    name: str
    kind: str
    attrs: dict[str, str]
    bounds: list[float]
    start_ns: int
    time_ns: int = 0
    count: int = 0
    errors: int = 0
    sum: float = 0.0
    buckets: list[int] = field(default_factory=list)
    updated: float = 0.0
    """time.monotonic() of the last update (for expiry)."""

    def add(self, ev: MetricEvent) -> None:
        self.count += ev.count
        self.errors += ev.errors
        self.sum += ev.sum
        if ev.buckets:
            if len(self.buckets) != len(ev.buckets) or self.bounds != ev.bounds:
                self.bounds = list(ev.bounds)  # bounds changed (a new agent version): restart
                self.buckets = [0] * len(ev.buckets)
            for i, n in enumerate(ev.buckets):
                self.buckets[i] += n
        self.time_ns = max(self.time_ns, ev.time_ns)


class Cumulative:
    """The deltas added up per series (name and attributes)."""

    def __init__(self, *, expiry: float = 3600.0, start_ns: int | None = None) -> None:
        self.expiry = expiry
        self.start_ns = time.time_ns() if start_ns is None else start_ns
        self.table: dict[tuple, Series] = {}

    def add(self, events: Iterable[MetricEvent]) -> None:
        now = time.monotonic()
        for ev in events:
            key = (ev.name, tuple(sorted(ev.attrs.items())))
            s = self.table.get(key)
            if s is None:
                s = self.table[key] = Series(ev.name, ev.kind, dict(ev.attrs), list(ev.bounds),
                                             start_ns=min(self.start_ns, ev.start_ns))
            s.add(ev)
            s.updated = now

    def expire(self, now: float | None = None) -> int:
        """Drop series not updated for the expiry (``now``: time.monotonic()); how many were
        dropped."""
        limit = (time.monotonic() if now is None else now) - self.expiry
        old = [k for k, s in self.table.items() if s.updated < limit]
        for k in old:
            del self.table[k]
        return len(old)

    def __iter__(self) -> Iterator[Series]:
        return iter(self.table.values())

    def __len__(self) -> int:
        return len(self.table)
