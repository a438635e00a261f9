"""Throughput of common.shmqueue against os.pipe, one process to another.

A forked child puts N messages of --size bytes (64 KiB: a batch) and the parent reads them
back whole, first through a ShmQueue, then through a pipe carrying length-prefixed messages (the
child writes header and payload in one writev, the parent reads through a buffered reader),
alternating which goes first, for --rounds rounds each. The ring and the pipe buffer have the
same size (--capacity; the pipe's is set with F_SETPIPE_SZ). Prints medians and min-max.

    .venv/bin/python bench/queue_bench.py [--messages N | --seconds S] [--rounds R] [--pin]

This is not a test: numbers depend on the machine and what else runs on it.
"""

from __future__ import annotations

import argparse
import fcntl
import io
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common.shmqueue import ShmQueue  # noqa: E402

MIB = 1024 * 1024


def _fork(child: Callable[[], None], *, cpu: int | None) -> int:
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            if cpu is not None:
                os.sched_setaffinity(0, {cpu})
            child()
            code = 0
        finally:
            os._exit(code)
    return pid


def _reap(pid: int) -> None:
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"the producer failed (wait status {status:#x})")


def _timed_run(start_child: Callable[[int], int], consume: Callable[[], None]) -> float:
    """Fork the producer (it waits for a go byte), then time from go to the last message read."""
    go_r, go_w = os.pipe()
    pid = start_child(go_r)
    os.close(go_r)
    t0 = time.perf_counter()
    os.write(go_w, b"g")
    consume()
    elapsed = time.perf_counter() - t0
    os.close(go_w)
    _reap(pid)
    return elapsed


def run_shmqueue(*, messages: int, payload: bytes, capacity: int, cpus: tuple[int, int] | None) -> float:
    queue = ShmQueue.create(name="bench", capacity=capacity)
    try:
        def produce(go: int) -> None:
            producer = queue.producer()
            os.read(go, 1)
            for _ in range(messages):
                producer.put(payload)

        def consume() -> None:
            consumer = queue.consumer()
            size = len(payload)
            if consumer.get(timeout=30.0) != payload:
                raise SystemExit("shmqueue: the first message is not what was put")
            for _ in range(messages - 1):
                if len(consumer.get(timeout=30.0)) != size:
                    raise SystemExit("shmqueue: wrong message size")

        return _timed_run(lambda go: _fork(lambda: produce(go), cpu=cpus and cpus[1]), consume)
    finally:
        queue.destroy()


def run_pipe(*, messages: int, payload: bytes, capacity: int, cpus: tuple[int, int] | None) -> float:
    read_fd, write_fd = os.pipe()
    try:
        try:
            fcntl.fcntl(write_fd, fcntl.F_SETPIPE_SZ, capacity)
        except OSError:
            pass  # above /proc/sys/fs/pipe-max-size without privilege: keep the default

        def produce(go: int) -> None:
            os.close(read_fd)
            header = len(payload).to_bytes(8, "little")
            os.read(go, 1)
            for _ in range(messages):
                sent = os.writev(write_fd, [header, payload])
                if sent != len(header) + len(payload):
                    raise SystemExit("pipe: short write")

        def consume() -> None:
            reader = io.open(read_fd, "rb", buffering=capacity, closefd=False)
            size = len(payload)
            if reader.read(int.from_bytes(reader.read(8), "little")) != payload:
                raise SystemExit("pipe: the first message is not what was written")
            for _ in range(messages - 1):
                n = int.from_bytes(reader.read(8), "little")
                if len(reader.read(n)) != size:
                    raise SystemExit("pipe: wrong message size")

        return _timed_run(lambda go: _fork(lambda: produce(go), cpu=cpus and cpus[1]), consume)
    finally:
        os.close(read_fd)
        os.close(write_fd)


def _cells(values: list[float]) -> str:
    return f"{statistics.median(values):>10,.0f} {min(values):>10,.0f} {max(values):>10,.0f}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, help="messages per round (default: from --seconds)")
    parser.add_argument("--seconds", type=float, default=1.0,
                        help="aim for rounds of about this long for the slower transport (default 1)")
    parser.add_argument("--size", type=int, default=64 * 1024, help="message size in bytes (default 65536)")
    parser.add_argument("--capacity", type=int, default=MIB, help="ring and pipe buffer size (default 1 MiB)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of each transport (default 5, at least 3)")
    parser.add_argument("--pin", action="store_true", help="pin consumer and producer to CPUs 0 and 1")
    args = parser.parse_args(argv)
    if args.rounds < 3:
        parser.error("--rounds must be at least 3")

    cpus = None
    if args.pin:
        available = sorted(os.sched_getaffinity(0))
        if len(available) < 2:
            parser.error("--pin needs two CPUs")
        cpus = (available[0], available[1])
        os.sched_setaffinity(0, {cpus[0]})
    payload = os.urandom(args.size)
    runners = {"shmqueue": run_shmqueue, "os.pipe": run_pipe}

    messages = args.messages
    if messages is None:  # calibrate on a short run of each; the slower one sets the count
        rates = [1000 / run(messages=1000, payload=payload, capacity=args.capacity, cpus=cpus)
                 for run in runners.values()]
        messages = max(1000, int(args.seconds * min(rates)))

    rates: dict[str, list[float]] = {name: [] for name in runners}
    order = list(runners)
    for _ in range(args.rounds):
        for name in order:
            elapsed = runners[name](messages=messages, payload=payload, capacity=args.capacity, cpus=cpus)
            rates[name].append(messages / elapsed)
        order.reverse()  # alternate which transport goes first

    mib = args.size / MIB
    print(f"{messages:,} messages of {args.size:,} bytes per round, {args.rounds} rounds each, "
          f"capacity {args.capacity:,} bytes, {'pinned to CPUs %d,%d' % cpus if cpus else 'not pinned'}, "
          f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs")
    print(f"{'':<10} {'messages/s':^32} | {'MiB/s':^32}")
    print(f"{'transport':<10} {'median':>10} {'min':>10} {'max':>10} | {'median':>10} {'min':>10} {'max':>10}")
    for name, values in rates.items():
        print(f"{name:<10} {_cells(values)} | {_cells([v * mib for v in values])}")
    ratio = statistics.median(rates["shmqueue"]) / statistics.median(rates["os.pipe"])
    print(f"shmqueue / os.pipe (medians): {ratio:.2f}x")


if __name__ == "__main__":
    main()
