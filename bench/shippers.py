"""log-shuttle beside rsyslog and syslog-ng: the same file shipped to the same TCP sink.

    .venv/bin/python bench/shippers.py [--lines 10000000] [--rounds 3] [--latency-seconds 10]

- A generated log of ~170-byte lines, each with ``seq=NNNNNNNNNN`` (cached in bench/out/).
- A TCP sink on loopback (bench/sink.c, compiled here with gcc) that counts newline-framed
  records; measured alone first (the kernel's sendfile of the log into it), and used in a
  separate check run per shipper that verifies the sequence.
- Throughput, alternating rounds: log-shuttle (file -> TCP NDJSON, --from-beginning), rsyslog
  (imfile in inotify mode, omfwd TCP with a raw-message template) and syslog-ng (file source,
  network destination, template of the bare message), each as its own foreground process with
  its configuration in a temporary directory. Time runs from the shipper's launch to the last
  record at the sink; CPU is every process (and thread) of the shipper; memory is the peak of
  the sum over its processes of RSS and of PSS (sampled from /proc/PID/smaps_rollup every
  0.1 s), and the sum of VmHWM at the end.
- Latency: lines with ``ts=`` (CLOCK_REALTIME ns) written at a fixed rate into a file the
  shipper follows; the sink takes the delay from write to receipt: p50, p99, max.

rsyslog and syslog-ng come from Debian: rsyslog installed (scripts/setup's test packages),
syslog-ng-core unpacked into .cache/syslog-ng (they conflict as packages). Only loopback.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
TICK = os.sysconf("SC_CLK_TCK")
SYSLOG_NG = ROOT / ".cache" / "syslog-ng"
SHIPPERS = ("log-shuttle", "rsyslog", "syslog-ng")

# --- the log ------------------------------------------------------------------------------------

METHODS = (b"GET", b"GET", b"GET", b"POST", b"PUT", b"DELETE")
STATUS = (200, 200, 200, 200, 201, 204, 304, 404, 500)
LEVELS = (b"INFO", b"INFO", b"INFO", b"WARN", b"DEBUG", b"ERROR")


def line(i: int, extra: bytes = b"") -> bytes:
    """One ~170-byte access-log style line; ``extra`` goes after the sequence number."""
    return (b'2026-11-25T02:44:%02d.%06dZ web-%d api[%d]: seq=%010d %s%s %s /api/v1/orders/%d '
            b'status=%d dur_ms=%d.%03d user=u%05d ua="Mozilla/5.0 (X11; Linux x86_64; rv:128.0)"\n'
            % (i // 1000 % 60, i % 1000000, i % 4, 1200 + i % 7, i, extra, LEVELS[i % 6],
               METHODS[i % 6], 10000 + i * 7919 % 90000, STATUS[i % 9], i % 97, i * 31 % 1000,
               i * 13 % 100000))


def make_log(path: Path, lines: int) -> None:
    if path.exists() and path.stat().st_size > 0:
        with open(path, "rb") as f:
            f.seek(-400, os.SEEK_END)
            if b"seq=%010d " % (lines - 1) in f.read().splitlines()[-1]:
                return
    print(f"generating {lines:,} lines into {path} ...", flush=True)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        for start in range(0, lines, 100_000):
            f.write(b"".join(line(i) for i in range(start, min(lines, start + 100_000))))
    tmp.rename(path)


# --- the sink -----------------------------------------------------------------------------------

def build_sink() -> Path:
    src, exe = ROOT / "bench" / "sink.c", OUT / "sink"
    if not exe.exists() or exe.stat().st_mtime < src.stat().st_mtime:
        subprocess.run(["gcc", "-O2", "-Wall", "-o", str(exe), str(src)], check=True)
    return exe


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Sink:
    def __init__(self, exe: Path, mode: str, expect: int, timeout: int = 60) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen([str(exe), str(self.port), mode, str(expect), str(timeout)],
                                     stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout.readline().strip() == "ready"
        self.result: dict | None = None

    def done(self) -> bool:
        if self.result is None and self.proc.poll() is not None:
            self.result = json.loads(self.proc.stdout.read())
        return self.result is not None

    def wait(self) -> dict:
        _, status, usage = os.wait4(self.proc.pid, 0)
        self.proc.returncode = os.waitstatus_to_exitcode(status)
        result = json.loads(self.proc.stdout.read())
        result["cpu"] = usage.ru_utime + usage.ru_stime
        return result


# --- the shippers -------------------------------------------------------------------------------

def shipper_cmd(name: str, log: Path, port: int, work: Path) -> tuple[list[str], dict]:
    env = dict(os.environ)
    if name == "log-shuttle":
        return [str(ROOT / ".venv/bin/log-shuttle"), "--input-file", str(log), "--from-beginning",
                "--output-tcp", f"127.0.0.1:{port}", "--state-dir", str(work / "state"),
                "--log-level", "warning"], env
    if name == "rsyslog":
        # Tuned for throughput as an operator would, after trying variants on this machine (in
        # docs/benchmarks.md): imfile without per-message metadata (addMetadata off: the JSON
        # it builds per line costs rsyslog 3x), no state file writes during the run, the main
        # queue as a FixedArray of 100k messages dequeued in batches of 4096 by one worker,
        # which runs omfwd (its own action queue, or a ruleset queue, were slower here), and the
        # raw message as the template (%msg% is slower).
        conf = work / "rsyslog.conf"
        conf.write_text(
            f'global(workDirectory="{work}" maxMessageSize="64k")\n'
            'main_queue(queue.type="FixedArray" queue.size="100000" '
            'queue.dequeueBatchSize="4096")\n'
            'module(load="imfile" mode="inotify")\n'
            'template(name="raw" type="string" string="%rawmsg%\\n")\n'
            'ruleset(name="ship") {\n'
            f'  action(type="omfwd" target="127.0.0.1" port="{port}" protocol="tcp"\n'
            '         template="raw" TCP_Framing="traditional")\n'
            '}\n'
            f'input(type="imfile" file="{log}" tag="app" ruleset="ship" freshStartTail="off"\n'
            '      addMetadata="off" persistStateInterval="0")\n')
        return ["/usr/sbin/rsyslogd", "-n", "-f", str(conf), "-i", str(work / "rsyslog.pid")], env
    if name == "syslog-ng":
        # flow-control so that nothing is dropped, a window and fifo large enough not to stall,
        # and the file polled every 0.1 s (its file() source does not use inotify for contents).
        conf = work / "syslog-ng.conf"
        conf.write_text(
            '@version: 3.38\n'
            'options { stats-freq(0); log-msg-size(65536); flush-lines(1000); };\n'
            f'source s {{ file("{log}" flags(no-parse) follow-freq(0.1) log-fetch-limit(10000)\n'
            '             log-iw-size(100000)); };\n'
            f'destination d {{ network("127.0.0.1" port({port}) transport("tcp")\n'
            '                  template("${MSG}\\n") log-fifo-size(100000)); };\n'
            'log { source(s); destination(d); flags(flow-control); };\n')
        lib = [SYSLOG_NG / "usr/lib/x86_64-linux-gnu", SYSLOG_NG / "lib/x86_64-linux-gnu",
               SYSLOG_NG / "usr/lib/syslog-ng"]
        env["LD_LIBRARY_PATH"] = ":".join(map(str, lib))
        return [str(SYSLOG_NG / "usr/sbin/syslog-ng"), "-F", "--no-caps", "-f", str(conf),
                f"--module-path={SYSLOG_NG / 'usr/lib/syslog-ng/3.38'}",
                f"--persist-file={work / 'persist'}", f"--pidfile={work / 'pid'}",
                f"--control={work / 'ctl'}"], env
    raise ValueError(name)


def tree(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for t in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{t}/children") as f:
                    todo += [int(c) for c in f.read().split()]
        except OSError:
            pass
    return out


def cpu_seconds(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICK
    except OSError:
        return 0.0


def kib(path: str, key: str) -> int:
    try:
        with open(path) as f:
            for ln in f:
                if ln.startswith(key + ":"):
                    return int(ln.split()[1])
    except OSError:
        pass
    return 0


class Monitor(threading.Thread):
    """Samples the shipper's processes: peak sums of RSS and PSS, VmHWM per pid."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.stop = threading.Event()
        self.peak_rss = self.peak_pss = 0
        self.hwm: dict[int, int] = {}
        self.cpu: dict[int, float] = {}

    def sample(self) -> None:
        rss = pss = 0
        for p in tree(self.pid):
            rollup = f"/proc/{p}/smaps_rollup"
            rss += kib(rollup, "Rss")
            pss += kib(rollup, "Pss")
            self.hwm[p] = max(self.hwm.get(p, 0), kib(f"/proc/{p}/status", "VmHWM"))
            self.cpu[p] = max(self.cpu.get(p, 0.0), cpu_seconds(p))
        self.peak_rss, self.peak_pss = max(self.peak_rss, rss), max(self.peak_pss, pss)

    def run(self) -> None:
        while not self.stop.wait(0.1):
            self.sample()


def stop_shipper(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:
        proc.wait()


def ship(name: str, log: Path, sink_exe: Path, lines: int, *, mode: str = "count") -> dict:
    """Run one shipper over the whole log into a fresh sink; return its measures."""
    sink = Sink(sink_exe, mode, lines)
    with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as tmp:
        work = Path(tmp)
        cmd, env = shipper_cmd(name, log, sink.port, work)
        t0 = time.monotonic_ns()
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                start_new_session=True)
        mon = Monitor(proc.pid)
        mon.start()
        try:
            while not sink.done():
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited {proc.returncode}: "
                                       f"{proc.stderr.read().decode()[-2000:]}")
                time.sleep(0.02)
            mon.stop.set()
            mon.join()
            mon.sample()  # CPU right after the last record
        finally:
            stop_shipper(proc)
            proc.stderr.close()
    res = sink.result
    if res["records"] < lines:
        raise RuntimeError(f"{name}: the sink got {res['records']} of {lines} records")
    return {"seconds": (res["last_ns"] - t0) / 1e9, "cpu": sum(mon.cpu.values()),
            "rss_mib": mon.peak_rss / 1024, "pss_mib": mon.peak_pss / 1024,
            "hwm_mib": sum(mon.hwm.values()) / 1024, "processes": len(mon.hwm),
            "sink": res}


def sink_alone(log: Path, sink_exe: Path, lines: int) -> dict:
    """The kernel's sendfile of the log into the sink: how fast the sink counts by itself."""
    sink = Sink(sink_exe, "count", lines)
    t0 = time.monotonic_ns()
    with socket.create_connection(("127.0.0.1", sink.port)) as s, open(log, "rb") as f:
        s.sendfile(f)
        res = sink.wait()
    return {"seconds": (res["last_ns"] - t0) / 1e9, "cpu": res["cpu"], "sink": res}


# --- latency ------------------------------------------------------------------------------------

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
    time.sleep(0.0005)
os.close(fd)
"""


def latency(name: str, sink_exe: Path, rate: int, seconds: float) -> dict:
    total = int(rate * seconds)
    sink = Sink(sink_exe, "latency", total, timeout=30)
    with tempfile.TemporaryDirectory(prefix=f"bench-lat-{name}-") as tmp:
        work = Path(tmp)
        log = work / "app.log"
        log.touch()
        cmd, env = shipper_cmd(name, log, sink.port, work)
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                start_new_session=True)
        try:
            time.sleep(3.0)  # started and following the (empty) file
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited: {proc.stderr.read().decode()[-2000:]}")
            subprocess.run([sys.executable, "-c", WRITER, str(log), str(rate), str(seconds),
                            str(ROOT)], check=True)
            res = sink.wait()
        finally:
            stop_shipper(proc)
            proc.stderr.close()
    return res


# --- the report ---------------------------------------------------------------------------------

def med(xs: list[float], spec: str) -> str:
    return f"{statistics.median(xs):{spec}} ({min(xs):{spec}}-{max(xs):{spec}})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lines", type=int, default=10_000_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--shippers", default=",".join(SHIPPERS))
    ap.add_argument("--no-check", action="store_true", help="skip the sequence check runs")
    ap.add_argument("--latency-seconds", type=float, default=10.0, help="0: no latency runs")
    ap.add_argument("--rates", default="10000,50000")
    args = ap.parse_args()
    names = [n for n in args.shippers.split(",") if n]
    OUT.mkdir(parents=True, exist_ok=True)
    log = OUT / f"shippers-{args.lines}.log"
    make_log(log, args.lines)
    size = log.stat().st_size
    sink_exe = build_sink()
    print(f"input: {args.lines:,} lines, {size / 2**20:.1f} MiB ({size / args.lines:.1f} B/line); "
          f"{os.cpu_count()} CPUs; {' / '.join(f'{n} {v}' for n, v in versions().items())}")

    alone = sink_alone(log, sink_exe, args.lines)
    print(f"sink alone (sendfile of the log): {args.lines / alone['seconds']:,.0f} lines/s, "
          f"{size / alone['seconds'] / 2**20:,.0f} MiB/s, sink CPU "
          f"{alone['cpu'] / args.lines * 1e6:.3f} µs/line", flush=True)

    if not args.no_check:
        for name in names:
            r = ship(name, log, sink_exe, args.lines, mode="verify")["sink"]
            ok = r["next_seq"] == args.lines and not r["gaps"] and not r["unparsed"]
            print(f"check {name}: {r['records']:,} records, next seq {r['next_seq']:,}, "
                  f"gaps {r['gaps']}, duplicates {r['duplicates']}, unparsed {r['unparsed']}: "
                  f"{'OK' if ok else 'FAILED'}", flush=True)

    runs: dict[str, list[dict]] = {n: [] for n in names}
    for i in range(args.rounds):
        for name in names:
            runs[name].append(ship(name, log, sink_exe, args.lines))
        line_ = f"round {i + 1}: " + ", ".join(
            f"{n} {args.lines / runs[n][-1]['seconds']:,.0f} lines/s" for n in names)
        if "rsyslog" in runs and "log-shuttle" in runs:
            line_ += (f"; log-shuttle / rsyslog "
                      f"{runs['rsyslog'][-1]['seconds'] / runs['log-shuttle'][-1]['seconds']:.2f}")
        print(line_, flush=True)

    print()
    print("| shipper | lines/s | MiB/s | CPU µs/line | peak RSS MiB (sum) | peak PSS MiB (sum) "
          "| VmHWM MiB (sum) | processes |")
    print("|---|---|---|---|---|---|---|---|")
    for name in names:
        rs = runs[name]
        print(f"| {name} | {med([args.lines / r['seconds'] for r in rs], ',.0f')} "
              f"| {med([size / r['seconds'] / 2**20 for r in rs], ',.0f')} "
              f"| {med([r['cpu'] / args.lines * 1e6 for r in rs], '.2f')} "
              f"| {med([r['rss_mib'] for r in rs], '.0f')} | {med([r['pss_mib'] for r in rs], '.0f')} "
              f"| {med([r['hwm_mib'] for r in rs], '.0f')} | {rs[0]['processes']} |")
    print(f"| sink alone | {args.lines / alone['seconds']:,.0f} | "
          f"{size / alone['seconds'] / 2**20:,.0f} | {alone['cpu'] / args.lines * 1e6:.2f} (sink) | | | | 1 |")
    if "rsyslog" in runs:
        print()
        for name in names:
            if name == "rsyslog":
                continue
            ratios = [b["seconds"] / a["seconds"] for a, b in zip(runs[name], runs["rsyslog"])]
            cpu = [a["cpu"] / b["cpu"] for a, b in zip(runs[name], runs["rsyslog"])]
            print(f"{name} / rsyslog, round by round: lines/s "
                  f"{', '.join(f'{x:.2f}' for x in ratios)} (median {statistics.median(ratios):.2f}); "
                  f"CPU per line {', '.join(f'{x:.2f}' for x in cpu)}")

    if args.latency_seconds > 0:
        print()
        print(f"latency, {args.latency_seconds:.0f} s of lines at each rate "
              "(write -> sink receipt, ms):")
        print("| shipper | rate lines/s | p50 | p99 | max | records |")
        print("|---|---|---|---|---|---|")
        for rate in (int(r) for r in args.rates.split(",")):
            for name in names:
                r = latency(name, sink_exe, rate, args.latency_seconds)
                print(f"| {name} | {rate:,} | {r['p50_ns'] / 1e6:.1f} | {r['p99_ns'] / 1e6:.1f} | "
                      f"{r['max_ns'] / 1e6:.1f} | {r['measured']:,} |", flush=True)


def versions() -> dict[str, str]:
    out = {"python": sys.version.split()[0]}
    try:
        out["rsyslog"] = subprocess.run(["/usr/sbin/rsyslogd", "-v"], capture_output=True,
                                        text=True).stdout.split()[1]
    except (OSError, IndexError):
        pass
    env = {**os.environ, "LD_LIBRARY_PATH": f"{SYSLOG_NG}/usr/lib/x86_64-linux-gnu:"
           f"{SYSLOG_NG}/lib/x86_64-linux-gnu:{SYSLOG_NG}/usr/lib/syslog-ng"}
    try:
        v = subprocess.run([str(SYSLOG_NG / "usr/sbin/syslog-ng"), "--version"], env=env,
                           capture_output=True, text=True).stdout.split("\n")[0]
        out["syslog-ng"] = v.split()[-1]
    except (OSError, IndexError):
        pass
    return out


if __name__ == "__main__":
    shutil.which("gcc") or sys.exit("gcc is needed to build the sink (apt-get install gcc)")
    main()
