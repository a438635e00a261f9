"""HTTP/1.x from the first bytes of reads and writes: parse request and status lines, and pair
each request with its response per (pid, fd) connection.

The http probe pairs most exchanges in the kernel (one request waiting per connection); what
reaches ``HttpTracker`` are the reads and writes of connections that pipeline, which the probe
hands to user space raw.

A server reads a request and writes its response; a client writes a request and reads the
response. A connection may carry many requests in turn (keep-alive) or several before their
responses (pipelining): requests wait in order, and each final response (not 1xx) answers the
oldest. State is bounded: at most ``max_connections`` connections (least recently used go) and
``max_pending`` waiting requests per connection.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import NamedTuple

from inputs.ebpf.layouts import HTTP_OP_READ, HttpData

METHODS = frozenset({b"GET", b"POST", b"PUT", b"HEAD", b"DELETE", b"PATCH", b"OPTIONS"})


class RequestLine(NamedTuple):
    method: str
    path: str
    version: str


class StatusLine(NamedTuple):
    version: str
    status: int


def parse(data: bytes) -> RequestLine | StatusLine | None:
    """The request or status line at the start of ``data``; None when it is neither. A line cut
    by the payload size keeps what was copied (the path may be cut)."""
    line = data.split(b"\r\n", 1)[0].split(b"\n", 1)[0]
    if line.startswith(b"HTTP/1."):
        parts = line.split(b" ", 2)
        if len(parts) < 2 or len(parts[1]) != 3 or not parts[1].isdigit():
            return None
        return StatusLine(parts[0].decode("ascii", "replace"), int(parts[1]))
    parts = line.split(b" ")
    if len(parts) < 2 or parts[0] not in METHODS:
        return None
    version = parts[2] if len(parts) >= 3 and parts[2].startswith(b"HTTP/1.") else b"HTTP/1.1"
    return RequestLine(parts[0].decode("ascii"), parts[1].decode("utf-8", "replace"),
                       version.decode("ascii", "replace"))


class Request(NamedTuple):
    ts_ns: int
    """CLOCK_BOOTTIME of the request's first bytes."""
    tid: int
    comm: str
    direction: str
    line: RequestLine


class Exchange(NamedTuple):
    """A request and its response on one connection."""

    pid: int
    fd: int
    request: Request
    status: int
    response_ts_ns: int


@dataclass
class HttpStats:
    requests: int = 0
    exchanges: int = 0
    unparsed: int = 0
    unanswered_dropped: int = 0
    """Requests forgotten without a response (connection state evicted, too many pending)."""
    orphan_responses: int = 0


@dataclass
class _Conn:
    pending: deque[Request] = field(default_factory=deque)


class HttpTracker:
    """Pairs requests and responses per (pid, fd)."""

    def __init__(self, *, max_connections: int = 65536, max_pending: int = 64) -> None:
        self.max_connections = max_connections
        self.max_pending = max_pending
        self.conns: OrderedDict[tuple[int, int], _Conn] = OrderedDict()
        self.stats = HttpStats()

    def data(self, ev: HttpData) -> Exchange | None:
        """Take one read or write that starts like HTTP; return the exchange it completes."""
        parsed = parse(ev.data)
        if parsed is None:
            self.stats.unparsed += 1
            return None
        key = (ev.h.pid, ev.fd)
        is_read = ev.op == HTTP_OP_READ
        if isinstance(parsed, RequestLine):
            conn = self.conns.get(key)
            if conn is None:
                conn = self.conns[key] = _Conn()
                if len(self.conns) > self.max_connections:
                    _, old = self.conns.popitem(last=False)
                    self.stats.unanswered_dropped += len(old.pending)
            else:
                self.conns.move_to_end(key)
            direction = "server" if is_read else "client"
            if conn.pending and conn.pending[0].direction != direction:
                self.stats.unanswered_dropped += len(conn.pending)
                conn.pending.clear()  # the descriptor changed hands: start again
            if len(conn.pending) >= self.max_pending:
                conn.pending.popleft()
                self.stats.unanswered_dropped += 1
            conn.pending.append(Request(ev.h.ts_ns, ev.h.tid, ev.h.comm, direction, parsed))
            self.stats.requests += 1
            return None
        # A status line: a response, written by a server or read by a client.
        conn = self.conns.get(key)
        want = "client" if is_read else "server"
        if conn is None or not conn.pending or conn.pending[0].direction != want:
            self.stats.orphan_responses += 1
            return None
        if 100 <= parsed.status < 200:
            return None  # interim (100 Continue): the final response is still to come
        request = conn.pending.popleft()
        self.stats.exchanges += 1
        return Exchange(ev.h.pid, ev.fd, request, parsed.status, ev.h.ts_ns)

    def closed(self, pid: int, fd: int) -> None:
        """The descriptor was closed: what waits on it will get no response."""
        conn = self.conns.pop((pid, fd), None)
        if conn is not None:
            self.stats.unanswered_dropped += len(conn.pending)

