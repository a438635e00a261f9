"""The eBPF input's configuration: the ``[inputs.ebpf]`` table."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from common.config import KiB, MiB, PositiveFloat, Section


class EbpfInputConfig(Section):
    """The eBPF input (Linux, root; see docs/ebpf.md)."""

    probes: list[Literal["process", "tcp", "http"]] = msgspec.field(
        default_factory=lambda: ["process", "tcp", "http"])
    """process: exec, fork, exit; tcp: connect, accept, close; http: HTTP/1.x requests."""
    optional: bool = False
    """When the input cannot start (not root, no BCC), warn and keep the other inputs instead of
    stopping the agent."""
    http_payload_bytes: Annotated[int, Meta(ge=64, le=4096)] = 256
    """At most this much of a read or write that starts like HTTP is copied to user space."""
    ring_buffer_bytes: Annotated[int, Meta(ge=64 * KiB, le=1024 * MiB)] = 8 * MiB
    """Size of each probe's BPF ring buffer (a power of two); when full, events are counted lost."""
    send_interval: PositiveFloat = 0.1
    """At most this many seconds between a message to the pipeline and the next (when events came)."""
    send_events: Annotated[int, Meta(ge=1, le=100_000)] = 256
    """At most this many events in one message to the pipeline (each message is worked
    through in one piece there: about a millisecond of HTTP exchanges)."""
    log_join: bool = True
    """With the http probe and log files to follow: note the writes to them (the logwrite probe,
    docs/tracing.md), so that the pipeline joins each line to the request it was written for."""
    log_paths: list[str] = []
    """Log files (globs) whose writes are noted; the agent adds every file input's paths."""
    log_scan_interval: PositiveFloat = 2.0
    """Seconds between looks at /proc/*/fd for the processes that have those files open."""
    poll_interval: Annotated[float, Meta(ge=0.001, le=1.0)] = 0.02
    """The fewest seconds between two reads of the ring buffers (the programs do not wake the
    input for each event; a ring buffer a quarter full wakes it at once). While records come
    the input reads about 64 at a time: every ``poll_interval`` from ~3,200 a second up, less
    often below, up to ``send_interval`` (or ``idle_poll_interval`` if shorter)."""
    idle_poll_interval: Annotated[float, Meta(ge=0.001, le=5.0)] = 0.25
    """After a read that found nothing, the next waits twice as long, up to this many seconds
    (a quiet host costs fewer wake-ups); a read that finds records sets the pace by their rate
    again."""
    max_exchanges_per_second: Annotated[int, Meta(ge=0)] = 5000
    """The http probe's budget: when the host's HTTP exchanges come faster than this (measured
    every quarter of a second), the probe sends 1 in N of them (by 16 ms slot of their start;
    a call follows the request it serves), so that at most about this many a second reach the
    agent; each carries N, the RED metrics count it N times and its span says so
    (``log_shuttle.sample_weight``). It bounds the agent's CPU on a busy host at the price of
    exact metrics and of the spans and log joins of the exchanges not sent (docs/ebpf.md).
    5,000 by default (2,500 requests a second seen on both sides of loopback: every exchange of
    an ordinary host; above it the agent's CPU stays at about a tenth of a core on this VM
    instead of growing with the load); 0: no budget, every exchange whatever it costs."""
    tls: bool = True
    """With the http probe: HTTPS too, from uprobes on OpenSSL's libssl (every libssl.so that
    a process maps, including processes that start later)."""

    def wants_logwrite(self) -> bool:
        return self.log_join and "http" in self.probes and bool(self.log_paths)

    def problems(self, *, environ: Mapping[str, str] | None = None) -> list[str]:
        out = []
        if not self.probes:
            out.append("probes: give at least one of process, tcp, http")
        if len(set(self.probes)) != len(self.probes):
            out.append("probes: a probe is named twice")
        n = self.ring_buffer_bytes
        if n & (n - 1):
            out.append(f"ring_buffer_bytes: {n} is not a power of two")
        if self.idle_poll_interval < self.poll_interval:
            out.append(f"idle_poll_interval: {self.idle_poll_interval} is shorter than "
                       f"poll_interval ({self.poll_interval})")
        return out
