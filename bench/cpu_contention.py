"""What moves nginx's p99 latency in bench/ebpf_overhead.py: the probes, or CPU taken from the
two cores that nginx (CPU 0) and the load generator (CPU 1) are pinned to?

At a fixed rate (default 5,000 req/s, 32 connections), nginx's p50/p99 with:
- nothing else running;
- the http, tcp and process probes loaded and their ring buffers drained by a thread that does
  nothing with the records (the kernel side alone);
- two processes that burn a share of a CPU in bursts (``--burst`` ms on, three times as long
  off: about what the agent's processes take at that rate), unpinned, at normal priority;
- the same burners under SCHED_IDLE;
- the same burners calling ``sched_yield()`` every 0.2 ms of a burst (what common/cpu.py does).

Each case ``--rounds`` times, in turn; medians.

    sudo .venv/bin/python bench/cpu_contention.py [--rate 5000] [--seconds 6] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import ebpf_overhead as B  # noqa: E402

BURN = """
import os, time, sys
on, off, step = float(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
while True:
    t = y = time.perf_counter()
    while (now := time.perf_counter()) - t < on:
        if step and now - y >= step:
            os.sched_yield()
            y = now
    time.sleep(off)
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rate", type=int, default=5000)
    ap.add_argument("--seconds", type=float, default=6.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--burst", type=float, default=5.0, help="ms of each burst")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="contention-"))
    nginx, port = B.start_nginx(tmp)
    loadgen = B.build("loadgen")
    on = args.burst / 1e3

    def measure() -> tuple[float, float]:
        r = B.load(loadgen, port, args.rate, args.seconds, 32)
        return r["p50_us"], r["p99_us"]

    def alone() -> tuple[float, float]:
        return measure()

    def probes() -> tuple[float, float]:
        with B.drained_probes():
            return measure()

    def burners(prefix: list[str], step: float = 0.0):
        def case() -> tuple[float, float]:
            procs = [subprocess.Popen(prefix + [sys.executable, "-c", BURN, str(on), str(3 * on),
                                                str(step)])
                     for _ in range(2)]
            try:
                return measure()
            finally:
                for p in procs:
                    p.kill()
                    p.wait()
        return case

    cases = {"nothing else": alone, "probes, records drained": probes,
             f"2 burners, {args.burst:g} ms bursts, 25% each": burners([]),
             "the same burners, SCHED_IDLE": burners(["chrt", "-i", "0"]),
             "the same, sched_yield() every 0.2 ms": burners([], 0.0002)}
    results: dict[str, list[tuple[float, float]]] = {k: [] for k in cases}
    try:
        for i in range(args.rounds):
            for name, case in cases.items():
                results[name].append(case())
                p50, p99 = results[name][-1]
                print(f"  round {i + 1}: {name}: p50 {p50:.0f} us, p99 {p99:.0f} us", flush=True)
    finally:
        nginx.terminate()  # the master stops its workers (a killed master leaves them running)
        nginx.wait()
    print(f"medians of {args.rounds} rounds at {args.rate} req/s:")
    for name, xs in results.items():
        print(f"  {name:45s} p50 {statistics.median(x[0] for x in xs):7.0f} us  "
              f"p99 {statistics.median(x[1] for x in xs):7.0f} us")


if __name__ == "__main__":
    main()
