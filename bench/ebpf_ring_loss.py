"""How small the eBPF input's ring buffers can be: events lost by the process probe in an exec
storm while the input is starved of CPU, per ``[inputs.ebpf] ring_buffer_bytes``.

A ring buffer only has to hold what the probes write while the input is not reading. On an idle
machine the input reads every 20 ms and even 64 KiB loses nothing; what sizes it is the longest
stretch the input goes without a CPU on a busy host. Each round here starts the agent
(`log-shuttle --ebpf-http-tracing`, its defaults but for the ring size), then for SECONDS runs
``--hogs`` busy loops at nice -10 (they take most of both CPUs: the input, at nice 0, gets
slices between long waits) and ``--storms`` copies of bench/execstorm.c (fork and exec with
eight long arguments: the probe's largest records), and counts the LossEvents the agent shipped.
Rounds of each size alternate, in one sitting; the result is the rounds that lost anything and
the events lost, per size.

    sudo .venv/bin/python bench/ebpf_ring_loss.py [--sizes 65536,262144,1048576,8388608]
        [--rounds 3] [--seconds 8] [--hogs 2] [--storms 3]

Needs root, gcc, and the BPF set-up of docs/ebpf.md.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from ebpf_overhead import build  # noqa: E402


def one_round(size: int, args, storm: str, tmp: Path) -> dict:
    out_path, err_path = tmp / "agent.ndjson", tmp / "agent.err"
    env = {**os.environ, "PYTHONPATH": str(ROOT),
           "LOG_SHUTTLE_INPUTS__EBPF__RING_BUFFER_BYTES": str(size)}
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        agent = subprocess.Popen([sys.executable, "-m", "agent.cli", "--ebpf-http-tracing"],
                                 stdout=out, stderr=err, env=env, cwd=ROOT,
                                 stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while "tracing with probes" not in err_path.read_text():
            if agent.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the agent did not start: {err_path.read_text()}")
            time.sleep(0.1)
        time.sleep(1)
        hogs = [subprocess.Popen(["nice", "-n", "-10", "timeout", str(args.seconds), "sh", "-c",
                                  "while :; do :; done"]) for _ in range(args.hogs)]
        storms = [subprocess.Popen([storm, str(args.seconds)], stdout=subprocess.PIPE)
                  for _ in range(args.storms)]
        execs = sum(int(p.communicate()[0]) for p in storms)
        for h in hogs:
            h.wait()
        time.sleep(1.5)  # the input reads what is left, and ships the losses it counted
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.wait(timeout=60)
    lost = 0
    with open(out_path, "rb") as f:
        for line in f:
            if b'"type":"loss"' in line:
                lost += json.loads(line)["count"]
    return {"execs": execs, "lost": lost}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="65536,262144,1048576,8388608")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=8)
    ap.add_argument("--hogs", type=int, default=2)
    ap.add_argument("--storms", type=int, default=3)
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("needs root (the eBPF input)")
    sizes = [int(s) for s in args.sizes.split(",")]
    storm = build("execstorm")
    results: dict[int, list[dict]] = {s: [] for s in sizes}
    with tempfile.TemporaryDirectory(prefix="ring-loss-") as tmp:
        for r in range(args.rounds):
            for size in sizes:
                res = one_round(size, args, storm, Path(tmp))
                results[size].append(res)
                print(f"round {r + 1} ring {size >> 10} KiB: {res['execs']} execs, "
                      f"{res['lost']} events lost", flush=True)
    print(f"\nExec storm ({args.storms} storms, {args.hogs} busy loops at nice -10, "
          f"{args.seconds:g} s), {args.rounds} rounds per size:")
    print(f"  {'ring buffer':>12}  {'execs/s (median)':>16}  {'rounds with loss':>16}  events lost")
    for size in sizes:
        rs = results[size]
        rates = sorted(x["execs"] / args.seconds for x in rs)
        lossy = sum(1 for x in rs if x["lost"])
        print(f"  {size >> 10:>8} KiB  {rates[len(rates) // 2]:>16.0f}  {lossy:>13} / {len(rs)}"
              f"  {', '.join(str(x['lost']) for x in rs)}")
    (ROOT / "bench" / "out").mkdir(exist_ok=True)
    (ROOT / "bench" / "out" / "ebpf_ring_loss.json").write_text(
        json.dumps({str(k): v for k, v in results.items()}, indent=1))


if __name__ == "__main__":
    main()
