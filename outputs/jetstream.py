"""The NATS JetStream output: every record a message, acknowledged upstream only once the stream
holds it.

Each record (the NDJSON object stdout would print, without its newline) is published to a
subject made from ``subject`` (``logs.{host}.{kind}``: the agent's host with dots made
underscores, and the record's kind: log, process, conn, http, span, loss, etw) with the header
``Nats-Msg-Id`` = the record's stable id (common.identity; a span has none, and goes without
it). The stream drops a message whose id it has already stored within its duplicate window, so
a batch sent again after a retry, a kill of any agent process or a restart of the agent is
stored once.

A batch is OK only when JetStream acknowledged every one of its records (a publish ack means the
stream's leader stored it and, on a replicated stream, a quorum of replicas has it). The runner
then raises the acknowledgement board, and only then do the file inputs' checkpoints pass those
lines. At most ``max_in_flight`` publishes await their ack at once. Anything else is RETRY: no
connection, no ack within ``ack_timeout`` (no quorum: 2 of 3 nodes down), the stream refusing
(``max_bytes`` / ``max_msgs`` reached with ``discard = new``), no stream leader. Retrying the
same batch resends only the records not yet acknowledged; while it fails, the output's queue
fills and the inputs stop reading (the file is the buffer), so nothing is lost and memory stays
bounded. A record larger than the stream's maximum message size can never be stored: it is
counted and dropped (logged).

The nats-py client is asyncio: its event loop runs in one thread of this process, for the life
of the output, so pings and reconnects go on between batches; ``send`` hands the batch to it and
waits. The client reconnects on its own across every server it knows (the configured ones and
those the cluster announces).

On the first connection the output checks that the stream exists (and that it takes the
subjects published to); with ``create_stream`` it creates it (subjects, replicas, duplicate
window, retention, limits). A stream that is missing, or a subject no stream takes, stops the
agent with a message saying so (a BootError: retrying would not help).
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
from dataclasses import dataclass
from typing import Any

import msgspec

from common.component import BootError, Context
from common.events import Batch, Event
from common.identity import Identity
from common.net import read_token
from common.tls import TlsFiles, client_context
from outputs.base import Verdict
from outputs.failures import FailureReporter
from outputs.ndjson import records
from outputs.runner import Backoff, OutputRunner
from outputs.jetstream_config import JetStreamOutputConfig



class JetStreamError(Exception):
    """A publish round that did not get every ack (the message says why)."""


def build(ctx: Context) -> OutputRunner:
    cfg: JetStreamOutputConfig = ctx.config
    ctx.one_consumer()
    return OutputRunner(ctx, sink_from_config(cfg, host=ctx.host, identity=ctx.identity,
                                              log=ctx.log, who=ctx.name),
                        backoff=Backoff(maximum=cfg.backoff_max))


def sink_from_config(cfg: JetStreamOutputConfig, *, host: str, identity: Identity | None,
                     log: logging.Logger | None = None, who: str = "output jetstream"
                     ) -> JetStreamSink:
    """Check the options (files readable, template valid) and make the sink (not connected)."""
    problems = cfg.problems()
    if problems:
        raise BootError(f"{who}: " + "; ".join(problems))
    files = TlsFiles(ca=cfg.tls_ca, cert=cfg.tls_cert, key=cfg.tls_key,
                     server_name=cfg.tls_server_name)
    tls = client_context(files, who=who) if cfg.use_tls() else None
    token = read_token(cfg.auth_token_file, who=who) if not (cfg.user or cfg.creds_file) else ""
    password = read_token(cfg.password_file, who=who, environ={}) if cfg.password_file else ""
    return JetStreamSink(cfg=cfg, host=host, identity=identity, tls=tls, token=token,
                         password=password, log=log, who=who)


def subject_token(text: str) -> str:
    """``text`` as one subject token: no dots, spaces or wildcards."""
    return re.sub(r"[.\s*>]", "_", text) or "_"


@dataclass
class JetStreamStats:
    published: int = 0
    duplicates: int = 0
    """Acknowledged as already stored (a replay the stream deduplicated)."""
    dropped: int = 0
    rounds_failed: int = 0


class JetStreamSink:
    def __init__(self, *, cfg: JetStreamOutputConfig, host: str, identity: Identity | None,
                 tls: Any = None, token: str = "", password: str = "",
                 log: logging.Logger | None = None, who: str = "output jetstream") -> None:
        self.cfg = cfg
        self.name = f"jetstream {cfg.stream}"
        self.who = who
        self.host = host
        self.identity = identity
        self.tls = tls
        self.token = token
        self.password = password
        self.log = log or logging.getLogger("log_shuttle")
        self.failures = FailureReporter(who=f"output {self.name}", log=self.log)
        self.stats = JetStreamStats()
        host_token = subject_token(host)
        self._subjects = {kind: cfg.subject.format(host=host_token, kind=kind)
                          for kind in ("log", "process", "conn", "http", "span", "loss", "etw")}
        self._encoder = msgspec.json.Encoder()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever,
                                        name="jetstream-client", daemon=True)
        self._thread.start()
        self._nc: Any = None
        self._js: Any = None
        self._checked = False
        self._reply_prefix = ""
        self._window: asyncio.Semaphore | None = None
        self._round_done: asyncio.Event | None = None
        self._round_left = 0
        self._token = 0
        self._acks: dict[int, int] = {}
        """Reply token -> index in the batch of each publish awaiting its ack."""
        self._problem: BaseException | None = None
        self._last_error: BaseException | None = None
        """What the client last reported (a refused login, a TLS failure), for the message."""
        self._batch: Batch | None = None
        self._messages: list[tuple[str, bytes, str]] = []
        self._done: set[int] = set()

    # --- the runner's side (its thread) ---------------------------------------------------------

    def send(self, batch: Batch) -> Verdict:
        if self._batch is not batch:
            self._batch = batch
            self._messages = self.messages(batch.events)
            self._done = set()
            self._acks.clear()
        future = asyncio.run_coroutine_threadsafe(self._publish_all(), self._loop)
        try:
            future.result()
        except BootError:
            raise
        except Exception as exc:  # noqa: BLE001 - every failure of a round is a retry
            self.stats.rounds_failed += 1
            kind, message, level = _describe(exc, self._last_error)
            self.failures.failed(kind, message, level=level)
            return Verdict.RETRY
        self.failures.ok()
        self._batch, self._messages = None, []
        return Verdict.OK

    def messages(self, events: list[Event]) -> list[tuple[str, bytes, str]]:
        """(subject, payload, record id) of every record of the events, in order."""
        recs = records(events, self.host, self.identity)
        payloads = self._encoder.encode_lines(recs).split(b"\n")  # JSON escapes newlines
        subjects = self._subjects
        out = []
        log = subjects["log"]
        for rec, payload in zip(recs, payloads):
            # A line's record has no type; an event's has its kind, and an id once numbered
            # (a span has none).
            kind = getattr(rec, "type", None)
            out.append((subjects.get(kind, log) if kind else log, payload,
                        getattr(rec, "id", None) or ""))
        return out

    def close(self) -> None:
        if self._nc is not None:
            try:
                asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(timeout=5)
            except Exception:  # noqa: BLE001 - closing a dead connection: nothing to keep
                pass
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()

    # --- the client's side (the loop's thread) --------------------------------------------------

    async def _close(self) -> None:
        nc, self._nc = self._nc, None
        await nc.close()

    async def _connect(self) -> None:
        import nats

        cfg = self.cfg
        opts: dict[str, Any] = dict(
            servers=list(cfg.servers), name=f"log-shuttle {self.host}",
            connect_timeout=cfg.connect_timeout, allow_reconnect=True,
            max_reconnect_attempts=1, reconnect_time_wait=0.5,
            error_cb=self._on_error, disconnected_cb=self._on_disconnected,
            reconnected_cb=self._on_reconnected)
        if self.tls is not None:
            opts["tls"] = self.tls
            if cfg.tls_server_name:
                opts["tls_hostname"] = cfg.tls_server_name
        if self.token:
            opts["token"] = self.token
        if cfg.user:
            opts["user"], opts["password"] = cfg.user, self.password
        if cfg.creds_file:
            opts["user_credentials"] = cfg.creds_file
        # The first connection tries each server once (a RETRY for the runner, which backs off);
        # once connected, the client reconnects on its own for ever, across the cluster.
        # (bounded as a whole: a refused login makes nats-py try again and again)
        nc = await asyncio.wait_for(nats.connect(**opts),
                                    cfg.connect_timeout * (len(cfg.servers) + 1) + 1.0)
        nc.options["max_reconnect_attempts"] = -1
        self._nc = nc
        self._js = nc.jetstream(timeout=cfg.ack_timeout)
        # Acks come back on one wildcard inbox: one subscription, however many publishes.
        inbox = nc.new_inbox()
        self._reply_prefix = inbox + "."
        await nc.subscribe(inbox + ".*", cb=self._on_ack,
                           pending_msgs_limit=max(65536, 4 * cfg.max_in_flight))
        self._window = asyncio.Semaphore(cfg.max_in_flight)
        self._round_done = asyncio.Event()
        self.log.info("output %s: connected to %s", self.name, nc.connected_url.netloc
                      if nc.connected_url else cfg.servers)

    async def _on_error(self, exc: Exception) -> None:
        self._last_error = exc
        self.log.debug("output %s: client error: %s", self.name, exc)

    async def _on_disconnected(self) -> None:
        self.log.info("output %s: disconnected; reconnecting", self.name)

    async def _on_reconnected(self) -> None:
        nc = self._nc
        self.log.info("output %s: reconnected to %s", self.name,
                      nc.connected_url.netloc if nc and nc.connected_url else "?")

    async def _check_stream(self) -> None:
        from nats.js.api import DiscardPolicy, RetentionPolicy, StreamConfig
        from nats.js.errors import NotFoundError

        cfg = self.cfg
        jsm = self._js
        try:
            await jsm.stream_info(cfg.stream)
        except NotFoundError:
            if not cfg.create_stream:
                raise BootError(
                    f"{self.who}: the stream {cfg.stream!r} does not exist: create it "
                    f"(e.g. nats stream add {cfg.stream} --subjects "
                    f"'{' '.join(self._stream_subjects())}' --dupe-window "
                    f"{int(cfg.duplicate_window)}s) or set create_stream = true") from None
            await jsm.add_stream(StreamConfig(
                name=cfg.stream, subjects=self._stream_subjects(), num_replicas=cfg.replicas,
                duplicate_window=cfg.duplicate_window,
                retention=RetentionPolicy(cfg.retention), max_bytes=cfg.max_bytes,
                max_msgs=cfg.max_msgs, discard=DiscardPolicy.NEW))
            self.log.info("output %s: created the stream (%d replicas, duplicate window %gs)",
                          self.name, cfg.replicas, cfg.duplicate_window)
        for subject in dict.fromkeys(self._subjects.values()):
            try:
                name = await jsm.find_stream_name_by_subject(subject)
            except NotFoundError:
                name = None
            if name != cfg.stream:
                raise BootError(f"{self.who}: the stream {cfg.stream!r} does not take the "
                                f"subject {subject!r}" + (f" (the stream {name!r} does)"
                                                          if name else "")
                                + ": change subject or the stream's subjects")
        self._checked = True

    def _stream_subjects(self) -> list[str]:
        return self.cfg.stream_subjects or [
            re.sub(r"\{(host|kind)\}", "*", self.cfg.subject)]

    async def _publish_all(self) -> None:
        if self._nc is None:
            await self._connect()
        if not self._checked:
            await self._check_stream()
        nc = self._nc
        window = self._window
        acks = self._acks
        reply_prefix = self._reply_prefix
        stream_header = {"Nats-Expected-Stream": self.cfg.stream}
        self._problem = None
        sent = 0
        for i, (subject, payload, rid) in enumerate(self._messages):
            if i in self._done:
                continue
            await window.acquire()  # at most max_in_flight publishes awaiting their ack
            self._token += 1
            acks[self._token] = i
            headers_for = {"Nats-Msg-Id": rid, **stream_header} if rid else stream_header
            await nc.publish(subject, payload, reply=f"{reply_prefix}{self._token}",
                             headers=headers_for)
            sent += 1
        if not sent:
            return
        self._round_done.clear()
        self._round_left = sum(1 for i in acks.values() if i not in self._done)
        if self._round_left:
            try:
                await asyncio.wait_for(self._round_done.wait(), self.cfg.ack_timeout)
            except asyncio.TimeoutError:
                pass
        missing = [t for t, i in acks.items() if i not in self._done]
        for t in missing:  # their acks may still come: they no longer hold the window
            del acks[t]
            window.release()
        if self._problem is not None:
            raise self._problem
        if missing:
            raise JetStreamError(f"{len(missing)} of {sent} publishes got no ack within "
                                 f"{self.cfg.ack_timeout:g}s (no stream leader or quorum, or "
                                 f"no connection)")

    async def _on_ack(self, msg: Any) -> None:
        """A publish ack (or an error) for one message of the batch in flight."""
        token = int(msg.subject.rpartition(".")[2])
        i = self._acks.pop(token, None)
        if i is None:
            return  # the ack of a message given up on (counted as missing; sent again)
        self._window.release()
        try:
            ack = _ACK.decode(msg.data) if msg.data else None
        except msgspec.DecodeError:
            ack = None
        if ack is not None and ack.error is None and ack.seq:
            if i not in self._done:
                self._done.add(i)
                if ack.duplicate:
                    self.stats.duplicates += 1
                else:
                    self.stats.published += 1
        elif ack is not None and ack.error is not None and _never_fits(ack.error):
            self._done.add(i)
            self.stats.dropped += 1
            self.log.error("output %s: dropped a record the stream can never take: %s",
                           self.name, ack.error.description)
        else:
            status = (msg.headers or {}).get("Status", "") if msg.headers is not None else ""
            if ack is not None and ack.error is not None:
                self._problem = self._problem or StreamRefused(ack.error)
            elif status == "503" or not msg.data:
                self._problem = self._problem or NoResponders()
            else:
                self._problem = self._problem or JetStreamError(
                    f"unexpected publish ack: {msg.data[:200]!r}")
        self._round_left -= 1
        if self._round_left <= 0:
            self._round_done.set()


class _ApiError(msgspec.Struct):
    code: int = 0
    err_code: int = 0
    description: str = ""


class _PubAck(msgspec.Struct):
    stream: str = ""
    seq: int = 0
    duplicate: bool = False
    error: _ApiError | None = None


_ACK = msgspec.json.Decoder(_PubAck)


class StreamRefused(JetStreamError):
    def __init__(self, error: _ApiError) -> None:
        super().__init__(error.description)
        self.error = error


class NoResponders(JetStreamError):
    """No stream answered the publish (no leader, or no stream for the subject)."""


def _never_fits(error: _ApiError) -> bool:
    return "message size exceeds" in error.description.lower()


def _describe(exc: BaseException, client_error: BaseException | None = None
              ) -> tuple[str, str, int]:
    """(kind, message, log level) of a failed round, for the failure reporter; a connection
    that timed out says what the client last reported (a refused login, a TLS failure)."""
    from nats import errors as nerr
    from nats.js import errors as jerr

    if client_error is not None and isinstance(exc, (asyncio.TimeoutError, nerr.NoServersError)):
        text = str(client_error) or type(client_error).__name__
        if "authorization" in text.lower() or isinstance(client_error, nerr.AuthorizationError):
            return "auth", f"the server refuses our credentials: {text}", logging.ERROR
        return "connect", f"cannot connect to a NATS server: {text}", logging.WARNING

    if isinstance(exc, StreamRefused):
        err = exc.error
        if err.code == 503 or err.err_code in (10077, 10047):  # limits: the stream refuses
            return "refused", f"the stream refuses: {err.description}; holding", logging.WARNING
        return f"api-{err.err_code}", f"the stream answered: {err.description} " \
            f"({err.code}/{err.err_code})", logging.ERROR
    if isinstance(exc, jerr.APIError):
        return f"api-{exc.err_code}", f"the stream answered: {exc.description}", logging.WARNING
    if isinstance(exc, (jerr.NoStreamResponseError, NoResponders)):
        return "no-responders", "no stream answers (no leader, or the stream is gone)", \
            logging.WARNING
    if isinstance(exc, (nerr.NoServersError, OSError, asyncio.TimeoutError,
                        nerr.TimeoutError, nerr.ConnectionClosedError)):
        return "connect", f"cannot reach a NATS server: {exc or type(exc).__name__}", \
            logging.WARNING
    if isinstance(exc, nerr.AuthorizationError) or "authoriz" in str(exc).lower():
        return "auth", f"the server refuses our credentials: {exc}", logging.ERROR
    if isinstance(exc, JetStreamError):
        return "ack-timeout", str(exc), logging.WARNING
    return type(exc).__name__, str(exc) or type(exc).__name__, logging.WARNING


def delivery_budget(*, checkpoint_interval: float, drain_timeout: float,
                    restart_backoff_max: float, start: float = 5.0) -> float:
    """The longest time between a record's first publish and its last replay by the agent:
    what the stream's duplicate window must exceed (docs/jetstream.md)."""
    return checkpoint_interval + drain_timeout + restart_backoff_max + start
