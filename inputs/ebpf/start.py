"""Starting the eBPF input in its own process: check the machine, load the probes, follow the
connections older than the agent (the package's ``build`` imports this only when called)."""

from __future__ import annotations

import os
import select

from common.component import BootError, Context, Runner
from inputs.ebpf.config import EbpfInputConfig
from inputs.ebpf.checks import environment, problems
from inputs.ebpf.loader import LoadError, ProgramOptions, Programs
from inputs.ebpf.sockets import established_socket_keys


def options_of(cfg, *, self_pid: int = 0) -> ProgramOptions:
    return ProgramOptions(http_payload_bytes=cfg.http_payload_bytes,
                          ring_buffer_bytes=cfg.ring_buffer_bytes, self_pid=self_pid)


def build(ctx: Context[EbpfInputConfig]) -> Runner:
    """Check the machine, load the probes; a missing piece is a BootError (or, with the input
    optional, a warning and an input that does nothing)."""
    from inputs.ebpf.runner import EbpfInput

    cfg = ctx.config
    ctx.one_producer()
    found = problems(environment(mount=True))
    programs = None
    if not found:
        try:
            probes = list(cfg.probes) + (["logwrite"] if cfg.wants_logwrite() else [])
            programs = Programs(probes, options_of(cfg, self_pid=os.getpid()))
        except LoadError as exc:
            found = [str(exc)]
        else:
            # Connections older than the agent: the probe saw no accept/connect of them.
            followed = programs.follow_sockets(established_socket_keys(skip_pid=os.getpid()))
            ctx.log.debug("following %d TCP connections open before the agent", followed)
    if programs is None:
        message = f"{ctx.name}: cannot trace with eBPF: " + "; ".join(found)
        if cfg.optional:
            ctx.log.warning("%s (the eBPF input is optional: the agent goes on without it)",
                            message)
            return Idle(ctx)
        raise BootError(message)
    return EbpfInput(ctx, programs)


class Idle:
    """An optional input that could not start: it waits for the stop, sending nothing."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def run(self) -> None:
        while not self.ctx.stop.is_set():
            try:
                select.select([self.ctx.stop], [], [], 1.0)
            except InterruptedError:
                pass

