"""A known load of exchanges for the metric sinks' tests: the aggregator's real points, and what
they must add up to."""

from __future__ import annotations

import random
from collections import Counter

from common.events import HttpEvent, MetricEvent
from pipeline.metrics import Aggregator

S = 1_000_000_000
ROUTES = [("/users/{}", 200), ("/orders/{}/items", 200), ("/missing/{}", 404), ("/boom/{}", 500)]


def load(n: int = 1000, *, seed: int = 7, start: int | None = None, intervals: int = 3
         ) -> tuple[list[list[MetricEvent]], Counter, dict]:
    """``n`` exchanges over ``intervals`` intervals of 10 s: the points of each interval, the
    count per (route, status class), and the durations per (route, status class)."""
    rng = random.Random(seed)
    t = [start or (1_700_000_000 * S + 2 * S)]
    agg = Aggregator(interval=10, clock=lambda: t[0])
    counts: Counter = Counter()
    durations: dict = {}
    out = []
    per = n // intervals
    for k in range(intervals):
        for i in range(per if k < intervals - 1 else n - per * (intervals - 1)):
            path, status = rng.choice(ROUTES)
            ms = rng.uniform(0.1, 40.0)
            ev = HttpEvent(time_ns=t[0], pid=100, tid=100, comm="nginx", fd=5,
                           direction="server", method="GET",
                           path=path.format(rng.randrange(10**6)), status=status,
                           duration_ns=int(ms * 1e6))
            agg.observe([ev])
            key = (path.replace("{}", "{id}"), f"{status // 100}xx")
            counts[key] += 1
            durations.setdefault(key, []).append(ev.duration_ns / 1e9)
        t[0] = agg.next_ns
        out.append(agg.collect())
    return out, counts, durations
