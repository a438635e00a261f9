"""Waiting on several queues at once (the pipeline) and on a stop flag, across processes."""

from __future__ import annotations

import os
import time

from common.component import Stop
from common.shmqueue import ShmQueue, wait_any


def test_wakes_on_a_put_in_any_queue_and_on_the_stop_flag():
    qs = [ShmQueue.create(name=f"w{i}", capacity=4096) for i in range(3)]
    try:
        consumers = [q.consumer() for q in qs]
        stop = Stop()
        t0 = time.monotonic()
        wait_any(consumers, also=[stop], timeout=0.2)          # nothing: the timeout
        assert time.monotonic() - t0 >= 0.19
        pid = os.fork()
        if pid == 0:
            time.sleep(0.2)
            qs[2].producer().put(b"hello")
            os._exit(0)
        t0 = time.monotonic()
        wait_any(consumers, also=[stop], timeout=30)           # woken by the other process
        assert time.monotonic() - t0 < 20
        assert consumers[2].get_nowait() == b"hello"
        os.waitpid(pid, 0)
        stop.set()
        t0 = time.monotonic()
        wait_any(consumers, also=[stop], timeout=30)           # woken by the stop flag
        assert time.monotonic() - t0 < 20 and stop.is_set()
    finally:
        for q in qs:
            q.destroy()
