"""Fixtures shared by every test. The autouse ones fail a test that leaks a thread, a child
process or a shared-memory segment (watchdog's habit)."""

from __future__ import annotations

import os
import threading
import time

import pytest


def _children() -> set[int]:
    pids: set[int] = set()
    for tid in os.listdir(f"/proc/{os.getpid()}/task"):
        try:
            with open(f"/proc/{os.getpid()}/task/{tid}/children") as f:
                pids.update(int(p) for p in f.read().split())
        except OSError:
            pass
    return pids


def _agents() -> set[int]:
    """Processes titled log-shuttle: in this test run's sessions (an orphan is not our child any
    more, but it keeps its session)."""
    from tests.harness import SESSIONS

    mine = SESSIONS | {os.getsid(0)}
    pids = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    if f.read().startswith(b"log-shuttle:") and os.getsid(int(entry)) in mine:
                        pids.add(int(entry))
            except OSError:
                pass
    return pids


# Segments other programs make on purpose and keep: podman's lock file (the deploy tests).
_NOT_OURS = ("libpod_lock",)


def _shm() -> set[str]:
    try:
        return {n for n in os.listdir("/dev/shm") if not n.startswith(_NOT_OURS)}
    except OSError:
        return set()


def _settle(check, timeout: float = 5.0):
    """Poll ``check`` until it returns a falsy leak report or the timeout passes."""
    deadline = time.monotonic() + timeout
    leaked = check()
    while leaked and time.monotonic() < deadline:
        time.sleep(0.05)
        leaked = check()
    return leaked


@pytest.fixture(autouse=True)
def no_leaks():
    threads = set(threading.enumerate())
    children = _children()
    agents = _agents()
    shm = _shm()
    yield
    leaked_threads = _settle(lambda: [t for t in threading.enumerate()
                                      if t not in threads and t.is_alive()])
    leaked_children = _settle(lambda: _children() - children)
    leaked_agents = _settle(lambda: _agents() - agents - _children())
    leaked_shm = _settle(lambda: _shm() - shm)
    problems = []
    if leaked_threads:
        problems.append(f"threads left running: {leaked_threads}")
    if leaked_children:
        problems.append(f"child processes left: {sorted(leaked_children)}")
        for pid in leaked_children:
            try:
                os.kill(pid, 9)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
    if leaked_agents:
        problems.append(f"log-shuttle processes left running: {sorted(leaked_agents)}")
        for pid in leaked_agents:
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass
    if leaked_shm:
        problems.append(f"/dev/shm segments left: {sorted(leaked_shm)}")
    assert not problems, "; ".join(problems)
