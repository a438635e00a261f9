"""The pipeline's configuration: the ``[pipeline]`` table (batches, the process table, RED
metrics)."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from common.config import KiB, MiB, PositiveFloat, PositiveInt, Section


class SpansConfig(Section):
    """``[pipeline.spans]``: a span per HTTP exchange of the eBPF input."""

    enabled: bool = True
    hold: Annotated[float, Meta(ge=0, le=10)] = 0.5
    """Seconds a span may wait for a parent on this host (its exchange ends later) before it is
    sent as a root."""
    services: dict[str, str] = {}
    """service.name overrides: container id (or its first 12 characters), executable path or
    name -> name. Otherwise the executable's name."""
    max_pending: Annotated[int, Meta(ge=16)] = 65536
    """Spans waiting at most; past it the oldest go out as roots."""
    http_events: bool = False
    """Also send each exchange's ``http`` event beside its span. Off: one record per exchange,
    the span (method, path, status, duration, peer, thread, and the process as its resource:
    pid, executable, command line, container; the http event's ``process`` has more: parent,
    user, start time...). RED metrics and the log join use the exchanges either way; an
    exchange whose span waits for its parent ships its http event anyway."""


class JoinConfig(Section):
    """``[pipeline.join]``: log lines joined to their requests (needs the eBPF input)."""

    enabled: bool = True
    hold: Annotated[float, Meta(ge=0, le=5)] = 0.3
    """Seconds (of the host's events) a line's write waits for its request's exchange."""
    max_hold: Annotated[float, Meta(ge=0, le=10)] = 0.8
    """Seconds at most a line waits for its join, on the host's clock as the eBPF events tell
    it (from the line's read time to the newest event the pipeline has taken)."""
    max_lag: Annotated[float, Meta(ge=0, le=60)] = 5.0
    """Seconds at most a line is held by the pipeline whatever the events say (they may stop
    coming, or lag this far behind: the pipeline is overloaded)."""
    finish_window: Annotated[float, Meta(ge=0, le=10)] = 0.1
    """A write this soon after the thread answered its request still belongs to it."""
    multi_window: Annotated[float, Meta(ge=0)] = 10.0
    """A thread that had two requests in flight at once this recently: its lines are ambiguous."""
    reorder_us: Annotated[int, Meta(ge=0)] = 200
    """Two writes of the same bytes by two threads this close: their lines are ambiguous."""


class BatchConfig(Section):
    max_events: PositiveInt = 1000
    """A batch is sent once it holds this many lines or events..."""
    max_bytes: PositiveInt = 512 * KiB
    """...or this many bytes..."""
    max_delay: PositiveFloat = 0.2
    """...or this many seconds after its first event arrived."""


class ProcessesConfig(Section):
    enabled: bool = True
    """Keep a process table and enrich events with their process, log lines with their writer."""
    poll_interval: PositiveFloat = 2.0
    """Seconds between polls of /proc (new processes, exits, reused pids)."""
    grace: Annotated[float, Meta(ge=0)] = 60.0
    """Seconds an exited process stays in the table, for events that come late."""
    max_processes: Annotated[int, Meta(ge=1024)] = 65536
    writer_refresh: PositiveFloat = 10.0
    """Seconds before the writers of a file are looked up again in /proc/*/fd."""
    fed_by_events: bool = False
    """Set by the agent's plan, not by users: an input sends every process's fork, exec and
    exit (the eBPF input's process probe). Those keep the table current, and a poll of /proc
    then reads only the processes that are new to it (and sees which went), not every known
    one's stat again: on this project's VM that was 9% of the pipeline's active time at 5,000 traced
    requests a second, and it grows with the host's processes. A loss of events reported by an
    input makes the next poll a full one."""


class MetricsConfig(Section):
    """``[pipeline.metrics]``: RED metrics aggregated from the eBPF input's exchanges
    (pipeline/metrics.py, docs/metrics.md)."""

    enabled: bool = False
    """Aggregate (on by itself when a metrics output is configured)."""
    interval: Annotated[float, Meta(ge=0.1)] = 10.0
    """Seconds per aggregation interval (one point per series per interval)."""
    http: bool = True
    """HTTP request metrics (from the eBPF input's http probe)."""
    tcp: bool = True
    """TCP connection metrics (from the tcp probe)."""
    max_series: Annotated[int, Meta(ge=1)] = 2000
    """Series per service at most; past it, observations go to one overflow series."""
    series_expiry: PositiveFloat = 3600.0
    """A series not seen for this many seconds is forgotten."""
    services: dict[str, str] = {}
    """service.name overrides: executable path, executable name or container id -> name."""
    stdout: bool = False
    """Also hand the metric points to the stdout output (records of ``type`` metric)."""


class PipelineConfig(Section):
    batch: BatchConfig = msgspec.field(default_factory=BatchConfig)
    processes: ProcessesConfig = msgspec.field(default_factory=ProcessesConfig)
    spans: SpansConfig = msgspec.field(default_factory=SpansConfig)
    join: JoinConfig = msgspec.field(default_factory=JoinConfig)
    metrics: MetricsConfig = msgspec.field(default_factory=MetricsConfig)
    routes: list[Literal["events", "metrics", "both"]] = []
    """Set by the agent's plan, not by users: what each output queue of the pipeline gets, in
    order (empty: events to every queue)."""

    def problems(self, **_: object) -> list[str]:
        out = ["routes: is set by the agent, not in a configuration"] if self.routes else []
        if self.processes.fed_by_events:
            out.append("processes.fed_by_events: is set by the agent, not in a configuration")
        return out
