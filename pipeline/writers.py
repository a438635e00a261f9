"""Who writes a log file: the processes that have it open for writing, found through /proc/*/fd.

One pass over every process's descriptors answers for every file asked about at once; answers are
cached per file identity (device, inode) and asked again after ``refresh`` seconds, and for a new
identity (a new file, or the new file after a rotation) at once. A descriptor counts as a writer
when it was opened O_WRONLY or O_RDWR (``flags`` in /proc/PID/fdinfo/FD).
"""

from __future__ import annotations

import os

_WRITE = os.O_WRONLY | os.O_RDWR


def scan(identities: set[tuple[int, int]], *, proc_root: str = "/proc",
         skip: set[int] = frozenset()) -> dict[tuple[int, int], list[int]]:
    """identity -> pids that have the file open for writing (for each identity asked)."""
    found: dict[tuple[int, int], list[int]] = {key: [] for key in identities}
    if not identities:
        return found
    for entry in os.listdir(proc_root):
        if not entry.isdigit():
            continue
        pid = int(entry)
        if pid in skip:
            continue
        fd_dir = f"{proc_root}/{entry}/fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue  # gone, or not ours to look at
        for fd in fds:
            try:
                if not os.readlink(f"{fd_dir}/{fd}").startswith("/"):
                    continue  # sockets, pipes, anonymous inodes
                st = os.stat(f"{fd_dir}/{fd}")
            except OSError:
                continue
            key = (st.st_dev, st.st_ino)
            if key in found and pid not in found[key] and _writes(proc_root, entry, fd):
                found[key].append(pid)
    return found


def _writes(proc_root: str, pid: str, fd: str) -> bool:
    try:
        with open(f"{proc_root}/{pid}/fdinfo/{fd}", "rb") as f:
            for line in f:
                if line.startswith(b"flags:"):
                    return bool(int(line.split()[1], 8) & _WRITE)
    except (OSError, ValueError, IndexError):
        pass
    return False


class WriterCache:
    def __init__(self, *, refresh: float, proc_root: str = "/proc",
                 skip: set[int] = frozenset()) -> None:
        self.refresh = refresh
        self.proc_root = proc_root
        self.skip = skip
        self.known: dict[tuple[int, int], tuple[float, list[int]]] = {}
        self.scans = 0

    def writers(self, keys: set[tuple[int, int]], now: float) -> dict[tuple[int, int], list[int]]:
        """Writers of each file, scanning /proc once for those new or due."""
        due = {k for k in keys if k not in self.known or now - self.known[k][0] >= self.refresh}
        if due:
            self.scans += 1
            for key, pids in scan(due, proc_root=self.proc_root, skip=self.skip).items():
                self.known[key] = (now, pids)
        return {k: self.known[k][1] for k in keys}

    def forget_older_than(self, horizon: float) -> None:
        for key in [k for k, (t, _) in self.known.items() if t < horizon]:
            del self.known[key]
