"""Where an output sets aside a batch it can never deliver: a dead-letter file in the state dir.

A queue message that does not decode as a Batch, or a batch whose sink raises something the
sink does not know (a bug, data it cannot render), would crash the output, and its successor
would read the same uncommitted message again, for ever. The runner (outputs/runner.py) instead
writes it here, counts it, says so once, acknowledges past it and goes on.

The file is ``<state_dir>/dead-letters/<output>.ndjson`` (``output tcp`` -> ``output-tcp.ndjson``),
``state_dir`` being the output's: under root, ``<agent state dir>/outputs``, which the
supervisor made for the user the outputs run as (agent/privileges.py).
One JSON object per line: ``time`` (RFC 3339, when it was set aside), ``output``, ``reason``
(``undecodable`` or ``send raised``), ``error`` (the exception, type and message), ``events``
(how many, when it decoded), ``bytes`` (the queue message's size) and ``message``: the queue
message itself, base64 (msgpack of common.events.Batch: ``log-shuttle`` can read it back with
BatchCodec once the bug is fixed), cut to ``max_bytes / 4`` with ``truncated`` set when longer.
The file is synced before the runner acknowledges the batch. It is bounded: past
``max_bytes / 2`` it is renamed to ``<name>.1`` (replacing the previous one) and a new one is
started, so the two never hold more than ``max_bytes``.
"""

from __future__ import annotations

import base64
import os
import re
import time
from dataclasses import dataclass

import msgspec

from common.timefmt import rfc3339_ns

MiB = 1024 * 1024


class Entry(msgspec.Struct, omit_defaults=True):
    time: str
    output: str
    reason: str
    error: str
    bytes: int
    message: str
    """The queue message, base64."""
    events: int | None = None
    truncated: bool = False


@dataclass
class DeadLetters:
    directory: str
    output: str
    """The output's role (``output tcp``): it names the file and each entry."""
    max_bytes: int = 64 * MiB
    written: int = 0
    """Entries written by this process."""
    dir_fd: int = -1
    """The directory, opened when this is made (while the output builds): an output that then
    becomes the agent's unprivileged user (agent/privileges.py) still reaches it when one of
    its parents is closed to that user; -1: by its path."""

    def __post_init__(self) -> None:
        try:
            os.makedirs(self.directory, mode=0o750, exist_ok=True)
            self.dir_fd = os.open(self.directory, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:
            self.dir_fd = -1

    @property
    def path(self) -> str:
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", self.output).strip("-") or "output"
        return os.path.join(self.directory, f"{slug}.ndjson")

    def add(self, *, message: bytes | memoryview, reason: str, error: BaseException,
            events: int | None = None) -> str:
        """Write one entry and sync it; returns the file's path. Raises OSError when the
        file cannot be written."""
        raw = bytes(message)
        keep = max(1, self.max_bytes // 4 // 4 * 3)  # base64 grows by 4/3
        entry = Entry(time=rfc3339_ns(time.time_ns()), output=self.output, reason=reason,
                      error=f"{type(error).__name__}: {error}"[:2000], bytes=len(raw),
                      message=base64.b64encode(raw[:keep]).decode("ascii"), events=events,
                      truncated=len(raw) > keep)
        line = msgspec.json.encode(entry) + b"\n"
        path = self.path
        at: dict = {}
        name = path
        if self.dir_fd >= 0:
            at, name = {"dir_fd": self.dir_fd}, os.path.basename(path)
        else:
            os.makedirs(self.directory, mode=0o750, exist_ok=True)
        try:
            size = os.stat(name, **at).st_size
        except FileNotFoundError:
            size = 0
        if size and size + len(line) > self.max_bytes // 2:
            os.replace(name, name + ".1", src_dir_fd=at.get("dir_fd"),
                       dst_dir_fd=at.get("dir_fd"))
        fd = os.open(name, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640, **at)
        try:
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)
        self.written += 1
        return path


def directory_of(state_dir: str) -> str:
    """Where the outputs of an agent with this state dir keep their dead letters."""
    return os.path.join(state_dir, "dead-letters")


def read(path: str) -> list[Entry]:
    """The entries of a dead-letter file (for tests and for whoever replays them)."""
    with open(path, "rb") as f:
        return [msgspec.json.decode(line, type=Entry) for line in f if line.strip()]


def message_of(entry: Entry) -> bytes:
    return base64.b64decode(entry.message)
