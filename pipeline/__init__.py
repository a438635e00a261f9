"""The pipeline process: gathers Events from every input queue, gives each its process (the
process table: proctable.py, containers.py, writers.py, enrich.py), batches them (batcher.py) and
fans each batch out to every output queue (runner.py)."""

from __future__ import annotations

from typing import Any


def build(ctx: Any, **kwargs: Any) -> Any:
    """The component's build function (pipeline.runner.build), imported only when called: the
    supervisor imports this package for its configuration and must not load the component's
    code (each child process loads only its own: memory, docs/benchmarks.md)."""
    from pipeline.runner import build as build_runner

    return build_runner(ctx, **kwargs)


__all__ = ["build"]
