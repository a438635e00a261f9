"""Spans from HTTP exchanges: every exchange the eBPF input pairs becomes a SpanEvent, with its
trace context and its parent found as docs/tracing.md says.

Parents, in this order (the first rule that applies wins):

1. ``traceparent``: the request carried a valid W3C header in its captured bytes: its trace id,
   and, for a server span, its span id as the parent (the caller was instrumented). A client
   span whose request carries one IS the span the header names (its trace and span id: the
   caller made that id for this request), so the server it calls is its child.
2. ``connection`` (server spans): the connection this server accepted is a connection a process
   of this host connected (the tcp probe saw both ends: same address/port pair): the client
   exchange on that connection whose interval holds this one is the parent. Frontend ->
   backend on one host is one trace.
3. ``thread`` (client spans of processes that accept connections): the server exchange the same
   thread was serving when it sent this request (its interval holds this one) is the parent.
4. None of these: a root, with a new trace id.

A parent's exchange ends after its child's, so its event comes later: a span that may have a
local parent (2 or 3) waits for it at most ``hold`` seconds (then it becomes a root), and while
its parent waits for its own. Spans go out as soon as their trace id is known; those that need no
wait (1, 4) at once.
"""

from __future__ import annotations

import os
from collections import OrderedDict, deque
from collections.abc import Iterable

import msgspec

from common.cpu import relax
from common.events import ConnEvent, Event, HttpEvent, ProcessInfo, SpanEvent
from common import tracecontext
from common.fastpath import observe_spans, pack_span
from common.tracecontext import new_span_id, new_trace_id, parse_traceparent
from pipeline.config import SpansConfig

MAX_PER_KEY = 64
"""Recent spans kept per thread and per connection, for parents to be found among."""
_PROTOCOL_VERSIONS = {"HTTP/1.1": "1.1", "HTTP/1.0": "1.0"}
"""``network.protocol.version`` of the versions most requests carry."""
EXCHANGES_KEPT = 65536
"""Spans kept by their exchange's key for the log join, at most (the oldest go)..."""
EXCHANGE_KEEP_NS = 15 * 10**9
"""...and only while they began less than this before the newest (the log join keeps a write
10 s, pipeline/logjoin.py WRITE_KEEP_NS: an older exchange has no line left to take it). A
host at a few hundred exchanges a second keeps a few thousand, not 65,536 (~45 MB)."""
FORGET_FROM = 1024
"""Below this many kept, none is looked at for its age."""
KEEP_NS = 30 * 10**9
"""Spans older than this (by their end) are no longer looked at as parents."""

PACKED = pack_span is not None
"""Whether the pipeline's spans can go straight to their msgpack bytes (``SpanBuilder(packed=
True)``: common/speedups/spans.c ``pack_span``, the same bytes as msgspec makes of ``_event``'s
SpanEvent)."""
_ATTR_KEYS = ("http.request.method", "url.path", "url.query", "url.scheme",
              "http.response.status_code",
              "error.type", "network.protocol.version", "network.peer.address",
              "network.peer.port", "server.address", "server.port", "client.address",
              "client.port", "url.full", "thread.id", "log_shuttle.headers_cut",
              "log_shuttle.sample_weight")
"""A span's attributes in the order ``_event`` sets them (pack_span's A_* order)."""
_PACKED_KEYS = tuple(msgspec.msgpack.encode(k) for k in _ATTR_KEYS)
_PACKED_FIELDS = bytes(HttpEvent.__struct_fields__.index(n) for n in (
    "time_ns", "tid", "direction", "method", "path", "status", "duration_ns", "peer_addr",
    "peer_port", "version", "traceparent", "headers_cut", "weight", "tls"))
"""Where pack_span finds what it reads (its F_* order) in ``astuple(HttpEvent)``."""
_FAST_FIELDS = bytes(HttpEvent.__struct_fields__.index(n) for n in (
    "pid", "fd", "comm", "process", "boot_ns"))
"""The other fields observe_spans reads (its M_* order) in ``astuple(HttpEvent)``."""
_PACKED_HEAD = msgspec.msgpack.encode(SpanEvent(0, 0, "", ""))[:6]
"""A SpanEvent's msgpack array header and tag."""
assert _PACKED_HEAD == bytes([0x90 | len(SpanEvent.__struct_fields__) + 1]) + b"\xa4span"
_astuple = msgspec.structs.astuple
_encode = msgspec.msgpack.Encoder().encode


def service_name(comm: str, proc: ProcessInfo | None, overrides: dict[str, str]) -> str:
    exe = proc.exe if proc is not None else ""
    container = proc.container_id if proc is not None else ""
    name = comm or (proc.comm if proc is not None else "")
    if overrides:
        for key in (container, container[:12], exe, os.path.basename(exe), name):
            if key and key in overrides:
                return overrides[key]
    return os.path.basename(exe) or name or "unknown"


class _Span(msgspec.Struct, gc=False, eq=False):
    """An exchange's span while it is built and kept (for parents to be found among, and for
    the log join). Not tracked by the garbage collector: tens of thousands are kept, and a full
    collection walking them all would be a pause of milliseconds; they hold no cycle (a parent
    lists its children, a child names its parent by id only)."""

    ev: HttpEvent
    span_id: str
    start: int
    end: int
    deadline: float
    trace_id: str = ""
    parent: str = ""
    how: str = ""
    tracestate: str = ""
    children: list[_Span] | None = None
    """Spans waiting for this one's trace id."""
    want: tuple | None = None
    """What parent it waits for: ("conn", pid, fd) or ("thread", pid, tid)."""
    sent: bool = False
    local: tuple[str, int, str, int] | None = None

    def holds(self, other: _Span) -> bool:
        return self.start <= other.start and other.end <= self.end


class SpanBuilder:
    """Feed it the pipeline's events (``observe``), call ``expire`` on a timer; both return the
    SpanEvents ready to go (``packed``: their msgpack bytes, as ``msgspec.Raw``)."""

    def __init__(self, cfg: SpansConfig | None = None, *, host_attrs: dict | None = None,
                 packed: bool = False) -> None:
        """packed: spans go out as their msgpack bytes (``msgspec.Raw``, what the pipeline
        encodes as it is) instead of SpanEvents, with the compiled module (PACKED)."""
        cfg = cfg or SpansConfig()
        self._make = self._packed if packed and PACKED else self._event
        self._fast = (HttpEvent, ConnEvent, _Span, relax, new_span_id, new_trace_id,
                      tracecontext._span_ids, tracecontext._trace_ids, _astuple, msgspec.Raw,
                      _PACKED_FIELDS, _PACKED_HEAD, _PACKED_KEYS, _FAST_FIELDS, EXCHANGES_KEPT) \
            if self._make == self._packed and observe_spans is not None else None
        """observe()'s loop in C, with what it uses (its K_* order; the id pools are
        common.tracecontext's, drawn from as new_span_id and new_trace_id do): the exchanges
        whose span needs no wait go out from there, the others through ``_exchange``, with
        the same effects (common/speedups/spans.c observe_spans). None: the loop in Python."""
        self.hold = cfg.hold
        self.overrides = dict(cfg.services)
        self.max_pending = cfg.max_pending
        self.conns: OrderedDict[tuple[int, int], tuple[str, int, str, int]] = OrderedDict()
        """(pid, fd) -> (local address, local port, peer address, peer port)."""
        self.connectors: OrderedDict[tuple[str, int, str, int], tuple[int, int]] = OrderedDict()
        """(client address, port, server address, port) -> the connecting (pid, fd)."""
        self.servers: OrderedDict[int, None] = OrderedDict()
        """Pids that accepted a TCP connection: their client spans may have a thread parent."""
        self.by_thread: dict[tuple[int, int], deque[_Span]] = {}
        self.by_conn: dict[tuple[int, int], deque[_Span]] = {}
        self.waiting: dict[tuple, list[_Span]] = {}
        self.pending: OrderedDict[int, _Span] = OrderedDict()
        """Spans waiting for a trace id, by id(), oldest first (deadlines grow with it)."""
        self.exchanges: OrderedDict[tuple[int, int, int], _Span] = OrderedDict()
        """(pid, fd, boot_ns) -> its span: what the log join looks exchanges up by."""
        self.resource_cache: dict[tuple, tuple[dict, bytes]] = {}
        self._waits: list[_Span] = []
        """Spans of this observe() that did not go out at once."""
        self.unsent: set[int] = set()
        """After observe(): id()s of its HttpEvents whose span waits still (the pipeline ships
        such an http event even when it drops the others: a pipeline killed before the span
        goes out then loses no exchange)."""
        self._ready: list[_Span] = []
        """Spans whose parent was already sent when they found it: to send."""
        self.stats = {"spans": 0, "roots": 0, "traceparent": 0, "thread": 0, "connection": 0,
                      "expired": 0}

    # --- input ---------------------------------------------------------------------------------

    def observe(self, events: Iterable[Event], now: float) -> list[SpanEvent]:
        """The spans ready to go for these events; ``unsent`` is then the set of id()s of the
        HttpEvents among them whose span waits (for a parent) still."""
        out: list[SpanEvent] = []
        if self._fast is not None:  # the same loop, in C
            observe_spans(self, events, now, out, self._fast)
        else:
            n = 0
            for ev in events:
                kind = type(ev)
                if kind is HttpEvent:
                    self._exchange(ev, now, out)
                    n += 1
                    if not n & 15:
                        relax()  # a hundred microseconds of spans: the CPU to whoever waits
                elif kind is ConnEvent:
                    self._conn(ev)
        waits = self._waits
        if waits:
            self._waits = []
            self.unsent = {id(s.ev) for s in waits if not s.sent}
        elif self.unsent:
            self.unsent = set()
        if len(self.exchanges) > FORGET_FROM:
            self._forget_old()
        return out

    def _forget_old(self) -> None:
        """Spans that began EXCHANGE_KEEP_NS before the newest go from ``exchanges`` (kept in
        the order they came: the oldest first, near enough)."""
        exchanges = self.exchanges
        horizon = next(reversed(exchanges.values())).start - EXCHANGE_KEEP_NS
        old = 0
        for s in exchanges.values():
            if s.start >= horizon:
                break
            old += 1
        popitem = exchanges.popitem
        for _ in range(old):
            popitem(False)  # the oldest

    def _conn(self, ev: ConnEvent) -> None:
        key = (ev.pid, ev.fd)
        if ev.kind == "close":
            if self.conns.get(key, (None,) * 4)[1:2] == (ev.sport,):
                del self.conns[key]
            return
        if ev.fd < 0:
            return
        self.conns[key] = (ev.saddr, ev.sport, ev.daddr, ev.dport)
        self.conns.move_to_end(key)
        if len(self.conns) > 65536:
            self.conns.popitem(last=False)
        if ev.kind == "connect":
            self.connectors[(ev.saddr, ev.sport, ev.daddr, ev.dport)] = key
            if len(self.connectors) > 65536:
                self.connectors.popitem(last=False)
        elif ev.kind == "accept":
            self.servers[ev.pid] = None
            self.servers.move_to_end(ev.pid)
            if len(self.servers) > 65536:
                self.servers.popitem(last=False)

    def _exchange(self, ev: HttpEvent, now: float, out: list[SpanEvent]) -> None:
        # The hot path, one exchange at a time: the parent rules and _send's common case are
        # written out in place (a call costs as much as a few lines here).
        start = ev.boot_ns or ev.time_ns
        s = _Span(ev, new_span_id(), start, start + ev.duration_ns, now)
        self.stats["spans"] += 1
        pid, fd = ev.pid, ev.fd
        conn_key = (pid, fd)
        s.local = local = self.conns.get(conn_key)
        exchanges = self.exchanges
        exchanges[(pid, fd, start)] = s
        if len(exchanges) > EXCHANGES_KEPT:
            exchanges.popitem(last=False)
        server = ev.direction == "server"
        if server:
            key = (pid, ev.tid)
            index = self.by_thread
        else:
            key = conn_key
            index = self.by_conn
        q = index.get(key)
        if q is None:
            q = self._new_queue(index, key)
        q.append(s)
        if self.waiting:  # is this span the parent some waiting span wants?
            self._adopt(("thread", pid, ev.tid) if server else ("conn", pid, fd), s)
        # Its parent, in the rules' order (the module's docstring).
        if ev.traceparent and self._traced(s):
            pass
        elif server:
            client = self.connectors.get((local[2], local[3], local[0], local[1])) \
                if local else None
            if client is None:
                s.trace_id = new_trace_id()
            else:
                self._wait_or_join(s, ("conn",) + client, self.by_conn.get(client),
                                   "connection", now)
        elif pid in self.servers:
            self._wait_or_join(s, ("thread", pid, ev.tid), self.by_thread.get((pid, ev.tid)),
                               "thread", now)
        else:
            s.trace_id = new_trace_id()
        if not s.trace_id:
            self._waits.append(s)
        elif s.children or s.sent:
            self._send(s, out)
        else:  # _send's common case: nothing waited for it
            s.sent = True
            if self.pending:
                self.pending.pop(id(s), None)
            self.stats[s.how or "roots"] += 1
            out.append(self._make(s))
        if self._ready or len(self.pending) > self.max_pending:
            self._trim(out)

    @staticmethod
    def _traced(s: _Span) -> bool:
        """Rule 1: the request's traceparent, when valid, gives the span its trace (and, on the
        server side, its parent); whether it did."""
        ev = s.ev
        parent = parse_traceparent(ev.traceparent)
        if parent is None:
            return False
        s.trace_id, s.how, s.tracestate = parent.trace_id, "traceparent", ev.tracestate
        if ev.direction == "server":
            s.parent = parent.span_id
        else:  # the header names this very exchange: the caller made its id for it
            s.span_id = parent.span_id
        return True

    def _wait_or_join(self, s: _Span, want: tuple, candidates, how: str, now: float) -> None:
        if candidates:
            start, end = s.start, s.end
            for p in reversed(candidates):
                if p.start <= start and end <= p.end and p is not s:  # p.holds(s)
                    self._link(p, s, how)
                    return
        s.want = want
        s.how = how
        s.deadline = now + self.hold
        self.waiting.setdefault(want, []).append(s)
        self.pending[id(s)] = s

    def _link(self, parent: _Span, child: _Span, how: str) -> None:
        child.parent = parent.span_id
        child.how = how
        if parent.trace_id:
            child.trace_id = parent.trace_id
        else:
            if parent.children is None:
                parent.children = [child]
            else:
                parent.children.append(child)
            self.pending[id(child)] = child

    def _adopt(self, want: tuple, parent: _Span) -> None:
        waiters = self.waiting.get(want)
        if not waiters:
            return
        keep = []
        for child in waiters:
            if child.want == want and not child.trace_id and parent.holds(child):
                child.want = None
                self._link(parent, child, child.how)
                if child.trace_id:
                    self._ready.append(child)
            elif child.want == want:
                keep.append(child)
        if keep:
            self.waiting[want] = keep
        else:
            del self.waiting[want]

    @staticmethod
    def _new_queue(index: dict, key: tuple) -> deque[_Span]:
        """The recent spans of a new thread or connection (the oldest keys go past 65,536)."""
        q = index[key] = deque(maxlen=MAX_PER_KEY)
        if len(index) > 65536:
            for k in list(index)[:1024]:
                del index[k]
        return q

    # --- output --------------------------------------------------------------------------------

    def _send(self, s: _Span, out: list[SpanEvent]) -> None:
        """Send a span whose trace id is known, then every span that waited for it."""
        if not s.children and not s.sent:  # the common case: nothing waited for it
            s.sent = True
            if self.pending:
                self.pending.pop(id(s), None)
            self.stats[s.how or "roots"] += 1
            out.append(self._make(s))
            return
        stack = [s]
        while stack:
            x = stack.pop()
            if x.sent:
                continue
            x.sent = True
            self.pending.pop(id(x), None)
            self.stats[x.how or "roots"] += 1
            out.append(self._make(x))
            if x.children:
                for c in x.children:
                    if not c.sent:  # one given up (_trim) went out as a root, with its own trace
                        c.trace_id = x.trace_id
                        stack.append(c)
                x.children = None

    def _trim(self, out: list[SpanEvent]) -> None:
        ready, self._ready = self._ready, []
        for s in ready:
            self._send(s, out)
        while len(self.pending) > self.max_pending:
            _, s = next(iter(self.pending.items()))
            self._give_up(s, out)

    def expire(self, now: float) -> list[SpanEvent]:
        """Spans whose wait for a parent is over go out as roots."""
        out: list[SpanEvent] = []
        for s in list(self.pending.values()):
            if s.deadline > now:
                break
            if not s.sent and s.want is not None:
                self._give_up(s, out)
        self._trim(out)
        return out

    def time_left(self, now: float) -> float | None:
        for s in self.pending.values():
            if s.want is not None:
                return max(0.0, s.deadline - now)
        return None

    def _give_up(self, s: _Span, out: list[SpanEvent]) -> None:
        if s.want is not None:
            waiters = self.waiting.get(s.want)
            if waiters and s in waiters:
                waiters.remove(s)
                if not waiters:
                    del self.waiting[s.want]
            s.want = None
        if not s.trace_id:
            self.stats["expired"] += 1
            s.trace_id = new_trace_id()
            s.parent = ""
            s.how = ""
        self._send(s, out)

    def _event(self, s: _Span) -> SpanEvent:
        ev = s.ev
        server = ev.direction == "server"
        status = ev.status
        error = status >= 500 or (not server and status >= 400)
        path = ev.path
        if "?" in path:
            path, _, query = path.partition("?")
            attrs: dict[str, str | int] = {"http.request.method": ev.method, "url.path": path,
                                           "url.query": query}
        else:
            attrs = {"http.request.method": ev.method, "url.path": path}
        scheme = "https" if ev.tls else "http"
        attrs["url.scheme"] = scheme
        if status:
            attrs["http.response.status_code"] = status
        if error:
            attrs["error.type"] = str(status)
        version = _PROTOCOL_VERSIONS.get(ev.version)
        attrs["network.protocol.version"] = version if version is not None \
            else ev.version.partition("/")[2] or ev.version
        peer, port = ev.peer_addr, ev.peer_port
        if server:
            local = s.local
            if peer:
                if local:
                    attrs.update({"network.peer.address": peer, "network.peer.port": port,
                                  "server.address": local[0], "server.port": local[1],
                                  "client.address": peer, "client.port": port})
                else:
                    attrs.update({"network.peer.address": peer, "network.peer.port": port,
                                  "client.address": peer, "client.port": port})
            elif local:
                attrs["server.address"] = local[0]
                attrs["server.port"] = local[1]
        elif peer:
            attrs.update({"network.peer.address": peer, "network.peer.port": port,
                          "server.address": peer, "server.port": port,
                          "url.full": f"{scheme}://{peer}:{port}{ev.path}"})
        attrs["thread.id"] = ev.tid
        if ev.headers_cut and not ev.traceparent:
            attrs["log_shuttle.headers_cut"] = 1
        if ev.weight > 1:
            attrs["log_shuttle.sample_weight"] = ev.weight  # the probe kept 1 exchange in N
        start = ev.time_ns
        return SpanEvent(start, start + ev.duration_ns, s.trace_id, s.span_id, s.parent,
                         ev.direction, ev.method, error, attrs, self._resource(ev)[0],
                         s.tracestate, s.how)

    def _packed(self, s: _Span) -> msgspec.Raw | SpanEvent:
        """``_event``'s SpanEvent as its msgpack bytes, made in C with no object per span (the
        SpanEvent itself when a value is not of the type the C expects)."""
        ev = s.ev
        data = pack_span(_astuple(ev), _PACKED_FIELDS, s.trace_id, s.span_id, s.parent,
                         s.tracestate, s.how, s.local, self._resource(ev)[1], _PACKED_HEAD,
                         _PACKED_KEYS)
        return msgspec.Raw(data) if data is not None else self._event(s)

    def _resource(self, ev: HttpEvent) -> tuple[dict[str, str | int], bytes]:
        """The resource of an exchange's process, and its msgpack (made once per process)."""
        proc = ev.process
        key = (ev.pid, proc.start_ns if proc is not None else 0, ev.comm)
        entry = self.resource_cache.get(key)
        if entry is None:
            if len(self.resource_cache) > 65536:
                self.resource_cache.clear()
            res = {"service.name": service_name(ev.comm, proc, self.overrides),
                   "process.pid": ev.pid, "process.executable.name": ev.comm}
            if proc is not None:
                if proc.exe:
                    res["process.executable.path"] = proc.exe
                if proc.cmdline:
                    res["process.command_line"] = " ".join(proc.cmdline)
                if proc.container_id:
                    res["container.id"] = proc.container_id
                if proc.pod_uid:
                    res["k8s.pod.uid"] = proc.pod_uid
            entry = self.resource_cache[key] = (res, _encode(res))
        return entry

    def span_of(self, pid: int, fd: int, boot_ns: int) -> _Span | None:
        """The span of an exchange (its request's first bytes at ``boot_ns``), for the log join."""
        return self.exchanges.get((pid, fd, boot_ns))
