"""The supervisor's OS layer: the POSIX implementation for real, the Windows one as far as its
pure logic goes (it was never run on Windows; the end-to-end tests run the POSIX one)."""

from __future__ import annotations

import os
import select
import signal
import sys
import time

import pytest

from inputs.etw.config import EtwInputConfig
from agent.platforms import current
from agent.platforms import windows as win
from agent.platforms.posix import PosixPlatform
from agent.platforms.windows_child import SocketStop


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX")
def test_current_is_posix_here():
    assert isinstance(current(), PosixPlatform)


def _reap_all(p: PosixPlatform, n: int) -> list[tuple[int, int]]:
    got: list[tuple[int, int]] = []
    deadline = time.monotonic() + 20
    while len(got) < n and time.monotonic() < deadline:
        got += p.reap()
        time.sleep(0.01)
    return got


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX")
def test_posix_spawn_reap_and_kill_report_exit_codes_like_waitstatus():
    p = PosixPlatform()
    exits = p.spawn(lambda: os._exit(3), None, host="h", log_level="info")
    sleeper = p.spawn(lambda: (time.sleep(60), os._exit(0)), None, host="h", log_level="info")
    p.kill(sleeper)
    got = dict(_reap_all(p, 2))
    assert got == {exits: 3, sleeper: -signal.SIGKILL}
    p.kill(sleeper)  # gone: not an error
    p.terminate(sleeper)
    p.wait(sleeper)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX")
def test_posix_terminate_is_sigterm():
    from agent.platforms.posix import release_signals

    p = PosixPlatform()
    # A child starts with the stop signals held (so that none is lost between the fork and its
    # own handlers); it releases them once its handlers are in place.
    pid = p.spawn(lambda: (signal.signal(signal.SIGTERM, signal.SIG_DFL), release_signals(),
                           time.sleep(60), os._exit(0)),
                  None, host="h", log_level="info")
    p.terminate(pid)
    assert _reap_all(p, 1) == [(pid, -signal.SIGTERM)]


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX")
def test_posix_a_signal_sent_right_after_the_fork_waits_for_the_childs_handler():
    from agent.platforms.posix import release_signals

    p = PosixPlatform()
    r, w = os.pipe()

    def child() -> None:
        time.sleep(0.3)  # the SIGTERM below arrives here, held
        signal.signal(signal.SIGTERM, lambda *_: (os.write(w, b"T"), os._exit(0)))
        release_signals()
        time.sleep(30)
        os._exit(1)

    pid = p.spawn(child, None, host="h", log_level="info")
    p.terminate(pid)                                  # before the child has its handler
    assert _reap_all(p, 1) == [(pid, 0)]              # its own handler saw it
    assert os.read(r, 1) == b"T"
    os.close(r)
    os.close(w)


def test_builder_paths_round_trip_and_refuse_what_a_new_interpreter_cannot_import():
    import inputs.etw

    path = win.builder_path(inputs.etw.build)
    assert path == "inputs.etw.runner:build" and win.resolve_builder(path) is inputs.etw.build
    with pytest.raises(ValueError):
        win.builder_path(lambda ctx: None)


def test_bootstrap_round_trip_keeps_config_and_queue_names():
    ref = win.QueueRef(name="log-shuttle.input-etw", capacity=1 << 20, segment="Local\\a", size=384 + (1 << 20),
                       data="Local\\b", space="Local\\c")
    boot = win.Bootstrap(role="input etw", kind="input", build="inputs.etw.runner:build",
                         config=EtwInputConfig(session="s", send_events=7), produces=[ref], host="h",
                         stop_event="Local\\stop", parent_pid=42)
    back = win.decode_bootstrap(win.encode_bootstrap(boot))
    assert back == boot and back.config.send_events == 7 and back.produces[0].space == "Local\\c"
    with pytest.raises(TypeError):
        win.decode_bootstrap(win.pickle.dumps({"role": "x"}))


def test_queue_ref_reads_the_names_of_the_windows_backend_parts():
    class Part:
        def __init__(self, tag, size=0):
            self.tag, self.size = tag, size

    class Q:
        name, capacity = "q", 64
        _segment, _data, _space = Part("Local\\s", 448), Part("Local\\d"), Part("Local\\p")

    assert win.queue_ref(Q()) == win.QueueRef(name="q", capacity=64, segment="Local\\s", size=448,
                                               data="Local\\d", space="Local\\p")


def test_child_command_runs_the_child_module_with_this_interpreter():
    assert win.child_command() == [sys.executable, "-m", "agent.platforms.windows_child"]


def test_socket_waker_and_socket_stop_wake_select():
    w = win.SocketWaker()
    try:
        assert select.select([w.fileno()], [], [], 0)[0] == []
        w.set()
        w.set()
        assert select.select([w.fileno()], [], [], 0)[0] == [w.fileno()]
        w.clear()
        assert select.select([w.fileno()], [], [], 0)[0] == []
    finally:
        w.close()
    stop = SocketStop()
    assert not stop.is_set()
    stop.set()
    assert stop.is_set() and select.select([stop], [], [], 0)[0] == [stop]
