"""The container image and the sidecar pod, for real: scripts/build-image builds the image from a
debootstrapped Debian base (cached across runs), `podman kube play` runs deploy/sidecar-pod.yaml
(an application writing sequence-numbered lines to an emptyDir, log-shuttle tailing it read-only
with shareProcessNamespace), and every line must come out of the sidecar's stdout exactly once,
with the application's process and container; `podman kube down` must leave nothing behind.

Needs root and podman (LOG_SHUTTLE_SETUP_TEST=1 ./scripts/setup installs podman, runc,
debootstrap, catatonit); podman runs with runc and ulimits this machine grants
(scripts/podman-env). Cold (no base image): about 3 minutes; warm: about 30 seconds.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MANIFEST = ROOT / "deploy" / "sidecar-pod.yaml"
IMAGE = "localhost/log-shuttle:latest"
LINES = 3000
UID = 10001

pytestmark = pytest.mark.timeout(600)


def _why_not() -> str | None:
    if os.geteuid() != 0:
        return "needs root: podman here runs rootful with runc (rootless podman is not set up)"
    missing = [t for t in ("podman", "runc", "debootstrap", "catatonit") if not shutil.which(t)]
    if missing:
        return (f"{', '.join(missing)} not installed: run LOG_SHUTTLE_SETUP_TEST=1 "
                "./scripts/setup as root")
    return None


if (reason := _why_not()) is not None:
    pytest.skip(reason, allow_module_level=True)


@pytest.fixture(scope="module")
def podman_env() -> dict[str, str]:
    """The environment with CONTAINERS_CONF from scripts/podman-env (runc, derived ulimits)."""
    out = subprocess.run([str(ROOT / "scripts" / "podman-env")], capture_output=True, text=True,
                         check=True, timeout=60).stdout
    m = re.fullmatch(r"export CONTAINERS_CONF=(\S+)\n", out)
    assert m, out
    return {**os.environ, "CONTAINERS_CONF": m.group(1)}


def podman(env: dict[str, str], *args: str, timeout: float = 120,
           check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(["podman", *args], env=env, capture_output=True, text=True,
                            timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)}: exit {result.returncode}\n"
                             f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


@pytest.fixture(scope="module")
def image(podman_env) -> str:
    """scripts/build-image: the debootstrap base only when it is missing, podman's layer cache
    for the rest."""
    result = subprocess.run([str(ROOT / "scripts" / "build-image")], env=podman_env,
                            capture_output=True, text=True, timeout=540)
    assert result.returncode == 0, f"build-image failed:\n{result.stderr[-5000:]}"
    return IMAGE


def test_image_runs_as_non_root_with_bcc(podman_env, image):
    assert podman(podman_env, "image", "inspect", "--format", "{{.Config.User}}",
                  image).stdout.strip() == f"{UID}:{UID}"
    out = podman(podman_env, "run", "--rm", "--entrypoint", "python", image, "-c",
                 "import os, bcc, agent; print(os.getuid(), os.getgid(), os.path.realpath(bcc.__file__))"
                 ).stdout
    assert out.split() == [str(UID), str(UID), "/usr/lib/python3/dist-packages/bcc/__init__.py"]
    # The eBPF input, unprivileged, refuses at once and says why (exit 3), rather than crash.
    run = podman(podman_env, "run", "--rm", image, "--ebpf-http-tracing", check=False)
    assert run.returncode == 3, run.stderr
    assert "privileges" in run.stderr


def _unique_manifest(tmp_path: Path, tag: str) -> tuple[Path, dict[str, str]]:
    """deploy/sidecar-pod.yaml with this run's own names (pod, ConfigMap, volumes: podman makes
    named volumes of emptyDirs, shared by name with anything else on the machine) and LINES."""
    text = MANIFEST.read_text()
    names = {"pod": f"{tag}-pod", "config": f"{tag}-config", "logs": f"{tag}-logs",
             "state": f"{tag}-state"}
    for old, new in [("name: app-with-log-shuttle", f"name: {names['pod']}"),
                     ("app: app-with-log-shuttle", f"app: {names['pod']}"),
                     ("name: log-shuttle-config", f"name: {names['config']}"),
                     ("name: app-logs", f"name: {names['logs']}"),
                     ("name: state", f"name: {names['state']}"),
                     ('value: "1000"', f'value: "{LINES}"')]:
        assert old in text, f"{MANIFEST} no longer has {old!r}"
        text = text.replace(old, new)
    path = tmp_path / "pod.yaml"
    path.write_text(text)
    return path, names


def _records(logs: str) -> list[dict]:
    # podman prints a line the agent is still writing without its newline: leave it out
    whole = logs[: logs.rfind("\n") + 1]
    return [json.loads(line) for line in whole.splitlines() if line.startswith("{")]


def test_sidecar_ships_every_line_once_with_the_writer(podman_env, image, tmp_path):
    tag = f"lstest-{uuid.uuid4().hex[:8]}"
    manifest, names = _unique_manifest(tmp_path, tag)
    app, sidecar = f"{names['pod']}-app", f"{names['pod']}-log-shuttle"
    volumes = [names["config"], names["logs"], names["state"]]
    played = False
    down = None
    try:
        podman(podman_env, "kube", "play", str(manifest), timeout=180)
        played = True
        # What we made exists (so that "nothing left" below means something).
        assert podman(podman_env, "pod", "exists", names["pod"], check=False).returncode == 0
        for v in volumes:
            assert podman(podman_env, "volume", "exists", v, check=False).returncode == 0, v

        deadline = time.monotonic() + 120
        records: list[dict] = []
        while time.monotonic() < deadline:
            logs = podman(podman_env, "logs", sidecar)
            records = [r for r in _records(logs.stdout) if "seq=" in r.get("line", "")]
            if len(records) >= LINES:
                break
            state = podman(podman_env, "inspect", "--format", "{{.State.Status}}",
                           sidecar).stdout.strip()
            assert state == "running", f"sidecar {state}:\n{logs.stderr[-3000:]}"
            time.sleep(1)
        time.sleep(1.5)  # anything still coming would be a duplicate
        records = [r for r in _records(podman(podman_env, "logs", sidecar).stdout)
                   if "seq=" in r.get("line", "")]

        seqs = Counter(int(re.search(r"seq=(\d+)", r["line"]).group(1)) for r in records)
        assert sorted(seqs) == list(range(1, LINES + 1)), \
            f"missing: {sorted(set(range(1, LINES + 1)) - set(seqs))[:20]}"
        assert [s for s, n in seqs.items() if n > 1] == [], "lines shipped more than once"

        app_id = podman(podman_env, "inspect", "--format", "{{.Id}}", app).stdout.strip()
        sidecar_id = podman(podman_env, "inspect", "--format", "{{.Id}}", sidecar).stdout.strip()
        for r in records:
            assert r["path"] == "/var/log/app/app.log"
            proc = r.get("process")
            assert proc is not None, f"no writer on {r}"
            # The pid the application printed of itself is the one the sidecar sees: one PID
            # namespace for the pod.
            assert proc["pid"] == int(re.search(r"pid=(\d+)", r["line"]).group(1))
            assert proc["how"] == "fd"
            assert proc["comm"] == "python3"
            assert proc["cmdline"][:3] == ["/usr/bin/python3", "-u", "-c"]
            assert proc["uid"] == UID
            assert proc["container_id"] == app_id, (proc, app_id, sidecar_id)
        # Offsets: each line where the previous one ended.
        by_offset = sorted(records, key=lambda r: r["offset"])
        for a, b in zip(by_offset, by_offset[1:]):
            assert b["offset"] == a["offset"] + len(a["line"].encode()) + 1

        # The sidecar ran as the application's uid with no capability, on a read-only mount.
        inspect = json.loads(podman(podman_env, "inspect", sidecar).stdout)[0]
        assert inspect["Config"]["User"] == str(UID) or inspect["Config"]["User"].startswith(
            f"{UID}:"), inspect["Config"]["User"]
        assert not inspect.get("EffectiveCaps"), inspect.get("EffectiveCaps")
        logs_mount = [m for m in inspect["Mounts"] if m["Destination"] == "/var/log/app"]
        assert logs_mount and logs_mount[0]["RW"] is False, logs_mount
    finally:
        if played:
            down = podman(podman_env, "kube", "down", str(manifest), timeout=120, check=False)
        # podman 4.3's kube down keeps the volume it made for the ConfigMap (newer podman has
        # `kube down --force`); remove it here, and everything else must be gone already.
        podman(podman_env, "volume", "rm", "--force", names["config"], check=False)
        # In case kube play failed half-way: leave nothing behind either way.
        if not played:
            podman(podman_env, "pod", "rm", "--force", "--time", "0", names["pod"], check=False)
            for v in volumes:
                podman(podman_env, "volume", "rm", "--force", v, check=False)
    assert down is not None and down.returncode == 0, down and down.stderr
    assert podman(podman_env, "pod", "exists", names["pod"], check=False).returncode == 1
    for c in (app, sidecar):
        assert podman(podman_env, "container", "exists", c, check=False).returncode == 1, c
    left = podman(podman_env, "ps", "--all", "--format", "{{.Names}}").stdout.split()
    assert [n for n in left if tag in n] == []
    for v in (names["logs"], names["state"]):
        assert podman(podman_env, "volume", "exists", v, check=False).returncode == 1, \
            f"kube down left volume {v}"


# The host agent's container settings, as deploy/daemonset.yaml gives them (hostPID, root with
# four capabilities, seccomp unconfined, read-only root and mounts).
HOST_AGENT = ["--pid", "host", "--user", "0", "--cap-drop", "ALL", "--cap-add", "BPF",
              "--cap-add", "PERFMON", "--cap-add", "SYS_PTRACE", "--cap-add", "DAC_READ_SEARCH",
              "--security-opt", "seccomp=unconfined", "--read-only",
              "-v", "/sys/kernel/tracing:/sys/kernel/tracing:ro",
              "-v", "/lib/modules:/lib/modules:ro", "-v", "/usr/src:/usr/src:ro"]


def test_ebpf_input_in_a_container_with_the_documented_capabilities(podman_env, image):
    """The eBPF input runs in the image with the DaemonSet's capabilities (no privileged
    container, no CAP_SYS_ADMIN) and reports host processes with their host pids."""
    doctor = podman(podman_env, "run", "--rm", *HOST_AGENT, image, "doctor", check=False,
                    timeout=300)
    if doctor.returncode != 0:
        host = subprocess.run([str(ROOT / ".venv" / "bin" / "log-shuttle"), "doctor"],
                              capture_output=True, text=True, timeout=300)
        if host.returncode != 0:
            pytest.skip(f"the eBPF input cannot run on this machine either:\n{host.stdout}")
        raise AssertionError(f"doctor in the container:\n{doctor.stdout}\n{doctor.stderr}")
    assert "the eBPF input can run here" in doctor.stdout

    name = f"lstest-ebpf-{uuid.uuid4().hex[:8]}"
    marker = f"marker-{uuid.uuid4().hex}"
    podman(podman_env, "run", "-d", "--name", name, *HOST_AGENT, image,
           "--ebpf-http-tracing", "--log-level", "debug")
    try:
        deadline = time.monotonic() + 120
        found: list[dict] = []
        pids: list[int] = []
        while time.monotonic() < deadline and not found:
            proc = subprocess.Popen(["/bin/sh", "-c", "exit 7", marker])  # a host process
            proc.wait()
            pids.append(proc.pid)
            time.sleep(1)
            logs = podman(podman_env, "logs", name)
            found = [r for r in _records(logs.stdout)
                     if r.get("type") == "process" and marker in json.dumps(r)]
            state = podman(podman_env, "inspect", "--format", "{{.State.Status}}",
                           name).stdout.strip()
            assert state == "running", f"agent {state}:\n{logs.stderr[-3000:]}"
        assert found, "no exec of the marker process reported"
        # Host pids: the container shares the host's PID namespace, so the pid the eBPF
        # program saw is the one this test started.
        execs = [r for r in found if r["kind"] == "exec"]
        assert execs and all(r["pid"] in pids for r in execs), (found, pids)
        exits = [r for r in found if r["kind"] == "exit"]
        assert all(r["pid"] in pids and r["exit_code"] == 7 for r in exits), exits
    finally:
        podman(podman_env, "rm", "--force", "--time", "15", name, check=False, timeout=60)
    assert podman(podman_env, "container", "exists", name, check=False).returncode == 1
