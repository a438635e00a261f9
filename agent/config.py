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

import os
import socket
import sys
from collections.abc import Mapping
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta, Struct

from common.configload import check, dotted as _dotted, env_overrides, read_toml, set_path
from common.errors import ConfigError
from server.config import ServerConfig

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
    writer_from_line: bool = False
    """Take a line's writer from the pid it names, syslog style ``app[1234]:`` (a best guess)."""


class EtwProviderConfig(_Section):
    provider: str
    """A provider's GUID (``{...}``) or its registered name (e.g. Microsoft-Windows-DNS-Client)."""
    level: Annotated[int, Meta(ge=0, le=255)] = 4
    """1 critical .. 5 verbose; 4 (informational) by default."""
    keywords: Annotated[int, Meta(ge=0)] = 0
    """MatchAnyKeyword; 0 leaves the choice to the provider (usually every event)."""
    all_keywords: Annotated[int, Meta(ge=0)] = 0
    """MatchAllKeyword."""
    event_ids: list[Annotated[int, Meta(ge=0, le=65535)]] = []
    """Only these event ids (an EVENT_FILTER_TYPE_EVENT_ID filter, at most 64; Windows 8.1+)."""
    pids: list[Annotated[int, Meta(ge=0)]] = []
    """Only events of these processes (an EVENT_FILTER_TYPE_PID filter, at most 8)."""


class EtwInputConfig(_Section):
    """The ETW input (Windows only; see docs/etw.md)."""

    session: str = "log-shuttle"
    """Name of the real-time ETW session (a stale one of this name is stopped at start)."""
    process_events: bool = True
    """Process start / stop (Microsoft-Windows-Kernel-Process) as process events."""
    rundown: bool = True
    """At start, an event for every process already running."""
    providers: list[EtwProviderConfig] = []
    buffer_kb: Annotated[int, Meta(ge=4, le=16384)] = 64
    """Size of each of the session's buffers."""
    send_interval: PositiveFloat = 0.2
    """At most this many seconds between a message to the pipeline and the next (when events came)."""
    send_events: Annotated[int, Meta(ge=1, le=100_000)] = 1000
    """At most this many events in one message to the pipeline."""
    loss_interval: PositiveFloat = 5.0
    """Seconds between queries of the session's lost-event counters."""
    max_pending: Annotated[int, Meta(ge=100)] = 100_000
    """Events held between the ETW callback and the pipeline's queue; beyond, they are dropped
    and counted (ETW's delivery thread never waits)."""


class EbpfInputConfig(_Section):
    """The eBPF input (Linux, root; see docs/ebpf.md)."""

    probes: list[Literal["process", "tcp", "http"]] = msgspec.field(
        default_factory=lambda: ["process", "tcp", "http"])
    """process: exec, fork, exit; tcp: connect, accept, close; http: HTTP/1.x requests."""
    optional: bool = False
    """When the input cannot start (not root, no BCC), warn and keep the other inputs instead of
    stopping the agent."""
    http_payload_bytes: Annotated[int, Meta(ge=64, le=4096)] = 256
    """At most this much of a read or write that starts like HTTP is copied to user space."""
    ring_buffer_bytes: Annotated[int, Meta(ge=64 * KiB, le=1024 * MiB)] = 8 * MiB
    """Size of each probe's BPF ring buffer (a power of two); when full, events are counted lost."""
    send_interval: PositiveFloat = 0.1
    """At most this many seconds between a message to the pipeline and the next (when events came)."""
    send_events: Annotated[int, Meta(ge=1, le=100_000)] = 1000
    """At most this many events in one message to the pipeline."""


class InputsConfig(_Section):
    file: list[FileInputConfig] = []
    ebpf: EbpfInputConfig | None = None
    """Linux only, as root."""
    etw: EtwInputConfig | None = None
    """Windows only."""


class BatchConfig(_Section):
    max_events: PositiveInt = 1000
    """A batch is sent once it holds this many lines or events..."""
    max_bytes: PositiveInt = 1 * MiB
    """...or this many bytes..."""
    max_delay: PositiveFloat = 0.2
    """...or this many seconds after its first event arrived."""


class ProcessesConfig(_Section):
    enabled: bool = True
    """Keep a process table and enrich events with their process, log lines with their writer."""
    poll_interval: PositiveFloat = 2.0
    """Seconds between polls of /proc (new processes, exits, reused pids)."""
    grace: Annotated[float, Meta(ge=0)] = 60.0
    """Seconds an exited process stays in the table, for events that come late."""
    max_processes: Annotated[int, Meta(ge=1024)] = 65536
    writer_refresh: PositiveFloat = 10.0
    """Seconds before the writers of a file are looked up again in /proc/*/fd."""


class PipelineConfig(_Section):
    batch: BatchConfig = msgspec.field(default_factory=BatchConfig)
    processes: ProcessesConfig = msgspec.field(default_factory=ProcessesConfig)


class StdoutOutputConfig(_Section):
    format: Literal["ndjson", "text"] = "ndjson"


class _TlsClientOptions(_Section):
    tls_ca: str = ""
    """CA certificates (PEM) to verify the receiver with; empty: the system's."""
    tls_cert: str = ""
    """This agent's certificate (PEM), for receivers that require one (mutual TLS)."""
    tls_key: str = ""
    tls_server_name: str = ""
    """The name the receiver's certificate must carry; empty: the host of ``address``."""
    auth_token_file: str = ""
    """A file holding a bearer token (or set LOG_SHUTTLE_AUTH_TOKEN); sent only over TLS."""
    backoff_max: PositiveFloat = 30.0
    """Retries of a failed batch back off exponentially (with jitter) up to this many seconds."""


class TcpOutputConfig(_TlsClientOptions, kw_only=True):
    address: str
    """HOST:PORT of the receiver."""
    name: str = "tcp"
    framing: Literal["ndjson", "syslog-octet", "syslog-newline"] = "ndjson"
    tls: bool | None = None
    """TLS on or off; unset: on when any tls_* option is given."""
    facility: str = "user"
    """syslog facility (kern, user, daemon, local0 ... local7)."""
    app_name: str = ""
    """syslog APP-NAME; empty: the log file's name without extension."""
    connect_timeout: PositiveFloat = 5.0
    write_timeout: PositiveFloat = 10.0


class GrpcOutputConfig(_TlsClientOptions, kw_only=True):
    address: str
    """HOST:PORT of an OTLP/gRPC receiver."""
    name: str = "grpc"
    insecure: bool = False
    """Plaintext (no TLS)."""
    headers: dict[str, str] = {}
    """Extra request metadata."""
    compression: Literal["gzip", "none"] = "gzip"
    timeout: PositiveFloat = 10.0
    """Deadline of each Export call, in seconds."""
    concurrency: Annotated[int, Meta(ge=1, le=64)] = 4
    """Export calls in flight at once (a batch is split into several)."""
    max_records: Annotated[int, Meta(ge=1)] = 500
    """Log records per Export call."""
    service_name: str = ""
    """service.name of the resource; empty: none."""


class OutputsConfig(_Section):
    stdout: StdoutOutputConfig | None = None
    tcp: list[TcpOutputConfig] = []
    grpc: list[GrpcOutputConfig] = []


class Config(_Section):
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
            outs = config.outputs
            if outs.stdout is None and not outs.tcp and not outs.grpc:
                config.outputs.stdout = StdoutOutputConfig()  # stdout is the default output
            return config
    raise ConfigError(problems, source=path)


def check_semantics(config: Config) -> list[str]:
    """Problems that no single key shows."""
    problems = []
    if not config.inputs.file and config.inputs.etw is None and config.inputs.ebpf is None:
        problems.append("inputs: nothing to read: give --input-file PATH or an [[inputs.file]] table")
    if config.inputs.etw is not None and sys.platform != "win32":
        problems.append(f"inputs.etw: the ETW input is Windows-only (this is {sys.platform})")
    problems += _check_ebpf(config.inputs.ebpf)
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
    for kind in ("tcp", "grpc"):
        seen: set[str] = set()
        for i, o in enumerate(getattr(config.outputs, kind)):
            if o.name in seen:
                problems.append(f"outputs.{kind}[{i}].name: {o.name!r} is used twice; "
                                f"names must differ")
            seen.add(o.name)
    return problems


def _check_ebpf(cfg: EbpfInputConfig | None) -> list[str]:
    if cfg is None:
        return []
    problems = []
    if not cfg.probes:
        problems.append("inputs.ebpf.probes: give at least one of process, tcp, http")
    if len(set(cfg.probes)) != len(cfg.probes):
        problems.append("inputs.ebpf.probes: a probe is named twice")
    n = cfg.ring_buffer_bytes
    if n & (n - 1):
        problems.append(f"inputs.ebpf.ring_buffer_bytes: {n} is not a power of two")
    return problems
