"""The registry of components drives the configuration and the plan; each component's checks
are its config's, run by the loader with their keys prefixed, before any process starts."""

from __future__ import annotations

import subprocess
import sys

import msgspec
import pytest

from agent.components import INPUTS, OUTPUTS, PIPELINE
from agent.config import InputsConfig, OutputsConfig, load_config
from agent.plan import plan
from common.component import resolve_build
from common.errors import ConfigError
from outputs.tcp import TcpOutputConfig
from tests.harness import agent_command, agent_env


def _problems(tmp_path, text: str, environ: dict[str, str] | None = None) -> list[str]:
    path = tmp_path / "agent.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(str(path), environ=environ or {})
    return info.value.problems


def test_the_tables_are_made_from_the_registry():
    assert list(InputsConfig.__struct_fields__) == list(INPUTS)
    assert list(OutputsConfig.__struct_fields__) == list(OUTPUTS)
    for kind, component in [*INPUTS.items(), *OUTPUTS.items()]:
        table = InputsConfig if kind in INPUTS else OutputsConfig
        field = next(f for f in msgspec.structs.fields(table) if f.name == kind)
        assert (field.type == list[component.config]) == component.many, kind


def test_every_build_path_resolves_to_a_function_in_a_fresh_interpreter():
    # In a new interpreter, as a Windows child would: and the supervisor's imports
    # (the configuration and the plan) must not pull in grpc or protobuf.
    paths = [c.build for c in [*INPUTS.values(), *OUTPUTS.values(), PIPELINE]]
    code = ("import sys, agent.config, agent.plan; assert 'grpc' not in sys.modules, 'grpc'; "
            "from common.component import resolve_build; "
            f"print([callable(resolve_build(p)) for p in {paths!r}])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=agent_env(), timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str([True] * len(paths))
    assert resolve_build("outputs.stdout:build").__name__ == "build"


def test_plan_follows_the_registry(tmp_path):
    (tmp_path / "a.log").touch()
    cfg = load_config(None, environ={}, overrides=[
        (["inputs", "file", "0", "paths"], [str(tmp_path / "a.log")]),
        (["inputs", "file", "1", "paths"], [str(tmp_path / "a.log")]),
        (["inputs", "file", "1", "name"], "app"),
        (["outputs", "tcp", "0", "address"], "127.0.0.1:9"),
        (["outputs", "tcp", "1", "address"], "127.0.0.1:9"),
        (["outputs", "tcp", "1", "name"], "siem"),
        (["outputs", "stdout", "format"], "text"),
        (["agent", "state_dir"], str(tmp_path / "state"))])
    specs, queues = plan(cfg)
    try:
        got = [(s.role, s.build, s.keep_stdout, [q.name for q in s.produces + s.consumes])
               for s in specs]
        assert got == [
            ("input file", "inputs.file:build", False, ["log-shuttle.input-file"]),
            ("input file app", "inputs.file:build", False, ["log-shuttle.input-app"]),
            ("output stdout", "outputs.stdout:build", True, ["log-shuttle.output-stdout"]),
            ("output tcp", "outputs.tcp:build", False, ["log-shuttle.output-tcp-tcp"]),
            ("output tcp siem", "outputs.tcp:build", False, ["log-shuttle.output-tcp-siem"]),
            ("pipeline", "pipeline:build", False,
             ["log-shuttle.output-stdout", "log-shuttle.output-tcp-tcp",
              "log-shuttle.output-tcp-siem", "log-shuttle.input-file", "log-shuttle.input-app"]),
        ]
        # The agent's state dir goes to an input that has none of its own.
        assert specs[0].config.state_dir == str(tmp_path / "state")
        assert isinstance(specs[3].config, TcpOutputConfig) and specs[4].config.name == "siem"
    finally:
        for q in queues:
            q.destroy()


def test_build_time_checks_are_the_configurations_with_their_keys(tmp_path):
    problems = _problems(tmp_path, """
[[inputs.file]]
paths = ["/var/log/a.log"]
[inputs.file.multiline]
start = "(["
[[outputs.tcp]]
address = "127.0.0.1:5514"
facility = "bogus"
[[outputs.tcp]]
name = "t2"
address = "127.0.0.1:5514"
auth_token_file = "/etc/hostname"
[[outputs.tcp]]
name = "t3"
address = "127.0.0.1:5514"
tls_cert = "/etc/hostname"
[[outputs.grpc]]
address = "127.0.0.1:4317"
insecure = true
tls_server_name = "x"
""")
    assert problems == [
        "inputs.file[0].multiline.start: multiline start pattern '([': unterminated character "
        "set at position 1",
        "outputs.tcp[0].facility: unknown syslog facility 'bogus' (one of kern, user, mail, "
        "daemon, auth, syslog, lpr, news, uucp, cron, authpriv, ftp, ntp, security, console, "
        "solaris-cron, local0, local1, local2, local3, local4, local5, local6, local7)",
        "outputs.tcp[1].auth_token_file: a token is only ever sent over TLS: set tls = true "
        "(--tls-ca ...) or give no token",
        "outputs.tcp[2].tls_key: give both a TLS certificate and its key (tls_cert and tls_key)",
        "outputs.grpc[0].insecure: insecure (plaintext) and TLS options were both given",
    ]


def test_a_token_from_the_environment_counts_too(tmp_path):
    text = '[[inputs.file]]\npaths = ["/a"]\n[[outputs.grpc]]\naddress = "h:1"\ninsecure = true\n'
    assert _problems(tmp_path, text, {"LOG_SHUTTLE_AUTH_TOKEN": "abc"}) == [
        "outputs.grpc[0].insecure: a token is only ever sent over TLS: drop --insecure"]
    path = tmp_path / "agent.toml"
    assert load_config(str(path), environ={}).outputs.grpc[0].insecure


def test_etw_checks_that_need_no_windows(tmp_path):
    kp = "{22FB2CD6-0E7B-422B-A0C7-2FAD1FD0E716}"
    problems = [p for p in _problems(tmp_path, f"""
[inputs.etw]
session = ""
[[inputs.etw.providers]]
provider = "{kp}"
event_ids = {list(range(65))}
pids = {list(range(9))}
""") if not p.startswith("inputs.etw: the ETW input is Windows-only")]
    if sys.platform == "win32":
        assert problems == [
            "inputs.etw.session: a session name must have 1 to 1023 characters",
            "inputs.etw.providers[0]: Kernel-Process is already enabled by process_events",
            "inputs.etw.providers[0].event_ids: at most 64 ids",
            "inputs.etw.providers[0].pids: at most 8 pids"]
    from inputs.etw.config import EtwInputConfig, EtwProviderConfig
    cfg = EtwInputConfig(session="", providers=[EtwProviderConfig(
        provider=kp, event_ids=list(range(65)), pids=list(range(9)))])
    assert cfg.problems() == [
        "session: a session name must have 1 to 1023 characters",
        "providers[0]: Kernel-Process is already enabled by process_events",
        "providers[0].event_ids: at most 64 ids",
        "providers[0].pids: at most 8 pids"]
    assert EtwInputConfig(process_events=False).problems() == [
        "providers: nothing to trace: enable process_events or give a provider"]


def test_the_queue_check_is_one_for_every_input(tmp_path):
    problems = _problems(tmp_path, """
[queue]
input_bytes = 2097152
[[inputs.file]]
paths = ["/a"]
send_bytes = 65536
max_line_bytes = 65536
[[inputs.file]]
name = "big"
paths = ["/b"]
""")
    assert problems == [
        "queue.input_bytes: 2097152 is too small for batches of pipeline.batch.max_bytes = "
        "524288 and messages of up to 1310720 bytes from inputs.file[1] (needs at least "
        "3670016)"]


def test_check_config_refuses_what_the_agent_would(tmp_path):
    cfg = tmp_path / "agent.toml"
    cfg.write_text('[[inputs.file]]\npaths = ["/a"]\n[[outputs.tcp]]\naddress = "h:1"\n'
                   'framing = "syslog-octet"\nfacility = "local9"\n')
    r = subprocess.run(agent_command("check-config", str(cfg)), capture_output=True, text=True,
                       env=agent_env(), timeout=60)
    assert r.returncode == 2
    assert "outputs.tcp[0].facility: unknown syslog facility 'local9'" in r.stderr


def test_grpc_headers_that_grpc_would_reject_every_call_are_refused():
    # Checked against grpc itself: such metadata fails each Export with INTERNAL "Invalid
    # metadata" (a code that drops the batch), and a -bin key given text raises TypeError.
    from outputs.grpc_config import GrpcOutputConfig

    cfg = GrpcOutputConfig(address="127.0.0.1:4317", insecure=True, headers={
        "X-Tenant": "a", "bad key": "v", "x-bin": "abc", "ok": "v\n"})
    assert cfg.problems(environ={}) == [
        "headers: 'bad key' is not a gRPC metadata key (letters, digits, - _ .)",
        "headers: 'x-bin': binary (-bin) metadata cannot be given as text",
        "headers.ok: the value must be printable ASCII"]


def test_grpc_rejects_what_the_header_check_refuses():
    # The other half of the test above: the real grpc library refuses the same metadata.
    import grpc
    from opentelemetry.proto.collector.logs.v1 import logs_service_pb2_grpc
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

    with grpc.insecure_channel("127.0.0.1:9") as channel:
        stub = logs_service_pb2_grpc.LogsServiceStub(channel)
        for metadata in ([("bad key", "v")], [("ok", "v\n")]):
            with pytest.raises(grpc.RpcError) as info:
                stub.Export(ExportLogsServiceRequest(), metadata=metadata, timeout=2)
            assert info.value.code() == grpc.StatusCode.INTERNAL
        with pytest.raises(TypeError):
            stub.Export(ExportLogsServiceRequest(), metadata=[("x-bin", "abc")], timeout=2)


REQUIRED = {"file": {"paths": ["/nonexistent/a.log"]}, "tcp": {"address": "127.0.0.1:9"}, "grpc": {"address": "127.0.0.1:9"},
            "jetstream": {"servers": ["nats://127.0.0.1:9"]},
            "metrics_jsonl": {"path": "/nonexistent/m.jsonl"},
            "otlp_metrics": {"address": "127.0.0.1:9"}}


@pytest.mark.parametrize("kind,name", [("input", n) for n in INPUTS]
                         + [("output", n) for n in OUTPUTS])
def test_every_component_refuses_a_plan_that_gave_it_two_queues(kind, name):
    """The one-queue check, written once (Context.one_consumer / one_producer), is made by
    every component's build before it acquires anything (the ETW input's too, on Linux)."""
    from common.component import BootError, Context, Stop

    component = (INPUTS if kind == "input" else OUTPUTS)[name]
    cfg = msgspec.convert(REQUIRED.get(name, {}), component.config)
    two = [object(), object()]
    ctx = Context(name=f"{kind} {name}", config=cfg, host="h", stop=Stop(),
                  consumers=two if kind == "output" else [],
                  producers=two if kind == "input" else [])
    with pytest.raises(BootError, match=f"{kind} {name}: expected one "
                                        f"{'input' if kind == 'output' else 'output'} queue, "
                                        f"got 2"):
        resolve_build(component.build)(ctx)
