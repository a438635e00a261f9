"""Telling the user that a receiver is failing: once when it starts, then periodically.

The runner retries a batch for as long as it takes; a warning per attempt would flood the log,
and none would hide the outage. A :class:`FailureReporter` logs the first failure at once, a new
kind of failure at once, the same one again every ``every`` seconds with how long it has lasted,
and clears itself on success (the runner says "delivering again").
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field


@dataclass
class FailureReporter:
    who: str
    log: logging.Logger
    every: float = 30.0
    clock: object = time.monotonic
    since: float | None = None
    attempts: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    """Counters, one per kind of failure (``connect``, ``tls``, ``write``, a gRPC code...)."""
    _last_reason: str = ""
    _last_logged: float = 0.0

    def failed(self, kind: str, reason: str, *, level: int = logging.WARNING) -> None:
        now = self.clock()
        self.counts[kind] = self.counts.get(kind, 0) + 1
        self.attempts += 1
        if self.since is None:
            self.since = now
        if reason != self._last_reason:
            self.log.log(level, "%s: %s; the batch is held and retried with backoff",
                         self.who, reason)
        elif now - self._last_logged >= self.every:
            self.log.log(level, "%s: still failing after %.0fs (%d attempts): %s", self.who,
                         now - self.since, self.attempts, reason)
        else:
            return
        self._last_reason = reason
        self._last_logged = now

    def ok(self) -> None:
        self.since = None
        self.attempts = 0
        self._last_reason = ""
