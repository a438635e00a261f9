"""Timestamps as text: the one RFC 3339 formatter that every record's ``time`` goes through
(the outputs' records, OTLP logs and metrics read back, syslog frames the server stamps on
arrival, ETW FILETIME fields)."""

from __future__ import annotations

import time


def rfc3339_ns(ns: int) -> str:
    """Nanoseconds since the Unix epoch as RFC 3339 in UTC with all nine digits:
    ``2023-11-14T22:13:20.123456789Z``."""
    secs, frac = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{frac:09d}Z"
