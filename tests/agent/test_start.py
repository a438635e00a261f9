"""The supervisor runs in a fresh interpreter that replaced the CLI's process (agent/start.py):
the same pid, the agent working, and nothing imported from the directory it was started in."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from tests.harness import ROOT, SESSIONS, agent_env, complete_lines, wait_for

CLI = shutil.which("log-shuttle", path=str(Path(sys.executable).parent))


def test_the_supervisor_replaces_the_cli_process_and_ignores_the_current_directory(tmp_path):
    # A directory named like our packages where the agent is started: the exec'd interpreter
    # must not import it (python -P), or it would run this instead of the agent.
    cwd = tmp_path / "cwd"
    marker = tmp_path / "imported"
    for pkg in ("agent", "common"):
        (cwd / pkg).mkdir(parents=True)
        (cwd / pkg / "__init__.py").write_text(f"open({str(marker)!r}, 'w').write({pkg!r})\n")
    (cwd / "agent" / "start.py").write_text(f"open({str(marker)!r}, 'w').write('start')\n")
    log = tmp_path / "app.log"
    log.write_text("".join(f"line {i}\n" for i in range(100)))
    out = tmp_path / "out"
    env = agent_env(LOG_SHUTTLE_AGENT__STATE_DIR=str(tmp_path / "state"))
    with open(out, "wb") as stdout, open(tmp_path / "err", "wb") as stderr:
        proc = subprocess.Popen([CLI or f"{ROOT}/.venv/bin/log-shuttle", "--input-file", str(log),
                                 "--from-beginning"], cwd=cwd, env=env, stdout=stdout,
                                stderr=stderr, stdin=subprocess.DEVNULL, start_new_session=True)
    SESSIONS.add(proc.pid)
    try:
        wait_for(lambda: len(complete_lines(out.read_bytes())) >= 100 or proc.poll() is not None,
                 timeout=60, what="the lines")
        assert proc.poll() is None, (tmp_path / "err").read_text()
        # The process started as the CLI is the supervisor now: the same pid, a new program.
        with open(f"/proc/{proc.pid}/cmdline", "rb") as f:
            assert f.read().split(b"\0")[0] == b"log-shuttle: supervisor"
    finally:
        proc.terminate()
        assert proc.wait(timeout=30) == 0, (tmp_path / "err").read_text()
    assert len(complete_lines(out.read_bytes())) == 100
    assert not marker.exists(), marker.read_text()
    assert "Traceback" not in (tmp_path / "err").read_text()


def _maps_openssl(pid: int) -> list[str]:
    with open(f"/proc/{pid}/maps") as f:
        return sorted({line.split()[-1] for line in f if "libcrypto" in line or "libssl" in line})


def test_no_process_loads_openssl_without_tls(tmp_path):
    # OpenSSL's libraries are about 4 MiB of RSS in each process that maps them (and dashboards
    # add RSS up over processes): an agent shipping to TCP without TLS must load them nowhere.
    # They come in through `import hashlib`, `secrets` (hmac) or `ssl` at any module's top.
    import socket

    log = tmp_path / "app.log"
    log.write_text("".join(f"line {i}\n" for i in range(100)))
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    env = agent_env(LOG_SHUTTLE_AGENT__STATE_DIR=str(tmp_path / "state"))
    with open(tmp_path / "err", "wb") as stderr:
        proc = subprocess.Popen([CLI or f"{ROOT}/.venv/bin/log-shuttle", "--input-file", str(log),
                                 "--from-beginning", "--output-tcp", f"127.0.0.1:{port}"],
                                env=env, stdout=subprocess.DEVNULL, stderr=stderr,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    SESSIONS.add(proc.pid)
    received = b""
    try:
        server.settimeout(60)
        conn, _ = server.accept()
        with conn:
            conn.settimeout(60)
            while received.count(b"\n") < 100:
                chunk = conn.recv(65536)
                assert chunk, (tmp_path / "err").read_text()
                received += chunk
            pids = [proc.pid] + [int(p) for p in subprocess.run(
                ["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()]
            assert len(pids) == 4, pids  # supervisor, input file, pipeline, output tcp
            loaded = {pid: _maps_openssl(pid) for pid in pids}
            assert all(not libs for libs in loaded.values()), loaded
    finally:
        proc.terminate()
        code = proc.wait(timeout=30)
        server.close()
    assert code == 0, (tmp_path / "err").read_text()


def test_the_supervisor_imports_no_code_it_does_not_run():
    # Every child is forked from the supervisor and carries its heap in its RSS: a module the
    # supervisor imports costs its size four times over. These are what the CLI needs to load a
    # configuration (tomllib, difflib), Windows' ETW structures (ctypes), the run directory's
    # helpers (shutil and with it bz2/lzma), the pipeline's tracing code, and OpenSSL.
    code = (
        "import sys\n"
        "import agent.start\n"
        "from agent import privileges\n"
        "from agent.observe.setup import observe, with_listener\n"
        "from agent.plan import plan\n"
        "from agent.supervisor import Supervisor\n"
        "from common.logs import setup_logging\n"
        "from common.identity import load_identity\n"
        "from inputs.file.checkpoint import default_state_dir\n"
        "from common.memory import trim\n"
        "print(' '.join(sorted(sys.modules)))\n")
    out = subprocess.run([sys.executable, "-P", "-c", code], capture_output=True, text=True,
                         cwd=ROOT, check=True).stdout.split()
    unwanted = {"tomllib", "difflib", "common.configload", "inputs.etw.structs",
                "inputs.etw.builders", "shutil", "tempfile", "lzma", "bz2", "pipeline.logjoin",
                "pipeline.spans", "hashlib", "_hashlib", "ssl", "typer", "click"}
    assert sorted(unwanted & set(out)) == []


def test_a_component_runs_with_its_start_up_heap_frozen():
    # A full collection walks every object the collector tracks: what start-up made (modules,
    # the process table) is frozen before the component runs, so collections walk only what
    # running makes. The component here reports what it sees from inside its run().
    code = (
        "import gc, sys\n"
        "from agent.child import Launch, run\n"
        "from agent.supervisor import ChildSpec\n"
        "from common.component import Stop\n"
        "class Runner:\n"
        "    def run(self):\n"
        "        print(gc.get_freeze_count(), flush=True)\n"
        "spec = ChildSpec(role='probe', kind='service', build=lambda ctx: Runner(), config=None)\n"
        "print(gc.get_freeze_count(), flush=True)\n"
        "sys.exit(int(run(Launch(spec=spec, host='h', log_level='warning', stop=Stop()))))\n")
    out = subprocess.run([sys.executable, "-P", "-c", code], capture_output=True, text=True,
                         cwd=ROOT, timeout=60)
    assert out.returncode == 0, out.stderr
    before, during = map(int, out.stdout.split())
    assert before == 0 and during > 10_000
