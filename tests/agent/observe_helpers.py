"""Helpers of the listener's tests: a TCP receiver that counts lines (optionally slowly), and
reading the agent's endpoints."""

from __future__ import annotations

import json
import re
import socket
import threading
import time
import urllib.error
import urllib.request


class LineReceiver(threading.Thread):
    """A TCP receiver on loopback counting newline-terminated lines; ``rate`` caps the bytes
    per second it reads (a slow receiver makes a backlog)."""

    def __init__(self, port: int = 0, *, rate: float | None = None) -> None:
        super().__init__(daemon=True)
        self.srv = socket.create_server(("127.0.0.1", port), reuse_port=False)
        self.srv.settimeout(0.2)
        self.port = self.srv.getsockname()[1]
        self.rate = rate
        self.data = bytearray()
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.start()

    def run(self) -> None:
        conns: list[socket.socket] = []
        while not self.done.is_set():
            try:
                c, _ = self.srv.accept()
                c.settimeout(0.05)
                conns.append(c)
            except (TimeoutError, socket.timeout):
                pass
            for c in list(conns):
                while not self.done.is_set():
                    try:
                        chunk = c.recv(16384 if self.rate else 1 << 20)
                    except (TimeoutError, socket.timeout):
                        break
                    except OSError:
                        conns.remove(c)
                        break
                    if not chunk:
                        conns.remove(c)
                        c.close()
                        break
                    with self.lock:
                        self.data += chunk
                    if self.rate:
                        time.sleep(len(chunk) / self.rate)
        for c in conns:
            c.close()
        self.srv.close()

    def lines(self) -> int:
        with self.lock:
            return self.data.count(b"\n")

    def stop(self) -> None:
        self.done.set()
        self.join(timeout=5)


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except (urllib.error.URLError, OSError):
        return 0, b""


def get_json(url: str) -> tuple[int, dict]:
    code, body = get(url)
    return code, (json.loads(body) if body else {})


SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)$')


def metrics(address: str) -> dict[tuple[str, frozenset], float]:
    """The exposition as {(name, frozenset of label pairs): value}."""
    code, body = get(f"http://{address}/metrics")
    assert code == 200, (code, body[:200])
    out = {}
    for line in body.decode().splitlines():
        m = SAMPLE.match(line)
        if not m or line.startswith("#"):
            continue
        labels = frozenset(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        out[(m.group(1), labels)] = float(m.group(3))
    return out


def value(ms: dict, name: str, **labels: str) -> float | None:
    want = set(labels.items())
    found = [v for (n, ls), v in ms.items() if n == name and want <= ls]
    return sum(found) if found else None
