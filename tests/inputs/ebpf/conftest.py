"""Fixtures of the eBPF input's tests that need the kernel: the input itself, run in this process
with a real shared-memory queue, and a real nginx of the test's own.

The probes see the whole host, so every test picks its events by the pids of the processes it
started. Tests that load BPF programs skip only where eBPF cannot run (not root, no BCC, the
checks of `log-shuttle doctor` fail), and say which check failed.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from inputs.ebpf.config import EbpfInputConfig
from common.component import Context, Stop
from common.events import BatchCodec, Event, LossEvent
from common.shmqueue import Empty, ShmQueue
from inputs.ebpf import build
from inputs.ebpf.checks import environment, problems

MiB = 1024 * 1024


def ebpf_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "needs root to load BPF programs (CI runs the tests as root)"
    found = problems(environment(mount=True))
    return "; ".join(found) if found else None


needs_ebpf = pytest.mark.skipif(bool(ebpf_unavailable()), reason=ebpf_unavailable() or "")


def needs(*tools: str) -> pytest.MarkDecorator:
    missing = [t for t in tools if shutil.which(t) is None and not Path(f"/usr/sbin/{t}").exists()]
    return pytest.mark.skipif(bool(missing), reason=f"needs {', '.join(missing)} from Debian "
                                                    "(./scripts/setup installs the test extras)")


class LiveInput:
    """The eBPF input, built and run in a thread of this process, writing to a real ShmQueue."""

    def __init__(self, *, queue_bytes: int = 64 * MiB, **options) -> None:
        options.setdefault("ring_buffer_bytes", 64 * MiB)
        options.setdefault("max_exchanges_per_second", 0)  # every exchange: tests count them
        self.cfg = EbpfInputConfig(**options)
        self.queue = ShmQueue.create(name="test-ebpf", capacity=queue_bytes)
        self.stop_flag = Stop()
        ctx = Context(name="input ebpf", config=self.cfg, host="test", stop=self.stop_flag,
                      producers=[self.queue.producer()], log=logging.getLogger("test.ebpf"))
        try:
            self.runner = build(ctx)
        except BaseException:
            self.queue.destroy()
            raise
        self.consumer = self.queue.consumer()
        self.codec = BatchCodec()
        self.events: list[Event] = []
        self.thread = threading.Thread(target=self.runner.run, name="ebpf-input")
        self.thread.start()

    def collect(self) -> list[Event]:
        while True:
            try:
                msg = self.consumer.get_nowait()
            except Empty:
                return self.events
            self.events.extend(self.codec.decode(msg).events)

    def wait_for(self, check: Callable[[list[Event]], object], *, timeout: float = 60.0,
                 what: str = "events") -> object:
        deadline = time.monotonic() + timeout
        while True:
            result = check(self.collect())
            if result:
                return result
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout}s waiting for {what}")
            time.sleep(0.1)

    def losses(self) -> list[LossEvent]:
        return [e for e in self.collect() if isinstance(e, LossEvent)]

    def close(self) -> None:
        self.stop_flag.set()
        self.thread.join(timeout=30)
        self.collect()
        self.queue.destroy()


@pytest.fixture
def live_input() -> Iterator[Callable[..., LiveInput]]:
    started: list[LiveInput] = []

    def start(**options) -> LiveInput:
        li = LiveInput(**options)
        started.append(li)
        return li

    yield start
    for li in started:
        li.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


NGINX_CONF = """
worker_processes 2;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 512; }}
http {{
    log_format test '$pid $request_method $request_uri $status $remote_port $connection_requests';
    access_log {dir}/access.log test;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    keepalive_requests 100000;
    server {{
        listen 127.0.0.1:{port}{tls};
        location = /ok {{ return 200 "ok\\n"; }}
        location = /moved {{ return 301 /ok; }}
        location = /boom {{ return 500 "boom\\n"; }}
        location / {{ return 404; }}
    }}
}}
"""


TLS_CONF = """ ssl;
        ssl_certificate {dir}/cert.pem;
        ssl_certificate_key {dir}/key.pem;
        ssl_protocols TLSv1.2 TLSv1.3"""


def self_signed(cert: Path, key: Path, host: str = "127.0.0.1") -> None:
    """A self-signed certificate for ``host`` (EC P-256, valid one day), PEM files."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    pk = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = datetime.datetime.now(datetime.timezone.utc)
    crt = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
           .public_key(pk.public_key()).serial_number(x509.random_serial_number())
           .not_valid_before(now - datetime.timedelta(minutes=5))
           .not_valid_after(now + datetime.timedelta(days=1))
           .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(host))]),
                          critical=False)
           .sign(pk, hashes.SHA256()))
    cert.write_bytes(crt.public_bytes(serialization.Encoding.PEM))
    key.write_bytes(pk.private_bytes(serialization.Encoding.PEM,
                                     serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption()))


class Nginx:
    def __init__(self, tmp: Path, *, tls: bool = False) -> None:
        self.dir = tmp / "nginx"
        self.dir.mkdir()
        self.port = free_port()
        self.scheme = "https" if tls else "http"
        self.cert = self.dir / "cert.pem"
        if tls:
            self_signed(self.cert, self.dir / "key.pem")
        conf = self.dir / "nginx.conf"
        conf.write_text(NGINX_CONF.format(dir=self.dir, port=self.port,
                                          tls=TLS_CONF.format(dir=self.dir) if tls else ""))
        self.access_log = self.dir / "access.log"
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        self.proc = subprocess.Popen([nginx, "-p", str(self.dir), "-e", str(self.dir / "error.log"),
                                      "-c", str(conf)], stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"nginx did not start: {(self.dir / 'error.log').read_text()}")
                time.sleep(0.05)

    def url(self, path: str) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}{path}"

    def pids(self) -> set[int]:
        with open(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children") as f:
            return {self.proc.pid, *(int(p) for p in f.read().split())}

    def access(self) -> list[dict]:
        out = []
        for line in self.access_log.read_text().splitlines():
            pid, method, uri, status, port, nreq = line.split()
            out.append({"pid": int(pid), "method": method, "path": uri, "status": int(status),
                        "remote_port": int(port), "connection_requests": int(nreq)})
        return out

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def nginx(tmp_path) -> Iterator[Nginx]:
    server = Nginx(tmp_path)
    yield server
    server.stop()


@pytest.fixture
def tls_nginx(tmp_path) -> Iterator[Nginx]:
    """nginx serving HTTPS (HTTP/1.1 only: no http2) with a self-signed certificate."""
    server = Nginx(tmp_path, tls=True)
    yield server
    server.stop()
