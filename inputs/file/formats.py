"""Turning runs of raw lines into records, for inputs that need it (per file, stateful):

- ``cri``: the CRI container log format, ``<time> <stream> <P|F> <text>``; partial (P) records
  of a stream are joined up to the final (F) one. The record keeps its own time and stream.
- ``docker``: Docker's json-file format, ``{"log": "...\\n", "stream": ..., "time": ...}``; a
  ``log`` without its newline is a partial record, joined with what follows on that stream.
- multiline: a line that matches ``start`` begins a record; the lines that follow and do not
  match are joined to it (Java and Python tracebacks become one record). A record is sent when
  the next one starts, when ``timeout`` seconds pass without a line, or when it reaches
  ``max_bytes``.

The raw format without multiline does not come here at all: runs of lines stay runs (the fast
path). Here each record becomes one LogEvent flagged RECORD, whose ``data`` is the record's text
and whose ``offset`` .. ``end`` span the raw bytes it came from in the file. Lines that do not
parse in the format are kept, raw, flagged FORMAT_ERROR: nothing is dropped.

``held_from()`` is the file offset of the first byte held back in a partial or multiline record:
a checkpoint never goes past it, so a restart reads the held record again.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Iterator
from dataclasses import dataclass

import msgspec

from common.events import FORMAT_ERROR, PIECE, RECORD, LogEvent


@dataclass(slots=True)
class Rec:
    """A record on its way: the file span it came from, its text, its own time and stream."""

    offset: int
    end: int
    data: bytes
    time_ns: int = 0
    stream: str = ""
    flags: int = RECORD


def lines_of(ev: LogEvent) -> Iterator[tuple[int, bytes]]:
    """(file offset, line without its newline) for each line of a run."""
    off = ev.offset
    raws = ev.data.split(b"\n")
    raws.pop()  # a run ends with a newline
    for raw in raws:
        yield off, raw
        off += len(raw) + 1


_RFC3339 = re.compile(rb"(\d{4})-(\d\d)-(\d\d)[Tt ](\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?"
                      rb"(Z|z|[+-]\d\d:\d\d)$")


def parse_rfc3339_ns(text: bytes) -> int:
    """RFC 3339 time with up to nanoseconds -> ns since the epoch; ValueError if it is not one."""
    m = _RFC3339.match(text)
    if not m:
        raise ValueError(f"not an RFC 3339 time: {text[:40]!r}")
    y, mo, d, h, mi, s = (int(g) for g in m.groups()[:6])
    secs = calendar.timegm((y, mo, d, h, mi, s, 0, 0, 0))
    frac = m.group(7) or b""
    ns = int(frac.ljust(9, b"0")) if frac else 0
    zone = m.group(8)
    if zone not in (b"Z", b"z"):
        sign = 1 if zone[0:1] == b"+" else -1
        secs -= sign * (int(zone[1:3]) * 3600 + int(zone[4:6]) * 60)
    return secs * 1_000_000_000 + ns


class _Joiner:
    """Partial records per stream, joined until the stream's final one."""

    def __init__(self) -> None:
        self.partial: dict[str, Rec] = {}

    def add(self, rec: Rec, *, final: bool) -> Rec | None:
        held = self.partial.get(rec.stream)
        if held is not None:
            held.data += rec.data
            held.end = rec.end
            if not final:
                return None
            del self.partial[rec.stream]
            return held
        if not final:
            self.partial[rec.stream] = rec
            return None
        return rec

    def held_from(self) -> int | None:
        return min((r.offset for r in self.partial.values()), default=None)

    def take_all(self) -> list[Rec]:
        recs = sorted(self.partial.values(), key=lambda r: r.offset)
        self.partial.clear()
        return recs


class CriFormat:
    def __init__(self) -> None:
        self.joiner = _Joiner()

    def records(self, ev: LogEvent) -> Iterator[Rec]:
        for off, line in lines_of(ev):
            end = off + len(line) + 1
            parts = line.split(b" ", 3)
            try:
                if len(parts) < 3 or parts[1] not in (b"stdout", b"stderr"):
                    raise ValueError("not a CRI line")
                tag = parts[2].split(b":", 1)[0]
                if tag not in (b"P", b"F"):
                    raise ValueError("not a CRI line")
                time_ns = parse_rfc3339_ns(parts[0])
            except ValueError:
                yield Rec(off, end, line, flags=RECORD | FORMAT_ERROR)
                continue
            rec = Rec(off, end, parts[3] if len(parts) == 4 else b"", time_ns,
                      parts[1].decode())
            done = self.joiner.add(rec, final=tag == b"F")
            if done is not None:
                yield done


class _DockerLine(msgspec.Struct):
    log: str = ""
    stream: str = ""
    time: str = ""


class DockerFormat:
    def __init__(self) -> None:
        self.joiner = _Joiner()
        self.decoder = msgspec.json.Decoder(_DockerLine)

    def records(self, ev: LogEvent) -> Iterator[Rec]:
        for off, line in lines_of(ev):
            end = off + len(line) + 1
            try:
                d = self.decoder.decode(line)
                time_ns = parse_rfc3339_ns(d.time.encode())
            except (msgspec.DecodeError, ValueError):
                yield Rec(off, end, line, flags=RECORD | FORMAT_ERROR)
                continue
            final = d.log.endswith("\n")
            text = d.log[:-1] if final else d.log
            done = self.joiner.add(Rec(off, end, text.encode(), time_ns, d.stream), final=final)
            if done is not None:
                yield done


class RawFormat:
    joiner = None

    def records(self, ev: LogEvent) -> Iterator[Rec]:
        for off, line in lines_of(ev):
            yield Rec(off, off + len(line) + 1, line)


FORMATS = {"raw": RawFormat, "cri": CriFormat, "docker": DockerFormat}


class Multiline:
    def __init__(self, *, start: str, timeout: float, max_bytes: int) -> None:
        try:
            self.start = re.compile(start.encode())
        except re.error as exc:
            raise ValueError(f"multiline start pattern {start!r}: {exc}") from exc
        self.timeout = timeout
        self.max_bytes = max_bytes
        self.held: Rec | None = None
        self.last_at = 0.0

    def add(self, rec: Rec, now: float) -> Iterator[Rec]:
        held = self.held
        self.last_at = now
        if held is not None and not (rec.flags & FORMAT_ERROR) and not self.start.match(rec.data) \
                and len(held.data) + 1 + len(rec.data) <= self.max_bytes:
            held.data += b"\n" + rec.data
            held.end = rec.end
            return
        if held is not None:
            yield held
        self.held = rec

    def due(self, now: float) -> bool:
        return self.held is not None and now - self.last_at >= self.timeout

    def deadline(self) -> float | None:
        return None if self.held is None else self.last_at + self.timeout

    def take(self) -> Rec | None:
        held, self.held = self.held, None
        return held


class RecordChain:
    """A file's format decoder and optional multiline joiner, in that order."""

    def __init__(self, *, fmt: str, multiline: Multiline | None) -> None:
        self.format = FORMATS[fmt]()
        self.multiline = multiline

    def feed(self, ev: LogEvent, now: float) -> Iterator[Rec]:
        if ev.flags & PIECE:
            # A piece of an over-long line bypasses parsing; what is held goes out before it.
            yield from self.flush()
            yield Rec(ev.offset, ev.offset + len(ev.data), ev.data, flags=ev.flags)
            return
        for rec in self.format.records(ev):
            if self.multiline is None:
                yield rec
            else:
                yield from self.multiline.add(rec, now)

    def due(self, now: float) -> Iterator[Rec]:
        if self.multiline is not None and self.multiline.due(now):
            yield self.multiline.take()

    def deadline(self) -> float | None:
        return self.multiline.deadline() if self.multiline is not None else None

    def flush(self) -> Iterator[Rec]:
        """Everything held, in file order (the file is being let go)."""
        held = self.format.joiner.take_all() if self.format.joiner else []
        if self.multiline is not None:
            last = self.multiline.take()
            if last is not None:
                held.append(last)
        yield from sorted(held, key=lambda r: r.offset)

    def held_from(self) -> int | None:
        starts = []
        if self.format.joiner is not None:
            starts.append(self.format.joiner.held_from())
        if self.multiline is not None and self.multiline.held is not None:
            starts.append(self.multiline.held.offset)
        return min((s for s in starts if s is not None), default=None)
