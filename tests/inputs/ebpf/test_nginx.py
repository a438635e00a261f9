"""The http probe against the real nginx of Debian: curl with and without keep-alive, and wrk's
concurrent load. Every request in nginx's access log is reported exactly once, with the same
method, path and status; durations are positive and no longer than the client saw; curl's side
is reported as client requests with the right peer."""

from __future__ import annotations

import subprocess
import time
from collections import Counter

from common.events import ConnEvent, HttpEvent, LossEvent
from tests.inputs.ebpf.conftest import needs, needs_ebpf

pytestmark = [needs_ebpf, needs("nginx", "curl", "wrk")]

PATHS = [("/ok", 200), ("/moved", 301), ("/missing", 404), ("/boom", 500)]
WRK_SCRIPT = """
counter = 0
paths = {"/ok", "/moved", "/missing", "/boom"}
request = function()
  counter = counter + 1
  return wrk.format("GET", paths[(counter % 4) + 1] .. "?wrk=" .. counter)
end
"""
CURL_FORMAT = "%{http_code} %{time_total} %{local_port} %{num_connects}\\n"


def curl(*urls: str, keep_alive: bool = True) -> tuple[int, list[dict]]:
    """Run curl once on these URLs (one connection for all with keep-alive); its pid and, per
    transfer, what it measured."""
    args = ["curl", "-s", "-w", CURL_FORMAT]
    if not keep_alive:
        args += ["-H", "Connection: close"]
    for url in urls:
        args += ["-o", "/dev/null", url]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0
    rows = []
    for line in out.splitlines():
        code, total, port, connects = line.split()
        rows.append({"status": int(code), "time_ns": int(float(total) * 1e9),
                     "local_port": int(port), "connects": int(connects)})
    return proc.pid, rows


def test_nginx_requests_are_reported_exactly_once_on_both_sides(live_input, nginx, tmp_path):
    li = live_input(probes=["process", "tcp", "http"])
    seen_by_curl = {}  # path -> (curl pid, curl's measures)
    # Without keep-alive: one connection per request (one curl each).
    for i, (path, _) in enumerate(PATHS):
        p = f"{path}?single={i}"
        pid, (row,) = curl(nginx.url(p), keep_alive=False)
        seen_by_curl[p] = (pid, row)
    # With keep-alive: one curl, one connection, every path twice.
    ka_paths = [f"{path}?ka={i}" for i, (path, _) in enumerate(PATHS * 2)]
    ka_pid, rows = curl(*(nginx.url(p) for p in ka_paths))
    assert sum(r["connects"] for r in rows) == 1, "curl did not keep its connection alive"
    for p, row in zip(ka_paths, rows):
        seen_by_curl[p] = (ka_pid, row)
    # A concurrent load: 8 connections at once, keep-alive, for one second.
    script = tmp_path / "paths.lua"
    script.write_text(WRK_SCRIPT)
    wrk = subprocess.run(["wrk", "-t1", "-c8", "-d1s", "-s", str(script), nginx.url("/")],
                         capture_output=True, text=True, timeout=60)
    assert wrk.returncode == 0, wrk.stderr

    access = nginx.access()
    assert len(access) > len(seen_by_curl) + 100, "wrk made too few requests to mean anything"
    servers = nginx.pids()

    def server_events(events):
        return [e for e in events if isinstance(e, HttpEvent) and e.pid in servers]

    li.wait_for(lambda evs: len(server_events(evs)) >= len(access), timeout=120,
                what=f"{len(access)} server-side requests of nginx")
    time.sleep(1.0)  # anything reported twice would come now
    # Read the log again: nginx logs a request after its response, and wrk's last responses
    # may have been logged after wrk exited (the first read only sized the wait).
    access = nginx.access()
    events = li.collect()
    assert not [e for e in events if isinstance(e, LossEvent)], "events were lost"
    served = server_events(events)

    # Exactly once, same method, path and status (every path is unique).
    logged = Counter((a["method"], a["path"], a["status"]) for a in access)
    reported = Counter((e.method, e.path, e.status) for e in served)
    assert reported == logged
    assert max(reported.values()) == 1
    assert {e.status for e in served} == {200, 301, 404, 500}
    for e in served:
        assert e.direction == "server" and e.comm == "nginx" and e.duration_ns > 0
        assert e.peer_addr == "127.0.0.1"
    by_path = {e.path: e for e in served}
    # The peer nginx saw is curl's local port; the same connection served all keep-alive requests.
    for p, (pid, row) in seen_by_curl.items():
        assert by_path[p].peer_port == row["local_port"]
        assert 0 < by_path[p].duration_ns <= row["time_ns"]
    assert len({(by_path[p].pid, by_path[p].fd) for p in ka_paths}) == 1
    log_of = {a["path"]: a for a in access}
    assert [log_of[p]["connection_requests"] for p in ka_paths] == list(range(1, 9))
    # wrk's requests, as nginx served them, on 8 connections.
    wrk_served = [e for e in served if "?wrk=" in e.path]
    assert len({(e.pid, e.fd, e.peer_port) for e in wrk_served}) == 8

    # curl's side: client requests, to nginx's address and port, no longer than curl measured.
    clients = {e.path: e for e in events if isinstance(e, HttpEvent) and e.direction == "client"
               and e.comm == "curl"}
    for p, (pid, row) in seen_by_curl.items():
        c = clients[p]
        assert (c.pid, c.method, c.status) == (pid, "GET", row["status"])
        assert (c.peer_addr, c.peer_port) == ("127.0.0.1", nginx.port)
        assert 0 < c.duration_ns <= row["time_ns"]
        assert by_path[p].duration_ns <= c.duration_ns  # the server's part is inside the client's
    assert [clients[p].status for p in ka_paths] == [s for _, s in PATHS * 2]
    # wrk's side too: every request it completed came back as a client request.
    wrk_clients = [e for e in events if isinstance(e, HttpEvent) and e.comm == "wrk"]
    assert len(wrk_clients) >= len(wrk_served) - 8  # at most one in flight per connection at exit
    # And the tcp probe saw curl's connections accepted by nginx.
    accepted = {e.dport for e in events if isinstance(e, ConnEvent) and e.kind == "accept"
                and e.pid in servers}
    assert {row["local_port"] for _, row in seen_by_curl.values()} <= accepted
