"""The severity of a log line or an event, for the outputs that carry one (syslog, OTLP).

A line's level is guessed from the first level word near its start (``ERROR``, ``warn``,
``level=debug``, ``[CRIT]``...), as most log formats put it there; no word means
informational. Levels are the syslog severities of RFC 5424 (0 emergency ... 7 debug).
"""

from __future__ import annotations

import re

from common.events import Event, HttpEvent, LogEvent, LossEvent, ProcessEvent, SpanEvent

EMERGENCY, ALERT, CRITICAL, ERROR, WARNING, NOTICE, INFO, DEBUG = range(8)

NAMES = ("emerg", "alert", "crit", "err", "warning", "notice", "info", "debug")

_WORDS = {
    "emerg": EMERGENCY, "emergency": EMERGENCY, "panic": EMERGENCY,
    "alert": ALERT,
    "crit": CRITICAL, "critical": CRITICAL, "fatal": CRITICAL,
    "err": ERROR, "error": ERROR, "eror": ERROR,
    "warn": WARNING, "warning": WARNING, "wrn": WARNING,
    "notice": NOTICE,
    "info": INFO, "inf": INFO, "information": INFO,
    "debug": DEBUG, "dbg": DEBUG, "trace": DEBUG,
}
_LEVEL = re.compile(
    rb"(?<![A-Za-z0-9_])(" + b"|".join(w.encode() for w in sorted(_WORDS, key=len, reverse=True))
    + rb")(?![A-Za-z0-9_])", re.IGNORECASE)
_LOOK = 80
"""Only this many bytes at the start of a line are searched."""


def line_severity(line: bytes | str) -> int:
    """The severity a line announces near its start, INFO when it names none."""
    head = line[:_LOOK]
    if isinstance(head, str):
        head = head.encode("utf-8", "replace")
    m = _LEVEL.search(head)
    return _WORDS[m.group(1).decode().lower()] if m else INFO


def event_severity(ev: Event) -> int:
    """The severity of an event that is not a log line."""
    match ev:
        case LossEvent():
            return WARNING
        case HttpEvent(status=s) if s >= 500:
            return ERROR
        case HttpEvent(status=s) if s >= 400:
            return WARNING
        case SpanEvent():  # as its exchange's http event
            s = ev.attrs.get("http.response.status_code", 0)
            if isinstance(s, int) and s >= 400:
                return ERROR if s >= 500 else WARNING
        case ProcessEvent(kind="exit", exit_code=c) if c not in (None, 0):
            return NOTICE
        case LogEvent():
            return line_severity(ev.data)
    return INFO


# OTLP severity numbers (logs data model): TRACE 1-4, DEBUG 5-8, INFO 9-12, WARN 13-16,
# ERROR 17-20, FATAL 21-24. Syslog severities map onto them as the data model's appendix does.
OTLP_NUMBER = {EMERGENCY: 21, ALERT: 19, CRITICAL: 18, ERROR: 17, WARNING: 13, NOTICE: 10,
               INFO: 9, DEBUG: 5}
OTLP_TEXT = {EMERGENCY: "FATAL", ALERT: "ERROR3", CRITICAL: "ERROR2", ERROR: "ERROR",
             WARNING: "WARN", NOTICE: "INFO2", INFO: "INFO", DEBUG: "DEBUG"}


def from_otlp(number: int) -> int:
    """A syslog severity for an OTLP severity number (0, unspecified, is INFO)."""
    if number <= 0:
        return INFO
    if number <= 8:
        return DEBUG
    if number <= 12:
        return INFO if number == 9 else NOTICE
    if number <= 16:
        return WARNING
    if number <= 20:
        return ERROR if number == 17 else CRITICAL
    return EMERGENCY
