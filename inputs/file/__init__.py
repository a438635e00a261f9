"""The file-tail input: follows files and globs like ``tail -F`` and sends their lines, in runs,
as LogEvents. Split by concern: ``config`` (its settings), ``paths`` (globs), ``watcher``
(notifications), ``registry`` (which files are followed and what became of them, reported as
``changes``), ``tailer`` (one followed file), ``fingerprint`` (identity), ``formats`` (CRI,
Docker, multiline), ``checkpoint`` (the store), ``limits`` (descriptors), ``runner`` (the loop
that reads, sends, acknowledges and checkpoints)."""

from inputs.file.runner import build

__all__ = ["build"]
