"""Linux inotify, read by the file input's own loop: no thread, no object per event.

The input sleeps in ``poll`` on the inotify descriptor and reads the events only when it is ready
for them, in one ``read`` of up to 64 KiB. Until then the kernel keeps them, and merges an event
identical to the last one queued (same watch, same mask, same name): a file appended to
a thousand times while the input lingers or reads is one IN_MODIFY, not a thousand wake-ups
(which is what a watcher thread that reads at once costs: a wake-up and a Python object per
write). The calls go through ctypes to the C library; :func:`available` says whether they exist.
"""

from __future__ import annotations

import ctypes
import os
import struct
import sys
from collections.abc import Iterator

IN_MODIFY = 0x2
IN_ATTRIB = 0x4
IN_CLOSE_WRITE = 0x8
IN_MOVED_FROM = 0x40
IN_MOVED_TO = 0x80
IN_CREATE = 0x100
IN_DELETE = 0x200
IN_DELETE_SELF = 0x400
IN_MOVE_SELF = 0x800
IN_Q_OVERFLOW = 0x4000
IN_IGNORED = 0x8000
IN_ONLYDIR = 0x0100_0000
IN_ISDIR = 0x4000_0000
IN_NONBLOCK = 0o4000  # O_NONBLOCK on Linux (os has none on Windows, where this is never used)
IN_CLOEXEC = 0o2000000  # O_CLOEXEC on Linux

ENTRY_CHANGED = IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO
"""A directory entry appeared, went or was renamed: the globs must be evaluated again."""
DIRECTORY_MASK = (IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE | ENTRY_CHANGED | IN_DELETE_SELF
                  | IN_MOVE_SELF | IN_ONLYDIR)
"""What a watched directory reports: its files written, its entries changed, itself gone."""

_HEADER = struct.Struct("iIII")  # wd, mask, cookie, len (of the NUL-padded name that follows)


def available() -> bool:
    return sys.platform.startswith("linux")


class Inotify:
    """One inotify instance: ``add`` directories, ``poll`` its ``fileno()``, ``read`` events."""

    def __init__(self) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        self._add = libc.inotify_add_watch
        self._add.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
        self._rm = libc.inotify_rm_watch
        self._rm.argtypes = [ctypes.c_int, ctypes.c_int]
        fd = libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"inotify_init1: {os.strerror(err)}")
        self._fd = fd

    def fileno(self) -> int:
        return self._fd

    def add(self, path: str, mask: int = DIRECTORY_MASK) -> int:
        """Watch ``path``; its watch descriptor (the same one again for a path watched already)."""
        wd = self._add(self._fd, os.fsencode(path), mask)
        if wd < 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), path)
        return wd

    def remove(self, wd: int) -> None:
        self._rm(self._fd, wd)  # EINVAL when the kernel dropped it already: nothing to do

    def read(self) -> Iterator[tuple[int, int, bytes]]:
        """Every event queued now, as (wd, mask, name); nothing when none is."""
        while True:
            try:
                buf = os.read(self._fd, 65536)
            except BlockingIOError:
                return
            except InterruptedError:
                continue
            pos, end = 0, len(buf)
            while pos + 16 <= end:
                wd, mask, _cookie, n = _HEADER.unpack_from(buf, pos)
                pos += 16
                yield wd, mask, buf[pos:pos + n].rstrip(b"\0")
                pos += n

    def close(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)
