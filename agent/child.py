"""One component process (an input, the pipeline, an output) from its first line to its exit, the
same on every OS.

The supervisor's platform starts the process and calls :func:`child_main` in it with ``enter``,
the platform's own part, which runs first and returns a :class:`Launch`:

- POSIX (``agent.platforms.posix``): in the fork, reset the supervisor's signal handlers, ignore
  Ctrl-C, die with the supervisor (PR_SET_PDEATHSIG), point fd 1 at stderr unless the component
  is the stdout output, and make the stop flag (SIGTERM sets it, for an input);
- Windows (``agent.platforms.windows_child``): in a new interpreter, read the bootstrap from
  stdin, open the queues and the acknowledgement board by name, and make the stop flag (set
  from the supervisor's stop event).

Then :func:`child_main` does the rest in one place: the process title, logging, the component's
context, ``build`` (imported here when the spec names it ``module:function``) and ``run``, and the exit code the supervisor acts on
(:class:`common.exitcodes.ExitCode`): ``BOOT`` when the component cannot start (no restart
loop), ``SINK_CLOSED`` when its destination is gone, ``FAILED`` for a crash, ``OK`` otherwise.
"""

from __future__ import annotations

import gc
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn

from common.component import BootError, Context, SinkClosed, resolve_build
from common.errors import LogShuttleError
from common.exitcodes import ExitCode
from common.logs import setup_logging

if TYPE_CHECKING:
    from agent.supervisor import ChildSpec


@dataclass
class Launch:
    """What the platform's part hands on: the component, where it runs, and its stop flag."""

    spec: ChildSpec
    host: str
    log_level: str
    stop: Any
    """``ctx.stop``: ``set()``, ``is_set()``, and a ``fileno()`` that is readable once set."""
    built: Callable[[], None] | None = None
    """Called once the component is built, before it runs (POSIX under root: the output or
    listener becomes the agent's user, agent/privileges.py)."""


def child_main(enter: Callable[[], Launch]) -> NoReturn:
    """The body of every component process; ends the process with its exit code."""
    code = ExitCode.FAILED
    try:
        code = run(enter())
    except BaseException:  # the platform's part failed: nothing ran yet
        logging.getLogger("log_shuttle").exception("a component process could not be set up")
        code = ExitCode.FAILED
    finally:
        try:
            logging.shutdown()
        finally:
            os._exit(code)


def run(launch: Launch) -> ExitCode:
    """Build the component and run it until it is done; its exit code. Raises nothing."""
    spec = launch.spec
    log = logging.getLogger("log_shuttle")
    try:
        from setproctitle import setproctitle

        setproctitle(f"log-shuttle: {spec.role}")
        log = setup_logging(spec.role, launch.log_level)
        try:
            ctx = Context(
                name=spec.role, config=spec.config, host=launch.host, stop=launch.stop,
                consumers=[q.consumer() for q in spec.consumes],
                producers=[q.producer() for q in spec.produces], log=log,
                progress=spec.progress() if spec.progress else None,
                identity=getattr(spec, "identity", None))
            build = resolve_build(spec.build) if isinstance(spec.build, str) else spec.build
            runner = build(ctx)
        except BootError as exc:
            log.error("cannot start: %s", exc)
            return ExitCode.BOOT
        if launch.built is not None:
            try:
                launch.built()
            except LogShuttleError as exc:
                log.error("cannot start: %s", exc)
                return ExitCode.BOOT
        publisher = _publisher(spec, runner, ctx)
        # What start-up made (modules, the process table's rundown...) lives as long as the
        # process: out of the collector's sight, a full collection no longer walks all of it
        # (at 5,000 HTTP requests/s, 1.4 -> 0.5 us per request of the agent's CPU).
        gc.collect()
        gc.freeze()
        try:
            runner.run()
        finally:
            if publisher is not None:
                publisher.stop()  # the totals it leaves are exact
        return ExitCode.OK
    except SinkClosed:
        return ExitCode.SINK_CLOSED
    except BootError as exc:  # found once running (e.g. inotify refused): no restart loop
        log.error("cannot start: %s", exc)
        return ExitCode.BOOT
    except BaseException:
        log.exception("%s crashed", spec.role)
        return ExitCode.FAILED


def _publisher(spec: ChildSpec, runner: Any, ctx: Context[Any]) -> Any:
    """The thread that publishes the component's counters (agent/observe/publish.py), when the
    agent's HTTP listener is on; else None."""
    if getattr(spec, "metrics", None) is None or spec.kind == "service":
        return None
    from agent.observe.publish import Publisher

    interval, max_paths = spec.metrics
    publisher = Publisher(role=spec.role, kind=spec.kind, runner=runner,
                          consumers=ctx.consumers, interval=interval, max_paths=max_paths)
    publisher.start()
    return publisher
