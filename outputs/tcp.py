"""The TCP output: batches as NDJSON or RFC 5424 syslog (octet-counted or newline-framed), over
plain TCP or TLS, one write per batch.

Delivery is best-effort, as TCP gives it: a batch is OK once the kernel took all of it. What the
receiver did with it is unknown, so the sink keeps what it wrote on the current connection, up to
``replay_bytes`` (the replay window: at least what the two sockets' buffers hold). Before each
write it polls the socket: a reset (the receiver closed with unread bytes: they are lost with
it), or a FIN while bytes are still unacknowledged (SIOCOUTQ), means the connection broke with
data in flight; the sink reconnects and first writes the window again. So a receiver that keeps
hanging up costs duplicates (what it had read of the window), not lines; what can still be lost
is bounded by one connection's window: the lines pushed out of it before the break, counted as
``lines_maybe_lost`` and logged. A clean FIN with everything acknowledged (the receiver read all
and closed: an idle timeout) costs a reconnect and nothing else. Any failure (refused, reset,
timeout, TLS, a rejected token) closes the connection and returns RETRY: the runner holds the
batch and tries again with exponential backoff and jitter, its queue fills, and backpressure
reaches the inputs. For nothing lost, use an acknowledged mode (RELP: outputs/relp.py).

With a token (``auth_token_file`` or LOG_SHUTTLE_AUTH_TOKEN; only over TLS) the sink opens each
connection with ``AUTH <token>\\n`` and waits for the server's ``OK\\n`` (log-shuttle server's
convention; syslog receivers know nothing of it, so give no token for them).
"""

from __future__ import annotations

import logging
import select
import socket
import struct
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING
from dataclasses import dataclass


from common.component import Context
from common.events import Batch, Event, event_lines
from common.identity import Identity
from common.net import format_address, parse_address, read_token
from common.tls import TlsFiles, client_context, describe, is_tls_socket, ssl_error, want_io
from outputs.base import Verdict
from outputs.failures import FailureReporter
from outputs.ndjson import Renderer
from outputs.relp import RelpSink
from outputs.runner import Backoff, OutputRunner
from outputs.syslog import SyslogEncoder
from outputs.tcp_config import TcpOutputConfig

if TYPE_CHECKING:
    import ssl

AUTH_OK = b"OK\n"
_RDHUP = getattr(select, "POLLRDHUP", 0)  # Linux: the peer's FIN, even with data unread




class AuthRejected(Exception):
    """The server answered the token with something else than OK."""


def build(ctx: Context[TcpOutputConfig]) -> OutputRunner:
    cfg = ctx.config
    ctx.one_consumer()
    host, port = parse_address(cfg.address, who=ctx.name)
    files = TlsFiles(ca=cfg.tls_ca, cert=cfg.tls_cert, key=cfg.tls_key,
                     server_name=cfg.tls_server_name)
    tls = client_context(files, who=ctx.name) if cfg.use_tls() else None
    if cfg.framing == "relp":
        syslog = SyslogEncoder(host=ctx.host, facility=cfg.facility, app_name=cfg.app_name,
                               identity=ctx.identity)
        sink: TcpSink | RelpSink = RelpSink(
            name=f"relp {format_address(host, port)}", host=host, port=port,
            messages=syslog.messages, tls=tls, server_name=cfg.tls_server_name or host,
            connect_timeout=cfg.connect_timeout, timeout=cfg.write_timeout, log=ctx.log)
        return OutputRunner(ctx, sink, backoff=Backoff(maximum=cfg.backoff_max))
    token = read_token(cfg.auth_token_file, who=ctx.name)
    if cfg.framing == "ndjson-acked":
        from outputs.acked import AckedSink  # it builds on TcpSink, below

        renderer = Renderer(fmt="ndjson", host=ctx.host, identity=ctx.identity)
        sink = AckedSink(
            name=f"tcp {format_address(host, port)} (acknowledged)", host=host, port=port,
            encode=renderer.render, takes_raw=renderer.takes_raw, tls=tls,
            server_name=cfg.tls_server_name or host, token=token,
            connect_timeout=cfg.connect_timeout, write_timeout=cfg.write_timeout, log=ctx.log)
        return OutputRunner(ctx, sink, backoff=Backoff(maximum=cfg.backoff_max))
    if cfg.framing == "ndjson":  # its renderer takes events as their bytes (outputs/runner.py)
        renderer = Renderer(fmt="ndjson", host=ctx.host, identity=ctx.identity)
        encode, takes_raw = renderer.render, renderer.takes_raw
    else:
        encode, takes_raw = encoder(framing=cfg.framing, host=ctx.host, facility=cfg.facility,
                                    app_name=cfg.app_name, identity=ctx.identity), False
    sink = TcpSink(
        name=f"tcp {format_address(host, port)}", host=host, port=port, encode=encode,
        takes_raw=takes_raw,
        tls=tls, server_name=cfg.tls_server_name or host, token=token,
        connect_timeout=cfg.connect_timeout, write_timeout=cfg.write_timeout,
        replay_bytes=cfg.replay_bytes, log=ctx.log)
    return OutputRunner(ctx, sink, backoff=Backoff(maximum=cfg.backoff_max))


def encoder(*, framing: str, host: str, facility: str = "user", app_name: str = "",
            identity: Identity | None = None) -> Callable[[list[Event]], bytes]:
    """The function that renders a batch's events as the bytes to write."""
    if framing == "ndjson":
        return Renderer(fmt="ndjson", host=host, identity=identity).render
    kind = {"syslog-octet": "octet", "syslog-newline": "newline"}[framing]
    return SyslogEncoder(host=host, framing=kind, facility=facility, app_name=app_name,
                         identity=identity).encode


@dataclass
class TcpStats:
    broken: int = 0
    """Connections the receiver broke with data in flight (reset, or closed before acking)."""
    lines_resent: int = 0
    """Lines written again after a broken connection (the receiver may have some twice)."""
    lines_maybe_lost: int = 0
    """Lines that had left the replay window of a connection that then broke: the bound of
    what best-effort TCP may have lost."""


class TcpSink:
    def __init__(self, *, name: str, host: str, port: int,
                 encode: Callable[[list[Event]], bytes], tls: ssl.SSLContext | None = None,
                 server_name: str = "", token: str = "", connect_timeout: float = 5.0,
                 write_timeout: float = 10.0, replay_bytes: int = 8 << 20,
                 count_lines: Callable[[list[Event]], int] | None = None,
                 takes_raw: bool = False, log: logging.Logger | None = None) -> None:
        self.name = name
        self.takes_raw = takes_raw
        """``encode`` takes events other than lines as their msgpack bytes (outputs/runner.py,
        outputs/ndjson.py): an NDJSON renderer's."""
        self.host = host
        self.port = port
        self.encode = encode
        self.tls = tls
        self.server_name = server_name or host
        self.token = token
        self.connect_timeout = connect_timeout
        self.write_timeout = write_timeout
        self.replay_bytes = replay_bytes
        self.count_lines = count_lines or _records
        self.log = log or logging.getLogger("log_shuttle")
        self.failures = FailureReporter(who=f"output {name}", log=self.log)
        self.sock: socket.socket | None = None
        self.connects = 0
        self.bytes_sent = 0
        self.stats = TcpStats()
        self._window: deque[tuple[bytes, int]] = deque()
        """(payload, lines) written on the current connection, newest last."""
        self._window_bytes = 0
        self._pushed_out = 0
        """Lines of this connection that left the window (would be lost if it broke now)."""
        self._replay: list[tuple[bytes, int]] = []
        """What a broken connection had in its window: written first on the next one."""
        self._last_report = 0.0

    def send(self, batch: Batch) -> Verdict:
        payload = self.encode(batch.events)
        if not payload:
            return Verdict.OK
        stage = "connect"
        try:
            sock = self._connection()
            stage = "write"
            sock.settimeout(self.write_timeout)
            if self._replay:
                sock.sendall(b"".join(p for p, _ in self._replay))
                for item in self._replay:
                    self._remember(*item)
                self._replay = []
            sock.sendall(payload)
            self.bytes_sent += len(payload)
        except AuthRejected as exc:
            self._close(broken=True)
            self.failures.failed("auth", f"the server rejected the token ({exc})",
                                 level=logging.ERROR)
            return Verdict.RETRY
        except ssl_error() as exc:
            self._close(broken=True)
            self.failures.failed("tls", f"cannot talk to {self._where()}: {describe(exc)}",
                                 level=logging.ERROR)
            return Verdict.RETRY
        except (OSError, TimeoutError) as exc:
            self._close(broken=True)
            self.failures.failed(stage, f"cannot {stage} to {self._where()}: {_reason(exc)}")
            return Verdict.RETRY
        self._remember(payload, self.count_lines(batch.events))
        self.failures.ok()
        return Verdict.OK

    def close(self) -> None:
        self._close(broken=False)
        st = self.stats
        if st.broken:
            self.log.warning("output %s: %d connection(s) broken by the receiver: %d line(s) "
                             "resent (it may have some twice), up to %d line(s) may be lost",
                             self.name, st.broken, st.lines_resent, st.lines_maybe_lost)

    # --- the replay window ----------------------------------------------------------------------

    def _remember(self, payload: bytes, lines: int) -> None:
        self._window.append((payload, lines))
        self._window_bytes += len(payload)
        while self._window_bytes > self.replay_bytes and len(self._window) > 1:
            old, n = self._window.popleft()
            self._window_bytes -= len(old)
            self._pushed_out += n

    def _broke(self, why: str) -> None:
        """The connection broke with data in flight: keep its window for the next one."""
        lines = sum(n for _, n in self._window)
        self.stats.broken += 1
        self.stats.lines_resent += lines
        self.stats.lines_maybe_lost += self._pushed_out
        self._replay = [*self._replay, *self._window]
        now = time.monotonic()
        if now - self._last_report >= 30.0:
            self._last_report = now
            self.log.warning("output %s: %s; writing the last %d line(s) again on a new "
                             "connection (%d broken so far, %d line(s) resent, up to %d maybe "
                             "lost)", self.name, why, lines, self.stats.broken,
                             self.stats.lines_resent, self.stats.lines_maybe_lost)
        self._forget()

    def _forget(self) -> None:
        self._window.clear()
        self._window_bytes = 0
        self._pushed_out = 0

    # --- the connection -------------------------------------------------------------------------

    def _where(self) -> str:
        return format_address(self.host, self.port)

    def _connection(self) -> socket.socket:
        if self.sock is not None:
            state = self._peer_state(self.sock)
            if state == "reset":
                self._broke("the receiver reset the connection")
                self._close(broken=False)
            elif state == "closed":
                if _unacked(self.sock):
                    self._broke("the receiver closed the connection before it had everything")
                else:
                    self.log.info("output %s: the receiver closed the connection; reconnecting",
                                  self.name)
                    self._forget()
                self._close(broken=False)
        if self.sock is None:
            self.sock = self._connect()
            self.connects += 1
        return self.sock

    def _connect(self) -> socket.socket:
        raw = socket.create_connection((self.host, self.port), timeout=self.connect_timeout)
        try:
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            sock = raw
            if self.tls is not None:
                sock = self.tls.wrap_socket(raw, server_hostname=self.server_name)
            if self.token:
                self._authenticate(sock)
            return sock
        except BaseException:
            raw.close()
            raise

    def _authenticate(self, sock: socket.socket) -> None:
        sock.settimeout(self.connect_timeout)
        sock.sendall(b"AUTH " + self.token.encode() + b"\n")
        reply = b""
        while not reply.endswith(b"\n") and len(reply) < 64:
            chunk = sock.recv(64 - len(reply))
            if not chunk:
                raise AuthRejected("it closed the connection")
            reply += chunk
        if reply != AUTH_OK:
            raise AuthRejected(f"it answered {reply.strip()[:40]!r}")

    @staticmethod
    def _peer_state(sock: socket.socket) -> str:
        """``open``, ``closed`` (FIN or TLS close_notify) or ``reset``. Polls (any descriptor
        number), then reads what the receiver sent, if anything."""
        try:
            if hasattr(select, "poll"):
                poller = select.poll()
                poller.register(sock, select.POLLIN | _RDHUP)
                events = poller.poll(0)
                if events and events[0][1] & select.POLLERR:
                    return "reset"
            else:  # Windows: select takes sockets, whatever their number
                events = select.select([sock], [], [], 0)[0]
        except (OSError, ValueError):
            return "reset"
        if not events:
            return "open"
        try:
            sock.setblocking(False)
            try:
                data = sock.recv(4096)
            finally:
                sock.setblocking(True)
        except (*want_io(), BlockingIOError):
            return "open"  # TLS records that were not data (session tickets)
        except (OSError, ValueError):
            return "reset"
        return "open" if data else "closed"  # data from a receiver that should send none: ignored

    def _close(self, *, broken: bool) -> None:
        if self.sock is not None:
            if broken and self._window:
                self._broke("the connection broke")
            try:
                # Read what the receiver sent (TLS session tickets): closing with unread bytes
                # would reset the connection instead of ending it cleanly.
                self._peer_state(self.sock)
                if is_tls_socket(self.sock):
                    self.sock.settimeout(0.5)
                    self.sock = self.sock.unwrap()
            except (OSError, ValueError):
                pass
            try:
                self.sock.close()
            except OSError:
                pass
            self.sock = None
        self._forget()


def _unacked(sock: socket.socket) -> int:
    """Bytes written on the socket that the receiver's TCP has not acknowledged (Linux
    SIOCOUTQ; where it is missing, every byte counts as unacknowledged: resend)."""
    try:
        import fcntl  # POSIX only: imported here so that the module imports on Windows
        import termios

        raw = sock.fileno()
        return struct.unpack("i", fcntl.ioctl(raw, termios.TIOCOUTQ, b"\0\0\0\0"))[0]
    except (ImportError, OSError, AttributeError):
        return 1


def _records(events: list[Event]) -> int:
    return sum(event_lines(ev) for ev in events)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, (TimeoutError, socket.timeout)):
        return "timed out"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve the host ({exc.strerror})"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return str(exc) or type(exc).__name__
