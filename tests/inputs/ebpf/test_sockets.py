"""Which descriptors the http probe follows: sockets it saw accepted or connected, and the TCP
connections that were already open when the agent started (found in /proc); reads and writes of
anything else (pipes, files, a socketpair) return after one lookup, even when they carry bytes
that look like HTTP."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap

from common.events import HttpEvent
from inputs.ebpf.sockets import established_socket_keys
from tests.inputs.ebpf.conftest import needs, needs_ebpf


def test_established_tcp_connections_are_found_in_proc():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    client = socket.create_connection(listener.getsockname())
    server, _ = listener.accept()
    r, w = os.pipe()
    try:
        keys = set(established_socket_keys())
        me = os.getpid() << 32
        assert me | client.fileno() in keys and me | server.fileno() in keys
        assert me | listener.fileno() not in keys  # listening, not established
        assert me | r not in keys and me | w not in keys
        assert not {k for k in established_socket_keys(skip_pid=os.getpid()) if k >> 32 == os.getpid()}
    finally:
        for s in (client, server, listener):
            s.close()
        os.close(r)
        os.close(w)


OLD_CLIENT = textwrap.dedent("""
    import socket, sys
    s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
    print("connected", flush=True)
    sys.stdin.readline()
    s.sendall(b"GET /older-than-the-agent HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n")
    data = b""
    while b"\\r\\n\\r\\n" not in data:
        data += s.recv(4096)
    print(data.split(b" ")[1].decode(), flush=True)
""")


@needs_ebpf
@needs("nginx")
def test_a_connection_open_before_the_agent_is_traced_on_both_sides(live_input, nginx):
    client = subprocess.Popen([sys.executable, "-c", OLD_CLIENT, str(nginx.port)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert client.stdout.readline().strip() == "connected"
        li = live_input(probes=["http"])  # after the connection was made
        client.stdin.write("go\n")
        client.stdin.flush()
        assert client.stdout.readline().strip() == "404"
        assert client.wait(timeout=30) == 0
    finally:
        client.kill()
        client.wait()

    def mine(events):
        return [e for e in events if isinstance(e, HttpEvent)
                and e.path == "/older-than-the-agent"]

    li.wait_for(lambda evs: len(mine(evs)) >= 2, timeout=30, what="both sides of the exchange")
    by_side = {e.direction: e for e in mine(li.collect())}
    assert by_side["client"].pid == client.pid and by_side["client"].status == 404
    assert by_side["server"].pid in nginx.pids() and by_side["server"].status == 404


PAIR_AND_TCP = textwrap.dedent("""
    import socket, sys
    a, b = socket.socketpair()  # never accept()ed nor connect()ed: not followed
    a.sendall(b"GET /over-a-socketpair HTTP/1.1\\r\\n\\r\\n")
    b.recv(4096)
    b.sendall(b"HTTP/1.1 200 OK\\r\\nContent-Length: 0\\r\\n\\r\\n")
    a.recv(4096)
    s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))  # followed
    s.sendall(b"GET /over-tcp HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n")
    s.recv(4096)
""")


@needs_ebpf
@needs("nginx")
def test_reads_and_writes_of_a_socketpair_are_not_followed(live_input, nginx):
    li = live_input(probes=["http"])
    proc = subprocess.run([sys.executable, "-c", PAIR_AND_TCP, str(nginx.port)], timeout=30)
    assert proc.returncode == 0
    li.wait_for(lambda evs: any(isinstance(e, HttpEvent) and e.path == "/over-tcp"
                                and e.direction == "client" for e in evs),
                timeout=30, what="the TCP exchange (the input is live)")
    paths = {e.path for e in li.collect() if isinstance(e, HttpEvent)}
    assert "/over-a-socketpair" not in paths
