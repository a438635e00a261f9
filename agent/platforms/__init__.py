"""What the supervisor needs of the operating system, behind one small interface.

The supervisor starts, signals, reaps and waits for its children, and sleeps on a wake-up that
signals interrupt. Those are the only OS-specific things it does; :class:`Platform` names them
and :func:`current` picks the implementation, in this one place (one_collect's OS-trait pattern):

- ``posix.PosixPlatform``: fork, POSIX signals, ``waitpid``, a self-pipe with
  ``signal.set_wakeup_fd``; in the fork, what only POSIX has (signal dispositions,
  PR_SET_PDEATHSIG, malloc tuning). The end-to-end tests run it.
- ``windows.WindowsPlatform``: a new interpreter per child (``subprocess`` with an explicit list
  of inherited handles), a per-child stop event instead of SIGTERM, TerminateProcess instead of
  SIGKILL, a kill-on-close job object instead of PR_SET_PDEATHSIG, a socket pair for the wake-up
  (``select`` and ``set_wakeup_fd`` take only sockets there). Never run on Windows yet: see
  docs/etw.md.

Either way the component process then runs ``agent.child.child_main``, the one body of every
child. Every module here imports on any OS (tests/agent/test_windows_imports.py).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Any, Protocol


class Waker(Protocol):
    """A wake-up the supervisor's loop selects on; signals write to ``write_fd``."""

    def fileno(self) -> int: ...
    def write_fd(self) -> int: ...
    def set(self) -> None: ...
    def clear(self) -> None: ...
    def close(self) -> None: ...


class Platform(Protocol):
    name: str

    def wakeup(self) -> Waker:
        """A new wake-up for the supervisor's loop."""

    def hold_signals(self, names: Sequence[str]) -> None:
        """Hold (block) these signals from the start of the agent until install_signals, so that
        a stop asked for during start-up is handled as a stop, not by the default action."""

    def install_signals(self, names: Sequence[str], handler: Callable[[int, Any], None],
                        wakeup: Waker) -> None:
        """Route the stop / interrupt signals to ``handler`` (which only records them) and have
        them wake ``wakeup``; signals held meanwhile are delivered then. Names this OS lacks are
        skipped or mapped (Windows: CTRL_BREAK -> SIGTERM)."""

    def spawn(self, spec: Any, *, host: str, log_level: str, stdout_fd: int = -1) -> int:
        """Start one component process for ``spec`` (an ``agent.supervisor.ChildSpec``) that
        runs ``agent.child.child_main``; return its pid. POSIX forks; Windows starts a new
        interpreter that rebuilds the component from ``spec``. Its stdout is ``stdout_fd`` when
        ``spec.keep_stdout``, else stderr. The stop signals reach it only once its own handlers
        are in place."""

    def terminate(self, pid: int) -> None:
        """Ask a child to stop and drain (SIGTERM). A child already gone is not an error."""

    def stop_service(self, pid: int) -> None:
        """Ask a service child (the HTTP listener) to stop, once the data's children are gone:
        a signal of its own (SIGUSR1), which a SIGTERM to the whole group (systemd's default
        KillMode, ``timeout``) is not, so it answers through a drain. A child already gone is
        not an error."""

    def kill(self, pid: int) -> None:
        """End a child now (SIGKILL). A child already gone is not an error."""

    def reap(self) -> list[tuple[int, int]]:
        """Children that ended since the last call, without waiting: (pid, exit code), the code
        negative when a signal ended the child (``os.waitstatus_to_exitcode``)."""

    def wait(self, pid: int) -> None:
        """Wait for one child to end (after ``kill``) and forget it."""


def current() -> Platform:
    """The implementation for this OS: the one place where it is chosen."""
    if sys.platform == "win32":
        from agent.platforms.windows import WindowsPlatform

        return WindowsPlatform()
    from agent.platforms.posix import PosixPlatform

    return PosixPlatform()
