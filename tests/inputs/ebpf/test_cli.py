"""The eBPF input through the real command line: `log-shuttle --ebpf-http-tracing` printing
NDJSON spans (and http records when asked), its clear failure without root, the optional input
that lets the other inputs run, `log-shuttle doctor` as root and as an unprivileged user, and
the flag that prints the BPF programs."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests.harness import ROOT, Agent, agent_command, agent_env, wait_for
from tests.inputs.ebpf.conftest import needs, needs_ebpf
from tests.inputs.ebpf.test_nginx import curl

NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all"]
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="runs commands as another user: "
                                                          "needs root (CI runs tests as root)")


def complete_records(data: bytes) -> list[dict]:
    return [json.loads(line) for line in data.split(b"\n")[:-1]]


def run(*args: str, user: list[str] = (), timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([*user, *agent_command(*args)], capture_output=True, text=True,
                          env=agent_env(), cwd=ROOT, timeout=timeout, stdin=subprocess.DEVNULL)


PATHS = ["/ok?cli=1", "/moved?cli=2", "/missing?cli=3", "/boom?cli=4"]
WANT = {"/ok?cli=1": 200, "/moved?cli=2": 301, "/missing?cli=3": 404, "/boom?cli=4": 500}


def traced_requests(nginx, tmp_path, env: dict[str, str] | None = None) -> tuple[list[dict], int]:
    """Run `log-shuttle --ebpf-http-tracing`, curl the four PATHS, and give the records of
    them the agent printed (spans and http events) once it has both sides' spans of each."""
    # Every exchange: the budget counts the host's, and other load on it could leave curl's out.
    env = {"LOG_SHUTTLE_INPUTS__EBPF__MAX_EXCHANGES_PER_SECOND": "0", **(env or {})}
    with Agent(tmp_path, "--ebpf-http-tracing", env={**agent_env(), **env}) as agent:
        wait_for(lambda: "tracing with probes" in agent.stderr() or agent.proc.poll() is not None,
                 timeout=90, what="the eBPF input to start")
        assert agent.proc.poll() is None, agent.stderr()
        assert "log-shuttle: input ebpf" in agent.children()
        curl_pid, rows = curl(*(nginx.url(p) for p in PATHS))
        assert {p: row["status"] for p, row in zip(PATHS, rows)} == WANT

        def records():
            recs = [r for r in complete_records(agent.stdout())
                    if "cli=" in r.get("path", "") + r.get("attrs", {}).get("url.query", "")]
            spans = [r for r in recs if r["type"] == "span"]
            return recs if len(spans) >= 2 * len(PATHS) else None

        recs = wait_for(records, timeout=60, what="spans on stdout")
        time.sleep(0.5)  # anything sent right behind them
        recs = [r for r in complete_records(agent.stdout())
                if "cli=" in r.get("path", "") + r.get("attrs", {}).get("url.query", "")]
        assert agent.stop() == 0
    return recs, curl_pid


@needs_ebpf
@needs("nginx", "curl")
def test_http_tracing_through_the_cli_prints_a_span_per_exchange(nginx, tmp_path):
    recs, curl_pid = traced_requests(nginx, tmp_path)
    # No http event beside its span, but for a server exchange whose span had to wait for its
    # client's (curl's exchange came in a later read of the ring buffers: rare, timing).
    assert all(r["type"] == "http" and r["direction"] == "server" for r in recs
               if r["type"] != "span"), recs
    recs = [r for r in recs if r["type"] == "span"]
    servers = nginx.pids()
    spans = {(r["kind"], r["attrs"]["url.path"] + "?" + r["attrs"]["url.query"]): r for r in recs}
    assert len(spans) == len(recs) == 2 * len(PATHS)  # each request once on each side
    for path, status in WANT.items():
        server, client = spans["server", path], spans["client", path]
        assert server["resource"]["process.pid"] in servers
        assert client["resource"]["process.pid"] == curl_pid
        assert server["attrs"]["http.response.status_code"] == status
        assert client["attrs"]["http.response.status_code"] == status
        assert (client["name"], client["attrs"]["server.address"], client["attrs"]["server.port"]) \
            == ("GET", "127.0.0.1", nginx.port)
        assert server["parent_span_id"] == client["span_id"]  # joined by their connection
        assert server["end_ns"] > 0 and server["time"].endswith("Z") and server["host"]


@needs_ebpf
@needs("nginx", "curl")
def test_http_events_beside_the_spans_when_asked(nginx, tmp_path):
    recs, curl_pid = traced_requests(nginx, tmp_path,
                                     {"LOG_SHUTTLE_PIPELINE__SPANS__HTTP_EVENTS": "true"})
    assert len([r for r in recs if r["type"] == "span"]) == 2 * len(PATHS)
    recs = [r for r in recs if r["type"] == "http"]
    servers = nginx.pids()
    server = {r["path"]: r for r in recs if r["direction"] == "server" and r["pid"] in servers}
    client = {r["path"]: r for r in recs if r["direction"] == "client" and r["pid"] == curl_pid}
    assert {p: r["status"] for p, r in server.items()} == WANT == \
        {p: r["status"] for p, r in client.items()}
    for r in client.values():
        assert (r["method"], r["comm"], r["peer_addr"], r["peer_port"]) == \
            ("GET", "curl", "127.0.0.1", nginx.port)
        assert r["duration_ns"] > 0 and r["time"].endswith("Z") and r["host"]
    assert len(recs) == 2 * len(PATHS)  # each request once on each side


@needs_root
def test_without_root_http_tracing_fails_at_once_with_a_clear_message():
    started = time.monotonic()
    result = run("--ebpf-http-tracing", user=NOBODY, timeout=60)
    assert result.returncode == 3
    assert "cannot trace with eBPF" in result.stderr and "privileges" in result.stderr
    assert "run as root" in result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert time.monotonic() - started < 30


@pytest.fixture
def shared_dir():
    """A directory the unprivileged user may use (pytest's tmp_path is root's own)."""
    path = Path(tempfile.mkdtemp(prefix="log-shuttle-ebpf-"))
    path.chmod(0o777)
    yield path
    shutil.rmtree(path)


@needs_root
def test_an_optional_ebpf_input_that_cannot_start_leaves_the_other_inputs_running(shared_dir):
    log = shared_dir / "app.log"
    log.write_text("")
    log.chmod(0o666)
    config = shared_dir / "agent.toml"
    config.write_text(f'[[inputs.file]]\npaths = ["{log}"]\nfrom_beginning = true\n\n'
                      f'[inputs.ebpf]\noptional = true\n')
    out, err = shared_dir / "out", shared_dir / "err"
    with open(out, "wb") as o, open(err, "wb") as e:
        proc = subprocess.Popen([*NOBODY, *agent_command("--config", str(config), "--state-dir",
                                                        str(shared_dir / "state"))],
                                stdout=o, stderr=e, env=agent_env(), cwd=ROOT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_for(lambda: "goes on without it" in err.read_text() or proc.poll() is not None,
                 timeout=60, what="the optional eBPF input's warning")
        with open(log, "a") as f:
            f.write("still shipping\n")
        recs = wait_for(lambda: [r for r in complete_records(out.read_bytes())
                                 if r.get("line") == "still shipping"] or proc.poll() is not None,
                        timeout=60, what="the file input's line")
        assert proc.poll() is None, err.read_text()
        assert recs[0]["path"] == str(log)
        text = err.read_text()
        assert "input ebpf" in text and "privileges" in text and "Traceback" not in text
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0


@needs_ebpf
def test_doctor_as_root_loads_every_probe():
    result = run("doctor")
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    for check in ("kernel", "BTF", "tracefs", "bcc", "headers", "privileges",
                  "probe process", "probe tcp", "probe http"):
        assert any(ln.split()[:1] == ["ok"] and f" {check} " in f"{ln} " for ln in lines), check
    assert "result: the eBPF input can run here" in result.stdout


@needs_root
def test_doctor_as_an_unprivileged_user_says_what_to_fix():
    result = run("doctor", user=NOBODY)
    assert result.returncode == 1
    out = result.stdout
    assert any(ln.split()[:2] == ["FAIL", "privileges"] for ln in out.splitlines()), out
    assert "fix: run as root" in out
    assert all(any(ln.split()[:3] == ["skip", "probe", p] for ln in out.splitlines())
               for p in ("process", "tcp", "http")), out
    # and tracefs, root's alone (mode 0700) unless made readable
    unreadable = not os.stat("/sys/kernel/tracing").st_mode & 0o005
    assert f"result: the eBPF input cannot run here ({1 + unreadable} problem(s))" in out
    assert "Traceback" not in result.stderr


@needs_root
def test_doctor_with_the_capabilities_but_not_root_says_tracefs_is_unreadable():
    """CAP_BPF and CAP_PERFMON without root: the privileges check passes, and BCC would then
    fail on every probe with a compiler error (it cannot read the tracepoints' formats in
    tracefs, root's alone): the tracefs check says so, and how to fix it."""
    from inputs.ebpf.checks import check_tracefs

    mounted = check_tracefs(mount=True)  # as root: mounts it when it is not
    if not mounted.ok:
        pytest.skip(f"no tracefs here: {mounted.detail}")
    if os.stat("/sys/kernel/tracing").st_mode & 0o005:
        pytest.skip("tracefs is readable by others on this machine")
    caps = ["--inh-caps=+bpf,+perfmon", "--ambient-caps=+bpf,+perfmon"]
    result = run("doctor", user=NOBODY[:-1] + caps)
    out = result.stdout
    assert any(ln.split()[:2] == ["ok", "privileges"] for ln in out.splitlines()), out
    assert any(ln.split()[:2] == ["FAIL", "tracefs"] for ln in out.splitlines()), out
    assert "uid 65534 cannot read it" in out and "mount -o remount,mode=0755" in out
    assert result.returncode == 1 and "Traceback" not in result.stderr


@needs_ebpf
def test_print_program_shows_what_bcc_compiles():
    result = run("--ebpf-print-program", "--ebpf-http-tracing")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for probe in ("process", "tcp", "http"):
        assert f"===== probe {probe}: BPF(src_file='{ROOT / 'bpf' / probe}.c'" in out
    # BCC's rewriting is visible: the tracepoint argument structs it generated, and the cflags.
    assert "struct tracepoint__syscalls__sys_enter_read {" in out
    assert "struct tracepoint__sock__inet_sock_set_state {" in out
    assert "-DHTTP_PAYLOAD=256" in out
