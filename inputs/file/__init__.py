"""The file-tail input: follows files and globs like ``tail -F`` and sends their lines, in runs,
as LogEvents. Split by concern: ``paths`` (globs), ``watcher`` (notifications), ``tailer`` (one
followed file), ``runner`` (the loop that ties them to the queue)."""

from inputs.file.runner import build

__all__ = ["build"]
