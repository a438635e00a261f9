"""The OTLP metrics output: metric points to an OpenTelemetry receiver over gRPC
(``opentelemetry.proto.collector.metrics.v1.MetricsService/Export``), mapped by
common/otlp_metrics.py.

Temporality: cumulative by default (the output adds the pipeline's per-interval deltas up,
outputs/metricstate.py, and sends every series' totals since the output started, for the
series updated in the batch); ``temporality = "delta"`` sends each interval's points as they
are. Status codes are handled as the logs output does (outputs/grpc.py): the retryable ones,
and the misconfigurations, are retried with backoff; any other rejects the batch, counted;
``partial_success`` is logged and counted.
"""

from __future__ import annotations

import os

os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

import grpc  # noqa: E402
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2_grpc  # noqa: E402

from common.component import BootError, Context  # noqa: E402
from common.events import Batch  # noqa: E402
from common.net import format_address, parse_address, read_token  # noqa: E402
from common.otlp_metrics import export_request  # noqa: E402
from common.tls import TlsFiles, grpc_channel_credentials  # noqa: E402
from outputs.base import Verdict  # noqa: E402
from outputs.failures import FailureReporter  # noqa: E402
from outputs.grpc import MISCONFIGURED, RETRYABLE, _retry_delay  # noqa: E402
from outputs.metricstate import Cumulative, metric_events  # noqa: E402
from outputs.otlpmetrics_config import OtlpMetricsOutputConfig  # noqa: E402
from outputs.runner import Backoff, OutputRunner  # noqa: E402


class OtlpMetricsSink:
    def __init__(self, *, target: str, credentials: grpc.ChannelCredentials | None,
                 metadata: list[tuple[str, str]], host: str, cumulative: bool = True,
                 timeout: float = 10.0, expiry: float = 3600.0, server_name: str = "",
                 log=None) -> None:
        import logging

        self.name = f"otlp metrics {target}"
        self.target = target
        self.metadata = tuple(metadata)
        self.host = host
        self.cumulative = cumulative
        self.timeout = timeout
        self.log = log or logging.getLogger("log_shuttle")
        self.failures = FailureReporter(who=f"output {self.name}", log=self.log)
        self.state = Cumulative(expiry=expiry)
        options = [("grpc.max_reconnect_backoff_ms", 5000)]
        if server_name:
            options.append(("grpc.ssl_target_name_override", server_name))
        self.channel = grpc.insecure_channel(target, options=options) if credentials is None \
            else grpc.secure_channel(target, credentials, options=options)
        self.stub = metrics_service_pb2_grpc.MetricsServiceStub(self.channel)
        self._batch: Batch | None = None
        self._request = None
        self.points_sent = 0
        self.points_rejected = 0

    @property
    def healthy(self) -> bool:
        return self.failures.since is None

    def send(self, batch: Batch) -> Verdict:
        if self._batch is not batch:
            self._batch = batch
            points = metric_events(batch.events)
            if not points:
                return Verdict.OK
            if self.cumulative:
                self.state.add(points)
                self.state.expire()
                keys = {(p.name, tuple(sorted(p.attrs.items()))) for p in points}
                points = [self.state.table[k] for k in keys if k in self.state.table]
            self._request = export_request(points, host=self.host, cumulative=self.cumulative)
        if self._request is None:
            return Verdict.OK
        try:
            response = self.stub.Export(self._request, timeout=self.timeout,
                                        metadata=self.metadata)
        except grpc.RpcError as exc:
            code = exc.code()
            message = f"{code.name}: {exc.details()}"
            delay = _retry_delay(exc)
            if code in RETRYABLE or code in MISCONFIGURED or \
                    (code is grpc.StatusCode.RESOURCE_EXHAUSTED and delay is not None):
                self.failures.failed(code.name, f"export to {self.target} failed: {message}")
                return Verdict.RETRY
            self.log.error("output %s: the receiver rejected the points for good: %s",
                           self.name, message)
            self._batch = self._request = None
            return Verdict.DROP
        rejected = response.partial_success.rejected_data_points
        if rejected:
            self.points_rejected += rejected
            self.log.warning("output %s: the receiver rejected %d point(s): %s", self.name,
                             rejected, response.partial_success.error_message)
        self.failures.ok()
        self._batch = self._request = None
        return Verdict.OK

    def close(self) -> None:
        self.channel.close()


def build(ctx: Context) -> OutputRunner:
    cfg: OtlpMetricsOutputConfig = ctx.config
    ctx.one_consumer()
    host, port = parse_address(cfg.address, who=ctx.name)
    files = TlsFiles(ca=cfg.tls_ca, cert=cfg.tls_cert, key=cfg.tls_key,
                     server_name=cfg.tls_server_name)
    if cfg.insecure and files.any():
        raise BootError(f"{ctx.name}: insecure (plaintext) and TLS options were both given")
    token = read_token(cfg.auth_token_file, who=ctx.name)
    if token and cfg.insecure:
        raise BootError(f"{ctx.name}: a token is only ever sent over TLS: drop insecure")
    metadata = [(k.lower(), v) for k, v in cfg.headers.items()]
    if token:
        metadata.append(("authorization", f"Bearer {token}"))
    credentials = None if cfg.insecure else grpc_channel_credentials(files, who=ctx.name)
    sink = OtlpMetricsSink(target=format_address(host, port), credentials=credentials,
                           metadata=metadata, host=ctx.host,
                           cumulative=cfg.temporality == "cumulative", timeout=cfg.timeout,
                           expiry=cfg.expiry, server_name=cfg.tls_server_name, log=ctx.log)
    return OutputRunner(ctx, sink, backoff=Backoff(maximum=cfg.backoff_max))
