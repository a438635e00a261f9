"""Every module of the project imports on Windows: a subprocess makes this Linux look like
Windows to the project's code (sys.platform = "win32", pwd/fcntl/termios/resource/... hidden,
POSIX-only functions and constants removed: tests/agent/win32_imports.py says how) and imports
every module under agent/, inputs/, pipeline/, outputs/, common/, bpf/ (and server/ where it
exists). A stand-in for Windows, since none runs here: it proves the imports, not the Windows
code paths."""

from __future__ import annotations

import pkgutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROBE = Path(__file__).with_name("win32_imports.py")
PACKAGES = [p for p in ("agent", "inputs", "pipeline", "outputs", "common", "server", "bpf")
            if (ROOT / p / "__init__.py").exists()]


def probe(root: Path, packages: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(PROBE), str(root), *packages],
                          capture_output=True, text=True, timeout=120, cwd=root)


def test_every_module_imports_with_windows_as_the_platform():
    r = probe(ROOT, PACKAGES)
    assert r.returncode == 0, r.stdout + r.stderr
    count = sum(1 + len(list(pkgutil.walk_packages([str(ROOT / p)], p + "."))) for p in PACKAGES)
    assert r.stdout.strip() == f"imported {count} modules"
    assert count > 70  # the walk saw the project, not an empty tree


def test_the_probe_catches_what_fails_on_windows(tmp_path):
    pkg = tmp_path / "fake"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "users.py").write_text("import pwd\n")
    (pkg / "ticks.py").write_text("import os\nTICK = os.sysconf('SC_CLK_TCK')\n")
    (pkg / "signals.py").write_text("import signal\nHELD = {signal.SIGHUP}\n")
    (pkg / "fine.py").write_text("import os\n\ndef ticks():\n    return os.sysconf('SC_CLK_TCK')\n")
    r = probe(tmp_path, ["fake"])
    assert r.returncode == 1
    failed = sorted(line.split(":")[0] for line in r.stdout.splitlines())
    assert failed == ["fake.signals", "fake.ticks", "fake.users"], r.stdout
    assert "fake/users.py:1: import pwd" in r.stdout
