"""A real NATS JetStream cluster on loopback for tests and benchmarks: Debian's nats-server,
one process per node, each with its own store directory, client port and cluster port.

    with NatsCluster(tmp_path, nodes=3) as cluster:
        cluster.urls            # ["nats://127.0.0.1:P1", ...]
        cluster.kill(i); cluster.start(i)
        cluster.leader("LOGS")  # index of the stream's leader
"""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

NATS_SERVER = shutil.which("nats-server") or "/usr/sbin/nats-server"


def _free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class NatsCluster:
    def __init__(self, tmp: Path, *, nodes: int = 3, extra: str = "") -> None:
        self.tmp = tmp
        self.nodes = nodes
        ports = _free_ports(3 * nodes)
        self.client_ports = ports[:nodes]
        self.cluster_ports = ports[nodes:2 * nodes]
        self.http_ports = ports[2 * nodes:]
        self.procs: list[subprocess.Popen | None] = [None] * nodes
        self.confs = []
        routes = ", ".join(f"nats-route://127.0.0.1:{p}" for p in self.cluster_ports)
        for i in range(nodes):
            store = tmp / f"nats-{i}"
            store.mkdir(parents=True, exist_ok=True)
            conf = tmp / f"nats-{i}.conf"
            cluster = (f"cluster {{ name: ls, listen: 127.0.0.1:{self.cluster_ports[i]}, "
                       f"routes: [{routes}] }}") if nodes > 1 else ""
            conf.write_text(
                f"server_name: n{i}\nlisten: 127.0.0.1:{self.client_ports[i]}\n"
                f"http: 127.0.0.1:{self.http_ports[i]}\n"
                f"jetstream {{ store_dir: \"{store}\", max_memory_store: 64MB, "
                f"max_file_store: 2GB }}\n{cluster}\n{extra}\n")
            self.confs.append(conf)

    @property
    def urls(self) -> list[str]:
        return [f"nats://127.0.0.1:{p}" for p in self.client_ports]

    def start(self, i: int | None = None) -> None:
        for n in ([i] if i is not None else range(self.nodes)):
            log = open(self.tmp / f"nats-{n}.log", "ab")
            self.procs[n] = subprocess.Popen([NATS_SERVER, "-c", str(self.confs[n])],
                                             stdout=log, stderr=log, stdin=subprocess.DEVNULL)
            log.close()
        self.wait_ready()

    def kill(self, i: int, sig: int = signal.SIGKILL) -> None:
        p = self.procs[i]
        if p is not None and p.poll() is None:
            p.send_signal(sig)
            p.wait(timeout=30)
        self.procs[i] = None

    def alive(self) -> list[int]:
        return [i for i, p in enumerate(self.procs) if p is not None and p.poll() is None]

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Every running node answers /healthz?js-enabled-only... and the cluster has a
        JetStream meta leader (when a quorum of nodes runs)."""
        deadline = time.monotonic() + timeout
        alive = self.alive()
        while True:
            ok = all(self._healthy(i) for i in alive)
            if ok and self.nodes > 1 and len(alive) * 2 > self.nodes:
                ok = self._meta_leader() is not None
            if ok:
                return
            if time.monotonic() > deadline:
                raise AssertionError("the NATS cluster did not become ready: "
                                     + self.log_tail())
            time.sleep(0.1)

    def _get(self, i: int, path: str) -> dict | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http_ports[i]}{path}",
                                        timeout=2) as r:
                return json.loads(r.read())
        except (OSError, ValueError):
            return None

    def _healthy(self, i: int) -> bool:
        return self._get(i, "/varz") is not None

    def _meta_leader(self) -> str | None:
        for i in self.alive():
            info = self._get(i, "/jsz")
            leader = ((info or {}).get("meta_cluster") or {}).get("leader")
            if leader:
                return leader
        return None

    def leader(self, stream: str, timeout: float = 20.0) -> int:
        """The index of the node that leads ``stream``."""
        deadline = time.monotonic() + timeout
        while True:
            for i in self.alive():
                info = self._get(i, "/jsz?streams=true") or {}
                for acc in info.get("account_details") or []:
                    for s in acc.get("stream_detail") or []:
                        leader = (s.get("cluster") or {}).get("leader")
                        if s.get("name") == stream and leader:
                            return int(leader.removeprefix("n"))
            if time.monotonic() > deadline:
                raise AssertionError(f"no leader for stream {stream}")
            time.sleep(0.1)

    def log_tail(self, n: int = 20) -> str:
        out = []
        for i in range(self.nodes):
            path = self.tmp / f"nats-{i}.log"
            if path.exists():
                out.append(f"--- node {i}\n" + "\n".join(
                    path.read_text(errors="replace").splitlines()[-n:]))
        return "\n".join(out)

    def stop(self) -> None:
        for i in range(self.nodes):
            p = self.procs[i]
            if p is not None and p.poll() is None:
                p.terminate()
        for i in range(self.nodes):
            p = self.procs[i]
            if p is not None:
                try:
                    p.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
            self.procs[i] = None

    def __enter__(self) -> NatsCluster:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def run(coro):
    """Run one coroutine on a fresh event loop (test code is synchronous)."""
    return asyncio.run(coro)


async def stream_messages(urls: list[str], stream: str, *, timeout: float = 10.0,
                          tries: int = 4, creds: str | None = None
                          ) -> list[tuple[int, bytes, dict]]:
    """Every message of the stream as (stream sequence, payload, headers), read with an
    ordered consumer (ephemeral, flow-controlled, nothing left behind). A cluster whose nodes
    have just come back may stall a consumer: the read is tried again from the start, and
    after half the tries message by message from the stream's leader instead."""
    import nats

    for attempt in range(tries):
        try:
            return await _read_stream(urls, stream, timeout=timeout, creds=creds,
                                      one_by_one=attempt >= tries // 2)
        except (nats.errors.TimeoutError, asyncio.TimeoutError):
            if attempt == tries - 1:
                raise
            await asyncio.sleep(1.0)
    raise AssertionError("unreachable")


async def _read_stream(urls: list[str], stream: str, *, timeout: float, creds: str | None,
                       one_by_one: bool) -> list[tuple[int, bytes, dict]]:
    import nats

    nc = await nats.connect(servers=urls, connect_timeout=5, user_credentials=creds)
    try:
        js = nc.jetstream(timeout=timeout)
        state = (await js.stream_info(stream)).state
        out = []
        if not state.messages:
            return out
        if one_by_one:
            for seq in range(state.first_seq, state.last_seq + 1):
                try:
                    m = await js.get_msg(stream, seq)
                except nats.js.errors.NotFoundError:
                    continue
                out.append((m.seq, m.data or b"", dict(m.headers or {})))
            return out
        sub = await js.subscribe(">", stream=stream, ordered_consumer=True)
        try:
            while len(out) < state.messages:
                m = await sub.next_msg(timeout=timeout)
                out.append((m.metadata.sequence.stream, m.data, dict(m.headers or {})))
        finally:
            await sub.unsubscribe()
        return out
    finally:
        await nc.close()


async def stream_state(urls: list[str], stream: str) -> dict:
    import nats

    nc = await nats.connect(servers=urls, connect_timeout=5)
    try:
        info = await nc.jetstream(timeout=10).stream_info(stream)
        return {"messages": info.state.messages, "bytes": info.state.bytes,
                "leader": info.cluster.leader if info.cluster else None}
    finally:
        await nc.close()
