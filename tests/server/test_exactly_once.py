"""Exactly once into `log-shuttle server` over gRPC: the agent SIGKILLed 5 times and started
again on its state directory (it replays what it had not checkpointed), the server itself
SIGKILLed once and started again on its directory, while a writer appends 3,000 lines/s:
every line in the server's files once."""

from __future__ import annotations

import collections
import json
import os
import random
import re
import signal
import time

from tests.harness import wait_for
from tests.inputs.test_file_durability import run_agent, start_writer, started
from tests.server.helpers import Server, free_port

LINE_BYTES = 74
"""tests/writer.py's lines: ``seq NNNNNNNN `` and 60 bytes of padding."""
SEQ = re.compile(r"^seq (\d{8}) ")


def file_seqs(server: Server) -> list[int]:
    out = []
    for path in sorted(server.dir.glob("received*.ndjson")):
        data = path.read_bytes()
        for line in data[: data.rfind(b"\n") + 1].splitlines():
            m = SEQ.match(json.loads(line).get("line", ""))
            if m:
                out.append(int(m.group(1)))
    return out


def test_kill_rounds_of_agent_and_server_leave_every_line_once_in_its_files(tmp_path):
    total, rate = 40_000, 3_000  # lines keep coming through the kill rounds (~13 s)
    log = tmp_path / "app.log"
    state = tmp_path / "state"
    port = free_port()
    cfg = tmp_path / "agent.toml"
    cfg.write_text("[[inputs.file]]\n" f"paths = [{json.dumps(str(log))}]\n"
                   "checkpoint_interval = 0.2\n"
                   "[[outputs.grpc]]\n" f"address = \"127.0.0.1:{port}\"\ninsecure = true\n"
                   "backoff_max = 0.5\n")
    rng = random.Random(4)
    server = Server(tmp_path, "--insecure", grpc_port=port)
    writer = start_writer(log, total, rate)
    at_kill = []
    try:
        for i in range(5):
            before = len(file_seqs(server))
            proc = run_agent(tmp_path / f"round{i}.out", state, "--config", str(cfg),
                             "--from-beginning")
            started(proc)
            # the kill lands mid-stream: this round has delivered (a loaded machine can take
            # longer than the sleep below to start an agent; a round that delivered nothing
            # leaves nothing to replay)
            wait_for(lambda: len(file_seqs(server)) > before or writer.poll() is not None,
                     timeout=30, interval=0.1, what=f"round {i} delivering")
            time.sleep(rng.uniform(0.8, 1.6))
            if i == 2:  # the server dies too, in the middle of the stream, and comes back
                server.proc.send_signal(signal.SIGKILL)
                server.proc.wait()
                time.sleep(0.3)
                server.start()
            at_kill.append((len(file_seqs(server)), log.stat().st_size // LINE_BYTES))
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        writer.wait(timeout=60)
        proc = run_agent(tmp_path / "final.out", state, "--config", str(cfg), "--from-beginning")
        try:
            started(proc)
            wait_for(lambda: len(set(file_seqs(server))) >= total, timeout=50, interval=0.3,
                     what=f"{total} lines in the server's files")
            time.sleep(0.5)
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == 0
    finally:
        if writer.poll() is None:
            writer.kill()
        assert server.stop() == 0
    got = file_seqs(server)
    counts = collections.Counter(got)
    missing = [s for s in range(total) if s not in counts]
    dups = {s: c for s, c in counts.items() if c > 1}
    assert not missing, f"{len(missing)} lost, first {missing[:10]}"
    assert not dups, f"{len(dups)} duplicated, first {list(dups.items())[:10]}"
    # kills that landed with lines written and not yet at the destination
    # kills that landed with lines written and not yet in the server's files
    assert sum(0 < got < written for got, written in at_kill) >= 2, at_kill
    stats = server.stats()
    assert stats.get("duplicates_dropped", 0) > 0, stats  # the replays did come, and were dropped
