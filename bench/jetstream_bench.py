"""File -> JetStream (a 3-node cluster on loopback, stream with 3 replicas), beside file -> TCP
in the same sitting, and beside a bare nats-py publisher sending the same lines (one message
per line, each with its Nats-Msg-Id, acks awaited, as the agent does).

Per round and run: lines/s (from start until the stream holds every line, or the TCP sink has
every line), CPU µs per line of the shipper (every agent process summed; the bare publisher's
own process), its peak memory (VmHWM summed), and the CPU the three nats-servers spent. Rounds
alternate the three runs; medians with min-max.

    .venv/bin/python bench/jetstream_bench.py [--lines 200000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
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
sys.path.insert(0, str(ROOT))

from bench.e2e_throughput import cpu_seconds, make_log, proc_tree, status_kib  # noqa: E402
from tests.nats_cluster import NatsCluster, stream_state  # noqa: E402

OUT = ROOT / "bench" / "out"

BARE = r"""
import asyncio, os, sys, time
import nats
async def main(path, urls, stream):
    nc = await nats.connect(servers=urls.split(","))
    js = nc.jetstream(publish_async_max_pending=4096)
    futs = []
    with open(path, "rb") as f:
        off = 0
        for line in f:
            futs.append(await js.publish_async(f"bare.{stream}", line[:-1],
                                               headers={"Nats-Msg-Id": f"bare.{off}"}))
            off += len(line)
            if len(futs) >= 4096:
                await asyncio.gather(*futs)
                futs = []
    await asyncio.gather(*futs)
    await nc.close()
asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3]))
"""


def agent_env(state: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOG_SHUTTLE_")}
    env["PYTHONPATH"] = str(ROOT)
    env["LOG_SHUTTLE_AGENT__STATE_DIR"] = state
    return env


def watch(proc: subprocess.Popen, done) -> dict:
    """Sample the process tree until ``done()``; CPU and peak memory of the tree."""
    t0 = time.perf_counter()
    peak: dict[int, int] = {}
    cpu: dict[int, float] = {}
    while True:
        time.sleep(0.1)
        for pid in proc_tree(proc.pid):
            try:
                peak[pid] = status_kib(pid, "VmHWM")
                cpu[pid] = cpu_seconds(pid)
            except OSError:
                pass
        if done():
            break
        if proc.poll() is not None:
            raise RuntimeError(f"exited {proc.returncode}")
    elapsed = time.perf_counter() - t0
    for pid in proc_tree(proc.pid):
        try:
            cpu[pid] = cpu_seconds(pid)
        except OSError:
            pass
    return {"seconds": elapsed, "cpu": sum(cpu.values()), "peak_mib": sum(peak.values()) / 1024}


def nats_cpu(cluster: NatsCluster) -> float:
    return sum(cpu_seconds(p.pid) for p in cluster.procs if p is not None)


def messages(cluster: NatsCluster, stream: str) -> int:
    try:
        return asyncio.run(stream_state(cluster.urls, stream))["messages"]
    except Exception:  # noqa: BLE001 - not created yet
        return 0


def run_jetstream(log: Path, lines: int, cluster: NatsCluster, stream: str, tmp: Path) -> dict:
    cfg = tmp / f"{stream}.toml"
    cfg.write_text("[[inputs.file]]\n" + f"paths = [{json.dumps(str(log))}]\n"
                   + "[[outputs.jetstream]]\n"
                   + f"servers = {json.dumps(cluster.urls)}\nstream = \"{stream}\"\n"
                   + f"subject = \"{stream.lower()}.{{host}}.{{kind}}\"\n"
                   + "create_stream = true\nreplicas = 3\n")
    n0 = nats_cpu(cluster)
    proc = subprocess.Popen([sys.executable, "-m", "agent.cli", "--config", str(cfg),
                             "--from-beginning"], env=agent_env(tempfile.mkdtemp(dir=tmp)),
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        result = watch(proc, lambda: messages(cluster, stream) >= lines)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    result["server_cpu"] = nats_cpu(cluster) - n0
    return result


def run_bare(log: Path, lines: int, cluster: NatsCluster, stream: str) -> dict:
    asyncio.run(_add_stream(cluster.urls, stream))
    n0 = nats_cpu(cluster)
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", BARE, str(log), ",".join(cluster.urls),
                             stream])
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - t0
    assert os.waitstatus_to_exitcode(status) == 0
    assert messages(cluster, stream) == lines
    return {"seconds": elapsed, "cpu": usage.ru_utime + usage.ru_stime,
            "peak_mib": usage.ru_maxrss / 1024, "server_cpu": nats_cpu(cluster) - n0}


async def _add_stream(urls, stream):
    import nats
    from nats.js.api import StreamConfig

    nc = await nats.connect(servers=urls)
    try:
        await nc.jetstream().add_stream(StreamConfig(name=stream, subjects=[f"bare.{stream}"],
                                                     num_replicas=3))
    finally:
        await nc.close()


def tcp_sink(lines: int) -> tuple[int, threading.Event]:
    """A loopback receiver that counts newlines and sets the event at ``lines``."""
    srv = socket.create_server(("127.0.0.1", 0))
    done = threading.Event()

    def serve():
        seen = 0
        conn = None
        while seen < lines:
            conn, _ = srv.accept()
            with conn:
                while seen < lines:
                    data = conn.recv(1 << 20)
                    if not data:
                        break
                    seen += data.count(b"\n")
        done.set()
        srv.close()
    threading.Thread(target=serve, daemon=True).start()
    return srv.getsockname()[1], done


def run_tcp(log: Path, lines: int, tmp: Path) -> dict:
    port, done = tcp_sink(lines)
    proc = subprocess.Popen([sys.executable, "-m", "agent.cli", "--input-file", str(log),
                             "--from-beginning", "--output-tcp", f"127.0.0.1:{port}"],
                            env=agent_env(tempfile.mkdtemp(dir=tmp)), cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        return watch(proc, done.is_set)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)


def summary(name: str, rounds: list[dict], lines: int) -> str:
    def fmt(xs, spec):
        return f"{statistics.median(xs):{spec}} ({min(xs):{spec}}-{max(xs):{spec}})"
    rate = [lines / r["seconds"] for r in rounds]
    cpu = [r["cpu"] / lines * 1e6 for r in rounds]
    mem = [r["peak_mib"] for r in rounds]
    server = [r.get("server_cpu", 0) / lines * 1e6 for r in rounds]
    return (f"| {name} | {fmt(rate, ',.0f')} | {fmt(cpu, '.1f')} | {fmt(mem, '.0f')} | "
            f"{fmt(server, '.1f') if any(server) else '-'} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lines", type=int, default=200_000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    log = OUT / f"e2e-{args.lines}.log"
    make_log(log, args.lines)
    print(f"input: {args.lines:,} lines, {log.stat().st_size / 2**20:.1f} MiB")
    runs: dict[str, list[dict]] = {"jet": [], "bare": [], "tcp": []}
    with tempfile.TemporaryDirectory(prefix="jet-bench-") as tmpdir:
        tmp = Path(tmpdir)
        with NatsCluster(tmp / "nats", nodes=3) as cluster:
            for i in range(args.rounds):
                runs["jet"].append(run_jetstream(log, args.lines, cluster, f"AGENT{i}", tmp))
                runs["bare"].append(run_bare(log, args.lines, cluster, f"BARE{i}"))
                runs["tcp"].append(run_tcp(log, args.lines, tmp))
                print(f"round {i + 1}: " + ", ".join(
                    f"{k} {args.lines / v[-1]['seconds']:,.0f} lines/s" for k, v in runs.items()))
    print()
    print("| run | lines/s | CPU µs/line (shipper) | peak memory MiB "
          "| nats-server CPU µs/line (3 nodes) |")
    print("|---|---|---|---|---|")
    print(summary("log-shuttle file -> JetStream (R3)", runs["jet"], args.lines))
    print(summary("bare nats-py publish_async, same lines (R3)", runs["bare"], args.lines))
    print(summary("log-shuttle file -> TCP (NDJSON)", runs["tcp"], args.lines))


if __name__ == "__main__":
    main()
