"""Prometheus text exposition (format 0.0.4) of the cumulative metric state: rendering only;
serving is outputs/promserve.py (the agent's shared listener can serve the same text).

Names follow Prometheus' conventions for OpenTelemetry metrics: dots become underscores, the
unit is appended (``http.server.request.duration`` in seconds ->
``http_server_request_duration_seconds``), counters end in ``_total``. A histogram is its
``_bucket{le="..."}`` series (cumulative, up to ``le="+Inf"``), ``_sum`` and ``_count``; its
errors are the counter ``..._errors_total`` (``http_server_request_errors_total``). Labels are
the attributes with dots as underscores (``service_name``, ``http_route``...); label values
escape backslash, double quote and newline.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from outputs.metricstate import Series, errors_name, fmt_bound

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_BAD_NAME = re.compile(r"[^a-zA-Z0-9_:]")
_BAD_LABEL = re.compile(r"[^a-zA-Z0-9_]")
_INF = 'le="+Inf"'
_HELP = {
    "http.server.request.duration": "Duration of HTTP server requests, as the kernel saw them.",
    "http.client.request.duration": "Duration of HTTP client requests, as the kernel saw them.",
    "tcp.connection.duration": "How long TCP connections were open, counted when they closed.",
    "tcp.connection.opened": "TCP connections opened (connect) or accepted.",
}


def metric_name(name: str, *, unit: str = "", suffix: str = "") -> str:
    out = _BAD_NAME.sub("_", name)
    if out[:1].isdigit():
        out = "_" + out
    if unit and not out.endswith("_" + unit):
        out += "_" + unit
    return out + suffix


def label_name(key: str) -> str:
    out = _BAD_LABEL.sub("_", key)
    return "_" + out if out[:1].isdigit() or not out else out


def label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(attrs: dict[str, str], extra: str = "") -> str:
    parts = [f'{label_name(k)}="{label_value(v)}"' for k, v in sorted(attrs.items())]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


def _number(x: float) -> str:
    if x != x:
        return "NaN"
    if x in (float("inf"), float("-inf")):
        return "+Inf" if x > 0 else "-Inf"
    return repr(float(x)) if isinstance(x, float) else str(x)


def render(series: Iterable[Series]) -> bytes:
    """The exposition of every series, grouped by metric family."""
    families: dict[str, list[Series]] = {}
    for s in series:
        families.setdefault(s.name, []).append(s)
    out: list[str] = []
    for name in sorted(families):
        group = families[name]
        help_text = _HELP.get(name, name)
        if group[0].kind == "histogram":
            fam = metric_name(name, unit="seconds")
            out += [f"# HELP {fam} {help_text}", f"# TYPE {fam} histogram"]
            for s in group:
                running = 0
                for bound, n in zip(s.bounds, s.buckets):
                    running += n
                    le = 'le="%s"' % fmt_bound(bound)
                    out.append(f"{fam}_bucket{_labels(s.attrs, le)} {running}")
                out.append(f"{fam}_bucket{_labels(s.attrs, _INF)} {s.count}")
                out.append(f"{fam}_sum{_labels(s.attrs)} {_number(s.sum)}")
                out.append(f"{fam}_count{_labels(s.attrs)} {s.count}")
            if name.startswith("http."):
                err = metric_name(errors_name(name), suffix="_total")
                out += [f"# HELP {err} Failed exchanges (server: 5xx; client: 4xx and 5xx).",
                        f"# TYPE {err} counter"]
                out += [f"{err}{_labels(s.attrs)} {s.errors}" for s in group]
        else:
            fam = metric_name(name, suffix="_total")
            out += [f"# HELP {fam} {help_text}", f"# TYPE {fam} counter"]
            out += [f"{fam}{_labels(s.attrs)} {s.count}" for s in group]
    return ("\n".join(out) + "\n").encode("utf-8") if out else b""
