"""Events as RFC 5424 syslog messages, framed for TCP as RFC 6587 says.

One message per record of the record view (``outputs.records``)::

    <PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID [logshuttle@32473 path="..." offset="..."] MSG

- PRI: the configured facility (``user`` by default) and a severity read from the line's level
  word (``ERROR``, ``warn``, ...; informational when it has none, see common.severity); other
  events: warning for losses, error / warning for HTTP 5xx / 4xx, notice for a failed exit.
- TIMESTAMP: when the line was read, UTC, microseconds (RFC 5424 allows at most six digits).
- HOSTNAME: the agent's host name. APP-NAME: the configured one, else the log file's name
  without its extension (``api`` for ``/var/log/app/api.log``), else the process name of the
  event (a span's ``service.name``), else ``log-shuttle``. PROCID: the event's pid (a span's
  ``process.pid``), or a line's writer's (the pipeline's enrichment), where known. MSGID: the
  event kind (``log``, ``process``, ``conn``, ``http``, ``span``, ``loss``, ``etw``).
- STRUCTURED-DATA: one element ``logshuttle@32473`` (32473 is the enterprise number RFC 5612
  reserves for documentation) with the file path and byte offset of the line, its flags and
  its writer (``comm``, ``container_id``, ``writer_how``; ``writers`` when several), the
  request it was written for (``trace_id``, ``span_id``, ``http_method``, ``http_path``,
  ``http_status``; or ``join="ambiguous"``), or the event's fields.
- MSG: the line, UTF-8, without a BOM (MSG-ANY); invalid bytes are U+FFFD.
"""

from __future__ import annotations

import os
from itertools import repeat
from typing import Any, Literal

import msgspec

from common.events import Event
from common.framing import newline_frame, octet_frame
from common.identity import Identity
from common.severity import event_severity, line_severity
from common.syslog import FACILITIES, SD_ID
from common.timefmt import rfc3339_ns
from outputs.records import EventRecord, LineRun, view

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
                 app_name: str = "", identity: Identity | None = None) -> None:
        if facility not in FACILITIES:
            raise ValueError(f"unknown syslog facility {facility!r}")
        self.host = _ascii_token(host, 255)
        self.facility = FACILITIES[facility]
        self.app_name = app_name
        self.frame = octet_frame if framing == "octet" else newline_frame
        self.identity = identity

    def messages(self, events: list[Event]) -> list[bytes]:
        """One unframed RFC 5424 message per record."""
        out: list[bytes] = []
        for item in view(events, self.identity):
            if type(item) is LineRun:
                out += self._lines(item)
            else:
                out.append(self._event(item))
        return out

    def encode(self, events: list[Event]) -> bytes:
        frame = self.frame
        return b"".join([frame(m) for m in self.messages(events)])

    def _header(self, severity: int, stamp: str, app: str, procid: str, msgid: str) -> str:
        return f"<{self.facility * 8 + severity}>1 {stamp} {self.host} {app} {procid} {msgid}"

    def _lines(self, run: LineRun) -> list[bytes]:
        app = _ascii_token(self.app_name or _app_name(run.path), 48)
        # The structured data around each line's offset and invalid_utf8 flag, made once.
        before = f'[{SD_ID} path="{_sd_value(run.path)}" offset="'
        flags: dict[str, Any] = {}
        if run.piece is not None:
            flags["piece"] = run.piece
            flags["last_piece"] = bool(run.last_piece)
        after: dict[str, Any] = {}
        if run.unterminated:
            after["unterminated"] = True
        procid = "-"
        if run.process is not None:  # the writer: its pid is the PROCID, the rest goes in SD
            procid = str(run.process.pid)
            after["comm"] = run.process.comm
            if run.process.container_id:
                after["container_id"] = run.process.container_id
            after["writer_how"] = run.process.how
        elif run.writers:
            after["writers"] = ",".join(str(w.pid) for w in run.writers)
        mid, tail = _params(flags), _params(after)
        # time is RFC 3339 with nanoseconds; RFC 5424 takes at most microseconds.
        stamp = rfc3339_ns(run.read_ns)[:26] + "Z"
        fac = self.facility * 8
        head = f"1 {stamp} {self.host} {app} {procid} log "
        invalid = run.invalid or repeat(False)
        ids = (f' id="{i}"' for i in run.ids) if run.id_prefix else repeat("")
        if run.joins:  # the request a line was written for (pipeline/logjoin.py)
            joined = {j.index: _params({"join": "ambiguous"} if j.ambiguous else {
                "trace_id": j.trace_id, "span_id": j.span_id, "http_method": j.method,
                "http_path": j.path, "http_status": j.status}) for j in run.joins}
            return [f'<{fac + line_severity(s)}>{head}{before}{off}"{rid}{mid}'
                    f'{_INVALID if bad else ""}{tail}{joined.get(i, "")}] {s}'.encode(
                        "utf-8", "replace")
                    for i, (s, off, bad, rid) in enumerate(zip(run.texts, run.offsets, invalid,
                                                               ids))]
        return [f'<{fac + line_severity(s)}>{head}{before}{off}"{rid}{mid}'
                f'{_INVALID if bad else ""}{tail}] {s}'.encode("utf-8", "replace")
                for s, off, bad, rid in zip(run.texts, run.offsets, invalid, ids)]

    def _event(self, rec: EventRecord) -> bytes:
        fields = rec.fields
        if rec.process is not None:
            fields = {**fields, "process": rec.process}
        pid = fields.get("pid")
        comm = fields.get("comm") or fields.get("provider_name") or ""
        if rec.kind == "span":  # its process is in its resource
            res = fields.get("resource") or {}
            pid, comm = res.get("process.pid"), str(res.get("service.name") or "")
        app = _ascii_token(self.app_name or comm or "log-shuttle", 48)
        procid = _ascii_token(str(pid), 128) if pid else "-"
        text = " ".join(f"{k}={v}" for k, v in fields.items() if v not in (None, "", [], {}))
        if rec.id:
            fields = {"id": rec.id, **fields}
        stamp = rfc3339_ns(rec.time_ns)[:26] + "Z"
        head = self._header(event_severity(rec.event), stamp, app, procid, rec.kind)
        msg = text.replace("\n", " ")
        return f"{head} {_sd(fields)} {rec.kind} {msg}".encode("utf-8", "replace")


_INVALID = ' invalid_utf8="true"'


def _params(params: dict[str, Any]) -> str:
    """SD-PARAMs after others in the element: each with its leading space."""
    return "".join(f' {_ascii_token(k, 32).replace("=", "_")}="{_sd_value(v)}"'
                   for k, v in params.items() if v is not None and v != "")
