"""The cost of the agent's metrics: file -> TCP throughput with the HTTP listener and the
per-process publishing threads on (``--http-listen``, scraped every second as Prometheus would)
beside off, in alternating rounds on the same log and the same sink.

    .venv/bin/python bench/metrics_overhead.py [--lines 2000000] [--rounds 5]

Uses bench/shippers.py's log (~170-byte lines), its C sink (bench/sink.c) and its process
monitor. Time runs from the agent's launch to the last record at the sink; CPU is every process
of the agent (the listener's too when on). Prints each round, then medians and the ratio
on/off. Run as root, the agent drops privileges as it would in production.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import shippers  # noqa: E402

ROOT = shippers.ROOT


def run(log: Path, sink_exe: Path, lines: int, *, metrics: bool) -> dict:
    sink = shippers.Sink(sink_exe, "count", lines)
    port = shippers.free_port()
    with tempfile.TemporaryDirectory(prefix="bench-metrics-") as tmp:
        # This checkout's code (the venv may have another checkout installed).
        cmd = [sys.executable, "-m", "agent.cli", "--input-file", str(log), "--from-beginning",
               "--output-tcp", f"127.0.0.1:{sink.port}", "--state-dir", f"{tmp}/state",
               "--log-level", "warning"]
        if metrics:
            cmd += ["--http-listen", f"127.0.0.1:{port}"]
        t0 = time.monotonic_ns()
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                start_new_session=True, cwd=ROOT, env=env)
        mon = shippers.Monitor(proc.pid)
        mon.start()
        stop = threading.Event()
        scrapes = [0]

        def scrape() -> None:  # as Prometheus would, once a second
            while not stop.wait(1.0):
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics",
                                                timeout=2) as r:
                        r.read()
                    scrapes[0] += 1
                except OSError:
                    pass

        scraper = threading.Thread(target=scrape, daemon=True)
        if metrics:
            scraper.start()
        try:
            while not sink.done():
                if proc.poll() is not None:
                    raise RuntimeError(f"agent exited {proc.returncode}: "
                                       f"{proc.stderr.read().decode()[-2000:]}")
                time.sleep(0.02)
            mon.stop.set()
            mon.join()
            mon.sample()
        finally:
            stop.set()
            shippers.stop_shipper(proc)
            proc.stderr.close()
    res = sink.result
    if res["records"] < lines:
        raise RuntimeError(f"the sink got {res['records']} of {lines} records")
    seconds = (res["last_ns"] - t0) / 1e9
    return {"seconds": seconds, "lines_per_s": lines / seconds, "cpu": sum(mon.cpu.values()),
            "scrapes": scrapes[0]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", type=int, default=2_000_000)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    shippers.OUT.mkdir(parents=True, exist_ok=True)
    log = shippers.OUT / f"shippers-{args.lines}.log"
    shippers.make_log(log, args.lines)
    sink_exe = shippers.build_sink()
    results: dict[str, list[dict]] = {"off": [], "on": []}
    run(log, sink_exe, args.lines, metrics=False)  # warm the page cache and the imports
    for i in range(args.rounds):
        for name in (("off", "on") if i % 2 == 0 else ("on", "off")):
            r = run(log, sink_exe, args.lines, metrics=name == "on")
            results[name].append(r)
            print(f"round {i + 1} metrics {name:3}: {r['seconds']:6.2f} s "
                  f"{r['lines_per_s'] / 1e3:7.1f}k lines/s  cpu {r['cpu']:6.2f} s"
                  + (f"  ({r['scrapes']} scrapes)" if name == "on" else ""), flush=True)
    med = {k: {m: statistics.median(r[m] for r in v) for m in ("lines_per_s", "cpu")}
           for k, v in results.items()}
    for k in ("off", "on"):
        print(f"median metrics {k:3}: {med[k]['lines_per_s'] / 1e3:7.1f}k lines/s, "
              f"cpu {med[k]['cpu']:.2f} s")
    print(f"on/off: throughput {med['on']['lines_per_s'] / med['off']['lines_per_s']:.3f}, "
          f"cpu {med['on']['cpu'] / med['off']['cpu']:.3f}")


if __name__ == "__main__":
    main()
