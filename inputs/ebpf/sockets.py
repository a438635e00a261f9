"""The TCP connections that were open before the agent: the http probe follows the sockets it
sees accepted or connected, so those older ones are found here, in /proc, at start.

A socket is a descriptor whose link reads ``socket:[INODE]``; it is a TCP connection when that
inode is in ``/proc/PID/net/tcp`` or ``tcp6`` of its network namespace (read once per
namespace) with the state ESTABLISHED. The result is the probe's key: ``pid << 32 | fd``.
Processes that go away while we look are skipped.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

TCP_ESTABLISHED = "01"


def _established_inodes(pid: str) -> set[int]:
    """Inodes of the ESTABLISHED TCP sockets in the network namespace of ``pid``."""
    out: set[int] = set()
    for name in ("tcp", "tcp6"):
        try:
            with open(f"/proc/{pid}/net/{name}") as f:
                next(f, None)  # the column names
                for line in f:
                    cols = line.split()
                    if len(cols) > 9 and cols[3] == TCP_ESTABLISHED:
                        out.add(int(cols[9]))
        except (OSError, ValueError):
            continue
    return out


def _pids() -> Iterable[str]:
    try:
        return [p for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return []


def established_socket_keys(*, skip_pid: int = 0) -> list[int]:
    """``pid << 32 | fd`` of every descriptor of a running process that is an established TCP
    connection (every network namespace the processes are in)."""
    by_netns: dict[int, set[int]] = {}
    keys: list[int] = []
    for pid in _pids():
        if int(pid) == skip_pid:
            continue
        try:
            netns = os.stat(f"/proc/{pid}/ns/net").st_ino
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        sockets: list[tuple[int, int]] = []
        for fd in fds:
            try:
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if link.startswith("socket:["):
                sockets.append((int(fd), int(link[8:-1])))
        if not sockets:
            continue
        inodes = by_netns.get(netns)
        if inodes is None:
            inodes = by_netns[netns] = _established_inodes(pid)
        base = int(pid) << 32
        keys.extend(base | fd for fd, inode in sockets if inode in inodes)
    return keys
