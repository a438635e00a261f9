"""The compiled byte loops (common/speedups/) beside their Python equivalents, in one run:

    .venv/bin/python bench/fastpath_bench.py [--rounds 15]

- render: a LogEvent of 2,000 lines of ~175 B (two kinds: an application line, an nginx access
  line with quotes to escape) as NDJSON with record ids, by outputs.ndjson.Renderer with the
  compiled fast path and without it (the same bytes: checked here too), µs per line;
- count: the newlines of a 256 KiB read (what the file input does for every run it reads), by
  common._speedups.count_lines and bytes.count, µs per 256 KiB.

Rounds alternate the two sides; medians (min - max).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import fastpath  # noqa: E402
from common.events import LogEvent  # noqa: E402
from common.identity import Identity  # noqa: E402
from outputs.ndjson import Renderer  # noqa: E402

LINES = {
    "app line": b"2026-12-06T12:00:00.123Z INFO [worker-3] GET /api/v1/orders/12345 status=200 "
                b"dur=12ms user=alice trace=4bf92f3577b34da6a3ce929d0e0e4736 bytes=5120 ok\n",
    "nginx line": b'127.0.0.1 - - [06/Dec/2026:12:00:00 +0000] "GET /api/v1/orders/12345 HTTP/1.1" '
                  b'200 612 "-" "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36"\n',
}
RUN = 2000
ID = Identity(agent="0123456789abcdef", session="89abcdef")


def timed(fn, reps: int) -> float:
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - t0) / reps


def med(xs: list[float]) -> str:
    return f"{statistics.median(xs):.3f} ({min(xs):.3f} - {max(xs):.3f})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=15)
    args = ap.parse_args()
    if not fastpath.COMPILED:
        sys.exit("common._speedups is not built (./scripts/setup builds it): nothing to compare")
    print(f"Python {sys.version.split()[0]}; {args.rounds} rounds, medians (min - max)\n")
    print("| render, µs per line | compiled | Python | ratio |")
    print("|---|---|---|---|")
    for name, line in LINES.items():
        ev = LogEvent(path="/var/log/app.log", dev=1, ino=2, offset=0, data=line * RUN,
                      lines=RUN, read_ns=1_765_000_000_000_000_000, fid=0xfeed)
        fast = Renderer(fmt="ndjson", host="web-1", identity=ID, fast=True).render
        slow = Renderer(fmt="ndjson", host="web-1", identity=ID, fast=False).render
        assert fast([ev]) == slow([ev])
        f, s = [], []
        for _ in range(args.rounds):
            f.append(timed(lambda: fast([ev]), 30) / RUN * 1e6)
            s.append(timed(lambda: slow([ev]), 30) / RUN * 1e6)
        print(f"| {name} | {med(f)} | {med(s)} | {statistics.median(s) / statistics.median(f):.1f}x |")
    data = (LINES["app line"] * 2000)[:256 * 1024]
    count_py = data.count
    f, s = [], []
    for _ in range(args.rounds):
        f.append(timed(lambda: fastpath.count_lines(data), 200) * 1e6)
        s.append(timed(lambda: count_py(b"\n"), 200) * 1e6)
    print()
    print("| count lines, µs per 256 KiB | compiled | Python | ratio |")
    print("|---|---|---|---|")
    print(f"| newlines of a read | {med(f)} | {med(s)} | {statistics.median(s) / statistics.median(f):.1f}x |")


if __name__ == "__main__":
    main()
