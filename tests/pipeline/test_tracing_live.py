"""Tracing with real programs: the agent (`--ebpf-http-tracing`) watching two local Python
services, frontend -> backend, and curl. Spans come out of the real pipeline as NDJSON
``type: "span"`` records; the trace is one tree across the two processes, rooted at curl's
``traceparent``."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.harness import Agent, agent_command, agent_env, wait_for
from tests.inputs.ebpf.conftest import ebpf_unavailable, needs, needs_ebpf

SERVICES = Path(__file__).with_name("services.py")
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Service:
    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen([sys.executable, str(SERVICES), *args],
                                     stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
        assert self.proc.stdout.readline().strip() == b"ready"

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


@pytest.fixture
def chain(tmp_path):
    back_port, front_port = free_port(), free_port()
    back_log, front_log = tmp_path / "back.log", tmp_path / "front.log"
    back = Service("backend", str(back_port), str(back_log))
    front = Service("frontend", str(front_port), str(back_port), str(front_log))
    yield {"front_port": front_port, "back_port": back_port, "front": front, "back": back,
           "front_log": front_log, "back_log": back_log}
    front.stop()
    back.stop()


def curl(url: str, *headers: str) -> int:
    args = ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", url]
    for h in headers:
        args += ["-H", h]
    return int(subprocess.run(args, capture_output=True, text=True, check=True).stdout)


def spans_of(records: list[dict], pids: set[int]) -> list[dict]:
    return [r for r in records if r.get("type") == "span"
            and r["resource"]["process.pid"] in pids]


@needs_ebpf
@needs("curl")
def test_frontend_backend_is_one_trace_under_curls_traceparent(chain, tmp_path):
    pids = {chain["front"].proc.pid, chain["back"].proc.pid}
    logs = (chain["front_log"], chain["back_log"])
    with start_agent(tmp_path, "--input-file", str(logs[0]), "--input-file", str(logs[1])) \
            as agent:
        url = f"http://127.0.0.1:{chain['front_port']}/front/"

        def warm():  # until both files are followed (their first writes seen)
            assert curl(url + "warm") == 200
            recs = agent.records()
            return all(any(r.get("path") == str(p) and r.get("trace_id") for r in recs)
                       for p in logs)
        wait_for(warm, timeout=30, interval=0.3, what="joined lines of both services")
        assert curl(url + "tp1", f"traceparent: 00-{TRACE}-{PARENT}-01",
                    "tracestate: vendor=1") == 200
        assert curl(url + "plain2") == 200

        def complete():
            recs = agent.records()
            spans = [s for s in spans_of(recs, pids) if "warm" not in s["attrs"]["url.path"]]
            lines = [r for r in recs if r.get("path") in map(str, logs)
                     and ("id=tp1" in r["line"] or "id=plain2" in r["line"])]
            return len(spans) >= 6 and len(lines) >= 6
        wait_for(complete, timeout=30, what="six spans and six lines")
        assert agent.stop() == 0, agent.stderr()
    records = agent.records()
    spans = [s for s in spans_of(records, pids) if "warm" not in s["attrs"]["url.path"]]
    assert len(spans) == 6
    curls = {s["span_id"]: s for s in records if s.get("type") == "span"
             and s["resource"]["process.executable.name"] == "curl"}
    for rid in ("tp1", "plain2"):
        tree = [s for s in spans if s["attrs"]["url.path"].endswith("/" + rid)]
        by = {(s["resource"]["process.pid"], s["kind"]): s for s in tree}
        front = by[(chain["front"].proc.pid, "server")]
        call = by[(chain["front"].proc.pid, "client")]
        back = by[(chain["back"].proc.pid, "server")]
        assert front["trace_id"] == call["trace_id"] == back["trace_id"]
        assert call["parent_span_id"] == front["span_id"] and call["parent_how"] == "thread"
        assert back["parent_span_id"] == call["span_id"] and back["parent_how"] == "connection"
        assert front["time"] <= call["time"] <= back["time"]
        assert back["end_ns"] <= call["end_ns"] <= front["end_ns"]
        assert call["attrs"]["server.port"] == chain["back_port"]
        assert front["attrs"]["server.port"] == chain["front_port"]
        assert front["attrs"]["http.response.status_code"] == 200
        assert front["resource"]["service.name"].startswith("python")
        assert "services.py frontend" in front["resource"]["process.command_line"]
        if rid == "tp1":
            assert front["trace_id"] == TRACE and front["parent_span_id"] == PARENT
            assert front["parent_how"] == "traceparent" and front["tracestate"] == "vendor=1"
        else:
            # curl ran on this host too: its client span is the frontend's parent, the root.
            root = curls[front["parent_span_id"]]
            assert front["parent_how"] == "connection" and root["kind"] == "client"
            assert root["trace_id"] == front["trace_id"] != TRACE
            assert root["parent_span_id"] == "" and root["parent_how"] == ""
            assert root["attrs"]["server.port"] == chain["front_port"]
        # Each service's lines under its own server span (the frontend's client call is made
        # by the thread serving the frontend's request: its lines belong to that request).
        mine = [r for r in records if r.get("path") in map(str, logs) and
                r["line"].endswith("id=" + rid)]
        assert len(mine) == 3
        for r in mine:
            want = front if r["path"] == str(logs[0]) else back
            assert (r["trace_id"], r["span_id"]) == (want["trace_id"], want["span_id"]), r
            assert r["request"]["path"] == want["attrs"]["url.path"]


def start_agent(tmp_path, *args: str, **env_extra: str) -> Agent:
    # Every exchange (no budget) unless the test sets one: 16 clients' bursts may outrun the
    # default budget, and these tests join each line to exactly its exchange.
    env_extra.setdefault("LOG_SHUTTLE_INPUTS__EBPF__MAX_EXCHANGES_PER_SECOND", "0")
    env = agent_env(**{k: v for k, v in os.environ.items() if k.startswith("LOG_SHUTTLE_")},
                    **env_extra)
    agent = Agent(tmp_path, "--ebpf-http-tracing", "--log-level", "debug", *args, env=env)
    wait_for(lambda: "tracing with probes" in agent.stderr() or agent.proc.poll() is not None,
             timeout=90, what="the eBPF input to start")
    assert agent.proc.poll() is None, agent.stderr()
    return agent


def get(port: int, path: str, conn=None) -> int:
    import http.client
    own = conn is None
    conn = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", path)
    resp = conn.getresponse()
    resp.read()
    if own:
        conn.close()
    return resp.status


def warm_up(agent: Agent, port: int, log: Path) -> None:
    """Requests until a line comes out joined: the file is followed from then on."""
    def joined():
        get(port, "/warm/up")
        return any(r.get("trace_id") and r.get("path") == str(log) for r in agent.records())
    wait_for(joined, timeout=30, interval=0.2, what="a first joined line")


def lines_with_ids(records: list[dict], log: Path) -> dict[str, dict]:
    out = {}
    for r in records:
        if r.get("path") == str(log) and " id=" in r.get("line", ""):
            rid = r["line"].rsplit("id=", 1)[1]
            if rid != "up":
                out[rid] = r
    return out


def many_clients(port: int, clients: int = 16, requests: int = 25) -> list[str]:
    """``requests`` GETs of /j/<id> from each of ``clients`` threads at once, each on its own
    keep-alive connection; the ids."""
    import http.client
    import threading

    def client(c: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)  # keep-alive
        for r in range(requests):
            assert get(port, f"/j/c{c}r{r}", conn) == 200
        conn.close()

    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return [f"c{c}r{r}" for c in range(clients) for r in range(requests)]


def threaded_server_under_clients(tmp_path, requests: int = 25, **env: str):
    """A threaded Python service logging a line per request, followed by the agent (with
    ``env``), under ``many_clients`` (``requests`` each): the stopped agent, the ids, the
    service's lines by id, and its spans by span id."""
    port, log = free_port(), tmp_path / "app.log"
    svc = Service("backend", str(port), str(log))
    try:
        with start_agent(tmp_path, "--input-file", str(log), **env) as agent:
            warm_up(agent, port, log)
            ids = many_clients(port, requests=requests)
            lines = wait_for(lambda: (x := lines_with_ids(agent.records(), log)) and
                             len(x) >= len(ids) and x, timeout=30, what="every line")
            assert agent.stop() == 0, agent.stderr()
        records = agent.records()
    finally:
        svc.stop()
    spans = {s["span_id"]: s for s in records if s.get("type") == "span"
             and s["resource"]["process.pid"] == svc.proc.pid}
    return agent, ids, lines, spans


@needs_ebpf
def test_the_first_requests_after_start_are_joined_with_no_warm_up(tmp_path):
    """The eBPF input tells the pipeline at once which files' writes the probe notes: the first
    lines, which the file input reads before any write event reached the pipeline, wait for
    their writes instead of passing unjoined (they used to: every test here warmed up). The
    join's outcomes are counted in /metrics."""
    from tests.agent.observe_helpers import metrics, value

    port, log = free_port(), tmp_path / "app.log"
    listen = f"127.0.0.1:{free_port()}"
    svc = Service("backend", str(port), str(log))
    try:
        with start_agent(tmp_path, "--input-file", str(log), "--http-listen", listen) as agent:
            wait_for(lambda: "following writes to log files: 1 descriptors" in agent.stderr(),
                     what="the service's log file followed")
            ids = [f"f{i}" for i in range(5)]
            for rid in ids:
                assert get(port, f"/first/{rid}") == 200
            lines = wait_for(lambda: (x := lines_with_ids(agent.records(), log)) and
                             len(x) >= len(ids) and x, timeout=30, what="the five lines")
            joined = wait_for(lambda: value(metrics(listen), "log_shuttle_component_log_join_"
                                            "lines_total", component="pipeline",
                                            outcome="joined"), what="the join's counts")
            assert joined >= len(ids)
            assert agent.stop() == 0, agent.stderr()
    finally:
        svc.stop()
    assert {rid: lines[rid].get("request", {}).get("path") for rid in ids} == \
        {rid: f"/first/{rid}" for rid in ids}


@needs_ebpf
def test_a_threaded_server_s_lines_are_joined_to_their_own_requests(tmp_path):
    agent, ids, lines, spans = threaded_server_under_clients(tmp_path)
    joined = [rid for rid, r in lines.items() if r.get("trace_id")]
    wrong = [rid for rid in joined
             if lines[rid]["request"]["path"] != f"/j/{rid}"
             or spans[lines[rid]["span_id"]]["attrs"]["url.path"] != f"/j/{rid}"
             or spans[lines[rid]["span_id"]]["trace_id"] != lines[rid]["trace_id"]]
    share = len(joined) / len(ids)
    print(f"threaded server: {len(joined)}/{len(ids)} lines joined ({share:.1%}), "
          f"{len(wrong)} wrong")
    print(*[ln.split("DEBUG ", 1)[1] for ln in agent.stderr().splitlines()
            if "DEBUG log join" in ln], sep="\n")
    assert wrong == []
    assert share >= 0.99
    for rid in joined:
        assert lines[rid]["request"] == {"method": "GET", "path": f"/j/{rid}", "status": 200}


@needs_ebpf
def test_under_a_budget_sampled_requests_lines_are_joined_and_the_others_do_not_wait(tmp_path):
    """A budget of 100 exchanges a second against 1,280 requests from 16 threads: the probe
    samples, the lines of sampled requests are joined to exactly their exchange (its span
    carries the weight), and the lines of the others are counted as without a request (the
    logwrite probe names no request for them) instead of waiting for a span that never comes
    (unmatched).

    The probe chooses requests by their 16 ms time slot, 1 in N (N about 10 here): the clients
    run long enough after sampling begins (over a second, some 60 slots) that a run with no
    chosen slot is out of the question (0.9^60: 2 in 1,000; at 400 requests, ~0.4 s of sampling,
    a CI run had none and failed)."""
    import re
    agent, ids, lines, spans = threaded_server_under_clients(
        tmp_path, requests=80, LOG_SHUTTLE_INPUTS__EBPF__MAX_EXCHANGES_PER_SECOND="100")
    assert "the http probe sends 1 in" in agent.stderr()
    joined = [rid for rid, r in lines.items() if r.get("trace_id")]
    assert joined and len(joined) < len(ids) * 0.8, len(joined)
    for rid in joined:
        span = spans[lines[rid]["span_id"]]
        assert lines[rid]["request"]["path"] == f"/j/{rid}" == span["attrs"]["url.path"]
    assert any(spans[lines[rid]["span_id"]]["attrs"].get("log_shuttle.sample_weight", 1) > 1
               for rid in joined)
    stats = re.search(r"log join: (\d+) lines of followed files, (\d+) joined, (\d+) ambiguous, "
                      r"(\d+) without a request, (\d+) unmatched", agent.stderr())
    assert stats, agent.stderr()[-2000:]
    _lines, _joined, _ambiguous, no_request, unmatched = map(int, stats.groups())
    assert no_request >= (len(ids) - len(joined)) * 0.9, stats.group(0)
    assert unmatched <= len(ids) * 0.05, stats.group(0)


WRK_SCRIPT = """
local counter = 0
local paths = {"/ok", "/moved", "/boom", "/missing"}
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("id", threads)
end
function request()
  counter = counter + 1
  return wrk.format("GET", paths[counter % 4 + 1] .. "?t=" .. id .. "&n=" .. counter)
end
"""


@needs_ebpf
@needs("nginx", "wrk")
def test_nginx_access_lines_under_wrk_are_joined_to_exactly_their_exchange(tmp_path):
    from tests.inputs.ebpf.conftest import Nginx
    nginx = Nginx(tmp_path)
    script = tmp_path / "paths.lua"
    script.write_text(WRK_SCRIPT)
    try:
        # wrk at full speed on a shared 2-core machine: ring buffers big enough that the
        # kernel's events are not lost while the input catches up (a lost exchange's line
        # cannot be joined; this test is about the joins being right). For the same reason a
        # line may wait longer than the default 5 s of the pipeline's own time (max_lag): a
        # pipeline behind by seconds on a busy CI host would otherwise give up on lines whose
        # exchanges are merely still queued behind them.
        with start_agent(tmp_path, "--input-file", str(nginx.access_log),
                         LOG_SHUTTLE_INPUTS__EBPF__RING_BUFFER_BYTES=str(128 << 20),
                         LOG_SHUTTLE_PIPELINE__JOIN__MAX_LAG="60") as agent:
            warm_up(agent, nginx.port, nginx.access_log)
            subprocess.run(["wrk", "-t2", "-c16", "-d1s", "-s", str(script),
                            nginx.url("/")], check=True, capture_output=True, timeout=60)
            total = len(nginx.access_log.read_text().splitlines())
            marker = f'"path":"{nginx.access_log}"'.encode()
            wait_for(lambda: agent.stdout().count(marker) >= total, interval=0.5,
                     timeout=60, what="every access-log line")
            assert agent.stop() == 0, agent.stderr()
        records = agent.records()
    finally:
        nginx.stop()
    spans = {s["span_id"]: s for s in records if s.get("type") == "span"
             and s["kind"] == "server" and s["resource"]["process.executable.name"] == "nginx"}
    lines = [r for r in records if r.get("path") == str(nginx.access_log)
             and "?t=" in r["line"]]
    assert len(lines) > 1000
    joined = wrong = ambiguous = 0
    for r in lines:
        pid, method, uri, status, port, _ = r["line"].split()
        if r.get("join") == "ambiguous":
            ambiguous += 1
            assert "trace_id" not in r
            continue
        if not r.get("trace_id"):
            continue
        joined += 1
        span = spans[r["span_id"]]
        if (r["request"] != {"method": method, "path": uri, "status": int(status)}
                or span["attrs"]["url.path"] + "?" + span["attrs"]["url.query"] != uri
                or span["attrs"].get("client.port", int(port)) != int(port)
                or span["resource"]["process.pid"] != int(pid)):
            wrong += 1
    print(f"nginx under wrk: {joined}/{len(lines)} access lines joined "
          f"({joined / len(lines):.1%}), {ambiguous} ambiguous, {wrong} wrong")
    print(*[ln.split("DEBUG ", 1)[1] for ln in agent.stderr().splitlines()
            if "DEBUG log join" in ln or "DEBUG spans" in ln], sep="\n")
    assert wrong == 0, agent.stderr()
    assert joined / len(lines) >= 0.9, agent.stderr()


@needs_ebpf
def test_an_event_loop_s_interleaved_lines_are_never_joined_to_a_wrong_request(tmp_path):
    import threading
    port, log = free_port(), tmp_path / "loop.log"
    svc = Service("eventloop", str(port), str(log))
    try:
        with start_agent(tmp_path, "--input-file", str(log)) as agent:
            get(port, "/warm/up")  # one request alone: the loop serves nothing else meanwhile
            wait_for(lambda: any(r.get("path") == str(log) and "id=up" in r["line"]
                                 for r in agent.records()), timeout=30, what="the first line")
            ids = [f"c{c}r{r}" for c in range(8) for r in range(10)]

            def client(c: int) -> None:
                import http.client
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                for r in range(10):
                    assert get(port, f"/e/c{c}r{r}", conn) == 200
                conn.close()

            threads = [threading.Thread(target=client, args=(c,)) for c in range(8)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            marker = f'"path":"{log}"'.encode()
            wait_for(lambda: agent.stdout().count(marker) >= 3 * len(ids) + 3, interval=0.5,
                     timeout=30, what="every line")
            assert agent.stop() == 0, agent.stderr()
        records = agent.records()
    finally:
        svc.stop()
    lines = [r for r in records if r.get("path") == str(log) and "id=c" in r["line"]]
    assert len(lines) == 3 * len(ids)
    joined = [r for r in lines if r.get("trace_id")]
    ambiguous = [r for r in lines if r.get("join") == "ambiguous"]
    wrong = [r for r in joined if not r["line"].endswith("id=" + r["request"]["path"][3:])]
    print(f"event loop: {len(lines)} lines, {len(joined)} joined, {len(ambiguous)} ambiguous, "
          f"{len(wrong)} wrong")
    assert wrong == []
    # The loop interleaved, and the join saw it doing so: its lines are flagged ambiguous. How
    # many are flagged rather than left unjoined (their writes' exchanges not seen within the
    # hold) depends on the events' timing: 154-190 of 240 on a quiet host, 55 and 79 in runs on
    # a loaded one. Either is right; a join to another request's span is what must never happen.
    assert len(ambiguous) >= len(lines) // 8


def test_log_shuttle_trace_draws_a_live_trace(tmp_path, chain):
    """The frontend -> backend trace drawn from the agent's own NDJSON by `log-shuttle trace`."""
    if not shutil.which("curl") or ebpf_unavailable():
        pytest.skip(ebpf_unavailable() or "needs curl")
    logs = (chain["front_log"], chain["back_log"])
    with start_agent(tmp_path, "--input-file", str(logs[0]), "--input-file", str(logs[1])) \
            as agent:
        url = f"http://127.0.0.1:{chain['front_port']}/front/"

        def warm():
            assert curl(url + "warm") == 200
            recs = agent.records()
            return all(any(r.get("path") == str(p) and r.get("trace_id") for r in recs)
                       for p in logs)
        wait_for(warm, timeout=30, interval=0.3, what="joined lines of both services")
        assert curl(url + "drawn", f"traceparent: 00-{TRACE}-{PARENT}-01") == 200
        wait_for(lambda: sum(r.get("trace_id") == TRACE for r in agent.records()) >= 6,
                 timeout=30, what="the trace's spans and lines")
        assert agent.stop() == 0, agent.stderr()
    r = subprocess.run(agent_command("trace", TRACE, "--from", str(agent.stdout_path)),
                       capture_output=True, text=True, env=agent_env(), timeout=60)
    assert r.returncode == 0, r.stderr
    out = r.stdout.splitlines()
    print(r.stdout)
    # curl's own request carried the traceparent: its client span is the one the header names,
    # the root; the frontend's server span its child.
    assert out[0].startswith(f"trace {TRACE}  4 spans, 3 log lines")
    assert "CLIENT GET /front/drawn" in out[1] and "[curl pid" in out[1]
    front = next(i for i, x in enumerate(out) if "SERVER GET /front/drawn" in x)
    call = next(i for i, x in enumerate(out) if "CLIENT GET /back/drawn" in x)
    back = next(i for i, x in enumerate(out) if "SERVER GET /back/drawn" in x)
    assert front < call < back
    assert out[call].index("CLIENT") > out[front].index("SERVER")
    assert out[back].index("SERVER") > out[call].index("CLIENT")
    # The frontend's two lines right under its span (before its child), the backend's under its.
    front_lines = [x for x in out[front + 1:call] if x.rstrip().endswith("id=drawn")]
    back_lines = [x for x in out[back + 1:] if x.rstrip().endswith("id=drawn")]
    assert len(front_lines) == 2 and "frontend got" in front_lines[0]
    assert "frontend backend answered" in front_lines[1]
    assert len(back_lines) == 1 and "backend handled" in back_lines[0]
