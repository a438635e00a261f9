"""deploy/log-shuttle.service: systemd accepts it, and the capabilities it leaves the agent are
enough for the eBPF input (doctor loads every probe under that bounding set)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "deploy" / "log-shuttle.service"
CONFIG = ROOT / "deploy" / "config.toml"
AGENT = ROOT / ".venv" / "bin" / "log-shuttle"


def _unit_here(tmp_path: Path) -> Path:
    """The unit with this checkout's agent and example configuration in place of /opt and /etc
    (systemd-analyze verify checks that the commands exist)."""
    text = UNIT.read_text()
    assert "/opt/log-shuttle/bin/log-shuttle" in text and "/etc/log-shuttle/config.toml" in text
    text = text.replace("/opt/log-shuttle/bin/log-shuttle", str(AGENT))
    text = text.replace("/etc/log-shuttle/config.toml", str(CONFIG))
    path = tmp_path / "log-shuttle.service"
    path.write_text(text)
    return path


@pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                    reason="systemd-analyze not installed (Debian package systemd)")
def test_systemd_analyze_verify_accepts_the_unit(tmp_path):
    result = subprocess.run(["systemd-analyze", "verify", str(_unit_here(tmp_path))],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    ours = [line for line in result.stderr.splitlines() if "log-shuttle" in line]
    assert ours == [], "\n".join(ours)


def test_example_config_is_valid(tmp_path):
    """The example, with the CA file it names made real (check-config reads TLS files)."""
    from tests.server.helpers import make_pki

    pki = make_pki(tmp_path)
    text = CONFIG.read_text()
    assert "/etc/log-shuttle/ca.pem" in text
    config = tmp_path / "config.toml"
    config.write_text(text.replace("/etc/log-shuttle/ca.pem", str(pki.ca)))
    result = subprocess.run([str(AGENT), "check-config", str(config)], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_example_config_names_its_missing_ca_file():
    """As shipped, on a machine without /etc/log-shuttle/ca.pem, check-config says which key."""
    if os.path.exists("/etc/log-shuttle/ca.pem"):
        pytest.skip("this machine has /etc/log-shuttle/ca.pem")
    result = subprocess.run([str(AGENT), "check-config", str(CONFIG)], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 2
    assert "outputs.grpc[0].tls_ca" in result.stderr


def _bounding_set() -> list[str]:
    m = re.search(r"^CapabilityBoundingSet=(.*)$", UNIT.read_text(), re.M)
    assert m, "the unit sets no CapabilityBoundingSet"
    return [c.removeprefix("CAP_").lower() for c in m.group(1).split()]


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: the unit runs the agent as root")
@pytest.mark.skipif(shutil.which("setpriv") is None, reason="setpriv not installed (util-linux)")
def test_the_units_capabilities_are_enough_for_the_ebpf_input():
    caps = _bounding_set()
    assert {"bpf", "perfmon"} <= set(caps) and "sys_admin" not in caps
    host = subprocess.run([str(AGENT), "doctor"], capture_output=True, text=True, timeout=300)
    if host.returncode != 0:
        pytest.skip(f"the eBPF input cannot run on this machine even as root:\n{host.stdout}")
    bounded = subprocess.run(
        ["setpriv", "--bounding-set", "-all," + ",".join("+" + c for c in caps),
         "--inh-caps", "-all", "--", str(AGENT), "doctor"],
        capture_output=True, text=True, timeout=300)
    assert bounded.returncode == 0, bounded.stdout + bounded.stderr
    assert "uid 0 with CAP_BPF and CAP_PERFMON" in bounded.stdout
    assert "the eBPF input can run here" in bounded.stdout
