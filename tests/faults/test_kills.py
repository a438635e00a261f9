"""SIGKILL at random moments (issue 16, "How it is shown"): the pipeline and each output killed
10 times each while sequence-numbered lines flow to ``log-shuttle server`` over acknowledged TCP
and OTLP gRPC, and to a plain NDJSON TCP reader (best effort); then the whole process group
killed and restarted on its state dir. The seed is printed (LOG_SHUTTLE_FAULT_SEED replays it).

What is in flight, and so what a kill may repeat, is bounded by the queues: lines the file input
has read but that not every output has acknowledged sit in the input queue, the pipeline's open
batch, an output queue or an output's hands, so per kill at most
(queue.input_bytes + queue.output_bytes + 2 * pipeline.batch.max_bytes) / line length lines
(encoded events are larger than the raw lines, so this over-counts)."""

from __future__ import annotations

import os
import random
import signal
import time

from tests.faults.rig import (BATCH_BYTES, LINE_BYTES, QUEUE_BYTES, LineReceiver, Writer,
                              agent_config, counts, seed)
from tests.harness import Agent, wait_for
from tests.server.helpers import Server, free_port

KILLS = 10
IN_FLIGHT_LINES = (2 * QUEUE_BYTES + 2 * BATCH_BYTES) // LINE_BYTES
"""The most lines one kill can put back in flight (module docstring)."""


def _pid_of(agent: Agent, title: str, killed: set[int]) -> int:
    """The pid of the child titled ``title``, once it is one not killed yet (a process just
    sent SIGKILL may still show its title for a moment)."""
    def find():
        kids = agent._children()
        if agent.proc.poll() is not None:
            raise AssertionError(f"agent exited {agent.proc.returncode}: {agent.stderr()[-3000:]}")
        pid = kids and kids.get(title)
        return pid if pid and pid not in killed else None
    return wait_for(find, timeout=20, what=title)


def _targets(agent: Agent, n: int) -> list[str]:
    """The titles of the pipeline and the outputs, once all ``n`` are up."""
    def find():
        if agent.proc.poll() is not None:
            raise AssertionError(f"agent exited {agent.proc.returncode}: {agent.stderr()[-3000:]}")
        kids = agent._children() or {}
        found = sorted(t for t in kids if t.startswith(("log-shuttle: pipeline",
                                                         "log-shuttle: output")))
        return found if len(found) == n else None
    return wait_for(find, timeout=30, what=f"{n} children")


def _report(what: str, figures: dict, **extra) -> None:
    for name, t in figures.items():
        print(f"{what}, {name}: sent {t.sent}, lost {t.lost}, duplicated {t.duplicated}"
              + "".join(f", {k} {v}" for k, v in extra.items()))


def test_children_killed_at_random_moments_lose_nothing(tmp_path):
    rng = random.Random(seed())
    log = tmp_path / "seq.log"
    log.touch()
    aport, gport = free_port(), free_port()
    acked = Server(tmp_path, "--insecure", tcp_port=aport, name="acked")
    grpc = Server(tmp_path, "--insecure", grpc_port=gport, name="grpc")
    plain = LineReceiver()
    config = agent_config(tmp_path, log, acked=aport, grpc=gport, plain=plain.port)
    try:
        with Agent(tmp_path, "-c", str(config)) as agent:
            targets = _targets(agent, 4)
            writer = Writer(log, rate=3000)
            plan = [t for t in targets for _ in range(KILLS)]
            rng.shuffle(plan)
            killed: set[int] = set()
            for title in plan:
                pid = _pid_of(agent, title, killed)
                time.sleep(rng.uniform(0.05, 0.6))
                os.kill(pid, signal.SIGKILL)
                killed.add(pid)
            sent = writer.stop()
            wait_for(lambda: all(t.lost == 0 for t in counts(
                acked=acked, grpc=grpc, plain=plain, sent=sent).values()),
                timeout=90, interval=0.5, what="every line at every receiver")
            assert agent.stop() == 0, agent.stderr()[-3000:]
        figures = counts(acked=acked, grpc=grpc, plain=plain, sent=sent)
    finally:
        plain.close()
        acked.stop()
        grpc.stop()
    _report(f"SIGKILL x{KILLS} each of {len(targets)} children", figures,
            bound=IN_FLIGHT_LINES * 2 * KILLS)
    restarts = agent.stderr().count("killed by SIGKILL") or agent.stderr().count("restarting in")
    assert restarts >= len(plan), agent.stderr()[-3000:]
    for name, t in figures.items():
        assert t.lost == 0, (name, t)
        # a receiver sees again at most what was in flight: its own output's kills and the
        # pipeline's
        assert t.duplicated <= IN_FLIGHT_LINES * 2 * KILLS, (name, t)


def test_the_whole_group_killed_and_restarted_on_its_state_dir_loses_nothing(tmp_path):
    rng = random.Random(seed())
    log = tmp_path / "seq.log"
    log.touch()
    aport, gport = free_port(), free_port()
    acked = Server(tmp_path, "--insecure", tcp_port=aport, name="acked")
    grpc = Server(tmp_path, "--insecure", grpc_port=gport, name="grpc")
    plain = LineReceiver()
    config = agent_config(tmp_path, log, acked=aport, grpc=gport, plain=plain.port)
    state = tmp_path / "state"
    group_kills = 3
    try:
        writer = Writer(log, rate=3000)
        for run in range(group_kills + 1):
            (tmp_path / f"run{run}").mkdir()
            with Agent(tmp_path / f"run{run}", "-c", str(config), state_dir=state) as agent:
                _targets(agent, 4)
                if run < group_kills:
                    time.sleep(rng.uniform(0.5, 2.0))
                    os.killpg(agent.pid, signal.SIGKILL)  # supervisor and children at once
                    agent.proc.wait()
                    continue
                sent = writer.stop()
                wait_for(lambda: all(t.lost == 0 for t in counts(
                    acked=acked, grpc=grpc, plain=plain, sent=sent).values()),
                    timeout=90, interval=0.5, what="every line at every receiver")
                assert agent.stop() == 0, agent.stderr()[-3000:]
        figures = counts(acked=acked, grpc=grpc, plain=plain, sent=sent)
    finally:
        if writer._thread.is_alive():
            writer.stop()
        plain.close()
        acked.stop()
        grpc.stop()
    _report(f"process group SIGKILLed x{group_kills} and restarted", figures,
            bound=IN_FLIGHT_LINES * group_kills)
    for name, t in figures.items():
        assert t.lost == 0, (name, t)
        assert t.duplicated <= IN_FLIGHT_LINES * group_kills, (name, t)
