"""The eBPF input: watches the whole host through BPF programs on tracepoints (bpf/): process
lifecycle, TCP connections and HTTP/1.x requests (HTTPS too, through uprobes on OpenSSL), with
no change to the applications. The only part of the agent that needs root. Split by concern:
``config`` (its table), ``checks`` (what the machine must have), ``loader`` (BCC, ring
buffers), ``sockets`` (connections older than the agent), ``tls`` (libssl uprobes), ``layouts``
(raw event bytes), ``http`` (parsing and pairing), ``translate`` (raw events to Events),
``runner`` (the loop), ``start`` (its build function). docs/ebpf.md tells the whole story.
"""

from __future__ import annotations

from typing import Any


def build(ctx: Any, **kwargs: Any) -> Any:
    """The component's build function (inputs.ebpf.start.build), imported only when called:
    the supervisor imports this package for its configuration and must not load BCC's
    bindings or the input's code (each child process loads only its own)."""
    from inputs.ebpf.start import build as build_input

    return build_input(ctx, **kwargs)


__all__ = ["build"]
