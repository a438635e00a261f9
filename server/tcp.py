"""The server's TCP receiver: NDJSON, and syslog octet-counted or newline-framed, told apart per
frame (common.framing.AutoDecoder), over plain TCP or TLS, on asyncio streams.

Limits: a frame longer than ``max_message_bytes``, bytes that are neither a JSON object nor
syslog, a wrong length prefix, a half frame at the end, a connection silent for
``idle_timeout``, and connections beyond ``max_connections`` each close that one connection with
a counted error; the others go on.

A token (only on TLS listeners): the first line of a connection must be ``AUTH <token>``, and is
answered ``OK`` or ``DENIED`` (then closed). A server without a token answers ``OK`` to any
``AUTH`` line, so a client with a token can talk to it.

The acknowledged mode (log-shuttle's TCP output with ``framing = "ndjson-acked"``,
outputs/acked.py): a connection whose first line (after AUTH) is ``ACKED 1`` is answered
``ACKED 1`` and then carries frames ``B <seq> <length>\n`` + ``length`` bytes of NDJSON or
syslog lines; each is parsed, written, and synced to disk (``sync``) before the server answers
``A <seq>``, so the agent's checkpoints advance only past what is on the server's disk.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import ssl
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from server.frames import BadFrame, parse_frame
from common.framing import AutoDecoder, FramingError

READ_BYTES = 256 * 1024
ACKED_HELLO = b"ACKED 1"
DRAIN_IDLE = 0.5
"""While draining, a connection silent this long is done."""


class TcpReceiver:
    def __init__(self, *, host: str, port: int, tls: ssl.SSLContext | None, token: str,
                 max_message_bytes: int, max_connections: int, idle_timeout: float,
                 write: Callable[[list[dict[str, Any]]], None], counts: Counter,
                 log: logging.Logger, sync: Callable[[], None] | None = None) -> None:
        self.host, self.port = host, port
        self.tls = tls
        self.token = token
        self.max_message_bytes = max_message_bytes
        self.max_connections = max_connections
        self.idle_timeout = idle_timeout
        self.write = write
        self.sync = sync or (lambda: None)
        """Makes what ``write`` wrote durable (the acknowledged mode answers after it)."""
        self.counts = counts
        self.log = log
        self.server: asyncio.Server | None = None
        self.connections: dict[asyncio.Task, asyncio.StreamWriter] = {}
        self.draining = False

    async def start(self) -> None:
        self.server = await asyncio.start_server(
            self._handle, self.host, self.port, ssl=self.tls, limit=READ_BYTES,
            ssl_handshake_timeout=min(self.idle_timeout, 30.0) if self.tls else None)

    @property
    def bound(self) -> list[tuple[str, int]]:
        return [s.getsockname()[:2] for s in self.server.sockets] if self.server else []

    async def drain(self, timeout: float) -> None:
        """Stop listening; tell each client we are done (FIN where the transport has one), read
        what they still send until they are quiet, then close."""
        self.draining = True
        if self.server is not None:
            self.server.close()
        for writer in list(self.connections.values()):
            if writer.can_write_eof():
                try:
                    writer.write_eof()
                except OSError:
                    pass
        tasks = list(self.connections)
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=timeout)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=1.0)

    def _error(self, kind: str, peer: str, detail: str) -> None:
        self.counts[f"tcp_error_{kind}"] += 1
        self.log.warning("tcp %s: closing the connection: %s: %s", peer, kind, detail)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = _peer(writer)
        task = asyncio.current_task()
        if len(self.connections) >= self.max_connections or self.draining:
            self._error("too_many_connections", peer,
                        f"already {len(self.connections)} (max_connections)")
            writer.close()
            return
        self.connections[task] = writer
        self.counts["tcp_connections"] += 1
        try:
            await self._serve(reader, writer, peer)
        except asyncio.CancelledError:
            self.counts["tcp_cut_at_stop"] += 1
        except ConnectionResetError:
            self.counts["tcp_reset_by_peer"] += 1  # a client that closed with bytes unread
        except (ConnectionError, ssl.SSLError, OSError) as exc:
            self._error("connection", peer, str(exc) or type(exc).__name__)
        finally:
            self.connections.pop(task, None)
            writer.close()
            try:
                await asyncio.wait_for(writer.wait_closed(), 1.0)
            except (OSError, ssl.SSLError, asyncio.TimeoutError, asyncio.CancelledError):
                pass

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     peer: str) -> None:
        decoder = AutoDecoder(max_frame=self.max_message_bytes)
        first = True
        need_auth = bool(self.token)
        records_seen = False
        while True:
            timeout = min(self.idle_timeout, DRAIN_IDLE) if self.draining else self.idle_timeout
            try:
                data = await asyncio.wait_for(reader.read(READ_BYTES), timeout)
            except asyncio.TimeoutError:
                if self.draining:
                    return
                self._error("idle", peer, f"nothing for {self.idle_timeout:.0f}s")
                return
            if not data:
                try:
                    decoder.finish()
                except FramingError as exc:
                    self._error("framing", peer, str(exc))
                return
            now = time.time_ns()
            try:
                frames = decoder.feed(data)
                if first and frames and frames[0].startswith(b"AUTH "):
                    first = False
                    if not await self._authenticate(frames.pop(0), writer, peer):
                        return
                    need_auth = False
                if need_auth and (frames or decoder.pending() > 4096):
                    self._error("auth", peer, "no AUTH line first")
                    return
                if frames and frames[0] == ACKED_HELLO and not records_seen:
                    if len(frames) > 1 or decoder.pending():
                        self._error("framing", peer, "bytes after ACKED 1 before its answer")
                        return
                    writer.write(ACKED_HELLO + b"\n")
                    await writer.drain()
                    self.counts["tcp_acked_connections"] += 1
                    await self._serve_acked(reader, writer, peer)
                    return
                if frames:
                    first = False
                    records_seen = True
                records = [parse_frame(f, received_ns=now) for f in frames]
            except FramingError as exc:
                self._error("framing", peer, str(exc))
                return
            except BadFrame as exc:
                self._error("garbage", peer, str(exc))
                return
            if records:
                self.write(records)
                self.counts["tcp_records"] += len(records)

    async def _serve_acked(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                           peer: str) -> None:
        """``B <seq> <length>`` frames, each written, synced, then answered ``A <seq>``."""
        while True:
            timeout = min(self.idle_timeout, DRAIN_IDLE) if self.draining else self.idle_timeout
            try:
                header = await asyncio.wait_for(reader.readline(), timeout)
                if not header:
                    return  # the agent closed the connection between batches
                parts = header.split()
                if len(parts) != 3 or parts[0] != b"B" or not parts[1].isdigit() \
                        or not parts[2].isdigit():
                    self._error("framing", peer, f"not an acknowledged frame: {header[:40]!r}")
                    return
                seq, length = int(parts[1]), int(parts[2])
                if length > self.max_message_bytes:
                    self._error("framing", peer, f"a frame of {length} bytes (max_message_bytes "
                                f"is {self.max_message_bytes})")
                    return
                payload = await asyncio.wait_for(reader.readexactly(length), timeout)
            except asyncio.TimeoutError:
                if not self.draining:
                    self._error("idle", peer, f"nothing for {self.idle_timeout:.0f}s")
                return
            except asyncio.IncompleteReadError:
                self._error("framing", peer, "the connection ended inside a frame")
                return
            except (asyncio.LimitOverrunError, ValueError) as exc:
                self._error("framing", peer, f"a header line too long: {exc}")
                return
            now = time.time_ns()
            try:
                records = [parse_frame(f, received_ns=now) for f in payload.split(b"\n") if f]
            except BadFrame as exc:
                self._error("garbage", peer, str(exc))
                return
            if records:
                self.write(records)
                self.counts["tcp_records"] += len(records)
            self.sync()
            self.counts["tcp_acked_batches"] += 1
            writer.write(b"A %d\n" % seq)
            await writer.drain()

    async def _authenticate(self, line: bytes, writer: asyncio.StreamWriter, peer: str) -> bool:
        given = line[5:].strip()
        if self.token and not hmac.compare_digest(given, self.token.encode()):
            writer.write(b"DENIED\n")
            await writer.drain()
            self._error("auth", peer, "wrong token")
            return False
        writer.write(b"OK\n")
        await writer.drain()
        return True


def _peer(writer: asyncio.StreamWriter) -> str:
    info = writer.get_extra_info("peername")
    if isinstance(info, tuple) and len(info) >= 2:
        return f"{info[0]}:{info[1]}"
    return str(info)
