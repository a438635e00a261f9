"""The process table: every process of the host (or of the PID namespace the agent sees), built
by a rundown of /proc when the pipeline starts and kept current by the process events of the eBPF
(or ETW) input, by a poll of /proc, and by looking up unknown pids on demand.

Processes are keyed by (pid, start time): pids are reused, and a reused pid never inherits the
old process's identity. A process that exited stays for ``grace`` seconds, so that late events
(a log line read after its writer exited) still resolve. The table is bounded (``max_entries``):
past it, the longest-exited entries go first.

Start times are nanoseconds since boot: /proc/PID/stat's starttime (clock ticks, 10 ms here), and
the eBPF input's CLOCK_BOOTTIME timestamps. Two start times within START_SLACK are the same
process: a pid is not reused within 20 ms.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from common.cpu import relax
from common.events import ProcessEvent, ProcessInfo
from pipeline.containers import from_cgroup



def _clock_tick_ns() -> int:
    """/proc's clock tick in nanoseconds. Windows has no sysconf (and no /proc: its table is
    fed by ETW events alone), so there the value is never used."""
    if hasattr(os, "sysconf"):
        return 1_000_000_000 // os.sysconf("SC_CLK_TCK")
    return 10_000_000


TICK_NS = _clock_tick_ns()
START_SLACK = 20_000_000
CMDLINE_ARGS = 32
CMDLINE_ARG_BYTES = 256


@dataclass(slots=True)
class Proc:
    pid: int
    start_ns: int
    ppid: int = 0
    comm: str = ""
    exe: str = ""
    cmdline: tuple[str, ...] = ()
    uid: int = -1
    user: str = ""
    cgroup: str = ""
    container_id: str = ""
    pod_uid: str = ""
    unit: str = ""
    exited_at: float | None = None
    _info: dict[str, ProcessInfo] | None = None

    def info(self, how: str) -> ProcessInfo:
        """This process as events carry it (made once per entry and attribution)."""
        if self._info is None:
            self._info = {}
        out = self._info.get(how)
        if out is None:
            out = self._info[how] = ProcessInfo(
                pid=self.pid, ppid=self.ppid, comm=self.comm, exe=self.exe,
                cmdline=list(self.cmdline), uid=self.uid, user=self.user,
                start_ns=self.start_ns, container_id=self.container_id, pod_uid=self.pod_uid,
                unit=self.unit, cgroup=self.cgroup, exited=self.exited_at is not None, how=how)
        return out

    def changed(self) -> None:
        self._info = None


class ProcessTable:
    def __init__(self, *, proc_root: str = "/proc", grace: float = 60.0,
                 max_entries: int = 65536, fed_by_events: bool = False) -> None:
        """fed_by_events: process events (``apply``) keep the table current: a poll reads only
        the processes new to it, unless ``stale`` (events were lost) asks for a full one."""
        self.proc_root = proc_root
        self.fed_by_events = fed_by_events
        self.stale = True
        """The next poll reads every process again: the first (what changed between the
        rundown and the events' start), and one after an input lost events."""
        self.grace = grace
        self.max_entries = max_entries
        self.by_pid: dict[int, list[Proc]] = {}
        """pid -> its processes, oldest first; at most the last one is alive."""
        self.size = 0
        self._users: dict[int, str] = {}
        self.lookups = 0
        self.misses = 0

    # --- reading /proc --------------------------------------------------------------------------

    def read(self, pid: int) -> Proc | None:
        """A process as /proc shows it now; None if there is no such process."""
        base = f"{self.proc_root}/{pid}"
        try:
            with open(f"{base}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            return None
        lpar, rpar = stat.find(b"("), stat.rfind(b")")
        fields = stat[rpar + 2:].split()
        proc = Proc(pid=pid, start_ns=int(fields[19]) * TICK_NS, ppid=int(fields[1]),
                    comm=stat[lpar + 1:rpar].decode(errors="replace"))
        try:
            proc.exe = os.readlink(f"{base}/exe")
        except OSError:
            pass  # a kernel thread, or another user's process without the privilege
        try:
            with open(f"{base}/cmdline", "rb") as f:
                raw = f.read(CMDLINE_ARGS * CMDLINE_ARG_BYTES)
            args = raw.rstrip(b"\0").split(b"\0")[:CMDLINE_ARGS] if raw else []
            proc.cmdline = tuple(a[:CMDLINE_ARG_BYTES].decode(errors="replace") for a in args)
        except OSError:
            pass
        try:
            with open(f"{base}/status", "rb") as f:
                for line in f:
                    if line.startswith(b"Uid:"):
                        proc.uid = int(line.split()[1])
                        break
            proc.user = self.user(proc.uid)
        except (OSError, ValueError, IndexError):
            pass
        try:
            with open(f"{base}/cgroup", "rb") as f:
                proc.cgroup = _cgroup_path(f.read().decode(errors="replace"))
            container, proc.unit = from_cgroup(proc.cgroup)
            if container is not None:
                proc.container_id, proc.pod_uid = container.id, container.pod_uid
        except OSError:
            pass
        return proc

    def user(self, uid: int) -> str:
        name = self._users.get(uid)
        if name is None:
            try:
                import pwd  # POSIX only; Windows events carry no uid
            except ImportError:
                pwd = None
            try:
                name = pwd.getpwuid(uid).pw_name if pwd is not None else ""
            except KeyError:
                name = ""
            self._users[uid] = name
        return name

    def pids(self) -> list[int]:
        return [int(e) for e in os.listdir(self.proc_root) if e.isdigit()]

    # --- keeping it current ---------------------------------------------------------------------

    def rundown(self) -> int:
        """Fill the table from /proc; return how many processes were found."""
        n = 0
        for pid in self.pids():
            proc = self.read(pid)
            if proc is not None:
                self._add(proc)
                n += 1
        return n

    def poll(self, now: float) -> tuple[int, int]:
        """Compare the table with /proc: new processes in, gone ones marked exited, a pid that
        now has another start time is a new process. Returns (new, exited). Fed by events
        (and not ``stale``), a known process is not read again: its exec or exit, and a new
        process on its pid, come as events."""
        full = not self.fed_by_events or self.stale
        self.stale = False
        seen = set()
        new = exited = 0
        for pid in self.pids():
            seen.add(pid)
            live = self._live(pid)
            if live is not None and not full:
                continue
            relax()  # the scan is ~10 us a process: on a big host, tens of milliseconds
            stat = self._stat_of(pid)
            if stat is None:
                continue
            start, comm = stat
            if live is not None and abs(live.start_ns - start) <= START_SLACK:
                if comm != live.comm:  # the same process ran exec: a new program
                    fresh = self.read(pid)
                    if fresh is not None:
                        self._replace(live, fresh)
                continue
            if live is not None:
                self._exit(live, now)
                exited += 1
            proc = self.read(pid)
            if proc is not None:
                self._add(proc)
                new += 1
        for pid, procs in self.by_pid.items():
            if pid not in seen and procs[-1].exited_at is None:
                self._exit(procs[-1], now)
                exited += 1
        self.expire(now)
        return new, exited

    def _stat_of(self, pid: int) -> tuple[int, str] | None:
        """(start time, comm) from /proc/PID/stat, the cheap check of a poll."""
        try:
            with open(f"{self.proc_root}/{pid}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            return None
        rpar = stat.rfind(b")")
        return (int(stat[rpar + 2:].split()[19]) * TICK_NS,
                stat[stat.find(b"(") + 1:rpar].decode(errors="replace"))

    def apply(self, ev: ProcessEvent, now: float) -> Proc | None:
        """Update the table from a process event (eBPF, ETW); return the process it is about."""
        if ev.kind == "exit":
            proc = self.lookup(ev.pid, now=now, read=False)
            if proc is not None:
                self._exit(proc, now)
            return proc
        if ev.kind == "fork":
            fresh = self.read(ev.pid)
            proc = fresh or Proc(pid=ev.pid, start_ns=ev.start_ns, ppid=ev.ppid, comm=ev.comm,
                                 uid=ev.uid, user=self.user(ev.uid) if ev.uid >= 0 else "")
            live = self._live(ev.pid)
            if live is not None and abs(live.start_ns - proc.start_ns) > START_SLACK:
                self._exit(live, now)
                live = None
            if live is None:
                if fresh is None and ev.ppid:
                    parent = self.lookup(ev.ppid, now=now)
                    if parent is not None:  # it inherits its parent's container and cgroup
                        proc.exe, proc.cmdline, proc.cgroup = parent.exe, parent.cmdline, parent.cgroup
                        proc.container_id, proc.pod_uid, proc.unit = (
                            parent.container_id, parent.pod_uid, parent.unit)
                self._add(proc)
                return proc
            return live
        # exec or rundown: the same process (pid and start time) runs a new program. /proc, when
        # it has the process, is authoritative; else the live entry is that process (an exited
        # one cannot exec: its pid came back as another process).
        proc = self._live(ev.pid)
        if proc is None and ev.pid not in self.by_pid:
            proc = self.lookup(ev.pid, now=now)  # not seen at all: perhaps /proc has it
        fresh = self.read(ev.pid)
        if fresh is not None:
            if ev.kind == "exec" and not fresh.exe:
                # It exited before this event was taken (a pipeline running behind) and is a
                # zombie, whose /proc has no exe and no cmdline: the event has them.
                fresh.exe = ev.filename
                fresh.cmdline = fresh.cmdline or tuple(ev.argv)
            if proc is not None and abs(proc.start_ns - fresh.start_ns) <= START_SLACK:
                self._replace(proc, fresh)
            else:
                if proc is not None:
                    self._exit(proc, now)
                self._add(fresh)
            return fresh
        if proc is None or proc.exited_at is not None:
            proc = Proc(pid=ev.pid, start_ns=ev.start_ns, ppid=ev.ppid)
            self._add(proc)
        proc.comm = ev.comm or proc.comm
        proc.exe = ev.filename or proc.exe
        if ev.argv or ev.kind == "exec":
            # An exec's arguments are the new program's. The probe cannot read them when they
            # lie in pages the process has not touched (a string literal in a child fresh from
            # fork: bpf_probe_read_user does not fault pages in): then they are unknown, not the
            # old program's (a fork's entry holds its parent's).
            proc.cmdline = tuple(ev.argv)
        if ev.uid >= 0:
            proc.uid, proc.user = ev.uid, self.user(ev.uid)
        proc.changed()
        return proc

    def lookup(self, pid: int, *, now: float, start_ns: int | None = None,
               read: bool = True) -> Proc | None:
        """The process with this pid (and start time, when given): the live one, or one that
        exited within the grace period; an unknown pid is read from /proc."""
        self.lookups += 1
        procs = self.by_pid.get(pid)
        if procs:
            if start_ns is None:
                return procs[-1]
            for proc in reversed(procs):
                if abs(proc.start_ns - start_ns) <= START_SLACK:
                    return proc
        if not read:
            return None
        self.misses += 1
        proc = self.read(pid)
        if proc is None or (start_ns is not None and abs(proc.start_ns - start_ns) > START_SLACK):
            return None
        live = self._live(pid)
        if live is not None:
            self._exit(live, now)
        self._add(proc)
        return proc

    def expire(self, now: float) -> None:
        for pid in list(self.by_pid):
            procs = self.by_pid[pid]
            keep = [p for p in procs if p.exited_at is None or now - p.exited_at < self.grace]
            self.size -= len(procs) - len(keep)
            if keep:
                self.by_pid[pid] = keep
            else:
                del self.by_pid[pid]
        if self.size > self.max_entries:
            gone = sorted((p for procs in self.by_pid.values() for p in procs
                           if p.exited_at is not None), key=lambda p: p.exited_at)
            for p in gone[: self.size - self.max_entries]:
                self.by_pid[p.pid].remove(p)
                if not self.by_pid[p.pid]:
                    del self.by_pid[p.pid]
                self.size -= 1

    # --- entries --------------------------------------------------------------------------------

    def _live(self, pid: int) -> Proc | None:
        procs = self.by_pid.get(pid)
        if procs and procs[-1].exited_at is None:
            return procs[-1]
        return None

    def _add(self, proc: Proc) -> None:
        self.by_pid.setdefault(proc.pid, []).append(proc)
        self.size += 1

    def _replace(self, old: Proc, new: Proc) -> None:
        procs = self.by_pid[old.pid]
        procs[procs.index(old)] = new

    def _exit(self, proc: Proc, now: float) -> None:
        if proc.exited_at is None:
            proc.exited_at = now
            proc.changed()

    def __len__(self) -> int:
        return self.size


def _cgroup_path(text: str) -> str:
    """The process's cgroup: the v2 path (``0::/...``), else the v1 hierarchy most likely to name
    the container (pids, memory, cpu), else the first."""
    lines = [ln.split(":", 2) for ln in text.splitlines() if ln.count(":") >= 2]
    for hid, controllers, path in lines:
        if hid == "0" and controllers == "":
            return path
    for want in ("pids", "memory", "cpu,cpuacct", "name=systemd"):
        for _hid, controllers, path in lines:
            if want in controllers.split(","):
                return path
    return lines[0][2] if lines else ""
