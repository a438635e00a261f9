"""The supervisor's OS layer on Windows: a new interpreter per child, stop events, a job object.

Windows has no fork, so a child cannot inherit the supervisor's objects as they are. Instead:

- ``spawn`` starts ``python -m agent.platforms.windows_child`` and writes a :class:`Bootstrap`
  to its stdin: the component's role, kind, builder (``module:qualname``), configuration
  (pickled msgspec Structs), its queues by the names of their mapping and events, and its seat
  on the acknowledgement board by the name of the board's mapping, which the child opens
  (``common._shm_windows``). Only the stdout output gets the agent's stdout. The child then runs
  ``agent.child.child_main``, as a forked child does on POSIX.
- ``terminate`` sets the child's stop event (its own named event; the child's watcher thread
  turns it into ``ctx.stop``), where POSIX sends SIGTERM. ``kill`` is TerminateProcess.
- At the first spawn the supervisor puts itself in a job object with KILL_ON_JOB_CLOSE; its
  children are born in the job, so they die with the supervisor (PR_SET_PDEATHSIG on Linux).
- The wake-up is a socket pair: Windows' ``select`` and ``signal.set_wakeup_fd`` take sockets
  only. Ctrl-C is SIGINT; Ctrl-Break (what a service manager or ``taskkill`` sends a console
  process group) is mapped to SIGTERM.

Everything that talks to Windows is reached only through :class:`WindowsPlatform` on Windows;
the bootstrap encoding and the pure helpers are tested on Linux. This module was never run on
Windows (docs/etw.md).
"""

from __future__ import annotations

import os
import pickle
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from common import _shm_windows
from common.component import resolve_build
from common.progress import InputProgress, OutputProgress

CHILD_MODULE = "agent.platforms.windows_child"


@dataclass(frozen=True)
class QueueRef:
    """A queue as a child process finds it: by the names of its mapping and events."""

    name: str
    capacity: int
    segment: str
    size: int
    data: str
    space: str


@dataclass(frozen=True)
class ProgressRef:
    """A component's seat on the acknowledgement board, as a child process finds it."""

    segment: str
    size: int
    inputs: int
    outputs: int
    side: Literal["input", "output"]
    index: int


@dataclass(frozen=True)
class Bootstrap:
    """Everything a Windows child needs to build and run its component."""

    role: str
    kind: str
    build: str
    """``module:qualname`` of the component's build function."""
    config: Any
    consumes: list[QueueRef] = field(default_factory=list)
    produces: list[QueueRef] = field(default_factory=list)
    host: str = ""
    log_level: str = "info"
    stop_event: str = ""
    parent_pid: int = 0
    keep_stdout: bool = False
    progress: ProgressRef | None = None
    identity: Any = None
    """The agent's id and session (common.identity.Identity) for record ids."""


def builder_path(fn: Callable[..., Any] | str) -> str:
    """``module:qualname`` of a module-level function (what a new interpreter can import);
    a path given as such (the registry's, agent/components.py) is passed on as it is."""
    if isinstance(fn, str):
        return fn
    path = f"{fn.__module__}:{fn.__qualname__}"
    if "<" in fn.__qualname__ or resolve_builder(path) is not fn:
        raise ValueError(f"{path} is not a module-level function a child process can import")
    return path


resolve_builder = resolve_build
"""The build function a ``module:qualname`` names (common.component's, which the child uses)."""


def queue_ref(queue: Any) -> QueueRef:
    """The names a child opens ``queue`` by (a ShmQueue made with the Windows backend)."""
    segment = queue._segment  # the queue's parts; only the Windows backend's carry names
    return QueueRef(name=queue.name, capacity=queue.capacity, segment=segment.tag,
                    size=segment.size, data=queue._data.tag, space=queue._space.tag)


def progress_ref(view: InputProgress | OutputProgress) -> ProgressRef:
    """Where a component sits on the board (the view ``ChildSpec.progress`` gives), by the name
    of the board's mapping (a board made with the Windows backend)."""
    board = view.board
    side: Literal["input", "output"] = "input" if isinstance(view, InputProgress) else "output"
    return ProgressRef(segment=board.segment.tag, size=board.segment.size, inputs=board.inputs,
                       outputs=board.outputs, side=side, index=view.index)


def encode_bootstrap(boot: Bootstrap) -> bytes:
    return pickle.dumps(boot, protocol=pickle.HIGHEST_PROTOCOL)


def decode_bootstrap(data: bytes) -> Bootstrap:
    """The child's side. The bytes come from its parent through an anonymous pipe."""
    boot = pickle.loads(data)
    if not isinstance(boot, Bootstrap):
        raise TypeError(f"expected a Bootstrap, got {type(boot).__name__}")
    return boot


def bootstrap_of(spec: Any, *, host: str, log_level: str, stop_event: str) -> Bootstrap:
    """What a new interpreter needs to run ``spec`` (an ``agent.supervisor.ChildSpec``). The
    board view is made here only to learn where the component sits on it."""
    return Bootstrap(role=spec.role, kind=spec.kind, build=builder_path(spec.build),
                     config=spec.config, consumes=[queue_ref(q) for q in spec.consumes],
                     produces=[queue_ref(q) for q in spec.produces], host=host,
                     log_level=log_level, stop_event=stop_event, parent_pid=os.getpid(),
                     keep_stdout=spec.keep_stdout,
                     progress=progress_ref(spec.progress()) if spec.progress else None,
                     identity=getattr(spec, "identity", None))


def child_command() -> list[str]:
    return [sys.executable, "-m", CHILD_MODULE]


class SocketWaker:
    """A self-pipe made of a socket pair, which Windows can select on and signals can write to."""

    def __init__(self) -> None:
        self._r, self._w = socket.socketpair()
        self._r.setblocking(False)
        self._w.setblocking(False)

    def fileno(self) -> int:
        return self._r.fileno()

    def write_fd(self) -> int:
        return self._w.fileno()

    def set(self) -> None:
        try:
            self._w.send(b"\0")
        except BlockingIOError:
            pass

    def clear(self) -> None:
        try:
            while self._r.recv(4096):
                pass
        except BlockingIOError:
            pass

    def close(self) -> None:
        self._r.close()
        self._w.close()


class WindowsPlatform:
    name = "windows"

    def __init__(self) -> None:
        self._procs: dict[int, subprocess.Popen] = {}
        self._stops: dict[int, _shm_windows.Signal] = {}
        self._job: Any = None

    def wakeup(self) -> SocketWaker:
        return SocketWaker()

    def hold_signals(self, names: Sequence[str]) -> None:
        pass  # Windows has no signal mask; a Ctrl-Break during start-up ends the process

    def install_signals(self, names: Sequence[str], handler: Callable[[int, Any], None],
                        wakeup: SocketWaker) -> None:
        signal.signal(signal.SIGINT, handler)
        signal.signal(signal.SIGTERM, handler)
        if hasattr(signal, "SIGBREAK"):
            signal.signal(signal.SIGBREAK, lambda _s, f: handler(signal.SIGTERM, f))
        signal.set_wakeup_fd(wakeup.write_fd(), warn_on_full_buffer=False)

    def spawn(self, spec: Any, *, host: str, log_level: str, stdout_fd: int = -1) -> int:
        self._ensure_job()
        stop = _shm_windows.Signal()
        boot = bootstrap_of(spec, host=host, log_level=log_level, stop_event=stop.tag)
        out = stdout_fd if spec.keep_stdout and stdout_fd >= 0 else sys.stderr.fileno()
        proc = subprocess.Popen(child_command(), stdin=subprocess.PIPE, stdout=out, close_fds=True)
        assert proc.stdin is not None
        proc.stdin.write(encode_bootstrap(boot))
        proc.stdin.close()
        self._procs[proc.pid] = proc
        self._stops[proc.pid] = stop
        return proc.pid

    def terminate(self, pid: int) -> None:
        stop = self._stops.get(pid)
        if stop is not None:
            stop.set()

    def stop_service(self, pid: int) -> None:
        self.terminate(pid)  # its stop event: only the supervisor sets it

    def kill(self, pid: int) -> None:
        proc = self._procs.get(pid)
        if proc is not None and proc.poll() is None:
            proc.kill()

    def reap(self) -> list[tuple[int, int]]:
        out = []
        for pid, proc in list(self._procs.items()):
            code = proc.poll()
            if code is not None:
                self._forget(pid)
                out.append((pid, code))
        return out

    def wait(self, pid: int) -> None:
        proc = self._procs.get(pid)
        if proc is not None:
            proc.wait()
            self._forget(pid)

    def _forget(self, pid: int) -> None:
        self._procs.pop(pid, None)
        stop = self._stops.pop(pid, None)
        if stop is not None:
            stop.close()

    def _ensure_job(self) -> None:
        if self._job is None:
            self._job = _kill_on_close_job()


def _kill_on_close_job() -> Any:
    """A job object with KILL_ON_JOB_CLOSE holding this process, so that its children (born in
    it) die with it. Failure is survivable (logged by the caller's absence of the guarantee)."""
    import ctypes
    from ctypes import c_int64, c_uint32, c_uint64, c_void_p

    class IO_COUNTERS(ctypes.Structure):
        _fields_ = [(n, c_uint64) for n in ("ReadOperationCount", "WriteOperationCount",
                                            "OtherOperationCount", "ReadTransferCount",
                                            "WriteTransferCount", "OtherTransferCount")]

    class BASIC_LIMIT(ctypes.Structure):
        _fields_ = [("PerProcessUserTimeLimit", c_int64), ("PerJobUserTimeLimit", c_int64),
                    ("LimitFlags", c_uint32), ("MinimumWorkingSetSize", ctypes.c_size_t),
                    ("MaximumWorkingSetSize", ctypes.c_size_t), ("ActiveProcessLimit", c_uint32),
                    ("Affinity", ctypes.c_size_t), ("PriorityClass", c_uint32),
                    ("SchedulingClass", c_uint32)]

    class EXTENDED_LIMIT(ctypes.Structure):
        _fields_ = [("BasicLimitInformation", BASIC_LIMIT), ("IoInfo", IO_COUNTERS),
                    ("ProcessMemoryLimit", ctypes.c_size_t), ("JobMemoryLimit", ctypes.c_size_t),
                    ("PeakProcessMemoryUsed", ctypes.c_size_t), ("PeakJobMemoryUsed", ctypes.c_size_t)]

    JobObjectExtendedLimitInformation = 9
    JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE = 0x2000
    k = ctypes.WinDLL("kernel32", use_last_error=True)  # type: ignore[attr-defined]
    k.CreateJobObjectW.restype = c_void_p
    k.CreateJobObjectW.argtypes = [c_void_p, c_void_p]
    k.SetInformationJobObject.argtypes = [c_void_p, ctypes.c_int, c_void_p, c_uint32]
    k.AssignProcessToJobObject.argtypes = [c_void_p, c_void_p]
    k.GetCurrentProcess.restype = c_void_p
    job = k.CreateJobObjectW(None, None)
    if not job:
        return False
    info = EXTENDED_LIMIT()
    info.BasicLimitInformation.LimitFlags = JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE
    if not k.SetInformationJobObject(job, JobObjectExtendedLimitInformation, ctypes.byref(info),
                                     ctypes.sizeof(info)):
        return False
    if not k.AssignProcessToJobObject(job, k.GetCurrentProcess()):
        return False
    return job  # kept open for the supervisor's lifetime: closing it would kill the children
