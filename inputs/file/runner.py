"""The file input's loop: discover files, read them fairly, send the lines, keep checkpoints.

Rounds: a round reads at most ``read_bytes`` from each followed file (fairness); rounds follow
each other while any file had data, and the input sleeps (inotify notifications or the poll
interval) only when none had. Lines go to the pipeline as one message per ``send_bytes`` and at
the end of every round; a full queue blocks the send, so the input stops reading and the file
itself is the buffer.

Acknowledgements and checkpoints: every message gets a number (common.progress) and the input
remembers, per message, how far it took each file. When every output has delivered a message,
its files' acknowledged offsets advance; every ``checkpoint_interval`` (and at the end) they are
written to the state directory. At start, a file whose (device, inode) and fingerprint match a
checkpoint resumes at its offset. Files that match no checkpoint are read from their beginning,
except at the input's very first start (no checkpoint file at all), when files already there are
read from their end like ``tail -F`` unless ``from_beginning``.

Rotation and its relatives (docs/file-input.md has the details):
- rename (logrotate ``create``, ``dateext``): the path names another file; the old file is read
  to its end and kept ``rotate_wait`` seconds for late writes, then let go; the new one is read
  from its start. A followed file seen under another matching name keeps its position.
- copy then truncate (``copytruncate``): a new file whose fingerprint is a followed file's is its
  copy; it is not read from its start but held until the original is truncated, and then read
  from the original's first unsent byte to its end: the lines the original still had.
- truncation in place (size below the position read, or the fingerprint changed): read from 0.
- deletion: read to the end, let go after ``rotate_wait``; bytes that could not be read counted.
"""

from __future__ import annotations

import errno
import glob
import os
import select
import time
from collections import deque
from dataclasses import dataclass, fields

from common.component import BootError, Context
from common.events import FORMAT_ERROR, NAMES_PID, PIECE, Batch, BatchCodec, LogEvent
from common.shmqueue import Full
from inputs.file.checkpoint import Checkpointer, Entry, StateError
from inputs.file.fingerprint import FINGERPRINT_BYTES, Fingerprint
from inputs.file.formats import Multiline, RecordChain
from inputs.file.paths import Globber
from inputs.file.tailer import TailedFile
from inputs.file.watcher import Watcher

MIN_COPY_BYTES = 64
"""A new file is taken for a copy of a followed one only when the fingerprint it shares covers
at least this many bytes: two short files that start alike are too common."""

ACK_WAIT = 5.0
"""At a stop, seconds to wait for the outputs to acknowledge the last messages before the final
checkpoint (bounded further by the agent's drain deadline)."""


@dataclass
class FileInputStats:
    """Counters of the file input, one per occurrence."""

    files_opened: int = 0
    files_closed: int = 0
    files_rotated: int = 0
    files_truncated: int = 0
    files_deleted: int = 0
    files_copied: int = 0
    files_idle_closed: int = 0
    files_ignored: int = 0
    open_errors: int = 0
    lines_read: int = 0
    bytes_read: int = 0
    bytes_unread: int = 0
    """Bytes of let-go files that could not be read (a deleted file still growing after the wait)."""
    long_line_pieces: int = 0
    format_errors: int = 0
    batches_sent: int = 0
    checkpoints_written: int = 0

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


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


def build(ctx: Context) -> FileInput:
    cfg = ctx.config
    if not cfg.paths:
        raise BootError(f"{ctx.name}: no paths to follow")
    for pattern in Globber(cfg.paths).patterns:
        if not glob.has_magic(pattern) and os.path.isdir(pattern):
            raise BootError(f"{pattern} is a directory, not a file: to follow the files in it, "
                            f"give a glob such as '{os.path.join(pattern, '*.log')}'")
    if len(ctx.producers) != 1:
        raise BootError(f"{ctx.name}: expected one output queue, got {len(ctx.producers)}")
    if cfg.multiline is not None:
        try:
            Multiline(start=cfg.multiline.start, timeout=1, max_bytes=1)
        except ValueError as exc:
            raise BootError(f"{ctx.name}: {exc}") from exc
    checkpointer = Checkpointer(state_dir=cfg.state_dir, input_name=cfg.name)
    try:
        checkpointer.prepare()
        loaded = checkpointer.load()
    except StateError as exc:
        raise BootError(str(exc)) from exc
    return FileInput(ctx, checkpointer, loaded)


class FileInput:
    def __init__(self, ctx: Context, checkpointer: Checkpointer, loaded) -> None:
        self.ctx = ctx
        self.cfg = ctx.config
        self.log = ctx.log
        self.producer = ctx.producers[0]
        self.progress = ctx.progress
        self.codec = BatchCodec()
        self.globber = Globber(self.cfg.paths, exclude=self.cfg.exclude)
        self.watcher = Watcher(self.globber, mode=self.cfg.watch, log=self.log)
        self.stats = FileInputStats()
        self.checkpointer = checkpointer
        self.restored: dict[tuple[int, int], Entry] = loaded.entries
        self.first_start = not loaded.existed
        if loaded.damaged_lines:
            self.log.warning("%s: %d damaged line(s) skipped; %d checkpoint(s) kept; files "
                             "without one are read from their beginning", checkpointer.path,
                             loaded.damaged_lines, len(loaded.entries))
        self.files: dict[str, TailedFile] = {}
        """Followed files by the path that names them now."""
        self.detached: list[TailedFile] = []
        """Files that no path names any more, read to their end before they go."""
        self.released: dict[tuple[int, int], tuple[TailedFile, int]] = {}
        """Let-go files whose last lines are not acknowledged yet: identity -> (file, end)."""
        self.copies: dict[tuple[int, int], Copy] = {}
        self.truncated: list[Truncated] = []
        self.ignored: dict[str, tuple[float, int, int, int]] = {}
        """Paths left alone by ignore_older -> (mtime, device, inode, size) they had then."""
        self.open_errors: dict[str, int] = {}
        self.out: list[LogEvent] = []
        self.out_bytes = 0
        self.inflight: deque[tuple[int, dict[tuple[int, int], int]]] = deque()
        """(message seq, identity -> offset the message took that file to), oldest first."""
        self.last_seq = 0
        self.next_scan = 0.0
        self.next_checkpoint = 0.0
        self.checkpoint_dirty = False

    # --- the loop -------------------------------------------------------------------------------

    def run(self) -> None:
        try:
            self.watcher.start()
        except OSError as exc:
            raise BootError(f"{self.ctx.name}: cannot watch with inotify: {exc}") from exc
        try:
            self.scan(initial=True)
            self.restored.clear()  # entries of files not found now would only grow stale
            if not self.files:
                self.log.info("no file matches %s yet; waiting for one to appear",
                              ", ".join(self.globber.patterns))
            self.checkpoint(force=True)
            while not self.ctx.stop.is_set():
                now = time.monotonic()
                if now >= self.next_scan or self.watcher.take_rescan():
                    self.scan()
                got = self.round()
                self.collect_acks()
                if time.monotonic() >= self.next_checkpoint:
                    self.checkpoint()
                if got == 0:
                    self.wait()
            self.send()
            self.finish()
        finally:
            self.watcher.stop()
            for f in [*self.files.values(), *self.detached,
                      *(f for f, _ in self.released.values())]:
                f.close()

    def finish(self) -> None:
        """At a stop: wait (a little) for the last messages to be acknowledged, then write the
        final checkpoint, so that a clean restart repeats nothing."""
        deadline = time.monotonic() + ACK_WAIT
        while self.inflight and time.monotonic() < deadline:
            self.collect_acks()
            if self.inflight:
                time.sleep(0.02)
        self.checkpoint(force=True)
        self.log.debug("stopped (%d message(s) unacknowledged): %s", len(self.inflight),
                       self.stats.as_dict())

    def wait(self) -> None:
        now = time.monotonic()
        timeout = self.cfg.poll_interval if self.watcher.polling else self.cfg.glob_interval
        timeout = min(timeout, self.next_scan - now, self.next_checkpoint - now)
        if self.detached or self.copies or self.inflight:
            timeout = min(timeout, self.cfg.poll_interval)
        for f in self.files.values():
            deadline = f.chain.deadline() if f.chain is not None else None
            if deadline is not None:
                timeout = min(timeout, deadline - now)
        try:
            select.select([self.watcher.wakeup, self.ctx.stop], [], [], max(0.0, timeout))
        except InterruptedError:
            pass
        self.watcher.wakeup.clear()

    def round(self) -> int:
        """Read once from every followed file; return the bytes read."""
        total = 0
        now = time.monotonic()
        now_ns = time.time_ns()
        for f in list(self.files.values()):
            if f.is_open:
                total += self.read(f, now, now_ns)
                self.queue(f.due(now=now, now_ns=now_ns))
                if now - f.last_data_at >= self.cfg.close_idle_after and not f.pending \
                        and f.held_from() == f.read_pos:
                    f.close()
                    self.stats.files_idle_closed += 1
                    self.log.debug("%s: idle for %.0fs, closed until it changes", f.path,
                                   self.cfg.close_idle_after)
        for f in list(self.detached):
            n = self.read(f, now, now_ns)
            total += n
            if n == 0 and now - f.detached_at >= self.cfg.rotate_wait:
                self.release(f, now_ns)
        self.send()
        return total

    def read(self, f: TailedFile, now: float, now_ns: int) -> int:
        try:
            size = f.size()
            if size == f.read_pos:
                return 0
            if f.unclassified:
                # Its first bytes came: a new file, or a copy (copytruncate) being written when
                # it was found empty? Look at it again as a file just found.
                f.unclassified = False
                if self.copy_or_truncated(f, now):
                    return 0
            if size < f.read_pos:
                self.truncation(f, now, "it is shorter than the position read")
            elif f.fingerprint.length and not f.fingerprint.matches_fd(f.fd):
                # Truncated and written past the position read: not a continuation.
                self.truncation(f, now, "its first bytes changed")
            events, n = f.read(self.cfg.read_bytes, max_line=self.cfg.max_line_bytes,
                               now_ns=now_ns, now=now)
        except OSError as exc:
            self.log.warning("cannot read %s: %s; letting it go", f.path, exc.strerror)
            self.release(f, now_ns)
            return 0
        if n:
            self.stats.bytes_read += n
            if f.fingerprint.length < FINGERPRINT_BYTES:
                # A young file (or one just truncated): let its fingerprint cover what it has
                # now, so that a rewrite is caught before the next read, not the next scan.
                f.fingerprint = f.fingerprint.extend(f.fd, f.read_pos)
            self.queue(events)
        return n

    def queue(self, events: list[LogEvent]) -> None:
        for ev in events:
            self.stats.lines_read += ev.lines
            if ev.flags & PIECE:
                self.stats.long_line_pieces += 1
            if ev.flags & FORMAT_ERROR:
                self.stats.format_errors += 1
            self.out.append(ev)
            self.out_bytes += len(ev.data)
        if self.out_bytes >= self.cfg.send_bytes:
            self.send()

    def send(self) -> None:
        """Hand what was read to the pipeline, blocking while its queue is full, and remember
        how far this message takes each file."""
        if not self.out:
            return
        seq = self.progress.next_seq() if self.progress is not None else 0
        reach: dict[tuple[int, int], int] = {}
        for ev in self.out:
            key = (ev.dev, ev.ino)
            reach[key] = max(reach.get(key, 0), ev.end_offset)
        index = self.index()
        for key in reach:
            f = index.get(key)
            if f is not None:  # never past a record the file still holds back
                reach[key] = min(reach[key], f.held_from())
        message = self.codec.encode(Batch(events=self.out, source=self.ctx.name, seq=seq))
        self.out, self.out_bytes = [], 0
        while True:
            try:
                self.producer.put(message, timeout=1.0)
                break
            except Full:
                # Backpressure: the lines wait here and in the file. Even when stopping, keep
                # trying: what was read should reach the outputs; the drain deadline bounds it.
                continue
        self.inflight.append((seq, reach))
        self.last_seq = seq
        self.stats.batches_sent += 1
        if self.progress is None:
            self.collect_acks()

    def collect_acks(self) -> None:
        acked = self.progress.acked() if self.progress is not None else self.last_seq
        if not self.inflight or self.inflight[0][0] > acked:
            return
        index = self.index()
        while self.inflight and self.inflight[0][0] <= acked:
            _, reach = self.inflight.popleft()
            for key, offset in reach.items():
                f = index.get(key)
                if f is not None and offset > f.acked:
                    f.acked = offset
                    self.checkpoint_dirty = True

    def index(self) -> dict[tuple[int, int], TailedFile]:
        """Every file the input knows, by identity (followed ones win over let-go ones)."""
        index = {key: f for key, (f, _) in self.released.items()}
        index.update((f.identity, f) for f in self.detached)
        index.update((f.identity, f) for f in self.files.values())
        return index

    def checkpoint(self, *, force: bool = False) -> None:
        self.next_checkpoint = time.monotonic() + self.cfg.checkpoint_interval
        if not (force or self.checkpoint_dirty):
            return
        entries = [Entry(f.dev, f.ino, f.fingerprint, f.path, f.acked)
                   for f in [*self.files.values(), *self.detached,
                             *(f for f, _ in self.released.values())]]
        try:
            self.checkpointer.save(entries)
        except StateError as exc:
            self.log.error("%s (will retry)", exc)
            return
        self.checkpoint_dirty = False
        self.stats.checkpoints_written += 1

    # --- which files ----------------------------------------------------------------------------

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

