"""What one TCP frame means: an NDJSON object, an RFC 5424 syslog message, or (best-effort) an
older BSD-style one (RFC 3164, ``<PRI>Mmm dd hh:mm:ss HOST TAG: MSG``); anything else is garbage
and closes the connection.

A syslog message becomes a record with ``time``, ``host``, ``app``, ``procid``, ``msgid``,
``facility``, ``severity``, ``sd`` (structured data as ``{id: {name: value}}``) and ``line``
(the MSG). Messages from log-shuttle's own TCP output carry the line's file and offset in the
``logshuttle@32473`` element: they read back as the agent's record (``path``, ``offset``...).
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

from common.severity import NAMES as SEVERITIES
from common.syslog import FACILITY_NAMES, SD_ID
from common.timefmt import rfc3339_ns

_json = msgspec.json.Decoder()
_BSD = re.compile(r"^([A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d) (\S+) (.*)$", re.DOTALL)
_INT_PARAMS = {"offset", "piece"}
_BOOL_PARAMS = {"last_piece", "invalid_utf8", "unterminated"}


class BadFrame(ValueError):
    """The frame is neither JSON nor syslog."""


def parse_frame(frame: bytes, *, received_ns: int) -> dict[str, Any]:
    first = frame[:1]
    if first == b"{":
        try:
            obj = _json.decode(frame)
        except msgspec.DecodeError as exc:
            raise BadFrame(f"invalid JSON: {exc}") from exc
        if not isinstance(obj, dict):
            raise BadFrame("a JSON value that is not an object")
        return obj
    if first == b"<":
        return parse_syslog(frame, received_ns=received_ns)
    raise BadFrame(f"neither JSON nor syslog: {frame[:24]!r}")


def parse_syslog(frame: bytes, *, received_ns: int) -> dict[str, Any]:
    end = frame.find(b">", 1, 5)
    if end < 2 or not frame[1:end].isdigit() or int(frame[1:end]) > 191:
        raise BadFrame(f"bad syslog PRI: {frame[:8]!r}")
    pri = int(frame[1:end])
    text = frame[end + 1:].decode("utf-8", "replace")
    rec: dict[str, Any] = {"facility": FACILITY_NAMES.get(pri >> 3, str(pri >> 3)),
                           "severity": SEVERITIES[pri & 7]}
    if text.startswith("1 "):
        return _rfc5424(text[2:], rec, received_ns)
    m = _BSD.match(text)
    if m:
        rec.update(time=rfc3339_ns(received_ns), host=m[2], line=m[3], format="rfc3164",
                   timestamp=m[1])
    else:
        rec.update(time=rfc3339_ns(received_ns), line=text, format="rfc3164")
    return rec


def _rfc5424(text: str, rec: dict[str, Any], received_ns: int) -> dict[str, Any]:
    parts = text.split(" ", 5)
    if len(parts) < 6:
        raise BadFrame("an RFC 5424 header with fewer than 7 fields")
    stamp, host, app, procid, msgid, rest = parts
    sd, msg = _structured_data(rest)
    if msg.startswith("\ufeff"):
        msg = msg[1:]
    msg = msg.rstrip("\r\n")  # senders such as rsyslog end octet-counted frames with one
    nil = lambda v: None if v == "-" else v  # noqa: E731
    rec = {"time": stamp if stamp != "-" else rfc3339_ns(received_ns), "host": nil(host) or "",
           **_from_logshuttle(sd), "line": msg, "app": nil(app), "procid": nil(procid),
           "msgid": nil(msgid), **rec}
    if sd:
        rec["sd"] = sd
    return {k: v for k, v in rec.items() if v is not None}


def _from_logshuttle(sd: dict[str, dict[str, str]]) -> dict[str, Any]:
    mine = sd.pop(SD_ID, None)
    if not mine:
        return {}
    out: dict[str, Any] = {}
    for k, v in mine.items():
        if k in _INT_PARAMS and v.isdigit():
            out[k] = int(v)
        elif k in _BOOL_PARAMS:
            out[k] = v == "true"
        else:
            out[k] = v
    return out


def _structured_data(rest: str) -> tuple[dict[str, dict[str, str]], str]:
    """Parse STRUCTURED-DATA at the start of ``rest``; return it and the MSG after it."""
    if rest.startswith("-"):
        return {}, rest[2:] if rest.startswith("- ") else rest[1:]
    sd: dict[str, dict[str, str]] = {}
    i, n = 0, len(rest)
    while i < n and rest[i] == "[":
        j = i + 1
        while j < n and rest[j] not in " ]":
            j += 1
        sd_id = rest[i + 1:j]
        params: dict[str, str] = {}
        while j < n and rest[j] == " ":
            eq = rest.find("=", j + 1)
            if eq < 0 or eq + 1 >= n or rest[eq + 1] != '"':
                raise BadFrame("malformed structured data")
            name = rest[j + 1:eq]
            k = eq + 2
            value = []
            while k < n and rest[k] != '"':
                if rest[k] == "\\" and k + 1 < n and rest[k + 1] in '"\\]':
                    k += 1
                value.append(rest[k])
                k += 1
            if k >= n:
                raise BadFrame("unterminated structured-data value")
            params[name] = "".join(value)
            j = k + 1
        if j >= n or rest[j] != "]":
            raise BadFrame("malformed structured data")
        sd[sd_id] = params
        i = j + 1
    if not sd:
        raise BadFrame("no structured data (neither '-' nor '[...]')")
    return sd, rest[i + 1:] if rest[i:i + 1] == " " else rest[i:]
