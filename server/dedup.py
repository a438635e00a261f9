"""Exactly once into the server's files: what it already stored, per record source, is dropped.

A record from log-shuttle carries a stable id (common.identity): a source (the agent and the
file's identity, or the agent, its session and an input) and a position (the line's byte offset,
or the event's sequence). An agent replays after a kill -9 what was sent but not checkpointed;
a JetStream consumer gets again what was delivered but not acknowledged. Both send records the
server already has: this store drops them.

Per source the store keeps the positions it has as a few disjoint ranges ``[lo, hi]``. A run
of records of one source in one message is a run of consecutive lines, so it covers its range
entirely; a record inside a stored range is a duplicate. Ranges merge when they overlap or
touch: a line's successor is at ``offset + its UTF-8 length + 1`` (the newline), which the store
computes for plain lines; runs of other records (pieces, container records, events) whose
successor it cannot compute stay separate, and when a source has more than ``MAX_RANGES`` ranges
the two separated by the smallest gap are joined (out-of-order arrival, gRPC's concurrent
requests, leaves one large gap, never the smallest).

Persisted with the data: the records written carry their ids, so the files themselves are the
log of what is stored. A snapshot of the ranges (``dedup.state``: temporary file, fsync, rename)
records how far into which file it covers (inode, size); at start the store loads it and reads
the files from there on, so a kill -9 between a write and a snapshot loses nothing. A partial
last line (a kill in the middle of a write, which was never acknowledged) is cut off first.
"""

from __future__ import annotations

import bisect
import os
import time
from collections.abc import Iterable
from typing import Any

import msgspec

STATE = "dedup.state"


def _lo(entry: list[int]) -> int:
    return entry[0]


MAX_RANGES = 32
SNAPSHOT_EVERY = 1.0


class _Snapshot(msgspec.Struct):
    ino: int = 0
    size: int = 0
    sources: dict[str, list[tuple[int, int, int]]] = {}


def split_id(record_id: Any) -> tuple[str, int] | None:
    """(source, position) of a log-shuttle record id, None for anything else."""
    if not isinstance(record_id, str):
        return None
    source, dot, pos = record_id.rpartition(".")
    if not dot or not pos.isdigit() or "." not in source:
        return None
    return source, int(pos)


def _next_position(rec: dict, pos: int) -> int | None:
    """Where the next line of a plain log line starts (None when it cannot be known)."""
    line = rec.get("line")
    if not isinstance(line, str) or "type" in rec or rec.keys() & _IRREGULAR:
        return None
    return pos + len(line.encode("utf-8")) + 1


_IRREGULAR = {"piece", "last_piece", "invalid_utf8", "unterminated", "log_time", "stream",
              "format_error", "log_shuttle.piece", "log_shuttle.invalid_utf8",
              "log_shuttle.unterminated"}


class DedupStore:
    """Per source, the ranges of positions stored."""

    def __init__(self) -> None:
        self.ranges: dict[str, list[list[int]]] = {}
        self.dropped = 0

    def contains(self, source: str, pos: int) -> bool:
        ranges = self.ranges.get(source)
        if not ranges:
            return False
        i = bisect.bisect_right(ranges, pos, key=_lo) - 1
        return i >= 0 and ranges[i][0] <= pos <= ranges[i][1]

    def filter(self, records: list[dict]) -> list[dict]:
        """The records not stored yet (anything without a log-shuttle id is kept)."""
        out = []
        for rec in records:
            key = split_id(rec.get("id"))
            if key is not None and self.contains(*key):
                self.dropped += 1
                continue
            out.append(rec)
        return out

    def add(self, records: Iterable[dict]) -> None:
        """Note records as stored: each run of one source becomes a range."""
        run_source, lo, hi, nxt = None, 0, 0, -1
        for rec in records:
            key = split_id(rec.get("id"))
            if key is None:
                continue
            source, pos = key
            if source == run_source and pos == nxt:
                hi = pos
            else:
                if run_source is not None:
                    self._add_range(run_source, lo, hi, nxt)
                run_source, lo, hi = source, pos, pos
            nxt = _next_position(rec, pos)
            nxt = -1 if nxt is None else nxt
        if run_source is not None:
            self._add_range(run_source, lo, hi, nxt)

    def _add_range(self, source: str, lo: int, hi: int, nxt: int) -> None:
        """Add [lo, hi] (``nxt``: where the record after ``hi`` would start, -1 unknown),
        merged with the ranges it overlaps or touches. Entries are [lo, hi, nxt]."""
        ranges = self.ranges.setdefault(source, [])
        i = bisect.bisect_left(ranges, lo, key=_lo)
        if i > 0 and (ranges[i - 1][1] >= lo or ranges[i - 1][2] == lo):
            i -= 1
            lo = ranges[i][0]
            if ranges[i][1] > hi:
                hi, nxt = ranges[i][1], ranges[i][2]
        j = i
        while j < len(ranges) and (ranges[j][0] <= hi or ranges[j][0] == nxt):
            if ranges[j][1] >= hi:
                hi, nxt = ranges[j][1], ranges[j][2]
            j += 1
        ranges[i:j] = [[lo, hi, nxt]]
        if len(ranges) > MAX_RANGES:
            gaps = [ranges[k + 1][0] - ranges[k][1] for k in range(len(ranges) - 1)]
            k = gaps.index(min(gaps))
            ranges[k:k + 2] = [[ranges[k][0], ranges[k + 1][1], ranges[k + 1][2]]]

    # --- persistence ----------------------------------------------------------------------------

    def snapshot(self, ino: int, size: int) -> _Snapshot:
        return _Snapshot(ino=ino, size=size,
                         sources={s: [tuple(r) for r in rs] for s, rs in self.ranges.items()})

    def load(self, snap: _Snapshot) -> None:
        self.ranges = {s: [list(r) for r in rs] for s, rs in snap.sources.items()}


class DedupWriter:
    """A FileWriter (server/writer.py) that drops what it already stored and keeps the store
    with the data. ``write(records)`` is what the receivers call; ``sync()`` makes what was
    written durable (the JetStream consumer calls it before acknowledging)."""

    def __init__(self, writer: Any, *, log: Any = None) -> None:
        self.writer = writer
        self.store = DedupStore()
        self.log = log
        self.state_path = os.path.join(writer.directory, STATE)
        self._last_snapshot = 0.0
        self._encoder = msgspec.json.Encoder()
        self._recover()

    @property
    def records(self) -> int:
        return self.writer.records

    @property
    def dropped(self) -> int:
        return self.store.dropped

    def write(self, records: list[dict[str, Any]]) -> None:
        fresh = self.store.filter(records)
        if fresh:
            self.writer.write(fresh)
            self.store.add(fresh)
        now = time.monotonic()
        if now - self._last_snapshot >= SNAPSHOT_EVERY:
            self._snapshot()
            self._last_snapshot = now

    def sync(self) -> None:
        os.fdatasync(self.writer.fd)

    def close(self) -> None:
        if self.writer.fd >= 0:
            self._snapshot()
        self.writer.close()

    def _snapshot(self) -> None:
        st = os.fstat(self.writer.fd)
        snap = self.store.snapshot(st.st_ino, st.st_size)
        os.fdatasync(self.writer.fd)  # the snapshot never covers more than is on disk
        tmp = self.state_path + ".tmp"
        with open(tmp, "wb") as f:
            f.write(msgspec.msgpack.encode(snap))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.state_path)

    def _recover(self) -> None:
        """Load the snapshot, cut a partial last line, and read what was written after it."""
        snap = _Snapshot()
        try:
            with open(self.state_path, "rb") as f:
                snap = msgspec.msgpack.decode(f.read(), type=_Snapshot)
        except FileNotFoundError:
            pass
        except (OSError, msgspec.DecodeError) as exc:
            if self.log is not None:
                self.log.warning("dedup: %s is damaged (%s): rebuilding from the files",
                                 self.state_path, exc)
        self.store.load(snap)
        self._cut_partial_line()
        files = [*self.writer.rotated(), self.writer.path]
        start = 0
        for k, path in enumerate(files):
            try:
                if os.stat(path).st_ino == snap.ino:
                    start = k
                    break
            except FileNotFoundError:
                continue
        else:
            snap = _Snapshot(sources=snap.sources)  # its file is gone: read all there is
        scanned = 0
        for k, path in enumerate(files[start:]):
            offset = snap.size if k == 0 and snap.ino else 0
            scanned += self._scan(path, offset)
        if self.log is not None and (snap.sources or scanned):
            self.log.info("dedup: %d sources known, %d records read back from the files",
                          len(self.store.ranges), scanned)

    def _cut_partial_line(self) -> None:
        size = os.fstat(self.writer.fd).st_size
        if size == 0:
            return
        with open(self.writer.path, "rb") as f:
            tail = os.pread(f.fileno(), min(size, 1 << 20), max(0, size - (1 << 20)))
        if tail.endswith(b"\n"):
            return
        keep = size - len(tail) + tail.rfind(b"\n") + 1
        os.ftruncate(self.writer.fd, keep)
        self.writer.size = keep
        if self.log is not None:
            self.log.warning("dedup: cut %d bytes of a partial last line (a write that was "
                             "never acknowledged)", size - keep)

    def _scan(self, path: str, offset: int) -> int:
        decoder = msgspec.json.Decoder()
        count = 0
        try:
            with open(path, "rb") as f:
                f.seek(offset)
                batch = []
                for line in f:
                    try:
                        rec = decoder.decode(line)
                    except msgspec.DecodeError:
                        continue
                    if isinstance(rec, dict):
                        batch.append(rec)
                    if len(batch) >= 10_000:
                        self.store.add(batch)
                        count += len(batch)
                        batch = []
                self.store.add(batch)
                count += len(batch)
        except FileNotFoundError:
            pass
        return count
