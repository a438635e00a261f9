"""A poison message in a real agent's output queue: the output sets it aside in the dead-letter
file of the state dir, says so once, and goes on; the lines written after it arrive, and the
output process is the same one (no crash, no restart loop).

The message is put in the queue as the pipeline would put it: through the queue's own shared
memory (the supervisor's memfd, reopened through /proc), with the pipeline stopped while the
test writes and killed right after (its successor starts at the published tail)."""

from __future__ import annotations

import mmap
import os
import shutil
import signal
import tempfile
from pathlib import Path

from common import _shm_linux
from common.shmqueue import _HEADER_SIZE, _W_CAPACITY, ShmQueue
from outputs import deadletter
from tests.harness import Agent, append, wait_for
from tests.outputs.receivers import tally
from tests.outputs.test_runner import Receiver

GARBAGE = b"\x92\xa5oops!\xc1 not a Batch"


class _Mapped:
    """A queue segment mapped from an open file (the segment interface ShmQueue takes)."""

    def __init__(self, path: str) -> None:
        with open(path, "r+b") as f:
            self.mm = mmap.mmap(f.fileno(), 0)

    def close(self) -> None:
        self.mm.close()


def inject(supervisor: int, queue_name: str, message: bytes) -> None:
    for fd in os.listdir(f"/proc/{supervisor}/fd"):
        try:
            target = os.readlink(f"/proc/{supervisor}/fd/{fd}")
        except OSError:
            continue
        if target.startswith(f"/memfd:shmqueue:{queue_name} "):
            break
    else:
        raise AssertionError(f"no segment of queue {queue_name} in the supervisor")
    segment = _Mapped(f"/proc/{supervisor}/fd/{fd}")
    words = memoryview(segment.mm).cast("Q")
    capacity = words[_W_CAPACITY]
    assert len(segment.mm) == _HEADER_SIZE + capacity
    words.release()
    queue = ShmQueue(name=queue_name, capacity=capacity, segment=segment,
                     data=_shm_linux.Signal(), space=_shm_linux.Signal())
    try:
        queue.producer().put_nowait(message)
    finally:
        queue.destroy()


def test_an_undecodable_message_is_set_aside_and_later_lines_arrive(tmp_path):
    log = tmp_path / "app.log"
    log.write_bytes(b"".join(b"seq=%06d before\n" % i for i in range(100)))
    rx = Receiver()
    # A state dir the outputs' user can reach (pytest's directories are root's, mode 0700).
    state = Path(tempfile.mkdtemp(prefix="log-shuttle-poison-"))
    state.chmod(0o711)
    try:
        with Agent(tmp_path, "--input-file", str(log), "--from-beginning",
                   "--output-tcp", f"127.0.0.1:{rx.port}", state_dir=state) as agent:
            wait_for(lambda: tally(rx.lines, 100).lost == 0, what="the first 100 lines")
            children = agent.children()
            pipeline, output = children["log-shuttle: pipeline"], children["log-shuttle: output tcp"]
            os.kill(pipeline, signal.SIGSTOP)
            try:
                inject(agent.pid, "log-shuttle.output-tcp-tcp", GARBAGE)
            finally:
                os.kill(pipeline, signal.SIGKILL)
            wait_for(lambda: agent.children().get("log-shuttle: pipeline", pipeline) != pipeline,
                     what="a new pipeline")
            append(log, b"".join(b"seq=%06d after\n" % i for i in range(100, 200)))
            wait_for(lambda: tally(rx.lines, 200).lost == 0, what="the lines after the poison")
            assert agent.children()["log-shuttle: output tcp"] == output  # never crashed
            assert agent.stop() == 0
        # Under root the outputs run as the agent's user, in <state dir>/outputs
        # (agent/privileges.py).
        outputs_dir = state / "outputs" if os.geteuid() == 0 else state
        dead = outputs_dir / "dead-letters" / "output-tcp.ndjson"
        assert dead.stat().st_uid == _output_uid()
        (entry,) = deadletter.read(str(dead))
    finally:
        rx.close()
        shutil.rmtree(state, ignore_errors=True)
    assert entry.reason == "undecodable" and entry.output == "output tcp"
    assert deadletter.message_of(entry) == GARBAGE and entry.bytes == len(GARBAGE)
    err = agent.stderr()
    said = [line for line in err.splitlines() if "set a batch aside" in line]
    assert len(said) == 1 and str(dead) in said[0], err[-3000:]
    assert "output tcp crashed" not in err


def _output_uid() -> int:
    """The uid the agent's outputs run as (the agent's user under root, else ours)."""
    if os.geteuid() != 0:
        return os.geteuid()
    from agent.privileges import agent_user

    return agent_user()[1]
