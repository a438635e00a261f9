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
    assert s.update(0, 0.0) is None  # the first call only starts the count
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
    assert Sampling(0).update(10**9, 1.0) is None  # no budget: never samples


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
req = b"GET /s HTTP/1.1\r\nHost: a\r\n\r\n"
resp = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
def recv(s, k):
    got = b""
    while len(got) < k:
        got += s.recv(k - len(got))
start = time.monotonic()
for i in range(n):
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
def test_one_in_n_is_sent_with_its_weight_and_every_other_one_is_counted(live_input):
    li = live_input(probes=["tcp", "http"])
    programs = li.runner.programs
    programs.set_sampling(4)
    before = programs.sampled_out()
    n = 1000
    pid = run_exchanges(n)
    time.sleep(0.5)
    programs.set_sampling(1)
    counted = programs.sampled_out() - before

    def mine(events):
        return [e for e in events if isinstance(e, HttpEvent) and e.pid == pid]

    sent = mine(li.wait_for(mine, what="the sampled exchanges", timeout=30))
    time.sleep(0.5)
    sent = mine(li.collect())
    assert {e.weight for e in sent} == {4}
    assert {e.direction for e in sent} == {"server", "client"}
    # 2,000 exchanges (both sides), 1 in 4 sent: 500 on average, sd ~19.
    assert 350 < len(sent) < 650, len(sent)
    # Every other one was counted in the kernel (the counter is the host's: other HTTP on the
    # machine meanwhile could only add to it).
    assert 2 * n - len(sent) <= counted <= 2 * n - len(sent) + 50, (counted, len(sent))

    # Back to every exchange: all sent, weight 1.
    pid = run_exchanges(200)

    def all_of(events):
        got = mine(events)
        return got if len([e for e in got if e.pid == pid]) >= 400 else None

    sent = [e for e in li.wait_for(all_of, what="every exchange", timeout=30) if e.pid == pid]
    assert len(sent) == 400 and {e.weight for e in sent} == {1}


@needs_ebpf
def test_over_its_budget_the_input_samples_and_the_weights_add_up_to_what_happened(live_input):
    li = live_input(probes=["tcp", "http"], max_exchanges_per_second=300)
    # ~2,000 exchanges a second (both sides) for ~3 s: well over the budget.
    n = 3000
    pid = run_exchanges(n, pause=0.001)
    time.sleep(1.5)
    sent = [e for e in li.collect() if isinstance(e, HttpEvent) and e.pid == pid]
    weights = [e.weight for e in sent]
    assert max(weights) >= 3, weights[-20:]  # it did sample, once the first second was measured
    assert li.runner.stats.sampling_one_in > 1 or li.runner.sampling.rate < 300 * 1.25
    assert li.runner.stats.sampled_out > 0
    # What was sent, weighted, stands for what happened (an estimate: within a quarter).
    assert 0.75 * 2 * n < sum(weights) < 1.25 * 2 * n, (sum(weights), len(sent))
    assert len(sent) < 2 * n * 0.7
    # Once quiet, the next measurement takes it back to every exchange.
    run_exchanges(10)
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


def test_a_sampled_span_does_not_wait_for_a_parent_that_was_likely_not_sent():
    """Independent 1-in-N choices on the client's and the server's side leave most sampled
    server spans without their client span: such a span goes at once, as a root, instead of
    waiting ``hold`` seconds (thousands of them would pile up); one whose parent did come is
    still linked to it."""
    from common.events import ConnEvent
    from pipeline.spans import SpanBuilder

    b = SpanBuilder()
    conns = [ConnEvent(kind="connect", time_ns=1, pid=10, tid=10, comm="cli", family=4,
                       saddr="127.0.0.1", sport=5000, daddr="127.0.0.1", dport=80, fd=3),
             ConnEvent(kind="accept", time_ns=2, pid=20, tid=20, comm="srv", family=4,
                       saddr="127.0.0.1", sport=80, daddr="127.0.0.1", dport=5000, fd=7)]
    b.observe(conns, 0.0)
    server = dict(pid=20, tid=20, comm="srv", fd=7, direction="server", method="GET", path="/",
                  status=200)
    lone = HttpEvent(time_ns=100, duration_ns=10, boot_ns=100, **server, weight=4)
    out = b.observe([lone], 0.0)
    assert len(out) == 1 and out[0].parent_span_id == "" and not b.pending
    # Unsampled, the same server exchange waits for its client's span (it comes later).
    whole = HttpEvent(time_ns=200, duration_ns=10, boot_ns=200, **server)
    assert b.observe([whole], 0.0) == [] and b.pending
    client = HttpEvent(time_ns=190, duration_ns=40, boot_ns=190, pid=10, tid=10, comm="cli", fd=3,
                       direction="client", method="GET", path="/", status=200)
    out = b.observe([client], 0.0)
    assert {s.kind for s in out} == {"client", "server"}
    by_kind = {s.kind: s for s in out}
    assert by_kind["server"].parent_span_id == by_kind["client"].span_id
    # A sampled server exchange whose client span did come first is linked to it.
    c2 = HttpEvent(time_ns=300, duration_ns=40, boot_ns=300, pid=10, tid=10, comm="cli", fd=3,
                   direction="client", method="GET", path="/", status=200, weight=4)
    s2 = HttpEvent(time_ns=310, duration_ns=10, boot_ns=310, **server, weight=4)
    out = {s.kind: s for s in b.observe([c2, s2], 0.0)}
    assert out["server"].parent_span_id == out["client"].span_id
