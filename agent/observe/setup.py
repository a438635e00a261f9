"""What the supervisor does for the listener: the per-run directory, the listener's process,
and the publishing thread of every component (only when ``agent.http.listen`` is set)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from agent.observe.rundir import RunDir

if TYPE_CHECKING:
    from agent.config import Config
    from agent.supervisor import ChildSpec


def observe(cfg: Config, *, log: logging.Logger, owner: int | None = None) -> RunDir | None:
    """The run directory (``PROMETHEUS_MULTIPROC_DIR``) when the listener is on, else None."""
    if not cfg.agent.http.listen:
        return None
    rundir = RunDir.create(owner=owner)
    log.debug("metrics of this run in %s", rundir.path)
    return rundir


def with_listener(cfg: Config, specs: list[ChildSpec], path: str, *, version: str,
                  privileges: Any = None) -> list[ChildSpec]:
    """The specs with the publishing thread on in each, and the listener's process first."""
    from agent.observe.listener import ListenerSetup
    from agent.supervisor import ChildSpec

    http = cfg.agent.http
    for s in specs:
        s.metrics = (http.interval, http.max_path_series)
    listener = ChildSpec(role="http", kind="service", build="agent.observe.listener:build",
                         config=ListenerSetup(listen=http.listen, rundir=path, version=version,
                                              stalled_after=http.stalled_after),
                         privileges=privileges)
    return [listener, *specs]
