"""The known nginx load of the RED metrics tests: 2,000 requests over 4 routes with ids (numbers,
UUIDs, hex tokens), 15% answered 404 and 10% 500, and the route each must be counted under
(the test's own mapping, not the agent's templating)."""

from __future__ import annotations

import re
import subprocess
import uuid
from pathlib import Path

ROUTES_CONF = """
        location ~ ^/users/[0-9]+$ { return 200 "user\\n"; }
        location ~ ^/orders/[0-9a-f-]+/items$ { return 200 "items\\n"; }
        location ~ ^/boom/[0-9]+$ { return 500 "boom\\n"; }
        location / { return 404; }
"""
EXPECTED_ROUTE = [(re.compile(r"^/users/\d+$"), "/users/{id}"),
                  (re.compile(r"^/orders/[0-9a-f-]{36}/items$"), "/orders/{id}/items"),
                  (re.compile(r"^/missing/[0-9a-f]{12}$"), "/missing/{id}"),
                  (re.compile(r"^/boom/\d+$"), "/boom/{id}")]


def route_of(uri: str) -> str:
    for pattern, route in EXPECTED_ROUTE:
        if pattern.match(uri):
            return route
    raise AssertionError(f"unexpected request {uri}")


def workload() -> list[str]:
    paths = []
    for i in range(2000):
        k = i % 20
        if k < 10:
            paths.append(f"/users/{1000 + i}")
        elif k < 15:
            paths.append(f"/orders/{uuid.uuid4()}/items")
        elif k < 18:
            paths.append(f"/missing/5f3a9c2e{i:04x}")
        else:
            paths.append(f"/boom/{i}")
    return paths


def serve_routes(nginx) -> None:
    """Give a running tests.inputs.ebpf.conftest.Nginx the four routes (a reload)."""
    conf_path = Path(nginx.dir) / "nginx.conf"
    conf = re.sub(r"        location = /ok.*?location / \{ return 404; \}\n", ROUTES_CONF,
                  conf_path.read_text(), flags=re.S)
    conf_path.write_text(conf)
    subprocess.run(["nginx", "-p", str(nginx.dir), "-c", str(conf_path), "-s", "reload"],
                   check=True, capture_output=True)


def run_load(nginx, tmp: Path, paths: list[str], *, clients: int = 4) -> None:
    """``paths`` from ``clients`` curl processes at once, each on one keep-alive connection."""
    procs = []
    for part in range(clients):
        cfg = tmp / f"curl{part}.cfg"
        cfg.write_text("".join(f'url = "{nginx.url(p)}"\noutput = "/dev/null"\n'
                               for p in paths[part::clients]))
        procs.append(subprocess.Popen(["curl", "-s", "-K", str(cfg)]))
    for p in procs:
        assert p.wait(timeout=120) == 0
