"""HTTPS through the http probe's OpenSSL uprobes: Debian's nginx serving TLS on loopback (a
self-signed certificate made here), curl over HTTPS (a custom BIO: its socket is found from the
syscalls under SSL_write/SSL_read) and a Python `ssl` client (SSL_set_fd, SSL_write_ex and
SSL_read_ex). Every request in nginx's access log is reported exactly once with its method,
path and status on nginx's side, and on the client's side, each with its peer."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import time
from collections import Counter

from common.events import HttpEvent, LossEvent
from inputs.ebpf.tls import system_libssl
from tests.inputs.ebpf.conftest import needs, needs_ebpf

pytestmark = [needs_ebpf, needs("nginx", "curl")]

CURL_FORMAT = "%{http_code} %{local_port} %{num_connects}\\n"


def curl_https(nginx, *paths: str, keep_alive: bool = True) -> tuple[int, list[dict]]:
    args = ["curl", "-s", "--http1.1", "--cacert", str(nginx.cert), "-w", CURL_FORMAT]
    if not keep_alive:
        args += ["-H", "Connection: close"]
    for p in paths:
        args += ["-o", "/dev/null", nginx.url(p)]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, "curl failed"
    rows = []
    for line in out.splitlines():
        code, port, connects = line.split()
        rows.append({"status": int(code), "local_port": int(port), "connects": int(connects)})
    return proc.pid, rows


def test_nginx_over_https_with_curl_every_request_once_on_both_sides(live_input, tls_nginx):
    nginx = tls_nginx
    li = live_input(probes=["tcp", "http"])
    paths = [f"{p}?tls={i}" for i, p in enumerate(["/ok", "/moved", "/missing", "/boom"] * 2)]
    ka_pid, ka_rows = curl_https(nginx, *paths)
    assert sum(r["connects"] for r in ka_rows) == 1, "curl did not keep its connection alive"
    one_pid, (one_row,) = curl_https(nginx, "/ok?tls=single", keep_alive=False)
    expected = {p: (ka_pid, row) for p, row in zip(paths, ka_rows)}
    expected["/ok?tls=single"] = (one_pid, one_row)

    access = nginx.access()
    assert len(access) == len(expected)
    servers = nginx.pids()

    def https(events):
        return [e for e in events if isinstance(e, HttpEvent) and "?tls=" in e.path]

    li.wait_for(lambda evs: len(https(evs)) >= 2 * len(expected), timeout=60,
                what=f"{2 * len(expected)} HTTPS exchanges (both sides)")
    time.sleep(0.5)  # anything reported twice would come now
    events = li.collect()
    assert not [e for e in events if isinstance(e, LossEvent)]
    served = [e for e in https(events) if e.pid in servers]
    assert Counter((e.method, e.path, e.status) for e in served) == \
        Counter((a["method"], a["path"], a["status"]) for a in access)
    by_path = {e.path: e for e in served}
    for p, (pid, row) in expected.items():
        s = by_path[p]
        assert (s.direction, s.comm, s.peer_addr, s.peer_port, s.tls) == \
            ("server", "nginx", "127.0.0.1", row["local_port"], True)
        assert s.duration_ns > 0
    clients = [e for e in https(events) if e.direction == "client"]
    assert Counter(e.path for e in clients) == Counter(list(expected))  # each once
    for c in clients:
        pid, row = expected[c.path]
        assert (c.pid, c.comm, c.method, c.status, c.tls) == (pid, "curl", "GET", row["status"], True)
        assert (c.peer_addr, c.peer_port) == ("127.0.0.1", nginx.port)
        assert by_path[c.path].duration_ns <= c.duration_ns  # the server's part is inside


PY_CLIENT = textwrap.dedent("""
    import http.client, ssl, sys, time
    time.sleep(float(sys.argv[3]))  # libssl is mapped from here on
    ctx = ssl.create_default_context(cafile=sys.argv[2])
    conn = http.client.HTTPSConnection("127.0.0.1", int(sys.argv[1]), context=ctx)
    for method, path in [("GET", "/ok?py=1"), ("POST", "/missing?py=2"), ("GET", "/boom?py=3")]:
        conn.request(method, path, body=b"x" if method == "POST" else None)
        r = conn.getresponse()
        r.read()
        print(path, r.status, conn.sock.getsockname()[1], flush=True)
""")


def run_python_client(nginx, *, delay: float = 0.0, env: dict | None = None):
    proc = subprocess.run([sys.executable, "-c", PY_CLIENT, str(nginx.port), str(nginx.cert),
                           str(delay)], capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 0, proc.stderr
    seen = {}
    for line in proc.stdout.splitlines():
        path, status, port = line.split()
        seen[path] = (int(status), int(port))
    return seen


def check_python_client(li, nginx, seen: dict) -> None:
    def python_client(events):
        return [e for e in events if isinstance(e, HttpEvent) and "?py=" in e.path
                and e.direction == "client"]

    li.wait_for(lambda evs: len(python_client(evs)) >= 3, timeout=60,
                what="the Python client's 3 HTTPS requests")
    time.sleep(0.5)
    events = li.collect()
    clients = python_client(events)
    assert sorted((e.method, e.path, e.status) for e in clients) == \
        sorted([("GET", "/ok?py=1", 200), ("POST", "/missing?py=2", 404), ("GET", "/boom?py=3", 500)])
    assert sorted((e.path, e.status) for e in clients) == sorted((p, s) for p, (s, _) in seen.items())
    assert {(e.peer_addr, e.peer_port) for e in clients} == {("127.0.0.1", nginx.port)}
    assert len({e.pid for e in clients}) == 1
    served = [e for e in events if isinstance(e, HttpEvent) and "?py=" in e.path
              and e.direction == "server"]
    assert sorted((e.method, e.path, e.status, e.peer_port) for e in served) == \
        sorted((m, p, seen[p][0], seen[p][1]) for m, p in
               [("GET", "/ok?py=1"), ("POST", "/missing?py=2"), ("GET", "/boom?py=3")])


def test_python_ssl_client_is_seen_with_its_peer(live_input, tls_nginx):
    li = live_input(probes=["tcp", "http"])
    check_python_client(li, tls_nginx, run_python_client(tls_nginx))


def test_a_libssl_that_a_process_maps_later_is_attached(live_input, tls_nginx, tmp_path):
    """A copy of libssl (another file, as a container's would be), that no process mapped when
    the input started: the scan of new processes' maps finds it."""
    libdir = tmp_path / "lib"
    libdir.mkdir()
    system = next(p for p in system_libssl() if p.endswith(".so.3"))
    shutil.copy(system, libdir / "libssl.so.3")
    li = live_input(probes=["tcp", "http"])
    env = {**os.environ, "LD_LIBRARY_PATH": str(libdir)}
    seen = run_python_client(tls_nginx, delay=2.5, env=env)  # > the scan interval
    check_python_client(li, tls_nginx, seen)
    assert str(libdir / "libssl.so.3") in " ".join(li.runner.tls.attached.values())
