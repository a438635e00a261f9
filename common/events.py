"""The Event schema: what flows between log-shuttle's processes.

Every queue message is one encoded :class:`Batch`. Events are msgspec Structs in one tagged
union (``Event``); they are ``array_like`` to keep messages small, so a struct may only grow
at the end, with a default for every new field.

Log lines travel in runs: a :class:`LogEvent` holds the raw bytes of one or more consecutive
lines of one file, with the file's identity and the byte offset of the first line. Nothing
between the file input and an output makes a Python object per line; an output expands a
LogEvent into one record per line when it renders (see ``common.records``).
"""

from __future__ import annotations

from typing import Union

import msgspec

# LogEvent.flags
PIECE = 1
"""``data`` is one piece of a line longer than the input's maximum; ``piece`` numbers it."""
LAST_PIECE = 2
"""With PIECE: the final piece of that line (its ``data`` ends with the line's newline)."""
UNTERMINATED = 4
"""``data`` is one record that no newline ended: the file was let go (rotated or deleted) with
these bytes at its end."""


class LogEvent(msgspec.Struct, tag="log", array_like=True, frozen=True):
    """One or more consecutive lines read from one file.

    ``data`` is the file's bytes from ``offset`` on, each line ending with ``\\n`` (a piece of an
    over-long line ends with its newline only if it is the last piece). ``lines`` counts the
    records in ``data``; an event with any flag set holds exactly one record. The bytes are the
    file's own: nothing is decoded, stripped or dropped on the way.
    """

    path: str
    dev: int
    ino: int
    offset: int
    data: bytes
    lines: int
    read_ns: int
    """Wall-clock time the bytes were read, nanoseconds since the Unix epoch."""
    flags: int = 0
    piece: int = 0
    """With PIECE: 0 for the first piece of a long line, 1 for the next, and so on."""


# One tagged union of every event kind; the eBPF, process and ETW kinds join it as they land.
Event = Union[LogEvent]


class Batch(msgspec.Struct, array_like=True):
    """One queue message: the events a producer hands on in one go, in order."""

    events: list[Event]
    source: str = ""
    """Name of the component that produced the batch (for telemetry and acknowledgements)."""


class BatchCodec:
    """msgpack encoding of Batches. Make one per process and reuse it (msgspec's advice)."""

    def __init__(self) -> None:
        self._encoder = msgspec.msgpack.Encoder()
        self._decoder = msgspec.msgpack.Decoder(Batch)

    def encode(self, batch: Batch) -> bytes:
        return self._encoder.encode(batch)

    def decode(self, data: bytes | memoryview) -> Batch:
        return self._decoder.decode(data)


def event_lines(event: Event) -> int:
    """How many records an event counts for in batch limits."""
    return event.lines if isinstance(event, LogEvent) else 1


def event_bytes(event: Event) -> int:
    """The approximate payload size of an event, for batch limits."""
    return len(event.data) + 64 if isinstance(event, LogEvent) else 128
