"""The Windows queue backend, as far as it runs without Windows: its pure logic, and a clear
error (not an AttributeError from ctypes) when its objects are asked for elsewhere."""

from __future__ import annotations

import os
import sys

import pytest

from common import _shm_windows as w
from common.errors import LogShuttleError


def test_object_names_are_local_unique_and_carry_the_supervisor_pid():
    a, b = w.object_name("shm"), w.object_name("shm")
    assert a != b
    assert a.startswith(f"Local\\log-shuttle-{os.getpid()}-shm-") and len(a.rsplit("-", 1)[1]) == 32
    assert w.object_name("event", token="t", pid=7) == "Local\\log-shuttle-7-event-t"


@pytest.mark.parametrize("timeout, ms", [(None, w.INFINITE), (0.0, 0), (0.0003, 1), (1.5, 1500),
                                         (-1.0, 0), (1e12, w.INFINITE - 1)])
def test_timeouts_round_up_to_milliseconds_and_never_mean_infinite_by_accident(timeout, ms):
    assert w.timeout_ms(timeout) == ms


@pytest.mark.skipif(sys.platform == "win32", reason="checks the refusal off Windows")
def test_off_windows_the_objects_refuse_clearly():
    assert not w.available()
    with pytest.raises(w.WindowsOnly, match="Windows"):
        w.Segment(name="x", size=4096)
    with pytest.raises(w.WindowsOnly, match="Windows"):
        w.Signal()
    assert issubclass(w.WindowsOnly, LogShuttleError)


def test_wait_any_checks_its_arguments_before_calling_windows():
    with pytest.raises(ValueError):
        w.wait_any([], 1.0)
