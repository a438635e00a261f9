"""The Prometheus output: metric points added up (outputs/metricstate.py) and exposed on its own
HTTP listener's ``/metrics`` for Prometheus to scrape. A batch is OK once added: the scrape is
Prometheus' business. The state lives in this output's process; a restart starts the counters
from zero (Prometheus sees a counter reset)."""

from __future__ import annotations

import logging
import os
import threading

from common.component import Context
from common.events import Batch
from common.net import parse_address
from outputs.base import Verdict
from outputs.metricstate import Cumulative, metric_events
from outputs.prometheus import render
from outputs.promserve import MetricsListener
from outputs.runner import OutputRunner
from outputs.promsink_config import PrometheusOutputConfig




class PrometheusSink:
    name = "prometheus"

    def __init__(self, *, host: str, port: int, expiry: float = 3600.0, log=None) -> None:
        self.state = Cumulative(expiry=expiry)
        self.lock = threading.Lock()
        self.listener = MetricsListener(host=host, port=port, render=self.render, log=log)
        self.log = log or logging.getLogger("log_shuttle")
        self.share = ""
        """With the agent's own listener on: the file in its run directory where the
        exposition is also written (once per batch: per metrics interval), for its /metrics."""

    @property
    def healthy(self) -> bool:
        """Adding points up cannot fail; whether Prometheus scrapes is Prometheus' to say."""
        return True

    def render(self) -> bytes:
        with self.lock:
            return render(list(self.state))

    def send(self, batch: Batch) -> Verdict:
        points = metric_events(batch.events)
        with self.lock:
            self.state.add(points)
            self.state.expire()
        if self.share:
            self._share()
        return Verdict.OK

    def _share(self) -> None:
        tmp = self.share + ".tmp"
        try:
            with open(tmp, "wb") as f:
                f.write(self.render())
            os.replace(tmp, self.share)
        except OSError as exc:
            self.log.debug("cannot share the exposition in %s: %s", self.share, exc)

    def close(self) -> None:
        self.listener.close()


def build(ctx: Context) -> OutputRunner:
    cfg: PrometheusOutputConfig = ctx.config
    ctx.one_consumer()
    host, port = parse_address(cfg.listen, who=ctx.name, listen=True)
    sink = PrometheusSink(host=host, port=port, expiry=cfg.expiry, log=ctx.log)
    rundir = os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")  # the agent's listener is on
    if rundir:
        sink.share = os.path.join(rundir, "red-metrics.prom")
    return OutputRunner(ctx, sink)
