"""The file input's loop: discover files, read them fairly, send the lines, wait for change.

A round reads at most ``read_bytes`` from each followed file, so that one busy file cannot starve
the others; rounds follow each other without waiting while any file had data, and the input
sleeps (on inotify notifications, or the poll interval) only when none had. Lines are sent to the
pipeline as one message per ``send_bytes`` and at the end of every round. A full queue blocks the
send: the input stops reading, and the file itself is the buffer, so nothing is lost.

Start position: files that match when the input starts are read from their end, like
``tail -F`` (from their beginning with ``from_beginning``); files that appear later are read
from their beginning.

Rotation (this module's part of it): when a path names another file than the one followed, the
old file is read to its end and kept open for ``rotate_wait`` seconds for late writes, and the
new file is followed from its beginning. A followed file seen under another matching name (a
rename) stays the same file, at the same position. A file smaller than the position read was
truncated: it is read again from its beginning.
"""

from __future__ import annotations

import errno
import glob
import os
import select
import time
from dataclasses import dataclass, fields

from common.component import BootError, Context
from common.events import Batch, BatchCodec, LogEvent
from common.shmqueue import Full
from inputs.file.paths import Globber
from inputs.file.tailer import TailedFile
from inputs.file.watcher import Watcher

ROTATE_WAIT = 5.0
"""Seconds a rotated or deleted file is kept open at its end for writes that come late."""


@dataclass
class FileInputStats:
    """Counters of the file input, one per occurrence."""

    files_opened: int = 0
    files_closed: int = 0
    files_rotated: int = 0
    files_truncated: int = 0
    files_deleted: int = 0
    open_errors: int = 0
    lines_read: int = 0
    bytes_read: int = 0
    long_line_pieces: int = 0
    batches_sent: int = 0

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


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
    return FileInput(ctx)


class FileInput:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.cfg = ctx.config
        self.log = ctx.log
        self.producer = ctx.producers[0]
        self.codec = BatchCodec()
        self.globber = Globber(self.cfg.paths)
        self.watcher = Watcher(self.globber, mode=self.cfg.watch, log=self.log)
        self.stats = FileInputStats()
        self.files: dict[str, TailedFile] = {}
        """Followed files by the path that names them now."""
        self.detached: list[TailedFile] = []
        """Followed files that no path names any more, read to their end before they go."""
        self.open_errors: dict[str, int] = {}
        self.out: list[LogEvent] = []
        self.out_bytes = 0
        self.next_scan = 0.0

    # --- the loop -------------------------------------------------------------------------------

    def run(self) -> None:
        try:
            self.watcher.start()
        except OSError as exc:
            raise BootError(f"{self.ctx.name}: cannot watch with inotify: {exc}") from exc
        try:
            self.scan(initial=True)
            if not self.files:
                self.log.info("no file matches %s yet; waiting for one to appear",
                              ", ".join(self.globber.patterns))
            while not self.ctx.stop.is_set():
                now = time.monotonic()
                if now >= self.next_scan or self.watcher.take_rescan():
                    self.scan()
                if self.round() == 0:
                    self.wait()
            self.send()  # the supervisor closes the queue once this process has exited
            self.log.debug("stopped: %s", self.stats.as_dict())
        finally:
            self.watcher.stop()
            for f in [*self.files.values(), *self.detached]:
                f.close()

    def wait(self) -> None:
        timeout = self.cfg.poll_interval if self.watcher.polling else self.cfg.glob_interval
        timeout = min(timeout, max(0.0, self.next_scan - time.monotonic()))
        if self.detached:
            timeout = min(timeout, self.cfg.poll_interval)
        try:
            select.select([self.watcher.wakeup, self.ctx.stop], [], [], timeout)
        except InterruptedError:
            pass
        self.watcher.wakeup.clear()

    def round(self) -> int:
        """Read once from every followed file; return the bytes read."""
        total = 0
        now_ns = time.time_ns()
        for f in list(self.files.values()):
            total += self.read(f, now_ns)
        for f in list(self.detached):
            n = self.read(f, now_ns)
            total += n
            if n == 0 and time.monotonic() - f.detached_at >= ROTATE_WAIT:
                self.release(f)
        self.send()
        return total

    def read(self, f: TailedFile, now_ns: int) -> int:
        try:
            if f.size() < f.read_pos:
                self.log.warning("%s was truncated: reading it again from its start", f.path)
                self.stats.files_truncated += 1
                f.reset()
            events, n = f.read(self.cfg.read_bytes, max_line=self.cfg.max_line_bytes,
                               now_ns=now_ns)
        except OSError as exc:
            self.log.warning("cannot read %s: %s; letting it go", f.path, exc.strerror)
            self.release(f)
            return 0
        if n:
            self.stats.bytes_read += n
            for ev in events:
                self.stats.lines_read += ev.lines
                self.stats.long_line_pieces += 1 if ev.flags else 0
                self.out.append(ev)
                self.out_bytes += len(ev.data)
            if self.out_bytes >= self.cfg.send_bytes:
                self.send()
        return n

    def send(self) -> None:
        """Hand what was read to the pipeline, blocking while its queue is full."""
        if not self.out:
            return
        message = self.codec.encode(Batch(events=self.out, source=self.ctx.name))
        self.out, self.out_bytes = [], 0
        while True:
            try:
                self.producer.put(message, timeout=1.0)
                break
            except Full:
                # Backpressure: the lines wait here and in the file. Even when stopping, keep
                # trying: what was read should reach the outputs; the drain deadline bounds it.
                continue
        self.stats.batches_sent += 1

    # --- which files ----------------------------------------------------------------------------

    def scan(self, *, initial: bool = False) -> None:
        """Evaluate the globs again and follow what changed."""
        self.next_scan = time.monotonic() + self.cfg.glob_interval
        self.watcher.update()
        found = self.globber.resolve()
        by_identity = {f.identity: f for f in [*self.files.values(), *self.detached]}
        # Paths whose file went away or was replaced: keep reading the old file to its end.
        for path, f in list(self.files.items()):
            st = found.get(path)
            if st is None or (st.st_dev, st.st_ino) != f.identity:
                del self.files[path]
                f.detached_at = time.monotonic()
                self.detached.append(f)
                if st is None:
                    self.stats.files_deleted += 1
                else:
                    self.stats.files_rotated += 1
                self.log.debug("%s now names %s: reading the old file to its end", path,
                               "another file" if st else "nothing")
        for path, st in found.items():
            if path in self.files:
                continue
            known = by_identity.get((st.st_dev, st.st_ino))
            if known is not None:
                # The same file under another matching name (a rename): same position.
                if known in self.detached:
                    self.detached.remove(known)
                    known.detached_at = None
                known.path = path
                self.files[path] = known
                continue
            self.follow(path, at_end=initial and not self.cfg.from_beginning)

    def follow(self, path: str, *, at_end: bool) -> None:
        try:
            f = TailedFile.open(path, at_end=at_end)
        except OSError as exc:
            if self.open_errors.get(path) != exc.errno:
                self.open_errors[path] = exc.errno
                self.stats.open_errors += 1
                hint = " (will retry)" if exc.errno in (errno.EACCES, errno.EPERM) else ""
                self.log.warning("cannot open %s: %s%s", path, exc.strerror, hint)
            return
        self.open_errors.pop(path, None)
        self.files[path] = f
        self.stats.files_opened += 1
        self.log.debug("following %s from %s", path, f"offset {f.offset}" if at_end else "its start")

    def release(self, f: TailedFile) -> None:
        if f in self.detached:
            self.detached.remove(f)
        elif self.files.get(f.path) is f:
            del self.files[f.path]
        if f.pending:
            # The file ends without a newline and nothing more came: send what is there.
            self.out.append(f.flush(now_ns=time.time_ns()))
            self.log.debug("%s: sent %d bytes that no newline ended", f.path, len(f.pending))
        f.close()
        self.stats.files_closed += 1
