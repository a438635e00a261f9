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

from common.events import ConnEvent, Event, HttpEvent, ProcessEvent
from common.tracecontext import find_headers
from inputs.ebpf.http import METHODS, HttpTracker, RequestLine, StatusLine, parse
from inputs.ebpf.logwrite import EV_LOG_WRITE, LogWrite, LogWriteTranslator, decode_log_write
from inputs.ebpf.layouts import (
    EV_ACCEPT, EV_CLOSE, EV_CONNECT, EV_HTTP_EXCHANGE, HEADER, HTTP_EXCHANGE, HTTP_OP_READ,
    HTTP_STATUS_LEN, SIZES, Conn, DecodeError, Exec, ExecArgs, Exit, FdClose, Fork, HttpData,
    HttpExchange, Raw, decode,
)

MAX_EXECS_IN_PROGRESS = 4096
MAX_PEERS = 65536
CONN_KINDS = {EV_CONNECT: "connect", EV_ACCEPT: "accept", EV_CLOSE: "close"}
EXCHANGE = struct.Struct(HEADER.format + HTTP_EXCHANGE.format.lstrip("<"))
"""struct http_exchange_ev up to its data, in one piece (the hot path)."""
EXCHANGE_DATA = SIZES["http_exchange_ev"]
_TYPE = struct.Struct("<I")
_METHOD_TEXT = {m: m.decode("ascii") for m in METHODS}
_VERSION_TEXT = {b"HTTP/1.1": "HTTP/1.1", b"HTTP/1.0": "HTTP/1.0"}
_TS = itemgetter(4)


def boot_offset_ns() -> int:
    """Wall-clock time minus CLOCK_BOOTTIME, now."""
    return time.time_ns() - time.clock_gettime_ns(time.CLOCK_BOOTTIME)


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


class Translator:
    def __init__(self, *, http: HttpTracker | None = None,
                 logwrites: LogWriteTranslator | None = None) -> None:
        self.http = http or HttpTracker()
        self.logwrites = logwrites
        """Writes to log files (the logwrite probe), when it runs."""
        self.execs: OrderedDict[int, ExecArgs] = OrderedDict()
        """tid -> the argv of its execve() in progress."""
        self.peers: OrderedDict[tuple[int, int], tuple[str, int, int]] = OrderedDict()
        """(pid, fd) -> (peer address, peer port, local port), from connect and accept."""
        self.offset_ns = boot_offset_ns()
        self.stats = TranslateStats()
        self._comms: dict[bytes, str] = {}

    def resync_clock(self) -> None:
        self.offset_ns = boot_offset_ns()

    def feed_records(self, records: list[bytes]) -> tuple[list[Event], int, list[str]]:
        """Events for raw records as the ring buffers hold them (any order): the events, how
        many records there were, and why those that could not be decoded could not.

        The hot path: a kernel-paired exchange goes from its bytes to its HttpEvent in one
        step (no intermediate objects); every other record through ``layouts.decode``. Then all
        in time order (a connection's accept before its requests)."""
        items: list[tuple] = []
        errors: list[str] = []
        unpack = EXCHANGE.unpack_from
        need = EXCHANGE_DATA
        for data in records:
            if len(data) >= need and _TYPE.unpack_from(data)[0] == EV_HTTP_EXCHANGE:
                items.append(unpack(data) + (data,))
                continue
            try:
                if len(data) >= 4 and _TYPE.unpack_from(data)[0] == EV_LOG_WRITE:
                    raw = decode_log_write(data)
                else:
                    raw = decode(data)
            except DecodeError as exc:
                errors.append(str(exc))
                continue
            items.append((raw.h.type, 0, 0, 0, raw.h.ts_ns, raw))
        items.sort(key=_TS)
        out: list[Event] = []
        for item in items:
            ev = self._exchange_record(item) if item[0] == EV_HTTP_EXCHANGE else self.one(item[5])
            if ev is not None:
                out.append(ev)
        return out, len(items), errors

    def _exchange_record(self, item: tuple) -> HttpEvent | None:
        (_t, pid, tid, _uid, ts, comm, fd, op, resp_ts, _len, copied, resp_len, _pad, status,
         data) = item
        request = data[EXCHANGE_DATA:EXCHANGE_DATA + copied]
        line = request.split(b"\r\n", 1)[0]
        parts = line.split(b" ", 2)
        method = _METHOD_TEXT.get(parts[0])
        if method is None or len(parts) < 2:
            parsed = parse(line)  # a line cut short ("GET /pa"), or not a request at all
            if type(parsed) is not RequestLine:
                self.http.stats.unparsed += 1
                return None
            method, path, version = parsed
        else:
            path = parts[1].decode("utf-8", "replace")
            version = _VERSION_TEXT.get(parts[2]) if len(parts) == 3 else None
            if version is None:
                version = parse(line).version
        code = 0
        sl = status[:min(resp_len, HTTP_STATUS_LEN)]
        if len(sl) >= 12 and sl[8:9] == b" " and sl[9:12].isdigit() and sl[:7] == b"HTTP/1.":
            code = int(sl[9:12])
        name = self._comms.get(comm)
        if name is None:
            name = self._comms[comm] = comm.split(b"\0", 1)[0].decode("utf-8", "replace")
            if len(self._comms) > 4096:
                self._comms.clear()
        self.http.stats.requests += 1
        self.http.stats.exchanges += 1
        self.stats.http += 1
        peer = self.peers.get((pid, fd))
        tp, ts_, cut = find_headers(request)
        return HttpEvent(
            ts + self.offset_ns, pid, tid, name, fd, "server" if op == HTTP_OP_READ else "client",
            method, path, code, max(0, resp_ts - ts), peer[0] if peer else "",
            peer[1] if peer else 0, version, None, ts, tp, ts_, cut)

    def feed(self, raws: list[Raw]) -> list[Event]:
        """Events for these raw events, which must be in time order."""
        out: list[Event] = []
        for raw in raws:
            ev = self.one(raw)
            if ev is not None:
                out.append(ev)
        return out

    def one(self, raw: Raw) -> Event | None:
        if type(raw) is LogWrite:
            return self.logwrites.event(raw, self.offset_ns) if self.logwrites else None
        if type(raw) is HttpExchange:
            return self._exchange(raw)
        if isinstance(raw, HttpData):
            return self._http(raw)
        if isinstance(raw, FdClose):
            self.http.closed(raw.h.pid, raw.fd)
            self.peers.pop((raw.h.pid, raw.fd), None)
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
            self.peers[key] = (raw.daddr, raw.dport, raw.sport)
            self.peers.move_to_end(key)
            if len(self.peers) > MAX_PEERS:
                self.peers.popitem(last=False)
        elif kind == "close" and self.peers.get(key) == (raw.daddr, raw.dport, raw.sport):
            del self.peers[key]  # only if the descriptor was not reused for another connection
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
        peer = self.peers.get((h.pid, raw.fd))
        tp, tstate, cut = find_headers(raw.data)
        return HttpEvent(
            time_ns=h.ts_ns + self.offset_ns, pid=h.pid, tid=h.tid, comm=h.comm, fd=raw.fd,
            direction="server" if raw.op == HTTP_OP_READ else "client", method=line.method,
            path=line.path, status=status.status if type(status) is StatusLine else 0,
            duration_ns=max(0, raw.response_ts_ns - h.ts_ns),
            peer_addr=peer[0] if peer else "", peer_port=peer[1] if peer else 0,
            version=line.version)

    def _http(self, raw: HttpData) -> HttpEvent | None:
        ex = self.http.data(raw)
        if ex is None:
            return None
        req = ex.request
        peer = self.peers.get((ex.pid, ex.fd))
        self.stats.http += 1
        return HttpEvent(
            time_ns=req.ts_ns + self.offset_ns, pid=ex.pid, tid=req.tid, comm=req.comm,
            fd=ex.fd, direction=req.direction, method=req.line.method, path=req.line.path,
            status=ex.status, duration_ns=max(0, ex.response_ts_ns - req.ts_ns),
            peer_addr=peer[0] if peer else "", peer_port=peer[1] if peer else 0,
            version=req.line.version, boot_ns=req.ts_ns)
