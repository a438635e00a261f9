"""The loop every output process runs around its Sink.

It reads a batch from its queue without committing it, hands it to the sink, and on OK (or DROP)
acknowledges it to the inputs (common.progress) and commits it, so a killed output loses
nothing: its successor reads the batch again. On RETRY it
waits with exponential backoff and jitter and tries the same batch again, for as long as it
takes: meanwhile its queue fills, the pipeline blocks, and the inputs stop reading, so memory
stays bounded and nothing is dropped. The drain deadline bounds a stop that waits on a receiver;
``ctx.stop`` ends the wait at once, the batch left uncommitted.

A poison message must not crash the output in a loop (its successor would read the same
uncommitted message again): a message that does not decode, or a batch whose ``send`` raises
something else than SinkClosed or BootError ``poison_after`` times in a row, is set aside in the
dead-letter file (outputs/deadletter.py), counted, logged once, and acknowledged past. An
undecodable message carries no acknowledgements the runner can read; the next batch's cover it
(they are cumulative).
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass

import msgspec

from common.component import BootError, Context, SinkClosed
from common.cpu import relax
from common.events import Batch, BatchCodec, event_lines
from common.memory import IdleTrim
from common.shmqueue import Closed, Empty, wait_any
from outputs.base import Sink, Verdict
from outputs.deadletter import DeadLetters, directory_of


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
    batches_dead: int = 0
    records_sent: int = 0
    """Records (lines; an eBPF event is one) delivered: the telemetry's sent_events."""
    records_dropped: int = 0
    """Set aside in the dead-letter file (undecodable, or the sink raised)."""
    events_sent: int = 0


class _Stopping(Exception):
    """ctx.stop was set while a batch was being retried."""


class OutputRunner:
    def __init__(self, ctx: Context, sink: Sink, *, backoff: Backoff | None = None,
                 dead_letters: DeadLetters | None = None, poison_after: int = 3) -> None:
        self.ctx = ctx
        self.sink = sink
        self.consumer = ctx.consumers[0]
        self.codec = BatchCodec()
        self.backoff = backoff or Backoff()
        self.stats = OutputStats()
        self.failing_since: float | None = None
        self.sending_since: float | None = None
        """When the send in progress began (the listener's /ready: a stalled output)."""
        """While a batch is being retried: since when (monotonic); read by the telemetry."""
        state_dir = getattr(ctx.config, "state_dir", "")
        if dead_letters is None and state_dir:
            dead_letters = DeadLetters(directory=directory_of(state_dir), output=ctx.name)
        self.dead_letters = dead_letters
        self.poison_after = max(1, poison_after)
        self.raw = bool(getattr(sink, "takes_raw", False))
        """The sink renders events other than lines from their bytes (outputs/ndjson.py): they
        are not decoded here (``BatchCodec.decode_lines``)."""
        self._said_dead = False
        self.trim = IdleTrim()

    def run(self) -> None:
        stop = self.ctx.stop
        try:
            while not stop.is_set():
                try:
                    message = self.consumer.get_nowait(commit=False)
                except Empty:
                    self.trim.idle()  # what the last batches left, back to the kernel
                    wait_any([self.consumer], also=[stop],
                             timeout=self.trim.interval if self.trim.pending else None)
                    continue
                except Closed:
                    return
                try:
                    batch = self.codec.decode_lines(message, relax) if self.raw \
                        else self.codec.decode_in_pieces(message, relax)
                except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                    self.set_aside(message, "undecodable", exc, None)
                    self.consumer.commit()
                    continue
                try:
                    self.deliver(batch, message)
                except _Stopping:
                    return  # not delivered, not committed: a successor reads it again
                if self.ctx.progress is not None:
                    self.ctx.progress.delivered(batch.acks)
                self.consumer.commit()
                self.trim.busy()
                relax()
        finally:
            self.sink.close()
            self.ctx.log.debug("stopped: %s", self.stats)

    def deliver(self, batch: Batch, message: bytes | memoryview = b"") -> None:
        delays = None
        failing_since = None
        raised = 0
        while True:
            self.sending_since = time.monotonic()
            try:
                verdict = self.sink.send(batch)
            except (SinkClosed, BootError):
                raise
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                # an event left as bytes (self.raw) did not decode when it was rendered: what
                # decoding the whole batch would have found
                self.set_aside(message, "undecodable", exc, None)
                return
            except Exception as exc:  # noqa: BLE001 - a poison batch, or a bug: set it aside
                raised += 1
                if raised >= self.poison_after:
                    self.set_aside(message, "send raised", exc, len(batch.events))
                    return
                self.ctx.log.warning("%s: sending a batch raised %s: %s (attempt %d of %d)",
                                     self.sink.name, type(exc).__name__, exc, raised,
                                     self.poison_after)
                verdict = Verdict.RETRY
            finally:
                self.sending_since = None
            if verdict is Verdict.OK:
                self.stats.batches_sent += 1
                self.stats.events_sent += len(batch.events)
                self.stats.records_sent += sum(map(event_lines, batch.events))
                self.failing_since = None
                if failing_since is not None:
                    self.ctx.log.info("%s: delivering again after %.1fs", self.sink.name,
                                      time.monotonic() - failing_since)
                return
            if verdict is Verdict.DROP:
                self.stats.batches_dropped += 1
                self.stats.records_dropped += sum(map(event_lines, batch.events))
                self.ctx.log.error("%s: dropped a batch of %d events that the receiver rejects",
                                   self.sink.name, len(batch.events))
                return
            self.stats.batches_retried += 1
            if delays is None:
                delays = self.backoff.delays()
                failing_since = self.failing_since = time.monotonic()
            wait_any([], also=[self.ctx.stop], timeout=next(delays))
            if self.ctx.stop.is_set():
                raise _Stopping

    def set_aside(self, message: bytes | memoryview, reason: str, exc: BaseException,
                  events: int | None) -> None:
        """A message that can never be delivered: to the dead-letter file, counted, logged
        once (then at debug level), and the runner goes on."""
        self.stats.batches_dead += 1
        where = "nowhere (no dead-letter file)"
        if self.dead_letters is not None:
            try:
                where = self.dead_letters.add(message=message, reason=reason, error=exc,
                                              events=events)
            except OSError as err:
                where = f"nowhere ({self.dead_letters.path}: {err.strerror or err})"
        level = logging.DEBUG if self._said_dead else logging.ERROR
        self._said_dead = True
        self.ctx.log.log(level, "%s: set a batch aside (%s: %s: %s), to %s; going on (%d so "
                         "far; further ones are counted, not logged)", self.sink.name, reason,
                         type(exc).__name__, exc, where, self.stats.batches_dead)
