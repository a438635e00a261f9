"""Configuration: a TOML file decoded into msgspec Structs, overridden by LOG_SHUTTLE_* environment
variables, overridden by command-line flags.

Every layer is applied to a plain dict first; the dict is then checked as a whole, so that every
problem (an unknown key, a wrong type, a missing value) is reported at once, each with its key.

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
import tomllib
import types
import typing
from collections.abc import Mapping
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta, Struct

from common.errors import ConfigError

ENV_PREFIX = "LOG_SHUTTLE_"
KiB = 1024
MiB = 1024 * KiB

PositiveInt = Annotated[int, Meta(gt=0)]
PositiveFloat = Annotated[float, Meta(gt=0)]


class _Section(Struct, forbid_unknown_fields=True, kw_only=True):
    """Base of every configuration table: unknown keys are errors."""


class AgentConfig(_Section):
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


class QueueConfig(_Section):
    input_bytes: Annotated[int, Meta(ge=1 * MiB)] = 16 * MiB
    """Capacity of each input -> pipeline queue, in bytes."""
    output_bytes: Annotated[int, Meta(ge=1 * MiB)] = 16 * MiB
    """Capacity of each pipeline -> output queue, in bytes."""


class MultilineConfig(_Section):
    start: str
    """A regular expression that matches the first line of a record (e.g. a timestamp)."""
    timeout: PositiveFloat = 1.0
    """A record is sent when no line has come for this many seconds."""


class FileInputConfig(_Section):
    paths: list[str]
    """Files to tail; globs allowed (``*``, ``?``, ``[...]``, ``**``)."""
    name: str = "file"
    from_beginning: bool = False
    """Read files present at start from their beginning (files that appear later always are)."""
    max_line_bytes: Annotated[int, Meta(ge=64)] = 1 * MiB
    """Longer lines are split into pieces of this size, flagged as pieces."""
    read_bytes: Annotated[int, Meta(ge=4 * KiB)] = 256 * KiB
    """At most this much is read from one file per round, so that busy files do not starve others."""
    watch: Literal["auto", "inotify", "poll"] = "auto"
    """How changes are noticed: inotify through watchdog, polling, or inotify with a polling fallback."""
    poll_interval: PositiveFloat = 0.25
    """Seconds between polls of open files when no notification arrives."""
    glob_interval: PositiveFloat = 2.0
    """Seconds between re-evaluations of the globs, in addition to directory notifications."""
    send_bytes: Annotated[int, Meta(ge=4 * KiB)] = 1 * MiB
    """A message to the pipeline is sent once it holds this much (and at the end of every round)."""
    exclude: list[str] = []
    """Globs of files to leave out (``*.gz``: a name; ``/x/*/y``: a whole path)."""
    format: Literal["raw", "cri", "docker"] = "raw"
    """raw lines, or container logs: CRI (Kubernetes) or Docker json-file."""
    multiline: MultilineConfig | None = None
    """Join continuation lines to the line that starts a record."""
    checkpoint_interval: PositiveFloat = 1.0
    """Seconds between checkpoint writes (when something was acknowledged)."""
    rotate_wait: Annotated[float, Meta(ge=0)] = 5.0
    """Seconds a rotated or deleted file stays open at its end for late writes."""
    close_idle_after: PositiveFloat = 300.0
    """A file with no new bytes for this long is closed, and opened again when it changes."""
    ignore_older: Annotated[float, Meta(ge=0)] = 0.0
    """Leave alone files not modified for this many seconds (0: follow all); only what is
    added to them later is read."""
    state_dir: str = ""
    """Where this input's checkpoints go; empty means the agent's state_dir."""


class InputsConfig(_Section):
    file: list[FileInputConfig] = []


class BatchConfig(_Section):
    max_events: PositiveInt = 1000
    """A batch is sent once it holds this many lines or events..."""
    max_bytes: PositiveInt = 1 * MiB
    """...or this many bytes..."""
    max_delay: PositiveFloat = 0.2
    """...or this many seconds after its first event arrived."""


class PipelineConfig(_Section):
    batch: BatchConfig = msgspec.field(default_factory=BatchConfig)


class StdoutOutputConfig(_Section):
    format: Literal["ndjson", "text"] = "ndjson"


class OutputsConfig(_Section):
    stdout: StdoutOutputConfig | None = None


class Config(_Section):
    agent: AgentConfig = msgspec.field(default_factory=AgentConfig)
    queue: QueueConfig = msgspec.field(default_factory=QueueConfig)
    inputs: InputsConfig = msgspec.field(default_factory=InputsConfig)
    pipeline: PipelineConfig = msgspec.field(default_factory=PipelineConfig)
    outputs: OutputsConfig = msgspec.field(default_factory=OutputsConfig)

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
_NOT_CONFIG_VARS = frozenset({"LOG_SHUTTLE_CONFIG", "LOG_SHUTTLE_SETUP_TEST"})


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
        problems += check_semantics(config)
        if not problems:
            if config.outputs.stdout is None:
                config.outputs.stdout = StdoutOutputConfig()  # stdout is the default output
            return config
    raise ConfigError(problems, source=path)


def check_semantics(config: Config) -> list[str]:
    """Problems that no single key shows."""
    problems = []
    if not config.inputs.file:
        problems.append("inputs: nothing to read: give --input-file PATH or an [[inputs.file]] table")
    names: set[str] = set()
    for i, f in enumerate(config.inputs.file):
        if not f.paths:
            problems.append(f"inputs.file[{i}].paths: give at least one path or glob")
        if f.name in names:
            problems.append(f"inputs.file[{i}].name: {f.name!r} is used twice; names must differ")
        names.add(f.name)
        # One input message holds up to send_bytes plus one event of up to max_line_bytes.
        need = 2 * (f.send_bytes + max(f.max_line_bytes, f.read_bytes))
        if config.queue.input_bytes < need:
            problems.append(f"queue.input_bytes: {config.queue.input_bytes} is too small for "
                            f"inputs.file[{i}] (needs at least {need})")
    batch = config.pipeline.batch
    # A batch is closed after the input message that filled it: it may hold one more message.
    # The pipeline commits input messages only once their batch is out, so an input queue must
    # hold a whole batch's worth of uncommitted messages, twice over, or the input waits on it.
    message = max([0, *(f.max_line_bytes + f.send_bytes for f in config.inputs.file)])
    need = 2 * (batch.max_bytes + message)
    if config.inputs.file and config.queue.input_bytes < need:
        problems.append(f"queue.input_bytes: {config.queue.input_bytes} is too small for batches "
                        f"of pipeline.batch.max_bytes = {batch.max_bytes} (needs at least {need})")
    if config.queue.output_bytes < need:
        problems.append(f"queue.output_bytes: {config.queue.output_bytes} is too small for a batch "
                        f"(needs at least {need})")
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
