"""What every component (input, pipeline, output) gets from the process that runs it.

A component module exposes ``build(ctx: Context[ItsConfig]) -> Runner``; the configuration was
checked before any process started (``ItsConfig.problems()``, see common/config.py), so ``build``
only acquires what it needs (raising :class:`BootError` when it cannot, which stops the agent),
and ``Runner.run()`` does the work until the upstream queues close or ``ctx.stop`` is set.
Components never reach for globals: everything they need comes in through the context.
"""

from __future__ import annotations

import importlib
import logging
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from common.errors import LogShuttleError
from common.wake import Wakeup


class BootError(LogShuttleError):
    """A component cannot start with its configuration or environment. Restarting would not help,
    so the supervisor stops the whole agent with this message."""


class SinkClosed(LogShuttleError):
    """The destination went away for good (e.g. stdout closed by ``| head``): stop quietly."""


class Stop:
    """Set when the process is asked to stop (SIGTERM). ``fileno`` is readable once set, so
    that loops blocked in select/poll wake at once."""

    def __init__(self) -> None:
        self._wakeup = Wakeup()
        self._set = False

    def set(self) -> None:
        self._set = True
        self._wakeup.set()

    def is_set(self) -> bool:
        return self._set

    def fileno(self) -> int:
        return self._wakeup.fileno()

    def install(self, *signums: int) -> None:
        """Set on these signals. The handler only records; the loops act on it."""
        for signum in signums:
            signal.signal(signum, lambda _s, _f: self.set())


class Runner(Protocol):
    def run(self) -> None: ...


C = TypeVar("C")


@dataclass
class Context(Generic[C]):
    """What a component is built with; ``C`` is the component's config struct (its
    ``config.py``, or the top of a single-module output), checked before any process starts."""

    name: str
    """The component's role, e.g. ``input file`` or ``output stdout``."""
    config: C
    host: str
    stop: Stop
    consumers: list[Any] = field(default_factory=list)
    """Queues this component reads (common.shmqueue.Consumer)."""
    producers: list[Any] = field(default_factory=list)
    """Queues this component writes (common.shmqueue.Producer)."""
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("log_shuttle"))
    progress: Any = None
    """This component's view of the acknowledgement board (common.progress), if it has one."""
    identity: Any = None
    """The agent's id and session (common.identity.Identity), for record ids; None: no ids."""

    def one_consumer(self) -> Any:
        """The one queue an output reads (BootError when the plan gave it another number)."""
        return _one(self.consumers, f"{self.name}: expected one input queue")

    def one_producer(self) -> Any:
        """The one queue an input writes (BootError when the plan gave it another number)."""
        return _one(self.producers, f"{self.name}: expected one output queue")


def _one(queues: list[Any], what: str) -> Any:
    if len(queues) != 1:
        raise BootError(f"{what}, got {len(queues)}")
    return queues[0]


def resolve_build(path: str) -> Callable[[Context[Any]], Runner]:
    """The build function named ``module:function``, imported now (in the child process, so
    that heavy modules such as grpc stay out of the supervisor)."""
    module, _, name = path.partition(":")
    obj: Any = importlib.import_module(module)
    for part in name.split("."):
        obj = getattr(obj, part)
    return obj
