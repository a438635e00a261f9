"""The Windows child (agent/platforms/windows_child.py) on Linux, with stand-ins for what only
Windows has. Windows cannot run here: its named file mappings and named events are replaced by
memfd mappings and eventfds looked up by the same names (a fork inherits the table, as a new
Windows interpreter would open the names). What is real: the bootstrap the supervisor's platform
builds (``bootstrap_of``), its encoding through a pipe on the child's stdin, the child's
``main`` and ``enter`` (queues and the acknowledgement board opened by name, the stop event
watched by a thread), and the one child body (agent/child.py) running a component in its own
process, with the exit code the supervisor reads."""

from __future__ import annotations

import mmap
import os
import select
import sys

import pytest

from agent.platforms import windows as win
from agent.platforms import windows_child
from agent.supervisor import ChildSpec
from common import _shm_linux, _shm_windows, shmqueue
from common.exitcodes import ExitCode
from common.progress import ProgressBoard
from common.shmqueue import ShmQueue
from tests.agent import components

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="stand-ins for Windows, on Linux")

_NAMES: dict[str, int] = {}
"""Stand-in for the Windows object namespace: a name -> a descriptor of the object."""


class NamedSegment:
    """Stands in for _shm_windows.Segment: a mapping another process opens by its ``tag``."""

    def __init__(self, *, name: str, size: int, tag: str | None = None) -> None:
        if tag is None:
            fd = os.memfd_create(name or "stand-in")
            os.ftruncate(fd, size)
            tag = f"Local\\stand-in-segment-{fd}"
            _NAMES[tag] = fd
        self.tag, self.size = tag, size
        self.mm = mmap.mmap(_NAMES[tag], size, flags=mmap.MAP_SHARED,
                            prot=mmap.PROT_READ | mmap.PROT_WRITE)

    @classmethod
    def attach(cls, *, tag: str, size: int) -> NamedSegment:
        return cls(name="", size=size, tag=tag)

    def close(self) -> None:
        self.mm.close()


class NamedSignal(_shm_linux.Signal):
    """Stands in for _shm_windows.Signal: an event another process opens by its ``tag``."""

    __slots__ = ("tag", "_owner")

    def __init__(self, *, tag: str | None = None) -> None:
        super().__init__()
        self._owner = tag is None
        if tag is None:
            tag = f"Local\\stand-in-event-{self._fd}"
            _NAMES[tag] = self._fd
        else:
            self._poll.unregister(self._fd)
            os.close(self._fd)
            self._fd = _NAMES[tag]
            self._poll.register(self._fd, select.POLLIN)
        self.tag = tag

    @classmethod
    def attach(cls, tag: str) -> NamedSignal:
        return cls(tag=tag)

    def close(self) -> None:
        if self._owner:
            super().close()


@pytest.fixture
def windows_objects(monkeypatch):
    monkeypatch.setattr(shmqueue, "_backend", lambda: (NamedSegment, NamedSignal))
    monkeypatch.setattr(_shm_windows, "Segment", NamedSegment)
    monkeypatch.setattr(_shm_windows, "Signal", NamedSignal)
    yield
    for tag, fd in list(_NAMES.items()):
        if "segment" in tag:
            os.close(fd)
    _NAMES.clear()


def run_windows_child(boot: win.Bootstrap) -> int:
    """The child's main() in a process of its own, its bootstrap on its stdin; its exit code."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(w)
        os.dup2(r, 0)
        sys.stdin = open(0, closefd=False)  # pytest's capture replaced it
        windows_child.main()
    os.close(r)
    os.write(w, win.encode_bootstrap(boot))
    os.close(w)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def test_the_child_opens_its_queues_and_board_by_name_and_acknowledges(windows_objects):
    to_child = ShmQueue.create(name="in", capacity=4096)
    from_child = ShmQueue.create(name="out", capacity=4096)
    board = ProgressBoard.create(inputs=1, outputs=1)
    stop = NamedSignal()
    try:
        spec = ChildSpec(role="output relay", kind="output", build=components.relays, config=7,
                         consumes=[to_child], produces=[from_child],
                         progress=lambda: board.output(0))
        boot = win.decode_bootstrap(win.encode_bootstrap(
            win.bootstrap_of(spec, host="h", log_level="info", stop_event=stop.tag)))
        assert boot.progress == win.ProgressRef(segment=board.segment.tag, size=board.segment.size,
                                                inputs=1, outputs=1, side="output", index=0)
        producer = to_child.producer()
        producer.put(b"hello")
        producer.put(b"world")
        producer.close()
        assert run_windows_child(boot) == ExitCode.OK
        consumer = from_child.consumer()
        assert [consumer.get(timeout=5), consumer.get(timeout=5)] == [b"HELLO", b"WORLD"]
        assert board.input(0).acked() == 7  # what the child's output wrote on the board
    finally:
        stop.close()
        for thing in (to_child, from_child, board):
            thing.destroy()


def test_the_child_gets_the_agent_identity_for_record_ids(windows_objects):
    from common.identity import Identity

    out = ShmQueue.create(name="out", capacity=4096)
    stop = NamedSignal()
    try:
        spec = ChildSpec(role="input etw", kind="output", build=components.tells_identity,
                         config=None, produces=[out],
                         identity=Identity(agent="a1b2c3d4e5f60718", session="0badcafe"))
        assert run_windows_child(win.bootstrap_of(spec, host="h", log_level="info",
                                                  stop_event=stop.tag)) == ExitCode.OK
        assert out.consumer().get(timeout=5) == b"a1b2c3d4e5f60718.0badcafe"
    finally:
        stop.close()
        out.destroy()


def test_an_input_stops_on_its_stop_event_and_a_failed_build_is_a_boot_failure(windows_objects):
    board = ProgressBoard.create(inputs=1, outputs=0)
    stop = NamedSignal()
    try:
        spec = ChildSpec(role="input waits", kind="input", build=components.waits_for_stop,
                         config=30, progress=lambda: board.input(0))
        boot = win.bootstrap_of(spec, host="h", log_level="info", stop_event=stop.tag)
        stop.set()  # the supervisor's terminate(): the child's watcher sets ctx.stop
        assert run_windows_child(boot) == ExitCode.OK
        # The listener (a service child) is terminated the same way, not left to the deadline.
        service = ChildSpec(role="http", kind="service", build=components.waits_for_stop,
                            config=5)
        assert run_windows_child(win.bootstrap_of(service, host="h", log_level="info",
                                                  stop_event=stop.tag)) == ExitCode.OK
        refused = ChildSpec(role="input refuses", kind="input", build=components.refuses,
                            config="bad")
        boot = win.bootstrap_of(refused, host="h", log_level="info", stop_event=stop.tag)
        assert boot.progress is None
        assert run_windows_child(boot) == ExitCode.BOOT
    finally:
        stop.close()
        board.destroy()
