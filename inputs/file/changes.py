"""What the file registry reports after it looked at the files: one small record per thing that
happened to a followed file. The registry decides; the runner acts on these (sends the lines a
let-go file still held, counts, logs, writes a checkpoint) and never the other way round."""

from __future__ import annotations

from dataclasses import dataclass, field

from common.events import LogEvent
from inputs.file.tailer import TailedFile


@dataclass(frozen=True, slots=True)
class Followed:
    """A file is followed from ``file.offset`` on: ``why`` is ``new`` (found by a glob),
    ``resumed`` (its checkpoint matched), ``copy`` (the copy of a truncated file, read from
    where the original stopped, then let go) or ``replaced`` (its path holds another file now)."""

    file: TailedFile
    why: str


@dataclass(frozen=True, slots=True)
class Renamed:
    """The same file under another matching name: it keeps its position."""

    file: TailedFile
    old_path: str


@dataclass(frozen=True, slots=True)
class Rotated:
    """No matching name holds the file any more (``deleted``, or renamed away): it is read to
    its end, and let go ``rotate_wait`` seconds later."""

    file: TailedFile
    deleted: bool


@dataclass(frozen=True, slots=True)
class Truncated:
    """The file is shorter than the position read, or its first bytes changed: it is read again
    from its start."""

    file: TailedFile
    why: str


@dataclass(frozen=True, slots=True)
class Released:
    """A file let go: ``events`` are what it still held (a line with no newline at its end, a
    record) and must be sent; ``unread`` bytes of it could not be read."""

    file: TailedFile
    events: list[LogEvent] = field(default_factory=list)
    unread: int = 0


@dataclass(frozen=True, slots=True)
class Forgotten:
    """A let-go file no matching name holds any more, whose lines are all acknowledged: it
    leaves the checkpoints."""

    identity: tuple[int, int]


@dataclass(frozen=True, slots=True)
class Reclassified:
    """A file found empty turned out, with its first bytes, to be a copy: it is no longer
    followed as a file of its own (and is looked at again as a copy)."""

    file: TailedFile


@dataclass(frozen=True, slots=True)
class Ignored:
    """A file left alone by ``ignore_older``."""

    path: str
    age: float


@dataclass(frozen=True, slots=True)
class OpenFailed:
    """A file that matches cannot be opened (reported once per path and error)."""

    path: str
    errno: int
    strerror: str


@dataclass(frozen=True, slots=True)
class Closed:
    """An open followed file was closed: ``idle`` (no new bytes for ``close_idle_after``) or to
    stay under the descriptor budget (``waiting``: it has bytes left and waits for its turn)."""

    file: TailedFile
    idle: bool
    waiting: bool = False


@dataclass(frozen=True, slots=True)
class Opened:
    """A closed file was opened again at its position (it changed, or its turn came)."""

    file: TailedFile
    idle: bool


Change = (Followed | Renamed | Rotated | Truncated | Released | Forgotten | Reclassified
          | Ignored | OpenFailed | Closed | Opened)
