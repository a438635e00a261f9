"""log-shuttle's gRPC and TCP outputs to ``log-shuttle server`` with TLS, mutual TLS and a token;
and what a wrong CA, a wrong token, a closed port, a bad TLS file or a bad address do: a clear
message and retries with backoff (no crash, no tight loop), or exit 3 at start."""

from __future__ import annotations

import pytest

from tests.harness import Agent, agent_env, wait_for
from tests.server.helpers import Server, free_port, make_pki


def _lines(tmp_path, n=50):
    log = tmp_path / "app.log"
    log.write_bytes(b"".join(b"line %d\n" % i for i in range(n)))
    return log


@pytest.mark.parametrize("mode", ["tls", "mtls+token"])
def test_outputs_to_server_over_tls(tmp_path, mode):
    pki = make_pki(tmp_path)
    token = tmp_path / "token"
    token.write_text("s3cret-token\n")
    server_args = ["--tls-cert", str(pki.server_cert), "--tls-key", str(pki.server_key)]
    agent_args = ["--tls-ca", str(pki.ca)]
    if mode == "mtls+token":
        server_args += ["--tls-ca", str(pki.ca), "--auth-token-file", str(token)]
        agent_args += ["--tls-cert", str(pki.client_cert), "--tls-key", str(pki.client_key),
                       "--auth-token-file", str(token)]
    gport, tport = free_port(), free_port()
    log = _lines(tmp_path)
    # Both outputs ship the same records (the same record ids) to one server: it keeps each
    # protocol's copy only with exactly_once off.
    with Server(tmp_path, *server_args, grpc_port=gport, tcp_port=tport,
                env=agent_env(LOG_SHUTTLE_SERVER__EXACTLY_ONCE="false")) as server:
        with Agent(tmp_path, "-f", str(log), "--from-beginning",
                   "--output-grpc", f"127.0.0.1:{gport}", "--output-tcp", f"127.0.0.1:{tport}",
                   "--tcp-framing", "syslog-octet", *agent_args) as agent:
            wait_for(lambda: len(server.records()) >= 100, timeout=30, what="100 records")
            assert agent.stop() == 0
        assert server.stop() == 0
    records = server.records()
    via_tcp = [r for r in records if "facility" in r]
    via_grpc = [r for r in records if "facility" not in r]
    for got in (via_tcp, via_grpc):
        assert [(r["line"], r["path"], r["offset"]) for r in got] == \
            [(f"line {i}", str(log), sum(len(f"line {j}\n") for j in range(i))) for i in range(50)]
    stats = server.stats()
    assert stats["grpc_records"] == 50 and stats["tcp_records"] == 50
    assert not any(k.startswith(("tcp_error", "grpc_error", "tls_error")) for k in stats)


def _failing(tmp_path, case, pki):
    """Server and agent arguments for each way of failing, and the message the agent gives."""
    token = tmp_path / "token"
    token.write_text("right")
    wrong = tmp_path / "wrong-token"
    wrong.write_text("wrong")
    server = ["--tls-cert", str(pki.server_cert), "--tls-key", str(pki.server_key),
              "--auth-token-file", str(token)]
    output, transport = case.split("-", 1)
    flag = "--output-grpc" if output == "grpc" else "--output-tcp"
    agent = ["--tls-ca", str(pki.ca), "--auth-token-file", str(token)]
    if transport == "wrong-ca":
        agent[1] = str(pki.other_ca)
        message = "certificate" if output == "tcp" else "handshake"
    elif transport == "wrong-token":
        agent[3] = str(wrong)
        message = "UNAUTHENTICATED" if output == "grpc" else "rejected the token"
    else:
        message = "onnect"            # "cannot connect ... connection refused" / "failed to connect"
    return server, flag, agent, message


@pytest.mark.parametrize("case", ["grpc-wrong-ca", "grpc-wrong-token", "grpc-closed-port",
                                  "tcp-wrong-ca", "tcp-wrong-token", "tcp-closed-port"])
def test_failures_are_clear_and_retried_with_backoff(tmp_path, case):
    pki = make_pki(tmp_path)
    server_args, flag, agent_args, message = _failing(tmp_path, case, pki)
    port = free_port()
    log = _lines(tmp_path, 10)
    closed = case.endswith("closed-port")
    kind = {"--output-grpc": "grpc_port", "--output-tcp": "tcp_port"}[flag]
    server = None if closed else Server(tmp_path, *server_args, **{kind: port})
    try:
        with Agent(tmp_path, "-f", str(log), "--from-beginning", "--drain-timeout", "1",
                   flag, f"127.0.0.1:{port}", *agent_args) as agent:
            wait_for(lambda: message in agent.stderr() and "retried with backoff" in
                     agent.stderr(), timeout=30, what=f"the message {message!r}")
            # Let a few retries happen, then check the agent is still the same processes.
            before = agent.children()
            wait_for(lambda: "still failing" in agent.stderr() or
                     agent.stderr().count("retried with backoff") >= 1, timeout=10)
            assert agent.children() == before
            assert agent.proc.poll() is None
            agent.stop()
        err = agent.stderr()
        assert "crashed" not in err and "Traceback" not in err and "restarting" not in err
        # Bounded: the first message is said once, not per attempt.
        assert err.count("retried with backoff") <= 2, err
    finally:
        if server is not None:
            assert server.stop() == 0
    if server is not None:
        stats = server.stats()
        assert stats.get("records_written", 0) == 0
        errors = sum(v for k, v in stats.items() if "error" in k)
        assert errors < 50, stats                      # retried, but not in a tight loop
        if not case.endswith("wrong-ca"):              # handshakes fail in gRPC's core / asyncio
            assert errors >= 1, stats


@pytest.mark.parametrize("args, message", [
    (["--output-grpc", "127.0.0.1:4317", "--tls-ca", "/nonexistent/ca.pem"],
     "outputs.grpc[0].tls_ca: no such file: /nonexistent/ca.pem"),
    (["--output-tcp", "127.0.0.1:5144", "--tls-cert", "CERT", "--tls-key", "/etc/hostname"],
     "outputs.tcp[0].tls_cert: TLS certificate CERT and key /etc/hostname cannot be used together"),
    (["--output-tcp", "no-port-here"], "outputs.tcp[0].address: address 'no-port-here' is not HOST:PORT"),
    (["--output-grpc", "127.0.0.1:99999", "--insecure"],
     "outputs.grpc[0].address: address '127.0.0.1:99999': the port must be a number in 1-65535"),
])
def test_bad_tls_files_and_addresses_are_refused_before_start(tmp_path, args, message):
    pki = make_pki(tmp_path)
    args = [str(pki.server_cert) if a == "CERT" else a for a in args]
    message = message.replace("CERT", str(pki.server_cert))
    log = _lines(tmp_path, 1)
    with Agent(tmp_path, "-f", str(log), *args) as agent:
        assert agent.proc.wait(timeout=30) == 2
    assert message in agent.stderr()
    assert "supervisor" not in agent.stderr()  # no process was started
    assert "Traceback" not in agent.stderr()


def test_a_token_is_never_sent_in_plaintext(tmp_path):
    log = _lines(tmp_path, 1)
    env = agent_env(LOG_SHUTTLE_AUTH_TOKEN="abc")
    with Agent(tmp_path, "-f", str(log), "--output-grpc", "127.0.0.1:4317", "--insecure",
               env=env) as agent:
        assert agent.proc.wait(timeout=30) == 2  # refused by the configuration's check
    assert "outputs.grpc[0].insecure: a token is only ever sent over TLS" in agent.stderr()
