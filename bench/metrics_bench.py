"""The RED aggregator's costs (pipeline/metrics.py), beside the OpenTelemetry Python SDK doing the
same aggregation in the same run (a Histogram with the same buckets and attributes, read by an
InMemoryMetricReader at the same interval):

- CPU per exchange at a paced 50,000 exchanges/s (batches of 1,000 every 20 ms, as the pipeline
  hands them on; route templating included for ours, routes given already templated to the SDK),
  and the share of one core that makes;
- the unpaced ceiling (exchanges/s of one core);
- memory per series (tracemalloc: what the aggregator holds for N distinct series, over N).

    .venv/bin/python bench/metrics_bench.py [--seconds 5] [--rounds 5] [--series 100000]
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from common.events import HttpEvent, ProcessInfo  # noqa: E402
from pipeline.metrics import HTTP_BOUNDS, Aggregator  # noqa: E402
from pipeline.routes import template  # noqa: E402

RATE = 50_000
BATCH = 1000


def exchanges(n: int, *, services: int = 4, routes: int = 50, seed: int = 1) -> list[HttpEvent]:
    rng = random.Random(seed)
    procs = [ProcessInfo(pid=1000 + i, comm=f"svc{i}", exe=f"/usr/bin/svc{i}", start_ns=i)
             for i in range(services)]
    out = []
    for _ in range(n):
        p = rng.choice(procs)
        r = rng.randrange(routes)
        status = rng.choice((200, 200, 200, 200, 201, 301, 404, 500))
        out.append(HttpEvent(time_ns=0, pid=p.pid, tid=p.pid, comm=p.comm, fd=7,
                             direction=rng.choice(("server", "server", "client")),
                             method=rng.choice(("GET", "GET", "POST")),
                             path=f"/api/r{r}/{rng.randrange(10**7)}?q={rng.random()}",
                             status=status, duration_ns=int(rng.expovariate(1 / 0.02) * 1e9),
                             process=p))
    return out


class OtelPeer:
    """The same aggregation through the OpenTelemetry SDK."""

    def __init__(self) -> None:
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View

        self.reader = InMemoryMetricReader()
        views = [View(instrument_name="*", aggregation=ExplicitBucketHistogramAggregation(
            list(HTTP_BOUNDS)))]
        self.provider = MeterProvider(metric_readers=[self.reader], views=views)
        meter = self.provider.get_meter("bench")
        self.server = meter.create_histogram("http.server.request.duration", unit="s")
        self.client = meter.create_histogram("http.client.request.duration", unit="s")

    def observe(self, events: list[HttpEvent]) -> None:
        for e in events:
            (self.server if e.direction == "server" else self.client).record(
                e.duration_ns / 1e9, {"service.name": e.comm, "http.request.method": e.method,
                                      "http.route": e.route,  # type: ignore[attr-defined]
                                      "http.response.status_class": f"{e.status // 100}xx"})

    def collect(self) -> None:
        self.reader.get_metrics_data()

    def close(self) -> None:
        self.provider.shutdown()


class Templated:
    """An HttpEvent's fields with its route already templated (what the SDK is given)."""

    __slots__ = ("direction", "duration_ns", "comm", "method", "route", "status")

    def __init__(self, e: HttpEvent) -> None:
        self.direction, self.duration_ns, self.comm = e.direction, e.duration_ns, e.comm
        self.method, self.status, self.route = e.method, e.status, template(e.path)


def paced(observe, collect, batches, seconds: float) -> tuple[float, float]:
    """(CPU µs per exchange, exchanges/s reached) at RATE exchanges/s for ``seconds``."""
    period = BATCH / RATE
    n = 0
    cpu0 = time.process_time()
    start = time.monotonic()
    next_collect = start + 1.0
    i = 0
    while time.monotonic() - start < seconds:
        observe(batches[i % len(batches)])
        n += BATCH
        i += 1
        now = time.monotonic()
        if now >= next_collect:
            collect()
            next_collect += 1.0
        due = start + i * period
        if due > now:
            time.sleep(due - now)
    cpu = time.process_time() - cpu0
    wall = time.monotonic() - start
    return cpu / n * 1e6, n / wall


def ceiling(observe, batches) -> float:
    t0 = time.process_time()
    for b in batches:
        observe(b)
    return len(batches) * BATCH / (time.process_time() - t0)


def memory_per_series(n: int, *, peer: bool = True) -> tuple[float, float]:
    """Bytes per series: ours, and the SDK's (keep ``n`` under the SDK's own cardinality limit
    of 2,000 per instrument, past which it folds series into its overflow one)."""
    evs = [HttpEvent(time_ns=0, pid=1, tid=1, comm="svc", fd=3, direction="server", method="GET",
                     path=f"/route{i}/x", status=200, duration_ns=1_000_000) for i in range(n)]
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    agg = Aggregator(max_series=n + 10)
    agg.observe(evs)
    agg.routes._cache.clear()  # the route cache is bounded and shared, not per series
    ours = (tracemalloc.get_traced_memory()[0] - base) / n
    tracemalloc.stop()
    assert agg.series_count() == n
    del agg
    if not peer:
        return ours, float("nan")
    peer_evs = [Templated(e) for e in evs]
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    sdk = OtelPeer()
    sdk.observe(peer_evs)
    theirs = (tracemalloc.get_traced_memory()[0] - base) / n
    tracemalloc.stop()
    sdk.close()
    return ours, theirs


def med(xs, fmt="{:.2f}") -> str:
    return f"{fmt.format(statistics.median(xs))} ({fmt.format(min(xs))} - {fmt.format(max(xs))})"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--series", type=int, default=100_000)
    args = ap.parse_args()
    evs = exchanges(200 * BATCH)
    batches = [evs[i:i + BATCH] for i in range(0, len(evs), BATCH)]
    peer_batches = [[Templated(e) for e in b] for b in batches]
    rows: dict[str, list[float]] = {k: [] for k in ("us", "core", "max", "p_us", "p_core",
                                                    "p_max")}
    for r in range(args.rounds):
        agg = Aggregator(interval=1.0)
        us, core = paced(agg.observe, agg.collect, batches, args.seconds)
        rows["us"].append(us)
        rows["core"].append(core)
        rows["max"].append(ceiling(Aggregator(interval=1.0).observe, batches) / 1000)
        peer = OtelPeer()
        us, core = paced(peer.observe, peer.collect, peer_batches, args.seconds)
        rows["p_us"].append(us)
        rows["p_core"].append(core)
        peer.close()
        peer = OtelPeer()
        rows["p_max"].append(ceiling(peer.observe, peer_batches) / 1000)
        peer.close()
        print(f"round {r + 1}: ours {rows['us'][-1]:.2f} us/exchange, "
              f"OTel SDK {rows['p_us'][-1]:.2f}", flush=True)
    print(f"\n{args.rounds} rounds of {args.seconds:.0f} s at {RATE:,} exchanges/s, "
          f"median (min - max)")
    print("| | log-shuttle aggregator | OpenTelemetry SDK histogram |")
    print("|---|---|---|")
    print(f"| CPU per exchange (us) | {med(rows['us'])} | {med(rows['p_us'])} |")
    print(f"| share of one core at 50,000/s (%) | {statistics.median(rows['us']) * RATE / 1e4:.0f} | "
          f"{statistics.median(rows['p_us']) * RATE / 1e4:.0f} |")
    print(f"| exchanges/s reached of the 50,000 asked | {med(rows['core'], '{:,.0f}')} | "
          f"{med(rows['p_core'], '{:,.0f}')} |")
    print(f"| ceiling (thousand exchanges/s of one core) | {med(rows['max'], '{:.0f}')} | "
          f"{med(rows['p_max'], '{:.0f}')} |")
    ours, theirs = memory_per_series(1900)
    print(f"| memory per series, 1,900 series (bytes) | {ours:.0f} | {theirs:.0f} |")
    ours, _ = memory_per_series(args.series, peer=False)
    print(f"| memory per series, {args.series:,} series (bytes) | {ours:.0f} | (the SDK caps "
          f"an instrument at 2,000) |")
    print(f"\nratio of CPU per exchange (SDK / ours): "
          f"{statistics.median(rows['p_us']) / statistics.median(rows['us']):.2f}")


if __name__ == "__main__":
    main()
