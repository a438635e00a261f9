"""The supervisor's OS layer: the POSIX implementation for real (real forks running the one
child bootstrap, agent.child), the Windows one as far as its pure logic goes (it was never run
on Windows; the end-to-end tests run the POSIX one)."""

from __future__ import annotations

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
from agent.supervisor import ChildSpec
from common.exitcodes import ExitCode
from common.progress import ProgressBoard
from tests.agent import components


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


def _spec(build, kind="input", config=None, **kw) -> ChildSpec:
    return ChildSpec(role=f"test {build.__name__}", kind=kind, build=build, config=config, **kw)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX")
def test_posix_children_run_the_one_bootstrap_and_exit_with_its_codes():
    p = PosixPlatform()
    pids = {p.spawn(_spec(components.refuses, config="bad"), host="h", log_level="info"): "boot",
            p.spawn(_spec(components.crashes), host="h", log_level="info"): "crash",
            p.spawn(_spec(components.sink_closed, kind="output"), host="h",
                    log_level="info"): "sink",
            p.spawn(_spec(components.numbers, config=0), host="h", log_level="info"): "ok"}
    sleeper = p.spawn(_spec(components.waits_for_stop, config=60), host="h", log_level="info")
    p.kill(sleeper)
    got = dict(_reap_all(p, 5))
    assert {pids.get(pid, "sleeper"): code for pid, code in got.items()} == {
        "boot": ExitCode.BOOT, "crash": ExitCode.FAILED, "sink": ExitCode.SINK_CLOSED,
        "ok": ExitCode.OK, "sleeper": -signal.SIGKILL}
    p.kill(sleeper)  # gone: not an error
    p.terminate(sleeper)
    p.wait(sleeper)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX")
def test_posix_terminate_stops_an_input_and_not_the_pipeline_or_an_output():
    p = PosixPlatform()
    inp = p.spawn(_spec(components.waits_for_stop, config=60), host="h", log_level="info")
    out = p.spawn(_spec(components.waits_for_stop, kind="output", config=60), host="h",
                  log_level="info")
    time.sleep(0.5)  # both have their handlers by now
    p.terminate(inp)
    p.terminate(out)
    assert _reap_all(p, 1) == [(inp, ExitCode.OK)]  # the input's stop flag: a clean exit
    time.sleep(0.3)
    assert p.reap() == []                            # the output ignores SIGTERM
    p.kill(out)
    assert _reap_all(p, 1) == [(out, -signal.SIGKILL)]


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX")
def test_posix_a_signal_sent_right_after_the_fork_waits_for_the_childs_handler():
    class Slow(PosixPlatform):
        def enter(self, spec, **kw):
            time.sleep(0.3)  # the SIGTERM below arrives here, held
            return super().enter(spec, **kw)

    p = Slow()
    pid = p.spawn(_spec(components.waits_for_stop, config=30), host="h", log_level="info")
    p.terminate(pid)                                  # before the child has its handler
    assert _reap_all(p, 1) == [(pid, ExitCode.OK)]    # its own stop flag saw it, not SIG_DFL


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX")
def test_posix_children_see_the_acknowledgement_board():
    board = ProgressBoard.create(inputs=1, outputs=1)
    try:
        p = PosixPlatform()
        a = p.spawn(_spec(components.numbers, config=5, progress=lambda: board.input(0)),
                    host="h", log_level="info")
        b = p.spawn(_spec(components.acknowledges, kind="output", config=3,
                          progress=lambda: board.output(0)), host="h", log_level="info")
        assert sorted(_reap_all(p, 2)) == sorted([(a, 0), (b, 0)])
        view = board.input(0)
        assert view.acked() == 3 and view.next_seq() == 6
    finally:
        board.destroy()


def test_builder_paths_round_trip_and_refuse_what_a_new_interpreter_cannot_import():
    import inputs.etw

    path = win.builder_path(inputs.etw.build)
    assert path == "inputs.etw:build" and win.resolve_builder(path) is inputs.etw.build
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
