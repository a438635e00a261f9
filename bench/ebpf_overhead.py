"""Overhead of the eBPF input, measured as users measure it: nginx (Debian's, one worker) under a
fixed request rate, with and without `log-shuttle --ebpf-http-tracing`, alternating untraced and
traced rounds in one sitting; nginx pinned to CPU 0, the load generator to CPU 1 (taskset).

Parts (each can be left out):
- rates: at each rate (default 1,000, 5,000, 20,000 req/s), per round: nginx's p50/p99 latency
  (bench/loadgen.c: open loop, latency from when a request was due), the CPU added per request
  host-wide (/proc/stat, all CPUs, traced minus untraced), split into the kernel side (the CPU
  time of nginx and the load generator themselves, traced minus untraced: the programs and
  their side effects run in their syscalls; and the BPF programs' run_time_ns from
  kernel.bpf_stats_enabled, every program of the host) and the agent (its processes'
  utime+stime from /proc/PID/stat), and the events lost (LossEvents) or missing (spans, one per
  exchange, fewer than 2 x requests: each request is seen on nginx's side and on the
  generator's).
- saturation: requests/s with the generator unlimited (16 connections), untraced vs traced, and
  with the probes alone (their records drained by a thread that does nothing with them; with
  ``--budget``, sampling 1 in what the budget would make it): the kernel side's share.
- floor: the kernel floor per exchange (bench/exchange.c: one process, client write, server read,
  server write, client read over loopback, CPU time per exchange) with no programs, with empty
  programs on the same tracepoints as ours, with two raw tracepoints (sys_enter, sys_exit) doing
  the least a program must to tell a followed read or write (RAW_SOURCE: the other way to hook
  the syscalls), and with ours (read by a consumer).
- programs: where the kernel side's time goes, program by program (run_time_ns per exchange of
  bench/exchange.c, ours against empty programs, whose time is what bpf_stats itself costs).

Each traced round starts the agent afresh and, with ``--warmup S`` (default 20), first runs the
same load for S seconds, not measured: the round then measures an agent in its steady state, as
one left on is, with its tables full (the span builder keeps 15 s of spans for the log join:
until then it grows, and its memory is page-faulted in). ``--warmup 0`` measures an agent's
first seconds instead.

Prints medians with min-max and writes bench/out/ebpf_overhead.json. The traced agent traces
every exchange (``[inputs.ebpf] max_exchanges_per_second = 0``, not the agent's default of
5,000): the whole cost. ``--budget N`` runs it with ``max_exchanges_per_second = N`` (the http
probe samples over it): its exchanges are then counted by their weights, an estimate (bench/out/
ebpf_overhead_budgetN.json).

    sudo .venv/bin/python bench/ebpf_overhead.py [--rounds 3] [--seconds 5] [--rates 1000,5000,20000]
        [--budget N] [--warmup 20]

Needs root, nginx-light and gcc (LOG_SHUTTLE_SETUP_TEST=1 ./scripts/setup installs them).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
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
SERVER_CPU = "0"
LOAD_CPU = "1"

NGINX_CONF = """
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    keepalive_requests 100000000;
    server {{
        listen 127.0.0.1:{port};
        location = /ok {{ return 200 "ok\\n"; }}
        location / {{ return 404; }}
    }}
}}
"""


def build(name: str) -> str:
    """Compile bench/<name>.c into bench/out/<name>."""
    OUT.mkdir(exist_ok=True)
    src, exe = ROOT / "bench" / f"{name}.c", OUT / name
    if not exe.exists() or exe.stat().st_mtime < src.stat().st_mtime:
        subprocess.run(["gcc", "-O2", "-Wall", "-o", str(exe), str(src)], check=True)
    return str(exe)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_nginx(tmp: Path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    conf = tmp / "nginx.conf"
    conf.write_text(NGINX_CONF.format(dir=tmp, port=port))
    proc = subprocess.Popen(["taskset", "-c", SERVER_CPU, "nginx", "-p", str(tmp), "-e",
                             str(tmp / "error.log"), "-c", str(conf)])
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc, port
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nginx did not start: {(tmp / 'error.log').read_text()}")


def load(loadgen: str, port: int, rate: int, seconds: float, connections: int) -> dict:
    """Run the load generator; its JSON result, with its own CPU time (``loadgen_cpu_s``)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen([loadgen, str(port), "/ok", str(rate), str(seconds),
                                 str(connections)], stdout=out, stderr=err,
                                preexec_fn=lambda: os.sched_setaffinity(0, {int(LOAD_CPU)}))
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if proc.returncode != 0:
            raise SystemExit(f"loadgen failed: {err.read().decode()}")
        result = json.loads(out.read())
    result["loadgen_cpu_s"] = usage.ru_utime + usage.ru_stime
    return result


def host_busy_seconds() -> float:
    """CPU-seconds all CPUs spent not idle since boot (/proc/stat)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    user, nice, system, idle, iowait, irq, softirq, steal = fields[:8]
    return (user + nice + system + irq + softirq) / TICK


def descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            with open(f"/proc/{p}/task/{p}/children") as f:
                todo += [int(c) for c in f.read().split()]
        except OSError:
            pass
    return out


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        except (OSError, IndexError):
            pass
    return total / TICK


def rss_mib(pid: int) -> float:
    """A process's resident memory (VmRSS), MiB; 0 when it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def switches(pid: int) -> int:
    """How many times a process's threads were put on a CPU so far (/proc/PID/task/*/schedstat):
    each a wake-up, a return from a yield or a preemption, and a chance to delay nginx or the
    load generator. (The split into voluntary and not in /proc/PID/status says little on this
    kernel: a sleep often counts as involuntary.)"""
    total = 0
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[2])
        except (OSError, ValueError, IndexError):
            pass  # a thread that ended meanwhile
    return total


def bpf_programs() -> dict[int, dict]:
    """Every loaded BPF program by id: its name, run_time_ns and run_cnt
    (kernel.bpf_stats_enabled=1)."""
    out = subprocess.run(["bpftool", "prog", "show", "-j"], capture_output=True, text=True)
    if out.returncode != 0:
        return {}
    return {p["id"]: p for p in json.loads(out.stdout)}


def bpf_run_ns() -> float:
    """Sum of run_time_ns of every loaded BPF program (kernel.bpf_stats_enabled=1)."""
    return float(sum(p.get("run_time_ns", 0) for p in bpf_programs().values()))


BUDGET = 0
"""--budget: the agent's [inputs.ebpf] max_exchanges_per_second (0: none, every exchange)."""


class Agent:
    """`log-shuttle --ebpf-http-tracing`, stdout to a file."""

    def __init__(self, tmp: Path) -> None:
        self.out_path = tmp / "agent.ndjson"
        self.err_path = tmp / "agent.err"
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        env["LOG_SHUTTLE_INPUTS__EBPF__MAX_EXCHANGES_PER_SECOND"] = str(BUDGET)
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen([sys.executable, "-m", "agent.cli", "--ebpf-http-tracing"],
                                         stdout=out, stderr=err, env=env, cwd=ROOT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 90
        while "tracing with probes" not in self.err_path.read_text():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the agent did not start: {self.err_path.read_text()}")
            time.sleep(0.1)
        time.sleep(0.5)
        self.pids = descendants(self.proc.pid)
        self.marked = 0
        """Bytes of the output that a warm-up shipped (``mark``)."""

    def cpu(self) -> float:
        return cpu_seconds(self.pids)

    def mark(self) -> None:
        """What was shipped so far is a warm-up's: its exchanges are not the round's."""
        self.marked = self.out_path.stat().st_size

    def by_process(self, measure) -> dict[str, float]:
        """``measure(pid)`` summed per process title ("log-shuttle: input ebpf", ...)."""
        out: dict[str, float] = {}
        for p in self.pids:
            try:
                with open(f"/proc/{p}/cmdline", "rb") as f:
                    title = f.read().split(b"\0")[0].decode(errors="replace")
            except OSError:
                continue
            out[title] = out.get(title, 0) + measure(p)
        return out

    def cpu_by_process(self) -> dict[str, float]:
        """CPU-seconds per process."""
        return self.by_process(lambda p: cpu_seconds([p]))

    def rss_by_process(self) -> dict[str, float]:
        """Resident memory per process, MiB."""
        return self.by_process(rss_mib)

    def switches_by_process(self) -> dict[str, float]:
        """Times on a CPU per process (``switches``)."""
        return self.by_process(switches)

    def stop(self) -> dict:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=60)
        http = sent = lost = 0
        with open(self.out_path, "rb") as f:
            for line in f:
                if f.tell() <= self.marked:  # a warm-up's: its losses count, not its exchanges
                    if b'"type":"loss"' in line:
                        lost += json.loads(line)["count"]
                    continue
                if b'"type":"span"' in line:  # one per exchange (the http event is not shipped)
                    sent += 1
                    at = line.find(b'"log_shuttle.sample_weight":')
                    # a sampled exchange (--budget) stands for this many
                    http += int(line[at + 28:line.index(b",", at)].strip(b"}")) if at >= 0 else 1
                elif b'"type":"loss"' in line:
                    lost += json.loads(line)["count"]
        return {"exchanges": http, "sent": sent, "lost": lost}


SERVED: list[int] = []
"""nginx's processes (set at start): their CPU time, with the load generator's, is the CPU of
the traced exchanges themselves, kernel side included (the programs run in their syscalls),
without the other processes of a shared machine."""


def measured(fn, agent: Agent | None) -> dict:
    """Run ``fn`` (a load), with host CPU, BPF time and the agent's CPU around it."""
    host0, bpf0 = host_busy_seconds(), bpf_run_ns()
    agent0 = agent.cpu() if agent else 0.0
    split0 = agent.cpu_by_process() if agent else {}
    switches0 = agent.switches_by_process() if agent else {}
    served0 = cpu_seconds(SERVED)
    t0 = time.monotonic()
    result = fn()
    took = time.monotonic() - t0
    switches1 = agent.switches_by_process() if agent else {}
    served1 = cpu_seconds(SERVED)
    host1, bpf1 = host_busy_seconds(), bpf_run_ns()
    agent1 = agent.cpu() if agent else 0.0
    if agent:  # what the agent does for this round's events once the load stopped
        time.sleep(0.5)
        agent1 = agent.cpu()
    split1 = agent.cpu_by_process() if agent else {}
    result["agent_rss_mib"] = agent.rss_by_process() if agent else {}
    done = max(1, result["done"])
    result["agent_split_us_per_req"] = {k: 1e6 * (split1.get(k, v) - v) / done
                                        for k, v in split0.items()}
    result["agent_switches_per_s"] = {k: (switches1.get(k, v) - v) / took
                                      for k, v in switches0.items()}
    result.update(host_us_per_req=1e6 * (host1 - host0) / done,
                  served_us_per_req=1e6 * (served1 - served0 + result["loadgen_cpu_s"]) / done,
                  bpf_us_per_req=(bpf1 - bpf0) / 1e3 / done,
                  agent_us_per_req=1e6 * (agent1 - agent0) / done)
    return result


def rate_rounds(loadgen: str, port: int, tmp: Path, rate: int, args) -> dict:
    untraced, traced = [], []
    for i in range(args.rounds):
        for kind in (("untraced", "traced") if i % 2 == 0 else ("traced", "untraced")):
            if kind == "untraced":
                untraced.append(measured(
                    lambda: load(loadgen, port, rate, args.seconds, args.connections), None))
                continue
            agent = Agent(tmp)
            try:
                if args.warmup:
                    load(loadgen, port, rate, args.warmup, args.connections)
                    time.sleep(1.0)  # the warm-up's last spans out (a wait for a parent: 0.5 s)
                    agent.mark()
                r = measured(lambda: load(loadgen, port, rate, args.seconds, args.connections),
                             agent)
            finally:
                r_events = agent.stop()
            r.update(r_events)
            # With --budget, "exchanges" is the sampled ones' weights: an estimate.
            r["missing"] = max(0, 2 * r["done"] - r["exchanges"]) if not BUDGET else 0
            traced.append(r)
        u, t = untraced[-1], traced[-1]
        print(f"  {rate} req/s round {i + 1}: p50 {u['p50_us']:.0f} / {t['p50_us']:.0f} us, "
              f"p99 {u['p99_us']:.0f} / {t['p99_us']:.0f} us (untraced / traced); host CPU "
              f"{u['host_us_per_req']:.1f} / {t['host_us_per_req']:.1f} us/req; nginx+loadgen "
              f"{u['served_us_per_req']:.1f} / {t['served_us_per_req']:.1f} us/req; BPF "
              f"{t['bpf_us_per_req']:.2f} us/req, agent {t['agent_us_per_req']:.2f} us/req; "
              f"lost {t['lost']}, missing {t['missing']}"
              + (f"; sent {t['sent']} of {2 * t['done']} exchanges, weighted "
                 f"{t['exchanges'] / max(1, 2 * t['done']):.2f} of them" if BUDGET else ""),
              flush=True)
    return {"untraced": untraced, "traced": traced}


def saturation_rounds(loadgen: str, port: int, tmp: Path, args) -> dict:
    """Requests/s at saturation: untraced, the probes alone (drained by a thread that does
    nothing with the records, sampling at the N the agent's budget would choose at the untraced
    rate: what the kernel side costs), and the agent."""
    untraced, probes, traced = [], [], []
    for i in range(args.rounds):
        untraced.append(load(loadgen, port, 0, args.seconds, 16)["rate"])
        one_in = max(1, math.ceil(2 * untraced[-1] / BUDGET)) if BUDGET else 1
        with drained_probes() as programs:
            programs.set_sampling(one_in)
            probes.append(load(loadgen, port, 0, args.seconds, 16)["rate"])
        agent = Agent(tmp)
        try:
            traced.append(load(loadgen, port, 0, args.seconds, 16)["rate"])
        finally:
            agent.stop()
        print(f"  saturation round {i + 1}: {untraced[-1]:.0f} / {probes[-1]:.0f} (probes alone, "
              f"1 in {one_in}) / {traced[-1]:.0f} req/s (untraced / probes / traced)",
              flush=True)
    return {"untraced": untraced, "probes": probes, "traced": traced}


def empty_programs_source() -> str:
    """Empty programs on every tracepoint our probes attach to."""
    import bpf

    points = set()
    for probe in bpf.PROBES:
        text = (bpf.DIR / f"{probe}.c").read_text()
        points.update(re.findall(r"TRACEPOINT_PROBE\((\w+),\s*(\w+)\)", text))
    return "\n".join(f"TRACEPOINT_PROBE({c}, {n}) {{ return 0; }}" for c, n in sorted(points))


RAW_SOURCE = """
#include <uapi/linux/ptrace.h>  /* struct pt_regs: the registers (the user ABI) */
struct noted { s32 fd; u32 op; };
BPF_TASK_STORAGE(noted, struct noted);
RAW_TRACEPOINT_PROBE(sys_enter)
{
    switch (ctx->args[1]) {  /* the syscall: read, write, close, readv, writev, connect, accept,
                              * sendto, recvfrom, sendmsg, recvmsg, accept4 */
    case 0: case 1: case 3: case 19: case 20: case 42: case 43: case 44: case 45: case 46:
    case 47: case 288: {
        u64 fd = 0;  /* its first argument, from the registers */
        bpf_probe_read_kernel(&fd, sizeof(fd), &((struct pt_regs *)ctx->args[0])->di);
        return fd == 0x7fffffff;
    }
    }
    return 0;
}
RAW_TRACEPOINT_PROBE(sys_exit)
{
    struct task_struct *task = (struct task_struct *)bpf_get_current_task_btf();
    struct noted *n = noted.task_storage_get(task, 0, 0);
    return n && n->fd == 12345;
}
"""
"""The other way to hook the syscalls (x86-64): two raw tracepoints for every syscall of the
host, not one syscall tracepoint per syscall followed, doing no more than a program of ours must
to tell a followed read or write (the syscall's number; a register at entry; the thread's
storage at exit). Measured in the floor beside empty programs on our tracepoints."""


@contextlib.contextmanager
def empty_programs(source: str | None = None):
    """Empty programs on every tracepoint our probes attach to (or ``source``), loaded."""
    sys.path.insert(0, str(ROOT))
    from bcc import BPF

    from inputs.ebpf.loader import QUIET_CFLAGS

    programs = BPF(text=source or empty_programs_source(), cflags=QUIET_CFLAGS)
    try:
        yield programs
    finally:
        programs.cleanup()


@contextlib.contextmanager
def drained_probes():
    """The process, tcp and http probes loaded, their ring buffers drained by a thread that does
    nothing with the records: the kernel side of tracing alone."""
    sys.path.insert(0, str(ROOT))
    from inputs.ebpf.loader import ProgramOptions, Programs

    programs = Programs(["process", "tcp", "http"], ProgramOptions(self_pid=os.getpid()))
    stop = threading.Event()

    def consume() -> None:
        while not stop.is_set():
            programs.wait(0.02)
            programs.consume()

    reader = threading.Thread(target=consume)
    reader.start()
    try:
        yield programs
    finally:
        stop.set()
        reader.join()
        programs.close()


def floor_runs(exchange: str, args) -> dict:
    def run(mode: str = "tcp") -> float:
        out = subprocess.run(["taskset", "-c", LOAD_CPU, exchange, str(args.floor_exchanges),
                              mode], capture_output=True, text=True, check=True)
        return float(out.stdout) / 1e3

    result: dict[str, list[float]] = {"none": [], "empty": [], "raw": [], "ours": [],
                                      "pipe_none": [], "pipe_ours": []}
    for i in range(args.rounds):
        result["none"].append(run())
        result["pipe_none"].append(run("pipe"))
        with empty_programs():
            result["empty"].append(run())
        with empty_programs(RAW_SOURCE):
            result["raw"].append(run())
        with drained_probes():
            result["ours"].append(run())
            result["pipe_ours"].append(run("pipe"))
        print(f"  floor round {i + 1}: none {result['none'][-1]:.2f}, empty "
              f"{result['empty'][-1]:.2f}, raw tracepoints {result['raw'][-1]:.2f}, ours "
              f"{result['ours'][-1]:.2f} us per exchange; "
              f"pipes: none {result['pipe_none'][-1]:.2f}, ours {result['pipe_ours'][-1]:.2f}",
              flush=True)
    return result


def program_profile(exchange: str, args) -> dict:
    """Where the kernel side's time goes, program by program: bench/exchange.c's exchanges with
    kernel.bpf_stats_enabled on, under empty programs on our tracepoints and under ours; per
    program (by name, summed over the probes that share one) its runs and run_time_ns per
    exchange, medians of the rounds. An empty program's time is what bpf_stats itself costs
    (two clock reads a run) and the call: ours minus it is the programs' own work."""
    n = args.floor_exchanges

    def one(load) -> dict[str, list[float]]:
        with load():
            before = bpf_programs()
            subprocess.run(["taskset", "-c", LOAD_CPU, exchange, str(n), "tcp"],
                           capture_output=True, check=True)
            after = bpf_programs()
        per: dict[str, list[float]] = {}  # name -> [runs, ns] per exchange
        for pid, p in after.items():
            b = before.get(pid, {})
            runs = p.get("run_cnt", 0) - b.get("run_cnt", 0)
            if runs >= n:  # on the exchanges' path (others run now and then, for anyone)
                acc = per.setdefault(p.get("name", str(pid)), [0.0, 0.0])
                acc[0] += runs / n
                acc[1] += (p.get("run_time_ns", 0) - b.get("run_time_ns", 0)) / n
        return per

    rounds: dict[str, list[dict]] = {"empty": [], "ours": []}
    subprocess.run(["sysctl", "-qw", "kernel.bpf_stats_enabled=1"], check=True)
    try:
        for _ in range(args.rounds):
            rounds["empty"].append(one(empty_programs))
            rounds["ours"].append(one(drained_probes))
    finally:
        subprocess.run(["sysctl", "-qw", "kernel.bpf_stats_enabled=0"], check=True)
    result: dict = {}
    for kind, rs in rounds.items():
        names = sorted({k for r in rs for k in r})
        result[kind] = {k: {"runs": med([r.get(k, (0, 0))[0] for r in rs]),
                            "ns": med([r.get(k, (0, 0))[1] for r in rs])} for k in names}
    return result


def med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def summary(values: list[float], fmt: str = ".1f") -> str:
    return f"{med(values):{fmt}} ({min(values):{fmt}} - {max(values):{fmt}})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--warmup", type=float, default=20,
                    help="seconds of the same load before each traced round is measured (0: "
                    "none: the agent's first seconds)")
    ap.add_argument("--rates", default="1000,5000,20000")
    ap.add_argument("--connections", type=int, default=32,
                    help="keep-alive connections of the rate-limited load")
    ap.add_argument("--floor-exchanges", type=int, default=200_000)
    ap.add_argument("--skip", default="",
                    help="comma-separated: rates, saturation, floor, programs")
    ap.add_argument("--budget", type=int, default=0,
                    help="the agent's max_exchanges_per_second (0, the bench's default: none, "
                    "every exchange traced)")
    args = ap.parse_args()
    global BUDGET
    BUDGET = args.budget
    if os.geteuid() != 0:
        raise SystemExit("run as root: the eBPF input needs it")
    for tool in ("nginx", "gcc", "taskset", "bpftool"):
        if shutil.which(tool) is None:
            raise SystemExit(f"needs {tool} (LOG_SHUTTLE_SETUP_TEST=1 ./scripts/setup)")
    skip = set(filter(None, args.skip.split(",")))
    loadgen, exchange = build("loadgen"), build("exchange")
    subprocess.run(["sysctl", "-qw", "kernel.bpf_stats_enabled=1"], check=True)
    tmp = Path(tempfile.mkdtemp(prefix="ebpf-bench-"))
    nginx, port = start_nginx(tmp)
    SERVED[:] = descendants(nginx.pid)
    result: dict = {"rounds": args.rounds, "seconds": args.seconds, "warmup": args.warmup,
                    "cores": os.cpu_count(),
                    "connections": args.connections, "loadavg_at_start": os.getloadavg()}
    try:
        load(loadgen, port, 0, 1, 16)  # warm up
        if "rates" not in skip:
            result["rates"] = {}
            for rate in (int(r) for r in args.rates.split(",")):
                print(f"at {rate} req/s:", flush=True)
                result["rates"][rate] = rate_rounds(loadgen, port, tmp, rate, args)
        if "saturation" not in skip:
            print("at saturation:", flush=True)
            result["saturation"] = saturation_rounds(loadgen, port, tmp, args)
        if "floor" not in skip:
            print("kernel floor:", flush=True)
            # bpf_stats costs two clock reads per program run: not in the floor.
            subprocess.run(["sysctl", "-qw", "kernel.bpf_stats_enabled=0"], check=True)
            result["floor"] = floor_runs(exchange, args)
        if "programs" not in skip:
            print("the programs, one by one:", flush=True)
            result["programs"] = program_profile(exchange, args)
    finally:
        nginx.terminate()
        nginx.wait()
        subprocess.run(["sysctl", "-qw", "kernel.bpf_stats_enabled=0"])
        shutil.rmtree(tmp, ignore_errors=True)
    result["loadavg_at_end"] = os.getloadavg()
    print("\nmedians (min - max) of the rounds")
    for rate, r in result.get("rates", {}).items():
        u, t = r["untraced"], r["traced"]
        added = [b["host_us_per_req"] - a["host_us_per_req"] for a, b in zip(u, t)]
        print(f"{rate} req/s: p50 {summary([x['p50_us'] for x in u], '.0f')} -> "
              f"{summary([x['p50_us'] for x in t], '.0f')} us; p99 "
              f"{summary([x['p99_us'] for x in u], '.0f')} -> "
              f"{summary([x['p99_us'] for x in t], '.0f')} us "
              f"({100 * (med([x['p99_us'] for x in t]) / med([x['p99_us'] for x in u]) - 1):+.0f}%)")
        served = [b["served_us_per_req"] - a["served_us_per_req"] for a, b in zip(u, t)]
        print(f"    CPU of nginx + loadgen per request: "
              f"{summary([x['served_us_per_req'] for x in u], '.2f')} -> "
              f"{summary([x['served_us_per_req'] for x in t], '.2f')} us (added, kernel side: "
              f"{summary(served, '.2f')} us)")
        print(f"    CPU added per request (host): {summary(added, '.2f')} us; BPF programs "
              f"{summary([x['bpf_us_per_req'] for x in t], '.2f')} us; agent "
              f"{summary([x['agent_us_per_req'] for x in t], '.2f')} us; lost "
              f"{sum(x['lost'] for x in t)}, missing {sum(x['missing'] for x in t)}")
        split = ", ".join(f"{k.removeprefix('log-shuttle: ')} "
                          f"{med([x['agent_split_us_per_req'].get(k, 0) for x in t]):.2f}"
                          for k in t[0]["agent_split_us_per_req"])
        print(f"    agent per process (us per request): {split}")
        woke = ", ".join(f"{k.removeprefix('log-shuttle: ')} "
                         f"{med([x['agent_switches_per_s'].get(k, 0) for x in t]):.0f}"
                         for k in t[0]["agent_switches_per_s"])
        print(f"    agent's times on a CPU a second, per process: {woke}")
        rss = ", ".join(f"{k.removeprefix('log-shuttle: ')} "
                        f"{med([x['agent_rss_mib'].get(k, 0) for x in t]):.0f}"
                        for k in t[0]["agent_rss_mib"])
        print(f"    agent's resident memory at the end of the load, per process (MiB): {rss}")
    if "saturation" in result:
        s = result["saturation"]
        print(f"saturation: {summary(s['untraced'], '.0f')} -> {summary(s['traced'], '.0f')} "
              f"req/s ({100 * (med(s['traced']) / med(s['untraced']) - 1):+.0f}%); the probes "
              f"alone {summary(s['probes'], '.0f')} "
              f"({100 * (med(s['probes']) / med(s['untraced']) - 1):+.0f}%)")
    if "floor" in result:
        f = result["floor"]
        print(f"kernel floor per exchange: none {summary(f['none'], '.2f')} us, empty programs "
              f"{summary(f['empty'], '.2f')} us, two raw tracepoints doing the least "
              f"{summary(f['raw'], '.2f')} us, ours {summary(f['ours'], '.2f')} us "
              f"(ours - none: {med(f['ours']) - med(f['none']):.2f} us); the same over pipes: "
              f"none {summary(f['pipe_none'], '.2f')} us, ours {summary(f['pipe_ours'], '.2f')} us")
    if "programs" in result:
        p = result["programs"]
        empty_ns = statistics.mean([v["ns"] / v["runs"] for v in p["empty"].values()
                                    if v["runs"]] or [0.0])
        print(f"the programs per exchange (bpf_stats; an empty program: {empty_ns:.0f} ns a run, "
              f"the stats' own cost):")
        for name, v in sorted(p["ours"].items(), key=lambda kv: -kv[1]["ns"]):
            print(f"    {name:45s} {v['runs']:5.2f} runs, {v['ns']:7.0f} ns "
                  f"({v['ns'] / v['runs']:.0f} a run; less the empty: "
                  f"{v['ns'] - v['runs'] * empty_ns:.0f})")
        total = sum(v["ns"] for v in p["ours"].values())
        runs = sum(v["runs"] for v in p["ours"].values())
        print(f"    all: {total:.0f} ns per exchange; less the empty programs' "
              f"{runs * empty_ns:.0f}: {total - runs * empty_ns:.0f}")
    OUT.mkdir(exist_ok=True)
    result["budget"] = BUDGET
    name = f"ebpf_overhead_budget{BUDGET}.json" if BUDGET else "ebpf_overhead.json"
    (OUT / name).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
