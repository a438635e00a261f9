"""log-shuttle beside Fluent Bit at the rates hosts really log at: CPU, memory and latency.

    FLUENT_BIT=/path/to/fluent-bit .venv/bin/python bench/ordinary_rates.py \\
        [--rounds 5] [--rates 1000,10000] [--seconds 20] [--full-lines 3000000] \\
        [--idle-seconds 60] [--idle-files 100] [--shippers log-shuttle,fluent-bit]

Every run ships a file to a TCP sink on loopback (bench/sink.c, compiled with gcc) as NDJSON:
log-shuttle ``--output-tcp`` (framing ndjson), Fluent Bit ``tail`` -> ``tcp`` with
``Format json_lines``. Shippers alternate within each round, and each round does, in order:

- **paced**, for each rate: the shipper follows an empty file; after it settled (3 s, its memory
  "at rest" is taken then) a writer process appends lines carrying ``ts=`` (CLOCK_REALTIME ns)
  at the rate for ``--seconds``, one ``write`` per millisecond holding the lines due; the sink
  takes each line's delay from write to receipt (p50, p99). CPU is the time of every process of
  the shipper (all threads: /proc/PID/stat utime + stime, summed over the process tree) from
  the first write to the last record at the sink, as % of one core; memory is the sum over its
  processes of RSS and of PSS (/proc/PID/smaps_rollup) sampled every 0.5 s: at rest before the
  load, and the peak under it.
- **full speed**: ``--full-lines`` lines of ~175 B (bench/out/, cached) read from the beginning;
  lines/s from the shipper's launch to the last record, CPU µs per line, peak RSS and PSS.
- **idle**: ``--idle-files`` files of 100 lines each, followed through one glob and read to
  their end; then nothing is written for ``--idle-seconds``, and the shipper's CPU over that
  time is the idle cost (with the summed RSS and PSS at its end).

Fluent Bit is not part of log-shuttle: build it from its public source, outside this
repository (docs/benchmarks.md says how), and give its binary in FLUENT_BIT. Without it the
bench runs log-shuttle alone and says so.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.shippers import (OUT, Sink, build_sink, cpu_seconds, kib, line, make_log,  # noqa: E402
                            stop_shipper, tree)

SHIPPERS = ("log-shuttle", "fluent-bit")
CODE = [ROOT]
"""Whose log-shuttle runs (--code: another checkout, to compare before and after)."""


# --- the shippers -------------------------------------------------------------------------------

def fluent_bit() -> str | None:
    exe = os.environ.get("FLUENT_BIT", "")
    if exe and os.access(exe, os.X_OK):
        return exe
    return None


def shipper_cmd(name: str, pattern: str, port: int, work: Path) -> list[str]:
    """The command that ships the files matching ``pattern`` (read from their beginning) to
    127.0.0.1:``port`` as NDJSON."""
    if name == "log-shuttle":
        return [str(ROOT / ".venv/bin/log-shuttle"), "--input-file", pattern, "--from-beginning",
                "--output-tcp", f"127.0.0.1:{port}", "--state-dir", str(work / "state"),
                "--log-level", "warning"]
    if name == "fluent-bit":
        # Tuned for throughput as an operator would: chunks of 1 MiB for tail (its default 32 KiB
        # costs it a third of its speed here), a memory buffer limit well above what a run
        # holds, no database (no checkpoint writes); flush every second (its default).
        conf = work / "fluent-bit.conf"
        conf.write_text(
            "[SERVICE]\n"
            "    Flush        1\n"
            "    Log_Level    warn\n"
            "    HTTP_Server  Off\n"
            "[INPUT]\n"
            "    Name              tail\n"
            f"    Path              {pattern}\n"
            "    Read_From_Head    On\n"
            "    Refresh_Interval  2\n"
            "    Buffer_Chunk_Size 1M\n"
            "    Buffer_Max_Size   1M\n"
            "    Mem_Buf_Limit     256M\n"
            "[OUTPUT]\n"
            "    Name          tcp\n"
            "    Match         *\n"
            "    Host          127.0.0.1\n"
            f"    Port          {port}\n"
            "    Format        json_lines\n")
        exe = fluent_bit()
        assert exe is not None
        return [exe, "-c", str(conf)]
    raise ValueError(name)


# --- measuring a shipper ------------------------------------------------------------------------

def cpu_total(pids: list[int]) -> float:
    return sum(cpu_seconds(p) for p in pids)


def memory(pid: int) -> tuple[float, float]:
    """Summed RSS and PSS of the process tree, MiB."""
    rss = pss = 0
    for p in tree(pid):
        rollup = f"/proc/{p}/smaps_rollup"
        rss += kib(rollup, "Rss")
        pss += kib(rollup, "Pss")
    return rss / 1024, pss / 1024


def memory_by(pid: int) -> dict[str, float]:
    """Each process's RSS, MiB, by its title."""
    names = roles(pid)
    return {names.get(p, str(p)): kib(f"/proc/{p}/smaps_rollup", "Rss") / 1024 for p in tree(pid)}


def by(r: dict) -> str:
    return ", ".join(f"{k.split(': ')[-1].split('/')[-1]} {v:.0f}"
                     for k, v in r.get("rss_by", {}).items())


def roles(pid: int) -> dict[int, str]:
    out = {}
    for p in tree(pid):
        try:
            with open(f"/proc/{p}/cmdline", "rb") as f:
                out[p] = f.read().split(b"\0")[0].decode(errors="replace")[:40]
        except OSError:
            pass
    return out


class MemoryWatch(threading.Thread):
    """Samples the summed RSS and PSS every 0.5 s; keeps the peaks, and each process's RSS in
    the sample where the sum peaked (``peak_by``: title -> MiB)."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.stop = threading.Event()
        self.peak_rss = self.peak_pss = 0.0
        self.peak_by: dict[str, float] = {}

    def sample(self) -> None:
        by = memory_by(self.pid)
        rss, pss = memory(self.pid)
        if rss > self.peak_rss:
            self.peak_by = by
        self.peak_rss, self.peak_pss = max(self.peak_rss, rss), max(self.peak_pss, pss)

    def run(self) -> None:
        while not self.stop.wait(0.5):
            self.sample()

    def finish(self) -> None:
        self.stop.set()
        self.join()
        self.sample()


@dataclass
class Running:
    proc: subprocess.Popen
    work: Path
    tmp: tempfile.TemporaryDirectory
    extra: dict = field(default_factory=dict)

    def check(self, name: str) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError(f"{name} exited {self.proc.returncode}: "
                               f"{self.proc.stderr.read().decode()[-2000:]}")

    def end(self) -> None:
        stop_shipper(self.proc)
        self.proc.stderr.close()
        self.tmp.cleanup()


def launch(name: str, pattern: str, port: int, tmp: tempfile.TemporaryDirectory) -> Running:
    work = Path(tmp.name)
    # This checkout's code, whatever the virtual environment has installed.
    env = {**os.environ, "PYTHONPATH": str(CODE[0])}
    proc = subprocess.Popen(shipper_cmd(name, pattern, port, work), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True, env=env)
    return Running(proc, work, tmp)


# --- the three runs -----------------------------------------------------------------------------

WRITER = r"""
import os, sys, time
sys.path.insert(0, sys.argv[4])
from bench.shippers import line
path, rate, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
fd = os.open(path, os.O_WRONLY | os.O_APPEND)
total = int(rate * seconds)
t0 = time.monotonic()
written = 0
while written < total:
    due = min(total, int((time.monotonic() - t0) * rate) + 1)
    if due > written:
        ts = b"ts=%019d " % time.time_ns()
        os.write(fd, b"".join(line(i, ts) for i in range(written, due)))
        written = due
    time.sleep(0.001)
os.close(fd)
"""


def paced(name: str, sink_exe: Path, rate: int, seconds: float) -> dict:
    total = int(rate * seconds)
    sink = Sink(sink_exe, "latency", total, timeout=30)
    tmp = tempfile.TemporaryDirectory(prefix=f"bench-rate-{name}-")
    log = Path(tmp.name) / "app.log"
    log.touch()
    run = launch(name, str(log), sink.port, tmp)
    try:
        time.sleep(3.0)  # started, following the (empty) file
        run.check(name)
        rest_rss, rest_pss = memory(run.proc.pid)
        pids = tree(run.proc.pid)
        names = roles(run.proc.pid)
        per0 = {p: cpu_seconds(p) for p in pids}
        watch = MemoryWatch(run.proc.pid)
        watch.start()
        t0 = time.monotonic()
        subprocess.run([sys.executable, "-c", WRITER, str(log), str(rate), str(seconds),
                        str(ROOT)], check=True)
        res = sink.wait()
        t1 = time.monotonic()
        per1 = {p: cpu_seconds(p) for p in pids}
        watch.finish()
    finally:
        run.end()
    if res["records"] < total:
        raise RuntimeError(f"{name} at {rate}/s: the sink got {res['records']} of {total}")
    wall = t1 - t0
    return {"cpu_pct": 100 * sum(per1[p] - per0[p] for p in pids) / wall,
            "per_process": {names.get(p, str(p)): 100 * (per1[p] - per0[p]) / wall for p in pids},
            "rest_rss": rest_rss, "rest_pss": rest_pss, "rss": watch.peak_rss,
            "rss_by": watch.peak_by,
            "pss": watch.peak_pss, "p50_ms": res["p50_ns"] / 1e6, "p99_ms": res["p99_ns"] / 1e6,
            "records": res["records"]}


def full_speed(name: str, sink_exe: Path, log: Path, lines: int) -> dict:
    sink = Sink(sink_exe, "count", lines)
    tmp = tempfile.TemporaryDirectory(prefix=f"bench-full-{name}-")
    t0 = time.monotonic_ns()
    run = launch(name, str(log), sink.port, tmp)
    watch = MemoryWatch(run.proc.pid)
    watch.start()
    cpu: dict[int, float] = {}
    try:
        while not sink.done():
            run.check(name)
            for p in tree(run.proc.pid):
                cpu[p] = max(cpu.get(p, 0.0), cpu_seconds(p))
            time.sleep(0.05)
        for p in tree(run.proc.pid):
            cpu[p] = max(cpu.get(p, 0.0), cpu_seconds(p))
        watch.finish()
    finally:
        run.end()
    res = sink.result
    if res["records"] < lines:
        raise RuntimeError(f"{name}: the sink got {res['records']} of {lines} records")
    seconds = (res["last_ns"] - t0) / 1e9
    return {"lines_s": lines / seconds, "us_line": sum(cpu.values()) / lines * 1e6,
            "rss": watch.peak_rss, "pss": watch.peak_pss, "rss_by": watch.peak_by}


def idle(name: str, sink_exe: Path, files: int, seconds: float) -> dict:
    per_file = 100
    sink = Sink(sink_exe, "count", files * per_file, timeout=int(seconds) + 60)
    tmp = tempfile.TemporaryDirectory(prefix=f"bench-idle-{name}-")
    logs = Path(tmp.name) / "logs"
    logs.mkdir()
    for i in range(files):
        (logs / f"app-{i:03d}.log").write_bytes(b"".join(line(i * per_file + j)
                                                         for j in range(per_file)))
    run = launch(name, str(logs / "*.log"), sink.port, tmp)
    try:
        deadline = time.monotonic() + 60
        while sink.proc.poll() is None and time.monotonic() < deadline:
            run.check(name)
            time.sleep(0.1)
        time.sleep(3.0)  # let it settle after the reading
        pids = tree(run.proc.pid)
        c0, t0 = cpu_total(pids), time.monotonic()
        time.sleep(seconds)
        run.check(name)
        c1, t1 = cpu_total(pids), time.monotonic()
        rss, pss = memory(run.proc.pid)
    finally:
        run.end()
        sink.proc.kill()
        sink.proc.wait()
    return {"cpu_pct": 100 * (c1 - c0) / (t1 - t0), "cpu_s": c1 - c0, "rss": rss, "pss": pss}


# --- the report ---------------------------------------------------------------------------------

def med(xs: list[float], spec: str) -> str:
    return f"{statistics.median(xs):{spec}} ({min(xs):{spec}} - {max(xs):{spec}})"


def each(xs: list[float], spec: str) -> str:
    return ", ".join(f"{x:{spec}}" for x in xs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--rates", default="1000,10000")
    ap.add_argument("--seconds", type=float, default=20.0, help="of writing, per paced run")
    ap.add_argument("--full-lines", type=int, default=3_000_000, help="0: no full-speed runs")
    ap.add_argument("--idle-seconds", type=float, default=60.0, help="0: no idle runs")
    ap.add_argument("--idle-files", type=int, default=100)
    ap.add_argument("--shippers", default=",".join(SHIPPERS))
    ap.add_argument("--json", help="also write every figure to this file")
    ap.add_argument("--code", help="run the log-shuttle of this checkout (default: this one)")
    args = ap.parse_args()
    if args.code:
        CODE[0] = Path(args.code).resolve()
    names = [n for n in args.shippers.split(",") if n]
    if "fluent-bit" in names and fluent_bit() is None:
        print("Fluent Bit skipped: FLUENT_BIT is not set to an executable (build it from its "
              "public source, docs/benchmarks.md says how, and give its path in FLUENT_BIT)",
              flush=True)
        names.remove("fluent-bit")
    rates = [int(r) for r in args.rates.split(",") if r]
    OUT.mkdir(parents=True, exist_ok=True)
    sink_exe = build_sink()
    log = OUT / f"shippers-{args.full_lines}.log"
    if args.full_lines:
        make_log(log, args.full_lines)
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; shippers: "
          f"{', '.join(names)}", flush=True)

    results: dict[str, dict[str, list[dict]]] = {n: {} for n in names}
    for rnd in range(1, args.rounds + 1):
        order = names if rnd % 2 else names[::-1]
        for rate in rates:
            for name in order:
                r = paced(name, sink_exe, rate, args.seconds)
                results[name].setdefault(f"rate {rate}", []).append(r)
                procs = ", ".join(f"{k.split(': ')[-1]} {v:.1f}"
                                  for k, v in r["per_process"].items())
                print(f"round {rnd} {name} {rate:,}/s: CPU {r['cpu_pct']:.1f}% ({procs}); "
                      f"RSS {r['rest_rss']:.0f} at rest, {r['rss']:.0f} peak; PSS "
                      f"{r['rest_pss']:.0f} / {r['pss']:.0f} MiB; p50 {r['p50_ms']:.1f} ms, "
                      f"p99 {r['p99_ms']:.1f} ms; RSS at the peak: {by(r)}", flush=True)
        if args.full_lines:
            for name in order:
                r = full_speed(name, sink_exe, log, args.full_lines)
                results[name].setdefault("full", []).append(r)
                print(f"round {rnd} {name} full speed: {r['lines_s']:,.0f} lines/s, "
                      f"{r['us_line']:.2f} µs/line, peak RSS {r['rss']:.0f} MiB, "
                      f"PSS {r['pss']:.0f} MiB; RSS at the peak: {by(r)}", flush=True)
        if args.idle_seconds:
            for name in order:
                r = idle(name, sink_exe, args.idle_files, args.idle_seconds)
                results[name].setdefault("idle", []).append(r)
                print(f"round {rnd} {name} idle ({args.idle_files} files, "
                      f"{args.idle_seconds:.0f} s): CPU {r['cpu_pct']:.2f}% "
                      f"({r['cpu_s']:.2f} s), RSS {r['rss']:.0f} MiB, PSS {r['pss']:.0f} MiB",
                      flush=True)

    print()
    print("Medians (min - max) over the rounds:")
    print()
    print("| run | shipper | CPU % of a core | RSS MiB at rest | RSS MiB peak | PSS MiB at rest "
          "| PSS MiB peak | p50 ms | p99 ms |")
    print("|---|---|---|---|---|---|---|---|---|")
    for rate in rates:
        for name in names:
            rs = results[name][f"rate {rate}"]
            print(f"| {rate:,} lines/s | {name} | {med([r['cpu_pct'] for r in rs], '.1f')} "
                  f"| {med([r['rest_rss'] for r in rs], '.0f')} "
                  f"| {med([r['rss'] for r in rs], '.0f')} "
                  f"| {med([r['rest_pss'] for r in rs], '.0f')} "
                  f"| {med([r['pss'] for r in rs], '.0f')} "
                  f"| {med([r['p50_ms'] for r in rs], '.1f')} "
                  f"| {med([r['p99_ms'] for r in rs], '.1f')} |")
    if args.full_lines:
        print()
        print("| full speed | lines/s | CPU µs/line | peak RSS MiB | peak PSS MiB |")
        print("|---|---|---|---|---|")
        for name in names:
            rs = results[name]["full"]
            print(f"| {name} | {med([r['lines_s'] for r in rs], ',.0f')} "
                  f"| {med([r['us_line'] for r in rs], '.2f')} "
                  f"| {med([r['rss'] for r in rs], '.0f')} | {med([r['pss'] for r in rs], '.0f')} |")
    if args.idle_seconds:
        print()
        print(f"| idle, {args.idle_files} files, {args.idle_seconds:.0f} s | CPU % of a core "
              "| RSS MiB | PSS MiB |")
        print("|---|---|---|---|")
        for name in names:
            rs = results[name]["idle"]
            print(f"| {name} | {med([r['cpu_pct'] for r in rs], '.2f')} "
                  f"| {med([r['rss'] for r in rs], '.0f')} | {med([r['pss'] for r in rs], '.0f')} |")
    print()
    print("Per round:")
    for name in names:
        for key, rs in results[name].items():
            if key == "full":
                print(f"  {name} {key}: lines/s {each([r['lines_s'] for r in rs], ',.0f')}; "
                      f"µs/line {each([r['us_line'] for r in rs], '.2f')}; "
                      f"RSS {each([r['rss'] for r in rs], '.0f')}")
            elif key == "idle":
                print(f"  {name} {key}: CPU % {each([r['cpu_pct'] for r in rs], '.2f')}; "
                      f"RSS {each([r['rss'] for r in rs], '.0f')}")
            else:
                print(f"  {name} {key}: CPU % {each([r['cpu_pct'] for r in rs], '.1f')}; "
                      f"RSS rest/peak {each([r['rest_rss'] for r in rs], '.0f')} / "
                      f"{each([r['rss'] for r in rs], '.0f')}; "
                      f"p50 {each([r['p50_ms'] for r in rs], '.1f')}; "
                      f"p99 {each([r['p99_ms'] for r in rs], '.1f')}")
    if "fluent-bit" in names and "log-shuttle" in names and args.full_lines:
        ratios = [a["lines_s"] / b["lines_s"] for a, b in
                  zip(results["log-shuttle"]["full"], results["fluent-bit"]["full"])]
        print(f"\nfull speed, log-shuttle / Fluent Bit lines/s, round by round: "
              f"{each(ratios, '.2f')} (median {statistics.median(ratios):.2f})")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    shutil.which("gcc") or sys.exit("gcc is needed to build the sink (apt-get install gcc)")
    main()
