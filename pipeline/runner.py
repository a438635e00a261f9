"""The pipeline's loop.

It reads input messages without committing them, enriches their events with their processes
(enrich.py; the process table is polled here too), adds them to the batch, and commits
them only once the batch that holds them has been put on every output queue: a pipeline killed at
any instant loses nothing (its successor reads the uncommitted messages again; the outputs may see
a batch twice). Output queues are put in turn, blocking while one is full, so the slowest output
sets the pace and backpressure reaches the inputs.

When every input queue is closed and drained (the agent is stopping), the pipeline flushes and
exits; the supervisor then closes the output queues.

With metrics on (pipeline/metrics.py), every event also goes through the aggregator, and at each
interval's end its points go, as a batch of their own, to the output queues whose route
(``config.routes``) includes metrics; the other batches only to those whose route includes
events. Metric batches carry no acknowledgements: their outputs are not on the board.
"""

from __future__ import annotations

import time

import msgspec

from common.component import BootError, Context
from common.cpu import relax
from common.events import NUMBERED, Batch, BatchCodec, Event, HttpEvent, LogEvent, LogWriteEvent
from common.identity import event_seq
from common.memory import IdleTrim
from common.shmqueue import Closed, Empty, Full, wait_any
from pipeline.batcher import Batcher
from pipeline.config import PipelineConfig
from pipeline.enrich import Enricher
from pipeline.metrics import Aggregator
from pipeline.proctable import ProcessTable
from pipeline.logjoin import LogJoiner
from pipeline.spans import SpanBuilder
from pipeline.writers import WriterCache

_replace = msgspec.structs.replace
MESSAGES_PER_TURN = 8
"""Messages taken from one input queue before the next gets its turn."""
METRIC_POINTS_PER_BATCH = 5000
"""Metric points per batch at most (a few hundred bytes each)."""


def build(ctx: Context[PipelineConfig]) -> Pipeline:
    if not ctx.consumers:
        raise BootError("pipeline: no input queue")
    if not ctx.producers:
        raise BootError("pipeline: no output queue")
    enricher = None
    cfg = ctx.config.processes
    if cfg.enabled:
        t0 = time.perf_counter()
        table = ProcessTable(grace=cfg.grace, max_entries=cfg.max_processes,
                             fed_by_events=cfg.fed_by_events)
        try:
            n = table.rundown()
        except OSError as exc:
            raise BootError(f"pipeline: cannot read /proc for the process table: {exc}") from exc
        ctx.log.debug("process rundown: %d processes in %.1f ms", n,
                      (time.perf_counter() - t0) * 1e3)
        enricher = Enricher(table, WriterCache(refresh=cfg.writer_refresh))
    return Pipeline(ctx, enricher)


def number_events(events: list[Event], input_index: int, message_seq: int) -> list[Event]:
    """Give every event that no file holds its sequence for a record id: the input's index, its
    message's seq and the event's place in it, all of which a replay of the message (a
    restarted pipeline reads it again) gives again. Log lines are numbered by their offsets."""
    if all(type(ev) is LogEvent for ev in events):
        return events
    return [_replace(ev, seq=event_seq(input_index, message_seq, i))
            if type(ev) in NUMBERED and not ev.seq else ev for i, ev in enumerate(events)]


class Pipeline:
    def __init__(self, ctx: Context, enricher: Enricher | None = None) -> None:
        self.ctx = ctx
        self.enricher = enricher
        self.poll_interval = ctx.config.processes.poll_interval
        self.next_poll = time.monotonic() + self.poll_interval
        batch = ctx.config.batch
        self.batcher = Batcher(max_events=batch.max_events, max_bytes=batch.max_bytes,
                               max_delay=batch.max_delay)
        self.codec = BatchCodec()
        self.batches_sent = 0
        self.records_out = 0
        """Records (lines; an eBPF event is one) put on the output queues (telemetry)."""
        self.http_as_spans = 0
        """HTTP events not sent: their span went out in their stead (telemetry)."""
        self.handed_on: dict[int, int] = {}
        """Input index -> the highest message seq read from it (stamped on every batch)."""
        routes = list(getattr(ctx.config, "routes", ()) or ())
        routes += ["events"] * (len(ctx.producers) - len(routes))
        self.event_queues = [p for p, r in zip(ctx.producers, routes) if r != "metrics"]
        self.metric_queues = [p for p, r in zip(ctx.producers, routes) if r != "events"]
        self.metrics_only = [r == "metrics" for r in routes if r != "events"]
        self.metric_points_dropped = 0
        self.trim = IdleTrim(producers=ctx.producers)
        metrics = getattr(ctx.config, "metrics", None)
        self.metrics = Aggregator.from_config(metrics, log=ctx.log) \
            if metrics is not None and metrics.enabled and self.metric_queues else None
        spans = getattr(ctx.config, "spans", None)
        # spans go on as their msgpack bytes: nothing here reads them, and the outputs decode
        # them (or render them from those bytes) as they would the SpanEvent's
        self.spans = SpanBuilder(spans, packed=True) if spans is not None and spans.enabled \
            else None
        join = getattr(ctx.config, "join", None)
        self.joiner = LogJoiner(self.spans, join) \
            if self.spans is not None and join is not None and join.enabled else None
        self.drop_http = self.spans is not None and not spans.http_events
        """Each exchange goes out as its span only (``[pipeline.spans] http_events``): its http
        event is dropped once the span builder, the metrics and the log join have seen it, and
        its span went out (one that waits for a parent: the event goes too)."""

    def run(self) -> None:
        ctx = self.ctx
        index = {id(c): i for i, c in enumerate(ctx.consumers)}
        open_inputs = list(ctx.consumers)
        while open_inputs and not ctx.stop.is_set():
            took = False
            for c in list(open_inputs):
                for _ in range(MESSAGES_PER_TURN):
                    try:
                        message = c.get_nowait(commit=False)
                    except Empty:
                        break
                    except Closed:
                        open_inputs.remove(c)
                        break
                    took = True
                    batch = self.codec.decode(message)
                    relax()
                    if batch.seq:
                        self.handed_on[index[id(c)]] = batch.seq
                    events = batch.events
                    if self.enricher is not None:  # numbered in the same copy of each event
                        if time.monotonic() >= self.next_poll:
                            self.poll_processes()
                        events = self.enricher.enrich(
                            events, number=(index[id(c)], batch.seq) if batch.seq else None)
                    elif batch.seq:
                        events = number_events(events, index[id(c)], batch.seq)
                    if self.metrics is not None:
                        self.metrics.observe(events)
                    now = time.monotonic()
                    relax()
                    if self.spans is not None:
                        events = events + self.spans.observe(events, now)
                        relax()
                    if self.joiner is not None:
                        events = self.joiner.feed(events, now, (index[id(c)], batch.seq))
                    elif events and any(type(e) is LogWriteEvent for e in events):
                        events = [e for e in events if type(e) is not LogWriteEvent]
                    if self.drop_http:
                        keep = self.spans.unsent  # their span waits: the event goes, for now
                        n = len(events)
                        events = [e for e in events if type(e) is not HttpEvent
                                  or id(e) in keep]
                        self.http_as_spans += n - len(events)
                    self.batcher.add(events, now)
                    if self.batcher.full():
                        self.flush()
                    relax()
            now = time.monotonic()
            if self.spans is not None and self.spans.pending:
                expired = self.spans.expire(now)
                if expired:
                    self.batcher.add(expired, now)
            if self.joiner is not None and self.joiner.held:
                self.batcher.add(self.joiner.release(now), now)
            if self.batcher.due(now) or (not took and self.batcher):
                # Full batches while the inputs keep the queues busy; as soon as they have
                # nothing more to give, what is batched goes at once: waiting for max_delay
                # would only add latency (a 1000-line batch takes 100 ms at 10k lines/s).
                self.flush()
            if self.metrics is not None and self.metrics.due():
                self.send_metrics()
            if took:
                self.trim.busy()
            if not took and open_inputs:
                self.trim.idle()  # what the last batches left, back to the kernel
                # No wake-up for the process table: it is polled when events come and it is
                # older than poll_interval, before they are enriched (an idle agent reads no
                # /proc; what it would miss is a process that came and went with no event).
                wait = self.batcher.time_left(now)
                if self.metrics is not None:
                    wait = min(wait if wait is not None else 1e9, self.metrics.time_left())
                if self.trim.pending:  # its output rings were still being read
                    wait = min(wait if wait is not None else 1e9, self.trim.interval)
                if self.spans is not None and self.spans.pending:
                    left = self.spans.time_left(now)
                    if left is not None:
                        wait = min(wait if wait is not None else 1e9, left)
                if self.joiner is not None and self.joiner.held:
                    left = self.joiner.time_left(now)
                    if left is not None:
                        wait = min(wait if wait is not None else 1e9, left)
                wait_any(open_inputs, also=[ctx.stop],
                         timeout=max(0.0, wait) if wait is not None else None)
        if self.spans is not None and self.spans.pending:
            self.batcher.add(self.spans.expire(float("inf")), time.monotonic())
        if self.joiner is not None and self.joiner.held:
            self.batcher.add(self.joiner.release(float("inf")), time.monotonic())
        self.flush()
        if self.metrics is not None:
            self.send_metrics()  # the interval so far
        ctx.log.debug("inputs drained: sent %d batches", self.batches_sent)
        if self.spans is not None:
            ctx.log.debug("spans: %s", self.spans.stats)
        if self.joiner is not None:
            st = self.joiner.stats
            ctx.log.debug("log join: %d lines of followed files, %d joined, %d ambiguous, "
                          "%d without a request, %d unmatched, %d resets",
                          st.lines, st.joined, st.ambiguous, st.no_request, st.unmatched,
                          st.resets)
            waits = sorted(st.wait_ns)
            if waits:
                ctx.log.debug("log join wait: p50 %.1f ms, p99 %.1f ms, max %.1f ms",
                              waits[len(waits) // 2] / 1e6, waits[len(waits) * 99 // 100] / 1e6,
                              waits[-1] / 1e6)

    def poll_processes(self) -> None:
        now = time.monotonic()
        self.enricher.table.poll(now)
        self.enricher.writers.forget_older_than(now - 600)
        self.next_poll = now + self.poll_interval

    def send_metrics(self) -> None:
        """The interval's points, in batches of at most METRIC_POINTS_PER_BATCH. A queue of an
        output that takes only metrics is never waited on: when it is full (its store has been
        down for a long while), the points are dropped and counted, and the events keep
        flowing; an output that takes both (stdout) is waited on as for events."""
        points = self.metrics.collect()
        for start in range(0, len(points), METRIC_POINTS_PER_BATCH):
            chunk = points[start:start + METRIC_POINTS_PER_BATCH]
            message = self.codec.encode(Batch(events=chunk, source="metrics"))
            for p, only in zip(self.metric_queues, self.metrics_only):
                if not only:
                    self._put([p], message)
                    continue
                try:
                    p.put_nowait(message)
                except Full:
                    self.metric_points_dropped += len(chunk)
                    self.ctx.log.warning("metrics: an output's queue is full (its store is "
                                         "down?): %d points dropped (%d in all)", len(chunk),
                                         self.metric_points_dropped)

    def flush(self) -> None:
        if self.batcher:
            self.records_out += self.batcher.count
            acks = self.handed_on
            if self.joiner is not None and self.joiner.held:
                # Lines still held for their join: their inputs are acknowledged only up to
                # the message before them (a restart from checkpoints reads them again).
                low = self.joiner.lowest_held()
                acks = {i: min(seq, low[i] - 1) if i in low else seq for i, seq in acks.items()}
            message = self.codec.encode_in_pieces(
                Batch(events=self.batcher.take(), source="pipeline", acks=sorted(acks.items())),
                relax)
            self._put(self.event_queues, message)
            self.batches_sent += 1
        for c in self.ctx.consumers:
            c.commit()  # every message read so far is in a batch that every output has

    @staticmethod
    def _put(queues, message: bytes) -> None:
        for p in queues:
            while True:
                try:
                    p.put(message, timeout=1.0)
                    break
                except Full:
                    continue  # backpressure: wait for the output (the drain deadline bounds it)
