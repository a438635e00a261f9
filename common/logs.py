"""The agent's own messages: to stderr, one line each, never mixed with the data on stdout."""

from __future__ import annotations

import logging
import sys

LOGGER = "log_shuttle"


def setup_logging(role: str, level: str = "info") -> logging.Logger:
    """(Re)configure logging for this process: ``<time> log-shuttle[<pid>] <role> <LEVEL> msg``."""
    log = logging.getLogger(LOGGER)
    for h in list(log.handlers):
        log.removeHandler(h)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(
        f"%(asctime)s log-shuttle[%(process)d] {role} %(levelname)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(level.upper())
    log.propagate = False
    return log
