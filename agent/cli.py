"""The ``log-shuttle`` command.

    log-shuttle --input-file '/var/log/*.log' [--output-stdout] [--format text]
    log-shuttle --config /etc/log-shuttle/config.toml
    log-shuttle check-config FILE

Flags override LOG_SHUTTLE_* environment variables, which override the file (see agent.config).
Exit codes (common.exitcodes): 0 after a clean stop, 1 when a stop had to kill (the drain
deadline, a second Ctrl-C), 2 for a configuration or usage error, 3 when a component could not
start.
"""

from __future__ import annotations

import enum
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Optional

import typer
from setproctitle import getproctitle, setproctitle

from agent.config import load_config
from common.errors import ConfigError
from common.exitcodes import ExitCode
from server.cli import command as server_command

app = typer.Typer(
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    help="log-shuttle: tail log files and ship them in batches (stdout by default).",
)


class Format(str, enum.Enum):
    ndjson = "ndjson"
    text = "text"


class TcpFraming(str, enum.Enum):
    ndjson = "ndjson"
    syslog_octet = "syslog-octet"
    syslog_newline = "syslog-newline"
    relp = "relp"
    ndjson_acked = "ndjson-acked"


class Level(str, enum.Enum):
    debug = "debug"
    info = "info"
    warning = "warning"
    error = "error"


def _version() -> str:
    try:
        return version("log-shuttle")
    except PackageNotFoundError:
        return "unknown"


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"log-shuttle {_version()}")
        raise typer.Exit()


@app.callback(invoke_without_command=True)
def run(
    ctx: typer.Context,
    config: Optional[Path] = typer.Option(
        None, "--config", "-c", envvar="LOG_SHUTTLE_CONFIG", dir_okay=False,
        help="TOML configuration file."),
    input_file: Optional[list[str]] = typer.Option(
        None, "--input-file", "-f", metavar="PATH",
        help="A file or glob to tail (quote globs); repeat for more. Replaces the file inputs "
             "of the configuration."),
    from_beginning: bool = typer.Option(
        False, "--from-beginning",
        help="Read files present at start from their beginning, not their end."),
    max_line_bytes: Optional[int] = typer.Option(
        None, "--max-line-bytes", metavar="N", help="Split longer lines into pieces of N bytes."),
    output_stdout: bool = typer.Option(
        False, "--output-stdout", help="Print the lines on stdout (the default output)."),
    fmt: Optional[Format] = typer.Option(
        None, "--format", help="stdout format: ndjson (default) or text."),
    output_tcp: Optional[list[str]] = typer.Option(
        None, "--output-tcp", metavar="HOST:PORT", help="Ship to a TCP receiver; repeat for more."),
    tcp_framing: Optional[TcpFraming] = typer.Option(
        None, "--tcp-framing", help="TCP: ndjson (default), syslog-octet (RFC 5424 + RFC 6587 "
                                    "octet counting), syslog-newline, relp (RFC 5424 over RELP, "
                                    "each message confirmed: rsyslog's imrelp) or ndjson-acked "
                                    "(batches confirmed by log-shuttle server)."),
    output_grpc: Optional[list[str]] = typer.Option(
        None, "--output-grpc", metavar="HOST:PORT",
        help="Ship to an OTLP/gRPC receiver (TLS unless --insecure); repeat for more."),
    insecure: bool = typer.Option(False, "--insecure", help="gRPC in plaintext, without TLS."),
    tls_ca: Optional[str] = typer.Option(
        None, "--tls-ca", metavar="FILE", help="CA certificates to verify the receiver with."),
    tls_cert: Optional[str] = typer.Option(
        None, "--tls-cert", metavar="FILE", help="Client certificate (mutual TLS)."),
    tls_key: Optional[str] = typer.Option(None, "--tls-key", metavar="FILE",
                                          help="Key of --tls-cert."),
    tls_server_name: Optional[str] = typer.Option(
        None, "--tls-server-name", metavar="NAME",
        help="Name the receiver's certificate must carry (default: the host)."),
    auth_token_file: Optional[str] = typer.Option(
        None, "--auth-token-file", metavar="FILE",
        help="Bearer token for the receiver (or LOG_SHUTTLE_AUTH_TOKEN); sent only over TLS."),
    log_level: Optional[Level] = typer.Option(
        None, "--log-level", help="The agent's own messages, on stderr."),
    drain_timeout: Optional[float] = typer.Option(
        None, "--drain-timeout", metavar="SECONDS",
        help="How long a stop may drain before it kills (default 10)."),
    state_dir: Optional[str] = typer.Option(
        None, "--state-dir", metavar="DIR",
        help="Where checkpoints are kept (default /var/lib/log-shuttle for root, else "
             "~/.local/state/log-shuttle)."),
    http_listen: Optional[str] = typer.Option(
        None, "--http-listen", metavar="HOST:PORT",
        help="Serve /metrics, /health, /ready and /status there (loopback; e.g. "
             "127.0.0.1:9595); `log-shuttle status` and `top` read it."),
    ebpf_http_tracing: bool = typer.Option(
        False, "--ebpf-http-tracing",
        help="Watch the host with eBPF (needs root): processes, TCP connections and HTTP/1.x "
             "requests (the probes process, tcp and http)."),
    ebpf_print_program: bool = typer.Option(
        False, "--ebpf-print-program",
        help="Print the BPF programs of the eBPF input as BCC compiles them, and exit."),
    _version_flag: bool = typer.Option(
        False, "--version", callback=_print_version, is_eager=True, help="Print the version."),
) -> None:
    """Run the agent (when no command is given)."""
    if ctx.invoked_subcommand is not None:
        return
    overrides = cli_overrides(
        input_file=input_file, from_beginning=from_beginning, max_line_bytes=max_line_bytes,
        output_stdout=output_stdout, fmt=fmt.value if fmt else None,
        log_level=log_level.value if log_level else None, drain_timeout=drain_timeout,
        state_dir=state_dir)
    overrides += network_output_overrides(
        output_tcp=output_tcp, tcp_framing=tcp_framing.value if tcp_framing else None,
        output_grpc=output_grpc, insecure=insecure, output_stdout=output_stdout,
        fmt=fmt.value if fmt else None,
        tls={k: v for k, v in (("tls_ca", tls_ca), ("tls_cert", tls_cert), ("tls_key", tls_key),
                               ("tls_server_name", tls_server_name),
                               ("auth_token_file", auth_token_file)) if v})
    if http_listen is not None:
        overrides.append((["agent", "http", "listen"], http_listen))
    if ebpf_http_tracing:
        overrides.append((["inputs", "ebpf", "probes"], ["process", "tcp", "http"]))
    if ebpf_print_program:
        from agent import doctor

        raise typer.Exit(doctor.print_program(str(config) if config else None, overrides))
    try:
        cfg = load_config(str(config) if config else None, overrides=overrides)
    except ConfigError as exc:
        typer.echo(f"log-shuttle: {exc}", err=True)
        raise typer.Exit(ExitCode.CONFIG) from None
    if cfg.inputs.ebpf is not None:
        from agent import doctor

        if not cfg.inputs.ebpf.optional:
            problems = doctor.preflight()
            if problems:  # at once, before any process starts
                typer.echo("log-shuttle: cannot trace with eBPF:\n" +
                           "\n".join(f"  - {p}" for p in problems), err=True)
                raise typer.Exit(ExitCode.BOOT)
    from agent.start import launch

    raise typer.Exit(launch(cfg, _version()))



def cli_overrides(
    *,
    input_file: list[str] | None = None,
    from_beginning: bool = False,
    max_line_bytes: int | None = None,
    output_stdout: bool = False,
    fmt: str | None = None,
    log_level: str | None = None,
    drain_timeout: float | None = None,
    state_dir: str | None = None,
) -> list[tuple[list[str], Any]]:
    """The configuration keys the flags set, as (key path, value)."""
    out: list[tuple[list[str], Any]] = []
    if input_file:
        out.append((["inputs", "file"], [{"paths": list(input_file)}]))
    if from_beginning:
        out.append((["inputs", "file", "*", "from_beginning"], True))
    if max_line_bytes is not None:
        out.append((["inputs", "file", "*", "max_line_bytes"], max_line_bytes))
    if output_stdout or fmt:
        out.append((["outputs"], {"stdout": {"format": fmt} if fmt else {}}))
    if log_level:
        out.append((["agent", "log_level"], log_level))
    if drain_timeout is not None:
        out.append((["agent", "drain_timeout"], drain_timeout))
    if state_dir is not None:
        out.append((["agent", "state_dir"], state_dir))
    return out


def network_output_overrides(
    *,
    output_tcp: list[str] | None = None,
    tcp_framing: str | None = None,
    output_grpc: list[str] | None = None,
    insecure: bool = False,
    output_stdout: bool = False,
    fmt: str | None = None,
    tls: dict[str, str] | None = None,
) -> list[tuple[list[str], Any]]:
    """The outputs the network flags set (with stdout when it is asked for too): an output flag
    replaces the outputs of the configuration. The TLS and token options apply to each."""
    if not output_tcp and not output_grpc:
        return []
    tls = tls or {}
    outputs: dict[str, Any] = {}
    if output_stdout or fmt:
        outputs["stdout"] = {"format": fmt} if fmt else {}
    if output_tcp:
        outputs["tcp"] = [{"address": a, **({"framing": tcp_framing} if tcp_framing else {}),
                           **tls, **({"name": f"tcp{i}"} if i else {})}
                          for i, a in enumerate(output_tcp)]
    if output_grpc:
        outputs["grpc"] = [{"address": a, **({"insecure": True} if insecure else {}), **tls,
                            **({"name": f"grpc{i}"} if i else {})}
                           for i, a in enumerate(output_grpc)]
    return [(["outputs"], outputs)]


@app.command("doctor")
def doctor_command() -> None:
    """Check what the eBPF input needs here (kernel, BTF, tracefs, BCC, headers, privileges)
    and which probes load; exit 1 when something needed fails."""
    from agent import doctor

    raise typer.Exit(doctor.run())


@app.command("check-config")
def check_config(file: Path = typer.Argument(..., dir_okay=False, help="TOML file to check.")) -> None:
    """Check a configuration file (with the LOG_SHUTTLE_* variables applied) without running."""
    try:
        cfg = load_config(str(file))
    except ConfigError as exc:
        typer.echo(f"log-shuttle: {exc}", err=True)
        raise typer.Exit(ExitCode.CONFIG) from None
    inputs = [f"file {f.name!r} ({', '.join(f.paths)})" for f in cfg.inputs.file]
    if cfg.inputs.ebpf is not None:
        inputs.append(f"ebpf ({', '.join(cfg.inputs.ebpf.probes)}"
                      f"{', optional' if cfg.inputs.ebpf.optional else ''})")
    if cfg.inputs.etw is not None:
        inputs.append(f"etw ({len(cfg.inputs.etw.providers)} provider(s))")
    outputs = [f"stdout ({cfg.outputs.stdout.format})"] if cfg.outputs.stdout else []
    outputs += [f"tcp {o.address} ({o.framing})" for o in cfg.outputs.tcp]
    outputs += [f"grpc {o.address}" for o in cfg.outputs.grpc]
    outputs += [f"influxdb {o.address or o.url} ({o.protocol})" for o in cfg.outputs.influxdb]
    if cfg.outputs.prometheus is not None:
        outputs.append(f"prometheus {cfg.outputs.prometheus.listen}/metrics")
    outputs += [f"metrics_jsonl {o.path}" for o in cfg.outputs.metrics_jsonl]
    outputs += [f"otlp_metrics {o.address} ({o.temporality})" for o in cfg.outputs.otlp_metrics]
    typer.echo(f"{file}: ok\n  inputs: {'; '.join(inputs)}\n  outputs: {'; '.join(outputs)}")


def _http_address(address: str | None, config: Path | None) -> str:
    from agent.observe.config import DEFAULT_LISTEN

    if address:
        return address
    if config is not None:
        # Only its [agent.http] listen: the whole file need not be valid here (it may be the
        # server's, through LOG_SHUTTLE_CONFIG, or name files only root may read).
        import tomllib

        try:
            with open(config, "rb") as f:
                listen = tomllib.load(f).get("agent", {}).get("http", {}).get("listen", "")
        except (OSError, tomllib.TOMLDecodeError, AttributeError) as exc:
            typer.echo(f"log-shuttle: cannot read the listener's address in {config}: {exc}",
                       err=True)
            raise typer.Exit(ExitCode.CONFIG) from None
        if listen and isinstance(listen, str):
            return listen
    return DEFAULT_LISTEN


_ADDRESS = typer.Option(None, "--address", "-a", metavar="HOST:PORT",
                        envvar=["LOG_SHUTTLE_AGENT__HTTP__LISTEN", "LOG_SHUTTLE_HTTP_LISTEN"],
                        help="The agent's HTTP listener (default: LOG_SHUTTLE_AGENT__HTTP__LISTEN "
                             "as the agent reads it, else the configuration's agent.http "
                             "listen, else 127.0.0.1:9595).")
_CONFIG = typer.Option(None, "--config", "-c", envvar="LOG_SHUTTLE_CONFIG", dir_okay=False,
                       help="Read the listener's address from this configuration (default: "
                            "LOG_SHUTTLE_CONFIG, as the agent).")


@app.command("status")
def status_command(address: Optional[str] = _ADDRESS, config: Optional[Path] = _CONFIG,
                   interval: float = typer.Option(2.0, "--interval", metavar="SECONDS",
                                                  help="Between the two readings (rates; "
                                                       "components publish once a second).")
                   ) -> None:
    """Ask the running agent how it is doing: each component's throughput now, totals,
    errors, lag, restarts (through its HTTP listener, --http-listen)."""
    from agent.observe.status import AgentUnreachable, status

    try:
        status(_http_address(address, config), interval=interval)
    except AgentUnreachable as exc:
        typer.echo(f"log-shuttle: {exc}", err=True)
        raise typer.Exit(ExitCode.FAILED) from None


@app.command("top")
def top_command(address: Optional[str] = _ADDRESS, config: Optional[Path] = _CONFIG,
                interval: float = typer.Option(1.0, "--interval", metavar="SECONDS",
                                               help="Between two refreshes.")) -> None:
    """`status`, live (Ctrl-C to leave), with the progress of a backlog being caught up."""
    from agent.observe.status import AgentUnreachable, top

    try:
        top(_http_address(address, config), interval=interval)
    except AgentUnreachable as exc:
        typer.echo(f"log-shuttle: {exc}", err=True)
        raise typer.Exit(ExitCode.FAILED) from None
    except KeyboardInterrupt:
        pass


app.command("server")(server_command)


_SOURCES = typer.Option(
    None, "--from", metavar="PATH",
    help="The server's output directory or an NDJSON file of the agent (repeatable); default: "
         "the server's default directory (or LOG_SHUTTLE_SERVER__OUTPUT_DIR).")


@app.command("trace")
def trace_command(trace_id: str = typer.Argument(..., help="32 hex digits."),
                  sources: Optional[list[str]] = _SOURCES) -> None:
    """Draw one trace: its spans as a waterfall, each joined log line under its span."""
    from agent import traceview

    if len(trace_id) != 32 or trace_id.strip("0123456789abcdefABCDEF"):
        typer.echo(f"log-shuttle: trace: {trace_id!r} is not a trace id (32 hex digits)",
                   err=True)
        raise typer.Exit(ExitCode.CONFIG)
    paths = traceview.default_sources(sources)
    try:
        t = traceview.load_trace(trace_id.lower(), paths)
    except OSError as exc:
        typer.echo(f"log-shuttle: cannot read {exc.filename}: {exc.strerror}", err=True)
        raise typer.Exit(ExitCode.CONFIG) from None
    typer.echo(traceview.render(t), nl=False)
    if not t.spans:
        raise typer.Exit(1)


@app.command("traces")
def traces_command(sources: Optional[list[str]] = _SOURCES,
                   slowest: bool = typer.Option(False, "--slowest", help="Slowest first."),
                   errors: bool = typer.Option(False, "--errors",
                                               help="Only traces with an error span."),
                   limit: int = typer.Option(20, "--limit", "-n", min=1)) -> None:
    """List the traces found: the most recent first (or the slowest, or those with errors)."""
    from agent import traceview

    paths = traceview.default_sources(sources)
    try:
        items = traceview.summaries(paths)
    except OSError as exc:
        typer.echo(f"log-shuttle: cannot read {exc.filename}: {exc.strerror}", err=True)
        raise typer.Exit(ExitCode.CONFIG) from None
    typer.echo(traceview.render_list(items, slowest=slowest, errors=errors, limit=limit),
               nl=False)


def main() -> None:
    getproctitle()  # before anything touches the environment (setproctitle's advice)
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(ExitCode.INTERRUPTED)


if __name__ == "__main__":
    main()
