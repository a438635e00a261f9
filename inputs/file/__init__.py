"""The file-tail input: follows files and globs like ``tail -F`` and sends their lines, in runs,
as LogEvents. Split by concern: ``config`` (its settings), ``paths`` (globs), ``watcher``
(notifications), ``registry`` (which files are followed and what became of them, reported as
``changes``), ``tailer`` (one followed file), ``fingerprint`` (identity), ``formats`` (CRI,
Docker, multiline), ``checkpoint`` (the store), ``limits`` (descriptors), ``runner`` (the loop
that reads, sends, acknowledges and checkpoints)."""

from __future__ import annotations

from typing import Any


def build(ctx: Any, **kwargs: Any) -> Any:
    """The component's build function (inputs.file.runner.build), imported only when called: the
    supervisor imports this package for its configuration and must not load the component's
    code (each child process loads only its own: memory, docs/benchmarks.md)."""
    from inputs.file.runner import build as build_runner

    return build_runner(ctx, **kwargs)


__all__ = ["build"]
