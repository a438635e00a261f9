"""The JSON lines output for metrics: one metric point per line, to a file rotated by size (for
metric records on stdout, ``[pipeline.metrics] stdout = true`` hands them to the stdout output).

A line::

    {"time":"2026-12-02T17:00:10.000000000Z","start":"2026-12-02T17:00:00.000000000Z",
     "host":"web1","name":"http.server.request.duration","kind":"histogram",
     "attributes":{"service.name":"nginx","http.route":"/users/{id}",...},
     "count":12,"errors":1,"sum":0.034,"bounds":[0.005,...,10.0],"buckets":[9,2,...,0]}

``buckets`` are per bucket (not cumulative), one more than ``bounds`` (the last: above the
highest bound); values are per interval (delta). Rotation: the file being written is ``path``;
once it would pass ``max_bytes`` it is renamed ``path.1`` (older ones shift to ``.2`` ...; only
``max_files`` are kept) and a new one is started. Each batch is one ``write`` with O_APPEND.
"""

from __future__ import annotations

import os
from typing import Any

import msgspec

from common.component import BootError, Context
from common.events import Batch, MetricEvent
from outputs.base import Verdict
from outputs.failures import FailureReporter
from outputs.metricstate import metric_events
from common.timefmt import rfc3339_ns
from outputs.runner import OutputRunner
from outputs.jsonlines_config import JsonLinesOutputConfig




class PointRecord(msgspec.Struct, omit_defaults=True):
    time: str
    start: str
    host: str
    name: str
    kind: str
    attributes: dict[str, str]
    count: int
    errors: int = 0
    sum: float = 0.0
    bounds: list[float] = []
    buckets: list[int] = []


def point_records(events: list[MetricEvent], host: str) -> list[PointRecord]:
    return [PointRecord(rfc3339_ns(e.time_ns), rfc3339_ns(e.start_ns), host, e.name, e.kind,
                        e.attrs, e.count, e.errors, e.sum, e.bounds, e.buckets) for e in events]


class JsonLinesSink:
    def __init__(self, *, path: str, host: str, max_bytes: int = 100 * 1024 * 1024,
                 max_files: int = 5, log=None) -> None:
        self.name = f"metrics jsonl {path}"
        self.path = path
        self.host = host
        self.max_bytes = max_bytes
        self.max_files = max_files
        self.encoder = msgspec.json.Encoder()
        self.failures = FailureReporter(who=f"output {self.name}", log=log) if log else None
        self.fd = -1
        self.size = 0
        self.points = 0
        self._open()

    @property
    def healthy(self) -> bool:
        return self.failures is None or self.failures.since is None

    def _open(self) -> None:
        try:
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
            self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC,
                              0o644)
        except OSError as exc:
            raise BootError(f"metrics jsonl: cannot open {self.path}: "
                            f"{exc.strerror or exc}") from exc
        self.size = os.fstat(self.fd).st_size

    def _rotate(self) -> None:
        os.close(self.fd)
        for i in range(self.max_files - 1, 0, -1):
            older = f"{self.path}.{i}"
            if os.path.exists(older):
                os.replace(older, f"{self.path}.{i + 1}")
        os.replace(self.path, f"{self.path}.1")
        gone = f"{self.path}.{self.max_files + 1}"
        if os.path.exists(gone):
            os.unlink(gone)
        self._open()

    def send(self, batch: Batch) -> Verdict:
        records = point_records(metric_events(batch.events), self.host)
        if not records:
            return Verdict.OK
        data = self.encoder.encode_lines(records)
        try:
            if self.size and self.size + len(data) > self.max_bytes:
                self._rotate()
            view = memoryview(data)
            while view:
                n = os.write(self.fd, view)
                view = view[n:]
        except OSError as exc:
            if self.failures is not None:
                self.failures.failed("write", f"writing {self.path} failed: {exc}")
            return Verdict.RETRY
        self.size += len(data)
        self.points += len(records)
        if self.failures is not None:
            self.failures.ok()
        return Verdict.OK

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def build(ctx: Context) -> OutputRunner:
    cfg: JsonLinesOutputConfig = ctx.config
    ctx.one_consumer()
    return OutputRunner(ctx, JsonLinesSink(path=cfg.path, host=ctx.host, max_bytes=cfg.max_bytes,
                                           max_files=cfg.max_files, log=ctx.log))


def records_as_dicts(data: bytes) -> list[dict[str, Any]]:
    """Read a JSON lines file back (for tests and tools)."""
    return [msgspec.json.decode(line) for line in data.splitlines() if line]
