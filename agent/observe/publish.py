"""The publishing thread of a component process: its samples (agent/observe/snapshot.py) into
prometheus_client's multiprocess files, once per interval and once more when the component is
done, so that the totals a stopped component leaves are exact.

prometheus_client's multiprocess mode gives every process its own files in
``PROMETHEUS_MULTIPROC_DIR`` (inherited from the supervisor); a counter is incremented by what
the component's own total grew since the last publish, a gauge is set (``livesum``: the
supervisor removes a dead child's gauges). The thread only reads the component's counters, under
the GIL, once a second: the component's loop never waits for it.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from agent.observe.snapshot import METRICS, samples

PREFIX = "log_shuttle_component_"


class Publisher:
    def __init__(self, *, role: str, kind: str, runner: Any, consumers: list[Any],
                 interval: float = 1.0, max_paths: int = 50) -> None:
        from prometheus_client import Counter, Gauge

        self.runner = runner
        self.consumers = consumers
        self.interval = interval
        self.max_paths = max_paths
        self.labels = (role, kind)
        self.metrics: dict[str, Any] = {}
        for name, (typ, extra, doc) in METRICS.items():
            # rotations_total{kind}: there ``kind`` is the rotation's (always of a file input)
            labelnames = ("component", *extra) if "kind" in extra else ("component", "kind",
                                                                        *extra)
            if typ == "counter":
                self.metrics[name] = Counter(PREFIX + name, doc, labelnames, registry=None)
            else:
                self.metrics[name] = Gauge(PREFIX + name, doc, labelnames, registry=None,
                                           multiprocess_mode="livesum")
        self.last: dict[tuple[str, tuple[str, ...]], float] = {}
        self.gauges: set[tuple[str, tuple[str, ...]]] = set()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="metrics", daemon=True)
        self.lock = threading.Lock()
        self.failed = False

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        """The last publish (the component is done), then the thread ends."""
        self.stopping.set()
        if self.thread.is_alive():
            self.thread.join(timeout=5)
        self.publish()

    def _labels(self, name: str) -> tuple[str, ...]:
        return self.labels[:1] if "kind" in METRICS[name][1] else self.labels

    def _loop(self) -> None:
        while not self.stopping.wait(self.interval):
            try:
                self.publish()
            except Exception:  # noqa: BLE001 - never let telemetry take the component down
                if not self.failed:
                    self.failed = True
                    logging.getLogger("log_shuttle").exception(
                        "metrics: cannot read the component's counters (told once)")

    def publish(self) -> None:
        with self.lock:
            got = samples(self.runner, consumers=self.consumers, max_paths=self.max_paths)
            gauges = {(n, e) for n, e, _ in got if METRICS[n][0] == "gauge"}
            for name, extra in self.gauges - gauges:  # a file let go: its lag is no more
                self.metrics[name].labels(*self._labels(name), *extra).set(0)
            self.gauges = gauges
            for name, extra, value in got:
                key = (name, extra)
                metric = self.metrics[name].labels(*self._labels(name), *extra)
                if METRICS[name][0] == "counter":
                    grew = value - self.last.get(key, 0)
                    if grew > 0:
                        metric.inc(grew)
                        self.last[key] = value
                else:
                    metric.set(value)
