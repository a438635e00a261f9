"""The http probe's budget (``[inputs.ebpf] max_exchanges_per_second``): over it, the probe
sends 1 exchange in N, each carrying N; the others are counted in the kernel. The control alone,
the real probe at a fixed N (every exchange accounted for: sent or counted), the real input
finding N by itself under load, and the pipeline's RED metrics counting a sampled exchange N
times."""

from __future__ import annotations

import json
import subprocess
import sys
import time

from common.events import HttpEvent
from inputs.ebpf.runner import Sampling
from tests.inputs.ebpf.conftest import needs_ebpf


def test_the_control_follows_the_rate_up_at_once_and_down_with_a_margin():
    s = Sampling(1000, interval=1.0)
    assert s.due(0.0)
    assert s.update(0, 0.0) is None  # the first call only starts the count
    assert not s.due(0.5) and s.due(1.0)
    assert s.update(500, 0.5) is None  # less than an interval: nothing measured yet
    assert s.update(900, 1.0) is None  # 900/s: within the budget, every exchange
    assert s.update(900 + 4500, 2.0) == 5  # 4,500/s: 1 in 5
    assert s.update(5400 + 4100, 3.0) is None  # 4,100/s still needs 5
    assert s.update(9500 + 3900, 4.0) is None  # 3,900/s: 4 would do, but not by a fifth
    assert s.update(13400 + 3000, 5.0) == 4  # 3,000/s: 4 with the margin (3,750 over 4,000)
    assert s.update(16400 + 10, 6.0) == 1  # quiet: every exchange again
    assert s.rate == 10
    big = Sampling(1)
    big.update(0, 0.0)
    assert big.update(10**9, 1.0) == Sampling.MAX_ONE_IN  # the weight's 16 bits
    assert Sampling(0).update(10**9, 1.0) is None and not Sampling(0).due(5.0)  # no budget


def test_a_budget_must_not_be_negative():
    import msgspec
    import pytest
    from inputs.ebpf.config import EbpfInputConfig

    assert EbpfInputConfig(max_exchanges_per_second=5000).max_exchanges_per_second == 5000
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"max_exchanges_per_second": -1}, EbpfInputConfig)


EXCHANGES = r"""
import json, os, socket, sys, time
n, pause = int(sys.argv[1]), float(sys.argv[2])
srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(1)
cli = socket.create_connection(srv.getsockname())
conn, _ = srv.accept()
resp = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
def recv(s, k):
    got = b""
    while len(got) < k:
        got += s.recv(k - len(got))
start = time.monotonic()
for i in range(n):
    req = b"GET /s%d HTTP/1.1\r\nHost: a\r\n\r\n" % i
    cli.sendall(req); recv(conn, len(req))
    conn.sendall(resp); recv(cli, len(resp))
    if pause:
        time.sleep(max(0.0, start + (i + 1) * pause - time.monotonic()))
print(json.dumps({"pid": os.getpid()}))
"""


def run_exchanges(n: int, pause: float = 0.0) -> int:
    out = subprocess.run([sys.executable, "-c", EXCHANGES, str(n), str(pause)],
                         capture_output=True, text=True, check=True, timeout=120)
    return json.loads(out.stdout)["pid"]


@needs_ebpf
def test_one_in_n_is_sent_with_its_weight_both_sides_together_and_the_rest_counted(live_input):
    """At 1 in 4, requests 5 ms apart (each in its own 4 ms slot): about a quarter are sent,
    each on both sides (the client's write and the server's read fall in one slot but for one
    that straddles its edge), with weight 4; every other exchange is counted in the kernel.
    Back at 1, every one is sent with weight 1."""
    li = live_input(probes=["tcp", "http"])
    programs = li.runner.programs
    programs.set_sampling(4)
    before = programs.sampled_out()
    n = 400
    pid = run_exchanges(n, pause=0.005)
    time.sleep(0.5)
    programs.set_sampling(1)
    counted = programs.sampled_out() - before

    def mine(events):
        return [e for e in events if isinstance(e, HttpEvent) and e.pid == pid]

    sent = mine(li.wait_for(mine, what="the sampled exchanges", timeout=30))
    time.sleep(0.5)
    sent = mine(li.collect())
    assert {e.weight for e in sent} == {4}
    client = {e.path for e in sent if e.direction == "client"}
    server = {e.path for e in sent if e.direction == "server"}
    # 400 requests, 1 in 4: 100 on average (sd ~9).
    assert 50 < len(client) < 150 and 50 < len(server) < 150, (len(client), len(server))
    # The two sides chosen together: apart only for a request straddling a slot's edge.
    assert len(client ^ server) <= max(4, len(client) // 10), sorted(client ^ server)
    # Every other exchange was counted in the kernel (the counter is the host's: other HTTP on
    # the machine meanwhile could only add to it).
    assert 2 * n - len(sent) <= counted <= 2 * n - len(sent) + 50, (counted, len(sent))

    # Back to every exchange: all sent, weight 1.
    pid = run_exchanges(200)

    def all_of(events):
        got = mine(events)
        return got if len(got) >= 400 else None

    sent = li.wait_for(all_of, what="every exchange", timeout=30)
    assert len(sent) == 400 and {e.weight for e in sent} == {1}


NESTED = r"""
import json, os, socket, sys, time
n = int(sys.argv[1])
def recv(s, k):
    got = b""
    while len(got) < k:
        got += s.recv(k - len(got))
    return got
resp = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
back = socket.socket(); back.bind(("127.0.0.1", 0)); back.listen(1)
front = socket.socket(); front.bind(("127.0.0.1", 0)); front.listen(1)
pids = {"front": os.getpid()}
child = os.fork()
if child == 0:  # the back end: answers whatever it reads
    c, _ = back.accept()
    for i in range(n):
        recv(c, len(b"GET /back%d HTTP/1.1\r\n\r\n" % i)); c.sendall(resp)
    os._exit(0)
pids["back"] = child
r, w = os.pipe()
client = os.fork()
if client == 0:  # the client: a request every 5 ms, each after a 2 ms wait inside the front
    cli = socket.create_connection(front.getsockname())
    for i in range(n):
        cli.sendall(b"GET /front%d HTTP/1.1\r\n\r\n" % i); recv(cli, len(resp))
        time.sleep(0.005)
    os._exit(0)
pids["client"] = client
conn, _ = front.accept()
up = socket.create_connection(back.getsockname())
for i in range(n):  # the front: reads a request, waits, calls the back end for it, answers
    recv(conn, len(b"GET /front%d HTTP/1.1\r\n\r\n" % i))
    time.sleep(0.002)  # the call is in another 4 ms slot about half of the time
    up.sendall(b"GET /back%d HTTP/1.1\r\n\r\n" % i); recv(up, len(resp))
    conn.sendall(resp)
os.waitpid(child, 0); os.waitpid(client, 0)
print(json.dumps(pids))
"""


@needs_ebpf
def test_a_call_made_while_serving_a_request_follows_that_request_s_choice(live_input):
    """A front end that calls a back end for each request, 2 ms after reading it: the call's
    client exchange is sent exactly when the front's server exchange is (its thread serves that
    request: the choice is inherited), though the call often starts in another slot; so the
    sampled traces are whole."""
    li = live_input(probes=["tcp", "http"])
    li.runner.programs.set_sampling(3)
    n = 300
    out = subprocess.run([sys.executable, "-c", NESTED, str(n)], capture_output=True, text=True,
                         check=True, timeout=120)
    pids = json.loads(out.stdout)
    time.sleep(1.0)
    li.runner.programs.set_sampling(1)
    got = [e for e in li.collect() if isinstance(e, HttpEvent) and e.pid == pids["front"]]
    served = {e.path.removeprefix("/front") for e in got if e.direction == "server"}
    called = {e.path.removeprefix("/back") for e in got if e.direction == "client"}
    assert 40 < len(served) < 170, len(served)  # 1 in 3 of 300
    assert called == served
    assert {e.weight for e in got} == {3}


@needs_ebpf
def test_over_its_budget_the_input_samples_and_the_weights_add_up_to_what_happened(live_input):
    """~2,000 exchanges a second for ~3 s against a budget of 300: after its first quarter of a
    second the input has the probe sample; every exchange is either read or counted (exactly),
    about the budget's worth a second are read, and their weights stand for what happened (an
    estimate: requests are chosen by 16 ms slot, so loosely). Quiet again, every exchange."""
    li = live_input(probes=["tcp", "http"], max_exchanges_per_second=300)
    before = li.runner.programs.sampled_out()
    n = 3000
    pid = run_exchanges(n, pause=0.001)
    time.sleep(1.0)
    sent = [e for e in li.collect() if isinstance(e, HttpEvent) and e.pid == pid]
    assert max(e.weight for e in sent) >= 3  # (quiet since, it may be back at 1 already)
    # Exactly: each of the 2n exchanges read or counted (the counter is the host's).
    counted = li.runner.programs.sampled_out() - before
    assert 2 * n <= len(sent) + counted <= 2 * n + 50, (len(sent), counted)
    seconds = n * 0.001 * 1.5  # the script's run, with room for a slow machine
    assert len(sent) < 0.25 * 2 * n * 1.5 + 300 * seconds  # the first quarter second is whole
    assert 0.5 * 2 * n < sum(e.weight for e in sent) < 1.5 * 2 * n
    # Once quiet, the next measurement takes it back to every exchange.
    deadline = time.monotonic() + 10
    while li.runner.sampling.one_in != 1 and time.monotonic() < deadline:
        run_exchanges(1)
        time.sleep(0.3)
    assert li.runner.sampling.one_in == 1


def test_the_red_metrics_count_a_sampled_exchange_n_times():
    from pipeline.metrics import HTTP_SERVER, Aggregator

    m = Aggregator()
    ev = dict(time_ns=1, pid=4242, tid=4242, comm="app", fd=5, direction="server", method="GET",
              path="/a", status=503, duration_ns=20_000_000)
    m.observe([HttpEvent(**ev, weight=8), HttpEvent(**ev)])
    points = [p for p in m.collect(m.next_ns) if p.name == HTTP_SERVER]
    assert len(points) == 1
    p = points[0]
    assert (p.count, p.errors) == (9, 9)
    assert abs(p.sum - 9 * 0.02) < 1e-9


def test_a_sampled_exchange_s_span_says_what_it_stands_for():
    from pipeline.spans import SpanBuilder

    ev = dict(time_ns=1, pid=4242, tid=4242, comm="app", fd=5, direction="client", method="GET",
              path="/a", status=200, duration_ns=1000, boot_ns=1)
    b = SpanBuilder()
    sampled, whole = b.observe([HttpEvent(**ev, weight=8)], 0.0), b.observe([HttpEvent(**ev)], 0.0)
    assert sampled[0].attrs["log_shuttle.sample_weight"] == 8
    assert "log_shuttle.sample_weight" not in whole[0].attrs

