"""Giving the CPU back in short slices, so that the agent never holds a core the traced
application is waiting for.

The agent works in bursts: a batch of a thousand events is a few milliseconds of Python. A
process that is woken (nginx, by a request) on a CPU where such a burst runs waits for the
burst's slice to end: on this project's 2-core VM, two processes burning 25% of a CPU each in
5 ms bursts took nginx's p99 latency at 5,000 requests/s from 0.3 to 4.8 ms, and the same
bursts yielding every 0.2 ms left it at 0.46 ms (bench/cpu_contention.py). ``relax()`` is that
yield: the loops that work through a batch call it between pieces, and it calls
``sched_yield()`` when ``SLICE_NS`` have passed since it last did. When nothing else wants the
CPU the call returns at once (about a microsecond); when something does, it runs first, and
the agent keeps its fair share of the CPU over time, only in shorter pieces.

The slice is counted in the thread's CPU time, not the wall clock's: time spent asleep (waiting
for the next message) or preempted is not work, so a process that wakes does not give the CPU
away at its first ``relax()``, with nothing done yet (and its caches refilled for nothing).
Reading that clock is a system call (~0.7 µs from Python here, against ~80 ns for the wall
clock's vDSO read), and the loops call ``relax()`` every few dozen microseconds: the wall clock
is read first, and the CPU clock only once enough wall time has passed for the slice to have
been worked (a thread's CPU time grows no faster than the wall clock).
"""

from __future__ import annotations

import os
import time

SLICE_NS = 200_000
"""The longest the agent works without offering the CPU to whatever else is waiting for it."""

_yield = getattr(os, "sched_yield", None) or (lambda: time.sleep(0))  # Windows: sleep(0)
_clock = time.thread_time_ns
"""This thread's CPU time (a system call)."""
_wall_clock = time.monotonic_ns
_last = 0
"""The CPU clock when the thread last yielded."""
_next_look = 0
"""The wall clock before which the slice cannot have been worked (no need to read the CPU's)."""


def relax() -> None:
    """Offer the CPU to others if this thread has worked ``SLICE_NS`` since it last did."""
    global _last, _next_look
    wall = _wall_clock()
    if wall < _next_look:
        return
    now = _clock()
    worked = now - _last
    if worked >= SLICE_NS:
        _yield()
        _last = _clock()
        _next_look = _wall_clock() + SLICE_NS
    else:
        _next_look = wall + SLICE_NS - worked
