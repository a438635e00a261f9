"""The span builder's own CPU per exchange (pipeline/spans.py ``SpanBuilder.observe``), without
the rest of the pipeline: the exchanges of bench/ebpf_userspace.py's load as HttpEvents (a
load generator's client exchange on each of 32 connections to nginx, and nginx's server
exchange on the accepted end: every server span finds its parent by the connection rule),
fed in pieces of 256 as the pipeline feeds them. Median of the rounds, µs per exchange.
Spans as the pipeline makes them (their msgpack bytes, with the compiled module), or with
``--objects`` as SpanEvents.

``--memory``: what the builder holds (tracemalloc) after six minutes of an ordinary host's
exchanges (200 a second, nginx's server side, each its own path), with spans kept by age
(pipeline/spans.py EXCHANGE_KEEP_NS) and, beside it, kept by number only (the last 65,536).

    .venv/bin/python bench/span_builder.py [--requests 20000] [--rounds 5] [--objects] [--memory]
"""

from __future__ import annotations

import argparse
import gc
import statistics
import tracemalloc
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common.events import ConnEvent, HttpEvent, ProcessInfo  # noqa: E402
from pipeline import spans as spans_module  # noqa: E402
from pipeline.spans import PACKED, SpanBuilder  # noqa: E402

CONNECTIONS = 32
SERVER = ProcessInfo(pid=100, comm="nginx", exe="/usr/sbin/nginx", cmdline=["nginx"], start_ns=1,
                     how="event")
CLIENT = ProcessInfo(pid=200, comm="loadgen", exe="/usr/local/bin/loadgen", cmdline=["loadgen"],
                     start_ns=1, how="event")


def events(requests: int) -> list:
    out: list = []
    for c in range(CONNECTIONS):
        out.append(ConnEvent("connect", 1, 200, 200, "loadgen", 4, "127.0.0.1", 40000 + c,
                             "127.0.0.1", 8080, fd=3 + c))
        out.append(ConnEvent("accept", 1, 100, 100, "nginx", 4, "127.0.0.1", 8080, "127.0.0.1",
                             40000 + c, fd=10 + c))
    t = 10**12
    for i in range(requests):
        t += 200_000
        c = i % CONNECTIONS
        out.append(HttpEvent(t, 200, 200, "loadgen", 3 + c, "client", "GET", "/ok", 200, 80_000,
                             "127.0.0.1", 8080, "HTTP/1.1", CLIENT, t))
        out.append(HttpEvent(t + 20_000, 100, 100, "nginx", 10 + c, "server", "GET", "/ok", 200,
                             40_000, "127.0.0.1", 40000 + c, "HTTP/1.1", SERVER, t + 20_000))
    return out


def memory() -> None:
    rate, seconds = 200, 360
    for keep, how in ((spans_module.EXCHANGE_KEEP_NS, "by age"), (10**18, "by number only")):
        spans_module.EXCHANGE_KEEP_NS = keep
        builder = SpanBuilder(packed=True)
        tracemalloc.start()
        t = 10**12
        for i in range(0, rate * seconds, 100):  # the pipeline's messages: ~100 exchanges
            batch = []
            for _ in range(100):
                t += 10**9 // rate
                batch.append(HttpEvent(t, 100, 100, "nginx", 10, "server", "GET", f"/item/{i}",
                                       200, 40_000, "127.0.0.1", 40000, "HTTP/1.1", SERVER, t))
            builder.observe(batch, 0.0)
            del batch
        held = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        print(f"kept {how}: {len(builder.exchanges)} spans, {held / 2**20:.1f} MiB held (their "
              f"exchanges with them) after {seconds} s of {rate} exchanges a second")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=20000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--objects", action="store_true", help="SpanEvents, not their bytes")
    ap.add_argument("--memory", action="store_true", help="what it holds at an ordinary rate")
    args = ap.parse_args()
    if args.memory:
        return memory()
    evs = events(args.requests)
    gc.collect()
    gc.freeze()  # as agent/child.py does before a component runs
    results = []
    for _ in range(args.rounds):
        builder = SpanBuilder(packed=not args.objects)
        t0 = time.process_time()
        spans = 0
        for i in range(0, len(evs), 256):
            spans += len(builder.observe(evs[i:i + 256], 0.0))
        results.append((time.process_time() - t0) / (2 * args.requests) * 1e6)
        assert spans == 2 * args.requests, spans
    made = "SpanEvents" if args.objects or not PACKED else "their bytes"
    print(f"SpanBuilder.observe ({made}): {statistics.median(results):.2f} µs per exchange "
          f"({min(results):.2f}-{max(results):.2f}), {args.rounds} rounds of "
          f"{2 * args.requests} exchanges")


if __name__ == "__main__":
    main()
