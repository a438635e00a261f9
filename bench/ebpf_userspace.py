"""The agent's user-space CPU per HTTP request, stage by stage, without the kernel's noise: the
records a traced request leaves in the http probe's ring buffer (one kernel-paired exchange
on the server's side, one on the client's, as bench/ebpf_overhead.py's nginx and load generator
make them), made up in their bpf/events.h layout, then put through the real code of each
process in turn, in this one process:

- input ebpf: ``Translator.feed_records`` and the batch's encoding, in the input's batch size
  (the ring buffer's reading is left out: one slice per record);
- pipeline: the real ``Pipeline`` (pipeline.runner.build, the agent's defaults: process table,
  spans, log join) reading those messages from a real shared-memory queue and writing its
  batches to another;
- output stdout: the real ``OutputRunner`` and ``StdoutSink`` reading them, writing to
  /dev/null.

CPU is this process's (time.process_time), per request (two exchanges), median of the rounds.
bench/ebpf_overhead.py measures the same processes under real load; this one is for comparing
changes to them. Here the caches stay warm; live, each time the agent yields the CPU
(common.cpu.relax) the traced server and the load generator run and evict its memory from
them. ``--cold MIB`` does the same to the caches at each yield (it copies MIB MiB: a 24 MiB
copy took the pipeline from ~6-8 to ~17 µs per request, about what it costs live at 5,000
requests/s); the copy's own CPU is left out of the stages'.

    .venv/bin/python bench/ebpf_userspace.py [--requests 20000] [--rounds 5] [--cold MIB]
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import socket
import statistics
import struct
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from common import cpu  # noqa: E402
from common.component import Context, Stop  # noqa: E402
from common.events import Batch, BatchCodec  # noqa: E402
from common.shmqueue import Consumer, Producer, ShmQueue  # noqa: E402
from inputs.ebpf.config import EbpfInputConfig  # noqa: E402
from inputs.ebpf.layouts import (CONN, EV_ACCEPT, EV_CONNECT, EV_HTTP_EXCHANGE, HEADER,  # noqa: E402
                                 HTTP_EXCHANGE, HTTP_OP_READ, HTTP_OP_WRITE)
from inputs.ebpf.translate import Translator, boot_offset_ns  # noqa: E402
from outputs.stdout import StdoutSink  # noqa: E402
from outputs.runner import OutputRunner  # noqa: E402
from outputs.stdout_config import StdoutOutputConfig  # noqa: E402
from pipeline.config import PipelineConfig  # noqa: E402
from pipeline.runner import build as build_pipeline  # noqa: E402

SWEPT = [0.0]
"""CPU seconds spent sweeping the caches (``--cold``), left out of the stages' times."""
CONNECTIONS = 32
PORT = 8080
REQUEST = b"GET /ok HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
STATUS = b"HTTP/1.1 200 OK\r\n"[:16]
QUEUE = 256 << 20


def header(kind: int, pid: int, tid: int, ts: int, comm: bytes) -> bytes:
    return HEADER.pack(kind, pid, tid, 0, ts, comm)


def conn(kind: int, pid: int, fd: int, ts: int, comm: bytes, sport: int, dport: int) -> bytes:
    lo = socket.inet_aton("127.0.0.1") + bytes(12)
    return header(kind, pid, pid, ts, comm) + CONN.pack(fd, socket.AF_INET, sport, dport, 0, 0,
                                                        lo, lo, 0)


def exchange(pid: int, fd: int, op: int, ts: int, resp_ts: int, comm: bytes) -> bytes:
    # As the http probe sends it: the fixed part, then only the request's bytes.
    return header(EV_HTTP_EXCHANGE, pid, pid, ts, comm) + HTTP_EXCHANGE.pack(
        fd, op, resp_ts, len(REQUEST), len(REQUEST), 200, 0, STATUS) + REQUEST


def records(requests: int, server: int, client: int) -> list[list[bytes]]:
    """The ring buffer's records, in rounds of what 10 ms of 5,000 requests/s leave."""
    t = time.clock_gettime_ns(time.CLOCK_BOOTTIME) - requests * 200_000
    first = []
    for c in range(CONNECTIONS):
        cport = 40000 + c
        first.append(conn(EV_CONNECT, client, 3 + c, t, b"loadgen", cport, PORT))
        first.append(conn(EV_ACCEPT, server, 10 + c, t + 1000, b"nginx", PORT, cport))
    rounds, cur = [first], []
    for i in range(requests):
        t += 200_000
        c = i % CONNECTIONS
        cur.append(exchange(server, 10 + c, HTTP_OP_READ, t + 20_000, t + 60_000, b"nginx"))
        cur.append(exchange(client, 3 + c, HTTP_OP_WRITE, t, t + 80_000, b"loadgen"))
        if len(cur) >= 100:
            rounds.append(cur)
            cur = []
    if cur:
        rounds.append(cur)
    return rounds


def queue(name: str) -> tuple[Producer, Consumer, ShmQueue]:
    q = ShmQueue.create(name=f"bench-{os.getpid()}-{name}", capacity=QUEUE)
    return Producer(q), Consumer(q), q


def swept() -> float:
    """The sweeping's CPU since the last call (a stage's, when called at its start and end)."""
    out, SWEPT[0] = SWEPT[0], 0.0
    return out


def cold_yields(mib: int) -> None:
    """Every yield of the agent's loops (common.cpu.relax) first sweeps ``mib`` MiB through
    the caches, as the processes the agent yields to do live."""
    src, dst = bytearray(mib << 20), bytearray(mib << 20)
    real = cpu._yield

    def sweep_then_yield() -> None:
        t0 = time.process_time()
        dst[:] = src
        SWEPT[0] += time.process_time() - t0
        real()

    cpu._yield = sweep_then_yield


def one_round(requests: int, server: int, client: int) -> dict[str, float]:
    log = logging.getLogger("bench")
    rounds = records(requests, server, client)
    p_in, c_in, q_in = queue("in")
    p_out, c_out, q_out = queue("out")
    try:
        cfg = EbpfInputConfig()
        codec = BatchCodec()
        tr = Translator(packed=True)  # as the input's
        out: list = []
        swept()
        t0 = time.process_time()
        for recs in rounds:
            tr.offset_ns = boot_offset_ns()
            events, _n, _err = tr.feed_records(recs)
            out.extend(events)
            while len(out) >= cfg.send_events:
                p_in.put(codec.encode(Batch(events=out[:cfg.send_events], source="input ebpf")))
                out = out[cfg.send_events:]
        if out:
            p_in.put(codec.encode(Batch(events=out, source="input ebpf")))
        t_input = time.process_time() - t0 - swept()
        p_in.close()

        ctx = Context(name="pipeline", config=PipelineConfig(), host="bench", stop=Stop(),
                      consumers=[c_in], producers=[p_out], log=log)
        t0 = time.process_time()
        build_pipeline(ctx).run()
        t_pipeline = time.process_time() - t0 - swept()
        p_out.close()

        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            octx = Context(name="output stdout", config=StdoutOutputConfig(), host="bench",
                           stop=Stop(), consumers=[c_out], log=log)
            runner = OutputRunner(octx, StdoutSink(fmt="ndjson", host="bench", fd=devnull))
            t0 = time.process_time()
            runner.run()
            t_output = time.process_time() - t0 - swept()
        finally:
            os.close(devnull)
    finally:
        for q in (q_in, q_out):
            q.destroy()
    us = 1e6 / requests
    return {"input": t_input * us, "pipeline": t_pipeline * us, "output": t_output * us}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=20000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--cold", type=int, default=0, metavar="MIB",
                    help="sweep MIB MiB through the caches at each yield, as live")
    args = ap.parse_args()
    if args.cold:
        cold_yields(args.cold)
    client = subprocess.Popen(["sleep", "600"])  # a live process for the client's pid
    gc.collect()
    gc.freeze()  # as agent/child.py does before a component runs
    try:
        time.sleep(0.2)
        results = [one_round(args.requests, os.getpid(), client.pid)
                   for _ in range(args.rounds)]
    finally:
        client.kill()
    print(f"user-space CPU per request (two exchanges), {args.requests} requests, "
          f"{args.rounds} rounds{f', caches swept ({args.cold} MiB) at each yield' if args.cold else ''}: "
          "median (min-max) µs")
    total = []
    for stage in ("input", "pipeline", "output"):
        xs = [r[stage] for r in results]
        print(f"  {stage:9s} {statistics.median(xs):6.1f} ({min(xs):.1f}-{max(xs):.1f})")
    total = [sum(r.values()) for r in results]
    print(f"  {'all':9s} {statistics.median(total):6.1f} ({min(total):.1f}-{max(total):.1f})")


if __name__ == "__main__":
    main()
