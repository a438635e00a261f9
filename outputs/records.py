"""From events to the records an output writes: one record per line.

This is where a LogEvent's run of lines is expanded, once, at the end of the hot path: the bytes
are decoded as UTF-8 (invalid bytes become U+FFFD and the record is flagged ``invalid_utf8``),
each line gets its own byte offset, and the batch is rendered as NDJSON or text in one call.
"""

from __future__ import annotations

from itertools import accumulate, repeat
from operator import add
from typing import Any

import msgspec

from common.events import (FORMAT_ERROR, LAST_PIECE, ONE_RECORD, PIECE, RECORD, UNTERMINATED,
                           ContainerRef, Event, LogEvent, ProcessInfo)
from common.timefmt import rfc3339_ns


class LineRecord(msgspec.Struct, omit_defaults=True):
    """One line as outputs ship it (the NDJSON object's keys, in this order)."""

    time: str
    """When the line was read, RFC 3339 UTC with nanoseconds."""
    host: str
    path: str
    offset: int
    """Byte offset of the line's first byte in the file."""
    line: str
    """The line without its newline."""
    piece: int | None = None
    """For a piece of an over-long line: its number (0, 1, ...)."""
    last_piece: bool | None = None
    invalid_utf8: bool = False
    unterminated: bool = False
    """The file was let go with this line unfinished (no newline)."""
    log_time: str | None = None
    """A container log record's own time (RFC 3339)."""
    stream: str | None = None
    """A container log record's stream."""
    format_error: bool = False
    """The line did not parse in the input's format and is shipped raw."""
    process: ProcessInfo | None = None
    """The line's writer, when one process is known for it (``how`` says how it was found)."""
    writers: list[ProcessInfo] | None = None
    """When several processes have the file open for writing: all of them."""
    container: ContainerRef | None = None
    """The container whose log the file is."""
    trace_id: str | None = None
    """The trace of the request the line was written for (pipeline/logjoin.py)."""
    span_id: str | None = None
    """That request's span."""
    request: dict[str, Any] | None = None
    """That request: ``method``, ``path``, ``status``."""
    join: str | None = None
    """``"ambiguous"``: the writer served several requests at once; no ids, on purpose."""


def _decode(raw: bytes) -> tuple[str, bool]:
    try:
        return raw.decode("utf-8"), False
    except UnicodeDecodeError:
        return raw.decode("utf-8", "replace"), True


def log_records(ev: LogEvent, host: str) -> list[LineRecord]:
    recs = _log_records(ev, host)
    for j in ev.joins:
        if j.index < len(recs):
            r = recs[j.index]
            if j.ambiguous:
                r.join = "ambiguous"
            else:
                r.trace_id, r.span_id = j.trace_id, j.span_id
                r.request = {"method": j.method, "path": j.path, "status": j.status}
    return recs


def _log_records(ev: LogEvent, host: str) -> list[LineRecord]:
    t = rfc3339_ns(ev.read_ns)
    writers = ev.writers
    process = writers[0] if len(writers) == 1 else None
    many = writers if len(writers) > 1 else None
    container = ev.container
    if ev.flags & ONE_RECORD:
        raw = ev.data[:-1] if ev.data.endswith(b"\n") and not ev.flags & RECORD else ev.data
        line, bad = _decode(raw)
        piece = ev.piece if ev.flags & PIECE else None
        last = bool(ev.flags & LAST_PIECE) if ev.flags & PIECE else None
        return [LineRecord(t, host, ev.path, ev.offset, line, piece, last, bad,
                           bool(ev.flags & UNTERMINATED),
                           rfc3339_ns(ev.time_ns) if ev.time_ns else None,
                           ev.stream or None, bool(ev.flags & FORMAT_ERROR), process, many,
                           container)]
    path = ev.path
    try:
        text = ev.data.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None and text.isascii():
        # One character per byte: offsets follow from the lengths, all in C loops.
        lines = text.split("\n")
        lines.pop()
        # offset of line i = the run's offset + the lengths of the lines before it + i newlines
        offsets = map(add, accumulate(map(len, lines), initial=ev.offset), range(len(lines)))
        if process is None and many is None and container is None:
            return list(map(LineRecord, repeat(t), repeat(host), repeat(path), offsets, lines))
        return [LineRecord(t, host, path, off, s, process=process, writers=many,
                           container=container) for off, s in zip(offsets, lines)]
    raws = ev.data.split(b"\n")
    raws.pop()
    out = []
    off = ev.offset
    for raw in raws:
        line, bad = _decode(raw)
        out.append(LineRecord(t, host, path, off, line, invalid_utf8=bad, process=process,
                              writers=many, container=container))
        off += len(raw) + 1
    return out


def event_record(ev: Event, host: str) -> dict[str, Any]:
    """Any other event as one record: its time, the host, ``type`` (its tag) and its fields."""
    fields = msgspec.structs.asdict(ev)
    ns = fields.pop("time_ns")
    if fields.get("process", 0) is None:
        del fields["process"]
    return {"time": rfc3339_ns(ns), "host": host, "type": type(ev).__struct_config__.tag,
            **fields}


def records(events: list[Event], host: str) -> list[LineRecord | dict[str, Any]]:
    out: list[LineRecord | dict[str, Any]] = []
    for ev in events:
        if isinstance(ev, LogEvent):
            out += log_records(ev, host)
        else:
            out.append(event_record(ev, host))
    return out


class Renderer:
    """Renders a batch's records as bytes: NDJSON (one object per line) or a human text form."""

    def __init__(self, *, fmt: str, host: str) -> None:
        self.fmt = fmt
        self.host = host
        self._encoder = msgspec.json.Encoder()

    def render(self, events: list[Event]) -> bytes:
        recs = records(events, self.host)
        if self.fmt == "ndjson":
            return self._encoder.encode_lines(recs)
        return "".join(map(_text_line, recs)).encode("utf-8", "replace")


def _text_line(r: LineRecord | dict[str, Any]) -> str:
    if isinstance(r, dict):
        rest = " ".join(f"{k}={v}" for k, v in r.items() if k not in ("time", "host", "type"))
        return f"{r['time']} {r['host']} [{r['type']}] {rest}\n"
    mark = ""
    if r.piece is not None:
        mark = f"[piece {r.piece}{', last' if r.last_piece else ''}] "
    if r.unterminated:
        mark += "[no newline] "
    return f"{r.time} {r.host} {r.path}:{r.offset} {mark}{r.line}\n"
