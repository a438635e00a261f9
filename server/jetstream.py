"""The server as a JetStream consumer: ``log-shuttle server --from-jetstream nats://...``.

A durable pull consumer on the stream (made on first use: explicit acks, every message from the
start); the loop fetches up to ``jetstream_batch`` messages, writes their records (the NDJSON
objects the agent's JetStream output published) through the same writer as the listeners, makes
the file write durable (fdatasync), and only then acknowledges each message. A server killed
between the write and the acks gets those messages again after ``jetstream_ack_wait``; the
exactly-once store (server/dedup.py) drops them. Servers started with the same consumer name
share it: each fetch hands out different messages, so they scale out, each writing its own
directory. Exactly once holds per server: a message a killed server had written but not
acknowledged may be delivered again to another server of the group, which writes it too.

It runs in the server's one asyncio loop, beside the gRPC and TCP listeners.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections import Counter
from typing import Any

import msgspec

from common.component import BootError

START_TIMEOUT = 30.0
"""How long the start may wait for the cluster to answer (a leader election, a busy cluster)."""


class JetStreamSource:
    def __init__(self, *, cfg: Any, writer: Any, counts: Counter,
                 log: logging.Logger) -> None:
        self.cfg = cfg
        self.writer = writer
        self.counts = counts
        self.log = log
        self.nc: Any = None
        self.sub: Any = None
        self._stopping = False
        self._task: asyncio.Task | None = None
        self._decoder = msgspec.json.Decoder()

    async def start(self) -> None:
        import nats
        from nats.js.errors import NotFoundError

        cfg = self.cfg
        opts: dict[str, Any] = dict(servers=list(cfg.from_jetstream), connect_timeout=5,
                                    max_reconnect_attempts=-1, reconnect_time_wait=0.5,
                                    name="log-shuttle server", error_cb=self._on_error)
        if cfg.jetstream_creds_file:
            opts["user_credentials"] = cfg.jetstream_creds_file
        if cfg.jetstream_tls_ca:
            from common.tls import TlsFiles, client_context

            opts["tls"] = client_context(TlsFiles(ca=cfg.jetstream_tls_ca), who="server")
        try:
            opts["max_reconnect_attempts"] = 3  # at start: a clear error, not a wait for ever
            self.nc = await nats.connect(**opts)
            self.nc.options["max_reconnect_attempts"] = -1
        except Exception as exc:  # noqa: BLE001 - any failure to connect at start
            raise BootError(f"server: cannot reach JetStream at "
                            f"{', '.join(cfg.from_jetstream)}: {exc or type(exc).__name__}"
                            ) from exc
        js = self.nc.jetstream(timeout=5)
        deadline = asyncio.get_running_loop().time() + START_TIMEOUT
        while True:  # a busy cluster, or one electing a leader, may time out a request
            try:
                await self._bind(js, cfg)
                break
            except NotFoundError:
                await self.nc.close()
                raise BootError(f"server: the stream {cfg.jetstream_stream!r} does not exist"
                                ) from None
            except Exception as exc:  # noqa: BLE001 - timeouts, no leader yet
                if asyncio.get_running_loop().time() > deadline:
                    await self.nc.close()
                    raise BootError(f"server: JetStream does not answer: "
                                    f"{exc or type(exc).__name__}") from exc
                self.log.info("jetstream: not ready (%s); trying again",
                              exc or type(exc).__name__)
                await asyncio.sleep(0.5)
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _bind(self, js: Any, cfg: Any) -> None:
        from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
        from nats.js.errors import NotFoundError

        await js.stream_info(cfg.jetstream_stream)
        try:
            await js.consumer_info(cfg.jetstream_stream, cfg.jetstream_consumer)
        except NotFoundError:
            await js.add_consumer(cfg.jetstream_stream, ConsumerConfig(
                durable_name=cfg.jetstream_consumer, ack_policy=AckPolicy.EXPLICIT,
                deliver_policy=DeliverPolicy.ALL, ack_wait=cfg.jetstream_ack_wait,
                max_ack_pending=65536, filter_subject=cfg.jetstream_filter or None))
            self.log.info("jetstream: made the durable consumer %r on %r",
                          cfg.jetstream_consumer, cfg.jetstream_stream)
        self.sub = await js.pull_subscribe_bind(cfg.jetstream_consumer, cfg.jetstream_stream)

    async def _on_error(self, exc: Exception) -> None:
        self.log.debug("jetstream: client error: %s", exc)

    async def _run(self) -> None:
        import nats.errors

        batch = self.cfg.jetstream_batch
        while not self._stopping:
            try:
                msgs = await self.sub.fetch(batch, timeout=1.0)
            except (nats.errors.TimeoutError, asyncio.TimeoutError):
                continue
            except Exception as exc:  # noqa: BLE001 - a reconnect, a leader election: again
                self.counts["jetstream_fetch_errors"] += 1
                self.log.warning("jetstream: fetch failed: %s", exc or type(exc).__name__)
                await asyncio.sleep(0.5)
                continue
            if not msgs:
                continue
            self.writer.write([self._record(m.data) for m in msgs])
            self._sync()
            for m in msgs:  # only now: the records are in the file, on disk
                try:
                    await m.ack()
                except Exception:  # noqa: BLE001 - redelivered after ack_wait, then dropped
                    self.counts["jetstream_ack_errors"] += 1
            self.counts["jetstream_messages"] += len(msgs)

    def _record(self, data: bytes) -> dict:
        try:
            rec = self._decoder.decode(data)
        except msgspec.DecodeError:
            rec = None
        if not isinstance(rec, dict):
            self.counts["jetstream_not_json"] += 1
            return {"line": data.decode("utf-8", "replace")}
        return rec

    def _sync(self) -> None:
        sync = getattr(self.writer, "sync", None)
        if sync is not None:
            sync()
        elif getattr(self.writer, "fd", -1) >= 0:
            os.fdatasync(self.writer.fd)

    async def drain(self, timeout: float) -> None:
        self._stopping = True
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, timeout=max(timeout, 2.0))
            except asyncio.TimeoutError:
                self._task.cancel()
        if self.nc is not None:
            try:
                await self.nc.close()
            except Exception:  # noqa: BLE001 - closing a broken connection
                pass
