"""RFC 5424 encoding of events, and its RFC 6587 framing: checked field by field and read back
by the server's parser."""

from __future__ import annotations

import re

import pytest

from server.frames import parse_syslog
from common.events import PIECE, HttpEvent, LogEvent, LossEvent, SpanEvent
from common.framing import OctetDecoder
from outputs.syslog import SyslogEncoder

T = 1_764_000_000_123_456_789
HEADER = re.compile(r"^<(\d+)>1 (\S+) (\S+) (\S+) (\S+) (\S+) ")


def test_lines_become_rfc5424_messages():
    ev = LogEvent("/var/log/app/api.v2.log", 1, 2, 100,
                  'ERROR bad "quote" ] and \\ here\nsecond é\n'.encode(), 2, T)
    msgs = [m.decode() for m in SyslogEncoder(host="web 1", facility="local3").messages([ev])]
    m = HEADER.match(msgs[0])
    pri, stamp, host, app, procid, msgid = m.groups()
    assert int(pri) == 19 * 8 + 3                   # local3, error
    assert stamp == "2025-11-24T16:00:00.123456Z"   # microseconds at most
    assert (host, app, procid, msgid) == ("web_1", "api", "-", "log")
    assert msgs[0].endswith(
        '[logshuttle@32473 path="/var/log/app/api.v2.log" offset="100"] '
        'ERROR bad "quote" ] and \\ here')
    assert '[logshuttle@32473 path="/var/log/app/api.v2.log" offset="131"] second é' in msgs[1]
    assert int(HEADER.match(msgs[1])[1]) == 19 * 8 + 6


def test_octet_counting_counts_bytes_and_the_server_reads_it_back():
    ev = LogEvent("/l/a.log", 1, 2, 0, "é ] \"x\"\n".encode(), 1, T, flags=PIECE, piece=3)
    data = SyslogEncoder(host="h").encode([ev, LossEvent(T, "input ebpf", "ring buffer", 7)])
    frames = OctetDecoder(max_frame=4096).feed(data)
    assert len(frames) == 2
    rec = parse_syslog(frames[0], received_ns=0)
    assert (rec["path"], rec["offset"], rec["piece"], rec["last_piece"], rec["line"]) == \
        ("/l/a.log", 0, 3, False, 'é ] "x"')
    loss = parse_syslog(frames[1], received_ns=0)
    assert loss["msgid"] == "loss" and loss["severity"] == "warning"
    assert (loss["source"], loss["count"]) == ("input ebpf", "7")


def test_newline_framing_and_event_fields():
    ev = HttpEvent(T, 42, 43, "nginx", 5, "server", "GET", "/x", status=503)
    data = SyslogEncoder(host="h", framing="newline").encode([ev])
    assert data.count(b"\n") == 1 and data.endswith(b"\n")
    rec = parse_syslog(data[:-1], received_ns=0)
    assert (rec["app"], rec["procid"], rec["msgid"], rec["severity"]) == \
        ("nginx", "42", "http", "err")


@pytest.mark.parametrize("kind,status,severity", [("server", 200, "info"),
                                                   ("server", 404, "warning"),
                                                   ("client", 503, "err")])
def test_a_span_has_its_exchanges_severity_and_its_process(kind, status, severity):
    span = SpanEvent(T, T + 2_000, "ab" * 16, "cd" * 8, kind=kind, name="GET",
                     error=status >= 500 or (kind == "client" and status >= 400),
                     attrs={"http.request.method": "GET", "http.response.status_code": status},
                     resource={"service.name": "shop", "process.pid": 42})
    data = SyslogEncoder(host="h", framing="newline").encode([span])
    rec = parse_syslog(data[:-1], received_ns=0)
    assert (rec["app"], rec["procid"], rec["msgid"], rec["severity"]) == \
        ("shop", "42", "span", severity)


def test_a_lines_writer_is_the_procid_and_in_the_structured_data():
    from common.events import LogEvent, ProcessInfo
    from outputs.syslog import SyslogEncoder

    writer = ProcessInfo(pid=4242, comm="api", container_id="cd" * 32, how="fd")
    ev = LogEvent(path="/var/log/api.log", dev=1, ino=2, offset=0, data=b"ERROR boom\n",
                  lines=1, read_ns=1_700_000_000_000_000_000, writers=[writer])
    (msg,) = SyslogEncoder(host="h", framing="newline").messages([ev])
    fields = msg.decode().split(" ", 7)
    assert fields[4] == "4242"                           # PROCID
    assert 'comm="api"' in msg.decode() and f'container_id="{"cd" * 32}"' in msg.decode()
    assert msg.decode().rstrip("\n").endswith("ERROR boom")
