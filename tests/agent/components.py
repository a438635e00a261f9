"""Small real components for the child-process tests: module-level build functions (a new
interpreter can import them by ``module:qualname``), each doing one thing the supervisor must
tell apart by the child's exit code."""

from __future__ import annotations

from common.component import BootError, Context, SinkClosed
from common.wake import wait_readable


class _Run:
    def __init__(self, fn) -> None:
        self.run = fn


def refuses(ctx: Context) -> _Run:
    raise BootError(f"{ctx.name} refuses: {ctx.config}")


def crashes(ctx: Context) -> _Run:
    def run() -> None:
        raise RuntimeError("a bug")
    return _Run(run)


def sink_closed(ctx: Context) -> _Run:
    def run() -> None:
        raise SinkClosed("stdout closed")
    return _Run(run)


def waits_for_stop(ctx: Context) -> _Run:
    """Runs until its stop flag is set (an input's SIGTERM), at most ``ctx.config`` seconds."""
    def run() -> None:
        if not wait_readable([ctx.stop], float(ctx.config)):
            raise RuntimeError("never stopped")
        assert ctx.stop.is_set()
    return _Run(run)


def acknowledges(ctx: Context) -> _Run:
    """An output that says its destination has input 0's messages up to ``ctx.config``."""
    def run() -> None:
        ctx.progress.delivered([(0, int(ctx.config))])
    return _Run(run)


def numbers(ctx: Context) -> _Run:
    """An input that numbers ``ctx.config`` messages on the board."""
    def run() -> None:
        for _ in range(int(ctx.config)):
            ctx.progress.next_seq()
    return _Run(run)


def relays(ctx: Context) -> _Run:
    """Passes each message on in upper case until its queue closes; then says its destination
    has input 0's messages up to ``ctx.config``."""
    from common.shmqueue import Closed

    def run() -> None:
        (consumer,), (producer,) = ctx.consumers, ctx.producers
        while True:
            try:
                msg = consumer.get(timeout=20)
            except Closed:
                break
            producer.put(msg.upper())
        producer.close()
        ctx.progress.delivered([(0, int(ctx.config))])
    return _Run(run)


def tells_identity(ctx: Context) -> _Run:
    """Puts ``agent.session`` of the identity it was given on its output queue."""
    def run() -> None:
        ctx.producers[0].put(f"{ctx.identity.agent}.{ctx.identity.session}".encode())
    return _Run(run)
