"""RELP, the Reliable Event Logging Protocol (librelp; rsyslog's imrelp): syslog messages over
TCP, each answered by the receiver once it has taken it, so that a batch is OK only when every
message of it was confirmed and nothing is lost to a receiver that hangs up or restarts.

The protocol, as librelp speaks it (doc/relp.html in librelp's sources)::

    frame    = TXNR SP COMMAND SP DATALEN [SP DATA] LF
    client:  1 open 85 relp_version=0\\nrelp_software=log-shuttle\\ncommands=syslog
    server:  1 rsp 92 200 OK\\nrelp_version=0\\nrelp_software=librelp,...\\ncommands=syslog
    client:  2 syslog 57 <14>1 2026-12-02T17:00:00.000000Z host app - log - hello
    server:  2 rsp 6 200 OK
    client:  N close 0            server: N rsp 0, then 0 serverclose 0

TXNR runs from 1 to 999,999,999 and wraps to 1; a response carries the TXNR of the command it
answers. The client may have several commands outstanding (librelp's window is 128): this
client keeps at most ``window`` messages unanswered, topping the window up as answers come. A
message answered ``200`` is the receiver's; anything else (or a closed connection) leaves it and every
unanswered message for the next attempt: the runner retries the batch with backoff, and the
sink resends only the messages of it that were not confirmed (duplicates are possible only for
a message that the receiver took while its answer was lost with the connection).
"""

from __future__ import annotations

import logging
import select
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING

from common.events import Batch, Event
from common.net import format_address
from common.tls import describe, ssl_error
from outputs.base import Verdict
from outputs.failures import FailureReporter

if TYPE_CHECKING:
    import ssl

MAX_TXNR = 999_999_999
_QUICKACK = getattr(socket, "TCP_QUICKACK", None)  # Linux
OFFERS = b"relp_version=0\nrelp_software=log-shuttle\ncommands=syslog"


class RelpError(Exception):
    """The receiver broke the protocol, refused a command, or went away."""


class RelpSink:
    """Delivers each batch as RELP ``syslog`` commands; OK once every message was answered 200.

    ``messages`` renders a batch's events as unframed syslog messages
    (outputs.syslog.SyslogEncoder.messages)."""

    def __init__(self, *, name: str, host: str, port: int,
                 messages: Callable[[list[Event]], list[bytes]],
                 tls: ssl.SSLContext | None = None, server_name: str = "",
                 connect_timeout: float = 5.0, timeout: float = 10.0, window: int = 128,
                 log: logging.Logger | None = None) -> None:
        self.name = name
        self.host = host
        self.port = port
        self.messages = messages
        self.tls = tls
        self.server_name = server_name or host
        self.connect_timeout = connect_timeout
        self.timeout = timeout
        self.window = max(1, window)
        self.log = log or logging.getLogger("log_shuttle")
        self.failures = FailureReporter(who=f"output {name}", log=self.log)
        self.sock: socket.socket | None = None
        self._buf = b""
        self._txnr = 0
        self.connects = 0
        self.resent = 0
        """Messages sent again after a connection broke before they were answered."""
        self._batch: Batch | None = None
        self._pending: list[bytes] = []
        """The messages of the current batch not yet confirmed, in order."""
        self._tried = False

    # --- the sink -------------------------------------------------------------------------------

    def send(self, batch: Batch) -> Verdict:
        if self._batch is not batch:
            self._batch = batch
            self._pending = self.messages(batch.events)
            self._tried = False
        elif self._tried:
            self.resent += len(self._pending)
        self._tried = True
        try:
            if self.sock is None:
                self._open()
            self._deliver()
        except ssl_error() as exc:
            self._drop_connection()
            self.failures.failed("tls", f"cannot talk to {self._where()}: {describe(exc)}",
                                 level=logging.ERROR)
            return Verdict.RETRY
        except (OSError, RelpError) as exc:
            self._drop_connection()
            self.failures.failed(type(exc).__name__, f"RELP to {self._where()}: {_reason(exc)}")
            return Verdict.RETRY
        self.failures.ok()
        self._batch = None
        return Verdict.OK

    def close(self) -> None:
        if self.sock is not None:
            try:
                txnr = self._next_txnr()
                self.sock.settimeout(1.0)
                self.sock.sendall(b"%d close 0\n" % txnr)
                self._read_response(txnr)
            except (OSError, RelpError):
                pass
        self._drop_connection()

    # --- the protocol ---------------------------------------------------------------------------

    def _where(self) -> str:
        return format_address(self.host, self.port)

    def _next_txnr(self) -> int:
        self._txnr = self._txnr % MAX_TXNR + 1
        return self._txnr

    def _open(self) -> None:
        raw = socket.create_connection((self.host, self.port), timeout=self.connect_timeout)
        try:
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            sock = raw
            if self.tls is not None:
                sock = self.tls.wrap_socket(raw, server_hostname=self.server_name)
            self.sock = sock
            self._buf = b""
            self._txnr = 0
            sock.settimeout(self.timeout)
            txnr = self._next_txnr()
            sock.sendall(b"%d open %d %s\n" % (txnr, len(OFFERS), OFFERS))
            data = self._read_response(txnr)
            if not data.startswith(b"200"):
                raise RelpError(f"the receiver refused the session: {data[:80]!r}")
            self.connects += 1
        except BaseException:
            self._drop_connection()
            raw.close()
            raise

    def _deliver(self) -> None:
        """Send the pending messages with at most ``window`` unanswered at a time (topped up
        when half of them were answered), reading the answers in order; the confirmed ones
        leave ``_pending`` even when the connection then breaks."""
        sock = self.sock
        assert sock is not None
        if self._peer_closed(sock):
            raise RelpError("the receiver closed the connection")
        pending = self._pending
        done = sent = 0
        expected = self._txnr % MAX_TXNR + 1
        try:
            while done < len(pending):
                if sent < len(pending) and sent - done <= self.window // 2:
                    chunk = pending[sent:done + self.window]
                    sock.sendall(b"".join([b"%d syslog %d %s\n" % (self._next_txnr(), len(m), m)
                                           for m in chunk]))
                    sent += len(chunk)
                data = self._read_response(expected)
                if not data.startswith(b"200"):
                    raise RelpError(f"message refused: {data[:80]!r}")
                done += 1
                expected = expected % MAX_TXNR + 1
        finally:
            del pending[:done]

    def _read_response(self, txnr: int) -> bytes:
        """The data of the ``rsp`` to ``txnr`` (a ``serverclose`` or a response out of order
        is an error: the connection is then dropped and the unanswered messages resent)."""
        while True:
            frame = self._read_frame()
            number, command, data = frame
            if command == b"rsp" and number == txnr:
                return data
            if command == b"serverclose":
                raise RelpError("the receiver closed the session (serverclose)")
            raise RelpError(f"unexpected frame {number} {command!r} (waiting for {txnr})")

    def _read_frame(self) -> tuple[int, bytes, bytes]:
        while True:
            frame = _parse(self._buf)
            if frame is not None:
                (number, command, data), used = frame
                self._buf = self._buf[used:]
                return number, command, data
            assert self.sock is not None
            if _QUICKACK is not None:
                # Acknowledge the answers at once: librelp writes each one by itself, and with
                # Nagle on its side and delayed ACKs on ours a window would wait ~20 ms.
                try:
                    self.sock.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)
                except OSError:
                    pass
            chunk = self.sock.recv(65536)
            if not chunk:
                raise RelpError("the receiver closed the connection")
            self._buf += chunk

    @staticmethod
    def _peer_closed(sock: socket.socket) -> bool:
        """A FIN or reset while no answer is due: the session is over."""
        if not hasattr(select, "poll"):
            return False  # Windows: a dead connection shows when the answers do not come
        rdhup = getattr(select, "POLLRDHUP", 0)
        poller = select.poll()
        poller.register(sock, select.POLLIN | rdhup)
        events = poller.poll(0)
        return bool(events and events[0][1] & (rdhup | select.POLLHUP | select.POLLERR))

    def _drop_connection(self) -> None:
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
            self.sock = None
        self._buf = b""


def _parse(buf: bytes) -> tuple[tuple[int, bytes, bytes], int] | None:
    """One frame from the front of ``buf``: ((txnr, command, data), bytes used), or None when
    it is not complete yet. Raises RelpError on a malformed frame."""
    head_end = -1
    spaces = 0
    for i, c in enumerate(buf[:64]):
        if c == 0x20:
            spaces += 1
            if spaces == 3:
                head_end = i
                break
        elif c == 0x0A and spaces == 2:  # "TXNR CMD LEN\n": no data
            head_end = i
            break
    if head_end < 0:
        if len(buf) >= 64:
            raise RelpError(f"not a RELP frame: {buf[:40]!r}")
        return None
    parts = buf[:head_end].split(b" ")
    try:
        number, command, length = int(parts[0]), parts[1], int(parts[2])
    except (ValueError, IndexError) as exc:
        raise RelpError(f"not a RELP frame: {buf[:40]!r}") from exc
    if length == 0:
        end = head_end  # the LF right after the length (or after one SP)
        if buf[end:end + 1] == b" ":
            end += 1
        if len(buf) <= end:
            return None
        if buf[end:end + 1] != b"\n":
            raise RelpError(f"bad RELP trailer: {buf[:40]!r}")
        return (number, command, b""), end + 1
    start = head_end + 1
    if len(buf) < start + length + 1:
        return None
    if buf[start + length:start + length + 1] != b"\n":
        raise RelpError(f"bad RELP trailer after {length} bytes: {buf[:40]!r}")
    return (number, command, buf[start:start + length]), start + length + 1


def _reason(exc: BaseException) -> str:
    if isinstance(exc, (TimeoutError, socket.timeout)):
        return "timed out"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return str(exc) or type(exc).__name__
