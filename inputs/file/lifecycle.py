"""Which files the file input follows, and what becomes of them: the part of FileInput that
evaluates the globs and decides, file by file, between following, renaming, detaching (rotated
or deleted: read to the end, then let go), treating as a copy (copytruncate), reading again from
0 (truncated), leaving alone (ignore_older) and waking up (idle-closed). The loop that reads,
sends and checkpoints is in runner.py; docs/file-input.md describes the rules."""

from __future__ import annotations

import errno
import os
import time
from dataclasses import dataclass

from common.events import NAMES_PID
from inputs.file.fingerprint import Fingerprint
from inputs.file.formats import Multiline, RecordChain
from inputs.file.tailer import TailedFile

MIN_COPY_BYTES = 64
"""A new file is taken for a copy of a followed one only when the fingerprint it shares covers
at least this many bytes: two short files that start alike are too common."""


@dataclass
class Copy:
    """A file recognised as a copy of a followed file (copytruncate), waiting for the original's
    truncation to know from where it must be read."""

    path: str
    identity: tuple[int, int]
    of: TailedFile
    seen_at: float


@dataclass
class Truncated:
    """What a truncated file had not sent yet, remembered while its copy may still turn up."""

    fingerprint: Fingerprint
    offset: int
    at: float



class Lifecycle:
    """Mixed into FileInput, whose state it shares (files, detached, released, copies, ...)."""

    def scan(self, *, initial: bool = False) -> None:
        """Evaluate the globs again and follow what changed."""
        now = time.monotonic()
        self.next_scan = now + self.cfg.glob_interval
        self.watcher.update()
        found = self.globber.resolve()
        where = {(st.st_dev, st.st_ino): path for path, st in found.items()}
        for path, f in list(self.files.items()):
            st = found.get(path)
            if st is not None and (st.st_dev, st.st_ino) == f.identity:
                if not f.is_open:
                    if st.st_size != f.read_pos:
                        self.wake(f, now)
                else:
                    self.check_content(f, st.st_size, now)
            elif f.identity in where:
                self.renamed(f, where[f.identity])
            else:
                self.detach(f, now, deleted=st is None)
        self.truncated = [t for t in self.truncated if now - t.at < self.cfg.rotate_wait]
        for key, (f, end) in list(self.released.items()):
            # A let-go file is remembered (and checkpointed) while a matching name holds it, so
            # that a rotated file renamed again (app.log.1 -> app.log.2) is not read again.
            if key not in where and f.acked >= end:
                del self.released[key]
                self.checkpoint_dirty = True
        detached = {f.identity: f for f in self.detached}
        for path, st in found.items():
            if path in self.files:
                continue
            identity = (st.st_dev, st.st_ino)
            if identity in detached:
                self.renamed(detached[identity], path)
            elif identity in self.copies:
                self.copies[identity].path = path
            elif identity not in self.released:  # let go already: read to its end
                self.discover(path, st, now, initial=initial)
        for identity, copy in list(self.copies.items()):
            if now - copy.seen_at >= self.cfg.rotate_wait:
                # Its original was not truncated: a plain copy, or another file that starts with
                # the same bytes. Read it all: a duplicate is better than a lost line.
                del self.copies[identity]
                if copy.path:
                    self.follow(copy.path, offset=None, now=now)

    def discover(self, path: str, st: os.stat_result, now: float, *, initial: bool) -> None:
        ignored = self.ignored.get(path)
        if ignored is not None:
            if ignored == (st.st_mtime, st.st_dev, st.st_ino, st.st_size):
                return
            # Changed since it was left alone: what was added since is new (a file that is not
            # the same one any more is new as a whole).
            del self.ignored[path]
            same = ignored[1:3] == (st.st_dev, st.st_ino) and st.st_size >= ignored[3]
            self.follow(path, offset=ignored[3] if same else 0, now=now)
            return
        if self.cfg.ignore_older and time.time() - st.st_mtime > self.cfg.ignore_older:
            self.stats.files_ignored += 1
            self.log.debug("%s: not modified for %.0fs (ignore_older)", path,
                           time.time() - st.st_mtime)
            self.ignored[path] = (st.st_mtime, st.st_dev, st.st_ino, st.st_size)
            return
        identity = (st.st_dev, st.st_ino)
        entry = self.restored.get(identity)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
        except OSError as exc:
            self.open_failed(path, exc)
            return
        try:
            if entry is not None and entry.fingerprint.matches_fd(fd):
                self.follow(path, offset=entry.offset, now=now)
                return
            for t in self.truncated:
                if t.fingerprint.length >= MIN_COPY_BYTES and t.fingerprint.matches_fd(fd):
                    # The copy of a file that was truncated: read what the original had not sent.
                    self.stats.files_copied += 1
                    f = self.follow(path, offset=t.offset, copy=True, now=now)
                    if f is not None:
                        self.detach(f, now, deleted=False, quiet=True)
                    return
            for f in self.files.values():
                if f.is_open and f.fingerprint.length >= MIN_COPY_BYTES \
                        and f.fingerprint.matches_fd(fd):
                    self.log.debug("%s starts like %s: a copy? held until %s is truncated or "
                                   "%.0fs pass", path, f.path, f.path, self.cfg.rotate_wait)
                    self.copies[identity] = Copy(path=path, identity=identity, of=f, seen_at=now)
                    return
        except OSError as exc:
            self.open_failed(path, exc)
            return
        finally:
            os.close(fd)
        at_end = initial and self.first_start and not self.cfg.from_beginning
        f = self.follow(path, offset=None, at_end=at_end, now=now)
        if f is not None and f.fingerprint.length == 0 and not initial:
            f.unclassified = True  # empty: a copy in the making cannot be told yet (see read)

    def copy_or_truncated(self, f: TailedFile, now: float) -> bool:
        """Whether a file found empty turned out to be a copy; if so it is handled as one."""
        matches = [t for t in self.truncated if t.fingerprint.length >= MIN_COPY_BYTES
                   and t.fingerprint.matches_fd(f.fd)]
        originals = [g for g in self.files.values() if g is not f and g.is_open
                     and g.fingerprint.length >= MIN_COPY_BYTES and g.fingerprint.matches_fd(f.fd)]
        if not matches and not originals:
            return False
        del self.files[f.path]
        f.close()
        self.stats.files_opened -= 1
        try:
            st = os.stat(f.path)
        except OSError:
            return True
        self.discover(f.path, st, now, initial=False)
        return True

    def check_content(self, f: TailedFile, size: int, now: float) -> None:
        """Catch a truncation that rewrote past the position read (the size alone misses it),
        and let the fingerprint of a young file cover more of it."""
        try:
            if f.fingerprint.length and not f.fingerprint.matches_fd(f.fd):
                self.truncation(f, now, "its first bytes changed")
            else:
                f.fingerprint = f.fingerprint.extend(f.fd, size)
        except OSError:
            pass

    def truncation(self, f: TailedFile, now: float, why: str) -> None:
        self.log.warning("%s was truncated (%s): reading it again from its start", f.path, why)
        self.stats.files_truncated += 1
        self.truncated.append(Truncated(f.fingerprint, f.held_from(), now))
        for identity, copy in list(self.copies.items()):
            if copy.of is f and copy.path:
                del self.copies[identity]
                self.stats.files_copied += 1
                c = self.follow(copy.path, offset=f.held_from(), copy=True, now=now)
                if c is not None:
                    self.detach(c, now, deleted=False, quiet=True)
        f.reset()
        self.checkpoint_dirty = True
        self.next_scan = now  # its copy may be there already

    def renamed(self, f: TailedFile, path: str) -> None:
        """The same file under another matching name: same position."""
        if f in self.detached:
            self.detached.remove(f)
            f.detached_at = None
        elif self.files.get(f.path) is f:
            del self.files[f.path]
        self.log.debug("%s is now %s", f.path, path)
        f.path = path
        self.files[path] = f
        self.checkpoint_dirty = True

    def detach(self, f: TailedFile, now: float, *, deleted: bool, quiet: bool = False) -> None:
        if self.files.get(f.path) is f:
            del self.files[f.path]
        if not f.is_open:  # idle-closed at its end: nothing more can be read from it
            self.release(f, time.time_ns())
            return
        f.detached_at = now
        self.detached.append(f)
        if not quiet:
            if deleted:
                self.stats.files_deleted += 1
            else:
                self.stats.files_rotated += 1
            self.log.debug("%s: %s; reading the old file to its end", f.path,
                           "deleted" if deleted else "rotated")
        for identity, copy in list(self.copies.items()):
            if copy.of is f:  # renamed away rather than truncated: the copy is a plain copy
                copy.seen_at = -1e9

    def wake(self, f: TailedFile, now: float) -> None:
        """An idle-closed file changed: open it again (at its position, if it is the same)."""
        try:
            same = f.reopen()
        except OSError:
            return
        if same:
            f.last_data_at = now
            self.log.debug("%s changed: open again", f.path)
        else:
            del self.files[f.path]
            self.release(f, time.time_ns())
            self.follow(f.path, offset=None, now=now)

    def follow(self, path: str, *, offset: int | None, at_end: bool = False,
               copy: bool = False, now: float) -> TailedFile | None:
        try:
            f = TailedFile.open(path, offset=offset, at_end=at_end, chain=self.chain(), now=now,
                                shorter="end" if copy else "restart")
        except OSError as exc:
            self.open_failed(path, exc)
            return None
        self.open_errors.pop(path, None)
        if self.cfg.writer_from_line:
            f.flags = NAMES_PID
        self.files[path] = f
        self.stats.files_opened += 1
        self.checkpoint_dirty = True
        self.log.debug("following %s from offset %d", path, f.offset)
        return f

    def chain(self) -> RecordChain | None:
        ml = self.cfg.multiline
        if self.cfg.format == "raw" and ml is None:
            return None
        multiline = None if ml is None else Multiline(
            start=ml.start, timeout=ml.timeout, max_bytes=self.cfg.max_line_bytes)
        return RecordChain(fmt=self.cfg.format, multiline=multiline)

    def open_failed(self, path: str, exc: OSError) -> None:
        if self.open_errors.get(path) != exc.errno:
            self.open_errors[path] = exc.errno
            self.stats.open_errors += 1
            hint = " (will retry)" if exc.errno in (errno.EACCES, errno.EPERM) else ""
            self.log.warning("cannot open %s: %s%s", path, exc.strerror, hint)

    def release(self, f: TailedFile, now_ns: int) -> None:
        if f in self.detached:
            self.detached.remove(f)
        elif self.files.get(f.path) is f:
            del self.files[f.path]
        if f.is_open:
            # Anything it holds goes out now (the line with no newline at its end, a record).
            self.queue(f.flush(now_ns=now_ns))
            try:
                unread = f.size() - f.read_pos
            except OSError:
                unread = 0
            if unread > 0:
                self.stats.bytes_unread += unread
                self.log.warning("%s: let go with %d bytes unread", f.path, unread)
        f.close()
        self.released[f.identity] = (f, f.read_pos)
        self.stats.files_closed += 1

