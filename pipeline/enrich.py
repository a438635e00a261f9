"""Enrichment: every event with a pid gets its process; every run of log lines gets its writer.

- Events with a pid (process, connection, HTTP): the process table's entry for that pid (the
  event's own pid: exact). Process events update the table first.
- Log lines: the processes that have the file open for writing (exact as to who could write;
  when several do, all are listed, since which one wrote a given line is not known); for inputs
  that ask for it (NAMES_PID), the pid a line names itself, syslog style ``app[1234]:`` (a best
  guess: anything can print that), which splits a run into runs of one pid each; and, for a
  container runtime's log file, its container from the path.
"""

from __future__ import annotations

import re
import time

import msgspec

from common.events import (NAMES_PID, NUMBERED, ONE_RECORD, ConnEvent, ContainerRef, Event,
                           HttpEvent, LogEvent, LossEvent, ProcessEvent, ProcessInfo)
from common.identity import event_seq
from pipeline.containers import from_log_path
from pipeline.proctable import ProcessTable
from pipeline.writers import WriterCache

_replace = msgspec.structs.replace
_UNKNOWN = object()
_NUMBERED = frozenset(NUMBERED)
_SYSLOG_PID = re.compile(rb"^(?:\S+ +){0,6}?[\w./@-]+\[(\d{1,9})\]: ")


class Enricher:
    def __init__(self, table: ProcessTable, writers: WriterCache) -> None:
        self.table = table
        self.writers = writers
        self.containers: dict[str, ContainerRef | None] = {}
        self.enriched = 0

    def enrich(self, events: list[Event], now: float | None = None, *,
               number: tuple[int, int] | None = None) -> list[Event]:
        """The events with their processes. ``number``: (input index, message seq): also give
        each event that no file holds its sequence for a record id (as
        ``pipeline.runner.number_events`` does), in the same copy of it."""
        now = time.monotonic() if now is None else now
        keys = {(e.dev, e.ino) for e in events if type(e) is LogEvent}
        writers = self.writers.writers(keys, now) if keys else {}
        base = event_seq(number[0], number[1], 0) if number is not None else 0
        out: list[Event] = []
        append = out.append
        lookup = self.table.lookup
        infos: dict[int, ProcessInfo | None] = {}
        """pid -> its ProcessInfo for this message's events (a message's exchanges come from a
        few processes); a process event, which may change its process, empties it."""
        for i, ev in enumerate(events):
            kind = type(ev)
            if kind is LogEvent:
                out += self._log(ev, writers.get((ev.dev, ev.ino), ()), now)
                continue
            if kind is HttpEvent or kind is ConnEvent:
                info = infos.get(ev.pid, _UNKNOWN)
                if info is _UNKNOWN:
                    proc = lookup(ev.pid, now=now)
                    info = infos[ev.pid] = proc.info("event") if proc is not None else None
            elif kind is ProcessEvent:
                infos.clear()
                proc = self.table.apply(ev, now)
                info = proc.info("event") if proc is not None else None
            else:
                if kind is LossEvent:  # events an input lost may be processes': look at all
                    self.table.stale = True
                info = None
            seq = base | i if base and kind in _NUMBERED and not ev.seq else 0
            if info is not None:
                append(_replace(ev, process=info, seq=seq) if seq else _replace(ev, process=info))
            else:
                append(_replace(ev, seq=seq) if seq else ev)
        self.enriched += len(out)
        return out

    def _log(self, ev: LogEvent, pids, now: float) -> list[LogEvent]:
        container = self.container_of(ev.path)
        if ev.flags & NAMES_PID:
            return self._by_line(ev, container, now)
        infos = []
        for pid in pids:
            proc = self.table.lookup(pid, now=now)
            if proc is not None:
                infos.append(proc.info("fd"))
        if not infos and container is None:
            return [ev]
        return [_replace(ev, writers=infos, container=container)]

    def _by_line(self, ev: LogEvent, container, now: float) -> list[LogEvent]:
        """Split a run into runs of consecutive lines that name the same pid (or none)."""
        if ev.flags & ONE_RECORD:  # one record (a piece, a multiline record): its first line
            m = _SYSLOG_PID.match(ev.data)
            return [_replace(ev, writers=self._named(int(m.group(1)) if m else None, now),
                             container=container)]
        out = []
        lines = ev.data.split(b"\n")
        lines.pop()  # a run ends with a newline
        start = off = ev.offset
        current: int | None = None
        chunk: list[bytes] = []
        for line in lines + [None]:
            m = _SYSLOG_PID.match(line) if line is not None else None
            pid = int(m.group(1)) if m else None
            if chunk and (line is None or pid != current):
                data = b"\n".join(chunk) + b"\n"
                out.append(_replace(ev, offset=start, data=data, lines=len(chunk),
                                    writers=self._named(current, now), container=container))
                chunk, start = [], off
            if line is None:
                break
            current = pid
            chunk.append(line)
            off += len(line) + 1
        return out

    def _named(self, pid: int | None, now: float) -> list:
        if pid is None:
            return []
        proc = self.table.lookup(pid, now=now)
        return [proc.info("line")] if proc is not None else []

    def container_of(self, path: str) -> ContainerRef | None:
        if path not in self.containers:
            if len(self.containers) > 100_000:
                self.containers.clear()
            self.containers[path] = from_log_path(path)
        return self.containers[path]

