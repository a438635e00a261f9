"""Log lines joined to the request they were written for.

The eBPF input's logwrite probe reports every write() to a tailed log file (LogWriteEvent: file,
thread, time, length, first bytes, and the exchange the thread was serving, from the http
probe's per-thread state). Here each line of a followed file is matched to its write, and the
write's exchange to its span (pipeline/spans.py); the line gets the span's ids and the request's
method, path and status (``LogEvent.joins``). docs/tracing.md has the rules; in short:

- A line matches the oldest pending write of its file whose length is the line's plus its
  newline and whose first bytes are the line's (one dict lookup; a write of several lines
  matches none: which line belongs to which request is not known).
- The write names an exchange when its thread was serving one request (read, not yet answered)
  or had answered it at most ``finish_window`` seconds before (nginx logs after its response).
  A thread seen with two requests in flight at once within ``multi_window`` seconds (an event
  loop) makes the line ambiguous; so do two writes of the same bytes by two threads less than
  ``reorder_ns`` apart (the file's order between them is not known).
- A lost log-write event (a gap in the probe's per-CPU sequence, or the ring buffer full)
  clears what is pending: a line is never matched to the next write of the same bytes.

How long a line waits is measured on the host's clock as the eBPF events tell it, so that a
pipeline running behind (a busy host) does not give up on lines whose writes are merely still in
its queue: a line waits for its write until a later write of any followed file has come (its
own, if it was seen, came before), and for its request's exchange until an exchange that ended
``hold`` seconds after the write has come (the request took longer: no join), and in all at
most until events ``max_hold`` seconds newer than the line's read time have come. Whatever the
events say (they may stop, or lag far behind an overloaded pipeline), no line is held more
than ``max_lag`` seconds of the pipeline's own time. Held lines go on in arrival order per file;
other events never wait.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass, field

import msgspec

from common.events import (ONE_RECORD, Event, HttpEvent, LineJoin, LogEvent, LogWriteEvent,
                           LossEvent)
from pipeline.config import JoinConfig
from pipeline.spans import SpanBuilder

_replace = msgspec.structs.replace
MAX_WRITES = 65536
"""Pending writes kept in all (past it, the older half go)."""
TRIM_EVERY_NS = 10**9
LOG_HEAD = 128
"""The logwrite probe's LOG_HEAD: how many first bytes of a write it copies."""
FOLLOW_NS = 60 * 10**9
"""A file is followed (its lines wait for their writes) this long after its last write seen."""
SLACK_NS = 5_000_000
"""Clocks of the eBPF input's and the file input's times may differ this much."""
WRITE_KEEP_NS = 10 * 10**9
"""A write no line took within this long is dropped."""


@dataclass
class JoinStats:
    lines: int = 0
    """Lines of followed files."""
    joined: int = 0
    ambiguous: int = 0
    no_request: int = 0
    """Matched to its write, whose thread served no request (or long finished)."""
    unmatched: int = 0
    """No write found within the hold."""
    resets: int = 0
    """Losses that cleared the pending writes."""
    wait_ns: list[int] = field(default_factory=list)
    """How long joined lines waited (the last 10,000)."""


class _Held:
    __slots__ = ("ev", "lines", "joins", "next", "deadline", "arrived", "source", "pending")

    def __init__(self, ev: LogEvent, lines: list[bytes], now: float, deadline: float,
                 source: tuple[int, int] | None) -> None:
        self.ev = ev
        self.lines = lines
        self.joins: list[LineJoin] = []
        self.next = 0
        """The first line not yet decided."""
        self.pending: tuple | None = None
        """The current line's write, once found, while its exchange or span is awaited."""
        self.deadline = deadline
        self.arrived = now
        self.source = source


class LogJoiner:
    def __init__(self, spans: SpanBuilder, cfg: JoinConfig | None = None) -> None:
        cfg = cfg or JoinConfig()
        self.spans = spans
        self.hold_ns = int(cfg.hold * 1e9)
        self.max_hold_ns = int(cfg.max_hold * 1e9)
        self.hold = cfg.max_lag
        self.finish_ns = int(cfg.finish_window * 1e9)
        self.multi_ns = int(cfg.multi_window * 1e9)
        self.reorder_ns = cfg.reorder_us * 1000
        self.writes: dict[tuple[int, int], dict[tuple[int, bytes], deque[LogWriteEvent]]] = {}
        """(dev, ino) -> (length, first bytes) -> pending writes of those bytes, oldest first."""
        self.pending_writes = 0
        self.next_trim = 0
        self.head_bytes = LOG_HEAD
        self.followed: OrderedDict[tuple[int, int], int] = OrderedDict()
        """(dev, ino) -> boot time of its last write, or of the input's last word that it
        notes the file's writes, seen; a file is followed FOLLOW_NS past it (the newest such
        time seen of any file: ``newest_follow``)."""
        self.newest_follow = 0
        self.poison: set[int] = set()
        """id()s of pending writes whose line is ambiguous: each the twin of the write of the
        same bytes taken before it (an id leaves the set as its write leaves its queue)."""
        self.held: dict[tuple[int, int], deque[_Held]] = {}
        self.stats = JoinStats()
        self.last_boot = 0
        """The latest write seen (CLOCK_BOOTTIME)."""
        self.last_write_wall = 0
        """The same, wall clock (what a line's read time compares with)."""
        self.ended_boot = 0
        """The latest end of an exchange seen (CLOCK_BOOTTIME)."""
        self.seen_wall = 0
        """The newest eBPF event taken (a write, an exchange's end), wall clock."""

    # --- input ---------------------------------------------------------------------------------

    def feed(self, events: list[Event], now: float,
             source: tuple[int, int] | None = None) -> list[Event]:
        """Take the writes and the lines of followed files; return what goes on now."""
        out: list[Event] = []
        for ev in events:
            kind = type(ev)
            if kind is LogWriteEvent:
                self._write(ev)
            elif kind is LogEvent:
                key = (ev.dev, ev.ino)
                q = self.held.get(key)
                since = self.followed.get(key)
                if q or (since is not None and since >= self.newest_follow - FOLLOW_NS
                         and not ev.flags & ONE_RECORD):
                    lines = ev.data.split(b"\n")
                    lines.pop()
                    if q is None:
                        q = self.held[key] = deque()
                    q.append(_Held(ev, lines, now, now + self.hold, source))
                    self.stats.lines += len(lines)
                else:
                    out.append(ev)
            elif kind is HttpEvent:
                end = ev.boot_ns + ev.duration_ns
                if end > self.ended_boot:
                    self.ended_boot = end
                    if ev.time_ns + ev.duration_ns > self.seen_wall:
                        self.seen_wall = ev.time_ns + ev.duration_ns
                out.append(ev)
            elif kind is LossEvent and ev.what.endswith("logwrite"):
                self._reset()
                out.append(ev)
            else:
                out.append(ev)
        if self.held:
            out += self.release(now)
        return out

    def _write(self, w: LogWriteEvent) -> None:
        key = (w.dev, w.ino)
        if w.lost_before:
            self._reset()
        self._follow(key, w.boot_ns)
        if not w.length:
            # No byte (and no line) written: the input's word that the probe notes this file's
            # writes (inputs/ebpf/runner.py say_followed). Its lines wait for their writes from
            # now on, even before the first write comes; it is no write.
            return
        if w.boot_ns > self.last_boot:
            self.last_boot = w.boot_ns
            self.last_write_wall = w.time_ns
            if w.time_ns > self.seen_wall:
                self.seen_wall = w.time_ns
        by_content = self.writes.get(key)
        if by_content is None:
            by_content = self.writes[key] = {}
        q = by_content.get((w.length, w.head))
        if q is None:
            q = by_content[(w.length, w.head)] = deque()
        q.append(w)
        self.pending_writes += 1
        if self.pending_writes > MAX_WRITES:
            self._trim(force=True)

    def _follow(self, key: tuple[int, int], boot_ns: int) -> None:
        """The file's lines wait for their writes until FOLLOW_NS past ``boot_ns``."""
        followed = self.followed
        if followed.get(key, -1) < boot_ns:
            followed[key] = boot_ns
        followed.move_to_end(key)
        if len(followed) > 4096:
            followed.popitem(last=False)
        if boot_ns > self.newest_follow:
            self.newest_follow = boot_ns

    def _reset(self) -> None:
        self.stats.resets += 1
        self.writes.clear()
        self.pending_writes = 0
        self.poison.clear()

    # --- matching ------------------------------------------------------------------------------

    def release(self, now: float) -> list[Event]:
        """Held events whose lines are all decided, or whose hold is over, in order per file."""
        out: list[Event] = []
        for key in list(self.held):
            q = self.held[key]
            while q:
                h = q[0]
                expired = now >= h.deadline or \
                    self.seen_wall >= h.ev.read_ns + self.max_hold_ns
                self._decide(key, h, expired)
                if h.next < len(h.lines) and not expired:
                    break
                q.popleft()
                out.append(_replace(h.ev, joins=h.joins) if h.joins else h.ev)
                if h.joins:
                    waited = int((now - h.arrived) * 1e9)
                    waits = self.stats.wait_ns
                    waits.append(waited)
                    if len(waits) > 10_000:
                        del waits[:5_000]
            if not q:
                del self.held[key]
        if self.writes:
            self._trim()
        return out

    def _decide(self, key: tuple[int, int], h: _Held, expired: bool) -> None:
        st = self.stats
        while h.next < len(h.lines):
            i = h.next
            if h.pending is None:
                found = self._match(key, h.lines[i])
                if found is None:
                    # Its write, if seen, came before any later one: wait only while none has.
                    if not expired and self.last_write_wall <= h.ev.read_ns + SLACK_NS:
                        return
                    st.unmatched += 1
                    h.next += 1
                    continue
                if found == "ambiguous":
                    st.ambiguous += 1
                    h.joins.append(LineJoin(i, ambiguous=True))
                    h.next += 1
                    continue
                h.pending = found
            w: LogWriteEvent = h.pending
            verdict = self._exchange_of(w)
            if verdict == "ambiguous":
                st.ambiguous += 1
                h.joins.append(LineJoin(i, ambiguous=True))
            elif verdict is None:
                st.no_request += 1
            else:
                span = self.spans.span_of(w.pid, w.req_fd, w.req_boot_ns)
                if span is None or not span.trace_id:
                    if not expired and (span is not None or
                                        self.ended_boot <= w.boot_ns + self.hold_ns):
                        return
                    st.unmatched += 1
                else:
                    ev = span.ev
                    h.joins.append(LineJoin(i, span.trace_id, span.span_id, ev.method, ev.path,
                                            ev.status))
                    st.joined += 1
            h.pending = None
            h.next += 1

    def _match(self, key: tuple[int, int], line: bytes):
        """The write of this line (taken off the pending ones), "ambiguous", or None. Writes
        are kept by content (length, first bytes): one lookup, oldest first."""
        by_content = self.writes.get(key)
        if not by_content:
            return None
        data = line + b"\n"
        content = (len(data), data[:self.head_bytes])
        q = by_content.get(content)
        if not q:
            return None
        w = q.popleft()
        self.pending_writes -= 1
        poison = self.poison
        ambiguous = False
        if poison and id(w) in poison:
            poison.discard(id(w))
            ambiguous = True
        if q and q[0].tid != w.tid and q[0].boot_ns - w.boot_ns <= self.reorder_ns:
            # Its twin: the same bytes by another thread at the same instant. Which of the two
            # lines came first in the file is not known: both are ambiguous (and the twin's
            # own twin, a third, too: the check runs again as the twin is taken).
            poison.add(id(q[0]))
            ambiguous = True
        if not q:
            del by_content[content]
        return "ambiguous" if ambiguous else w

    def _exchange_of(self, w: LogWriteEvent):
        """"ambiguous", None (no request), or "exchange" (pid, req_fd, req_boot_ns)."""
        if not w.req_boot_ns:
            return None
        if w.multi_boot_ns and w.boot_ns - w.multi_boot_ns < self.multi_ns:
            return "ambiguous"
        if w.resp_boot_ns and w.boot_ns - w.resp_boot_ns > self.finish_ns:
            return None
        return "exchange"

    def _trim(self, *, force: bool = False) -> None:
        """Writes no line took within WRITE_KEEP_NS go (all but the newest MAX_WRITES when
        ``force``); files without writes for FOLLOW_NS are no longer followed."""
        if not force and self.last_boot < self.next_trim:
            return
        self.next_trim = self.last_boot + TRIM_EVERY_NS
        horizon = self.last_boot - WRITE_KEEP_NS
        if force:
            times = sorted(w.boot_ns for c in self.writes.values() for q in c.values() for w in q)
            horizon = max(horizon, times[len(times) - MAX_WRITES // 2] if times else 0)
        n = 0
        for key, by_content in list(self.writes.items()):
            for content, q in list(by_content.items()):
                while q and q[0].boot_ns < horizon:
                    self.poison.discard(id(q.popleft()))
                if not q:
                    del by_content[content]
                n += len(q)
            if not by_content and self.followed.get(key, 0) < self.last_boot - FOLLOW_NS:
                del self.writes[key]
                self.followed.pop(key, None)
        self.pending_writes = n

    # --- for the pipeline's loop ---------------------------------------------------------------

    def time_left(self, now: float) -> float | None:
        if not self.held:
            return None
        return max(0.0, min(q[0].deadline for q in self.held.values()) - now)

    def lowest_held(self) -> dict[int, int]:
        """Per input index, the lowest message seq whose lines are still held."""
        low: dict[int, int] = {}
        for q in self.held.values():
            for h in q:
                if h.source is not None:
                    i, seq = h.source
                    if seq and (i not in low or seq < low[i]):
                        low[i] = seq
        return low
