"""The process table's costs, with 2,000 extra processes running:

- rundown: building the table from /proc, beside procps' ``ps`` reading the same fields
  (pid, ppid, uid, user, comm, args, cgroup) in the same sitting, alternating rounds;
- memory of the table (tracemalloc: what the entries hold);
- a poll of /proc (the steady-state cost without eBPF);
- enrichment per event: HTTP events (a table lookup each) and runs of log lines (writers cached).

    .venv/bin/python bench/proctable_bench.py [--extra 2000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from common.events import HttpEvent, LogEvent  # noqa: E402
from pipeline.enrich import Enricher  # noqa: E402
from pipeline.proctable import ProcessTable  # noqa: E402
from pipeline.writers import WriterCache  # noqa: E402


def med(xs, fmt="{:.1f}"):
    return f"{fmt.format(statistics.median(xs))} ({fmt.format(min(xs))}-{fmt.format(max(xs))})"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--extra", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    procs = [subprocess.Popen(["sleep", "600"]) for _ in range(args.extra)]
    try:
        time.sleep(1.0)
        total = len([e for e in os.listdir("/proc") if e.isdigit()])
        print(f"processes on the host: {total} ({args.extra} extra sleeps)")
        ours, ps = [], []
        for _ in range(args.rounds):
            t0 = time.perf_counter()
            table = ProcessTable()
            n = table.rundown()
            ours.append((time.perf_counter() - t0) * 1e3)
            t0 = time.perf_counter()
            subprocess.run(["ps", "-e", "-o", "pid,ppid,uid,user,comm,args,cgroup"],
                           stdout=subprocess.DEVNULL, check=True)
            ps.append((time.perf_counter() - t0) * 1e3)
        tracemalloc.start()
        table = ProcessTable()
        table.rundown()
        mem, _ = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        polls = []
        for i in range(args.rounds):
            t0 = time.perf_counter()
            table.poll(now=float(i))
            polls.append((time.perf_counter() - t0) * 1e3)

        pids = [p.pid for p in procs]
        http = [HttpEvent(time_ns=0, pid=pids[i % len(pids)], tid=0, comm="x", fd=3,
                          direction="server", method="GET", path="/", status=200)
                for i in range(20_000)]
        log_path = ROOT / "bench" / "out" / "proc-bench.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log_path.write_bytes(b"x" * 170 + b"\n")
        st = log_path.stat()
        runs = [LogEvent(path=str(log_path), dev=st.st_dev, ino=st.st_ino, offset=0,
                         data=(b"y" * 169 + b"\n") * 1000, lines=1000, read_ns=0)
                for _ in range(200)]
        enricher = Enricher(table, WriterCache(refresh=3600))
        enricher.enrich(runs[:1], now=0.0)  # the first sight of a file scans /proc/*/fd once
        per_http, per_line = [], []
        for _ in range(args.rounds):
            t0 = time.perf_counter()
            enricher.enrich(http, now=1.0)
            per_http.append((time.perf_counter() - t0) / len(http) * 1e6)
            t0 = time.perf_counter()
            enricher.enrich(runs, now=1.0)
            per_line.append((time.perf_counter() - t0) / (200 * 1000) * 1e6)
        t0 = time.perf_counter()
        WriterCache(refresh=0).writers({(st.st_dev, st.st_ino)}, now=0.0)
        fd_scan = (time.perf_counter() - t0) * 1e3

        print(f"\n| measure ({args.rounds} rounds) | median (min-max) |\n|---|---|")
        print(f"| rundown of {n} processes, ms | {med(ours)} |")
        print(f"| `ps -e -o pid,ppid,uid,user,comm,args,cgroup`, ms | {med(ps)} |")
        print(f"| ratio rundown / ps | {statistics.median(ours) / statistics.median(ps):.2f} |")
        print(f"| table memory (tracemalloc), KiB | {mem / 1024:.0f} ({mem / n:.0f} B/process) |")
        print(f"| poll of /proc, ms | {med(polls)} |")
        print(f"| one /proc/*/fd scan for a file's writers, ms | {fd_scan:.1f} |")
        print(f"| enrichment per HTTP event (table lookup), µs | {med(per_http, '{:.2f}')} |")
        print(f"| enrichment per log line (runs of 1000, writers cached), µs | "
              f"{med(per_line, '{:.4f}')} |")
    finally:
        for p in procs:
            p.kill()
        for p in procs:
            p.wait()


if __name__ == "__main__":
    main()
