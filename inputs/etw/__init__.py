"""The ETW input (Windows): a real-time Event Tracing for Windows session through ctypes.

Process lifecycle from Microsoft-Windows-Kernel-Process (ProcessStart / ProcessStop, every
manifest version, and a rundown of the processes already running) as ProcessEvents; any other
provider, decoded through TDH, as EtwEvents; what the session lost as LossEvents. Split by
concern: ``structs`` (ctypes layouts), ``api`` (advapi32 / tdh, loaded only on Windows),
``builders`` (property and filter buffers), ``session`` (lifecycle), ``payload`` /
``kernel_process`` / ``tdh`` (decoding), ``records`` (the callback), ``runner`` (the loop).
Every module imports on any platform; only ``api.load()`` needs Windows. See docs/etw.md.
"""

from __future__ import annotations

from typing import Any


def build(ctx: Any, **kwargs: Any) -> Any:
    """The component's build function (inputs.etw.runner.build), imported only when called: the
    supervisor imports this package for its configuration and must not load the component's
    code (each child process loads only its own: memory, docs/benchmarks.md)."""
    from inputs.etw.runner import build as build_runner

    return build_runner(ctx, **kwargs)


__all__ = ["build"]
