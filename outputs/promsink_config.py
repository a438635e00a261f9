"""The ``prometheus`` output's table (outputs/promsink.py is the sink). Its own module so that the
supervisor, which decodes every table, does not import the sink's code."""

from __future__ import annotations

from common.config import PositiveFloat, Section, address_problems


class PrometheusOutputConfig(Section):
    """``[outputs.prometheus]``."""

    listen: str = "127.0.0.1:9464"
    """HOST:PORT of the ``/metrics`` listener (9464: OpenTelemetry's Prometheus exporter's)."""
    expiry: PositiveFloat = 3600.0
    """A series not updated for this many seconds is no longer exposed."""

    def problems(self, **_: object) -> list[str]:
        return address_problems(self.listen, key="listen", listen=True)
