"""``[agent.http]``: the agent's own HTTP listener (off unless an address is given)."""

from __future__ import annotations

import ipaddress
from typing import Annotated

from msgspec import Meta

from common.config import PositiveFloat, Section, address_problems
from common.net import parse_address

DEFAULT_LISTEN = "127.0.0.1:9595"
"""What ``--http-listen`` examples use; the listener is off unless an address is given."""


class HttpConfig(Section):
    """``[agent.http]``."""

    listen: str = ""
    """HOST:PORT of the listener (``/metrics``, ``/health``, ``/ready``, ``/status``); empty: off."""
    allow_remote: bool = False
    """Listen on an address other than loopback (the endpoints have no authentication)."""
    interval: PositiveFloat = 1.0
    """Seconds between two updates of a component's metrics (and at its exit)."""
    stalled_after: PositiveFloat = 30.0
    """``/ready`` says an output is stalled once it has been in one send this many seconds (a
    destination that takes nothing and says nothing: a pipe nobody reads, a receiver that
    stopped reading)."""
    max_path_series: Annotated[int, Meta(ge=0)] = 50
    """Per-file series (``file_lag_bytes{path}``) per input; the rest add up to ``path="_other"``."""

    def problems(self, **_: object) -> list[str]:
        if not self.listen:
            return []
        # Not port 0 (any free port), as other listen addresses may be: `log-shuttle status`
        # and `top` find the agent at this address.
        found = address_problems(self.listen, key="listen")
        if found or self.allow_remote:
            return found
        host, _ = parse_address(self.listen, who="agent.http", listen=True)
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = host == "localhost"
        if not loopback:
            return [f"listen: {self.listen} is not a loopback address: the endpoints have no "
                    f"authentication (set allow_remote = true to listen there anyway)"]
        return []
