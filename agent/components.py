"""The registry of components: one explicit table per kind, name -> :class:`Component`.

It drives both the configuration (``[inputs.<name>]`` / ``[[inputs.<name>]]`` and
``[outputs.<name>]`` tables are made from it, agent/config.py) and the plan of processes
(agent/plan.py). Adding an input or an output is: its module (a config struct deriving from
common.config.Section, with ``problems()`` for what no single key shows, and a
``build(ctx: Context[ItsConfig]) -> Runner``), one line here, and its docs.

The build function is named as ``module:function`` and imported only in the component's own
process, so that heavy imports (grpc, bcc) stay out of the supervisor.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from common.config import Section
from inputs.ebpf.config import EbpfInputConfig
from inputs.etw.config import EtwInputConfig
from inputs.file.config import FileInputConfig
from outputs.grpc_config import GrpcOutputConfig
from outputs.jetstream_config import JetStreamOutputConfig
from outputs.influx_config import InfluxOutputConfig
from outputs.jsonlines_config import JsonLinesOutputConfig
from outputs.otlpmetrics_config import OtlpMetricsOutputConfig
from outputs.promsink_config import PrometheusOutputConfig
from outputs.stdout_config import StdoutOutputConfig
from outputs.tcp_config import TcpOutputConfig
from pipeline.config import PipelineConfig


EBPF_CAPABILITIES = ("CAP_BPF", "CAP_PERFMON", "CAP_SYS_PTRACE", "CAP_DAC_READ_SEARCH")
"""Found by trying less (docs/operating.md): CAP_BPF and CAP_PERFMON load and attach the
tracepoint programs and the libssl uprobes (uid 0 owns tracefs: no CAP_SYS_ADMIN on 5.8+);
CAP_SYS_PTRACE reads other users' /proc/PID/maps and /proc/PID/root to find their libssl;
with CAP_DAC_READ_SEARCH it also lists their /proc/PID/fd, to find the descriptors of the tailed
log files that the log-write probe follows (nginx's workers run as another user)."""


@dataclass(frozen=True, kw_only=True)
class Component:
    config: type[Section]
    """Its table's struct."""
    build: str
    """``module:function`` of its build function (imported in its own process)."""
    many: bool = False
    """An array of tables (``[[outputs.tcp]]``, each with a ``name``), or one table."""
    platform: str | None = None
    """The only ``sys.platform`` it runs on; None: any (the component checks the rest)."""
    keep_stdout: bool = False
    """It writes the agent's stdout (every other child has fd 1 pointed at stderr)."""
    label: str = ""
    """How messages name it (``the ETW input``); empty: its key."""
    receives: Literal["events", "metrics"] = "events"
    """An output's batches: the events, or the pipeline's metric points (docs/metrics.md)."""
    capabilities: tuple[str, ...] = ()
    """Run as root: the capabilities its process keeps (it stays uid 0); none: it runs as the
    agent's unprivileged user (agent/privileges.py, docs/operating.md)."""


INPUTS: dict[str, Component] = {
    "file": Component(config=FileInputConfig, build="inputs.file:build", many=True,
                      capabilities=("CAP_DAC_READ_SEARCH",)),  # read any log
    "ebpf": Component(config=EbpfInputConfig, build="inputs.ebpf:build",  # Linux, as root
                      capabilities=EBPF_CAPABILITIES),
    "etw": Component(config=EtwInputConfig, build="inputs.etw:build", platform="win32",
                     label="ETW"),
}

OUTPUTS: dict[str, Component] = {
    "stdout": Component(config=StdoutOutputConfig, build="outputs.stdout:build",
                        keep_stdout=True),
    "tcp": Component(config=TcpOutputConfig, build="outputs.tcp:build", many=True),
    "grpc": Component(config=GrpcOutputConfig, build="outputs.grpc:build", many=True),
    "jetstream": Component(config=JetStreamOutputConfig, build="outputs.jetstream:build",
                           many=True),
    "influxdb": Component(config=InfluxOutputConfig, build="outputs.influx:build", many=True,
                          receives="metrics"),
    "prometheus": Component(config=PrometheusOutputConfig, build="outputs.promsink:build",
                            receives="metrics"),
    "metrics_jsonl": Component(config=JsonLinesOutputConfig, build="outputs.jsonlines:build",
                               many=True, receives="metrics"),
    "otlp_metrics": Component(config=OtlpMetricsOutputConfig, build="outputs.otlpmetrics:build",
                              many=True, receives="metrics"),
}

DEFAULT_OUTPUT = "stdout"
"""The output used when none is configured."""

PIPELINE = Component(config=PipelineConfig, build="pipeline:build",
                     capabilities=("CAP_SYS_PTRACE", "CAP_DAC_READ_SEARCH"))  # others' /proc

KINDS: dict[Literal["input", "output"], dict[str, Component]] = {"input": INPUTS, "output": OUTPUTS}
