"""One followed file: its descriptor, identity, read position and the line in progress.

Reading cuts the bytes at line ends into runs (one LogEvent per read, not one per line). The bytes
after the last newline are held until their newline arrives. A line longer than the maximum is
sent in pieces of at most ``max_line_bytes`` bytes, cut on a UTF-8 character boundary where the
bytes are UTF-8, each flagged PIECE with its number; the last piece also carries LAST_PIECE.

Invariant that keeps this per-read rather than per-line: a read is never longer than
``max_line_bytes``, and the held bytes are always shorter. So only the line that continues the
held bytes can be over-long; every other line lies inside one read and is short enough.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from common.events import LAST_PIECE, PIECE, UNTERMINATED, LogEvent
from common.fastpath import count_lines
from common.identity import HEAD_BYTES, file_id
from inputs.file.fingerprint import Fingerprint
from inputs.file.formats import Rec, RecordChain


@dataclass(eq=False)
class TailedFile:
    path: str
    fd: int
    dev: int
    ino: int
    offset: int
    """File offset of the first byte not yet sent (the start of the line in progress)."""
    pending: bytes = b""
    """Bytes read from ``offset`` on that do not end a line yet."""
    piece: int = 0
    """The next piece number of an over-long line in progress (0: none in progress)."""
    fingerprint: Fingerprint = Fingerprint(0, "")
    chain: RecordChain | None = None
    """Format decoding and multiline joining, when the input has either (else: runs of lines)."""
    detached_at: float | None = None
    """Monotonic time since when ``path`` no longer names this file (rotated or deleted)."""
    last_data_at: float = 0.0
    """Monotonic time the file last had new bytes (for closing idle files)."""
    acked: int = 0
    """Offset up to which every output has acknowledged this file's lines (its checkpoint)."""
    flags: int = 0
    """Flags every event of this file carries (NAMES_PID)."""
    unclassified: bool = False
    """Found empty after start: whether it is a new file or a copy shows with its first bytes."""
    fid: int = 0
    """The file's identity for record ids (common.identity.file_id), taken when its first event
    is made (its first line is complete by then); 0 until then, and again after a truncation."""
    max_line: int = HEAD_BYTES
    size_seen: int = 0
    """Its size when last looked at (a read, a glob evaluation): what a closed file may hold."""
    moved_to: str | None = None
    """Detached while closed: the name it was found under since (renamed, or a
    ``/proc/<pid>/fd`` link to it deleted), to open it by."""
    reads: int = 0
    """Reads (or looks for new bytes) since it was last opened: a file had its turn, for the
    descriptor budget, once it was looked at."""

    @classmethod
    def open(cls, path: str, *, offset: int | None = None, at_end: bool = False,
             shorter: str = "restart", chain: RecordChain | None = None,
             now: float = 0.0) -> TailedFile:
        """Open ``path`` at ``offset`` (or its end / its start). A file shorter than ``offset``
        was truncated and is read from its start (``shorter="restart"``), or, for a copy that
        holds nothing past ``offset``, from its end (``shorter="end"``)."""
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
        try:
            return cls.adopt(path, fd, offset=offset, at_end=at_end, shorter=shorter,
                             chain=chain, now=now)
        except OSError:
            os.close(fd)
            raise

    @classmethod
    def adopt(cls, path: str, fd: int, *, offset: int | None = None, at_end: bool = False,
              shorter: str = "restart", chain: RecordChain | None = None,
              now: float = 0.0) -> TailedFile:
        """Like ``open``, on a descriptor already open on ``path`` (which the file then owns)."""
        st = os.fstat(fd)
        fp = Fingerprint.of_fd(fd)
        if offset is None:
            offset = st.st_size if at_end else 0
        elif offset > st.st_size:
            offset = 0 if shorter == "restart" else st.st_size
        return cls(path=path, fd=fd, dev=st.st_dev, ino=st.st_ino, offset=offset,
                   fingerprint=fp, chain=chain, last_data_at=now, acked=offset,
                   size_seen=st.st_size)

    def reopen(self, *, path: str | None = None) -> bool:
        """Open a closed file again; False if ``path`` no longer holds the same file: the same
        (device, inode) and the same first bytes (its fingerprint), so that a file whose inode
        was reused, or that was rewritten while closed, is not taken for it. (A file only made
        shorter is the same file, truncated: reading it finds that.) ``path``: another name to
        open it by (a rotated file found again); its events keep the name it was followed by."""
        fd = os.open(path or self.path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
        try:
            st = os.fstat(fd)
            same = (st.st_dev, st.st_ino) == self.identity and self.fingerprint.matches_fd(fd)
        except OSError:
            os.close(fd)
            raise
        if not same:
            os.close(fd)
            return False
        self.fd = fd
        self.reads = 0
        self.size_seen = st.st_size
        return True

    @property
    def is_open(self) -> bool:
        return self.fd >= 0

    @property
    def identity(self) -> tuple[int, int]:
        return (self.dev, self.ino)

    @property
    def read_pos(self) -> int:
        return self.offset + len(self.pending)

    def size(self) -> int:
        self.size_seen = os.fstat(self.fd).st_size
        return self.size_seen

    def reset(self) -> None:
        """The file was truncated or rewritten: start again from its beginning."""
        self.offset = 0
        self.pending = b""
        self.piece = 0
        self.acked = 0
        self.fid = 0
        self.fingerprint = Fingerprint.of_fd(self.fd)
        if self.chain is not None:
            list(self.chain.flush())  # what it held belonged to the old content

    def held_from(self) -> int:
        """The first offset not yet sent: held partial bytes, or a record held by the chain."""
        held = self.chain.held_from() if self.chain is not None else None
        return self.offset if held is None else min(held, self.offset)

    def read(self, budget: int, *, max_line: int, now_ns: int,
             now: float = 0.0) -> tuple[list[LogEvent], int]:
        """Read up to ``budget`` bytes (never more than ``max_line``); return the events for the
        complete lines and pieces (records, with a chain), and the number of bytes read."""
        data = os.pread(self.fd, min(budget, max_line), self.read_pos)
        self.max_line = max_line
        self.reads += 1
        if not data:
            return [], 0
        self.last_data_at = now
        events = self.cut(data, max_line=max_line, now_ns=now_ns)
        if self.chain is not None:
            events = [self._record(r, now_ns) for ev in events for r in self.chain.feed(ev, now)]
        return events, len(data)

    def due(self, *, now: float, now_ns: int) -> list[LogEvent]:
        """Records the chain sends because their time is up (multiline timeout)."""
        if self.chain is None:
            return []
        return [self._record(r, now_ns) for r in self.chain.due(now)]

    def _fid(self) -> int:
        """The file's identity for record ids. Its first line (or, when longer, its first
        min(HEAD_BYTES, max_line) bytes) is on disk before any event can be made."""
        if not self.fid:
            self.fid = file_id(self.dev, self.ino,
                               os.pread(self.fd, min(HEAD_BYTES, self.max_line), 0))
        return self.fid

    def _record(self, r: Rec, now_ns: int) -> LogEvent:
        return LogEvent(path=self.path, dev=self.dev, ino=self.ino, offset=r.offset, data=r.data,
                        lines=1, read_ns=now_ns, flags=r.flags | self.flags, end=r.end,
                        time_ns=r.time_ns, stream=r.stream, fid=self.fid or self._fid())

    def cut(self, data: bytes, *, max_line: int, now_ns: int) -> list[LogEvent]:
        buf = self.pending + data if self.pending else data
        off = self.offset
        events: list[LogEvent] = []
        # The line in progress may be over-long: cut pieces until a newline is in reach.
        while True:
            nl = buf.find(b"\n", 0, max_line + 1)
            if nl >= 0:
                break
            if len(buf) <= max_line:
                self.pending, self.offset = buf, off
                return events
            cut = utf8_cut(buf, max_line)
            events.append(self._event(off, buf[:cut], 1, now_ns, PIECE, self.piece))
            self.piece += 1
            off += cut
            buf = buf[cut:]
        if self.piece:
            end = nl + 1
            events.append(self._event(off, buf[:end], 1, now_ns, PIECE | LAST_PIECE, self.piece))
            self.piece = 0
            off += end
            buf = buf[end:]
        last = buf.rfind(b"\n")
        if last >= 0:
            run = buf[: last + 1]
            events.append(self._event(off, run, count_lines(run), now_ns, 0, 0))
            off += last + 1
            buf = buf[last + 1:]
        self.pending, self.offset = buf, off
        return events

    def _event(self, off: int, data: bytes, lines: int, now_ns: int, flags: int,
               piece: int) -> LogEvent:
        return LogEvent(path=self.path, dev=self.dev, ino=self.ino, offset=off, data=data,
                        lines=lines, read_ns=now_ns, flags=flags | self.flags, piece=piece,
                        fid=self.fid or self._fid())

    def flush(self, *, now_ns: int) -> list[LogEvent]:
        """Everything held, for a file that is let go: records the chain holds, and the bytes
        after the last newline as a final record flagged UNTERMINATED."""
        events = []
        if self.chain is not None:
            events = [self._record(r, now_ns) for r in self.chain.flush()]
        if self.pending:
            flags = UNTERMINATED | (PIECE | LAST_PIECE if self.piece else 0)
            events.append(self._event(self.offset, self.pending, 1, now_ns, flags, self.piece))
            self.offset += len(self.pending)
            self.pending = b""
            self.piece = 0
        return events

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def utf8_cut(buf: bytes, limit: int) -> int:
    """Where to cut ``buf`` at most ``limit`` bytes in, so as not to split a UTF-8 character:
    back off over up to three continuation bytes; bytes that are not UTF-8 are cut at ``limit``."""
    cut = limit
    while cut > limit - 3 and cut > 1 and (buf[cut] & 0xC0) == 0x80:
        cut -= 1
    return cut if (buf[cut] & 0xC0) != 0x80 else limit
