"""The process table against real processes: rundown, polls, events, and pid reuse."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from common.events import ProcessEvent
from pipeline.proctable import ProcessTable


def test_rundown_knows_this_process():
    table = ProcessTable()
    n = table.rundown()
    assert n == len(table) > 10
    me = table.lookup(os.getpid(), now=0)
    assert me.comm == open(f"/proc/{os.getpid()}/comm").read().strip()
    assert me.ppid == os.getppid()
    assert me.exe == os.path.realpath(sys.executable)
    assert me.cmdline[0] == sys.argv[0] or me.cmdline[0].endswith("python")
    assert me.uid == os.getuid() and me.user == "root"
    assert me.cgroup.startswith("/")
    init = table.lookup(1, now=0)
    assert init.ppid == 0


def exec_done(p: subprocess.Popen, argv0: str) -> subprocess.Popen:
    """Wait until the child runs its program (between fork and exec it is still a python)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with open(f"/proc/{p.pid}/cmdline", "rb") as f:
            if f.read().split(b"\0")[0] == argv0.encode():
                return p
        time.sleep(0.005)
    raise AssertionError("the child never ran its program")


def test_poll_sees_an_exec_without_events():
    table = ProcessTable()
    table.rundown()
    child = subprocess.Popen(["sh", "-c", "sleep 0.3; exec sleep 30"])
    try:
        exec_done(child, "sh")
        table.poll(now=1.0)
        assert table.lookup(child.pid, now=1.0).comm == "sh"
        time.sleep(0.6)
        table.poll(now=2.0)
        assert table.lookup(child.pid, now=2.0).cmdline == ("sleep", "30")
    finally:
        child.kill()
        child.wait()


def test_poll_sees_new_and_exited_processes():
    table = ProcessTable(grace=30)
    table.rundown()
    child = exec_done(subprocess.Popen(["sleep", "30", "0.1"]), "sleep")
    try:
        new, _ = table.poll(now=1.0)
        assert new >= 1
        proc = table.lookup(child.pid, now=1.0, read=False)
        assert proc is not None and proc.cmdline == ("sleep", "30", "0.1")
        assert proc.exited_at is None
    finally:
        child.kill()
        child.wait()
    table.poll(now=2.0)
    proc = table.lookup(child.pid, now=2.0, read=False)
    assert proc.exited_at == 2.0 and proc.info("event").exited     # kept for late events
    table.poll(now=40.0)                                            # past the grace period
    assert table.lookup(child.pid, now=40.0, read=False) is None


def test_unknown_pid_is_read_on_demand():
    table = ProcessTable()
    child = exec_done(subprocess.Popen(["sleep", "30", "0.2"]), "sleep")
    try:
        proc = table.lookup(child.pid, now=0)
        assert proc.cmdline == ("sleep", "30", "0.2") and table.misses == 1
    finally:
        child.kill()
        child.wait()


def _spawn_with_pid(pid: int, argv: list[str]) -> subprocess.Popen | None:
    """Start a process that gets ``pid``, by setting ns_last_pid (as CRIU does). Other
    processes may take the pid first on a busy host: then None."""
    for _ in range(20):
        with open("/proc/sys/kernel/ns_last_pid", "w") as f:
            f.write(str(pid - 1))
        p = subprocess.Popen(argv)
        if p.pid == pid:
            return p
        p.kill()
        p.wait()
    return None


@pytest.mark.skipif(os.geteuid() != 0, reason="setting ns_last_pid needs root (CI runs as root)")
def test_a_reused_pid_never_inherits_the_old_identity():
    table = ProcessTable(grace=60)
    old = exec_done(subprocess.Popen(["sleep", "30", "0.3"]), "sleep")
    pid = old.pid
    table.lookup(pid, now=0.0)
    old_start = table.lookup(pid, now=0.0).start_ns
    old.kill()
    old.wait()
    time.sleep(0.03)  # start times are in 10 ms ticks
    new = _spawn_with_pid(pid, ["sleep", "30", "0.4"])
    assert new is not None, "could not get the pid back"
    try:
        exec_done(new, "sleep")
        table.poll(now=1.0)
        now_proc = table.lookup(pid, now=1.0)
        assert now_proc.cmdline == ("sleep", "30", "0.4")
        assert now_proc.exited_at is None
        # A late event of the old process (its start time) still resolves to the old one.
        before = table.lookup(pid, now=1.0, start_ns=old_start)
        assert before.cmdline == ("sleep", "30", "0.3") and before.exited_at == 1.0
    finally:
        new.kill()
        new.wait()


def test_process_events_update_the_table():
    table = ProcessTable()
    child = exec_done(subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"]),
                      sys.executable)
    try:
        start = table.read(child.pid).start_ns
        fork = ProcessEvent(kind="fork", time_ns=0, pid=child.pid, ppid=os.getpid(), comm="python3",
                            start_ns=start, source="ebpf")
        proc = table.apply(fork, now=0)
        assert proc.pid == child.pid and proc.ppid == os.getpid()
        exec_ = ProcessEvent(kind="exec", time_ns=0, pid=child.pid, comm="python3",
                             filename=sys.executable, argv=["python3", "-c", "..."], source="ebpf")
        proc = table.apply(exec_, now=0)
        assert proc.cmdline[0].endswith("python3") or "python" in proc.cmdline[0]
    finally:
        child.kill()
        child.wait()
    exit_ = ProcessEvent(kind="exit", time_ns=0, pid=child.pid, exit_code=-9, source="ebpf")
    proc = table.apply(exit_, now=5.0)
    assert proc.exited_at == 5.0
    # A fork event for a process already gone is kept from the event, with its parent's context.
    gone = ProcessEvent(kind="fork", time_ns=0, pid=4_000_000, ppid=os.getpid(), comm="x",
                        start_ns=123, source="ebpf")
    proc = table.apply(gone, now=6.0)
    assert proc.comm == "x" and proc.cgroup == table.lookup(os.getpid(), now=6).cgroup


def test_the_table_is_bounded():
    table = ProcessTable(grace=1000, max_entries=1024)
    table.rundown()
    base = len(table)
    for pid in range(5_000_000, 5_002_000):
        from pipeline.proctable import Proc

        table._add(Proc(pid=pid, start_ns=pid))
        table._exit(table.by_pid[pid][-1], now=float(pid))
    table.expire(now=5_002_000.0)
    assert len(table) <= max(1024, base)
    assert table.lookup(os.getpid(), now=0, read=False) is not None  # live ones stay


def test_an_exec_taken_after_the_process_exited_keeps_the_program_the_event_names():
    """A pipeline running behind takes a short-lived process's exec event after the process
    exited but before its parent reaped it: /proc then shows a zombie (its comm, no exe, no
    cmdline). The event's program must win over that, or every exchange of the process would
    be attributed to no executable (seen: RED metrics' services by executable path)."""
    table = ProcessTable()
    child = subprocess.Popen(["/bin/true"])
    deadline = time.monotonic() + 10
    while open(f"/proc/{child.pid}/stat").read().split(") ")[1][0] != "Z":
        assert time.monotonic() < deadline, "the child never became a zombie"
        time.sleep(0.005)
    try:
        assert table.read(child.pid).exe == ""  # what /proc gives of a zombie
        exec_ = ProcessEvent(kind="exec", time_ns=0, pid=child.pid, ppid=os.getpid(),
                             comm="true", filename="/bin/true", argv=["/bin/true"],
                             source="ebpf")
        proc = table.apply(exec_, now=0)
        assert proc.exe == "/bin/true" and proc.cmdline == ("/bin/true",)
        assert table.lookup(child.pid, now=0).exe == "/bin/true"
    finally:
        child.wait()


def test_an_exec_whose_arguments_the_probe_could_not_read_never_keeps_the_parent_s():
    """A short-lived child's exec taken after it was reaped (no /proc to read), whose argv the
    probe could not copy (bpf_probe_read_user fails on pages not yet faulted in: a string
    literal in a child fresh from fork): its fork's entry held the parent's command line, which
    must not stay as the new program's."""
    table = ProcessTable()
    child = subprocess.Popen(["/bin/true"])
    child.wait()
    assert table.read(child.pid) is None
    table.apply(ProcessEvent(kind="fork", time_ns=0, pid=child.pid, ppid=os.getpid(),
                             comm="python", start_ns=1, source="ebpf"), now=0)
    forked = table.lookup(child.pid, now=0, read=False)
    assert forked.cmdline == table.lookup(os.getpid(), now=0).cmdline != ()
    proc = table.apply(ProcessEvent(kind="exec", time_ns=0, pid=child.pid, comm="true",
                                    filename="/bin/true", argv=[], start_ns=1, source="ebpf"),
                       now=0)
    assert proc.exe == "/bin/true" and proc.cmdline == ()
    proc = table.apply(ProcessEvent(kind="exec", time_ns=0, pid=child.pid, comm="true",
                                    filename="/bin/true", argv=["true", "-x"], start_ns=1,
                                    source="ebpf"), now=0)
    assert proc.cmdline == ("true", "-x")


def test_a_poll_offers_the_cpu_as_it_goes_through_proc(monkeypatch):
    """A poll reads a file or two per process of the host (~1 ms here with 120 of them, tens of
    ms on a big host): it gives the CPU to a waiting traced process between them, as the
    pipeline's other loops do (common/cpu.py)."""
    import pipeline.proctable as proctable

    table = ProcessTable()
    table.rundown()
    calls = []
    monkeypatch.setattr(proctable, "relax", lambda: calls.append(1))
    table.poll(now=1.0)
    assert len(calls) >= len(table.pids()) - 5 > 10  # (processes come and go meanwhile)


def test_a_table_fed_by_events_polls_only_for_processes_new_to_it(monkeypatch):
    """With the eBPF process probe on (its forks, execs and exits keep the table current), a
    poll reads only the processes the table does not know, not every known one's stat again;
    the first poll, and one after an input lost events (``stale``), read them all."""
    table = ProcessTable(fed_by_events=True)
    table.rundown()
    known = len(table.pids())
    reads = []
    original = table._stat_of
    monkeypatch.setattr(table, "_stat_of", lambda pid: (reads.append(pid), original(pid))[1])
    table.poll(now=1.0)  # the first: full
    assert len(reads) >= known - 5 > 10
    child = exec_done(subprocess.Popen(["sleep", "30", "0.3"]), "sleep")
    try:
        reads.clear()
        new, _ = table.poll(now=2.0)
        assert child.pid in reads and len(reads) < 5 and new >= 1
        assert table.lookup(child.pid, now=2.0, read=False).cmdline == ("sleep", "30", "0.3")
        reads.clear()
        table.stale = True  # as a LossEvent makes it (pipeline/enrich.py)
        table.poll(now=3.0)
        assert len(reads) >= known - 5
        reads.clear()
        table.poll(now=4.0)
        assert len(reads) < 5
    finally:
        child.kill()
        child.wait()
    table.poll(now=5.0)  # gone from /proc, with no exit event: still marked exited
    assert table.lookup(child.pid, now=5.0, read=False).exited_at == 5.0


def test_a_table_not_fed_by_events_reads_every_process_at_each_poll(monkeypatch):
    table = ProcessTable()
    table.rundown()
    table.poll(now=1.0)
    reads = []
    original = table._stat_of
    monkeypatch.setattr(table, "_stat_of", lambda pid: (reads.append(pid), original(pid))[1])
    table.poll(now=2.0)
    assert len(reads) >= len(table.pids()) - 5 > 10
