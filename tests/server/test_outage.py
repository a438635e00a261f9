"""The server stopped for 30 s in the middle of a stream and started again: every sequence
number arrives through both outputs (gRPC at least once, duplicates counted), and the agent's
memory (the sum of its processes' RSS) stays bounded while the lines pile up in the file."""

from __future__ import annotations

import os
import threading
import time
from collections import Counter

from tests.harness import Agent, agent_env, wait_for
from tests.server.helpers import Server, free_port

PAD = "x" * 900
OUTAGE = 30.0


def _rss_kib(pid: int) -> int:
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/status") as f:
                total += next(int(x.split()[1]) for x in f if x.startswith("VmRSS:"))
            with open(f"/proc/{p}/task/{p}/children") as f:
                todo += [int(c) for c in f.read().split()]
        except (OSError, StopIteration):
            pass
    return total


def _seqs(records, *, tcp: bool) -> Counter:
    return Counter(int(r["line"].split()[0]) for r in records
                   if ("facility" in r) == tcp and r.get("line", "").split()[:1] != [])


def test_server_outage_of_30s_loses_nothing_and_memory_stays_bounded(tmp_path):
    config = tmp_path / "agent.toml"
    config.write_text(
        "[queue]\ninput_bytes = 4194304\noutput_bytes = 4194304\n"
        "[pipeline.batch]\nmax_bytes = 262144\n"
        "[[inputs.file]]\npaths = [\"LOG\"]\nfrom_beginning = true\nmax_line_bytes = 65536\n"
        "send_bytes = 65536\nread_bytes = 65536\n"
        "[[outputs.grpc]]\naddress = \"127.0.0.1:GPORT\"\ninsecure = true\nbackoff_max = 2.0\n"
        "[[outputs.tcp]]\naddress = \"127.0.0.1:TPORT\"\nframing = \"syslog-octet\"\n"
        "backoff_max = 2.0\n")
    gport, tport = free_port(), free_port()
    config.write_text(config.read_text().replace("GPORT", str(gport))
                      .replace("TPORT", str(tport)))
    log = tmp_path / "seq.log"
    log.touch()
    config.write_text(config.read_text().replace("LOG", str(log)))
    written = [0]
    stop_writing = threading.Event()

    def writer():
        with open(log, "a") as f:
            while not stop_writing.is_set():
                n = written[0]
                f.write("".join(f"{n + i} {PAD}\n" for i in range(200)))
                f.flush()
                written[0] = n + 200
                time.sleep(0.1)            # ~1.8 MB/s

    # Both outputs ship the same records (the same record ids) to one server: exactly once would
    # keep one copy of each; this test counts each protocol's own copy, so it keeps both.
    server = Server(tmp_path, "--insecure", grpc_port=gport, tcp_port=tport,
                    env=agent_env(LOG_SHUTTLE_SERVER__EXACTLY_ONCE="false"))
    thread = threading.Thread(target=writer)
    try:
        with Agent(tmp_path, "-c", str(config)) as agent:
            thread.start()
            wait_for(lambda: agent.proc.poll() is None and written[0] >= 10_000
                     and len(server.records()) > 2 * 2_000 or agent.proc.poll() is not None,
                     timeout=60, what="the stream to flow")
            assert agent.proc.poll() is None, agent.stderr()
            assert server.stop() == 0                          # the outage starts
            time.sleep(2.0)
            rss_start = _rss_kib(agent.pid)
            written_start = written[0]
            time.sleep(OUTAGE - 2.0)
            rss_end = _rss_kib(agent.pid)
            during = (written[0] - written_start) * len(PAD)
            server.start()                                     # same ports, same directory
            time.sleep(2.0)
            stop_writing.set()
            thread.join()
            total = written[0]

            def complete():
                recs = server.records()
                return (set(_seqs(recs, tcp=False)) >= set(range(total))
                        and set(_seqs(recs, tcp=True)) >= set(range(total)))
            wait_for(complete, timeout=120, interval=0.5, what=f"all {total} lines twice")
            assert agent.stop() == 0
    finally:
        stop_writing.set()
        if thread.is_alive():
            thread.join()
        server.stop()
    records = server.records()
    grpc_seqs, tcp_seqs = _seqs(records, tcp=False), _seqs(records, tcp=True)
    assert set(grpc_seqs) == set(range(total)) and set(tcp_seqs) == set(range(total))
    duplicates = sum(c - 1 for c in grpc_seqs.values()) + sum(c - 1 for c in tcp_seqs.values())
    print(f"lines {total}, written during the outage {during >> 20} MiB, duplicates "
          f"{duplicates}, agent RSS {rss_start >> 10} -> {rss_end >> 10} MiB")
    assert during > 40 << 20                                   # the outage had a lot to hold
    assert rss_end - rss_start < 24 << 10, (rss_start, rss_end)  # ...and it stayed in the file
    assert "retried with backoff" in agent.stderr()
    assert "delivering again" in agent.stderr()
    assert os.path.exists(server.dir / "received.ndjson")
