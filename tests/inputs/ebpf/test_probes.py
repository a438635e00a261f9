"""The process and tcp probes, loaded into this kernel: a spawned process tree and a known TCP
connection, seen through the eBPF input (run in this process, with a real queue)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from common.events import ConnEvent, ProcessEvent
from inputs.ebpf.layouts import ARG_LEN
from tests.inputs.ebpf.conftest import needs_ebpf

pytestmark = needs_ebpf


def of_pids(events, pids):
    return [e for e in events if isinstance(e, ProcessEvent) and e.pid in pids]


def test_process_tree_exec_argv_and_exit_status_in_order(live_input):
    li = live_input(probes=["process"])
    script = "/bin/sleep 0.05; /usr/bin/env true one-arg 'two args'; /bin/sleep 30 & wait $!; exit 3"
    parent = subprocess.Popen(["/bin/sh", "-c", script])
    # The backgrounded sleep is killed by a signal: its status is -SIGKILL.
    def sleeper(events):
        return next((e.pid for e in events if isinstance(e, ProcessEvent) and e.kind == "exec"
                     and e.ppid == parent.pid and e.argv == ["/bin/sleep", "30"]), None)
    victim = li.wait_for(sleeper, what="the exec of sleep 30", timeout=30)
    os.kill(victim, signal.SIGKILL)
    assert parent.wait(timeout=30) == 3
    li.wait_for(lambda evs: any(e.kind == "exit" and e.pid == parent.pid for e in of_pids(evs, {parent.pid})),
                what="the parent's exit", timeout=30)
    events = li.collect()
    mine = [e for e in events if isinstance(e, ProcessEvent)
            and (e.pid == parent.pid or e.ppid == parent.pid)]
    top = [e for e in mine if e.pid == parent.pid]
    assert [e.kind for e in top] == ["fork", "exec", "exit"]
    assert top[0].ppid == os.getpid()
    # Each argument is bounded (ARG_LEN bytes with its NUL): the long script is cut.
    assert top[1].filename == "/bin/sh" and top[1].argv == ["/bin/sh", "-c", script[:ARG_LEN - 1]]
    assert top[1].ppid == os.getpid() and top[1].uid == os.getuid()
    assert top[-1].kind == "exit" and top[-1].exit_code == parent.returncode
    children = {}
    for e in mine:
        if e.pid != parent.pid:
            children.setdefault(e.pid, []).append(e)
    by_argv = {}
    for pid, evs in children.items():
        kinds = [e.kind for e in evs]
        execs = [e for e in evs if e.kind == "exec"]
        # fork, then exec(s), then exit, in that order, each child once.
        assert kinds[0] == "fork" and kinds[-1] == "exit" and set(kinds[1:-1]) == {"exec"}, kinds
        assert all(e.ppid == parent.pid for e in evs)
        by_argv[tuple(execs[-1].argv)] = (execs, evs[-1])
    assert set(by_argv) == {("/bin/sleep", "0.05"), ("true", "one-arg", "two args"),
                            ("/bin/sleep", "30")}
    env_execs, env_exit = by_argv[("true", "one-arg", "two args")]
    # env execs true in the same process: two execs, the first with env's argv.
    assert [e.argv for e in env_execs] == [["/usr/bin/env", "true", "one-arg", "two args"],
                                           ["true", "one-arg", "two args"]]
    assert env_exit.exit_code == 0
    assert by_argv[("/bin/sleep", "0.05")][1].exit_code == 0
    assert by_argv[("/bin/sleep", "30")][1].exit_code == -signal.SIGKILL
    # Every child ended before the parent did, and the stream is in time order.
    times = [e.time_ns for e in mine]
    assert times == sorted(times)
    assert all(evs[-1].time_ns <= top[-1].time_ns for evs in children.values())


PEERS = r"""
import json, socket, time
srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(1)
cli = socket.create_connection(srv.getsockname())
conn, peer = srv.accept()
cli.sendall(b"x"); conn.recv(1)
time.sleep(0.05)
print(json.dumps({"port": srv.getsockname()[1], "client_port": cli.getsockname()[1],
                  "client_fd": cli.fileno(), "server_fd": conn.fileno()}), flush=True)
cli.close(); conn.close(); srv.close()
"""


def test_a_known_tcp_connection_connect_accept_close(live_input):
    li = live_input(probes=["tcp"])
    proc = subprocess.run([sys.executable, "-c", PEERS], capture_output=True, text=True, check=True)
    known = json.loads(proc.stdout)
    pid = None

    def both_closed(events):
        conns = [e for e in events if isinstance(e, ConnEvent) and
                 {e.sport, e.dport} == {known["port"], known["client_port"]}]
        return conns if sum(e.kind == "close" for e in conns) >= 2 else None

    conns = li.wait_for(both_closed, what="the connection's events", timeout=30)
    by_kind = {}
    for e in conns:
        by_kind.setdefault(e.kind, []).append(e)
    (connect,), (accept,) = by_kind["connect"], by_kind["accept"]
    pid = connect.pid
    assert accept.pid == pid and connect.comm.startswith("python")
    assert (connect.family, connect.fd) == (4, known["client_fd"])
    assert (connect.saddr, connect.sport, connect.daddr, connect.dport) == \
        ("127.0.0.1", known["client_port"], "127.0.0.1", known["port"])
    assert accept.fd == known["server_fd"]
    assert (accept.saddr, accept.sport, accept.daddr, accept.dport) == \
        ("127.0.0.1", known["port"], "127.0.0.1", known["client_port"])
    closes = {(e.sport, e.dport): e for e in by_kind["close"]}
    assert set(closes) == {(known["client_port"], known["port"]), (known["port"], known["client_port"])}
    for e in closes.values():
        assert e.pid == pid and e.duration_ns >= 50_000_000  # it stayed open through the sleep
    assert connect.time_ns <= accept.time_ns or abs(connect.time_ns - accept.time_ns) < 10**9
    assert time.time_ns() - connect.time_ns < 120 * 10**9  # wall-clock time, not boot time
