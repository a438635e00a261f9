"""Configuration: the file, the environment, the command line, and every error at once."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from agent.cli import cli_overrides
from agent.config import load_config, queue_bytes
from common.errors import ConfigError
from tests.harness import agent_command, agent_env

GOOD = """
[agent]
log_level = "debug"
drain_timeout = 3.5

[[inputs.file]]
name = "app"
paths = ["/var/log/app/*.log", "/var/log/other.log"]
from_beginning = true
max_line_bytes = 65536

[[inputs.file]]
name = "audit"
paths = ["/var/log/audit.log"]

[pipeline.batch]
max_events = 500
max_delay = 0.05

[outputs.stdout]
format = "text"
"""


def write(tmp_path: Path, text: str) -> str:
    p = tmp_path / "config.toml"
    p.write_text(text)
    return str(p)


def test_good_file(tmp_path):
    cfg = load_config(write(tmp_path, GOOD), environ={})
    assert cfg.agent.log_level == "debug"
    assert cfg.agent.drain_timeout == 3.5
    assert [f.name for f in cfg.inputs.file] == ["app", "audit"]
    assert cfg.inputs.file[0].paths == ["/var/log/app/*.log", "/var/log/other.log"]
    assert cfg.inputs.file[0].from_beginning is True
    assert cfg.inputs.file[0].max_line_bytes == 65536
    assert cfg.inputs.file[1].from_beginning is False  # defaults fill the rest
    assert cfg.pipeline.batch.max_events == 500
    assert cfg.pipeline.batch.max_bytes == 512 * 1024
    assert cfg.outputs.stdout.format == "text"


def test_stdout_is_the_default_output(tmp_path):
    cfg = load_config(write(tmp_path, '[[inputs.file]]\npaths = ["/x.log"]\n'), environ={})
    assert cfg.outputs.stdout is not None and cfg.outputs.stdout.format == "ndjson"


def test_unknown_key_is_named_with_a_suggestion(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, GOOD.replace("max_delay", "max_dealy")), environ={})
    assert e.value.problems == [
        "pipeline.batch.max_dealy: unknown key (did you mean 'max_delay'?)"]


def test_wrong_type_is_named(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, GOOD.replace("max_events = 500", 'max_events = "many"')),
                    environ={})
    assert e.value.problems == ["pipeline.batch.max_events: Expected int, got str"]


def test_every_problem_is_reported_at_once(tmp_path):
    text = """
[agent]
log_level = "loud"
drain_timeout = -1
colour = true

[[inputs.file]]
paths = "/var/log/app.log"
max_line_bytes = 10

[[inputs.file]]
from_beginning = "yes"

[outputs.stdout]
format = "xml"
"""
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, text), environ={})
    problems = e.value.problems
    keys = sorted(p.split(":")[0] for p in problems)
    assert keys == sorted([
        "agent.log_level", "agent.drain_timeout", "agent.colour",
        "inputs.file[0].paths", "inputs.file[0].max_line_bytes",
        "inputs.file[1].paths", "inputs.file[1].from_beginning",
        "outputs.stdout.format",
    ]), problems
    assert "inputs.file[1].paths: missing (required)" in problems
    assert str(e.value).startswith(f"invalid configuration in {tmp_path / 'config.toml'} (8 problem(s))")


def test_syntax_error_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="TOML syntax"):
        load_config(write(tmp_path, "[agent\nlog_level = 1"), environ={})
    with pytest.raises(ConfigError, match="file not found") as e:
        load_config(str(tmp_path / "nope.toml"), environ={})
    assert isinstance(e.value.__cause__, FileNotFoundError)


def test_semantic_checks(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, "[agent]\n"), environ={})
    assert e.value.problems == [
        "inputs: nothing to read: give --input-file PATH or an [[inputs.file]] table"]
    text = '[queue]\noutput_bytes = 1048576\n[[inputs.file]]\npaths = ["/a"]\n'
    with pytest.raises(ConfigError, match="queue.output_bytes: 1048576 is too small"):
        load_config(write(tmp_path, text), environ={})


def test_environment_overrides_the_file(tmp_path):
    env = {
        "LOG_SHUTTLE_AGENT__LOG_LEVEL": "warning",
        "LOG_SHUTTLE_PIPELINE__BATCH__MAX_EVENTS": "42",
        "LOG_SHUTTLE_INPUTS__FILE__1__PATHS": '["/srv/audit.log"]',
        "LOG_SHUTTLE_OUTPUTS__STDOUT__FORMAT": "ndjson",
        "OTHER": "ignored",
    }
    cfg = load_config(write(tmp_path, GOOD), environ=env)
    assert cfg.agent.log_level == "warning"
    assert cfg.pipeline.batch.max_events == 42
    assert cfg.inputs.file[1].paths == ["/srv/audit.log"]
    assert cfg.inputs.file[1].name == "audit"  # the rest of that table stays
    assert cfg.outputs.stdout.format == "ndjson"


def test_environment_errors_name_the_variable(tmp_path):
    env = {"LOG_SHUTTLE_PIPELINE__BATCH__MAX_EVENTS": "lots",
           "LOG_SHUTTLE_AGENT__LOGLEVEL": "debug"}
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, GOOD), environ=env)
    assert sorted(e.value.problems) == [
        "agent.loglevel: unknown key (did you mean 'log_level'?) (from LOG_SHUTTLE_AGENT__LOGLEVEL)",
        "pipeline.batch.max_events: Expected int, got str (from LOG_SHUTTLE_PIPELINE__BATCH__MAX_EVENTS)",
    ]


def test_command_line_overrides_environment_and_file(tmp_path):
    env = {"LOG_SHUTTLE_AGENT__LOG_LEVEL": "warning", "LOG_SHUTTLE_AGENT__DRAIN_TIMEOUT": "7"}
    flags = cli_overrides(log_level="error", from_beginning=True, max_line_bytes=4096, fmt="ndjson")
    cfg = load_config(write(tmp_path, GOOD), environ=env, overrides=flags)
    assert cfg.agent.log_level == "error"           # flag beats variable beats file
    assert cfg.agent.drain_timeout == 7.0           # variable beats file
    assert [f.from_beginning for f in cfg.inputs.file] == [True, True]  # applied to every input
    assert [f.max_line_bytes for f in cfg.inputs.file] == [4096, 4096]
    assert cfg.outputs.stdout.format == "ndjson"
    # --input-file replaces the file inputs of the file
    cfg = load_config(write(tmp_path, GOOD), environ={},
                      overrides=cli_overrides(input_file=["/tmp/x.log"]))
    assert [(f.name, f.paths) for f in cfg.inputs.file] == [("file", ["/tmp/x.log"])]


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(agent_command(*args), capture_output=True, text=True,
                          env=agent_env(**(env or {})), timeout=60)


def test_check_config_command(tmp_path):
    good = write(tmp_path, GOOD)
    r = run_cli("check-config", good)
    assert r.returncode == 0, r.stderr
    assert f"{good}: ok" in r.stdout
    assert "file 'app'" in r.stdout and "stdout (text)" in r.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text('[agent]\nlog_level = 3\nbogus = 1\n[[inputs.file]]\npaths = ["/a"]\n')
    r = run_cli("check-config", str(bad))
    assert r.returncode == 2
    assert "agent.log_level" in r.stderr and "agent.bogus: unknown key" in r.stderr
    assert "Traceback" not in r.stderr
    r = run_cli("check-config", good, env={"LOG_SHUTTLE_AGENT__DRAIN_TIMEOUT": "soon"})
    assert r.returncode == 2 and "LOG_SHUTTLE_AGENT__DRAIN_TIMEOUT" in r.stderr


def test_run_with_broken_config_exits_2_with_the_problems(tmp_path):
    bad = write(tmp_path, '[[inputs.file]]\npaths = ["/a"]\nmax_line_bytes = "x"\n')
    r = run_cli("--config", bad)
    assert r.returncode == 2
    assert "inputs.file[0].max_line_bytes: Expected int, got str" in r.stderr
    assert r.stdout == ""


def test_version_and_help():
    r = run_cli("--version")
    assert r.returncode == 0 and r.stdout.startswith("log-shuttle ")
    r = run_cli("--help")
    assert r.returncode == 0 and "--input-file" in r.stdout and "check-config" in r.stdout


def test_check_config_lists_the_ebpf_input(tmp_path):
    cfg = write(tmp_path, '[inputs.ebpf]\nprobes = ["process", "tcp"]\noptional = true\n')
    r = run_cli("check-config", cfg)
    assert r.returncode == 0, r.stderr
    assert "ebpf (process, tcp, optional)" in r.stdout


def test_queues_are_sized_from_the_batch_settings(tmp_path):
    # Twice (a batch + the largest input message: send_bytes + a line of max_line_bytes),
    # rounded up to 256 KiB: the queues' pages count in the RSS of both processes mapping each.
    cfg = load_config(None, environ={}, overrides=[(["inputs", "file"], [{"paths": ["/a"]}])])
    f, batch = cfg.inputs.file[0], cfg.pipeline.batch.max_bytes
    need = 2 * (batch + f.send_bytes + f.max_line_bytes)
    assert queue_bytes(cfg) == (need, need) == (3_670_016, 3_670_016)
    cfg = load_config(None, environ={}, overrides=[
        (["inputs", "file"], [{"paths": ["/a"], "max_line_bytes": 700_000}])])
    assert queue_bytes(cfg)[0] == 12 * 256 * 1024  # 2 x 1,486,432 = 2,972,864 -> 12 x 256 KiB
    cfg = load_config(None, environ={}, overrides=[
        (["inputs", "file"], [{"paths": ["/a"], "max_line_bytes": 8192, "read_bytes": 8192,
                               "send_bytes": 8192}]), (["pipeline", "batch", "max_bytes"], 8192)])
    assert queue_bytes(cfg)[0] == 1024 * 1024  # at least 1 MiB
