"""The pipeline's configuration: the ``[pipeline]`` table (batches, the process table, RED
metrics)."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from common.config import MiB, PositiveFloat, PositiveInt, Section
from pipeline.logjoin import JoinConfig
from pipeline.spans import SpansConfig


class BatchConfig(Section):
    max_events: PositiveInt = 1000
    """A batch is sent once it holds this many lines or events..."""
    max_bytes: PositiveInt = 1 * MiB
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
        return ["routes: is set by the agent, not in a configuration"] if self.routes else []
