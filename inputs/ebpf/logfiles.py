"""Which (pid, fd) are log files the agent tails, told to the logwrite probe's ``logfds`` map.

The file inputs' path globs (the plan hands them to the eBPF input as ``log_paths``) are
expanded every ``interval`` seconds; every process's descriptors (/proc/PID/fd) that point to one
of those files and were opened for writing (O_WRONLY/O_RDWR, /proc/PID/fdinfo) are put in the
map, and those gone are taken out. A fork copies the parent's entries to the child at once (it
inherits the descriptors); a close() is forgotten by the probe itself. A process that opens a
log file between two scans is followed from the next scan on: its writes before are not seen,
and its lines are not joined.
"""

from __future__ import annotations

import ctypes
import glob
import os
from typing import Any

_WRITE = os.O_WRONLY | os.O_RDWR


class LogFiles:
    def __init__(self, globs: list[str], *, table: Any = None, interval: float = 2.0,
                 skip: frozenset[int] = frozenset(), proc_root: str = "/proc") -> None:
        self.globs = list(globs)
        self.table = table
        self.interval = interval
        self.skip = skip
        self.proc_root = proc_root
        self.fds: dict[tuple[int, int], tuple[int, int]] = {}
        """(pid, fd) -> (device, inode) of the log file."""
        self.next_scan = 0.0
        self.scans = 0

    def file_of(self, pid: int, fd: int) -> tuple[int, int] | None:
        return self.fds.get((pid, fd))

    def followed(self) -> set[tuple[int, int]]:
        """(device, inode) of the files whose writes the probe notes now."""
        return set(self.fds.values())

    def due(self, now: float) -> bool:
        return now >= self.next_scan

    def files(self) -> dict[tuple[int, int], str]:
        out: dict[tuple[int, int], str] = {}
        for pattern in self.globs:
            for path in glob.glob(pattern, recursive=True):
                try:
                    st = os.stat(path)
                except OSError:
                    continue
                if not os.path.isdir(path):
                    out[(st.st_dev, st.st_ino)] = path
        return out

    def scan(self, now: float) -> int:
        """Look again; returns how many descriptors are followed."""
        self.next_scan = now + self.interval
        self.scans += 1
        wanted = self.files()
        found: dict[tuple[int, int], tuple[int, int]] = {}
        if wanted:
            for entry in os.listdir(self.proc_root):
                if not entry.isdigit() or int(entry) in self.skip:
                    continue
                fd_dir = f"{self.proc_root}/{entry}/fd"
                try:
                    fds = os.listdir(fd_dir)
                except OSError:
                    continue
                for fd in fds:
                    try:
                        if not os.readlink(f"{fd_dir}/{fd}").startswith("/"):
                            continue
                        st = os.stat(f"{fd_dir}/{fd}")
                    except OSError:
                        continue
                    ident = (st.st_dev, st.st_ino)
                    if ident in wanted and self._writes(entry, fd):
                        found[(int(entry), int(fd))] = ident
        for key in self.fds.keys() - found.keys():
            self._kernel_del(key)
        for key in found.keys() - self.fds.keys():
            self._kernel_add(key)
        self.fds = found
        return len(found)

    def forked(self, parent: int, child: int) -> None:
        """The child inherited the parent's descriptors."""
        for (pid, fd), ident in list(self.fds.items()):
            if pid == parent and (child, fd) not in self.fds:
                self.fds[(child, fd)] = ident
                self._kernel_add((child, fd))

    def _writes(self, pid: str, fd: str) -> bool:
        try:
            with open(f"{self.proc_root}/{pid}/fdinfo/{fd}", "rb") as f:
                for line in f:
                    if line.startswith(b"flags:"):
                        return bool(int(line.split()[1], 8) & _WRITE)
        except (OSError, ValueError, IndexError):
            pass
        return False

    def _kernel_add(self, key: tuple[int, int]) -> None:
        if self.table is not None:
            try:
                self.table[ctypes.c_uint64(key[0] << 32 | key[1])] = ctypes.c_uint32(1)
            except Exception:  # the map is full: that descriptor is not followed
                pass

    def _kernel_del(self, key: tuple[int, int]) -> None:
        if self.table is not None:
            try:
                del self.table[ctypes.c_uint64(key[0] << 32 | key[1])]
            except Exception:  # already gone (the probe forgets closed descriptors)
                pass
