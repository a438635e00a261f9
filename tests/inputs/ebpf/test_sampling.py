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
    assert s.update(0, 0, 0.0) is None  # the first call only starts the count
    assert not s.due(0.5) and s.due(1.0)
    assert s.update(500, 0, 0.5) is None  # less than an interval: nothing measured yet
    assert s.update(900, 0, 1.0) is None  # 900/s: within the budget, every exchange
    assert s.update(900 + 4500, 0, 2.0) == 5  # 4,500/s: 1 in 5
    assert s.update(5400 + 4100, 0, 3.0) is None  # 4,100/s still needs 5
    assert s.update(9500 + 3900, 0, 4.0) is None  # 3,900/s: 4 would do, but not by a fifth
    assert s.update(13400 + 3000, 0, 5.0) == 4  # 3,000/s: 4 with the margin (3,750 over 4,000)
    assert s.update(16400 + 10, 0, 6.0) == 1  # quiet: every exchange again
    assert s.rate == 10
    # 500/s of pipelining connections (not sampled) leave 500/s of the budget: 2,000/s of the
    # rest need 1 in 4.
    assert s.update(16410 + 2000, 500, 7.0) == 4 and s.rate == 2500
    big = Sampling(1)
    big.update(0, 0, 0.0)
    assert big.update(10**9, 0, 1.0) == Sampling.MAX_ONE_IN  # the weight's 16 bits
    assert Sampling(0).update(10**9, 0, 1.0) is None and not Sampling(0).due(5.0)  # no budget


def test_a_surge_is_measured_at_once_and_only_raises_n_before_the_interval():
    s = Sampling(1000, interval=1.0)
    s.update(0, 0, 0.0)
    assert not s.due(0.02, read=30)  # 30 records in 20 ms: within twice the budget's share
    assert s.due(0.03, read=100)  # 130 in 30 ms: a surge, measured now rather than in 1 s
    # 500 exchanges in 30 ms, over no less than 50 ms (a few ms of a burst say little):
    # 10,000/s, 1 in 10 at once.
    assert s.update(500, 0, 0.03) == 10
    assert not s.due(0.04, read=5)  # the count starts again at the measurement
    # Sooner than the interval, a lower rate does not bring N down (a short window is noisy)...
    assert s.update(510, 0, 0.5) is None and s.one_in == 10
    # ...the interval's measurement does, with its margin.
    assert s.update(510 + 500, 0, 1.03) == 1


def test_a_budget_must_not_be_negative():
    import msgspec
    import pytest
    from inputs.ebpf.config import EbpfInputConfig

    assert EbpfInputConfig(max_exchanges_per_second=0).max_exchanges_per_second == 0  # none
    assert EbpfInputConfig().max_exchanges_per_second == 5000  # the default budget
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


def settled(li, pick, *, quiet: float = 0.6, timeout: float = 30.0) -> list:
    """What ``pick`` takes of the input's events once no more have come for ``quiet`` s."""
    got, last, deadline = pick(li.collect()), time.monotonic(), time.monotonic() + timeout
    while time.monotonic() - last < quiet and time.monotonic() < deadline:
        time.sleep(0.1)
        now = pick(li.collect())
        if len(now) != len(got):
            got, last = now, time.monotonic()
    return got


def sent_of(li, pid: int, n: int) -> list[HttpEvent]:
    """The exchanges of ``pid`` the input sent, once there are ``n`` of them."""
    def mine(events):
        got = [e for e in events if isinstance(e, HttpEvent) and e.pid == pid]
        return got if len(got) >= n else None

    return li.wait_for(mine, timeout=30, what=f"{n} exchanges of {pid}")


def run_exchanges(n: int, pause: float = 0.0) -> int:
    out = subprocess.run([sys.executable, "-c", EXCHANGES, str(n), str(pause)],
                         capture_output=True, text=True, check=True, timeout=120)
    return json.loads(out.stdout)["pid"]


@needs_ebpf
def test_one_in_n_is_sent_with_its_weight_both_sides_together_and_the_rest_counted(live_input):
    """At 1 in 4, requests 5 ms apart (16 ms slots of about 3 requests): about a quarter are sent,
    each on both sides (the client's write and the server's read fall in one slot but for one
    that straddles its edge), with weight 4; every other exchange is counted in the kernel.
    Back at 1, every one is sent with weight 1."""
    li = live_input(probes=["tcp", "http"])
    programs = li.runner.programs
    programs.set_sampling(4)
    before = programs.sampled_out()
    n = 400
    pid = run_exchanges(n, pause=0.005)
    programs.set_sampling(1)
    counted = programs.sampled_out() - before  # final: the script has read every response

    sent = sent_of(li, pid, 2 * n - counted)
    assert {e.weight for e in sent} == {4}
    client = {e.path for e in sent if e.direction == "client"}
    server = {e.path for e in sent if e.direction == "server"}
    # 400 requests in ~125 slots, 1 slot in 4: 100 requests on average (sd ~16).
    assert 40 < len(client) < 160 and 40 < len(server) < 160, (len(client), len(server))
    # The two sides chosen together: apart only for a request straddling a slot's edge.
    assert len(client ^ server) <= max(4, len(client) // 10), sorted(client ^ server)
    # Every other exchange was counted in the kernel (the counter is the host's: other HTTP on
    # the machine meanwhile could only add to it; none runs beside the tests).
    assert 2 * n - len(sent) <= counted <= 2 * n - len(sent) + 500, (counted, len(sent))

    # Back to every exchange: all sent, weight 1.
    pid = run_exchanges(200)
    sent = sent_of(li, pid, 400)
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
    time.sleep(0.002)  # the call starts in another 16 ms slot 1 time in 8
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
    li.runner.programs.set_sampling(1)
    got = settled(li, lambda evs: [e for e in evs if isinstance(e, HttpEvent)
                                   and e.pid == pids["front"]])
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
    started = time.monotonic()
    pid = run_exchanges(n, pause=0.001)
    seconds = time.monotonic() - started
    counted = li.runner.programs.sampled_out() - before  # final: every response was read

    sent = sent_of(li, pid, 2 * n - counted)
    assert max(e.weight for e in sent) >= 3  # (quiet since, it may be back at 1 already)
    # Exactly: each of the 2n exchanges read or counted (the counter is the host's).
    assert len(sent) + counted <= 2 * n + 500, (len(sent), counted)
    # At most about the budget a second once sampling began, after the first measurement (a
    # quarter of a second and a round of ~2,000 a second, whole): a sampling begun a second late
    # would send ~1,500 more.
    assert len(sent) < 2000 * 0.4 + 300 * seconds * 1.25 + 300, (len(sent), seconds)
    # The weights stand for what happened: an estimate (~190 slots, a few in 7: sd ~18%).
    assert 0.35 * 2 * n < sum(e.weight for e in sent) < 1.65 * 2 * n
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

