"""Issue 16.3: what used to pass check-config and then stop the agent at start (exit 3) is
refused by `log-shuttle check-config` and by the agent before any process starts: exit 2, all
problems at once, each naming its key."""

from __future__ import annotations

import subprocess

from tests.harness import agent_command, agent_env


def _config(tmp_path) -> tuple[str, list[str]]:
    logs = tmp_path / "logs"
    logs.mkdir()
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    token = tmp_path / "token"
    token.write_text("")
    text = f"""
[agent]
state_dir = "{blocker}"

[[inputs.file]]
paths = ["{logs}", "{logs}/*.log"]

[[inputs.file]]
name = "other"
paths = ["{logs}/app.log"]
state_dir = "{blocker}/state"

[[outputs.tcp]]
address = "127.0.0.1"

[[outputs.tcp]]
name = "zero"
address = "127.0.0.1:0"

[[outputs.tcp]]
name = "big"
address = "127.0.0.1:70000"
tls_ca = "{tmp_path}/missing-ca.pem"

[[outputs.grpc]]
address = ""
tls_cert = "{tmp_path}/missing-cert.pem"
tls_key = "{tmp_path}/missing-key.pem"
auth_token_file = "{token}"
"""
    path = tmp_path / "agent.toml"
    path.write_text(text)
    expected = [
        f"inputs.file[0].paths[0]: {logs} is a directory, not a file: to follow the files in "
        f"it, give a glob such as '{logs}/*.log'",
        f"inputs.file[1].state_dir: {blocker}/state cannot be made: {blocker} is a file, not a "
        f"directory",
        "outputs.tcp[0].address: address '127.0.0.1' is not HOST:PORT (no port)",
        "outputs.tcp[1].address: address '127.0.0.1:0': the port must be a number in 1-65535",
        "outputs.tcp[2].address: address '127.0.0.1:70000': the port must be a number in 1-65535",
        f"outputs.tcp[2].tls_ca: no such file: {tmp_path}/missing-ca.pem",
        "outputs.grpc[0].address: empty: give HOST:PORT",
        f"outputs.grpc[0].tls_cert: no such file: {tmp_path}/missing-cert.pem",
        f"outputs.grpc[0].tls_key: no such file: {tmp_path}/missing-key.pem",
        f"outputs.grpc[0].auth_token_file: the token file {token} is empty",
        f"agent.state_dir: {blocker} is a file, not a directory",
    ]
    return str(path), expected


def _env() -> dict[str, str]:
    env = agent_env()
    del env["LOG_SHUTTLE_AGENT__STATE_DIR"]  # the file's state_dir is the one to refuse
    return env


def _problems(stderr: str) -> list[str]:
    return [line[len("  - "):] for line in stderr.splitlines() if line.startswith("  - ")]


def test_check_config_refuses_each_with_its_key_all_at_once(tmp_path):
    path, expected = _config(tmp_path)
    r = subprocess.run(agent_command("check-config", path), capture_output=True, text=True,
                       env=_env(), timeout=60)
    assert r.returncode == 2
    assert _problems(r.stderr) == expected
    assert f"({len(expected)} problem(s))" in r.stderr


def test_the_agent_refuses_the_same_before_starting_any_process(tmp_path):
    path, expected = _config(tmp_path)
    r = subprocess.run(agent_command("--config", path, "--log-level", "debug"),
                       capture_output=True, text=True, env=_env(), timeout=60)
    assert r.returncode == 2
    assert _problems(r.stderr) == expected
    # Nothing was started: the supervisor logs its children (and debug, each start) first.
    assert "supervisor" not in r.stderr and "started" not in r.stderr
    assert r.stdout == ""


def test_a_good_configuration_still_passes(tmp_path):
    (tmp_path / "logs").mkdir()
    token = tmp_path / "token"
    token.write_text("abc\n")
    path = tmp_path / "agent.toml"
    path.write_text(f"""
[agent]
state_dir = "{tmp_path}/state/deeper"
[[inputs.file]]
paths = ["{tmp_path}/logs/*.log", "{tmp_path}/logs/not-yet.log"]
[[outputs.tcp]]
address = "[::1]:6514"
tls = true
auth_token_file = "{token}"
""")
    r = subprocess.run(agent_command("check-config", str(path)), capture_output=True,
                       text=True, env=agent_env(), timeout=60)
    assert r.returncode == 0, r.stderr
