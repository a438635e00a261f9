"""End-to-end throughput: a file of ~170-byte lines, read ``--from-beginning`` and written as
NDJSON to stdout redirected to /dev/null.

Beside log-shuttle, in the same sitting and alternating round by round, runs a baseline: one
Python process doing the same work with the same code (read, cut into lines, render NDJSON,
write) and no process model, to show what the processes and queues cost.

For each round: lines/s, MiB/s of input, CPU seconds and peak memory (VmHWM) summed over every
process of the agent. Prints medians with min-max.

    .venv/bin/python bench/e2e_throughput.py [--lines 2000000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TICK = os.sysconf("SC_CLK_TCK")
OUT = ROOT / "bench" / "out"


def make_log(path: Path, lines: int) -> None:
    if path.exists() and path.stat().st_size > 0:
        with open(path, "rb") as f:
            f.seek(-200, os.SEEK_END)
            if f.read().splitlines()[-1].startswith(b"%010d " % (lines - 1)):
                return
    filler = b"GET /api/v1/orders/12345 HTTP/1.1 200 0.0123 user=alice agent=Mozilla/5.0 (X11; Linux x86_64) ref=https://example.test/cart"
    with open(path, "wb") as f:
        for start in range(0, lines, 10_000):
            f.write(b"".join(b"%010d 2026-11-25T02:44:13.123Z INFO app[1234]: %s\n" % (i, filler)
                             for i in range(start, min(lines, start + 10_000))))


def proc_tree(pid: int) -> list[int]:
    pids = [pid]
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            pids += [int(p) for p in f.read().split()]
    except OSError:
        pass
    return pids


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def status_kib(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def io_field(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/io") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def run_agent(log: Path, expected_out: int, stdout) -> dict:
    exe = ROOT / ".venv" / "bin" / "log-shuttle"
    t0 = time.perf_counter()
    proc = subprocess.Popen([str(exe), "--input-file", str(log), "--from-beginning",
                             "--state-dir", tempfile.mkdtemp(prefix="e2e-state-")],
                            stdout=stdout, stderr=subprocess.PIPE, start_new_session=True)
    out_pid = None
    peak: dict[int, int] = {}
    try:
        while True:
            time.sleep(0.02)
            pids = proc_tree(proc.pid)
            for pid in pids:
                try:
                    peak[pid] = status_kib(pid, "VmHWM")
                    if out_pid is None and open(f"/proc/{pid}/cmdline", "rb").read().startswith(
                            b"log-shuttle: output stdout"):
                        out_pid = pid
                except OSError:
                    pass
            if out_pid is not None and io_field(out_pid, "wchar") >= expected_out:
                break
            if proc.poll() is not None:
                raise RuntimeError(f"agent exited {proc.returncode}: {proc.stderr.read().decode()}")
        elapsed = time.perf_counter() - t0
        pids = proc_tree(proc.pid)
        cpu = sum(cpu_seconds(p) for p in pids)
        mem = sum(status_kib(p, "VmHWM") for p in pids)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        proc.stderr.close()
    return {"seconds": elapsed, "cpu": cpu, "peak_mib": mem / 1024}


BASELINE = r"""
import os, sys, time
sys.path.insert(0, sys.argv[2])
from inputs.file.tailer import TailedFile
from common.identity import Identity
from outputs.ndjson import Renderer
f = TailedFile.open(sys.argv[1], at_end=False)
r = Renderer(fmt="ndjson", host=os.uname().nodename,
             identity=Identity(agent="0123456789abcdef", session="00000000"))
while True:
    events, n = f.read(256 * 1024, max_line=1024 * 1024, now_ns=time.time_ns())
    if not n:
        break
    os.write(1, r.render(events))
"""


def run_baseline(log: Path) -> dict:
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", BASELINE, str(log), str(ROOT)],
                            stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    elapsed = time.perf_counter() - t0
    return {"seconds": elapsed, "cpu": usage.ru_utime + usage.ru_stime,
            "peak_mib": usage.ru_maxrss / 1024}


def summary(name: str, rounds: list[dict], lines: int, size: int) -> str:
    rate = [lines / r["seconds"] for r in rounds]
    mib = [size / r["seconds"] / 2**20 for r in rounds]
    cpu_us = [r["cpu"] / lines * 1e6 for r in rounds]
    mem = [r["peak_mib"] for r in rounds]

    def fmt(xs, spec):
        return f"{statistics.median(xs):{spec}} ({min(xs):{spec}}-{max(xs):{spec}})"
    return (f"| {name} | {fmt(rate, ',.0f')} | {fmt(mib, '.1f')} | {fmt(cpu_us, '.2f')} | "
            f"{fmt(mem, '.0f')} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lines", type=int, default=2_000_000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    log = OUT / f"e2e-{args.lines}.log"
    make_log(log, args.lines)
    size = log.stat().st_size
    print(f"input: {args.lines:,} lines, {size / 2**20:.1f} MiB ({size / args.lines:.0f} B/line)")

    # A first run to a file gives the exact NDJSON size (every field has a fixed width but the
    # line and offset) and checks that every line came out.
    check = OUT / "e2e-check.ndjson"
    with open(check, "wb") as f:
        exe = ROOT / ".venv" / "bin" / "log-shuttle"
        proc = subprocess.Popen([str(exe), "--input-file", str(log), "--from-beginning",
                                 "--state-dir", tempfile.mkdtemp(prefix="e2e-state-")],
                                stdout=f, stderr=subprocess.DEVNULL, start_new_session=True)
        last = -1
        while True:
            time.sleep(0.2)
            cur = check.stat().st_size
            if cur == last and cur > 0:
                with open(check, "rb") as r:
                    r.seek(-300, os.SEEK_END)
                    if b'"line":"%010d ' % (args.lines - 1) in r.read():
                        break
            last = cur
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    expected = check.stat().st_size
    with open(check, "rb") as r:
        count = sum(chunk.count(b"\n") for chunk in iter(lambda: r.read(1 << 20), b""))
    check.unlink()
    assert count == args.lines, f"check run: {count} records for {args.lines} lines"
    print(f"check run: {count:,} records, {expected / 2**20:.1f} MiB of NDJSON")

    agent_rounds, base_rounds = [], []
    with open(os.devnull, "wb") as devnull:
        for i in range(args.rounds):
            agent_rounds.append(run_agent(log, expected, devnull))
            base_rounds.append(run_baseline(log))
            a, b = agent_rounds[-1], base_rounds[-1]
            print(f"round {i + 1}: log-shuttle {args.lines / a['seconds']:,.0f} lines/s, "
                  f"baseline {args.lines / b['seconds']:,.0f} lines/s, "
                  f"ratio {b['seconds'] / a['seconds']:.2f}")
    print()
    print("| run | lines/s | input MiB/s | CPU µs/line (all processes) | peak memory MiB (sum) |")
    print("|---|---|---|---|---|")
    print(summary("log-shuttle (4 processes)", agent_rounds, args.lines, size))
    print(summary("baseline: same code, one process", base_rounds, args.lines, size))


if __name__ == "__main__":
    main()
