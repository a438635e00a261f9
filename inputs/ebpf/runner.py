"""The eBPF input's loop: wait on the ring buffers, decode, translate, send in batches.

It must never make the kernel wait, so it never blocks on its queue: a batch that finds the
queue full is dropped and counted, and the count goes out as a LossEvent ("queue full") in the
next batch that fits. Events the kernel could not put in a ring buffer (it was full) are counted
by the programs and go out as LossEvents ("ring buffer <probe>") too.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field, fields

from common.component import Context
from common.cpu import relax
from common.events import Batch, BatchCodec, Event, LogWriteEvent, LossEvent, ProcessEvent
from common.memory import release_code, trim
from common.shmqueue import Full, MessageTooLarge
from inputs.ebpf.loader import Programs
from inputs.ebpf.logfiles import LogFiles
from inputs.ebpf.logwrite import LogWriteTranslator
from inputs.ebpf.tls import TlsAttacher
from inputs.ebpf.translate import Translator

LOSS_CHECK_INTERVAL = 1.0
TLS_SCAN_INTERVAL = 1.0
"""Seconds between two looks at new processes' maps for a libssl to attach to."""
FOLLOWED_REFRESH = 20.0
"""Seconds between two reminders to the log join of every followed file (it forgets a file
FOLLOW_NS, 60 s, after the last write or reminder it saw)."""
QUEUE_WAIT_SLICE = 0.1
"""Seconds between looks at the stop flag while the pipeline's queue is full."""
COMPILER_LIBRARIES = ("libLLVM", "libclang")
"""The libraries BCC compiles the programs with, in this process, once: their code is unmapped
when tracing starts (common.memory.release_code)."""


READ_RECORDS = 64
"""While records come, the input reads the ring buffers about this many at a time (PollPace)."""


class PollPace:
    """How long the input waits before its next read of the ring buffers.

    While records come: long enough for about ``per_read`` of them at the rate the last read
    found, but no shorter than ``busy`` and no longer than ``longest`` (the batch's interval: the
    batch goes at the read before its deadline, so a record waits at most about that). At 5,000
    HTTP requests a second that is every ``busy`` seconds, as before; at ordinary rates, and
    under a budget of exchanges (sampling), reads are fewer and larger. Each read wakes the
    input, and then the pipeline and the output it hands on to: on this project's VM a process
    that wakes from a short sleep spends ~75-140 us of CPU doing so (cold caches), and each wake
    is a chance to take a CPU from the processes being traced.

    After a read that found none, twice the last wait, up to ``idle``: a quiet host is read 4
    times a second instead of 50."""

    def __init__(self, busy: float, idle: float, longest: float | None = None,
                 per_read: int = READ_RECORDS) -> None:
        self.busy = busy
        self.longest = max(longest if longest is not None else busy, busy)
        self.idle = max(idle, busy)
        self.per_read = per_read
        self.interval = busy
        self.last: float | None = None
        """When the last read was."""

    def after(self, took: int, now: float) -> float:
        """The wait before the next read, after one at ``now`` that ``took`` records."""
        elapsed = now - self.last if self.last is not None else self.busy
        self.last = now
        if took:
            self.interval = min(max(self.per_read * elapsed / took, self.busy), self.longest)
        else:
            self.interval = min(self.interval * 2, self.idle)
        return self.interval


class Sampling:
    """The http probe's 1-in-N, kept so that at most about ``budget`` exchanges a second reach
    the agent.

    Every ``interval`` (a quarter of a second), and at once when the input reads a surge of
    records (``due``: a burst's start is traced whole until then), the host's rate is taken from
    the probe's own count of the exchanges it paired, sent or not (exact, whatever the ring
    buffers lost or the input has yet to read), and from the input's count of those it paired
    itself (pipelining connections, which the probe does not sample: they use up the budget
    first). N becomes the probe's rate over what is left of the budget, rounded
    up: at once when it rises, and back down only once the rate is a fifth under what the lower
    N would take, so that a rate near a boundary does not make N flap."""

    MAX_ONE_IN = 65535
    """The weight travels in 16 bits (bpf/events.h, HTTP_WEIGHT_SHIFT)."""

    def __init__(self, budget: int, *, interval: float = 0.25) -> None:
        self.budget = budget
        self.interval = interval
        self.one_in = 1
        self.rate = 0.0
        """Exchanges a second on the host, as last measured."""
        self._since: float | None = None
        self._paired = self._unsampled = 0
        self._read = 0
        """Records the input read since the last measurement."""

    def due(self, now: float, read: int = 0) -> bool:
        """Whether to measure now: every ``interval``, or sooner when the records just ``read``
        make a surge (more than twice what the budget allows since the last measurement: at a
        burst's start the probe sends every exchange until N is raised)."""
        if not self.budget:
            return False
        if self._since is None:
            return True
        elapsed = now - self._since
        self._read += read
        return elapsed >= self.interval or self._read > 2 * self.budget * max(elapsed, 0.01)

    def update(self, paired: int, unsampled: int, now: float) -> int | None:
        """Given the exchanges so far, those the probe paired (sent or not) and those it does not
        sample, the new N when it changes, else None. Sooner than ``interval`` after the last
        measurement (a surge), N only rises."""
        if not self.budget:
            return None
        if self._since is None:
            self._since, self._paired, self._unsampled = now, paired, unsampled
            return None
        elapsed = now - self._since
        early = elapsed < self.interval
        if elapsed <= 0:
            return None
        window = max(elapsed, 0.05) if early else elapsed  # a few ms of a burst say little
        rate = (paired - self._paired) / window
        fixed = (unsampled - self._unsampled) / window
        left = max(1.0, self.budget - fixed)

        def one_in(r: float) -> int:
            return min(self.MAX_ONE_IN, max(1, math.ceil(r / left)))

        want = one_in(rate)
        if early and want <= self.one_in:
            self._read = 0
            return None  # the quarter second's measurement goes on
        self.rate = rate + fixed
        self._since, self._paired, self._unsampled = now, paired, unsampled
        self._read = 0
        if want < self.one_in:
            want = one_in(rate * 1.25)
            if want >= self.one_in:
                return None
        elif want == self.one_in:
            return None
        self.one_in = want
        return want


@dataclass
class EbpfInputStats:
    """Counters of the eBPF input, one per occurrence."""

    raw_events: int = 0
    events_sent: int = 0
    batches_sent: int = 0
    lost_ring_buffer: int = 0
    lost_queue_full: int = 0
    undecodable: int = 0
    lost_by_probe: dict[str, int] = field(default_factory=dict)
    """lost_ring_buffer per probe (the telemetry's bpf_lost_events{probe})."""
    sampled_out: int = 0
    """HTTP exchanges the http probe counted and did not send (its budget was exceeded)."""

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


class EbpfInput:
    def __init__(self, ctx: Context, programs: Programs) -> None:
        self.ctx = ctx
        self.cfg = ctx.config
        self.log = ctx.log
        self.programs = programs
        self.producer = ctx.producers[0]
        self.codec = BatchCodec()
        self.logfiles: LogFiles | None = None
        logwrites = None
        if "logwrite" in programs.objects:
            self.logfiles = LogFiles(self.cfg.log_paths,
                                     table=programs.objects["logwrite"][b"logfds"],
                                     interval=self.cfg.log_scan_interval,
                                     skip=frozenset({os.getpid()}))
            logwrites = LogWriteTranslator(self.logfiles.file_of)
        self.translator = Translator(logwrites=logwrites, packed=True)
        self.stats = EbpfInputStats()
        self.out: list[Event] = []
        self.first_at = 0.0
        self.unreported_queue_loss = 0
        self.next_loss_check = time.monotonic() + LOSS_CHECK_INTERVAL
        self.tls: TlsAttacher | None = None
        if self.cfg.tls and "http" in programs.objects:
            self.tls = TlsAttacher(programs.objects["http"], log=self.log,
                                   skip_pid=programs.options.self_pid)
            self.tls.start()  # before run(): HTTPS is seen once the input is built
        self.next_tls_scan = time.monotonic() + TLS_SCAN_INTERVAL
        self.said_followed: set[tuple[int, int]] = set()
        self.next_followed_refresh = 0.0
        self.pace = PollPace(self.cfg.poll_interval, self.cfg.idle_poll_interval,
                             longest=min(self.cfg.send_interval, self.cfg.idle_poll_interval))
        self.sampling = Sampling(self.cfg.max_exchanges_per_second if "http" in programs.objects
                                 else 0)

    def run(self) -> None:
        try:
            if self.logfiles is not None:
                n = self.logfiles.scan(time.monotonic())
                self.log.info("following writes to log files: %d descriptors of %s", n,
                              ", ".join(self.cfg.log_paths))
                self.say_followed(time.monotonic())
                self.send()  # at once: the file input's first lines may be on their way
            self.log.info("tracing with probes: %s", ", ".join(self.programs.objects))
            # Compiling the programs (BCC's clang and LLVM, in this process) left ~18 MiB of
            # freed memory with the allocator, and ~70 MiB of their code resident: back to the
            # kernel, once (the code stays in the page cache, mapped should it run again).
            trim()
            code = release_code(COMPILER_LIBRARIES)
            self.log.debug("compiled: the compiler's code unmapped (%.1f MiB)", code / 2**20)
            timeout = self.cfg.poll_interval
            while not self.ctx.stop.is_set():
                # The programs do not wake us for each event (it would cost the traced process
                # ~1 us each): poll, at a pace set by what the last read found (PollPace); a
                # ring buffer a quarter full wakes us at once.
                if self.out:
                    timeout = min(timeout, max(0.0, self.first_at + self.cfg.send_interval
                                               - time.monotonic()))
                self.programs.wait(timeout, self.ctx.stop.fileno())
                timeout = self.round()
            self.round()
            self.check_loss()
            self.send()
            self.log.debug("stopped: %s", self.stats.as_dict())
        finally:
            self.programs.close()

    def round(self) -> float:
        """Take what the ring buffers hold, in time order; send when a batch is due by the next
        read. The wait before that read (PollPace)."""
        records = self.programs.consume()
        if records:
            self.translator.resync_clock()
            events, n, errors = self.translator.feed_records(records)
            self.stats.raw_events += n
            if errors:
                self.stats.undecodable += len(errors)
                self.log.debug("%d undecodable events, e.g. %s", len(errors), errors[0])
            if self.logfiles is not None:
                for ev in events:
                    if type(ev) is ProcessEvent and ev.kind == "fork":
                        self.logfiles.forked(ev.ppid, ev.pid)
            if events and not self.out:
                # They may have waited in the ring since just after the last read: the batch's
                # clock starts then, so none waits much longer than send_interval.
                self.first_at = self.pace.last if self.pace.last is not None else time.monotonic()
            execs = self.translator.take_execs()
            if self.tls is not None:
                for pid in execs:
                    self.tls.forget(pid)
            self.out.extend(events)
            relax()
            limit = self.cfg.send_events
            while len(self.out) >= limit:
                self.send(limit)
                relax()
        now = time.monotonic()
        if self.logfiles is not None and self.logfiles.due(now):
            self.logfiles.scan(now)
            self.say_followed(now)
        elif self.logfiles is not None and now >= self.next_followed_refresh:
            self.say_followed(now)  # log_scan_interval may be longer than the refresh
        if self.tls is not None and now >= self.next_tls_scan:
            self.next_tls_scan = now + TLS_SCAN_INTERVAL
            self.tls.scan()
        if now >= self.next_loss_check:
            self.next_loss_check = now + LOSS_CHECK_INTERVAL
            self.check_loss()
        if self.sampling.due(now, len(records)):
            self.check_sampling(now)
        wait = self.pace.after(len(records), now)
        if self.out and now + wait - self.first_at >= self.cfg.send_interval:
            self.send()  # now rather than a wake-up of its own (or late, at the next read)
        return wait

    def check_loss(self) -> None:
        for probe, n in self.programs.lost().items():
            if n:
                self.stats.lost_ring_buffer += n
                self.stats.lost_by_probe[probe] = self.stats.lost_by_probe.get(probe, 0) + n
                self.log.warning("the %s probe's ring buffer was full: %d events lost", probe, n)
                self.out.append(LossEvent(time_ns=time.time_ns(), source=self.ctx.name,
                                          what=f"ring buffer {probe}", count=n))
                if len(self.out) == 1:
                    self.first_at = time.monotonic()

    def check_sampling(self, now: float) -> None:
        """Keep the http probe within its budget of exchanges a second (``Sampling``)."""
        before = self.sampling.one_in
        paired, self.stats.sampled_out = self.programs.exchange_counts()
        n = self.sampling.update(paired, self.translator.stats.user_paired, now)
        if n is None:
            return
        self.programs.set_sampling(n)
        rate, budget = self.sampling.rate, self.sampling.budget
        if before == 1:
            self.log.warning("%.0f HTTP exchanges a second, over the budget of %d "
                             "(max_exchanges_per_second): the http probe sends 1 in %d from now "
                             "on; RED metrics are estimates meanwhile", rate, budget, n)
        elif n == 1:
            self.log.warning("%.0f HTTP exchanges a second, within the budget of %d again: every "
                             "exchange is sent (%d were not since the input started)", rate,
                             budget, self.stats.sampled_out)
        else:
            self.log.info("%.0f HTTP exchanges a second: the http probe sends 1 in %d", rate, n)

    def say_followed(self, now: float) -> None:
        """Tell the pipeline's log join which files' writes are noted: a file new to the probe
        at once, all of them every FOLLOWED_REFRESH seconds (markers: LogWriteEvents of no
        byte). From then on the join holds each line of such a file for its write, even before
        any write came, and through a quiet spell (pipeline/logjoin.py FOLLOW_NS)."""
        files = self.logfiles.followed()
        if now >= self.next_followed_refresh:
            self.next_followed_refresh = now + FOLLOWED_REFRESH
            new = files
        else:
            new = files - self.said_followed
        self.said_followed = files
        if not new:
            return
        boot, wall = time.clock_gettime_ns(time.CLOCK_BOOTTIME), time.time_ns()
        if not self.out:
            self.first_at = now
        self.out.extend(LogWriteEvent(time_ns=wall, pid=0, tid=0, fd=-1, dev=dev, ino=ino,
                                      length=0, head=b"", boot_ns=boot)
                        for dev, ino in sorted(new))

    def send(self, limit: int = 0) -> None:
        """Hand the batch on (at most ``limit`` events of it, 0: all). While the pipeline's
        queue is full this waits, and the probes' ring buffers hold what comes meanwhile (the
        kernel never waits: a full ring buffer loses events and counts them); the batch is
        dropped, counted, only when the input is stopping or it can never fit."""
        if not self.out:
            return
        if limit and len(self.out) > limit:
            events, self.out = self.out[:limit], self.out[limit:]
            self.first_at = time.monotonic()
        else:
            events, self.out = self.out, []
        if self.unreported_queue_loss:
            events.insert(0, LossEvent(time_ns=time.time_ns(), source=self.ctx.name,
                                       what="queue full", count=self.unreported_queue_loss))
        message = self.codec.encode(Batch(events=events, source=self.ctx.name))
        if not self._put(message):
            dropped = len(events) - (1 if self.unreported_queue_loss else 0)
            self.unreported_queue_loss += dropped
            self.stats.lost_queue_full += dropped
            return
        self.unreported_queue_loss = 0
        self.stats.batches_sent += 1
        self.stats.events_sent += len(events)

    def _put(self, message: bytes) -> bool:
        while True:
            try:
                self.producer.put(message, timeout=QUEUE_WAIT_SLICE)
                return True
            except MessageTooLarge:
                return False
            except Full:
                if self.ctx.stop.is_set():
                    return False
                now = time.monotonic()
                if self.sampling.due(now):  # a pipeline behind: the moment to take less
                    self.check_sampling(now)
