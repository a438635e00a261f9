"""The stdout output: each batch rendered as NDJSON (or text) and written with as few writes as
the pipe takes. A closed stdout (``log-shuttle ... | head``) stops the agent quietly."""

from __future__ import annotations

import errno
import os
import select

from common.component import BootError, Context, SinkClosed
from common.events import BatchCodec
from common.shmqueue import Closed, Empty
from outputs.records import Renderer


def build(ctx: Context) -> StdoutOutput:
    if len(ctx.consumers) != 1:
        raise BootError(f"{ctx.name}: expected one input queue, got {len(ctx.consumers)}")
    return StdoutOutput(ctx)


class StdoutOutput:
    def __init__(self, ctx: Context, *, fd: int = 1) -> None:
        self.ctx = ctx
        self.fd = fd
        self.consumer = ctx.consumers[0]
        self.codec = BatchCodec()
        self.renderer = Renderer(fmt=ctx.config.format, host=ctx.host)

    def run(self) -> None:
        stop = self.ctx.stop
        while not stop.is_set():
            try:
                message = self.consumer.get_nowait(commit=False)
            except Empty:
                select.select([self.consumer, stop], [], [])
                continue
            except Closed:
                return
            self.write(self.renderer.render(self.codec.decode(message).events))
            self.consumer.commit()

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
