"""The supervisor: starts one process per component, watches them, restarts the ones that crash,
and drains them on stop. Modelled on gunicorn's arbiter:

- signal handlers only record the signal; the main loop handles it (``handle_<name>``);
- a table ``pid -> Child``, reaped with ``waitpid(-1, WNOHANG)``;
- a child that exits with ExitCode.BOOT failed at start: the agent stops instead of restarting it;
- a crashed child is restarted with exponential backoff (reset once it has run for a while);
- stop = SIGTERM to the inputs, wait while the data drains to a deadline, then SIGKILL.

Draining follows the data, and only the supervisor closes queues: the inputs (SIGTERM) stop
reading, send what they hold and exit; as each child ends during a stop, the supervisor closes the
queues it produced into; the pipeline sees every input queue closed and empty, flushes and exits;
the outputs write what is left and exit. The pipeline and outputs ignore SIGTERM, so a signal to
the whole process group (systemd's default, ``timeout``) cannot cut the drain short, and a dead
child never holds it up.

The supervisor owns the queues: it creates them before the first fork and destroys them last.
What a child process does, from its first line to its exit, is ``agent.child``; how it is started
(fork, or a new interpreter on Windows) is the platform's (``agent.platforms``).

The agent's exit code comes from what happened, not from messages: ``BOOT`` when a child could
not start, ``FAILED`` when the stop had to kill what was left (the drain deadline, a second
Ctrl-C), else ``OK``.
"""

from __future__ import annotations

import enum
import logging
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from agent.platforms import current as current_platform
from common.component import Context, Runner
from common.exitcodes import ExitCode
from common.shmqueue import ShmQueue
from common.wake import wait_readable

STABLE_AFTER = 10.0
"""A child that ran this many seconds before it crashed restarts with the initial backoff."""


@dataclass
class ChildSpec:
    """One component process."""

    role: str
    """Shown in ``ps`` as ``log-shuttle: <role>`` and in every log line of the child."""
    kind: Literal["input", "pipeline", "output", "service"]
    build: Callable[[Context], Runner] | str
    """The build function, or its ``module:function`` (imported in the child only)."""
    config: Any
    consumes: list[ShmQueue] = field(default_factory=list)
    produces: list[ShmQueue] = field(default_factory=list)
    keep_stdout: bool = False
    """Only the stdout output keeps the agent's stdout; every other child writes fd 1 to stderr."""
    progress: Callable[[], Any] | None = None
    """Called in the child: its view of the acknowledgement board (``board.input(i)`` or
    ``board.output(o)``; the Windows platform calls it once more to learn the seat's name)."""
    identity: Any = None
    """The agent's id and session (common.identity.Identity) for record ids (POSIX: inherited
    through fork; Windows: in the child's bootstrap)."""
    metrics: tuple[float, int] | None = None
    """With the agent's HTTP listener on: (interval, max_path_series) of the thread that
    publishes this component's counters (agent/observe/publish.py); None: off."""
    capabilities: tuple[str, ...] = ()
    """What its component declares it needs when the agent runs as root (agent/components.py)."""
    privileges: Any = None
    """What the child keeps when the agent runs as root (agent.privileges.Privileges), applied
    first thing in the child; None: as it is (not root)."""


@dataclass
class Child:
    spec: ChildSpec
    pid: int | None = None
    started: float = 0.0
    backoff: float = 0.0
    due: float | None = 0.0
    """Monotonic time at which to (re)start it; None while it runs or once it is done."""
    restarts: int = 0
    stop_sent: bool = False
    """A service told to stop (once the data's children are gone)."""


class Kill(enum.Enum):
    """Why the supervisor kills the children that are left."""

    DEADLINE = "the drain deadline passed"
    INTERRUPT = "a second interrupt"
    EXITING = "the supervisor is exiting"


class Supervisor:
    SIGNALS = ("SIGINT", "SIGTERM", "SIGCHLD", "SIGHUP")

    def __init__(
        self,
        specs: list[ChildSpec],
        owned: list[Any],
        *,
        host: str,
        log_level: str = "info",
        drain_timeout: float = 10.0,
        backoff: float = 0.5,
        backoff_max: float = 30.0,
        log: logging.Logger,
        rundir: Any = None,
    ) -> None:
        self.children = [Child(spec=s, backoff=backoff) for s in specs]
        self.owned = owned
        """Shared memory this process made (queues, the board): destroyed when it exits."""
        self.host = host
        self.log_level = log_level
        self.drain_timeout = drain_timeout
        self.backoff_initial = backoff
        self.backoff_max = backoff_max
        self.log = log
        self.pids: dict[int, Child] = {}
        self.signals: list[int] = []
        self.platform = current_platform()  # fork/signals/waitpid, or their Windows counterparts
        self.wakeup = self.platform.wakeup()
        self.stopping = False
        self.deadline = 0.0
        self.boot_failed = False
        """A child could not start: the agent exits with ExitCode.BOOT."""
        self.killed: Kill | None = None
        """Set when a stop had to kill a child (not when the supervisor itself is failing)."""
        self.stdout_fd = -1
        self.rundir = rundir
        """agent/observe/rundir.RunDir with the listener on: the table of children goes there."""
        self.started_at = time.time()

    # --- main loop ------------------------------------------------------------------------------

    def run(self) -> int:
        """Run until stopped; return the agent's exit code."""
        self.stdout_fd = os.dup(1)
        os.dup2(2, 1)  # nothing the supervisor does can reach the data on stdout
        self._install_signals()
        try:
            # Consumers first, so that the first batches find someone to read them.
            for kind in ("service", "output", "pipeline", "input"):
                for child in self.children:
                    if child.spec.kind == kind:
                        self.spawn(child)
            while not self._done():
                self._sleep()
                while self.signals:
                    sig = self.signals.pop(0)
                    getattr(self, f"handle_{signal.Signals(sig).name[3:].lower()}")()
                self.reap()
                self._start_due()
                if self.stopping and time.monotonic() >= self.deadline:
                    self._kill_remaining(Kill.DEADLINE)
        finally:
            self._kill_remaining(Kill.EXITING)
            for thing in self.owned:
                thing.destroy()
            self.wakeup.close()
            os.close(self.stdout_fd)
        return self.exit_code()

    def exit_code(self) -> ExitCode:
        """The agent's exit code, from what happened."""
        if self.boot_failed:
            return ExitCode.BOOT
        if self.killed is not None:
            return ExitCode.FAILED
        return ExitCode.OK

    def _done(self) -> bool:
        return self.stopping and not self.pids

    def _sleep(self) -> None:
        now = time.monotonic()
        timeout = 1.0
        for child in self.children:
            if child.due is not None and child.pid is None:
                timeout = min(timeout, max(0.0, child.due - now))
        if self.stopping:
            timeout = min(timeout, max(0.0, self.deadline - now))
        try:
            wait_readable([self.wakeup.fileno()], timeout)
        except InterruptedError:
            pass
        self.wakeup.clear()

    # --- signals --------------------------------------------------------------------------------

    def _install_signals(self) -> None:
        self.platform.install_signals(self.SIGNALS, self._on_signal, self.wakeup)

    def _on_signal(self, signum: int, _frame: Any) -> None:
        self.signals.append(signum)  # nothing else happens in a handler

    def handle_int(self) -> None:
        if self.stopping:
            self._kill_remaining(Kill.INTERRUPT)
            return
        self.log.info("interrupted: draining (up to %.0fs; interrupt again to stop now)",
                      self.drain_timeout)
        self.stop()

    def handle_term(self) -> None:
        if not self.stopping:
            self.log.info("SIGTERM: draining (up to %.0fs)", self.drain_timeout)
            self.stop()

    def handle_hup(self) -> None:
        self.log.info("SIGHUP ignored: restart the agent to load a new configuration")

    def handle_chld(self) -> None:
        pass  # reap() runs after every wake-up

    # --- children -------------------------------------------------------------------------------

    def spawn(self, child: Child) -> None:
        spec = child.spec
        if child.restarts:
            for q in spec.produces:
                q.reopen()
        pid = self.platform.spawn(spec, host=self.host, log_level=self.log_level,
                                  stdout_fd=self.stdout_fd)
        child.pid = pid
        child.started = time.monotonic()
        child.due = None
        self.pids[pid] = child
        self.log.debug("started %s (pid %d)", spec.role, pid)
        self._publish_children()

    def reap(self) -> None:
        for pid, code in self.platform.reap():
            child = self.pids.pop(pid, None)
            if child is None:
                continue
            child.pid = None
            if self.rundir is not None:
                self.rundir.forget(pid)
            self._exited(child, pid, code)
            self._publish_children()
        self._stop_services()

    def _exited(self, child: Child, pid: int, code: int) -> None:
        role = child.spec.role
        how = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exited with {code}"
        if self.stopping:
            self.log.debug("%s (pid %d) %s", role, pid, how)
            self._close_downstream(child)
            return
        if code == ExitCode.BOOT:
            self.log.error("stopping: %s could not start (its message is above)", role)
            self.boot_failed = True
            self._close_downstream(child)
            self.stop()
            return
        if code == ExitCode.SINK_CLOSED:
            self.log.debug("%s: its destination closed; stopping", role)
            self._close_downstream(child)
            self.stop()
            return
        ran = time.monotonic() - child.started
        if ran >= STABLE_AFTER:
            child.backoff = self.backoff_initial
        delay = child.backoff
        child.backoff = min(child.backoff * 2, self.backoff_max)
        child.restarts += 1
        child.due = time.monotonic() + delay
        self.log.warning("%s (pid %d) %s; restarting in %.1fs", role, pid, how, delay)

    def _publish_children(self) -> None:
        """The table of children, for the listener (``/status``, restarts, CPU and memory)."""
        if self.rundir is None:
            return
        table = {"pid": os.getpid(), "started": self.started_at, "stopping": self.stopping,
                 "children": [{"role": c.spec.role, "kind": c.spec.kind, "pid": c.pid,
                               "restarts": c.restarts} for c in self.children]}
        try:
            self.rundir.write_children(table)
        except OSError as exc:
            self.log.debug("cannot write the table of children: %s", exc)

    def _start_due(self) -> None:
        if self.stopping:
            return
        now = time.monotonic()
        for child in self.children:
            if child.pid is None and child.due is not None and child.due <= now:
                self.spawn(child)

    def _close_downstream(self, child: Child) -> None:
        for q in child.spec.produces:
            q.producer().close()

    # --- stopping -------------------------------------------------------------------------------

    def stop(self) -> None:
        """Begin the drain: the inputs stop, the rest follows as the queues close."""
        if self.stopping:
            return
        self.stopping = True
        self.deadline = time.monotonic() + self.drain_timeout
        for child in self.children:
            if child.pid is None:
                child.due = None
                self._close_downstream(child)  # a child waiting to restart will not drain
            elif child.spec.kind == "input":
                self._signal(child, "terminate")
        self._publish_children()  # /ready: "the agent is stopping"
        self._stop_services()

    def _stop_services(self) -> None:
        """While stopping: the services (the HTTP listener) go once nothing else runs, so
        that /ready, /status and /metrics show the drain to its end."""
        if not self.stopping or any(c.spec.kind != "service" for c in self.pids.values()):
            return
        for child in self.pids.values():
            if not child.stop_sent:
                child.stop_sent = True
                self.platform.stop_service(child.pid)

    def _signal(self, child: Child, how: Literal["terminate", "kill"]) -> None:
        """SIGTERM / SIGKILL on POSIX; a stop event / TerminateProcess on Windows."""
        if child.pid is not None:
            getattr(self.platform, how)(child.pid)

    def _kill_remaining(self, why: Kill) -> None:
        if not self.pids:
            return
        if why is not Kill.EXITING:
            self.killed = why
        self.log.warning("killing %s: %s", ", ".join(c.spec.role for c in self.pids.values()),
                         why.value)
        for child in list(self.pids.values()):
            self._signal(child, "kill")
        for pid in list(self.pids):
            self.platform.wait(pid)
            self.pids.pop(pid, None)

