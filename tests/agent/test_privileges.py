"""Root only where it is needed, through the real agent run as root: each process's uid and
capabilities (effective, permitted, bounding) and no_new_privs read from /proc/PID/status, and
the agent still working end to end: a root-only (0600, in a 0700 directory) log file read, the
eBPF input tracing an exec, the lines out over TCP and over gRPC into `log-shuttle server`,
the listener answering."""

from __future__ import annotations

import os
import shutil
import subprocess
import time

import pytest

from agent.privileges import agent_user, names, status_of
from tests.agent.observe_helpers import LineReceiver, get_json, metrics, value
from tests.harness import Agent, wait_for
from tests.inputs.ebpf.conftest import needs_ebpf
from tests.server.helpers import Server, free_port

pytestmark = [pytest.mark.skipif(os.geteuid() != 0, reason="runs the agent as root"),
              needs_ebpf]

NONE = "0000000000000000"
C = "log_shuttle_component_"


def test_each_process_keeps_only_what_it_needs_and_the_agent_still_works(tmp_path):
    secret = tmp_path / "root-only"
    secret.mkdir(mode=0o700)
    log = secret / "app.log"
    log.write_bytes(b"".join(b"secret line %d\n" % i for i in range(200)))
    os.chmod(log, 0o600)
    rx = LineReceiver()
    grpc_port = free_port()
    server = Server(tmp_path, "--insecure", grpc_port=grpc_port)
    address = f"127.0.0.1:{free_port()}"
    config = tmp_path / "agent.toml"
    config.write_text(f"""
[agent.http]
listen = "{address}"
[[inputs.file]]
paths = ["{log}"]
from_beginning = true
[inputs.ebpf]
probes = ["process", "tcp"]
[[outputs.tcp]]
address = "127.0.0.1:{rx.port}"
[[outputs.grpc]]
address = "127.0.0.1:{grpc_port}"
insecure = true
""")
    agent = Agent(tmp_path, "--config", str(config))
    try:
        kids = wait_for(lambda: (k := agent.children()) and len(k) == 6 and k,
                        what="the six children")
        # Every output built (an output becomes the user once built): /ready says so.
        wait_for(lambda: get_json(f"http://{address}/ready")[0] == 200, timeout=30,
                 what="every output delivering")
        user = agent_user()
        seen = {title.removeprefix("log-shuttle: "): status_of(pid)
                for title, pid in kids.items()}
        seen["supervisor"] = status_of(agent.pid)
        caps = {role: names(st["CapEff"]) for role, st in seen.items()}
        for role in ("output tcp", "output grpc", "http"):
            st = seen[role]
            assert st["Uid"].split() == [str(user[1])] * 4, (role, st)
            assert st["Gid"].split() == [str(user[2])] * 4, (role, st)
            assert st["Groups"] == "", (role, st)
            assert st["CapEff"] == st["CapPrm"] == st["CapBnd"] == st["CapAmb"] == NONE, \
                (role, st)
        expected = {
            "input file": {"CAP_DAC_READ_SEARCH"},
            "input ebpf": {"CAP_BPF", "CAP_PERFMON", "CAP_SYS_PTRACE"},
            "pipeline": {"CAP_SYS_PTRACE", "CAP_DAC_READ_SEARCH"},
        }
        for role, want in expected.items():
            st = seen[role]
            assert st["Uid"].split() == ["0"] * 4, (role, st)
            assert caps[role] == want, (role, caps[role])
            assert names(st["CapPrm"]) == names(st["CapBnd"]) == want, (role, st)
            assert st["CapInh"] == st["CapAmb"] == NONE, (role, st)
        for role, st in seen.items():
            assert st["NoNewPrivs"] == "1", (role, st)
        union = set().union(*expected.values())
        assert caps["supervisor"] == union | {"CAP_SETUID", "CAP_SETGID", "CAP_SETPCAP",
                                              "CAP_KILL"}, caps["supervisor"]
        assert "CAP_SYS_ADMIN" not in caps["supervisor"] and \
            "CAP_DAC_OVERRIDE" not in caps["supervisor"]

        # End to end: the root-only lines over TCP and gRPC, an exec traced by eBPF.
        wait_for(lambda: rx.data.count(b"secret line") >= 200, what="the lines over TCP")
        wait_for(lambda: sum("secret line" in str(r) for r in server.records()) >= 200,
                 what="the lines over gRPC")
        marker = tmp_path / f"lsprv{os.getpid() % 100000}"
        shutil.copy("/bin/true", marker)
        for _ in range(50):
            subprocess.run([str(marker)], check=True)
            if marker.name.encode() in rx.data:
                break
            time.sleep(0.2)
        assert marker.name.encode() in rx.data, "the exec was not traced"
        code, ready = get_json(f"http://{address}/ready")
        assert (code, ready["ready"]) == (200, True), ready
        # The unprivileged listener serves every process's counters, the eBPF input's too.
        ms = wait_for(lambda: (m := metrics(address)) and
                      (value(m, C + "sent_events_total", component="input ebpf") or 0) > 0 and
                      (value(m, C + "sent_events_total", component="output grpc") or 0) > 200
                      and m,
                      timeout=10, what="the eBPF input's and the outputs' counters")
        assert value(ms, C + "received_events_total", component="input file") == 200
        assert value(ms, C + "bpf_lost_events_total", component="input ebpf") == 0
        for role in ("input ebpf", "output grpc", "http"):
            assert value(ms, C + "process_resident_memory_bytes", component=role) > 1e6
        # The outputs, unprivileged, set aside their dead letters where they can write.
        outputs_dir = agent.state_dir / "outputs"
        assert outputs_dir.stat().st_uid == user[1]
    finally:
        try:
            assert agent.stop() == 0, agent.stderr()
        finally:
            rx.stop()
            server.stop()
    assert "Traceback" not in agent.stderr()
