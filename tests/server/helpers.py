"""Real peers for the network tests: ``log-shuttle server``, rsyslog and syslog-ng as foreground
daemons with their own configuration in a temporary directory, on loopback ports, and a small
PKI made with the cryptography package."""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from tests.harness import ROOT, agent_command, agent_env, complete_lines, wait_for

SYSLOG_NG = ROOT / ".cache" / "syslog-ng"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, *, timeout: float = 20.0) -> None:
    def up():
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return True
        except OSError:
            return False
    wait_for(up, timeout=timeout, what=f"a listener on port {port}")


# --- log-shuttle server -------------------------------------------------------------------------


class Server:
    """``log-shuttle server`` in a subprocess; records read back from its output directory."""

    def __init__(self, tmp: Path, *args: str, grpc_port: int | None = None,
                 tcp_port: int | None = None, env: dict[str, str] | None = None,
                 name: str = "server") -> None:
        self.dir = tmp / f"{name}-out"
        self.grpc_port = grpc_port
        self.tcp_port = tcp_port
        self.stderr_path = tmp / f"{name}.stderr"
        self.args = list(args)
        if grpc_port:
            self.args += ["--grpc-listen", f"127.0.0.1:{grpc_port}"]
        if tcp_port:
            self.args += ["--tcp-listen", f"127.0.0.1:{tcp_port}"]
        self.env = env or agent_env()
        self.proc: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        err = open(self.stderr_path, "ab")
        self.proc = subprocess.Popen(
            agent_command("server", "--output-dir", str(self.dir), *self.args), stdout=err,
            stderr=err, stdin=subprocess.DEVNULL, env=self.env, cwd=ROOT, start_new_session=True)
        err.close()
        self._starts = getattr(self, "_starts", 0) + 1
        wait_for(self._up, timeout=30, what="the server to listen")

    def _up(self) -> bool:
        # Its log says so once every listener is up; a probe connection would count as an
        # error on a TLS port.
        if self.proc.poll() is not None:
            raise AssertionError(f"server exited {self.proc.returncode}: {self.stderr()}")
        return self.stderr().count(" INFO writing to ") >= self._starts

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def stop(self, *, timeout: float = 30.0) -> int:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def records(self) -> list[dict]:
        out = []
        if not self.dir.exists():
            return out
        rotated = sorted((p for p in self.dir.glob("received-*.ndjson")),
                         key=lambda p: int(p.stem.split("-")[1]))
        for path in [*rotated, self.dir / "received.ndjson"]:
            if path.exists():
                # the server may be writing the last line
                out += [json.loads(line) for line in complete_lines(path.read_bytes())]
        return out

    def stats(self) -> dict:
        """The counters the server logged when it stopped."""
        for line in reversed(self.stderr().splitlines()):
            if " stopped: {" in line:
                return json.loads(line.split(" stopped: ", 1)[1])
        raise AssertionError(f"no final counters in the server's log: {self.stderr()}")

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


# --- PKI ------------------------------------------------------------------------------------------


@dataclass
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path
    """A CA that signed nothing here: trusting it means trusting neither peer."""


def make_pki(tmp: Path) -> Pki:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def write_key(key, path: Path) -> Path:
        path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
        return path

    def write_cert(cert, path: Path) -> Path:
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return path

    def ca(cn: str):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (x509.CertificateBuilder().subject_name(name(cn)).issuer_name(name(cn))
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=5))
                .not_valid_after(now + datetime.timedelta(days=1))
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False,
                                             False), critical=True)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                               critical=False)
                .sign(key, hashes.SHA256()))
        return key, cert

    def leaf(ca_key, ca_cert, cn: str, usage, sans):
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (x509.CertificateBuilder().subject_name(name(cn)).issuer_name(ca_cert.subject)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=5))
                   .not_valid_after(now + datetime.timedelta(days=1))
                   .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
                   .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                       ca_key.public_key()), critical=False))
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        return key, builder.sign(ca_key, hashes.SHA256())

    ca_key, ca_cert = ca("log-shuttle test CA")
    _, other_cert = ca("some other CA")
    s_key, s_cert = leaf(ca_key, ca_cert, "localhost", ExtendedKeyUsageOID.SERVER_AUTH,
                         [x509.DNSName("localhost"),
                          x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    c_key, c_cert = leaf(ca_key, ca_cert, "agent", ExtendedKeyUsageOID.CLIENT_AUTH, [])
    return Pki(ca=write_cert(ca_cert, tmp / "ca.pem"),
               server_cert=write_cert(s_cert, tmp / "server.pem"),
               server_key=write_key(s_key, tmp / "server.key"),
               client_cert=write_cert(c_cert, tmp / "client.pem"),
               client_key=write_key(c_key, tmp / "client.key"),
               other_ca=write_cert(other_cert, tmp / "other-ca.pem"))


# --- rsyslog and syslog-ng -----------------------------------------------------------------------


class Daemon:
    """A syslog daemon in the foreground, its own configuration, killed at the end."""

    def __init__(self, cmd: list[str], *, tmp: Path, port: int, env: dict | None = None) -> None:
        self.stderr_path = tmp / f"{Path(cmd[0]).name}.stderr"
        err = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen(cmd, stdout=err, stderr=err, stdin=subprocess.DEVNULL,
                                     env=env, start_new_session=True)
        err.close()
        try:
            wait_for(lambda: self._up(port), timeout=30, what=f"{cmd[0]} on port {port}")
        except BaseException:
            self.stop()
            raise

    def _up(self, port: int) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"{self.stderr_path.name}: exited {self.proc.returncode}: "
                                 f"{self.stderr_path.read_text(errors='replace')}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return True
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> Daemon:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


RSYSLOG_FIELDS = '''template(name="fields" type="list" option.jsonf="on") {
  property(outname="version" name="protocol-version" format="jsonf")
  property(outname="pri" name="pri" format="jsonf")
  property(outname="host" name="hostname" format="jsonf")
  property(outname="app" name="app-name" format="jsonf")
  property(outname="msgid" name="msgid" format="jsonf")
  property(outname="sd" name="structured-data" format="jsonf")
  property(outname="msg" name="msg" format="jsonf")
}
'''


def rsyslog(tmp: Path, *, port: int, out: Path, forward_to: int | None = None) -> Daemon:
    """rsyslogd with imtcp on ``port``: messages to ``out`` as JSON lines of their parsed
    fields, and, with ``forward_to``, on to that port by omfwd, octet-counted, RFC 5424."""
    work = tmp / "rsyslog"
    work.mkdir(exist_ok=True)
    forward = ""
    if forward_to:
        forward = (f'  action(type="omfwd" target="127.0.0.1" port="{forward_to}" protocol="tcp" '
                   f'TCP_Framing="octet-counted" template="RSYSLOG_SyslogProtocol23Format" '
                   f'queue.type="LinkedList" action.resumeRetryCount="-1" '
                   f'action.resumeInterval="1")\n')
    conf = work / "rsyslog.conf"
    conf.write_text(
        f'global(workDirectory="{work}" maxMessageSize="64k")\n'
        f'module(load="imtcp")\n'
        f'{RSYSLOG_FIELDS}'
        f'ruleset(name="in") {{\n'
        f'  action(type="omfile" file="{out}" template="fields")\n{forward}}}\n'
        f'input(type="imtcp" address="127.0.0.1" port="{port}" ruleset="in")\n')
    return Daemon(["/usr/sbin/rsyslogd", "-n", "-f", str(conf), "-i", str(work / "pid")],
                  tmp=tmp, port=port)


def syslog_ng(tmp: Path, *, port: int, out: Path, framing: str) -> Daemon:
    """syslog-ng (Debian's, unpacked by scripts/setup) with a ``syslog()`` source (RFC 6587
    octet counting) or a ``network()`` source with ``flags(syslog-protocol)`` (newline
    framing), writing each message's parsed fields to ``out`` as tab-separated values."""
    if not (SYSLOG_NG / "usr/sbin/syslog-ng").exists():
        raise AssertionError(f"syslog-ng is not unpacked in {SYSLOG_NG}: run "
                             f"LOG_SHUTTLE_SETUP_TEST=1 ./scripts/setup")
    work = tmp / "syslog-ng"
    work.mkdir(exist_ok=True)
    if framing == "octet":
        source = f'syslog(ip("127.0.0.1") port({port}) transport("tcp"))'
    else:
        source = f'network(ip("127.0.0.1") port({port}) transport("tcp") flags(syslog-protocol))'
    conf = work / "syslog-ng.conf"
    conf.write_text(
        '@version: 3.38\n'
        'options { keep-hostname(yes); stats-freq(0); log-msg-size(65536); };\n'
        f'source s {{ {source}; }};\n'
        f'destination d {{ file("{out}" template("${{PROGRAM}}\\t${{MSGID}}\\t${{HOST}}\\t'
        '${LEVEL}\\t${.SDATA.logshuttle@32473.path}\\t${.SDATA.logshuttle@32473.offset}\\t'
        '${MSG}\\n")); };\n'
        'log { source(s); destination(d); };\n')
    lib = [SYSLOG_NG / "usr/lib/x86_64-linux-gnu", SYSLOG_NG / "lib/x86_64-linux-gnu",
           SYSLOG_NG / "usr/lib/syslog-ng"]
    env = {**os.environ, "LD_LIBRARY_PATH": ":".join(map(str, lib))}
    cmd = [str(SYSLOG_NG / "usr/sbin/syslog-ng"), "-F", "--no-caps", "-f", str(conf),
           f"--module-path={SYSLOG_NG / 'usr/lib/syslog-ng/3.38'}",
           f"--persist-file={work / 'persist'}", f"--pidfile={work / 'pid'}",
           f"--control={work / 'ctl'}"]
    return Daemon(cmd, tmp=tmp, port=port, env=env)


def read_when(path: Path, count: int, *, timeout: float = 30.0) -> list[str]:
    """The lines of ``path`` once it has at least ``count``."""
    def enough():
        if path.exists():
            lines = path.read_text(errors="replace").splitlines()
            if len(lines) >= count:
                return lines
        return None
    return wait_for(enough, timeout=timeout, what=f"{count} lines in {path.name}")


def sleep_briefly() -> None:
    time.sleep(0.2)
