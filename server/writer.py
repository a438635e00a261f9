"""Where the server puts what it receives: NDJSON, one object per line, in size-rotated files in a
directory (the default) or on stdout.

Each received message (an Export request, a read's worth of TCP frames) is one ``os.write`` on
a descriptor opened with O_APPEND: nothing waits in a user-space buffer, so a reply sent after
``write`` returns covers data that is in the kernel's page cache, a SIGTERM has nothing left to
flush, and a crash of the server loses nothing it acknowledged (a crash of the machine may).

Rotation: the file being written is ``received.ndjson``; once it would pass ``file_bytes`` it is
renamed ``received-N.ndjson`` (N one more than the highest there) and a new one is started; only
the ``max_files`` highest N are kept.
"""

from __future__ import annotations

import errno
import os
import re
from typing import Any

import msgspec

from common.component import BootError

CURRENT = "received.ndjson"
_ROTATED = re.compile(r"^received-(\d+)\.ndjson$")


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


class _Encoding:
    def __init__(self) -> None:
        self._encoder = msgspec.json.Encoder()

    def encode(self, records: list[dict[str, Any]]) -> bytes:
        return self._encoder.encode_lines(records)


class FileWriter(_Encoding):
    def __init__(self, *, directory: str, file_bytes: int, max_files: int) -> None:
        super().__init__()
        self.directory = directory
        self.file_bytes = file_bytes
        self.max_files = max_files
        self.records = 0
        self.rotations = 0
        try:
            os.makedirs(directory, exist_ok=True)
        except OSError as exc:
            raise BootError(f"server: cannot create the output directory {directory}: "
                            f"{exc.strerror or exc}") from exc
        self.path = os.path.join(directory, CURRENT)
        self.fd = -1
        self.size = 0
        self._open()

    def _open(self) -> None:
        try:
            self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC,
                              0o640)
        except OSError as exc:
            raise BootError(f"server: cannot write {self.path}: {exc.strerror or exc}") from exc
        self.size = os.fstat(self.fd).st_size

    def rotated(self) -> list[str]:
        """The rotated files, oldest first."""
        found = []
        for name in os.listdir(self.directory):
            if m := _ROTATED.match(name):
                found.append((int(m[1]), name))
        return [os.path.join(self.directory, n) for _, n in sorted(found)]

    def write(self, records: list[dict[str, Any]]) -> None:
        if records:
            self.write_bytes(self.encode(records), len(records))

    def write_bytes(self, data: bytes, count: int) -> None:
        if self.size and self.size + len(data) > self.file_bytes:
            self.rotate()
        _write_all(self.fd, data)
        self.size += len(data)
        self.records += count

    def sync(self) -> None:
        """What was written is on disk (the TCP receiver's acknowledged mode answers after)."""
        os.fsync(self.fd)

    def rotate(self) -> None:
        old = self.rotated()
        last = int(_ROTATED.match(os.path.basename(old[-1]))[1]) if old else 0
        os.fsync(self.fd)  # acknowledged batches may end in this file
        os.close(self.fd)
        os.rename(self.path, os.path.join(self.directory, f"received-{last + 1}.ndjson"))
        self.rotations += 1
        self._open()
        for path in self.rotated()[:-self.max_files]:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class StdoutWriter(_Encoding):
    def __init__(self, fd: int = 1) -> None:
        super().__init__()
        self.fd = fd
        self.records = 0

    def write(self, records: list[dict[str, Any]]) -> None:
        if records:
            try:
                _write_all(self.fd, self.encode(records))
            except OSError as exc:
                if exc.errno == errno.EPIPE:
                    raise BrokenPipeError("stdout was closed") from exc
                raise
            self.records += len(records)

    def sync(self) -> None:
        pass  # a pipe or a terminal: written is as durable as it gets

    def close(self) -> None:
        pass
