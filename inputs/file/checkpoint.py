"""Checkpoints of the file input: for each file, its identity, path and the offset up to which
every output has acknowledged its lines. After a restart, even after kill -9 of every process,
reading resumes from there.

The file is NDJSON, one entry per line after a header, written atomically: to a temporary file in
the same directory, fsync, rename over the old one, fsync the directory. A crash leaves either
the old file or the new one. A file damaged anyway (a disk error, a copy cut short, an editor) is
read line by line: every whole entry is kept, and the rest is reported; files without an entry
are then read from their beginning, so nothing is lost that can be saved.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass

import msgspec

from common.errors import LogShuttleError
from inputs.file.fingerprint import Fingerprint

VERSION = 1


class StateError(LogShuttleError):
    """The state directory cannot be used (missing permission, not a directory, read-only)."""


class Header(msgspec.Struct, tag="log-shuttle-checkpoints", array_like=True):
    version: int
    input: str


class Entry(msgspec.Struct, tag="file", array_like=True):
    dev: int
    ino: int
    fingerprint: Fingerprint
    path: str
    offset: int


@dataclass
class Loaded:
    entries: dict[tuple[int, int], Entry]
    existed: bool
    """Whether a checkpoint file was there at all (False: the input's very first start)."""
    damaged_lines: int = 0


def default_state_dir() -> str:
    """/var/lib/log-shuttle for root; $XDG_STATE_HOME/log-shuttle (~/.local/state/...) else."""
    if os.geteuid() == 0:
        return "/var/lib/log-shuttle"
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local",
                                                            "state")
    return os.path.join(base, "log-shuttle")


class Checkpointer:
    def __init__(self, *, state_dir: str, input_name: str) -> None:
        self.state_dir = state_dir
        self.input_name = input_name
        self.path = os.path.join(state_dir, f"file-{input_name}.checkpoints")
        self._encoder = msgspec.json.Encoder()
        self._decoder = msgspec.json.Decoder(Header | Entry)
        self.written = 0

    def prepare(self) -> None:
        """Create the state directory if needed and check that it can be written."""
        try:
            os.makedirs(self.state_dir, mode=0o750, exist_ok=True)
            probe = os.path.join(self.state_dir, f".probe-{os.getpid()}")
            with open(probe, "wb"):
                pass
            os.unlink(probe)
        except OSError as exc:
            raise StateError(f"cannot use the state directory {self.state_dir}: "
                             f"{exc.strerror} (set --state-dir or [agent] state_dir)") from exc

    def load(self) -> Loaded:
        try:
            with open(self.path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return Loaded(entries={}, existed=False)
        except OSError as exc:
            raise StateError(f"cannot read {self.path}: {exc.strerror}") from exc
        entries: dict[tuple[int, int], Entry] = {}
        damaged = 0
        for line in data.split(b"\n"):
            if not line.strip():
                continue
            try:
                item = self._decoder.decode(line)
            except msgspec.DecodeError:
                damaged += 1
                continue
            if isinstance(item, Entry):
                entries[(item.dev, item.ino)] = item
        return Loaded(entries=entries, existed=True, damaged_lines=damaged)

    def save(self, entries: list[Entry]) -> None:
        lines = [self._encoder.encode(Header(VERSION, self.input_name))]
        lines += [self._encoder.encode(e) for e in entries]
        tmp = f"{self.path}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o640)
            try:
                data = memoryview(b"\n".join(lines) + b"\n")
                while data:
                    data = data[os.write(fd, data):]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self.path)
            dfd = os.open(self.state_dir, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise StateError(f"cannot write {self.path}: the disk is full") from exc
            raise StateError(f"cannot write {self.path}: {exc.strerror}") from exc
        self.written += 1
