"""Configuration: a TOML file decoded into msgspec Structs, overridden by LOG_SHUTTLE_* environment
variables, overridden by command-line flags.

Every layer is applied to a plain dict first; the dict is then checked as a whole, so that every
problem (an unknown key, a wrong type, a missing value) is reported at once, each with its key.
Then each component's own checks (its config struct's ``problems()``) run, their keys prefixed
(``outputs.tcp[0].facility``), so that ``check-config`` refuses what the agent would.

This module composes the tables; each component's struct lives beside the component, and the
``[inputs]`` / ``[outputs]`` tables are made from the registry (agent/components.py).

Environment variables name a key by its path, upper case, ``__`` between levels, and an index for
arrays of tables::

    LOG_SHUTTLE_AGENT__LOG_LEVEL=debug
    LOG_SHUTTLE_PIPELINE__BATCH__MAX_EVENTS=500
    LOG_SHUTTLE_INPUTS__FILE__0__PATHS='["/var/log/*.log"]'

A value is read as a TOML value when it parses as one (``500``, ``true``, ``["a"]``), else as a
string.
"""

from __future__ import annotations

import difflib
import os
import socket
import sys
import tomllib
import types
import typing
from collections.abc import Mapping
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta, Struct

from agent.components import DEFAULT_OUTPUT, INPUTS, OUTPUTS, Component
from common.config import KiB, MiB, PositiveFloat, Section, directory_problems
from common.errors import ConfigError
from inputs.file.checkpoint import default_state_dir
from pipeline.config import PipelineConfig

ENV_PREFIX = "LOG_SHUTTLE_"

_Section = Section  # the server's table below derives from it (until it has its own module)


class AgentConfig(Section):
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    drain_timeout: Annotated[float, Meta(ge=0)] = 10.0
    """Seconds a stop may take to drain in-flight lines before the rest is killed."""
    host: str = ""
    """The host name put on every event; empty means this machine's name."""
    restart_backoff: PositiveFloat = 0.5
    """First delay before restarting a crashed child; doubles per crash, up to restart_backoff_max."""
    restart_backoff_max: PositiveFloat = 30.0
    state_dir: str = ""
    """Where checkpoints are kept; empty means /var/lib/log-shuttle for root, else
    $XDG_STATE_HOME/log-shuttle (~/.local/state/log-shuttle)."""


class QueueConfig(Section):
    input_bytes: Annotated[int, Meta(ge=1 * MiB)] = 16 * MiB
    """Capacity of each input -> pipeline queue, in bytes."""
    output_bytes: Annotated[int, Meta(ge=1 * MiB)] = 16 * MiB
    """Capacity of each pipeline -> output queue, in bytes."""


def _tables(name: str, registry: dict[str, Component]) -> type[Section]:
    """The ``[inputs]`` or ``[outputs]`` table, one key per registered component: an array of
    tables (default empty) or one optional table."""
    fields: list[tuple[str, Any, Any]] = []
    for kind, component in registry.items():
        if component.many:
            fields.append((kind, list[component.config], msgspec.field(default_factory=list)))
        else:
            fields.append((kind, component.config | None, None))  # type: ignore[operator]
    return msgspec.defstruct(name, fields, bases=(Section,), kw_only=True,
                             forbid_unknown_fields=True, module=__name__)


InputsConfig = _tables("InputsConfig", INPUTS)
OutputsConfig = _tables("OutputsConfig", OUTPUTS)


def instances(table: Any, registry: dict[str, Component]
              ) -> list[tuple[str, str, Component, Section]]:
    """Every configured component of ``table`` (an InputsConfig or OutputsConfig), in registry
    order, as (kind, index suffix of its key: "" or "[i]", component, config)."""
    out = []
    for kind, component in registry.items():
        value = getattr(table, kind)
        if component.many:
            out += [(kind, f"[{i}]", component, cfg) for i, cfg in enumerate(value)]
        elif value is not None:
            out.append((kind, "", component, value))
    return out


class ServerConfig(_Section):
    """``log-shuttle server``: the receiving end."""

    grpc_listen: list[str] = []
    """Addresses (HOST:PORT) for OTLP/gRPC and the gRPC health service."""
    tcp_listen: list[str] = []
    """Addresses for TCP: NDJSON, or syslog octet-counted or newline-framed (told per frame)."""
    output_dir: str = "/var/lib/log-shuttle/received"
    """Where the size-rotated NDJSON files go."""
    output_stdout: bool = False
    """NDJSON on stdout instead of files."""
    insecure: bool = False
    """Plaintext listeners (without it, tls_cert and tls_key are required)."""
    tls_cert: str = ""
    tls_key: str = ""
    tls_ca: str = ""
    """With it, clients must present a certificate signed by these CAs (mutual TLS)."""
    auth_token_file: str = ""
    """A file with the bearer token clients must present (or LOG_SHUTTLE_AUTH_TOKEN)."""
    max_message_bytes: Annotated[int, Meta(ge=1024)] = 4 * MiB
    """Largest gRPC message or TCP frame accepted."""
    max_connections: Annotated[int, Meta(ge=1)] = 1024
    """TCP connections at once, per listener (more are closed at once, counted); and gRPC calls
    at once (more are refused RESOURCE_EXHAUSTED with RetryInfo, counted)."""
    idle_timeout: PositiveFloat = 300.0
    """A connection silent this long is closed."""
    file_bytes: Annotated[int, Meta(ge=4 * KiB)] = 100 * MiB
    """A file is rotated once it is this large."""
    max_files: Annotated[int, Meta(ge=1)] = 10
    """Rotated files kept (the oldest are deleted)."""
    drain_timeout: Annotated[float, Meta(ge=0)] = 5.0
    """SIGTERM: how long in-flight calls and connections may take to finish."""
    log_level: Literal["debug", "info", "warning", "error"] = "info"


class Config(Section):
    agent: AgentConfig = msgspec.field(default_factory=AgentConfig)
    queue: QueueConfig = msgspec.field(default_factory=QueueConfig)
    inputs: InputsConfig = msgspec.field(default_factory=InputsConfig)
    pipeline: PipelineConfig = msgspec.field(default_factory=PipelineConfig)
    outputs: OutputsConfig = msgspec.field(default_factory=OutputsConfig)
    server: ServerConfig = msgspec.field(default_factory=ServerConfig)

    def host_name(self) -> str:
        return self.agent.host or socket.gethostname()


# --- loading -----------------------------------------------------------------------------------


def read_toml(path: str) -> dict[str, Any]:
    """Read a TOML file; a missing file or a syntax error becomes a ConfigError naming the file."""
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError as exc:
        raise ConfigError([f"file not found: {path}"], source=path) from exc
    except PermissionError as exc:
        raise ConfigError([f"cannot read {path}: permission denied"], source=path) from exc
    except IsADirectoryError as exc:
        raise ConfigError([f"{path} is a directory, not a TOML file"], source=path) from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"TOML syntax: {exc}"], source=path) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError([f"not UTF-8 text: {exc}"], source=path) from exc


def env_overrides(environ: Mapping[str, str]) -> list[tuple[str, list[str], Any]]:
    """The LOG_SHUTTLE_* variables as (variable, key path, value), sorted by name."""
    out = []
    for var in sorted(environ):
        if not var.startswith(ENV_PREFIX) or var in _NOT_CONFIG_VARS:
            continue
        key = var[len(ENV_PREFIX):]
        parts = [p.lower() for p in key.split("__")]
        out.append((var, parts, _parse_env_value(environ[var])))
    return out


# Variables of the LOG_SHUTTLE_ family that are not configuration keys.
_NOT_CONFIG_VARS = frozenset({"LOG_SHUTTLE_CONFIG", "LOG_SHUTTLE_SETUP_TEST",
                              "LOG_SHUTTLE_AUTH_TOKEN"})


def _parse_env_value(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def set_path(data: dict[str, Any], parts: list[str], value: Any) -> str | None:
    """Set ``data[parts...] = value``, creating tables; an integer part indexes an array of
    tables and ``*`` stands for each of its elements. Returns a problem string instead of
    raising when the path cannot be followed."""
    node: Any = data
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if isinstance(node, list):
            if part == "*" and not last:
                for element in node:
                    problem = set_path(element, parts[i + 1:], value)
                    if problem:
                        return problem
                return None
            if not part.isdigit():
                return f"{'.'.join(parts[:i])} is an array: expected an index, got {part!r}"
            idx = int(part)
            while len(node) <= idx:
                node.append({})
            if last:
                node[idx] = value
            else:
                node = node[idx]
            continue
        if not isinstance(node, dict):
            return f"{'.'.join(parts[:i])} is not a table"
        if last:
            node[part] = value
        else:
            node = node.setdefault(part, [] if parts[i + 1].isdigit() or parts[i + 1] == "*" else {})
    return None


def load_config(
    path: str | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: list[tuple[list[str], Any]] = (),
    command: Literal["agent", "server"] = "agent",
) -> Config:
    """Build the configuration: file, then environment, then ``overrides`` (from the CLI).

    Raises ConfigError listing every problem found, each naming its key (or variable)."""
    data: dict[str, Any] = read_toml(path) if path else {}
    problems: list[str] = []
    origin: dict[str, str] = {}  # dotted key -> where its value came from, when not the file
    layers = [(var, parts, value) for var, parts, value in
              env_overrides(os.environ if environ is None else environ)]
    layers += [("command line", parts, value) for parts, value in overrides]
    for where, parts, value in layers:
        problem = set_path(data, parts, value)
        if problem:
            problems.append(f"{where}: {problem}")
        origin[_dotted([p for p in parts if p != "*"])] = where
    for problem in check(data, Config):
        key = problem.split(": ", 1)[0]
        src = next((w for k, w in origin.items() if key == k or key.startswith(k + ".")
                    or key.startswith(k + "[")), None)
        problems.append(f"{problem} (from {src})" if src else problem)
    if not problems:
        config = msgspec.convert(data, Config)
        env = os.environ if environ is None else environ
        problems += (check_semantics(config, environ=env) if command == "agent"
                     else check_server(config))
        if not problems:
            if not instances(config.outputs, OUTPUTS):  # stdout is the default output
                setattr(config.outputs, DEFAULT_OUTPUT, OUTPUTS[DEFAULT_OUTPUT].config())
            return config
    raise ConfigError(problems, source=path)


def check_semantics(config: Config, *, environ: Mapping[str, str] | None = None) -> list[str]:
    """Problems that no single key's type shows: each component's own (its config's
    ``problems()``, keys prefixed with its table's), and those between tables."""
    problems = []
    inputs = instances(config.inputs, INPUTS)
    if not inputs:
        problems.append("inputs: nothing to read: give --input-file PATH or an [[inputs.file]] table")
    for section, found in (("inputs", inputs), ("outputs", instances(config.outputs, OUTPUTS))):
        names: dict[str, set[str]] = {}
        for kind, index, component, cfg in found:
            key = f"{section}.{kind}{index}"
            if component.platform is not None and sys.platform != component.platform:
                if not index or index == "[0]":
                    problems.append(f"{section}.{kind}: the {component.label or kind} "
                                    f"{section[:-1]} is {_PLATFORMS.get(component.platform)}-only "
                                    f"(this is {sys.platform})")
                continue
            problems += [f"{key}.{p}" for p in cfg.problems(environ=environ)]
            if component.many:
                seen = names.setdefault(kind, set())
                name = getattr(cfg, "name")
                if name in seen:
                    problems.append(f"{key}.name: {name!r} is used twice; names must differ")
                seen.add(name)
    problems += [f"pipeline.{p}" for p in config.pipeline.problems(environ=environ)]
    if any("state_dir" in cfg.__struct_fields__ and not getattr(cfg, "state_dir")
           for _, _, _, cfg in inputs):  # an input that keeps its state in the agent's
        problems += [p if config.agent.state_dir else f"{p} (the default; set --state-dir)"
                     for p in directory_problems(config.agent.state_dir or default_state_dir(),
                                                 key="agent.state_dir")]
    problems += _check_queues(config, inputs)
    return problems


_PLATFORMS = {"win32": "Windows", "linux": "Linux", "darwin": "macOS"}


def _check_queues(config: Config, inputs: list[tuple[str, str, Component, Section]]) -> list[str]:
    """The queues must hold what goes through them. A batch is closed after the input message
    that filled it: it may hold one more message. The pipeline commits input messages only once
    their batch is out, so an input queue must hold a whole batch's worth of uncommitted
    messages, twice over, or the input waits on it; an output queue, two batches."""
    problems = []
    batch = config.pipeline.batch
    largest, where = 0, ""
    for kind, index, _component, cfg in inputs:
        if cfg.message_bytes() > largest:
            largest, where = cfg.message_bytes(), f"inputs.{kind}{index}"
    need = 2 * (batch.max_bytes + largest)
    if largest and config.queue.input_bytes < need:
        problems.append(f"queue.input_bytes: {config.queue.input_bytes} is too small for batches "
                        f"of pipeline.batch.max_bytes = {batch.max_bytes} and messages of up to "
                        f"{largest} bytes from {where} (needs at least {need})")
    if config.queue.output_bytes < need:
        problems.append(f"queue.output_bytes: {config.queue.output_bytes} is too small for a batch "
                        f"(needs at least {need})")
    return problems


def check_server(config: Config) -> list[str]:
    """Problems of the server's table that no single key shows."""
    s = config.server
    problems = []
    if not s.grpc_listen and not s.tcp_listen:
        problems.append("server: nothing to listen on: give --grpc-listen or --tcp-listen")
    if not s.insecure and not (s.tls_cert and s.tls_key):
        problems.append("server: give tls_cert and tls_key (--tls-cert, --tls-key), or insecure "
                        "= true (--insecure) for plaintext")
    if s.insecure and (s.tls_cert or s.tls_key or s.tls_ca):
        problems.append("server: insecure (plaintext) and TLS options were both given")
    return problems


# --- checking a dict against the Structs, collecting every problem -----------------------------


def check(data: Any, cls: type[Struct], path: str = "") -> list[str]:
    """Every problem in ``data`` as a ``cls``, each prefixed with its dotted key."""
    if not isinstance(data, dict):
        return [f"{path or 'configuration'}: expected a table, got {_kind(data)}"]
    problems: list[str] = []
    fields = {f.encode_name: f for f in msgspec.structs.fields(cls)}
    for key in data:
        if key not in fields:
            near = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            problems.append(f"{_join(path, key)}: unknown key{hint}")
    for key, field in fields.items():
        where = _join(path, key)
        if key not in data:
            if field.required:
                problems.append(f"{where}: missing (required)")
            continue
        problems += _check_value(data[key], field.type, where)
    return problems


def _check_value(value: Any, tp: Any, where: str) -> list[str]:
    struct = _struct_of(tp)
    if struct is not None:
        return check(value, struct, where)
    item = _list_of_struct(tp)
    if item is not None:
        if not isinstance(value, list):
            return [f"{where}: expected an array of tables, got {_kind(value)}"]
        out: list[str] = []
        for i, v in enumerate(value):
            out += check(v, item, f"{where}[{i}]")
        return out
    try:
        msgspec.convert(value, tp)
    except msgspec.ValidationError as exc:
        return [f"{where}: {_plain(str(exc))}"]
    return []


def _struct_of(tp: Any) -> type[Struct] | None:
    """The Struct in ``tp`` (a Struct, or Struct | None), else None."""
    if isinstance(tp, type) and issubclass(tp, Struct):
        return tp
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        structs = [a for a in typing.get_args(tp) if isinstance(a, type) and issubclass(a, Struct)]
        if len(structs) == 1:
            return structs[0]
    return None


def _list_of_struct(tp: Any) -> type[Struct] | None:
    if typing.get_origin(tp) is list:
        (arg,) = typing.get_args(tp)
        if isinstance(arg, type) and issubclass(arg, Struct):
            return arg
    return None


def _dotted(parts: list[str]) -> str:
    out = ""
    for p in parts:
        out = f"{out}[{p}]" if p.isdigit() else _join(out, p)
    return out


def _join(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


def _kind(value: Any) -> str:
    return {dict: "a table", list: "an array", str: "a string", bool: "a boolean",
            int: "an integer", float: "a float"}.get(type(value), type(value).__name__)


def _plain(msg: str) -> str:
    # msgspec says "Expected `int`, got `str`"; drop the "- at `$...`" suffix of nested values
    return msg.replace("`", "").split(" - at ")[0]
