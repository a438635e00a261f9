"""The pipeline's loop.

It reads input messages without committing them, enriches their events with their processes
(enrich.py; the process table is polled here too), adds them to the batch, and commits
them only once the batch that holds them has been put on every output queue: a pipeline killed at
any instant loses nothing (its successor reads the uncommitted messages again; the outputs may see
a batch twice). Output queues are put in turn, blocking while one is full, so the slowest output
sets the pace and backpressure reaches the inputs.

When every input queue is closed and drained (the agent is stopping), the pipeline flushes and
exits; the supervisor then closes the output queues.
"""

from __future__ import annotations

import time

from common.component import BootError, Context
from common.events import Batch, BatchCodec
from common.shmqueue import Closed, Empty, Full, wait_any
from pipeline.batcher import Batcher
from pipeline.config import PipelineConfig
from pipeline.enrich import Enricher
from pipeline.proctable import ProcessTable
from pipeline.writers import WriterCache

MESSAGES_PER_TURN = 8
"""Messages taken from one input queue before the next gets its turn."""


def build(ctx: Context[PipelineConfig]) -> Pipeline:
    if not ctx.consumers:
        raise BootError("pipeline: no input queue")
    if not ctx.producers:
        raise BootError("pipeline: no output queue")
    enricher = None
    cfg = ctx.config.processes
    if cfg.enabled:
        t0 = time.perf_counter()
        table = ProcessTable(grace=cfg.grace, max_entries=cfg.max_processes)
        try:
            n = table.rundown()
        except OSError as exc:
            raise BootError(f"pipeline: cannot read /proc for the process table: {exc}") from exc
        ctx.log.debug("process rundown: %d processes in %.1f ms", n,
                      (time.perf_counter() - t0) * 1e3)
        enricher = Enricher(table, WriterCache(refresh=cfg.writer_refresh))
    return Pipeline(ctx, enricher)


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
        self.handed_on: dict[int, int] = {}
        """Input index -> the highest message seq read from it (stamped on every batch)."""

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
                    if batch.seq:
                        self.handed_on[index[id(c)]] = batch.seq
                    events = batch.events
                    if self.enricher is not None:
                        events = self.enricher.enrich(events)
                    self.batcher.add(events, time.monotonic())
                    if self.batcher.full():
                        self.flush()
            now = time.monotonic()
            if self.batcher.due(now) or (not took and self.batcher):
                # Full batches while the inputs keep the queues busy; as soon as they have
                # nothing more to give, what is batched goes at once: waiting for max_delay
                # would only add latency (a 1000-line batch takes 100 ms at 10k lines/s).
                self.flush()
            if self.enricher is not None and now >= self.next_poll:
                self.enricher.table.poll(now)
                self.enricher.writers.forget_older_than(now - 600)
                self.next_poll = now + self.poll_interval
            if not took and open_inputs:
                wait = self.batcher.time_left(now)
                if self.enricher is not None:
                    wait = min(wait if wait is not None else 1e9, self.next_poll - now)
                wait_any(open_inputs, also=[ctx.stop],
                         timeout=max(0.0, wait) if wait is not None else None)
        self.flush()
        ctx.log.debug("inputs drained: sent %d batches", self.batches_sent)

    def flush(self) -> None:
        if self.batcher:
            message = self.codec.encode(Batch(events=self.batcher.take(), source="pipeline",
                                              acks=sorted(self.handed_on.items())))
            for p in self.ctx.producers:
                while True:
                    try:
                        p.put(message, timeout=1.0)
                        break
                    except Full:
                        continue  # backpressure: wait for the output (the drain deadline bounds it)
            self.batches_sent += 1
        for c in self.ctx.consumers:
            c.commit()  # every message read so far is in a batch that every output has
