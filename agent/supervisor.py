"""The supervisor: starts one process per component, watches them, restarts the ones that crash,
and drains them on stop. Modelled on gunicorn's arbiter:

- signal handlers only record the signal; the main loop handles it (``handle_<name>``);
- a table ``pid -> Child``, reaped with ``waitpid(-1, WNOHANG)``;
- a child that exits with EXIT_BOOT failed at start: the agent stops instead of restarting it;
- a crashed child is restarted with exponential backoff (reset once it has run for a while);
- stop = SIGTERM to the inputs, wait while the data drains to a deadline, then SIGKILL.

Draining follows the data, and only the supervisor closes queues: the inputs (SIGTERM) stop
reading, send what they hold and exit; as each child ends during a stop, the supervisor closes the
queues it produced into; the pipeline sees every input queue closed and empty, flushes and exits;
the outputs write what is left and exit. The pipeline and outputs ignore SIGTERM, so a signal to
the whole process group (systemd's default, ``timeout``) cannot cut the drain short, and a dead
child never holds it up.

The supervisor owns the queues: it creates them before the first fork and destroys them last.
"""

from __future__ import annotations

import logging
import os
import select
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, NoReturn

from agent.platforms import current as current_platform
from common.component import BootError, Context, Runner, SinkClosed, Stop, resolve_build
from common.logs import setup_logging
from common.shmqueue import ShmQueue

EXIT_OK = 0
EXIT_CRASH = 1
EXIT_BOOT = 3
"""A child could not start (configuration, privileges, environment): stop the agent."""
EXIT_SINK_CLOSED = 4
"""An output's destination is gone for good (stdout closed): stop the agent quietly."""

STABLE_AFTER = 10.0
"""A child that ran this many seconds before it crashed restarts with the initial backoff."""


@dataclass
class ChildSpec:
    """One component process."""

    role: str
    """Shown in ``ps`` as ``log-shuttle: <role>`` and in every log line of the child."""
    kind: Literal["input", "pipeline", "output"]
    build: Callable[[Context], Runner] | str
    """The build function, or its ``module:function`` (imported in the child only)."""
    config: Any
    consumes: list[ShmQueue] = field(default_factory=list)
    produces: list[ShmQueue] = field(default_factory=list)
    keep_stdout: bool = False
    """Only the stdout output keeps the agent's stdout; every other child writes fd 1 to stderr."""
    progress: Callable[[], Any] | None = None
    """Called in the child: its view of the acknowledgement board."""


@dataclass
class Child:
    spec: ChildSpec
    pid: int | None = None
    started: float = 0.0
    backoff: float = 0.0
    due: float | None = 0.0
    """Monotonic time at which to (re)start it; None while it runs or once it is done."""
    restarts: int = 0


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
        self.exit_code = EXIT_OK
        self.stdout_fd = -1
        self.supervisor_pid = 0

    # --- main loop ------------------------------------------------------------------------------

    def run(self) -> int:
        """Run until stopped; return the agent's exit code."""
        self.supervisor_pid = os.getpid()
        self.stdout_fd = os.dup(1)
        os.dup2(2, 1)  # nothing the supervisor does can reach the data on stdout
        self._install_signals()
        try:
            # Consumers first, so that the first batches find someone to read them.
            for kind in ("output", "pipeline", "input"):
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
                    self._kill_remaining("the drain deadline passed")
        finally:
            self._kill_remaining("the supervisor is exiting")
            for thing in self.owned:
                thing.destroy()
            self.wakeup.close()
            os.close(self.stdout_fd)
        return self.exit_code

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
            select.select([self.wakeup.fileno()], [], [], timeout)
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
            self._kill_remaining("a second interrupt")
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
        pid = self.platform.spawn(lambda: self._child_main(spec), spec, host=self.host,
                                  log_level=self.log_level, stdout_fd=self.stdout_fd)
        child.pid = pid
        child.started = time.monotonic()
        child.due = None
        self.pids[pid] = child
        self.log.debug("started %s (pid %d)", spec.role, pid)

    def _child_main(self, spec: ChildSpec) -> NoReturn:
        code = EXIT_CRASH
        try:
            _die_with_parent(self.supervisor_pid)
            _keep_freed_memory()
            signal.set_wakeup_fd(-1)
            for name in self.SIGNALS:
                signal.signal(getattr(signal, name), signal.SIG_DFL)
            # Ctrl-C reaches the whole process group; only the supervisor acts on it.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGHUP, signal.SIG_IGN)
            self.wakeup.close()
            os.dup2(self.stdout_fd if spec.keep_stdout else 2, 1)
            os.close(self.stdout_fd)
            from setproctitle import setproctitle

            setproctitle(f"log-shuttle: {spec.role}")
            log = setup_logging(spec.role, self.log_level)
            stop = Stop()
            if spec.kind == "input":
                stop.install(signal.SIGTERM)
            else:
                # The pipeline and outputs stop when their queues close and drain, never on a
                # signal: a SIGTERM to the whole group (systemd, timeout) must not cut the drain.
                signal.signal(signal.SIGTERM, signal.SIG_IGN)
            if hasattr(signal, "pthread_sigmask"):
                from agent.platforms.posix import release_signals

                release_signals()
            try:
                ctx = Context(
                    name=spec.role, config=spec.config, host=self.host, stop=stop,
                    consumers=[q.consumer() for q in spec.consumes],
                    producers=[q.producer() for q in spec.produces], log=log,
                    progress=spec.progress() if spec.progress else None)
                build = resolve_build(spec.build) if isinstance(spec.build, str) else spec.build
                runner = build(ctx)
            except BootError as exc:
                log.error("cannot start: %s", exc)
                code = EXIT_BOOT
            else:
                runner.run()
                code = EXIT_OK
        except SinkClosed:
            code = EXIT_SINK_CLOSED
        except BootError as exc:  # found once running (e.g. inotify refused): no restart loop
            logging.getLogger("log_shuttle").error("cannot start: %s", exc)
            code = EXIT_BOOT
        except BaseException:
            logging.getLogger("log_shuttle").exception("%s crashed", spec.role)
            code = EXIT_CRASH
        finally:
            try:
                logging.shutdown()
            finally:
                os._exit(code)

    def reap(self) -> None:
        for pid, code in self.platform.reap():
            child = self.pids.pop(pid, None)
            if child is None:
                continue
            child.pid = None
            self._exited(child, pid, code)

    def _exited(self, child: Child, pid: int, code: int) -> None:
        role = child.spec.role
        how = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exited with {code}"
        if self.stopping:
            self.log.debug("%s (pid %d) %s", role, pid, how)
            self._close_downstream(child)
            return
        if code == EXIT_BOOT:
            self.log.error("stopping: %s could not start (its message is above)", role)
            self.exit_code = EXIT_BOOT
            self._close_downstream(child)
            self.stop()
            return
        if code == EXIT_SINK_CLOSED:
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

    def _signal(self, child: Child, how: Literal["terminate", "kill"]) -> None:
        """SIGTERM / SIGKILL on POSIX; a stop event / TerminateProcess on Windows."""
        if child.pid is not None:
            getattr(self.platform, how)(child.pid)

    def _kill_remaining(self, why: str) -> None:
        if not self.pids:
            return
        self.log.warning("killing %s: %s", ", ".join(c.spec.role for c in self.pids.values()), why)
        for child in list(self.pids.values()):
            self._signal(child, "kill")
        for pid in list(self.pids):
            self.platform.wait(pid)
            self.pids.pop(pid, None)
        if self.exit_code == EXIT_OK and why == "the drain deadline passed":
            self.exit_code = EXIT_CRASH


MALLOC_MMAP_THRESHOLD = 16 * 1024 * 1024
MALLOC_TRIM_THRESHOLD = 32 * 1024 * 1024
MALLOC_TOP_PAD = 4 * 1024 * 1024


def _keep_freed_memory() -> None:
    """Have glibc's malloc keep the memory of freed messages for the next ones.

    Every child allocates and frees buffers of hundreds of KiB to a few MiB per message (reads,
    encoded batches, rendered payloads). With glibc's defaults those come from fresh mmaps, or
    from heap that is trimmed back to the kernel when freed, so every message page-faults its
    buffers in again: measured, that was most of the file input's CPU (4.7 s of kernel time for
    10M lines; 0.3 s with this) and half of what the agent spent per line. Larger thresholds
    keep the freed pages mapped: the peak is the same, only the refaulting goes. No-op where
    mallopt is missing (musl, other systems)."""
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
        os._exit(EXIT_CRASH)
