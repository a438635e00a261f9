"""The neutral record view every output renders from: a batch's events as what they say, in no
output's shape (no host, no formatted time, no JSON keys).

A LogEvent's run of lines is expanded here, once, at the end of the hot path: the bytes are
decoded as UTF-8 (invalid bytes become U+FFFD and the line is flagged), and each line gets its
byte offset. The result is one :class:`LineRun` per event, column by column (the lines' texts and
their offsets in two lists), so that viewing a batch makes no Python object per line besides the
line's own string and offset; each renderer (outputs.ndjson for NDJSON and text, outputs.syslog,
outputs.otlp) makes the one object per line its format needs, and nothing else (NDJSON of a run
of plain lines skips the view: outputs.ndjson renders those from the event's bytes, in C, and
any other event from its values, ``event_object``). Any other event is one :class:`EventRecord`:
its kind, time and fields.
"""

from __future__ import annotations

from collections.abc import Iterable
from itertools import accumulate
from operator import add
from typing import Any

import msgspec

from common.events import (FORMAT_ERROR, LAST_PIECE, ONE_RECORD, PIECE, RECORD, UNTERMINATED,
                           ContainerRef, Event, LogEvent, ProcessInfo)
from common.identity import Identity, event_id, line_prefix


class LineRun:
    """The lines of one LogEvent. ``texts[i]`` is line i without its newline; ``offsets``
    iterates the byte offsets of their first bytes in the file; ``invalid`` is None when every
    line was valid UTF-8, else one flag per line."""

    __slots__ = ("path", "read_ns", "texts", "_offsets", "_first", "invalid", "piece",
                 "last_piece", "unterminated", "time_ns", "stream", "format_error", "process",
                 "writers", "container", "joins", "id_prefix")

    def __init__(self, ev: LogEvent, texts: list[str], offsets: list[int] | None,
                 invalid: list[bool] | None, id_prefix: str = "") -> None:
        self.id_prefix = id_prefix
        """Each line's record id is this and its offset (common.identity); "": no ids."""
        self.path = ev.path
        self.read_ns = ev.read_ns
        """When the lines were read, ns since the epoch."""
        self.texts = texts
        self._offsets = offsets
        """None: one byte per character (ASCII), the offsets follow from the lengths (made on
        first use)."""
        self._first = ev.offset
        self.invalid = invalid
        flags = ev.flags
        self.piece: int | None = ev.piece if flags & PIECE else None
        """For a piece of an over-long line: its number (0, 1, ...); else None."""
        self.last_piece: bool | None = bool(flags & LAST_PIECE) if flags & PIECE else None
        self.unterminated = bool(flags & UNTERMINATED)
        """The file was let go with this line unfinished (no newline)."""
        self.time_ns = ev.time_ns
        """A container log record's own time (0: none)."""
        self.stream = ev.stream
        self.format_error = bool(flags & FORMAT_ERROR)
        writers = ev.writers
        self.process: ProcessInfo | None = writers[0] if len(writers) == 1 else None
        """The lines' writer, when one process is known for them."""
        self.writers: list[ProcessInfo] | None = writers if len(writers) > 1 else None
        """When several processes have the file open for writing: all of them."""
        self.container: ContainerRef | None = ev.container
        self.joins = ev.joins
        """The lines joined to their requests (or found ambiguous): LineJoins by line index."""

    @property
    def offsets(self) -> list[int]:
        """The lines' byte offsets, in order (on the ASCII fast path made on first use, in C
        loops, and kept: a renderer takes them twice, for the offsets and for the ids)."""
        if self._offsets is None:
            texts = self.texts
            # offset of line i = the run's offset + the lengths of the lines before it + i
            # newlines
            self._offsets = list(map(add, accumulate(map(len, texts), initial=self._first),
                                     range(len(texts))))
        return self._offsets

    @property
    def ids(self) -> Iterable[str] | None:
        """The lines' record ids, in order (a new iterator each time); None without ids."""
        if not self.id_prefix:
            return None
        return map(self.id_prefix.__add__, map(str, self.offsets))


class EventRecord:
    """Any event but a LogEvent: its tag (``process``, ``http``...), its time (ns since the
    epoch), its enriched process if any, and its other fields in declaration order."""

    __slots__ = ("kind", "time_ns", "process", "fields", "event", "id")

    def __init__(self, ev: Event, identity: Identity | None = None) -> None:
        fields = msgspec.structs.asdict(ev)
        self.kind: str = type(ev).__struct_config__.tag
        self.time_ns: int = fields.pop("time_ns", 0)
        self.process: ProcessInfo | None = fields.pop("process", None)
        seq = fields.pop("seq", 0)
        self.id: str = event_id(identity.agent, identity.session, seq) \
            if identity is not None and seq else ""
        """Its record id (common.identity), once the pipeline numbered it; "": none."""
        self.fields: dict[str, Any] = fields
        self.event = ev


def _decode(raw: bytes) -> tuple[str, bool]:
    try:
        return raw.decode("utf-8"), False
    except UnicodeDecodeError:
        return raw.decode("utf-8", "replace"), True


def line_run(ev: LogEvent, agent: str = "") -> LineRun:
    """The lines of one LogEvent, decoded, with their offsets (and, given the agent's id, the
    prefix of their record ids)."""
    prefix = line_prefix(agent, ev.fid)
    if ev.flags & ONE_RECORD:
        raw = ev.data[:-1] if ev.data.endswith(b"\n") and not ev.flags & RECORD else ev.data
        line, bad = _decode(raw)
        return LineRun(ev, [line], [ev.offset], [bad] if bad else None, prefix)
    try:
        text = ev.data.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None and text.isascii():
        # One character per byte: offsets follow from the lengths, all in C loops.
        lines = text.split("\n")
        lines.pop()
        return LineRun(ev, lines, None, None, prefix)
    raws = ev.data.split(b"\n")
    raws.pop()
    texts, offsets, invalid = [], [], []
    off = ev.offset
    for raw in raws:
        line, bad = _decode(raw)
        texts.append(line)
        offsets.append(off)
        invalid.append(bad)
        off += len(raw) + 1
    return LineRun(ev, texts, offsets, invalid if any(invalid) else None, prefix)


def view(events: list[Event], identity: Identity | None = None) -> list[LineRun | EventRecord]:
    """A batch's events as the neutral view, in order: one item per event; with the agent's
    identity, every record with its id."""
    agent = identity.agent if identity is not None else ""
    return [line_run(ev, agent) if type(ev) is LogEvent else EventRecord(ev, identity)
            for ev in events]
