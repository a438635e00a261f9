"""The stdout output: each batch rendered as NDJSON (or text) and written in writes of at most
``WRITE_PIECE`` bytes (fewer when a pipe takes less). A closed stdout (``log-shuttle ... |
head``) stops the agent quietly."""

from __future__ import annotations

import errno
import os
import select

from common.component import Context, SinkClosed
from common.cpu import relax
from common.events import Batch
from common.identity import Identity
from outputs.base import Verdict
from outputs.ndjson import Renderer
from outputs.runner import OutputRunner
from outputs.stdout_config import StdoutOutputConfig

WRITE_PIECE = 256 * 1024
"""A batch's bytes go out in writes of at most this much, the CPU offered to others between
them (a write to a file is kernel time the scheduler cannot cut short)."""


def build(ctx: Context[StdoutOutputConfig]) -> OutputRunner:
    ctx.one_consumer()
    return OutputRunner(ctx, StdoutSink(fmt=ctx.config.format, host=ctx.host,
                                           identity=ctx.identity))


class StdoutSink:
    name = "stdout"

    def __init__(self, *, fmt: str, host: str, fd: int = 1, identity: Identity | None = None
                 ) -> None:
        self.fd = fd
        self.renderer = Renderer(fmt=fmt, host=host, identity=identity)
        self.takes_raw = self.renderer.takes_raw
        """Events other than lines may come as their msgpack bytes (outputs/runner.py)."""

    def send(self, batch: Batch) -> Verdict:
        self.write(self.renderer.render(batch.events))
        return Verdict.OK

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                n = os.write(self.fd, view[:WRITE_PIECE])
            except BlockingIOError:
                select.select([], [self.fd], [])
                continue
            except OSError as exc:
                if exc.errno in (errno.EPIPE, errno.ECONNRESET):
                    raise SinkClosed("stdout was closed") from exc
                raise
            view = view[n:]
            if view:
                relax()

    def close(self) -> None:
        pass
