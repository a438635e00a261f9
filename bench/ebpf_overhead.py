"""Overhead of the eBPF input on a busy HTTP server: nginx (Debian's, one worker, a config of
its own on a loopback port) under wrk, with and without `log-shuttle --ebpf-http-tracing`,
alternating round by round in the same sitting.

Per round: nginx's requests/s as wrk measured them. Per traced round also: the agent's CPU
(every process of the agent, over the round's wall time), the events it delivered per second on
its stdout (NDJSON, to a file), and the events it counted lost (LossEvents: ring buffer full or
queue full). Prints medians with min-max and writes bench/out/ebpf_overhead.json.

    sudo .venv/bin/python bench/ebpf_overhead.py [--rounds 5] [--seconds 5] [--connections 16]

Needs root, nginx-light and wrk (./scripts/setup with LOG_SHUTTLE_SETUP_TEST=1 installs them).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
TICK = os.sysconf("SC_CLK_TCK")

NGINX_CONF = """
worker_processes {workers};
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
    keepalive_requests 1000000;
    server {{
        listen 127.0.0.1:{port};
        location = /ok {{ return 200 "ok\\n"; }}
        location / {{ return 404; }}
    }}
}}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_nginx(tmp: Path, workers: int) -> tuple[subprocess.Popen, int]:
    port = free_port()
    conf = tmp / "nginx.conf"
    conf.write_text(NGINX_CONF.format(dir=tmp, port=port, workers=workers))
    proc = subprocess.Popen(["nginx", "-p", str(tmp), "-e", str(tmp / "error.log"), "-c", str(conf)])
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc, port
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nginx did not start: {(tmp / 'error.log').read_text()}")


def wrk(port: int, seconds: int, connections: int) -> float:
    out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{seconds}s",
                          f"http://127.0.0.1:{port}/ok"], capture_output=True, text=True,
                         check=True).stdout
    return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))


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


def traced_round(port: int, seconds: int, connections: int, tmp: Path, *, nice: int = 0) -> dict:
    out_path = tmp / "agent.ndjson"
    err_path = tmp / "agent.err"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        prefix = ["nice", "-n", str(nice)] if nice else []
        agent = subprocess.Popen([*prefix, sys.executable, "-m", "agent.cli", "--ebpf-http-tracing"],
                                 stdout=out, stderr=err, env=env, cwd=ROOT,
                                 stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while "tracing with probes" not in err_path.read_text():
            if agent.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the agent did not start: {err_path.read_text()}")
            time.sleep(0.1)
        pids = descendants(agent.pid)
        cpu0, t0 = cpu_seconds(pids), time.monotonic()
        rps = wrk(port, seconds, connections)
        cpu1, t1 = cpu_seconds(pids), time.monotonic()
        # Let the agent catch up with what the kernel buffered, then measure that too.
        time.sleep(1.0)
        cpu2 = cpu_seconds(pids)
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.wait(timeout=60)
    http = lost = other = 0
    with open(out_path, "rb") as f:
        for line in f:
            rec = json.loads(line)
            kind = rec.get("type")
            if kind == "http":
                http += 1
            elif kind == "loss":
                lost += rec["count"]
            else:
                other += 1
    return {"rps": rps, "agent_cpu_pct": 100 * (cpu1 - cpu0) / (t1 - t0),
            "agent_cpu_s_incl_catch_up": cpu2 - cpu0, "http_events": http, "other_events": other,
            "http_events_per_s": http / (t1 - t0), "lost": lost}


def kernel_only_round(port: int, seconds: int, connections: int) -> float:
    """nginx under wrk with the probes attached and nobody reading their ring buffers: what the
    programs cost in the kernel alone (full ring buffers make them count and drop)."""
    sys.path.insert(0, str(ROOT))
    from inputs.ebpf.loader import ProgramOptions, Programs

    programs = Programs(["process", "tcp", "http"], ProgramOptions(self_pid=os.getpid()))
    try:
        return wrk(port, seconds, connections)
    finally:
        programs.close()


def summary(values: list[float]) -> str:
    return f"{statistics.median(values):.1f} (min {min(values):.1f}, max {max(values):.1f})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--probes-only", action="store_true",
                    help="skip the traced rounds: only without / probes attached, nobody reading")
    ap.add_argument("--nice", type=int, default=0,
                    help="run the agent at this niceness (e.g. 10: nginx first, more loss)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root: the eBPF input needs it")
    for tool in ("nginx", "wrk"):
        if shutil.which(tool) is None:
            raise SystemExit(f"needs {tool} (LOG_SHUTTLE_SETUP_TEST=1 ./scripts/setup)")
    tmp = Path(tempfile.mkdtemp(prefix="ebpf-bench-"))
    nginx, port = start_nginx(tmp, args.workers)
    base: list[float] = []
    kernel_only: list[float] = []
    traced: list[dict] = []
    try:
        wrk(port, 1, args.connections)  # warm up
        for i in range(args.rounds):
            base.append(wrk(port, args.seconds, args.connections))
            kernel_only.append(kernel_only_round(port, args.seconds, args.connections))
            if args.probes_only:
                print(f"round {i + 1}: without {base[-1]:.0f} req/s, probes only "
                      f"{kernel_only[-1]:.0f} req/s", flush=True)
                continue
            traced.append(traced_round(port, args.seconds, args.connections, tmp, nice=args.nice))
            print(f"round {i + 1}: without {base[-1]:.0f} req/s, probes only "
                  f"{kernel_only[-1]:.0f} req/s, with {traced[-1]['rps']:.0f} "
                  f"req/s, agent CPU {traced[-1]['agent_cpu_pct']:.0f}%, "
                  f"{traced[-1]['http_events_per_s']:.0f} http events/s, lost {traced[-1]['lost']}",
                  flush=True)
    finally:
        nginx.terminate()
        nginx.wait()
        shutil.rmtree(tmp, ignore_errors=True)
    if args.probes_only:
        print(f"nginx req/s without tracing: {summary(base)}")
        print(f"nginx req/s, probes only:    {summary(kernel_only)}")
        return
    with_rps = [t["rps"] for t in traced]
    result = {
        "rounds": args.rounds, "seconds": args.seconds, "connections": args.connections,
        "nginx_workers": args.workers, "agent_nice": args.nice, "cores": os.cpu_count(),
        "rps_without": base, "rps_probes_only": kernel_only, "rps_with": with_rps,
        "slowdown_pct_of_medians": 100 * (1 - statistics.median(with_rps) / statistics.median(base)),
        "traced": traced,
    }
    print(f"nginx req/s without tracing: {summary(base)}")
    print(f"nginx req/s, probes only:    {summary(kernel_only)}  (attached, nobody reading)")
    print(f"nginx req/s with tracing:    {summary(with_rps)}")
    print(f"fewer req/s (medians):       {result['slowdown_pct_of_medians']:.1f}%")
    print(f"agent CPU during the load:   {summary([t['agent_cpu_pct'] for t in traced])} % of one core")
    print(f"http events delivered/s:     {summary([t['http_events_per_s'] for t in traced])}")
    print(f"events lost:                 {sum(t['lost'] for t in traced)} in all rounds")
    OUT.mkdir(exist_ok=True)
    (OUT / "ebpf_overhead.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
