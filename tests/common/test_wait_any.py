"""Waiting on several queues at once (the pipeline) and on a stop flag, across processes, with
descriptors numbered above FD_SETSIZE (1024) too."""

from __future__ import annotations

import os
import resource
import time

import pytest

from common.component import Stop
from common.shmqueue import ShmQueue, wait_any
from common.wake import wait_readable


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


@pytest.fixture
def many_descriptors():
    """Room for descriptors above FD_SETSIZE (1024): the soft RLIMIT_NOFILE raised to 4096 for
    the test (CI machines often have 1024), put back after."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 4096 if hard == resource.RLIM_INFINITY else min(4096, hard)
    if want < 1600:
        pytest.fail(f"the hard limit on descriptors ({hard}) leaves no room above 1024")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, want), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_descriptors_above_1024_wake_the_wait(many_descriptors):
    # Fill the low descriptors, so that the queue's eventfds are numbered above 1024 too.
    filler = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    q = ShmQueue.create(name="high", capacity=4096)
    r, w = os.pipe()
    high = 1500
    os.dup2(r, high)
    try:
        for fd in filler:
            os.close(fd)
        consumer = q.consumer()
        assert consumer.fileno() > 1024
        t0 = time.monotonic()
        wait_any([consumer], also=[high], timeout=0.1)          # nothing ready: the timeout
        assert time.monotonic() - t0 >= 0.09
        os.write(w, b"x")
        assert wait_readable([high], 5) == [high]               # select() would raise here
        t0 = time.monotonic()
        wait_any([consumer], also=[high], timeout=30)           # woken by the pipe at 1500
        os.read(high, 1)
        q.producer().put(b"hi")
        wait_any([consumer], also=[high], timeout=30)           # woken by the high eventfd
        assert time.monotonic() - t0 < 20
        assert consumer.get_nowait() == b"hi"
        assert wait_readable([high], 0) == []
    finally:
        for fd in (r, w, high):
            os.close(fd)
        q.destroy()
