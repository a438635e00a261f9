"""The stdout output: each batch rendered as NDJSON (or text) and written with as few writes as
the pipe takes. A closed stdout (``log-shuttle ... | head``) stops the agent quietly."""

from __future__ import annotations

import errno
import os
import select

from common.component import Context, SinkClosed
from common.events import Batch
from common.identity import Identity
from outputs.base import Verdict
from outputs.ndjson import Renderer
from outputs.runner import OutputRunner
from outputs.stdout_config import StdoutOutputConfig




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

    def send(self, batch: Batch) -> Verdict:
        self.write(self.renderer.render(batch.events))
        return Verdict.OK

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                n = os.write(self.fd, view)
            except BlockingIOError:
                select.select([], [self.fd], [])
                continue
            except OSError as exc:
                if exc.errno in (errno.EPIPE, errno.ECONNRESET):
                    raise SinkClosed("stdout was closed") from exc
                raise
            view = view[n:]

    def close(self) -> None:
        pass
