"""The TCP output against real syslog receivers from Debian: rsyslog (imtcp) and syslog-ng
(syslog() and network() sources), in both framings. Every line must arrive, parsed by them as
RFC 5424 (their own parse of the app name, message id, structured data and message)."""

from __future__ import annotations

import json

import pytest

from tests.harness import Agent
from tests.server.helpers import free_port, read_when, rsyslog, syslog_ng

LINES = ["GET /orders 200 12ms", "ERROR payment failed: card \"declined\" [code=51]",
         "unicode: é ü 漢字", "back\\slash ] bracket", "WARN disk 91% full"]
N = 300


def _log(tmp_path):
    log = tmp_path / "app.log"
    lines = [f"{i:04d} {LINES[i % len(LINES)]}" for i in range(N)]
    log.write_bytes("".join(f"{s}\n" for s in lines).encode())
    offsets, off = [], 0
    for s in lines:
        offsets.append(off)
        off += len(s.encode()) + 1
    return log, lines, offsets


@pytest.mark.parametrize("framing", ["syslog-octet", "syslog-newline"])
def test_rsyslog_parses_every_line(tmp_path, framing):
    log, lines, offsets = _log(tmp_path)
    port = free_port()
    out = tmp_path / "rsyslog.out"
    with rsyslog(tmp_path, port=port, out=out):
        with Agent(tmp_path, "--input-file", str(log), "--from-beginning",
                   "--output-tcp", f"127.0.0.1:{port}", "--tcp-framing", framing) as agent:
            got = [json.loads(x) for x in read_when(out, N)]
            assert agent.stop() == 0
    assert len(got) == N, got[N:]
    for rec, line, off in zip(got, lines, offsets):
        assert rec["version"] == "1"                      # parsed as RFC 5424, not as legacy
        assert rec["app"] == "app" and rec["msgid"] == "log"
        assert rec["msg"].lstrip() == line
        assert f'path="{log}"' in rec["sd"] and f'offset="{off}"' in rec["sd"]
    # The level word sets the severity: ERROR -> 3, WARN -> 4, else informational (6); user = 1.
    assert {int(r["pri"]) for r in got} == {8 + 3, 8 + 4, 8 + 6}
    assert int(got[1]["pri"]) == 8 + 3 and int(got[4]["pri"]) == 8 + 4


@pytest.mark.parametrize("framing", ["syslog-octet", "syslog-newline"])
def test_syslog_ng_parses_every_line(tmp_path, framing):
    log, lines, offsets = _log(tmp_path)
    port = free_port()
    out = tmp_path / "syslog-ng.out"
    kind = "octet" if framing == "syslog-octet" else "newline"
    with syslog_ng(tmp_path, port=port, out=out, framing=kind):
        with Agent(tmp_path, "--input-file", str(log), "--from-beginning",
                   "--output-tcp", f"127.0.0.1:{port}", "--tcp-framing", framing) as agent:
            got = [x.split("\t") for x in read_when(out, N)]
            assert agent.stop() == 0
    assert len(got) == N
    for fields, line, off in zip(got, lines, offsets):
        program, msgid, host, level, path, offset, msg = fields
        assert (program, msgid, path, int(offset)) == ("app", "log", str(log), off)
        assert msg == line
    assert got[1][3] == "err" and got[4][3] == "warning" and got[0][3] == "info"
