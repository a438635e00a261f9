"""The file registry: the set of files the file input follows, and what becomes of them.

It evaluates the globs and decides, file by file, between following, renaming, detaching
(rotated or deleted: read to the end, then let go), treating as a copy (copytruncate), reading
again from 0 (truncated), leaving alone (ignore_older), and closing and opening again (idle, or
to stay under the descriptor budget). Every call returns what happened as a list of
``inputs.file.changes`` records; the registry never reads lines, sends or checkpoints: the runner
acts on what it returns. docs/file-input.md has the rules.

The descriptor budget: at most ``max_open`` followed and detached files are open at once. When
more files have bytes to read, ``rebalance`` closes files read to their end, then files that had
their turn (least recently opened first), and opens the waiting ones in the order they began to
wait, so that every file makes progress. A closed file keeps its identity, fingerprint, position
and what it held; it is opened again only if its path still names the same file.
"""

from __future__ import annotations

import errno
import os
import time
from collections import deque
from dataclasses import dataclass

from common.events import NAMES_PID
from inputs.file.changes import (Change, Closed, Followed, Forgotten, Ignored, Opened, OpenFailed,
                                 Reclassified, Released, Renamed, Rotated, Truncated)
from inputs.file.checkpoint import Entry
from inputs.file.config import FileInputConfig
from inputs.file.fingerprint import FINGERPRINT_BYTES, Fingerprint
from inputs.file.formats import Multiline, RecordChain
from inputs.file.paths import Globber
from inputs.file.tailer import TailedFile

MIN_COPY_BYTES = 64
"""A new file is taken for a copy of a followed one only when the fingerprint it shares covers
at least this many bytes: two short files that start alike are too common."""

OUT_OF_DESCRIPTORS = (errno.EMFILE, errno.ENFILE)

Identity = tuple[int, int]


@dataclass
class Copy:
    """A file recognised as a copy of a followed file (copytruncate), waiting for the original's
    truncation to know from where it must be read."""

    path: str
    identity: Identity
    of: TailedFile
    seen_at: float


@dataclass
class Cut:
    """What a truncated file had not sent yet, remembered while its copy may still turn up."""

    fingerprint: Fingerprint
    offset: int
    at: float


class Registry:
    """The followed files, by the rules of the file input's config (rotate_wait, ignore_older,
    from_beginning, format, multiline, max_line_bytes, writer_from_line)."""

    def __init__(self, *, cfg: FileInputConfig, globber: Globber,
                 restored: dict[Identity, Entry] | None = None, first_start: bool = False,
                 max_open: int = 0) -> None:
        self.cfg = cfg
        self.globber = globber
        self.restored: dict[Identity, Entry] = dict(restored or {})
        """Checkpoints read at start, matched by the first evaluation of the globs."""
        self.first_start = first_start
        self.max_open = max_open if max_open > 0 else 1 << 62
        self.files: dict[str, TailedFile] = {}
        """Followed files by the path that names them now (open or closed)."""
        self.detached: list[TailedFile] = []
        """Files that no path names any more, read to their end before they go (open, or
        waiting for a descriptor under the name they were found by: ``moved_to``)."""
        self.released: dict[Identity, tuple[TailedFile, int]] = {}
        """Let-go files whose last lines may not be acknowledged yet: identity -> (file, end)."""
        self.copies: dict[Identity, Copy] = {}
        self.cuts: list[Cut] = []
        self.ignored: dict[str, tuple[float, int, int, int]] = {}
        """Paths left alone by ignore_older -> (mtime, device, inode, size) they had then."""
        self.open_errors: dict[str, int] = {}
        self.opened: dict[TailedFile, None] = {}
        """Open followed and detached files, the least recently opened first."""
        self.waiting: deque[TailedFile] = deque()
        """Closed followed files with bytes to read, in the order they began to wait."""
        self._queued: set[TailedFile] = set()
        """The files in ``waiting``."""
        self._idle: set[TailedFile] = set()
        """Files closed because they were idle (not for the budget)."""
        self._listed: dict[str, dict[int, list[str]]] = {}
        """Directories listed in this evaluation: inode -> paths (to find renamed files)."""
        self._held: dict[Identity, list[str]] | None = None
        """Deleted files other processes hold open, looked up once per evaluation if needed."""
        self._prefixes: dict[int, dict[str, TailedFile]] | None = None
        """Followed files by fingerprint (length -> digest -> file), made when first needed in
        an evaluation: finding the original of a copy is then a few lookups, not a read of
        every followed file per new file."""

    # --- what the runner asks -------------------------------------------------------------------

    def all_files(self) -> list[TailedFile]:
        return [*self.files.values(), *self.detached, *(f for f, _ in self.released.values())]

    def index(self) -> dict[Identity, TailedFile]:
        """Every file the registry knows, by identity (followed ones win over let-go ones)."""
        index = {key: f for key, (f, _) in self.released.items()}
        index.update((f.identity, f) for f in self.detached)
        index.update((f.identity, f) for f in self.files.values())
        return index

    def close_all(self) -> None:
        for f in self.all_files():
            f.close()
        self.opened.clear()

    # --- evaluating the globs -------------------------------------------------------------------

    def scan(self, *, now: float, initial: bool = False) -> list[Change]:
        """Evaluate the globs again and follow what changed. Raises paths.ScanError (and changes
        nothing) when the globs cannot be evaluated, e.g. out of descriptors."""
        found = self.globber.resolve()
        self._prefixes = None
        self._held = None
        self._listed = {}
        out: list[Change] = []
        where = {(st.st_dev, st.st_ino): path for path, st in found.items()}
        for path, f in list(self.files.items()):
            st = found.get(path)
            if st is not None and (st.st_dev, st.st_ino) == f.identity:
                f.size_seen = st.st_size
                if not f.is_open:
                    if st.st_size != f.read_pos:
                        self._enqueue(f)
                else:
                    self._check_content(f, st.st_size, now, out)
            elif f.identity in where:
                self._renamed(f, where[f.identity], out)
            else:
                self._detach(f, now, deleted=st is None, out=out)
        self.cuts = [t for t in self.cuts if now - t.at < self.cfg.rotate_wait]
        for key, (f, end) in list(self.released.items()):
            # A let-go file is remembered (and checkpointed) while a matching name holds it, so
            # that a rotated file renamed again (app.log.1 -> app.log.2) is not read again.
            if key not in where and f.acked >= end:
                del self.released[key]
                out.append(Forgotten(key))
        detached = {f.identity: f for f in self.detached}
        for path, st in found.items():
            if path in self.files:
                continue
            identity = (st.st_dev, st.st_ino)
            if identity in detached:
                self._renamed(detached[identity], path, out)
            elif identity in self.copies:
                self.copies[identity].path = path
            elif identity not in self.released or self._reused(identity, path, st, out):
                self._discover(path, st, now, initial=initial, out=out)
            # else: let go already, read to its end
        for identity, copy in list(self.copies.items()):
            if now - copy.seen_at >= self.cfg.rotate_wait:
                # Its original was not truncated: a plain copy, or another file that starts with
                # the same bytes. Read it all: a duplicate is better than a lost line.
                del self.copies[identity]
                if copy.path:
                    self._follow(copy.path, offset=None, now=now, why="new", out=out)
        self._admit(now, out)
        # Checkpoints serve the first evaluation that succeeds; entries of files not found then
        # would only grow stale. Those of files found but not opened (out of descriptors, no
        # permission yet) wait for the next one, so that the file resumes rather than repeats.
        self.restored = {k: e for k, e in self.restored.items()
                         if k in where and where[k] in self.open_errors}
        return out

    def _reused(self, identity: Identity, path: str, st: os.stat_result,
                out: list[Change]) -> bool:
        """Whether ``path`` holds another file than the let-go one of the same (device, inode):
        the let-go file was deleted (logrotate's compress) and its inode given to a new file,
        which must be read, not skipped. Told by size (a log does not shrink) and by its first
        bytes. A reused identity is forgotten, so that the new file is followed."""
        f, end = self.released[identity]
        if st.st_size >= end:
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
            except OSError:
                return False  # gone or unreadable now: the next evaluation sees
            try:
                if f.fingerprint.matches_fd(fd):
                    return False
            finally:
                os.close(fd)
        del self.released[identity]
        out.append(Forgotten(identity))
        return True

    def _discover(self, path: str, st: os.stat_result, now: float, *, initial: bool,
                  out: list[Change]) -> None:
        ignored = self.ignored.get(path)
        if ignored is not None:
            if ignored == (st.st_mtime, st.st_dev, st.st_ino, st.st_size):
                return
            # Changed since it was left alone: what was added since is new (a file that is not
            # the same one any more is new as a whole).
            del self.ignored[path]
            same = ignored[1:3] == (st.st_dev, st.st_ino) and st.st_size >= ignored[3]
            self._follow(path, offset=ignored[3] if same else 0, now=now, why="new", out=out)
            return
        if self.cfg.ignore_older and time.time() - st.st_mtime > self.cfg.ignore_older:
            out.append(Ignored(path, time.time() - st.st_mtime))
            self.ignored[path] = (st.st_mtime, st.st_dev, st.st_ino, st.st_size)
            return
        identity = (st.st_dev, st.st_ino)
        entry = self.restored.get(identity)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
        except OSError as exc:
            self._open_failed(path, exc, out)
            return
        try:
            if entry is not None and entry.fingerprint.matches_fd(fd):
                fd, _ = -1, self._follow(path, offset=entry.offset, now=now, fd=fd,
                                         why="resumed", out=out)
                return
            for t in self.cuts:
                if t.fingerprint.length >= MIN_COPY_BYTES and t.fingerprint.matches_fd(fd):
                    # The copy of a file that was truncated: read what the original had not sent.
                    fd, f = -1, self._follow(path, offset=t.offset, copy=True, now=now, fd=fd,
                                             why="copy", out=out)
                    if f is not None:
                        self._detach(f, now, deleted=False, quiet=True, out=out)
                    return
            f = self._copy_of(fd)
            if f is not None:
                self.copies[identity] = Copy(path=path, identity=identity, of=f, seen_at=now)
                return
            at_end = initial and self.first_start and not self.cfg.from_beginning
            fd, f = -1, self._follow(path, offset=None, at_end=at_end, now=now, fd=fd,
                                     why="new", out=out)
            if f is not None and f.fingerprint.length == 0 and not initial:
                f.unclassified = True  # empty: a copy in the making cannot be told yet
        except OSError as exc:
            self._open_failed(path, exc, out)
        finally:
            if fd >= 0:
                os.close(fd)

    def _follow(self, path: str, *, offset: int | None, now: float, why: str,
                out: list[Change], at_end: bool = False, copy: bool = False,
                fd: int = -1) -> TailedFile | None:
        """Follow ``path`` (on ``fd`` if the caller opened it: the file then owns it)."""
        shorter = "end" if copy else "restart"
        try:
            if fd >= 0:
                try:
                    f = TailedFile.adopt(path, fd, offset=offset, at_end=at_end, chain=self.chain(),
                                         now=now, shorter=shorter)
                except OSError:
                    os.close(fd)
                    raise
            else:
                f = TailedFile.open(path, offset=offset, at_end=at_end, chain=self.chain(),
                                    now=now, shorter=shorter)
        except OSError as exc:
            self._open_failed(path, exc, out)
            return None
        self.open_errors.pop(path, None)
        if self.cfg.writer_from_line:
            f.flags = NAMES_PID
        self.files[path] = f
        self.opened[f] = None
        self._index(f)
        out.append(Followed(f, why))
        if not copy and len(self.opened) > self.max_open:
            # Over the budget: it keeps its identity and position, and waits for its turn.
            self._close(f)
            waits = f.size_seen > f.read_pos
            if waits:
                self._enqueue(f)
            out.append(Closed(f, idle=False, waiting=waits))
        return f

    def chain(self) -> RecordChain | None:
        ml = self.cfg.multiline
        if self.cfg.format == "raw" and ml is None:
            return None
        multiline = None if ml is None else Multiline(
            start=ml.start, timeout=ml.timeout, max_bytes=self.cfg.max_line_bytes)
        return RecordChain(fmt=self.cfg.format, multiline=multiline)

    def _copy_of(self, fd: int, *, besides: TailedFile | None = None) -> TailedFile | None:
        """The followed file (other than ``besides``) whose first bytes (at least
        MIN_COPY_BYTES of them) the file open on ``fd`` starts with, if any."""
        if self._prefixes is None:
            self._prefixes = {}
            for g in self.files.values():
                self._index(g)
        head = os.pread(fd, FINGERPRINT_BYTES, 0)
        for length, by_digest in self._prefixes.items():
            if len(head) < length:
                continue
            g = by_digest.get(Fingerprint.of_bytes(head[:length]).digest)
            if g is not None and g is not besides and self.files.get(g.path) is g \
                    and g.fingerprint.length == length:
                return g
        return None

    def _index(self, f: TailedFile) -> None:
        if self._prefixes is not None and f.fingerprint.length >= MIN_COPY_BYTES:
            self._prefixes.setdefault(f.fingerprint.length, {}).setdefault(
                f.fingerprint.digest, f)

    def _open_failed(self, path: str, exc: OSError, out: list[Change]) -> None:
        if self.open_errors.get(path) != exc.errno:
            self.open_errors[path] = exc.errno
            out.append(OpenFailed(path, exc.errno or 0, exc.strerror or str(exc)))

    # --- what reading finds ---------------------------------------------------------------------

    def first_bytes(self, f: TailedFile, now: float) -> list[Change] | None:
        """A file found empty has its first bytes: if it turns out to be a copy, it is handled
        as one (the changes are returned); None if it is a file of its own."""
        f.unclassified = False
        matches = [t for t in self.cuts if t.fingerprint.length >= MIN_COPY_BYTES
                   and t.fingerprint.matches_fd(f.fd)]
        self._prefixes = None  # fingerprints may have grown since the last evaluation
        if not matches and self._copy_of(f.fd, besides=f) is None:
            return None
        del self.files[f.path]
        self._close(f)
        out: list[Change] = [Reclassified(f)]
        try:
            st = os.stat(f.path)
        except OSError:
            return out
        self._discover(f.path, st, now, initial=False, out=out)
        return out

    def truncation(self, f: TailedFile, now: float, why: str) -> list[Change]:
        """``f`` was truncated (``why``): read it again from its start; a copy of it waiting for
        this is read from where ``f`` stopped."""
        out: list[Change] = [Truncated(f, why)]
        self.cuts.append(Cut(f.fingerprint, f.held_from(), now))
        for identity, copy in list(self.copies.items()):
            if copy.of is f and copy.path:
                del self.copies[identity]
                c = self._follow(copy.path, offset=f.held_from(), copy=True, now=now, why="copy",
                                 out=out)
                if c is not None:
                    self._detach(c, now, deleted=False, quiet=True, out=out)
        f.reset()
        return out

    def _check_content(self, f: TailedFile, size: int, now: float, out: list[Change]) -> None:
        """Catch a truncation that rewrote past the position read (the size alone misses it),
        and let the fingerprint of a young file cover more of it."""
        try:
            if f.fingerprint.length and not f.fingerprint.matches_fd(f.fd):
                out += self.truncation(f, now, "its first bytes changed")
            else:
                f.fingerprint = f.fingerprint.extend(f.fd, size)
        except OSError:
            pass

    def _renamed(self, f: TailedFile, path: str, out: list[Change]) -> None:
        """The same file under another matching name: same position."""
        if f in self.detached:
            self.detached.remove(f)
            f.detached_at = None
            f.moved_to = None
        elif self.files.get(f.path) is f:
            del self.files[f.path]
        old, f.path = f.path, path
        self.files[path] = f
        out.append(Renamed(f, old))

    def _detach(self, f: TailedFile, now: float, *, deleted: bool, out: list[Change],
                quiet: bool = False) -> None:
        if self.files.get(f.path) is f:
            del self.files[f.path]
        if not f.is_open:
            f.moved_to = self._find_moved(f)
            if f.moved_to is None:
                # Closed, with nothing left to read, or not found again: let go (an idle-closed
                # file was read to its end; one waiting for a descriptor is counted unread).
                self._release(f, time.time_ns(), out)
                return
            self._enqueue(f)  # read to its end by that name, in its turn
        f.detached_at = now
        self.detached.append(f)
        if not quiet:
            out.append(Rotated(f, deleted))
        for identity, copy in list(self.copies.items()):
            if copy.of is f:  # renamed away rather than truncated: the copy is a plain copy
                copy.seen_at = -1e9

    def _find_moved(self, f: TailedFile) -> str | None:
        """A closed file whose path names it no more: look for it by inode in its directory
        (logrotate renames within it), or, deleted, among the descriptors of the processes that
        still hold it open (its writer, before it reopens). The name it can be opened by, if it
        has bytes left there."""
        for where in ("directory", "processes"):
            if where == "directory":
                names = self._in_directory(f)
            else:  # only if not found in its directory: this looks at every process
                if self._held is None:
                    self._held = held_open()
                names = self._held.get(f.identity, [])
            for name in names:
                try:
                    st = os.stat(name)
                except OSError:
                    continue
                if (st.st_dev, st.st_ino) != f.identity:
                    continue
                f.size_seen = st.st_size
                return name if st.st_size != f.read_pos else None
        return None

    def _in_directory(self, f: TailedFile) -> list[str]:
        """Paths in ``f``'s directory with its inode (the directory listed once per
        evaluation)."""
        directory = os.path.dirname(f.path)
        inodes = self._listed.get(directory)
        if inodes is None:
            inodes = self._listed[directory] = {}
            try:
                with os.scandir(directory) as entries:
                    for e in entries:
                        inodes.setdefault(e.inode(), []).append(e.path)
            except OSError:
                pass
        return inodes.get(f.ino, [])

    def let_go(self, f: TailedFile, now_ns: int) -> list[Change]:
        """Stop following ``f`` (a detached file read to its end, a file that cannot be read)."""
        out: list[Change] = []
        self._release(f, now_ns, out)
        return out

    def _release(self, f: TailedFile, now_ns: int, out: list[Change]) -> None:
        if f in self.detached:
            self.detached.remove(f)
        elif self.files.get(f.path) is f:
            del self.files[f.path]
        events = f.flush(now_ns=now_ns)  # what it holds goes out now
        try:
            unread = (f.size() if f.is_open else f.size_seen) - f.read_pos
        except OSError:
            unread = 0
        self._close(f)
        self.released[f.identity] = (f, f.read_pos)
        out.append(Released(f, events, max(0, unread)))

    # --- descriptors ----------------------------------------------------------------------------

    def close_idle(self, f: TailedFile) -> Closed:
        """Close a followed file that had no new bytes for a while; it is opened again when a
        glob evaluation sees it change."""
        self._close(f)
        self._idle.add(f)
        return Closed(f, idle=True)

    def rebalance(self, now: float) -> list[Change]:
        """Stay under the budget while files wait for a descriptor: close open followed files
        that were read to their end, then those that had their turn (read once since opened),
        the least recently opened first; open the waiting ones in turn."""
        out: list[Change] = []
        need = len(self.waiting) - (self.max_open - len(self.opened))
        for ended_only in (True, False):
            if need <= 0:
                break
            for f in list(self.opened):
                if need <= 0:
                    break
                if f.reads == 0 or self.files.get(f.path) is not f:
                    continue  # not read since opened, or detached (which cannot be reopened)
                ended = f.size_seen <= f.read_pos
                if ended_only and not ended:
                    continue
                self._close(f)
                need -= 1
                if not ended:
                    self._enqueue(f)
                out.append(Closed(f, idle=False, waiting=not ended))
        self._admit(now, out)
        return out

    def _enqueue(self, f: TailedFile) -> None:
        if f not in self._queued:
            self._queued.add(f)
            self.waiting.append(f)

    def _admit(self, now: float, out: list[Change]) -> None:
        while self.waiting and len(self.opened) < self.max_open:
            f = self.waiting.popleft()
            self._queued.discard(f)
            if f.is_open:
                continue
            if self.files.get(f.path) is not f:
                if f.moved_to is not None and f in self.detached:
                    if not self._admit_moved(f, out):
                        break
                continue
            try:
                same = f.reopen()
            except OSError as exc:
                if exc.errno in OUT_OF_DESCRIPTORS:
                    self.waiting.appendleft(f)
                    self._queued.add(f)
                    break
                continue  # gone or unreadable now: the next glob evaluation sees to it
            idle = f in self._idle
            self._idle.discard(f)
            if same:
                self.opened[f] = None
                f.last_data_at = now
                out.append(Opened(f, idle))
            else:
                self._release(f, time.time_ns(), out)
                self._follow(f.path, offset=None, now=now, why="replaced", out=out)

    def _admit_moved(self, f: TailedFile, out: list[Change]) -> bool:
        """Open a detached file that waited, by the name it was found under; False if out of
        descriptors (it waits on)."""
        try:
            same = f.reopen(path=f.moved_to)
        except OSError as exc:
            if exc.errno in OUT_OF_DESCRIPTORS:
                self.waiting.appendleft(f)
                self._queued.add(f)
                return False
            same = False
        if same:
            self.opened[f] = None
            out.append(Opened(f, False))
        else:  # gone meanwhile (compressed and deleted): what it had is counted unread
            self._release(f, time.time_ns(), out)
        return True

    def _close(self, f: TailedFile) -> None:
        f.close()
        self.opened.pop(f, None)
        self._idle.discard(f)


def held_open() -> dict[Identity, list[str]]:
    """Deleted files still open in some process -> the ``/proc/<pid>/fd/<n>`` links through
    which they can be opened. Only processes this one may look into are seen."""
    found: dict[Identity, list[str]] = {}
    try:
        pids = [p for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return found
    for pid in pids:
        base = f"/proc/{pid}/fd"
        try:
            fds = os.listdir(base)
        except OSError:
            continue
        for fd in fds:
            link = f"{base}/{fd}"
            try:
                if not os.readlink(link).endswith(" (deleted)"):
                    continue
                st = os.stat(link)
            except OSError:
                continue
            found.setdefault((st.st_dev, st.st_ino), []).append(link)
    return found
