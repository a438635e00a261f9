"""The file input's configuration: one ``[[inputs.file]]`` table."""

from __future__ import annotations

import glob
import os
from collections.abc import Mapping
from typing import Annotated, Literal

from msgspec import Meta

from common.config import KiB, MiB, PositiveFloat, Section, directory_problems


class MultilineConfig(Section):
    start: str
    """A regular expression that matches the first line of a record (e.g. a timestamp)."""
    timeout: PositiveFloat = 1.0
    """A record is sent when no line has come for this many seconds."""

    def problems(self, *, environ: Mapping[str, str] | None = None) -> list[str]:
        from inputs.file.formats import Multiline

        try:
            Multiline(start=self.start, timeout=1, max_bytes=1)
        except ValueError as exc:
            return [f"start: {exc}"]
        return []


class FileInputConfig(Section):
    paths: list[str]
    """Files to tail; globs allowed (``*``, ``?``, ``[...]``, ``**``)."""
    name: str = "file"
    from_beginning: bool = False
    """Read files present at start from their beginning (files that appear later always are)."""
    max_line_bytes: Annotated[int, Meta(ge=64)] = 1 * MiB
    """Longer lines are split into pieces of this size, flagged as pieces."""
    read_bytes: Annotated[int, Meta(ge=4 * KiB)] = 256 * KiB
    """At most this much is read from one file per round, so that busy files do not starve others."""
    watch: Literal["auto", "inotify", "poll"] = "auto"
    """How changes are noticed: inotify, polling, or inotify with a polling fallback."""
    poll_interval: PositiveFloat = 0.25
    """Seconds between polls of open files when no notification arrives."""
    linger: Annotated[float, Meta(ge=0)] = 0.05
    """After a round that read less than ``read_bytes`` from every file, seconds to let more
    lines come before the next read: at ordinary rates one message carries many writes' lines
    instead of one write's (a fraction of the CPU per line); a file with ``read_bytes`` waiting
    is read again at once, so it costs nothing at full speed (0: read again at once)."""
    glob_interval: PositiveFloat = 2.0
    """Seconds between re-evaluations of the globs, in addition to directory notifications."""
    send_bytes: Annotated[int, Meta(ge=4 * KiB)] = 256 * KiB
    """A message to the pipeline is sent once it holds this much (and at the end of every round).
    The queues are sized from it (agent.config.queue_bytes): larger costs memory, not speed."""
    exclude: list[str] = []
    """Globs of files to leave out (``*.gz``: a name; ``/x/*/y``: a whole path)."""
    format: Literal["raw", "cri", "docker"] = "raw"
    """raw lines, or container logs: CRI (Kubernetes) or Docker json-file."""
    multiline: MultilineConfig | None = None
    """Join continuation lines to the line that starts a record."""
    checkpoint_interval: PositiveFloat = 1.0
    """Seconds between checkpoint writes (when something was acknowledged)."""
    rotate_wait: Annotated[float, Meta(ge=0)] = 5.0
    """Seconds a rotated or deleted file stays open at its end for late writes."""
    close_idle_after: PositiveFloat = 300.0
    """A file with no new bytes for this long is closed, and opened again when it changes."""
    ignore_older: Annotated[float, Meta(ge=0)] = 0.0
    """Leave alone files not modified for this many seconds (0: follow all); only what is
    added to them later is read."""
    state_dir: str = ""
    """Where this input's checkpoints go; empty means the agent's state_dir."""
    writer_from_line: bool = False
    """Take a line's writer from the pid it names, syslog style ``app[1234]:`` (a best guess)."""
    max_open_files: Annotated[int, Meta(ge=0)] = 0
    """At most this many files open at once; the others wait and are read in turn (0: the
    descriptor limit, raised to its hard limit at start, less a reserve for the process)."""

    def problems(self, *, environ: Mapping[str, str] | None = None) -> list[str]:
        out = []
        if not self.paths:
            out.append("paths: give at least one path or glob")
        for i, pattern in enumerate(self.paths):
            path = os.path.abspath(os.path.expanduser(pattern))  # as inputs.file.paths does
            if not glob.has_magic(path) and os.path.isdir(path):
                out.append(f"paths[{i}]: {pattern} is a directory, not a file: to follow the "
                           f"files in it, give a glob such as '{os.path.join(pattern, '*.log')}'")
        out += directory_problems(self.state_dir, key="state_dir")
        if self.multiline is not None:
            out += [f"multiline.{p}" for p in self.multiline.problems(environ=environ)]
        return out

    def message_bytes(self) -> int:
        """The largest message this input puts on its queue: up to ``send_bytes`` plus one
        read (or one line of up to ``max_line_bytes``)."""
        return self.send_bytes + max(self.max_line_bytes, self.read_bytes)
