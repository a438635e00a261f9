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
from tests.inputs.ebpf.conftest import needs, needs_ebpf

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


A_CONNECTION = r"""
import json, os, socket, sys
srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(1)
cli = socket.create_connection(srv.getsockname())
conn, _ = srv.accept()
def recv(s, n):
    got = b""
    while len(got) < n:
        got += s.recv(n - len(got))
    return got
def send(a, b, data):
    a.sendall(data); recv(b, len(data))
"""
"""The scripts' start: a loopback connection (``cli`` to ``conn``), ``recv`` of exactly n bytes,
and ``send`` of bytes from one end that the other reads whole."""

PIPELINED = A_CONNECTION + r"""
reqs = [b"GET /p1 HTTP/1.1\r\nHost: a\r\n\r\n", b"GET /p2 HTTP/1.1\r\nHost: a\r\n\r\n"]
resps = [b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", b"HTTP/1.1 404 Not Found\r\n\r\n"]
# One request at a time, then two pipelined (each its own write and read), then one again.
cli.sendall(b"GET /p0 HTTP/1.1\r\n\r\n"); recv(conn, 20)
conn.sendall(b"HTTP/1.1 301 Moved\r\n\r\n"); recv(cli, 22)
for r in reqs:
    cli.sendall(r); recv(conn, len(r))
for r in resps:
    conn.sendall(r); recv(cli, len(r))
cli.sendall(b"GET /p3 HTTP/1.1\r\n\r\n"); recv(conn, 20)
conn.sendall(b"HTTP/1.1 500 Boom\r\n\r\n"); recv(cli, 21)
print(json.dumps({"pid": os.getpid(), "client_fd": cli.fileno(), "server_fd": conn.fileno()}))
"""


def test_http_pairing_in_the_kernel_and_pipelining_handed_to_user_space(live_input):
    from common.events import HttpEvent
    li = live_input(probes=["tcp", "http"])
    proc = subprocess.run([sys.executable, "-c", PIPELINED], capture_output=True, text=True,
                          check=True)
    known = json.loads(proc.stdout)

    def mine(events):
        got = [e for e in events if isinstance(e, HttpEvent) and e.pid == known["pid"]]
        return got if len(got) >= 8 else None

    got = li.wait_for(mine, what="8 http events of the script", timeout=30)
    time.sleep(0.5)
    got = mine(li.collect())
    want = [("/p0", 301), ("/p1", 200), ("/p2", 404), ("/p3", 500)]
    for direction, fd in (("server", known["server_fd"]), ("client", known["client_fd"])):
        side = sorted((e for e in got if e.direction == direction), key=lambda e: e.time_ns)
        assert [(e.path, e.status) for e in side] == want, direction
        assert all(e.fd == fd and e.method == "GET" and e.duration_ns > 0 for e in side)
        assert {e.peer_addr for e in side} == {"127.0.0.1"}


IDLE = A_CONNECTION + r"""
send(cli, conn, b"GET /a HTTP/1.1\r\n\r\n")
send(conn, cli, b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n")
send(conn, cli, b"0123456789")  # the body in a write of its own: nothing waits, not HTTP
send(conn, cli, b"HTTP/1.1 204 Stray\r\n\r\n")  # a response with nothing waiting: an orphan
send(cli, conn, b"GET /" + b"x" * 200 + b" HTTP/1.1\r\nHost: a\r\n\r\n")  # 231 bytes
send(conn, cli, b"HTTP/1.1 404 Not Found\r\n\r\n")
print(json.dumps({"pid": os.getpid()}))
"""


def test_an_idle_connection_s_next_request_is_read_once_and_other_bytes_leave_nothing(
        live_input):
    """On a connection with no request waiting, the probe reads the next bytes straight into
    the connection's state: a request there (its whole line, 231 bytes) pairs as any other; a
    body written on its own and a response with nothing waiting leave nothing behind."""
    from common.events import HttpEvent
    li = live_input(probes=["tcp", "http"])
    proc = subprocess.run([sys.executable, "-c", IDLE], capture_output=True, text=True,
                          check=True)
    pid = json.loads(proc.stdout)["pid"]

    def mine(events):
        got = [e for e in events if isinstance(e, HttpEvent) and e.pid == pid]
        return got if len(got) >= 4 else None

    li.wait_for(mine, what="4 http events of the script", timeout=30)
    time.sleep(0.5)
    got = mine(li.collect())
    for direction in ("server", "client"):
        side = sorted((e for e in got if e.direction == direction), key=lambda e: e.time_ns)
        assert [(e.method, e.path, e.status) for e in side] == \
            [("GET", "/a", 200), ("GET", "/" + "x" * 200, 404)], direction


BODY = A_CONNECTION + r"""
send(cli, conn, b"GET /a HTTP/1.1\r\n\r\n")
send(conn, cli, b"HTTP/1.1 200 OK\r\nContent-Length: 22\r\n\r\n")
send(conn, cli, b"SECRET-BODY-0123456789")  # on its own, with nothing waiting
other = socket.create_connection(srv.getsockname())  # a connection that never carries HTTP
peer, _ = srv.accept()
send(other, peer, b"PING 1\r\n")
send(peer, other, b"+PONG\r\n")
print(json.dumps({"pid": os.getpid(), "http": [cli.fileno(), conn.fileno()],
                  "other": [other.fileno(), peer.fileno()]}), flush=True)
sys.stdin.readline()  # the connection stays open while the test looks at the map
"""


def map_entries(name: str, pid: int) -> dict[int, bytes]:
    """The entries of every BPF map called ``name`` whose key is ``pid << 32 | fd``: fd ->
    value (bpftool)."""
    shown = subprocess.run(["bpftool", "-j", "map", "show"], capture_output=True, text=True,
                           check=True)
    out = {}
    for m in json.loads(shown.stdout):
        if m.get("name") != name:
            continue
        dump = subprocess.run(["bpftool", "-j", "map", "dump", "id", str(m["id"])],
                              capture_output=True, text=True, check=True)
        for entry in json.loads(dump.stdout):
            key = int.from_bytes(bytes(int(b, 16) for b in entry["key"]), "little")
            if key >> 32 == pid:
                out[key & 0xffffffff] = bytes(int(b, 16) for b in entry["value"])
    return out


@needs("bpftool")
def test_bytes_read_on_an_idle_connection_that_start_no_request_are_not_kept(live_input):
    """The probe reads an idle connection's next bytes straight into the connection's state;
    a body there is wiped at once: the kernel's map holds the exchange's record (its status
    line) but no byte of the body, on either side. Only descriptors that carried a request
    are marked so (FD_HTTP), and have a state: a connection that never did has neither."""
    live_input(probes=["tcp", "http"])
    proc = subprocess.Popen([sys.executable, "-c", BODY], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        known = json.loads(proc.stdout.readline())
        states = map_entries("conns", known["pid"])
        bits = {fd: int.from_bytes(v, "little") for fd, v in
                map_entries("fds", known["pid"]).items()}
    finally:
        proc.communicate("\n", timeout=10)
    assert sorted(states) == sorted(known["http"])  # the server's descriptor and the client's
    assert all(b"HTTP/1.1 200 OK" in s for s in states.values())
    assert not any(b"SECRET" in s for s in states.values())
    assert {fd: bits.get(fd) for fd in known["http"] + known["other"]} == \
        {**{fd: 3 for fd in known["http"]}, **{fd: 1 for fd in known["other"]}}


def test_a_full_queue_makes_the_input_wait_while_the_ring_buffer_holds_the_events(live_input):
    """The pipeline not reading (this test does not collect) and its queue far too small for
    what comes: the input waits for room instead of dropping batches, the probe's ring buffer
    holds the events meanwhile, and once the queue is read every exec arrives, none lost."""
    li = live_input(probes=["process"], queue_bytes=256 * 1024, ring_buffer_bytes=64 * 1024 * 1024)
    n = 3000
    parent = subprocess.run(["/bin/sh", "-c", f"i=0; while [ $i -lt {n} ]; do /bin/true; "
                             f"i=$((i+1)); done; echo $$"], capture_output=True, text=True,
                            check=True, timeout=300)
    shell = int(parent.stdout)
    time.sleep(1.0)  # the input has read the ring buffer up to what the queue could take
    assert li.runner.stats.lost_queue_full == 0
    execs = li.wait_for(
        lambda evs: (lambda found: found if len(found) >= n else None)(
            [e for e in evs if isinstance(e, ProcessEvent) and e.kind == "exec"
             and e.ppid == shell and e.filename == "/bin/true"]),
        what=f"{n} execs of /bin/true", timeout=120)
    assert len(execs) == n
    assert li.losses() == [] and li.runner.stats.lost_queue_full == 0


def test_the_memory_the_programs_compilation_left_is_handed_back_once(live_input, monkeypatch):
    """BCC compiles the programs with clang and LLVM in the input's process; what they freed
    stays with the allocator (~18 MiB here) unless handed back: the input does so once, as it
    starts tracing (bench/ebpf_overhead.py shows each process's resident memory)."""
    from inputs.ebpf import runner as ebpf_runner

    calls = []
    monkeypatch.setattr(ebpf_runner, "trim", lambda: calls.append(1) or True)
    li = live_input(probes=["process"])
    li.wait_for(lambda _events: calls, timeout=30, what="the trim")
    subprocess.run(["/bin/true"], check=True)  # a round or more of events after it
    li.wait_for(lambda events: any(isinstance(e, ProcessEvent) for e in events), timeout=30,
                what="process events")
    assert calls == [1]


def test_the_compilers_code_is_unmapped_once_tracing_starts(live_input):
    """clang's and LLVM's code (~70 MiB resident after BCC compiled the programs with it) is
    not resident in the input once it traces: unmapped, left to the page cache
    (common.memory.release_code), and the input goes on tracing."""
    from inputs.ebpf.runner import COMPILER_LIBRARIES
    from tests.harness import resident_kib

    li = live_input(probes=["process"])
    subprocess.run(["/bin/true"], check=True)
    li.wait_for(lambda events: any(isinstance(e, ProcessEvent) for e in events), timeout=30,
                what="process events")
    # What stays: the mappings LLVM wrote to as it was loaded (relocations), a few MiB.
    assert resident_kib(COMPILER_LIBRARIES) < 16 * 1024  # the input runs in this process
