"""A component process on Windows: ``python -m agent.platforms.windows_child``.

Reads its :class:`~agent.platforms.windows.Bootstrap` from stdin, opens its queues by name,
builds its component and runs it, with the exit codes of the POSIX child (``EXIT_BOOT`` when the
build fails, ``EXIT_SINK_CLOSED``, ``EXIT_CRASH``). An input stops when its stop event is set
(the supervisor's ``terminate``); the pipeline and outputs stop when their queues close, as on
Linux. Never run on Windows yet (docs/etw.md).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import threading
from typing import NoReturn

from agent.platforms.windows import Bootstrap, QueueRef, decode_bootstrap, resolve_builder
from agent.supervisor import EXIT_BOOT, EXIT_CRASH, EXIT_OK, EXIT_SINK_CLOSED
from common import _shm_windows
from common.component import BootError, Context, SinkClosed
from common.logs import setup_logging
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


def run(boot: Bootstrap) -> int:
    from setproctitle import setproctitle

    setproctitle(f"log-shuttle: {boot.role}")
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole console group
    log = setup_logging(boot.role, boot.log_level)
    stop = SocketStop()
    if boot.kind == "input":
        event = _shm_windows.Signal.attach(boot.stop_event)

        def watch() -> None:
            event.wait(None)
            stop.set()

        threading.Thread(target=watch, name="stop event", daemon=True).start()
    try:
        ctx = Context(name=boot.role, config=boot.config, host=boot.host, stop=stop,  # type: ignore[arg-type]
                      consumers=[open_queue(r).consumer() for r in boot.consumes],
                      producers=[open_queue(r).producer() for r in boot.produces], log=log)
        runner = resolve_builder(boot.build)(ctx)
    except BootError as exc:
        log.error("cannot start: %s", exc)
        return EXIT_BOOT
    try:
        runner.run()
    except SinkClosed:
        return EXIT_SINK_CLOSED
    return EXIT_OK


def main() -> NoReturn:
    code = EXIT_CRASH
    try:
        code = run(decode_bootstrap(sys.stdin.buffer.read()))
    except BaseException:
        logging.getLogger("log_shuttle").exception("crashed")
        code = EXIT_CRASH
    finally:
        logging.shutdown()
        os._exit(code)


if __name__ == "__main__":
    main()
