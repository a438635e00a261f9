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
deleted is the registry's part (registry.py): it returns what happened (changes.py) and this loop
acts on it: sends what a let-go file still held, counts, logs, checkpoints. docs/file-input.md
has the rules.

Descriptors (limits.py): at start the soft RLIMIT_NOFILE is raised to the hard one, and at most
``max_open_files`` files are open at once (by default the limit less a reserve for the rest of
the process); the registry closes and opens files to read them all in turn.
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
from common.events import FORMAT_ERROR, PIECE, Batch, BatchCodec, LogEvent
from common.memory import IdleTrim
from common.shmqueue import Full
from common.wake import wait_readable
from inputs.file.changes import (Change, Closed, Followed, Ignored, Opened, OpenFailed,
                                 Reclassified, Released, Renamed, Rotated, Truncated)
from inputs.file.checkpoint import Checkpointer, Entry, Loaded, StateError
from inputs.file.config import FileInputConfig
from inputs.file.fingerprint import FINGERPRINT_BYTES
from inputs.file.limits import descriptor_budget, raise_descriptor_limit
from inputs.file.paths import Globber, ScanError
from inputs.file.registry import OUT_OF_DESCRIPTORS, Registry
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
    files_parked: int = 0
    """Files closed to stay under the descriptor budget (opened again in turn)."""
    files_waiting: int = 0
    """Files waiting for a descriptor now (a gauge)."""
    files_waiting_max: int = 0
    files_ignored: int = 0
    open_errors: int = 0
    lines_read: int = 0
    bytes_read: int = 0
    bytes_unread: int = 0
    """Bytes of let-go files that could not be read (a deleted file still growing after the
    wait, a file deleted while it waited for a descriptor)."""
    long_line_pieces: int = 0
    format_errors: int = 0
    batches_sent: int = 0
    checkpoints_written: int = 0
    scan_errors: int = 0
    """Glob evaluations that failed (out of descriptors...): nothing is concluded from them."""

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
    ctx.one_producer()
    checkpointer = Checkpointer(state_dir=cfg.state_dir, input_name=cfg.name)
    try:
        checkpointer.prepare()
        loaded = checkpointer.load()
    except StateError as exc:
        raise BootError(str(exc)) from exc
    limit = raise_descriptor_limit(ctx.log)
    max_open = descriptor_budget(limit=limit, configured=cfg.max_open_files,
                                 log=ctx.log)
    return FileInput(ctx, checkpointer, loaded, max_open=max_open, limit=limit)


class FileInput:
    def __init__(self, ctx: Context[FileInputConfig], checkpointer: Checkpointer,
                 loaded: Loaded, *, max_open: int = 0, limit: int = 0) -> None:
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
        if loaded.existed and self.cfg.from_beginning:
            self.log.info("resuming from the checkpoints in %s: from_beginning applies to files "
                          "without one (use another --state-dir to read everything again)",
                          checkpointer.path)
        if loaded.damaged_lines:
            self.log.warning("%s: %d damaged line(s) skipped; %d checkpoint(s) kept; files "
                             "without one are read from their beginning", checkpointer.path,
                             loaded.damaged_lines, len(loaded.entries))
        self.registry = Registry(cfg=self.cfg, globber=self.globber, restored=loaded.entries,
                                 first_start=not loaded.existed, max_open=max_open)
        self.max_open = max_open
        self.limit = limit
        self.out: list[LogEvent] = []
        self.out_bytes = 0
        self.inflight: deque[tuple[int, dict[tuple[int, int], int]]] = deque()
        """(message seq, identity -> offset the message took that file to), oldest first."""
        self.last_seq = 0
        self.next_scan = 0.0
        self.next_checkpoint = 0.0
        self.checkpoint_dirty = False
        self.warned_waiting = False
        self.trim = IdleTrim(producers=ctx.producers)
        self.capped = False
        """A read of this round took all it could (``read_bytes``): read again at once."""
        self.warned: set[int] = set()
        """errno values already reported for all files (out of descriptors, scan errors)."""

    # --- the loop -------------------------------------------------------------------------------

    def run(self) -> None:
        try:
            self.watcher.start()
        except OSError as exc:
            raise BootError(f"{self.ctx.name}: cannot watch with inotify: {exc}") from exc
        self.poller = select.poll()
        for fd in (self.watcher.wakeup.fileno(), self.ctx.stop.fileno()):
            self.poller.register(fd, select.POLLIN)
        try:
            self.scan(initial=True)
            if not self.registry.files and not self.stats.open_errors:
                self.log.info("no file matches %s yet; waiting for one to appear",
                              ", ".join(self.globber.patterns))
            self.checkpoint(force=True)
            while not self.ctx.stop.is_set():
                now = time.monotonic()
                # What inotify queued while this loop was busy: a new or renamed file is
                # looked at now, not at the next glob evaluation.
                self.watcher.wakeup.clear()
                if now >= self.next_scan or self.watcher.take_rescan():
                    self.scan()
                started = time.monotonic()
                self.capped = False
                got = self.round()
                self.collect_acks()
                if time.monotonic() >= self.next_checkpoint:
                    self.checkpoint()
                if got == 0:
                    self.trim.idle()  # what the last reads left, back to the kernel
                    self.wait()
                else:
                    self.trim.busy()
                    if not self.capped and self.cfg.linger > 0:
                        self.linger(started + self.cfg.linger)
            self.send()
            self.finish()
        finally:
            self.watcher.stop()
            self.registry.close_all()

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

    def linger(self, until: float) -> None:
        """A round read only a little: let the writers add more before the next, so that the
        next message carries their lines together (the stop flag still ends it at once)."""
        timeout = min(until, self.next_scan, self.next_checkpoint) - time.monotonic()
        if timeout > 0:
            wait_readable([self.ctx.stop], timeout)

    def wait(self) -> None:
        now = time.monotonic()
        timeout = self.cfg.poll_interval if self.watcher.polling else self.cfg.glob_interval
        timeout = min(timeout, self.next_scan - now)
        if self.checkpoint_dirty or self.inflight:  # else the checkpoint timer has nothing to do
            timeout = min(timeout, self.next_checkpoint - now)
        reg = self.registry
        if reg.detached or reg.copies or reg.waiting or self.inflight:
            timeout = min(timeout, self.cfg.poll_interval)
        for f in reg.files.values():
            deadline = f.chain.deadline() if f.chain is not None else None
            if deadline is not None:
                timeout = min(timeout, deadline - now)
        deadline = now + timeout
        while True:
            try:
                self.poller.poll(max(0.0, timeout) * 1000)
            except InterruptedError:
                pass
            # Events about files no glob matches wake the poll, not a round.
            if self.watcher.wakeup.clear() is not False or self.ctx.stop.is_set():
                return
            timeout = deadline - time.monotonic()
            if timeout <= 0:
                return

    def scan(self, *, initial: bool = False) -> None:
        """Evaluate the globs again (registry.scan) and act on what changed."""
        now = time.monotonic()
        self.next_scan = now + self.cfg.glob_interval
        self.watcher.update()
        try:
            changes = self.registry.scan(now=now, initial=initial)
        except ScanError as exc:
            self.stats.scan_errors += 1
            if exc.errno not in self.warned:
                self.warned.add(exc.errno)
                self.log.warning("%s; no file is taken for deleted from this evaluation "
                                 "(will retry)", exc)
            return
        self.apply(changes, now)
        self.warn_waiting()

    def round(self) -> int:
        """Read once from every open file; return the bytes read."""
        total = 0
        now = time.monotonic()
        now_ns = time.time_ns()
        reg = self.registry
        for f in list(reg.files.values()):
            if f.is_open:
                total += self.read(f, now, now_ns)
                if f.is_open and now - f.last_data_at >= self.cfg.close_idle_after \
                        and not f.pending and f.held_from() == f.read_pos:
                    self.apply([reg.close_idle(f)], now)
            if f.chain is not None:
                self.queue(f.due(now=now, now_ns=now_ns))
        for f in list(reg.detached):
            if not f.is_open:
                continue  # waits for a descriptor
            n = self.read(f, now, now_ns)
            total += n
            if n == 0 and f in reg.detached and now - f.detached_at >= self.cfg.rotate_wait:
                self.apply(reg.let_go(f, now_ns), now)
        if reg.waiting:
            self.apply(reg.rebalance(now), now)
        self.send()
        return total

    def read(self, f: TailedFile, now: float, now_ns: int) -> int:
        changes: list[Change] = []
        f.reads += 1  # its turn (for the descriptor budget), even when it has nothing new
        try:
            size = f.size()
            if size == f.read_pos:
                return 0
            if f.unclassified:
                # Its first bytes came: a new file, or a copy (copytruncate) being written when
                # it was found empty? The registry looks at it again as a file just found.
                found = self.registry.first_bytes(f, now)
                if found is not None:
                    self.apply(found, now)
                    return 0
            if size < f.read_pos:
                changes = self.registry.truncation(f, now, "it is shorter than the position read")
            elif f.fingerprint.length and not f.fingerprint.matches_fd(f.fd):
                # Truncated and written past the position read: not a continuation.
                changes = self.registry.truncation(f, now, "its first bytes changed")
            events, n = f.read(self.cfg.read_bytes, max_line=self.cfg.max_line_bytes,
                               now_ns=now_ns, now=now)
            if n and f.fingerprint.length < FINGERPRINT_BYTES:
                # A young file (or one just truncated): let its fingerprint cover what it has
                # now, so that a rewrite is caught before the next read, not the next scan.
                f.fingerprint = f.fingerprint.extend(f.fd, f.read_pos)
        except OSError as exc:
            self.apply(changes, now)
            self.log.warning("cannot read %s: %s; letting it go", f.path, exc.strerror)
            self.apply(self.registry.let_go(f, now_ns), now)
            return 0
        self.apply(changes, now)
        if n:
            self.stats.bytes_read += n
            if n >= min(self.cfg.read_bytes, self.cfg.max_line_bytes):
                self.capped = True  # more may be waiting: no lingering
            self.queue(events)
        return n

    def apply(self, changes: list[Change], now: float) -> None:
        """Act on what the registry reports: count, log, send what let-go files held."""
        stats, log = self.stats, self.log
        for c in changes:
            match c:
                case Closed(file=f, idle=idle):
                    if idle:
                        stats.files_idle_closed += 1
                        log.debug("%s: idle for %.0fs, closed until it changes", f.path,
                                  self.cfg.close_idle_after)
                    else:
                        stats.files_parked += 1
                    continue
                case Opened(file=f, idle=idle):
                    if idle:
                        log.debug("%s changed: open again", f.path)
                    continue
                case Followed(file=f, why=why):
                    stats.files_opened += 1
                    if why == "copy":
                        stats.files_copied += 1
                    log.debug("following %s from offset %d (%s)", f.path, f.offset, why)
                case Renamed(file=f, old_path=old):
                    log.debug("%s is now %s", old, f.path)
                case Rotated(file=f, deleted=deleted):
                    if deleted:
                        stats.files_deleted += 1
                    else:
                        stats.files_rotated += 1
                    log.debug("%s: %s; reading the old file to its end", f.path,
                              "deleted" if deleted else "rotated")
                case Truncated(file=f, why=why):
                    stats.files_truncated += 1
                    log.warning("%s was truncated (%s): reading it again from its start",
                                f.path, why)
                    self.next_scan = now  # its copy may be there already
                case Released(file=f, events=events, unread=unread):
                    stats.files_closed += 1
                    if unread:
                        stats.bytes_unread += unread
                        log.warning("%s: let go with %d bytes unread", f.path, unread)
                    self.queue(events)
                case Reclassified():
                    stats.files_opened -= 1
                case Ignored(path=path, age=age):
                    stats.files_ignored += 1
                    log.debug("%s: not modified for %.0fs (ignore_older)", path, age)
                    continue
                case OpenFailed(path=path, errno=err, strerror=strerror):
                    stats.open_errors += 1
                    if err in OUT_OF_DESCRIPTORS:
                        if err not in self.warned:
                            self.warned.add(err)
                            log.warning("cannot open %s: %s (and maybe more files: will retry; "
                                        "see max_open_files)", path, strerror)
                    else:
                        hint = " (will retry)" if err in (errno.EACCES, errno.EPERM) else ""
                        log.warning("cannot open %s: %s%s", path, strerror, hint)
                    continue
            self.checkpoint_dirty = True
        waiting = len(self.registry.waiting)
        self.stats.files_waiting = waiting
        if waiting > self.stats.files_waiting_max:
            self.stats.files_waiting_max = waiting

    def warn_waiting(self) -> None:
        """Once, after a glob evaluation: how many files wait for a descriptor."""
        waiting = len(self.registry.waiting)
        if waiting and not self.warned_waiting:
            self.warned_waiting = True
            self.log.warning(
                "%d of %d followed files wait for a descriptor: at most %d files are open at "
                "once (max_open_files; the descriptor limit is %d); they are read in turn, "
                "nothing is lost or read twice for it (counter: files_waiting)", waiting,
                len(self.registry.files), self.max_open, self.limit)

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
        index = self.registry.index()
        for key in reach:
            f = index.get(key)
            if f is not None:  # never past a record the file still holds back
                reach[key] = min(reach[key], f.held_from())
        message = self.codec.encode(Batch(events=self.out, source=self.ctx.name, seq=seq))
        self.out, self.out_bytes = [], 0
        while True:
            try:
                self.producer.put(message, timeout=min(1.0, self.cfg.checkpoint_interval))
                break
            except Full:
                # Backpressure: the lines wait here and in the file. Even when stopping, keep
                # trying: what was read should reach the outputs; the drain deadline bounds it.
                # Meanwhile what the outputs deliver is still checkpointed (this message is not
                # in flight yet: nothing of it is).
                self.collect_acks()
                if time.monotonic() >= self.next_checkpoint:
                    self.checkpoint()
        self.inflight.append((seq, reach))
        self.last_seq = seq
        self.stats.batches_sent += 1
        if self.progress is None:
            self.collect_acks()

    def collect_acks(self) -> None:
        acked = self.progress.acked() if self.progress is not None else self.last_seq
        if not self.inflight or self.inflight[0][0] > acked:
            return
        index = self.registry.index()
        while self.inflight and self.inflight[0][0] <= acked:
            _, reach = self.inflight.popleft()
            for key, offset in reach.items():
                f = index.get(key)
                if f is not None and offset > f.acked:
                    f.acked = offset
                    self.checkpoint_dirty = True

    def checkpoint(self, *, force: bool = False) -> None:
        self.next_checkpoint = time.monotonic() + self.cfg.checkpoint_interval
        if not (force or self.checkpoint_dirty):
            return
        entries = [Entry(f.dev, f.ino, f.fingerprint, f.path, f.acked)
                   for f in self.registry.all_files()]
        try:
            self.checkpointer.save(entries)
        except StateError as exc:
            self.log.error("%s (will retry)", exc)
            return
        self.checkpoint_dirty = False
        self.stats.checkpoints_written += 1
