"""The TCP output's acknowledged mode (``framing = "ndjson-acked"``), for ``log-shuttle
server``: each batch goes with a sequence number, and it is OK only once the server answered
that it wrote it, so the inputs checkpoint only past what the receiver confirmed.

The conversation, after TLS and the optional ``AUTH <token>`` / ``OK`` of outputs/tcp.py::

    agent:  ACKED 1\\n                         (this connection speaks version 1)
    server: ACKED 1\\n
    agent:  B <seq> <length>\\n<length bytes: NDJSON records, one per line>
    server: A <seq>\\n                         (every batch up to <seq> is written and synced)

Sequence numbers start at 1 on each connection. A batch whose answer does not come within
``write_timeout``, or a connection that breaks first, is a RETRY: the runner sends the batch
again on a new connection (a duplicate only if the server wrote it but its answer was lost). A
receiver that does not answer ``ACKED 1`` does not speak the mode: an error, retried with
backoff until it is fixed.
"""

from __future__ import annotations

import logging

from common.events import Batch
from common.tls import describe, ssl_error
from outputs.base import Verdict
from outputs.tcp import AuthRejected, TcpSink, _reason

HELLO = b"ACKED 1\n"


class NotAcked(Exception):
    """The receiver broke the acknowledged mode (no ACKED answer, a wrong ack, hung up)."""


class AckedSink(TcpSink):
    """A TcpSink (connection, TLS, token) whose batches are OK only when acknowledged."""

    def __init__(self, *, frame_bytes: int = 1 << 20, **kw) -> None:
        kw.setdefault("replay_bytes", 0)  # nothing needs replaying: the server says what it has
        super().__init__(**kw)
        self.frame_bytes = frame_bytes
        """A batch goes in frames of about this size, cut at line ends (the server's
        max_message_bytes, 4 MiB by default, must take them)."""
        self._seq = 0
        self._rbuf = b""

    def send(self, batch: Batch) -> Verdict:
        payload = self.encode(batch.events)
        if not payload:
            return Verdict.OK
        stage = "connect"
        try:
            if self.sock is not None and self._peer_state(self.sock) != "open":
                self._close(broken=False)
            if self.sock is None:
                self.sock = self._connect()
                self.connects += 1
                self._hello()
            stage = "write"
            sock = self.sock
            sock.settimeout(self.write_timeout)
            first = self._seq + 1
            for chunk in _chunks(payload, self.frame_bytes):
                self._seq += 1
                sock.sendall(b"B %d %d\n" % (self._seq, len(chunk)))
                sock.sendall(chunk)
            stage = "acknowledgement"
            for seq in range(first, self._seq + 1):
                answer = self._line()
                if answer != b"A %d" % seq:
                    raise NotAcked(f"answered {answer[:40]!r} to frame {seq}")
        except AuthRejected as exc:
            self._close(broken=False)
            self.failures.failed("auth", f"the server rejected the token ({exc})",
                                 level=logging.ERROR)
            return Verdict.RETRY
        except ssl_error() as exc:
            self._close(broken=False)
            self.failures.failed("tls", f"cannot talk to {self._where()}: {describe(exc)}",
                                 level=logging.ERROR)
            return Verdict.RETRY
        except NotAcked as exc:
            self._close(broken=False)
            self.failures.failed("protocol", f"{self._where()}: {exc}", level=logging.ERROR)
            return Verdict.RETRY
        except (OSError, TimeoutError) as exc:
            self._close(broken=False)
            self.failures.failed(stage, f"no {stage} from {self._where()}: {_reason(exc)}"
                                 if stage == "acknowledgement" else
                                 f"cannot {stage} to {self._where()}: {_reason(exc)}")
            return Verdict.RETRY
        self.failures.ok()
        return Verdict.OK

    def _hello(self) -> None:
        assert self.sock is not None
        self._seq = 0
        self._rbuf = b""
        self.sock.settimeout(self.connect_timeout)
        self.sock.sendall(HELLO)
        answer = self._line()
        if answer + b"\n" != HELLO:
            raise NotAcked(f"the receiver does not speak log-shuttle's acknowledged mode "
                           f"(it answered {answer[:40]!r}; use log-shuttle server, or "
                           f"another framing)")

    def _line(self) -> bytes:
        assert self.sock is not None
        while b"\n" not in self._rbuf:
            if len(self._rbuf) > 256:
                raise NotAcked(f"a line longer than 256 bytes: {self._rbuf[:40]!r}")
            chunk = self.sock.recv(256)
            if not chunk:
                raise NotAcked("the receiver closed the connection")
            self._rbuf += chunk
        line, _, self._rbuf = self._rbuf.partition(b"\n")
        return line

    def _close(self, *, broken: bool) -> None:
        super()._close(broken=broken)
        self._rbuf = b""


def _chunks(payload: bytes, size: int) -> list[bytes]:
    """``payload`` cut after newlines into pieces of at most ``size`` bytes (a longer line is
    one piece of its own)."""
    out = []
    start = 0
    while len(payload) - start > size:
        cut = payload.rfind(b"\n", start, start + size)
        if cut < 0:
            cut = payload.find(b"\n", start + size)
            if cut < 0:
                break
        out.append(payload[start:cut + 1])
        start = cut + 1
    if start < len(payload):
        out.append(payload[start:])
    return out
