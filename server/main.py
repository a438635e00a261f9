"""``log-shuttle server``: the receiving end. OTLP logs over gRPC (with the grpc.health.v1
service) and TCP (NDJSON, syslog octet-counted or newline-framed) on the configured addresses,
written as NDJSON to size-rotated files in a directory, or to stdout.

One process, one thread, one asyncio loop: grpc.aio and asyncio streams share it (see
docs/server.md for why). SIGTERM / SIGINT drain: health says NOT_SERVING, listeners close,
calls in flight finish, TCP clients get a FIN and are read until quiet, then the counters are
logged and the process exits 0. Exit 3 when it cannot start (a bad TLS file, an address in use,
an output directory it cannot write).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
from collections import Counter

from common.component import BootError
from common.exitcodes import ExitCode
from common.logs import setup_logging
from common.net import format_address, parse_address, read_token
from common.tls import TlsFiles, grpc_server_credentials, server_context
from server.config import ServerConfig



def serve(cfg: ServerConfig) -> int:
    """Run the server until SIGTERM / SIGINT; return the exit code."""
    from setproctitle import setproctitle

    setproctitle("log-shuttle: server")
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")  # before gRPC loads: no per-handshake lines
    log = setup_logging("server", cfg.log_level)
    try:
        return asyncio.run(_main(cfg, log))
    except BootError as exc:
        log.error("cannot start: %s", exc)
        return ExitCode.BOOT


def _writer(cfg: ServerConfig, log: logging.Logger):
    from server.writer import FileWriter, StdoutWriter

    if cfg.output_stdout:
        return StdoutWriter()
    writer = FileWriter(directory=cfg.output_dir, file_bytes=cfg.file_bytes,
                        max_files=cfg.max_files)
    if not cfg.exactly_once:
        return writer
    from server.dedup import DedupWriter

    return DedupWriter(writer, log=log)  # drops what the files already hold, per source


async def _main(cfg: ServerConfig, log: logging.Logger) -> int:
    from server.grpc import GrpcReceiver
    from server.tcp import TcpReceiver

    counts: Counter = Counter()
    files = TlsFiles(ca=cfg.tls_ca, cert=cfg.tls_cert, key=cfg.tls_key)
    token = read_token(cfg.auth_token_file, who="server")
    if token and cfg.insecure:
        raise BootError("server: a token needs TLS (it would cross the network in clear): "
                        "give --tls-cert and --tls-key instead of --insecure")
    writer = _writer(cfg, log)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.set_exception_handler(_exception_handler(counts, log))
    receivers: list = []
    try:
        if cfg.grpc_listen:
            for a in cfg.grpc_listen:
                parse_address(a, who="server: grpc_listen", listen=True)
            creds = None if cfg.insecure else grpc_server_credentials(files, who="server")
            try:
                g = GrpcReceiver(addresses=cfg.grpc_listen, credentials=creds, token=token,
                                 max_message_bytes=cfg.max_message_bytes,
                                 idle_timeout=cfg.idle_timeout, write=writer.write,
                                 counts=counts, log=log, max_calls=cfg.max_connections)
            except (RuntimeError, OSError) as exc:
                raise BootError(f"server: cannot listen for gRPC on "
                                f"{', '.join(cfg.grpc_listen)}: {exc}") from exc
            await g.start()
            receivers.append(g)
            log.info("gRPC (OTLP logs, health) on %s%s", ", ".join(
                f"{a.rpartition(':')[0]}:{p}" for a, p in zip(cfg.grpc_listen, g.ports)),
                     "" if creds is None else " with TLS" + (" (mTLS)" if files.ca else ""))
        tls = None if cfg.insecure or not cfg.tcp_listen else server_context(files, who="server")
        for a in cfg.tcp_listen:
            host, port = parse_address(a, who="server: tcp_listen", listen=True)
            t = TcpReceiver(host=host, port=port, tls=tls, token=token if tls else "",
                            max_message_bytes=cfg.max_message_bytes,
                            max_connections=cfg.max_connections, idle_timeout=cfg.idle_timeout,
                            write=writer.write, counts=counts, log=log, sync=writer.sync)
            try:
                await t.start()
            except OSError as exc:
                raise BootError(f"server: cannot listen on {a}: {exc.strerror or exc}") from exc
            receivers.append(t)
            log.info("TCP (NDJSON, syslog) on %s%s", ", ".join(format_address(*b)
                                                               for b in t.bound),
                     "" if tls is None else " with TLS" + (" (mTLS)" if files.ca else ""))
        if cfg.from_jetstream:
            from server.jetstream import JetStreamSource

            source = JetStreamSource(cfg=cfg, writer=writer, counts=counts, log=log)
            await source.start()
            receivers.append(source)
            log.info("consuming the stream %s (durable consumer %s) from %s",
                     cfg.jetstream_stream, cfg.jetstream_consumer, ", ".join(cfg.from_jetstream))
        log.info("writing to %s", "stdout" if cfg.output_stdout else cfg.output_dir)
        await stop.wait()
        log.info("stopping: draining (up to %.0fs)", cfg.drain_timeout)
        await asyncio.gather(*(r.drain(cfg.drain_timeout) for r in receivers))
    finally:
        for r in receivers:
            if hasattr(r, "server") and hasattr(r.server, "stop"):
                await r.server.stop(None)
        writer.close()
        if getattr(writer, "dropped", 0):
            counts["duplicates_dropped"] = writer.dropped
        log.info("stopped: %s", json.dumps({"records_written": writer.records, **counts},
                                           sort_keys=True))
    return ExitCode.OK


def _exception_handler(counts: Counter, log: logging.Logger):
    """asyncio reports failed TLS handshakes (a client with a wrong CA, garbage on a TLS port)
    here, with a traceback: count them and say it in one line."""

    def handle(loop: asyncio.AbstractEventLoop, context: dict) -> None:
        exc = context.get("exception")
        message = context.get("message", "")
        if "handshake" in message.lower() or type(exc).__name__.startswith("SSL"):
            counts["tls_error_handshake"] += 1
            log.warning("tls: a handshake failed: %s", exc or message)
            return
        counts["loop_errors"] += 1
        log.warning("%s: %s", message, exc)

    return handle
