"""What both ends of syslog share: the facilities by name (RFC 5424, section 6.2.1) and the
SD-ID of log-shuttle's structured-data element. The TCP output (outputs/syslog.py) writes them;
the server (server/frames.py) reads them back."""

from __future__ import annotations

SD_ID = "logshuttle@32473"
"""log-shuttle's structured-data element; 32473 is the enterprise number RFC 5612 reserves for
documentation."""

FACILITIES = {
    "kern": 0, "user": 1, "mail": 2, "daemon": 3, "auth": 4, "syslog": 5, "lpr": 6, "news": 7,
    "uucp": 8, "cron": 9, "authpriv": 10, "ftp": 11, "ntp": 12, "security": 13, "console": 14,
    "solaris-cron": 15, "local0": 16, "local1": 17, "local2": 18, "local3": 19, "local4": 20,
    "local5": 21, "local6": 22, "local7": 23,
}

FACILITY_NAMES = {code: name for name, code in FACILITIES.items()}
"""The name of each facility code."""
