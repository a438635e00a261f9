"""The supervisor's OS layer on Linux and other POSIX systems: fork, signals, waitpid."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from common.wake import Wakeup


_HELD = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD}


def release_signals() -> None:
    """In a child: let the signals held across the fork through, to its own handlers."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _HELD)

class PosixPlatform:
    name = "posix"

    def wakeup(self) -> Wakeup:
        return Wakeup()

    def hold_signals(self, names: Sequence[str]) -> None:
        signal.pthread_sigmask(signal.SIG_BLOCK, {getattr(signal, n) for n in names})

    def install_signals(self, names: Sequence[str], handler: Callable[[int, Any], None],
                        wakeup: Wakeup) -> None:
        for name in names:
            signal.signal(getattr(signal, name), handler)
        signal.set_wakeup_fd(wakeup.write_fd(), warn_on_full_buffer=False)
        # What arrived while they were held is delivered now, to the handler.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {getattr(signal, n) for n in names})

    def spawn(self, child_main: Callable[[], NoReturn], spec: Any, *, host: str, log_level: str,
              stdout_fd: int = -1) -> int:
        # The supervisor is single-threaded when it forks: the child inherits the queues as they are.
        # Signals are held across the fork: one that came in between would otherwise reach the
        # child while it still has the supervisor's handler, and be lost. The child releases
        # them once its own handlers are in place (release_signals).
        held = signal.pthread_sigmask(signal.SIG_BLOCK, _HELD)
        pid = os.fork()
        if pid == 0:
            child_main()  # never returns: it ends with os._exit
        signal.pthread_sigmask(signal.SIG_SETMASK, held)
        return pid

    def terminate(self, pid: int) -> None:
        self._send(pid, signal.SIGTERM)

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
