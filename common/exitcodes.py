"""Exit codes, in one place: what a shell sees of ``log-shuttle`` (the agent, ``server``,
``doctor``, ``check-config``) and what a component process tells the supervisor.

The README lists the agent's codes; the supervisor maps its children's codes to its own
(``agent/supervisor.py``).
"""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    OK = 0
    """A clean stop (everything read was delivered), or a check that found nothing wrong."""
    FAILED = 1
    """The agent: a stop had to kill what was left (the drain deadline, a second Ctrl-C). A
    component process: it crashed (the supervisor restarts it). ``doctor``: a check failed."""
    CONFIG = 2
    """A configuration or usage error, found before any process started."""
    BOOT = 3
    """Something could not start (configuration, privileges, environment): the agent stops
    instead of restarting it. The server: it cannot listen or read its TLS files."""
    SINK_CLOSED = 4
    """A component process only: its destination is gone for good (stdout closed by ``| head``);
    the supervisor stops the agent quietly, with OK."""
    INTERRUPTED = 130
    """Ctrl-C before the supervisor was running (128 + SIGINT, as shells report it)."""
