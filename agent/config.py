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

import os
import socket
import sys
from collections.abc import Mapping
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from agent.components import DEFAULT_OUTPUT, INPUTS, OUTPUTS, Component
from common.config import KiB, MiB, PositiveFloat, Section, directory_problems
from agent.observe.config import HttpConfig
from common.errors import ConfigError
from inputs.file.checkpoint import default_state_dir
from pipeline.config import PipelineConfig
from server.config import ServerConfig


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
    http: HttpConfig = msgspec.field(default_factory=HttpConfig)
    """The agent's own HTTP listener: /metrics, /health, /ready, /status (docs/operating.md)."""
    user: str = ""
    """Run as root: the user the outputs and the listener run as, with no capabilities; empty:
    ``log-shuttle`` if it exists, else ``nobody`` (docs/operating.md)."""


class QueueConfig(Section):
    input_bytes: Annotated[int, Meta(ge=0)] = 0
    """Capacity of each input -> pipeline queue, in bytes; 0: what the batch settings need
    (see ``queue_bytes``), at least 1 MiB. A ring's pages take memory only once written, and
    are given back when it empties (common/shmqueue.py)."""
    output_bytes: Annotated[int, Meta(ge=0)] = 0
    """Capacity of each pipeline -> output queue, in bytes; 0: as for input_bytes."""


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


class Config(Section):
    agent: AgentConfig = msgspec.field(default_factory=AgentConfig)
    queue: QueueConfig = msgspec.field(default_factory=QueueConfig)
    inputs: InputsConfig = msgspec.field(default_factory=InputsConfig)
    pipeline: PipelineConfig = msgspec.field(default_factory=PipelineConfig)
    outputs: OutputsConfig = msgspec.field(default_factory=OutputsConfig)
    server: ServerConfig = msgspec.field(default_factory=ServerConfig)

    def host_name(self) -> str:
        return self.agent.host or socket.gethostname()


def load_config(
    path: str | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: list[tuple[list[str], Any]] = (),
) -> Config:
    """Build the configuration: file, then environment, then ``overrides`` (from the CLI).

    Raises ConfigError listing every problem found, each naming its key (or variable)."""
    # loading needs these, the supervisor (which gets the loaded configuration) does not
    from common.configload import apply_layers, check, env_overrides, read_toml, with_origin

    data: dict[str, Any] = read_toml(path) if path else {}
    env = os.environ if environ is None else environ
    layers = env_overrides(env) + [("command line", parts, value) for parts, value in overrides]
    problems, origin = apply_layers(data, layers)
    problems += with_origin(check(data, Config), origin)
    if not problems:
        config = msgspec.convert(data, Config)
        problems += check_semantics(config, environ=env)
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
    problems += [f"agent.http.{p}" for p in config.agent.http.problems(environ=environ)]
    outputs = instances(config.outputs, OUTPUTS)
    if outputs and all(c.receives == "metrics" for _, _, c, _ in outputs) and \
            any(kind != "ebpf" for kind, _, _, _ in inputs):
        problems.append("outputs: only metric outputs are configured: what the "
                        f"{'/'.join(sorted({k for k, _, _, _ in inputs if k != 'ebpf'}))} "
                        "input reads would go nowhere; add an output of events (stdout, tcp, "
                        "grpc)")
    if any("state_dir" in cfg.__struct_fields__ and not getattr(cfg, "state_dir")
           for _, _, _, cfg in inputs):  # an input that keeps its state in the agent's
        problems += [p if config.agent.state_dir else f"{p} (the default; set --state-dir)"
                     for p in directory_problems(config.agent.state_dir or default_state_dir(),
                                                 key="agent.state_dir")]
    problems += _check_queues(config, inputs)
    return problems


_PLATFORMS = {"win32": "Windows", "linux": "Linux", "darwin": "macOS"}


def _queue_need(config: Config, inputs: list[tuple[str, str, Component, Section]]
                ) -> tuple[int, int, str]:
    """What the queues must hold, and the largest input message and where it comes from. A
    batch is closed after the input message that filled it: it may hold one more message. The
    pipeline commits input messages only once their batch is out, so an input queue must hold a
    whole batch's worth of uncommitted messages, twice over, or the input waits on it; an output
    queue, two batches."""
    largest, where = 0, ""
    for kind, index, _component, cfg in inputs:
        if cfg.message_bytes() > largest:
            largest, where = cfg.message_bytes(), f"inputs.{kind}{index}"
    return 2 * (config.pipeline.batch.max_bytes + largest), largest, where


QUEUE_ROUND = 256 * KiB


def queue_bytes(config: Config) -> tuple[int, int]:
    """The capacities of the input and output queues: as configured, or (0) what the batch
    settings need, rounded up to 256 KiB, at least 1 MiB (3.5 MiB with the defaults). A queue
    that carries a stream is resident whole in both processes that map it: every 256 KiB
    counts twice in the summed RSS."""
    need, _, _ = _queue_need(config, instances(config.inputs, INPUTS))
    auto = max(1 * MiB, -(-need // QUEUE_ROUND) * QUEUE_ROUND)
    return config.queue.input_bytes or auto, config.queue.output_bytes or auto


def _check_queues(config: Config, inputs: list[tuple[str, str, Component, Section]]) -> list[str]:
    """The queues must hold what goes through them (``_queue_need``)."""
    problems = []
    batch = config.pipeline.batch
    need, largest, where = _queue_need(config, inputs)
    if config.queue.input_bytes and config.queue.input_bytes < 1 * MiB:
        problems.append(f"queue.input_bytes: {config.queue.input_bytes} is below 1 MiB")
    if config.queue.output_bytes and config.queue.output_bytes < 1 * MiB:
        problems.append(f"queue.output_bytes: {config.queue.output_bytes} is below 1 MiB")
    if largest and config.queue.input_bytes and config.queue.input_bytes < need:
        problems.append(f"queue.input_bytes: {config.queue.input_bytes} is too small for batches "
                        f"of pipeline.batch.max_bytes = {batch.max_bytes} and messages of up to "
                        f"{largest} bytes from {where} (needs at least {need})")
    if config.queue.output_bytes and config.queue.output_bytes < need:
        problems.append(f"queue.output_bytes: {config.queue.output_bytes} is too small for a batch "
                        f"(needs at least {need})")
    return problems
