"""The ETW input's process (``log-shuttle: input etw``): one session, its events to the pipeline.

The loop is the file input's: build from the Context, run until ``ctx.stop``, send Batches on the
one producer queue, blocking while it is full. ProcessTrace's thread never blocks on that queue:
the records go through a bounded hand-off (``records.Pending``) and the loop below sends what has
accumulated each time it wakes (at once when events arrive, at least every ``send_interval``),
so batches grow by themselves under load. Every ``loss_interval`` the session is queried and what
it lost since the last query is sent as LossEvents, with the hand-off's own drops and the
real-time lost-event notices.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from common.component import BootError, Context
from inputs.etw.config import EtwInputConfig
from common.events import Batch, BatchCodec, Event, LossEvent
from common.shmqueue import Full, MessageTooLarge
from inputs.etw import kernel_process
from inputs.etw.api import EtwApi, load
from inputs.etw.errors import EtwError, EtwUnavailable, PayloadError
from inputs.etw.records import EtwInputStats, Pending, RecordHandler
from inputs.etw.session import ProviderSpec, Session, SessionCounters
from inputs.etw.structs import (
    MAX_EVENT_FILTER_EVENT_ID_COUNT,
    MAX_EVENT_FILTER_PID_COUNT,
    is_guid,
)
from inputs.etw.tdh import SchemaCache, parse_providers


def build(ctx: Context[EtwInputConfig], *, api: EtwApi | None = None) -> EtwInput:
    """Check the configuration, load the Windows API (BootError off Windows), resolve the
    providers' names and start the session. ``api`` replaces the Windows calls (tests)."""
    cfg = ctx.config
    ctx.one_producer()
    if api is None:
        try:
            api = load()
        except EtwUnavailable as exc:
            raise BootError(f"{ctx.name}: {exc}") from exc
    providers = provider_specs(cfg, api=api)
    if not providers:
        raise BootError(f"{ctx.name}: nothing to trace: enable process_events or give a provider")
    etw = EtwInput(ctx, api=api, providers=providers)
    etw.start()  # here, not in run(): a session that cannot start is a boot error, not a crash
    return etw


def provider_specs(cfg: Any, *, api: EtwApi) -> list[ProviderSpec]:
    """The providers to enable: Kernel-Process (when ``process_events``) and the configured ones,
    names resolved through TdhEnumerateProviders. BootError names the bad entry."""
    specs = []
    if cfg.process_events:
        specs.append(ProviderSpec(guid=kernel_process.PROVIDER, level=4,
                                  any_keywords=kernel_process.KEYWORD_PROCESS))
    names: dict[str, str] | None = None
    for i, p in enumerate(cfg.providers):
        where = f"inputs.etw.providers[{i}]"
        guid = p.provider
        if not is_guid(guid):
            if names is None:
                try:
                    names = parse_providers(api.enumerate_providers())
                except (EtwError, PayloadError) as exc:
                    raise BootError(f"{where}: cannot list the registered providers to find "
                                    f"{guid!r}: {exc}") from exc
            found = names.get(guid.lower())
            if found is None:
                raise BootError(f"{where}: no provider named {guid!r} is registered on this machine")
            guid = found
        guid = "{" + guid.strip().strip("{}").lower() + "}"
        if guid == kernel_process.PROVIDER and cfg.process_events:
            raise BootError(f"{where}: Kernel-Process is already enabled by process_events")
        if len(set(p.event_ids)) > MAX_EVENT_FILTER_EVENT_ID_COUNT:
            raise BootError(f"{where}.event_ids: at most {MAX_EVENT_FILTER_EVENT_ID_COUNT} ids")
        if len(set(p.pids)) > MAX_EVENT_FILTER_PID_COUNT:
            raise BootError(f"{where}.pids: at most {MAX_EVENT_FILTER_PID_COUNT} pids")
        specs.append(ProviderSpec(guid=guid, level=p.level, any_keywords=p.keywords,
                                  all_keywords=p.all_keywords, event_ids=tuple(p.event_ids),
                                  pids=tuple(p.pids)))
    return specs


class LossTracker:
    """Turns cumulative loss counters into LossEvents for what was lost since the last call."""

    def __init__(self, source: str) -> None:
        self.source = source
        self._last: dict[str, int] = {}

    def events(self, counts: dict[str, int], *, now_ns: int) -> list[LossEvent]:
        out = []
        for what, total in counts.items():
            before = self._last.get(what, 0)
            delta = total - before if total >= before else total  # a counter that restarted
            self._last[what] = total
            if delta > 0:
                out.append(LossEvent(time_ns=now_ns, source=self.source, what=what, count=delta))
        return out


class EtwInput:
    def __init__(self, ctx: Context, *, api: EtwApi, providers: list[ProviderSpec]) -> None:
        self.ctx = ctx
        self.cfg = ctx.config
        self.log = ctx.log
        self.producer = ctx.producers[0]
        self.codec = BatchCodec()
        self.stats = EtwInputStats()
        self.pending = Pending(capacity=self.cfg.max_pending)
        self.handler = RecordHandler(schemas=SchemaCache(api.event_information), pending=self.pending,
                                     stats=self.stats, log=self.log)
        self.session = Session(api=api, name=self.cfg.session, providers=providers,
                               on_record=self.handler, rundown=self.cfg.rundown,
                               buffer_kb=self.cfg.buffer_kb, log=self.log)
        self.losses = LossTracker(ctx.name)
        self.dropped_total = 0

    def start(self) -> None:
        """Start the session (its consumer thread runs from here on); BootError if it cannot."""
        try:
            self.session.start()
        except EtwError as exc:
            raise BootError(f"{self.ctx.name}: {exc}") from exc
        self.log.info("ETW session %r started: %s", self.cfg.session,
                      ", ".join(p.guid for p in self.session.providers))

    def run(self) -> None:
        try:
            next_query = time.monotonic() + self.cfg.loss_interval
            while not self.ctx.stop.is_set():
                self.pending.ready.wait(self.cfg.send_interval)
                extra: list[Event] = []
                if time.monotonic() >= next_query:
                    next_query = time.monotonic() + self.cfg.loss_interval
                    extra = self.loss_events(self.query())
                self.flush(extra)
                if not self.session.alive():
                    raise EtwError(f"ProcessTrace ended on its own (status {self.session.process_status})")
            final = self.loss_events(self.query())
        finally:
            self.session.stop()  # the thread is joined: every delivered record is in pending
        self.flush(final)
        self.log.debug("stopped: %s", self.stats.as_dict())

    def query(self) -> SessionCounters | None:
        try:
            counters = self.session.query()
        except EtwError as exc:
            self.log.warning("cannot query the session's losses: %s", exc)
            return None
        self.stats.session_events_lost = counters.events_lost
        self.stats.session_buffers_lost = counters.realtime_buffers_lost + counters.log_buffers_lost
        return counters

    def loss_events(self, counters: SessionCounters | None) -> list[Event]:
        counts = {"real-time notices": self.stats.rt_lost_events + self.stats.rt_lost_buffers,
                  "hand-off full": self.stats.handoff_dropped}
        if counters is not None:
            counts |= {"session events": counters.events_lost,
                       "session real-time buffers": counters.realtime_buffers_lost,
                       "session log buffers": counters.log_buffers_lost}
        return list(self.losses.events(counts, now_ns=time.time_ns()))

    def flush(self, extra: Sequence[Event] = ()) -> None:
        events, _dropped = self.pending.take()  # drops are already in stats.handoff_dropped
        events.extend(extra)
        for start in range(0, len(events), self.cfg.send_events):
            self.send(events[start:start + self.cfg.send_events])

    def send(self, events: list[Event]) -> None:
        """Put one Batch, split in halves while it is too large for the queue; block while full."""
        if not events:
            return
        message = self.codec.encode(Batch(events=events, source=self.ctx.name))
        while True:
            try:
                self.producer.put(message, timeout=1.0)
                break
            except Full:
                continue  # backpressure; the drain deadline bounds a stop
            except MessageTooLarge:
                if len(events) == 1:
                    self.stats.decode_errors += 1
                    self.log.warning("dropped one event too large for the queue (%d bytes)", len(message))
                    return
                half = len(events) // 2
                self.send(events[:half])
                self.send(events[half:])
                return
        self.stats.batches_sent += 1
