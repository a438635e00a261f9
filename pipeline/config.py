"""The pipeline's configuration: the ``[pipeline]`` table (batches, the process table)."""

from __future__ import annotations

from typing import Annotated

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


class PipelineConfig(Section):
    batch: BatchConfig = msgspec.field(default_factory=BatchConfig)
    processes: ProcessesConfig = msgspec.field(default_factory=ProcessesConfig)
    spans: SpansConfig = msgspec.field(default_factory=SpansConfig)
    join: JoinConfig = msgspec.field(default_factory=JoinConfig)
