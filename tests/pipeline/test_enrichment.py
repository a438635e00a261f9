"""Every log line knows its writer, through the real agent: real writer processes, the syslog
pid a line names, container log paths, with and without the eBPF input."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.harness import Agent, wait_for

PY_WRITER = """
import sys, time
f = open(sys.argv[1], "a", buffering=1)
i = 0
while True:
    f.write(f"py line {i}\\n"); i += 1
    time.sleep(0.02)
"""


def py_writer(path: Path, tag: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", PY_WRITER, str(path), tag])


def sh_writer(path: Path) -> subprocess.Popen:
    # The shell keeps the file open on fd 3; its sleep must not inherit it (3>&-).
    script = (f'exec 3>>"{path}"; i=0; while :; do echo "sh line $i" >&3; '
              f'i=$((i+1)); sleep 0.02 3>&-; done')
    return subprocess.Popen(["sh", "-c", script, "sh-writer"])


def running(*procs: subprocess.Popen, files: list[Path]) -> None:
    wait_for(lambda: all(f.exists() and f.stat().st_size > 0 for f in files), what="writes")


def stop(*procs: subprocess.Popen) -> None:
    for p in procs:
        p.kill()
        p.wait()


def test_lines_carry_their_writer(tmp_path):
    one, two = tmp_path / "one.log", tmp_path / "two.log"
    a = py_writer(one, "writer-A")
    b = py_writer(two, "writer-B")
    c = sh_writer(two)
    try:
        running(a, b, c, files=[one, two])
        with Agent(tmp_path, "--input-file", str(tmp_path / "*.log"), "--from-beginning") as agent:
            wait_for(lambda: {r["path"] for r in agent.records()} == {str(one), str(two)}
                     and len(agent.records()) > 20, what="lines of both files")
            assert agent.stop() == 0
    finally:
        stop(a, b, c)
    recs = agent.records()
    r1 = [r for r in recs if r["path"] == str(one)]
    p = r1[0]["process"]
    assert p["pid"] == a.pid and p["how"] == "fd"
    assert p["comm"].startswith("python")
    assert p["cmdline"][-2:] == [str(one), "writer-A"]
    assert p["exe"] == os.path.realpath(sys.executable)
    assert p["user"] == "root" and p["ppid"] == os.getpid()
    assert all(r["process"]["pid"] == a.pid for r in r1)
    r2 = [r for r in recs if r["path"] == str(two)]
    writers = r2[0]["writers"]                   # two writers: both, since which wrote is unknown
    assert sorted(w["pid"] for w in writers) == sorted([b.pid, c.pid])
    sh = next(w for w in writers if w["pid"] == c.pid)
    assert sh["comm"] == "sh" and sh["cmdline"][-1] == "sh-writer"
    assert "process" not in r2[0]


def test_a_line_that_names_its_pid(tmp_path):
    log = tmp_path / "syslog"
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        log.write_text(f"Nov 25 10:00:00 host cron[{sleeper.pid}]: job started\n"
                       f"Nov 25 10:00:01 host cron[{sleeper.pid}]: job done\n"
                       "Nov 25 10:00:02 host kernel: no pid here\n"
                       f"Nov 25 10:00:03 host sshd[{os.getpid()}]: accepted\n")
        cfg = tmp_path / "agent.toml"
        cfg.write_text(f'[[inputs.file]]\npaths = ["{log}"]\nwriter_from_line = true\n'
                       "from_beginning = true\n")
        with Agent(tmp_path, "--config", str(cfg)) as agent:
            recs = agent.wait_records(4)
            assert agent.stop() == 0
    finally:
        stop(sleeper)
    recs = agent.records()
    assert [r["offset"] for r in recs] == sorted(r["offset"] for r in recs)
    assert [r.get("process", {}).get("pid") for r in recs] == [
        sleeper.pid, sleeper.pid, None, os.getpid()]
    assert recs[0]["process"]["how"] == "line" and recs[0]["process"]["comm"] == "sleep"
    assert [r["line"][16:] for r in recs][2] == "host kernel: no pid here"


def test_container_log_files_map_to_their_container(tmp_path):
    cid = "ab" * 32
    d = tmp_path / "var" / "log" / "containers"
    d.mkdir(parents=True)
    log = d / f"web-1_shop_nginx-{cid}.log"
    log.write_text("2026-11-25T10:00:00Z stdout F hello\n")
    cfg = tmp_path / "agent.toml"
    cfg.write_text(f'[[inputs.file]]\npaths = ["{d}/*.log"]\nformat = "cri"\nfrom_beginning = true\n')
    with Agent(tmp_path, "--config", str(cfg)) as agent:
        (rec,) = agent.wait_records(1)
        assert agent.stop() == 0
    assert rec["line"] == "hello"
    assert rec["container"] == {"id": cid, "pod": "web-1", "namespace": "shop", "name": "nginx"}


def _ebpf_available() -> str | None:
    if os.geteuid() != 0:
        return "the eBPF input needs root (CI runs as root)"
    try:
        import bcc  # noqa: F401
    except ImportError:
        return "BCC is not importable (scripts/setup links Debian's python3-bpfcc)"
    return None


def _writer_records(tmp_path: Path, *extra: str, env: dict[str, str] | None = None) -> dict:
    log = tmp_path / "w.log"
    w = py_writer(log, "writer-E")
    try:
        running(w, files=[log])
        from tests.harness import agent_env

        e = agent_env()
        e.update(env or {})
        with Agent(tmp_path, "--input-file", str(log), "--from-beginning", *extra, env=e) as agent:
            wait_for(lambda: any(r.get("path") == str(log) for r in agent.records()),
                     what="a line", timeout=60)
            time.sleep(0.3)
            assert agent.stop() == 0
        recs = [r for r in agent.records() if r.get("path") == str(log)]
        procs = [r for r in agent.records() if r.get("type") == "process"
                 and r.get("pid") == w.pid]
        return {"line": recs[0]["process"], "pid": w.pid, "process_events": procs}
    finally:
        stop(w)


def test_the_same_enrichment_with_and_without_the_ebpf_input(tmp_path):
    reason = _ebpf_available()
    if reason:
        pytest.skip(reason)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    without = _writer_records(tmp_path / "a")
    with_ebpf = _writer_records(tmp_path / "b",
                                env={"LOG_SHUTTLE_INPUTS__EBPF__PROBES": '["process"]'})
    keys = ("comm", "exe", "user", "uid", "how", "cgroup")
    assert {k: without["line"].get(k) for k in keys} == {k: with_ebpf["line"].get(k) for k in keys}
    # the same program and tag; only the file it was given differs between the two runs
    for run in (without, with_ebpf):
        cmd = run["line"]["cmdline"]
        assert cmd[-1] == "writer-E" and cmd[-2].endswith("/w.log") and cmd[1] == "-c"
    assert without["line"]["pid"] == without["pid"] and with_ebpf["line"]["pid"] == with_ebpf["pid"]
