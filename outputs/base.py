"""What every output is made of: a Sink that delivers one batch and says how it went, and the
runner (outputs/runner.py) that owns the queue, retries, backoff and acknowledgements.

A sink never retries on its own: it returns a Verdict and the runner decides (Vector's way)."""

from __future__ import annotations

import enum
from typing import Protocol

from common.events import Batch


class Verdict(enum.Enum):
    OK = "ok"
    """The destination has the batch: acknowledge it."""
    RETRY = "retry"
    """Not delivered, may work later (connection refused, timeout, a retryable status)."""
    DROP = "drop"
    """Can never be delivered (the receiver rejects the data itself): count it, acknowledge it so
    that the inputs do not wait for it for ever, and go on."""


class Sink(Protocol):
    name: str

    def send(self, batch: Batch) -> Verdict:
        """Deliver one batch. May raise common.component.SinkClosed to stop the agent."""

    def close(self) -> None:
        """Flush and release; called once when the output stops."""
