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

Which files are followed and what becomes of them when they are rotated, copied, truncated or
deleted is lifecycle.py's part (docs/file-input.md has the rules).
"""

from __future__ import annotations

import glob
import os
import select
import time
from collections import deque
from dataclasses import dataclass, fields

from common.component import BootError, Context
from common.events import FORMAT_ERROR, PIECE, Batch, BatchCodec, LogEvent
from common.shmqueue import Full
from inputs.file.checkpoint import Checkpointer, Entry, StateError
from inputs.file.config import FileInputConfig
from inputs.file.fingerprint import FINGERPRINT_BYTES
from inputs.file.paths import Globber
from inputs.file.lifecycle import Copy, Lifecycle, Truncated
from inputs.file.tailer import TailedFile
from inputs.file.watcher import Watcher

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


def build(ctx: Context[FileInputConfig]) -> FileInput:
    cfg = ctx.config
    if not cfg.paths:
        raise BootError(f"{ctx.name}: no paths to follow")
    for pattern in Globber(cfg.paths).patterns:
        if not glob.has_magic(pattern) and os.path.isdir(pattern):
            raise BootError(f"{pattern} is a directory, not a file: to follow the files in it, "
                            f"give a glob such as '{os.path.join(pattern, '*.log')}'")
    if len(ctx.producers) != 1:
        raise BootError(f"{ctx.name}: expected one output queue, got {len(ctx.producers)}")
    checkpointer = Checkpointer(state_dir=cfg.state_dir, input_name=cfg.name)
    try:
        checkpointer.prepare()
        loaded = checkpointer.load()
    except StateError as exc:
        raise BootError(str(exc)) from exc
    return FileInput(ctx, checkpointer, loaded)


class FileInput(Lifecycle):
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
        if loaded.existed and self.cfg.from_beginning:
            self.log.info("resuming from the checkpoints in %s: from_beginning applies to files "
                          "without one (use another --state-dir to read everything again)",
                          checkpointer.path)
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
