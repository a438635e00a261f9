"""The server's configuration (server/config.py): its table of the file, LOG_SHUTTLE_SERVER__*
variables over it, flags over both, every problem at once with its key, and the agent's tables
left to the agent. Through the real command too: a bad configuration is exit 2."""

from __future__ import annotations

import subprocess

import pytest

from common.errors import ConfigError
from server.config import load_server_config
from tests.harness import agent_command, agent_env

SHARED = """
[agent]
log_level = "debug"

[[inputs.file]]
paths = ["/var/log/app.log"]

[server]
tcp_listen = ["127.0.0.1:5144"]
insecure = true
max_files = 4
"""


def test_the_server_table_of_a_shared_file(tmp_path):
    path = tmp_path / "shared.toml"
    path.write_text(SHARED)
    cfg = load_server_config(str(path), environ={})
    assert (cfg.tcp_listen, cfg.insecure, cfg.max_files) == (["127.0.0.1:5144"], True, 4)
    assert cfg.log_level == "info"  # the agent's log_level is the agent's
    assert cfg.output_dir == "/var/lib/log-shuttle/received"


def test_environment_over_the_file_and_flags_over_both(tmp_path):
    path = tmp_path / "shared.toml"
    path.write_text(SHARED)
    env = {"LOG_SHUTTLE_SERVER__MAX_FILES": "7", "LOG_SHUTTLE_SERVER__LOG_LEVEL": "debug",
           "LOG_SHUTTLE_AGENT__LOG_LEVEL": "not-a-level"}  # not the server's: not read
    cfg = load_server_config(str(path), environ=env,
                             overrides=[(["server", "log_level"], "error")])
    assert (cfg.max_files, cfg.log_level) == (7, "error")


def test_every_problem_at_once_with_its_key_and_origin(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('[server]\nmax_files = 0\ntcp_lisen = ["x"]\ninsecure = true\n'
                    '[inputs]\nanything = 1\n')
    with pytest.raises(ConfigError) as err:
        load_server_config(str(path), environ={"LOG_SHUTTLE_SERVER__IDLE_TIMEOUT": "-1"})
    problems = err.value.problems
    assert "server.max_files: Expected int >= 1" in problems
    assert "server.tcp_lisen: unknown key (did you mean 'tcp_listen'?)" in problems
    assert any(p.startswith("server.idle_timeout: ")
               and p.endswith("(from LOG_SHUTTLE_SERVER__IDLE_TIMEOUT)") for p in problems)
    assert not any(p.startswith("inputs") for p in problems)
    assert len(problems) == 3


def test_what_no_single_key_shows():
    with pytest.raises(ConfigError) as err:
        load_server_config(None, environ={}, overrides=[(["server", "tls_ca"], "ca.pem")])
    assert err.value.problems == [
        "server: nothing to listen on: give --grpc-listen or --tcp-listen",
        "server: give tls_cert and tls_key (--tls-cert, --tls-key), or insecure = true "
        "(--insecure) for plaintext"]
    with pytest.raises(ConfigError, match="insecure .plaintext. and TLS options"):
        load_server_config(None, environ={}, overrides=[
            (["server", "tcp_listen"], ["127.0.0.1:1"]), (["server", "insecure"], True),
            (["server", "tls_ca"], "ca.pem")])


def test_the_command_exits_2_on_a_bad_configuration(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[server]\nmax_files = 0\n")
    proc = subprocess.run(agent_command("server", "-c", str(path), "--insecure", "--tcp-listen",
                                        "127.0.0.1:1"),
                          capture_output=True, text=True, env=agent_env(), timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert "server.max_files: Expected int >= 1" in proc.stderr
