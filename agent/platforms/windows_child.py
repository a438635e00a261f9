"""A component process on Windows: ``python -m agent.platforms.windows_child``.

The Windows side of ``agent.child``: :func:`enter` reads the
:class:`~agent.platforms.windows.Bootstrap` from stdin, opens the queues and the
acknowledgement board by name, and makes the stop flag; ``agent.child.child_main`` then builds
and runs the component and exits with the same codes as a POSIX child. An input or the listener
(a service) stops when its stop event is set (the supervisor's ``terminate``); the pipeline and
outputs stop when their queues close, as on Linux. Never run on Windows yet (docs/etw.md): the tests run :func:`enter`
on Linux with stand-ins for the Windows mapping and events.
"""

from __future__ import annotations

import signal
import socket
import sys
import threading
from collections.abc import Callable
from typing import NoReturn

from agent.child import Launch, child_main
from agent.platforms.windows import Bootstrap, ProgressRef, QueueRef, decode_bootstrap
from agent.supervisor import ChildSpec
from common import _shm_windows
from common.progress import InputProgress, OutputProgress, ProgressBoard
from common.shmqueue import ShmQueue


class SocketStop:
    """``ctx.stop`` for a Windows child: ``fileno`` is a socket, which Windows' select takes."""

    def __init__(self) -> None:
        self._r, self._w = socket.socketpair()
        self._r.setblocking(False)
        self._set = False

    def set(self) -> None:
        self._set = True
        try:
            self._w.send(b"\0")
        except OSError:
            pass

    def is_set(self) -> bool:
        return self._set

    def fileno(self) -> int:
        return self._r.fileno()


def open_queue(ref: QueueRef) -> ShmQueue:
    """The queue the supervisor made, opened by the names of its parts."""
    return ShmQueue(name=ref.name, capacity=ref.capacity,
                    segment=_shm_windows.Segment.attach(tag=ref.segment, size=ref.size),
                    data=_shm_windows.Signal.attach(ref.data), space=_shm_windows.Signal.attach(ref.space))


def open_progress(ref: ProgressRef) -> Callable[[], InputProgress | OutputProgress]:
    """The component's view of the board the supervisor made, opened by its mapping's name."""
    board = ProgressBoard.attach(_shm_windows.Segment.attach(tag=ref.segment, size=ref.size),
                                 inputs=ref.inputs, outputs=ref.outputs)
    return lambda: board.input(ref.index) if ref.side == "input" else board.output(ref.index)


def enter(boot: Bootstrap) -> Launch:
    """First thing in the new interpreter: the component, its queues and board, its stop flag."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole console group
    stop = SocketStop()
    if boot.kind in ("input", "service"):  # as on POSIX: what the supervisor terminates
        event = _shm_windows.Signal.attach(boot.stop_event)

        def watch() -> None:
            event.wait(None)
            stop.set()

        threading.Thread(target=watch, name="stop event", daemon=True).start()
    spec = ChildSpec(role=boot.role, kind=boot.kind,  # type: ignore[arg-type]
                     build=boot.build, config=boot.config,  # imported by agent.child
                     consumes=[open_queue(r) for r in boot.consumes],
                     produces=[open_queue(r) for r in boot.produces],
                     keep_stdout=boot.keep_stdout,
                     progress=open_progress(boot.progress) if boot.progress else None,
                     identity=boot.identity)
    return Launch(spec=spec, host=boot.host, log_level=boot.log_level, stop=stop)


def main() -> NoReturn:
    child_main(lambda: enter(decode_bootstrap(sys.stdin.buffer.read())))


if __name__ == "__main__":
    main()
