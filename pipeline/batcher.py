"""Batching as Vector's batcher does it: a batch is closed when it holds ``max_events`` records or
``max_bytes`` bytes, or ``max_delay`` seconds after its first event arrived, whichever comes first;
what remains is flushed at shutdown.

Events are never split: a LogEvent holding a run of lines counts for all its lines, so a batch may
exceed a limit by one event's worth."""

from __future__ import annotations

from common.events import Event, events_size


class Batcher:
    def __init__(self, *, max_events: int, max_bytes: int, max_delay: float) -> None:
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.max_delay = max_delay
        self.events: list[Event] = []
        self.count = 0
        self.nbytes = 0
        self.first_at: float | None = None

    def add(self, events: list[Event], now: float) -> None:
        if not events:
            return
        if self.first_at is None:
            self.first_at = now
        self.events.extend(events)
        lines, nbytes = events_size(events)
        self.count += lines
        self.nbytes += nbytes

    def full(self) -> bool:
        return self.count >= self.max_events or self.nbytes >= self.max_bytes

    def due(self, now: float) -> bool:
        return self.first_at is not None and now - self.first_at >= self.max_delay

    def time_left(self, now: float) -> float | None:
        """Seconds until the timer closes the batch; None when the batch is empty."""
        if self.first_at is None:
            return None
        return max(0.0, self.first_at + self.max_delay - now)

    def take(self) -> list[Event]:
        events = self.events
        self.events, self.count, self.nbytes, self.first_at = [], 0, 0, None
        return events

    def __len__(self) -> int:
        return len(self.events)
