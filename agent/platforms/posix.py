"""The supervisor's OS layer on Linux and other POSIX systems: fork, signals, waitpid, and what a
forked component process sets up before it runs (:meth:`PosixPlatform.enter`).

Imports anywhere (the signals that Windows lacks are looked up when used); runs on POSIX only.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Any

from agent.child import Launch, child_main
from common.component import Stop
from common.exitcodes import ExitCode
from common.wake import Wakeup


def _held() -> set[int]:
    """The signals held across a fork (and from the start of the agent to its handlers)."""
    return {signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD}


def release_signals() -> None:
    """In a child: let the signals held across the fork through, to its own handlers."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _held())


class PosixPlatform:
    name = "posix"

    def __init__(self) -> None:
        self._wakeups: list[Wakeup] = []
        self._installed: tuple[str, ...] = ()

    def wakeup(self) -> Wakeup:
        w = Wakeup()
        self._wakeups.append(w)  # a child closes it: it is the supervisor's
        return w

    def hold_signals(self, names: Sequence[str]) -> None:
        signal.pthread_sigmask(signal.SIG_BLOCK, {getattr(signal, n) for n in names})

    def install_signals(self, names: Sequence[str], handler: Callable[[int, Any], None],
                        wakeup: Wakeup) -> None:
        self._installed = tuple(names)
        for name in names:
            signal.signal(getattr(signal, name), handler)
        signal.set_wakeup_fd(wakeup.write_fd(), warn_on_full_buffer=False)
        # What arrived while they were held is delivered now, to the handler.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {getattr(signal, n) for n in names})

    def spawn(self, spec: Any, *, host: str, log_level: str, stdout_fd: int = -1) -> int:
        # The supervisor is single-threaded when it forks: the child inherits the queues as they are.
        # Signals are held across the fork: one that came in between would otherwise reach the
        # child while it still has the supervisor's handler, and be lost. The child releases
        # them once its own handlers are in place (release_signals, in enter).
        parent = os.getpid()
        held = signal.pthread_sigmask(signal.SIG_BLOCK, _held())
        pid = os.fork()
        if pid == 0:
            child_main(lambda: self.enter(spec, parent=parent, host=host, log_level=log_level,
                                          stdout_fd=stdout_fd))  # never returns: os._exit
        signal.pthread_sigmask(signal.SIG_SETMASK, held)
        return pid

    def enter(self, spec: Any, *, parent: int, host: str, log_level: str,
              stdout_fd: int) -> Launch:
        """In the fork, first thing: the process as a component needs it."""
        privileges = getattr(spec, "privileges", None)
        if privileges is not None:
            _drop(privileges, spec.role)  # before anything of the component runs
        _die_with_parent(parent)
        _keep_freed_memory()
        signal.set_wakeup_fd(-1)
        for name in self._installed:
            signal.signal(getattr(signal, name), signal.SIG_DFL)
        # Ctrl-C reaches the whole process group; only the supervisor acts on it.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        for w in self._wakeups:
            w.close()
        if stdout_fd >= 0:
            # Only the stdout output keeps the agent's stdout; fd 1 of the rest is stderr.
            os.dup2(stdout_fd if spec.keep_stdout else 2, 1)
            os.close(stdout_fd)
        stop = Stop()
        if spec.kind == "input":
            stop.install(signal.SIGTERM)
        elif spec.kind == "service":
            # Stopped last, by the supervisor alone (stop_service): a SIGTERM to the whole group
            # must leave /ready answering through the drain.
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            stop.install(signal.SIGUSR1)
        else:
            # The pipeline and outputs stop when their queues close and drain, never on a
            # signal: a SIGTERM to the whole group (systemd, timeout) must not cut the drain.
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        release_signals()
        built = None
        if privileges is not None and privileges.user is not None:
            built = lambda: _become_user(privileges, parent)  # noqa: E731
        return Launch(spec=spec, host=host, log_level=log_level, stop=stop, built=built)

    def terminate(self, pid: int) -> None:
        self._send(pid, signal.SIGTERM)

    def stop_service(self, pid: int) -> None:
        self._send(pid, signal.SIGUSR1)

    def kill(self, pid: int) -> None:
        self._send(pid, signal.SIGKILL)

    @staticmethod
    def _send(pid: int, sig: int) -> None:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass

    def reap(self) -> list[tuple[int, int]]:
        out = []
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return out
            if pid == 0:
                return out
            out.append((pid, os.waitstatus_to_exitcode(status)))

    def wait(self, pid: int) -> None:
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass


MALLOC_MMAP_THRESHOLD = 16 * 1024 * 1024
MALLOC_TRIM_THRESHOLD = 8 * 1024 * 1024
MALLOC_TOP_PAD = 4 * 1024 * 1024


def _keep_freed_memory() -> None:
    """Have glibc's malloc keep the memory of freed messages for the next ones.

    Every child allocates and frees buffers of hundreds of KiB to a few MiB per message (reads,
    encoded batches, rendered payloads). With glibc's defaults those come from fresh mmaps, or
    from heap that is trimmed back to the kernel when freed, so every message page-faults its
    buffers in again: measured, that was most of the file input's CPU (4.7 s of kernel time for
    10M lines; 0.3 s with this) and half of what the agent spent per line. Larger thresholds
    keep the freed pages mapped: the peak is the same, only the refaulting goes; a process that
    runs out of work gives them back (common.memory.IdleTrim). No-op where mallopt is missing
    (musl, other systems)."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except AttributeError:
        return
    M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3
    mallopt(M_MMAP_THRESHOLD, MALLOC_MMAP_THRESHOLD)
    mallopt(M_TRIM_THRESHOLD, MALLOC_TRIM_THRESHOLD)
    mallopt(M_TOP_PAD, MALLOC_TOP_PAD)


def _drop(privileges: Any, role: str) -> None:
    """Become what the supervisor worked out for this child (agent/privileges.py); a child
    that cannot is not run (exit BOOT: the agent stops with the message)."""
    from agent.privileges import PrivilegeError, apply

    try:
        apply(privileges)
    except PrivilegeError as exc:
        os.write(2, f"log-shuttle: {role}: {exc}\n".encode())
        os._exit(ExitCode.BOOT)


def _become_user(privileges: Any, parent: int) -> None:
    """After the build: the user, no capabilities (agent/privileges.py). Raises
    PrivilegeError (the component does not run)."""
    from agent.privileges import become_user

    become_user(privileges)
    _die_with_parent(parent)  # a change of user clears PR_SET_PDEATHSIG: set it again


def _die_with_parent(parent: int) -> None:
    """Have the kernel SIGKILL this child when the supervisor dies, however it dies: an agent
    without its supervisor would run on unwatched (and the file input resumes from its
    checkpoints when the agent is started again)."""
    if sys.platform.startswith("linux"):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # it died before the line above took effect
        os._exit(ExitCode.FAILED)
