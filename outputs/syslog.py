"""Events as RFC 5424 syslog messages, framed for TCP as RFC 6587 says.

One message per record (a LogEvent's run of lines is expanded by ``outputs.records``)::

    <PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID [logshuttle@32473 path="..." offset="..."] MSG

- PRI: the configured facility (``user`` by default) and a severity read from the line's level
  word (``ERROR``, ``warn``, ...; informational when it has none, see common.severity); other
  events: warning for losses, error / warning for HTTP 5xx / 4xx, notice for a failed exit.
- TIMESTAMP: when the line was read, UTC, microseconds (RFC 5424 allows at most six digits).
- HOSTNAME: the agent's host name. APP-NAME: the configured one, else the log file's name
  without its extension (``api`` for ``/var/log/app/api.log``), else the process name of the
  event, else ``log-shuttle``. PROCID: the event's pid, or a line's writer's (the
  pipeline's enrichment), where known. MSGID: the event kind
  (``log``, ``process``, ``conn``, ``http``, ``loss``, ``etw``).
- STRUCTURED-DATA: one element ``logshuttle@32473`` (32473 is the enterprise number RFC 5612
  reserves for documentation) with the file path and byte offset of the line, its flags and
  its writer (``comm``, ``container_id``, ``writer_how``; ``writers`` when several), the
  request it was written for (``trace_id``, ``span_id``, ``http_method``, ``http_path``,
  ``http_status``; or ``join="ambiguous"``), or the event's fields.
- MSG: the line, UTF-8, without a BOM (MSG-ANY); invalid bytes are U+FFFD.
"""

from __future__ import annotations

import os
from typing import Any, Literal

import msgspec

from common.events import Event, LogEvent
from common.framing import newline_frame, octet_frame
from common.severity import event_severity, line_severity
from common.syslog import FACILITIES, SD_ID
from outputs.records import LineRecord, event_record, log_records

Framing = Literal["octet", "newline"]

_SD_ESCAPE = str.maketrans({"\\": "\\\\", '"': '\\"', "]": "\\]", "\n": " ", "\r": " "})
_json = msgspec.json.Encoder()


def _ascii_token(text: str, limit: int) -> str:
    """A header field: printable US-ASCII without spaces, at most ``limit`` characters, or
    the NILVALUE ``-``."""
    out = "".join(c if "!" <= c <= "~" else "_" for c in text[:limit])
    return out or "-"


def _app_name(path: str) -> str:
    base = os.path.basename(path)
    stem = base.split(".", 1)[0] if not base.startswith(".") else base
    return stem


def _sd_value(value: Any) -> str:
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, (list, dict)):
        text = _json.encode(value).decode() if isinstance(value, dict) else " ".join(map(str, value))
    else:
        text = str(value)
    return text.translate(_SD_ESCAPE)


def _sd(params: dict[str, Any]) -> str:
    items = " ".join(f'{_ascii_token(k, 32).replace("=", "_")}="{_sd_value(v)}"'
                     for k, v in params.items() if v is not None and v != "")
    return f"[{SD_ID} {items}]" if items else "-"


class SyslogEncoder:
    """Renders a batch's events as framed RFC 5424 messages, in one bytes object."""

    def __init__(self, *, host: str, framing: Framing = "octet", facility: str = "user",
                 app_name: str = "") -> None:
        if facility not in FACILITIES:
            raise ValueError(f"unknown syslog facility {facility!r}")
        self.host = _ascii_token(host, 255)
        self.facility = FACILITIES[facility]
        self.app_name = app_name
        self.frame = octet_frame if framing == "octet" else newline_frame

    def messages(self, events: list[Event]) -> list[bytes]:
        """One unframed RFC 5424 message per record."""
        out: list[bytes] = []
        for ev in events:
            if isinstance(ev, LogEvent):
                app = _ascii_token(self.app_name or _app_name(ev.path), 48)
                for rec in log_records(ev, self.host):
                    out.append(self._line(rec, app))
            else:
                out.append(self._event(ev))
        return out

    def encode(self, events: list[Event]) -> bytes:
        frame = self.frame
        return b"".join([frame(m) for m in self.messages(events)])

    def _header(self, severity: int, time: str, app: str, procid: str, msgid: str) -> str:
        # time is RFC 3339 with nanoseconds; RFC 5424 takes at most microseconds.
        stamp = time[:26] + "Z" if len(time) > 27 else time
        return f"<{self.facility * 8 + severity}>1 {stamp} {self.host} {app} {procid} {msgid}"

    def _line(self, rec: LineRecord, app: str) -> bytes:
        params: dict[str, Any] = {"path": rec.path, "offset": rec.offset}
        if rec.piece is not None:
            params["piece"] = rec.piece
            params["last_piece"] = bool(rec.last_piece)
        if rec.invalid_utf8:
            params["invalid_utf8"] = True
        if rec.unterminated:
            params["unterminated"] = True
        procid = "-"
        if rec.process is not None:  # the writer: its pid is the PROCID, the rest goes in SD
            procid = str(rec.process.pid)
            params["comm"] = rec.process.comm
            if rec.process.container_id:
                params["container_id"] = rec.process.container_id
            params["writer_how"] = rec.process.how
        elif rec.writers:
            params["writers"] = ",".join(str(w.pid) for w in rec.writers)
        if rec.trace_id:  # the request the line was written for (pipeline/logjoin.py)
            params["trace_id"] = rec.trace_id
            params["span_id"] = rec.span_id
            params.update({f"http_{k}": v for k, v in rec.request.items()})
        elif rec.join:
            params["join"] = rec.join
        head = self._header(line_severity(rec.line), rec.time, app, procid, "log")
        return f"{head} {_sd(params)} {rec.line}".encode("utf-8", "replace")

    def _event(self, ev: Event) -> bytes:
        rec = event_record(ev, self.host)
        kind = rec.pop("type")
        time = rec.pop("time")
        rec.pop("host", None)
        pid = rec.get("pid")
        comm = rec.get("comm") or rec.get("provider_name") or ""
        app = _ascii_token(self.app_name or comm or "log-shuttle", 48)
        procid = _ascii_token(str(pid), 128) if pid else "-"
        text = " ".join(f"{k}={v}" for k, v in rec.items() if v not in (None, "", [], {}))
        head = self._header(event_severity(ev), time, app, procid, kind)
        msg = text.replace("\n", " ")
        return f"{head} {_sd(rec)} {kind} {msg}".encode("utf-8", "replace")
