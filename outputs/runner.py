"""The loop every output process runs around its Sink.

It reads a batch from its queue without committing it, hands it to the sink, and on OK (or DROP)
acknowledges it to the inputs (common.progress) and commits it, so a killed output loses
nothing: its successor reads the batch again. On RETRY it
waits with exponential backoff and jitter and tries the same batch again, for as long as it
takes: meanwhile its queue fills, the pipeline blocks, and the inputs stop reading, so memory
stays bounded and nothing is dropped. The drain deadline bounds a stop that waits on a receiver.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

from common.component import Context
from common.events import Batch, BatchCodec
from common.shmqueue import Closed, Empty, wait_any
from outputs.base import Sink, Verdict


@dataclass
class Backoff:
    initial: float = 0.1
    maximum: float = 30.0
    factor: float = 2.0
    jitter: float = 0.2
    """Each delay is multiplied by a random factor in [1 - jitter, 1 + jitter]."""

    def delays(self):
        delay = self.initial
        while True:
            yield delay * random.uniform(1 - self.jitter, 1 + self.jitter)
            delay = min(delay * self.factor, self.maximum)


@dataclass
class OutputStats:
    batches_sent: int = 0
    batches_retried: int = 0
    batches_dropped: int = 0
    events_sent: int = 0


class OutputRunner:
    def __init__(self, ctx: Context, sink: Sink, *, backoff: Backoff | None = None) -> None:
        self.ctx = ctx
        self.sink = sink
        self.consumer = ctx.consumers[0]
        self.codec = BatchCodec()
        self.backoff = backoff or Backoff()
        self.stats = OutputStats()

    def run(self) -> None:
        stop = self.ctx.stop
        try:
            while not stop.is_set():
                try:
                    message = self.consumer.get_nowait(commit=False)
                except Empty:
                    wait_any([self.consumer], also=[stop])
                    continue
                except Closed:
                    return
                batch = self.codec.decode(message)
                self.deliver(batch)
                if self.ctx.progress is not None:
                    self.ctx.progress.delivered(batch.acks)
                self.consumer.commit()
        finally:
            self.sink.close()
            self.ctx.log.debug("stopped: %s", self.stats)

    def deliver(self, batch: Batch) -> None:
        delays = None
        failing_since = None
        while True:
            verdict = self.sink.send(batch)
            if verdict is Verdict.OK:
                self.stats.batches_sent += 1
                self.stats.events_sent += len(batch.events)
                if failing_since is not None:
                    self.ctx.log.info("%s: delivering again after %.1fs", self.sink.name,
                                      time.monotonic() - failing_since)
                return
            if verdict is Verdict.DROP:
                self.stats.batches_dropped += 1
                self.ctx.log.error("%s: dropped a batch of %d events that the receiver rejects",
                                   self.sink.name, len(batch.events))
                return
            self.stats.batches_retried += 1
            if delays is None:
                delays = self.backoff.delays()
                failing_since = time.monotonic()
            time.sleep(next(delays))
