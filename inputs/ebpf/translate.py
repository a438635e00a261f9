"""From the programs' raw events to the agent's Events (common.events), keeping the little state
that takes: the argv of an exec in progress, the peer of each (pid, fd) connection, and the HTTP
requests waiting for their responses (inputs.ebpf.http).

Raw events carry CLOCK_BOOTTIME; Events carry wall-clock time, converted with an offset that
``Translator.resync_clock`` measures (once per round of the input's loop).
"""

from __future__ import annotations

import struct
import time
from collections import OrderedDict
from dataclasses import dataclass
from operator import itemgetter

import msgspec

from common.cpu import relax
from common.events import ConnEvent, Event, HttpEvent, ProcessEvent
from common.fastpath import http_exchange
from common.tracecontext import find_headers
from inputs.ebpf.http import METHODS, HttpTracker, RequestLine, StatusLine, parse
from inputs.ebpf.logwrite import EV_LOG_WRITE, LogWrite, LogWriteTranslator, decode_log_write
from inputs.ebpf.layouts import (
    EV_ACCEPT, EV_CLOSE, EV_CONNECT, EV_HTTP_EXCHANGE, HEADER, HTTP_EXCHANGE, HTTP_OP_READ,
    HTTP_FLAG_TLS, HTTP_STATUS_LEN, HTTP_WEIGHT_SHIFT, SIZES, Conn, DecodeError, Exec, ExecArgs, Exit, FdClose,
    Fork, HttpData, HttpExchange, Raw, decode,
)

MAX_EXECS_IN_PROGRESS = 4096
MAX_PEERS = 65536
MAX_CLOSED = 4096
"""Connections closed kept for their late exchanges (a few tenths of a second of a busy host's)."""
CONN_KINDS = {EV_CONNECT: "connect", EV_ACCEPT: "accept", EV_CLOSE: "close"}
EXCHANGE = struct.Struct(HEADER.format + HTTP_EXCHANGE.format.lstrip("<"))
"""struct http_exchange_ev up to its data, in one piece (the hot path)."""
EXCHANGE_DATA = SIZES["http_exchange_ev"]
_STATUS_CODES: dict[bytes, int] = {}
"""A status line's first 12 bytes ("HTTP/1.1 200") -> its code (0: not a status line)."""
_METHOD_TEXT = {m: m.decode("ascii") for m in METHODS}
_VERSION_TEXT = {b"HTTP/1.1": "HTTP/1.1", b"HTTP/1.0": "HTTP/1.0"}
_TS = itemgetter(0)
_U64_AT = struct.Struct("<Q").unpack_from
_TS_AT = HEADER.size - 16 - 8
"""Where a record's boot time is (struct ev_header's ts_ns, before its comm)."""
_FAST_KIT = (HttpEvent, EXCHANGE_DATA, HTTP_OP_READ, HTTP_WEIGHT_SHIFT, tuple(_METHOD_TEXT.items()),
             tuple(_VERSION_TEXT.items()), "server", "client", HTTP_FLAG_TLS, None)
"""What common/speedups/ebpf.c http_exchange uses (its X_* order): HttpEvents."""
_PACKED_KIT = _FAST_KIT[:-1] + (msgspec.Raw,)
"""The same, for the HttpEvents' msgpack bytes (``Translator(packed=True)``)."""


def _status_code(head: bytes) -> int:
    """The code of a status line's first 12 bytes, 0 when they are not one."""
    if head[:7] == b"HTTP/1." and head[8:9] == b" " and head[9:12].isdigit():
        return int(head[9:12])
    return 0


def _boottime_ns() -> int:
    return time.clock_gettime_ns(time.CLOCK_BOOTTIME)


def boot_offset_ns(wall=time.time_ns, boot=_boottime_ns, tries: int = 5) -> int:
    """Wall-clock time minus CLOCK_BOOTTIME, now.

    Each try reads the wall clock between two reads of the boot clock and keeps the try whose
    two boot readings are closest: a process preempted between two plain reads would take the
    time it was off the CPU (milliseconds on a busy host) into the offset, and events converted
    before and after such a round would come out of order. Stops at the first try within 2 µs."""
    best_gap = best = -1
    for _ in range(tries):
        b1 = boot()
        w = wall()
        gap = boot() - b1
        if best_gap < 0 or gap < best_gap:
            best_gap, best = gap, w - (b1 + gap // 2)
            if gap <= 2_000:
                break
    return best


def read_ppid(pid: int) -> int:
    """The parent of a running process from /proc (for processes whose fork was not seen)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        return int(stat[stat.rindex(b")") + 2:].split()[1])
    except (OSError, ValueError, IndexError):
        return 0


@dataclass
class TranslateStats:
    processes: int = 0
    connections: int = 0
    http: int = 0
    user_paired: int = 0
    """Exchanges of pipelining connections, paired here (the probe does not sample those)."""


class Translator:
    def __init__(self, *, http: HttpTracker | None = None,
                 logwrites: LogWriteTranslator | None = None, packed: bool = False) -> None:
        """packed: the kernel-paired exchanges that the compiled path makes come as their
        msgpack bytes (``msgspec.Raw``, what msgspec makes of the HttpEvent: the input encodes
        them as they are), not as HttpEvents; the others as events either way."""
        self.http = http or HttpTracker()
        self.kit = _PACKED_KIT if packed else _FAST_KIT
        self.logwrites = logwrites
        """Writes to log files (the logwrite probe), when it runs."""
        self.execs: OrderedDict[int, ExecArgs] = OrderedDict()
        """tid -> the argv of its execve() in progress."""
        self.peers: OrderedDict[tuple[int, int], tuple[str, int, int, int]] = OrderedDict()
        """(pid, fd) -> (peer address, peer port, local port, opened), of the open connections,
        from connect and accept."""
        self.closed: OrderedDict[tuple[int, int], tuple[str, int, int, int, int]] = OrderedDict()
        """The last MAX_CLOSED connections closed, (pid, fd) -> (..., opened, closed): the ring
        buffers are read one after another, so a connection's last exchanges (the http probe's
        ring) may come a round after its close (the tcp probe's, or the close of its
        descriptor), when the input was held up between the two reads, or after the accept of
        the next connection on the descriptor. They still get its peer (``peer_at``)."""
        self.offset_ns = boot_offset_ns()
        self.stats = TranslateStats()
        self._comms: dict[bytes, str] = {}
        self._execs_seen: list[int] = []

    def take_execs(self) -> list[int]:
        """The pids that exec()ed since the last call."""
        out, self._execs_seen = self._execs_seen, []
        return out

    def resync_clock(self) -> None:
        self.offset_ns = boot_offset_ns()

    def feed_records(self, records: list[bytes]
                     ) -> tuple[list[Event | msgspec.Raw], int, list[str]]:
        """Events for raw records as the ring buffers hold them (any order): the events (with
        ``packed``, those the compiled path makes as their msgpack bytes), how many records
        there were, and why those that could not be decoded could not.

        The hot path: a kernel-paired exchange goes from its bytes to its event in one loop (in
        C for the common case, from the record's bytes in place; else one unpack, the request
        line found in place, status lines and process names from small caches, counters added
        once per call); every other record through ``layouts.decode``. Then all in time order
        (a connection's accept before its requests)."""
        items: list[tuple] = []
        """(boot time, the record's bytes: a kernel-paired exchange; or its Raw)"""
        errors: list[str] = []
        unpack = EXCHANGE.unpack_from
        need = EXCHANGE_DATA
        append = items.append
        u64 = _U64_AT
        for data in records:
            if data[0] == EV_HTTP_EXCHANGE and len(data) >= need and not data[1] | data[2] | data[3]:
                append((u64(data, _TS_AT)[0], data))
                continue
            try:
                if data[0] == EV_LOG_WRITE and not data[1] | data[2] | data[3]:
                    raw = decode_log_write(data)
                else:
                    raw = decode(data)
            except DecodeError as exc:
                errors.append(str(exc))
                continue
            append((raw.h.ts_ns, raw))
        items.sort(key=_TS)
        out: list[Event] = []
        emit = out.append
        offset = self.offset_ns
        peers_get = self.peers.get
        comms = self._comms
        codes = _STATUS_CODES
        methods = _METHOD_TEXT
        versions = _VERSION_TEXT
        fast = http_exchange
        kit = self.kit
        exchanges = unparsed = 0
        for n, (_, data) in enumerate(items, 1):
            if not n & 63:
                relax()  # a round's records can be milliseconds of work: the CPU to whoever waits
            if type(data) is not bytes:
                ev = self.one(data)
                if ev is not None:
                    emit(ev)
                continue
            if fast is not None:  # the common case in C: the same event as below, or None
                ev = fast(data, offset, self.peers, comms, kit)
                if ev is not None:
                    exchanges += 1
                    emit(ev)
                    continue
            (_t, pid, tid, _uid, ts, comm, fd, op, resp_ts, _len, copied, resp_len, flags,
             status) = unpack(data)
            stop = need + copied
            eol = data.find(b"\r\n", need, stop)
            line = data[need:eol if eol >= 0 else stop]
            parts = line.split(b" ", 2)
            method = methods.get(parts[0])
            if method is None or len(parts) != 3 or parts[2] not in versions:
                parsed = parse(line)  # a line cut short ("GET /pa"), or not a request at all
                if type(parsed) is not RequestLine:
                    unparsed += 1
                    continue
                method, path, version = parsed
            else:
                path = parts[1].decode("utf-8", "replace")
                version = versions[parts[2]]
            code = 0
            if resp_len >= 12:
                key = status[:12]
                code = codes.get(key, -1)
                if code < 0:
                    code = _status_code(key)
                    if len(codes) < 4096:
                        codes[key] = code
            name = comms.get(comm)
            if name is None:
                name = comms[comm] = comm.split(b"\0", 1)[0].decode("utf-8", "replace")
                if len(comms) > 4096:
                    comms.clear()
            peer = peers_get((pid, fd))
            if peer is None or ts < peer[3]:
                peer = self.closed_peer(pid, fd, ts, peer)
            exchanges += 1
            tp, tstate, cut = find_headers(data[need:stop])
            emit(HttpEvent(
                ts + offset, pid, tid, name, fd, "server" if op == HTTP_OP_READ else "client",
                method, path, code, resp_ts - ts if resp_ts > ts else 0,
                peer[0] if peer else "", peer[1] if peer else 0, version, None, ts, tp, tstate,
                cut, 0, flags >> HTTP_WEIGHT_SHIFT or 1, bool(flags & HTTP_FLAG_TLS)))
        stats = self.http.stats
        stats.requests += exchanges
        stats.exchanges += exchanges
        stats.unparsed += unparsed
        self.stats.http += exchanges
        return out, len(items), errors

    def feed(self, raws: list[Raw]) -> list[Event]:
        """Events for these raw events, which must be in time order."""
        out: list[Event] = []
        for raw in raws:
            ev = self.one(raw)
            if ev is not None:
                out.append(ev)
        return out

    def peer_at(self, pid: int, fd: int, ts: int) -> tuple | None:
        """The peer of the connection on (pid, fd) at ``ts`` (boot ns), if known."""
        peer = self.peers.get((pid, fd))
        if peer is None or ts < peer[3]:
            return self.closed_peer(pid, fd, ts, peer)
        return peer

    def closed_peer(self, pid: int, fd: int, ts: int, peer: tuple | None) -> tuple | None:
        """For a request at ``ts`` that the open connection on (pid, fd), ``peer``, if any, came
        after: the connection closed on it since ``ts``, if there is one; else ``peer``."""
        old = self.closed.get((pid, fd))
        if old is not None and old[3] <= ts <= old[4]:
            return old
        return peer

    def _close(self, key: tuple[int, int], peer: tuple, ts: int) -> None:
        del self.peers[key]
        self.closed[key] = peer + (ts,)
        self.closed.move_to_end(key)
        if len(self.closed) > MAX_CLOSED:
            self.closed.popitem(last=False)

    def one(self, raw: Raw) -> Event | None:
        if type(raw) is LogWrite:
            return self.logwrites.event(raw, self.offset_ns) if self.logwrites else None
        if type(raw) is HttpExchange:
            return self._exchange(raw)
        if isinstance(raw, HttpData):
            return self._http(raw)
        if isinstance(raw, FdClose):
            self.http.closed(raw.h.pid, raw.fd)
            key = (raw.h.pid, raw.fd)
            peer = self.peers.get(key)
            # The close ends the connection made before it. Ring buffers are read one after
            # another: the accept of a new connection on the reused descriptor, later than the
            # close, may have been taken in the round before it (the tcp probe's ring is read
            # last): that one stays open.
            if peer is not None and peer[3] <= raw.h.ts_ns:
                self._close(key, peer, raw.h.ts_ns)
            return None
        if isinstance(raw, Conn):
            return self._conn(raw)
        if isinstance(raw, ExecArgs):
            self.execs[raw.h.tid] = raw
            self.execs.move_to_end(raw.h.tid)
            if len(self.execs) > MAX_EXECS_IN_PROGRESS:
                self.execs.popitem(last=False)
            return None
        self.stats.processes += 1
        h = raw.h
        if isinstance(raw, Exec):
            args = self.execs.pop(raw.old_pid, None)
            if len(self._execs_seen) < 65536:
                self._execs_seen.append(h.pid)
            return ProcessEvent(
                kind="exec", time_ns=h.ts_ns + self.offset_ns, pid=h.pid,
                ppid=raw.ppid or read_ppid(h.pid), tid=h.tid, uid=h.uid, comm=h.comm,
                filename=raw.filename, argv=args.argv if args else [], start_ns=h.ts_ns,
                source="ebpf")
        if isinstance(raw, Fork):
            return ProcessEvent(
                kind="fork", time_ns=h.ts_ns + self.offset_ns, pid=raw.child_pid, ppid=h.pid,
                tid=raw.child_pid, uid=h.uid, comm=h.comm, start_ns=h.ts_ns, source="ebpf")
        if isinstance(raw, Exit):
            return ProcessEvent(
                kind="exit", time_ns=h.ts_ns + self.offset_ns, pid=h.pid, ppid=raw.ppid,
                tid=h.tid, uid=h.uid, comm=h.comm, exit_code=raw.code, source="ebpf")
        self.stats.processes -= 1
        return None

    def _conn(self, raw: Conn) -> ConnEvent:
        h = raw.h
        kind = CONN_KINDS[h.type]
        key = (h.pid, raw.fd)
        if kind != "close" and raw.fd >= 0:
            old = self.peers.get(key)
            if old is not None:  # its close is still to be read (another ring, a later round)
                self._close(key, old, h.ts_ns)
            self.peers[key] = (raw.daddr, raw.dport, raw.sport, h.ts_ns)
            self.peers.move_to_end(key)
            if len(self.peers) > MAX_PEERS:
                self.peers.popitem(last=False)
        elif kind == "close":
            peer = self.peers.get(key)
            # Only if the descriptor was not reused for another connection.
            if peer is not None and peer[:3] == (raw.daddr, raw.dport, raw.sport):
                self._close(key, peer, h.ts_ns)
        self.stats.connections += 1
        return ConnEvent(
            kind=kind, time_ns=h.ts_ns + self.offset_ns, pid=h.pid, tid=h.tid, comm=h.comm,
            family=raw.family, saddr=raw.saddr, sport=raw.sport, daddr=raw.daddr,
            dport=raw.dport, duration_ns=raw.duration_ns, fd=raw.fd)

    def _exchange(self, raw: HttpExchange) -> HttpEvent | None:
        """A request and its response that the kernel paired."""
        line = parse(raw.data)
        if type(line) is not RequestLine:
            self.http.stats.unparsed += 1
            return None
        status = parse(raw.status_line)
        self.http.stats.requests += 1
        self.http.stats.exchanges += 1
        self.stats.http += 1
        h = raw.h
        peer = self.peer_at(h.pid, raw.fd, h.ts_ns)
        tp, tstate, cut = find_headers(raw.data)
        return HttpEvent(
            time_ns=h.ts_ns + self.offset_ns, pid=h.pid, tid=h.tid, comm=h.comm, fd=raw.fd,
            direction="server" if raw.op == HTTP_OP_READ else "client", method=line.method,
            path=line.path, status=status.status if type(status) is StatusLine else 0,
            duration_ns=max(0, raw.response_ts_ns - h.ts_ns),
            peer_addr=peer[0] if peer else "", peer_port=peer[1] if peer else 0,
            version=line.version, boot_ns=h.ts_ns, traceparent=tp, tracestate=tstate,
            headers_cut=cut, weight=raw.weight, tls=raw.tls)

    def _http(self, raw: HttpData) -> HttpEvent | None:
        ex = self.http.data(raw)
        if ex is None:
            return None
        req = ex.request
        peer = self.peer_at(ex.pid, ex.fd, req.ts_ns)
        self.stats.http += 1
        self.stats.user_paired += 1
        return HttpEvent(
            time_ns=req.ts_ns + self.offset_ns, pid=ex.pid, tid=req.tid, comm=req.comm,
            fd=ex.fd, direction=req.direction, method=req.line.method, path=req.line.path,
            status=ex.status, duration_ns=max(0, ex.response_ts_ns - req.ts_ns),
            peer_addr=peer[0] if peer else "", peer_port=peer[1] if peer else 0,
            version=req.line.version, boot_ns=req.ts_ns)
