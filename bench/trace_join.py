"""Cost and latency of spans and of the log join: nginx (one worker, its access log tailed by the
agent) under a fixed request rate (bench/loadgen.c, open loop), with `log-shuttle
--ebpf-http-tracing --input-file access.log` in three set-ups, alternated round by round in one
sitting:

- off:   spans and the join off (the eBPF input's exchanges and the file's lines, as before);
- spans: spans on, the join off (no logwrite probe);
- join:  spans and the join on (the default).

Per round: the agent's CPU (its processes' utime+stime, /proc/PID/stat) and the BPF programs'
run time (kernel.bpf_stats_enabled) per request (one request = one access-log line and two
exchanges, nginx's and the load generator's), the share of access-log lines joined, and how long
joined lines waited in the pipeline for their join (p50/p99, the pipeline's own measure).

Then, in this process and without a kernel (``micro``, no noise from the host's other
traffic, which the eBPF input sees too): the pipeline's own cost per exchange of building spans,
and per line of the join (its write, its exchange's span looked up, the line's ids), on
made-up events shaped like the nginx run's.

Prints medians with min-max and writes bench/out/trace_join.json.

    sudo .venv/bin/python bench/trace_join.py [--rounds 3] [--seconds 5] [--rate 2000]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ebpf_overhead import (OUT, ROOT, build, cpu_seconds, descendants,  # noqa: E402
                           load, start_nginx)


def progs() -> dict[int, float]:
    """Loaded BPF programs: id -> run_time_ns (kernel.bpf_stats_enabled)."""
    out = subprocess.run(["bpftool", "prog", "show", "-j"], capture_output=True, text=True)
    if out.returncode != 0:
        return {}
    return {p["id"]: float(p.get("run_time_ns", 0)) for p in json.loads(out.stdout)}

SETUPS = {
    "off": {"LOG_SHUTTLE_PIPELINE__SPANS__ENABLED": "false",
            "LOG_SHUTTLE_PIPELINE__JOIN__ENABLED": "false",
            "LOG_SHUTTLE_INPUTS__EBPF__LOG_JOIN": "false"},
    "spans": {"LOG_SHUTTLE_PIPELINE__JOIN__ENABLED": "false",
              "LOG_SHUTTLE_INPUTS__EBPF__LOG_JOIN": "false"},
    "join": {},
}
WAIT = re.compile(r"log join wait: p50 ([\d.]+) ms, p99 ([\d.]+) ms")


def nginx_with_log(tmp: Path) -> tuple[subprocess.Popen, int, Path]:
    log = tmp / "access.log"
    proc, port = start_nginx(tmp)
    proc.terminate()
    proc.wait()
    conf = (tmp / "nginx.conf").read_text().replace(
        "access_log off;", f"access_log {log};")
    (tmp / "nginx.conf").write_text(conf)
    proc = subprocess.Popen(["taskset", "-c", "0", "nginx", "-p", str(tmp), "-e",
                             str(tmp / "error.log"), "-c", str(tmp / "nginx.conf")])
    time.sleep(0.5)
    return proc, port, log


def one_round(setup: str, loadgen: str, port: int, log: Path, tmp: Path, args) -> dict:
    out_path, err_path = tmp / f"agent-{setup}.ndjson", tmp / f"agent-{setup}.err"
    state = tempfile.mkdtemp(prefix="trace-bench-state-")
    before = set(progs())
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOG_SHUTTLE_")}
    env.update(PYTHONPATH=str(ROOT), LOG_SHUTTLE_AGENT__STATE_DIR=state,
               LOG_SHUTTLE_INPUTS__EBPF__MAX_EXCHANGES_PER_SECOND="0",  # every exchange
               **SETUPS[setup])
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "agent.cli", "--ebpf-http-tracing",
                                 "--input-file", str(log), "--log-level", "debug"],
                                stdout=out, stderr=err, env=env, cwd=ROOT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 90
    while "tracing with probes" not in err_path.read_text():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"the agent did not start: {err_path.read_text()}")
        time.sleep(0.1)
    load(loadgen, port, 200, 1.0, 4)  # warm-up: the log file is followed from its first write
    time.sleep(1.0)
    pids = descendants(proc.pid)
    ours = set(progs()) - before  # the programs this agent loaded (the host is shared)
    lines0 = out_path.read_bytes().count(str(log).encode())
    cpu0 = cpu_seconds(pids)
    bpf0 = sum(v for k, v in progs().items() if k in ours)
    result = load(loadgen, port, args.rate, args.seconds, 8)
    time.sleep(1.5)  # what the agent does for this round's events after the load
    cpu1 = cpu_seconds(pids)
    bpf1 = sum(v for k, v in progs().items() if k in ours)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    data = out_path.read_bytes()
    lines = [ln for ln in data.splitlines() if b'"path":"' + str(log).encode() in ln][lines0:]
    joined = sum(b'"trace_id"' in ln for ln in lines)
    done = max(1, result["done"])
    m = WAIT.search(err_path.read_text())
    lost = sum(json.loads(ln)["count"] for ln in data.splitlines() if b'"type":"loss"' in ln)
    return {"setup": setup, "requests": result["done"], "rate": result.get("rate"), "lost": lost,
            "agent_us_per_req": 1e6 * (cpu1 - cpu0) / done,
            "bpf_us_per_req": (bpf1 - bpf0) / 1e3 / done,
            "lines": len(lines), "joined_share": joined / max(1, len(lines)),
            "wait_p50_ms": float(m.group(1)) if m else None,
            "wait_p99_ms": float(m.group(2)) if m else None}


def micro(n: int = 50_000, rounds: int = 5) -> dict:
    """µs per exchange (spans) and per line (join) in the pipeline's code, made-up events."""
    sys.path.insert(0, str(ROOT))
    from common.events import HttpEvent, LogEvent, LogWriteEvent
    from pipeline.logjoin import JoinConfig, LogJoiner
    from pipeline.spans import SpanBuilder

    t0 = 1_700_000_000 * 10**9
    exchanges = [HttpEvent(time_ns=t0 + i * 1000, pid=10, tid=10, comm="nginx", fd=4 + i % 8,
                           direction="server", method="GET", path=f"/ok?n={i}", status=200,
                           duration_ns=50_000, peer_addr="127.0.0.1", peer_port=40000 + i % 8,
                           boot_ns=10**9 + i * 1000) for i in range(n)]
    texts = [b"127.0.0.1 - - [02/Dec/2026:18:00:00 +0000] \"GET /ok?n=%d HTTP/1.1\" 200 3 "
             b"\"-\" \"loadgen\"" % i for i in range(n)]
    writes = [LogWriteEvent(time_ns=t0 + i * 1000 + 60_000, pid=10, tid=10, fd=3, dev=1, ino=2,
                            length=len(texts[i]) + 1, head=(texts[i] + b"\n")[:128],
                            boot_ns=10**9 + i * 1000 + 60_000, req_boot_ns=10**9 + i * 1000,
                            req_fd=4 + i % 8, resp_boot_ns=10**9 + i * 1000 + 50_000)
              for i in range(n)]
    runs = [LogEvent(path="/a.log", dev=1, ino=2, offset=0, data=b"\n".join(texts[k:k + 100])
                     + b"\n", lines=len(texts[k:k + 100]), read_ns=t0 + n * 1000 + 10**6)
            for k in range(0, n, 100)]
    span_us, join_us, joined = [], [], 0
    for _ in range(rounds):
        spans = SpanBuilder(packed=True)  # as the pipeline makes them
        t = time.perf_counter()
        for k in range(0, n, 1000):
            spans.observe(exchanges[k:k + 1000], 0.0)
        span_us.append(1e6 * (time.perf_counter() - t) / n)
        joiner = LogJoiner(spans, JoinConfig())
        t = time.perf_counter()
        for k in range(0, n, 1000):
            joiner.feed(writes[k:k + 1000], 0.0)
        for ev in runs:
            joiner.feed([ev], 0.0)
        join_us.append(1e6 * (time.perf_counter() - t) / n)
        joined = joiner.stats.joined
    return {"spans_us_per_exchange": statistics.median(span_us),
            "join_us_per_line": statistics.median(join_us), "joined": joined, "lines": n}


def med(rows: list[dict], key: str) -> str:
    vals = [r[key] for r in rows if r[key] is not None]
    if not vals:
        return "-"
    return f"{statistics.median(vals):.2f} ({min(vals):.2f}-{max(vals):.2f})"


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--rate", type=int, default=2000)
    p.add_argument("--micro-only", action="store_true", help="only the in-process part")
    args = p.parse_args()
    m = micro()
    print(f"micro: spans {m['spans_us_per_exchange']:.2f} us per exchange, join "
          f"{m['join_us_per_line']:.2f} us per line (write + line), {m['joined']}/{m['lines']} "
          f"joined")
    if args.micro_only:
        return
    if os.geteuid() != 0:
        raise SystemExit("needs root (the eBPF input)")
    loadgen = build("loadgen")
    stats = Path("/proc/sys/kernel/bpf_stats_enabled")
    before = stats.read_text().strip()
    stats.write_text("1")
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="trace-bench-") as d:
        tmp = Path(d)
        nginx, port, log = nginx_with_log(tmp)
        try:
            for r in range(args.rounds):
                for setup in SETUPS:
                    row = one_round(setup, loadgen, port, log, tmp, args)
                    print(json.dumps(row), flush=True)
                    rows.append(row)
        finally:
            nginx.terminate()
            nginx.wait()
            stats.write_text(before)
    print(f"\n{args.rate} req/s for {args.seconds} s, {args.rounds} rounds; medians (min-max)")
    print(f"{'setup':6} {'agent us/req':>22} {'bpf us/req':>20} {'joined':>20} "
          f"{'wait p50 ms':>20} {'wait p99 ms':>20}")
    summary = {}
    for setup in SETUPS:
        rs = [r for r in rows if r["setup"] == setup]
        summary[setup] = {k: statistics.median([r[k] for r in rs if r[k] is not None] or [0])
                          for k in ("agent_us_per_req", "bpf_us_per_req", "joined_share",
                                    "wait_p50_ms", "wait_p99_ms")}
        print(f"{setup:6} {med(rs, 'agent_us_per_req'):>22} {med(rs, 'bpf_us_per_req'):>20} "
              f"{med(rs, 'joined_share'):>20} {med(rs, 'wait_p50_ms'):>20} "
              f"{med(rs, 'wait_p99_ms'):>20}")
    OUT.mkdir(exist_ok=True)
    (OUT / "trace_join.json").write_text(json.dumps({"rows": rows, "summary": summary,
                                                    "micro": m,
                                                    "rate": args.rate,
                                                    "seconds": args.seconds}, indent=1))


if __name__ == "__main__":
    main()
