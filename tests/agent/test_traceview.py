"""`log-shuttle trace` and `log-shuttle traces` through the real command line, on NDJSON as the
agent and the server write it (a file, a server's directory with a rotated file)."""

from __future__ import annotations

import json
import subprocess

from tests.harness import ROOT, agent_command, agent_env

T1, T2 = "a" * 32, "b" * 32


def span(trace, span_id, parent, start_ms, dur_ms, kind, path, status=200, pid=1, error=False):
    start = 1_700_000_000_000_000_000 + start_ms * 1_000_000
    secs, frac = divmod(start, 10**9)
    import time
    return {"time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{frac:09d}Z",
            "host": "h", "type": "span", "end_ns": start + dur_ms * 1_000_000,
            "trace_id": trace, "span_id": span_id, "parent_span_id": parent, "kind": kind,
            "name": "GET", "error": error,
            "attrs": {"url.path": path, "http.response.status_code": status},
            "resource": {"service.name": f"svc{pid}", "process.pid": pid},
            "tracestate": "", "parent_how": ""}


def line(trace, span_id, text):
    return {"time": "2023-11-14T22:13:20.001000000Z", "host": "h", "path": "/l", "offset": 0,
            "line": text, "trace_id": trace, "span_id": span_id,
            "request": {"method": "GET", "path": "/", "status": 200}}


def write(path, recs):
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))


def cli(*args):
    return subprocess.run(agent_command(*args), capture_output=True, text=True, cwd=ROOT,
                          env=agent_env(), timeout=60)


def test_trace_draws_the_waterfall_with_lines_under_their_spans(tmp_path):
    f = tmp_path / "agent.ndjson"
    write(f, [span(T1, "1" * 16, "", 0, 100, "server", "/front", pid=1),
              line(T1, "1" * 16, "front got it"),
              {"time": "2023-11-14T22:13:20.000000000Z", "host": "h", "path": "/l", "offset": 9,
               "line": "unrelated"},
              span(T1, "2" * 16, "1" * 16, 10, 80, "client", "/back", pid=1),
              span(T1, "3" * 16, "2" * 16, 20, 60, "server", "/back", pid=2, status=503,
                   error=True),
              line(T1, "3" * 16, "back failed"),
              span(T2, "4" * 16, "", 0, 5, "server", "/other")])
    r = cli("trace", T1, "--from", str(f))
    assert r.returncode == 0, r.stderr
    out = r.stdout.splitlines()
    assert out[0].startswith(f"trace {T1}  3 spans, 2 log lines, 100.000 ms")
    assert "SERVER GET /front 200" in out[1] and "0.000 ms" in out[1]
    assert out[2].endswith("| front got it")
    assert "CLIENT GET /back" in out[3] and "10.000 ms" in out[3]
    assert "SERVER GET /back 503 ERROR" in out[4] and "[svc2 pid 2]" in out[4]
    assert out[5].endswith("| back failed")
    # indentation follows the tree, bars the time
    assert out[3].index("CLIENT") > out[1].index("SERVER")
    assert out[4].index("SERVER") > out[3].index("CLIENT")
    assert out[1].count("=") == 32 and 0 < out[4].count("=") < 32
    assert "unrelated" not in r.stdout and "/other" not in r.stdout
    missing = cli("trace", "c" * 32, "--from", str(f))
    assert missing.returncode == 1 and "no spans found" in missing.stdout
    assert cli("trace", T1.upper(), "--from", str(f)).stdout.splitlines()[0] == out[0]
    for bad in ("nothex", "g" * 32, T1 + "0"):
        r = cli("trace", bad, "--from", str(f))
        assert r.returncode == 2 and "is not a trace id (32 hex digits)" in r.stderr, bad


def test_traces_lists_recent_slowest_and_errors_from_a_server_directory(tmp_path):
    d = tmp_path / "received"
    d.mkdir()
    write(d / "received-1.ndjson", [span(T1, "1" * 16, "", 0, 100, "server", "/slow", error=True)])
    write(d / "received.ndjson", [span(T2, "4" * 16, "", 500, 5, "server", "/quick")])
    recent = cli("traces", "--from", str(d)).stdout.splitlines()
    assert recent[1].startswith(T2) and recent[2].startswith(T1)
    slowest = cli("traces", "--from", str(d), "--slowest").stdout.splitlines()
    assert slowest[1].startswith(T1) and "100.000 ms" in slowest[1]
    errors = cli("traces", "--from", str(d), "--errors").stdout.splitlines()
    assert len(errors) == 2 and errors[1].startswith(T1) and "ERROR" in errors[1]
    bad = cli("traces", "--from", str(tmp_path / "nope.ndjson"))
    assert bad.returncode == 2 and "cannot read" in bad.stderr
