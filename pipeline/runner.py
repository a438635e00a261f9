"""The pipeline's loop.

It reads input messages without committing them, adds their events to the batch, and commits
them only once the batch that holds them has been put on every output queue: a pipeline killed at
any instant loses nothing (its successor reads the uncommitted messages again; the outputs may see
a batch twice). Output queues are put in turn, blocking while one is full, so the slowest output
sets the pace and backpressure reaches the inputs.

When every input queue is closed and drained (the agent is stopping), the pipeline flushes and
exits; the supervisor then closes the output queues.
"""

from __future__ import annotations

import selectors
import time

from common.component import BootError, Context
from common.events import Batch, BatchCodec
from common.shmqueue import Closed, Empty, Full
from pipeline.batcher import Batcher

MESSAGES_PER_TURN = 8
"""Messages taken from one input queue before the next gets its turn."""


def build(ctx: Context) -> Pipeline:
    if not ctx.consumers:
        raise BootError("pipeline: no input queue")
    if not ctx.producers:
        raise BootError("pipeline: no output queue")
    return Pipeline(ctx)


class Pipeline:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        batch = ctx.config.batch
        self.batcher = Batcher(max_events=batch.max_events, max_bytes=batch.max_bytes,
                               max_delay=batch.max_delay)
        self.codec = BatchCodec()
        self.batches_sent = 0
        self.handed_on: dict[int, int] = {}
        """Input index -> the highest message seq read from it (stamped on every batch)."""

    def run(self) -> None:
        ctx = self.ctx
        selector = selectors.DefaultSelector()
        index = {id(c): i for i, c in enumerate(ctx.consumers)}
        open_inputs = list(ctx.consumers)
        for c in open_inputs:
            selector.register(c, selectors.EVENT_READ)
        selector.register(ctx.stop, selectors.EVENT_READ)
        try:
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
                            selector.unregister(c)
                            break
                        took = True
                        batch = self.codec.decode(message)
                        if batch.seq:
                            self.handed_on[index[id(c)]] = batch.seq
                        self.batcher.add(batch.events, time.monotonic())
                        if self.batcher.full():
                            self.flush()
                if self.batcher.due(time.monotonic()):
                    self.flush()
                if not took and open_inputs:
                    selector.select(self.batcher.time_left(time.monotonic()))
            self.flush()
            ctx.log.debug("inputs drained: sent %d batches", self.batches_sent)
        finally:
            selector.close()

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
