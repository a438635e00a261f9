"""The layout's rule: imports flow agent -> inputs / pipeline / outputs -> common, never back;
server/ (a program of its own) imports only common/."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ["agent", "inputs", "pipeline", "outputs", "common", "bpf", "server"]
ALLOWED = {
    "agent": {"agent", "inputs", "pipeline", "outputs", "common", "bpf", "server"},
    "inputs": {"inputs", "common", "bpf"},
    "pipeline": {"pipeline", "common"},
    "outputs": {"outputs", "common"},
    "common": {"common"},
    "bpf": {"bpf", "common"},
    "server": {"server", "common"},
}


def imported_packages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found & set(PACKAGES)


def test_imports_flow_one_way():
    wrong = []
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            bad = imported_packages(path) - ALLOWED[pkg]
            if bad:
                wrong.append(f"{path.relative_to(ROOT)} imports {sorted(bad)}")
    assert not wrong, wrong


def test_the_rule_is_checked_on_real_files():
    # The walk above must see the packages' modules, or it would pass on nothing.
    assert imported_packages(ROOT / "agent" / "components.py") >= {"inputs", "pipeline", "outputs"}


def test_the_server_imports_only_common():
    # Read: every module of server/, imports at any depth (lazy ones in functions too).
    modules = sorted((ROOT / "server").rglob("*.py"))
    assert {p.stem for p in modules} >= {"__init__", "cli", "config", "main", "grpc", "tcp",
                                         "frames", "writer"}
    seen = set().union(*(imported_packages(p) for p in modules))
    assert seen == {"server", "common"}, seen
    # Run: importing all of it, as `log-shuttle server` does, loads nothing of the agent's side.
    names = ", ".join(f"server.{p.stem}" for p in modules if p.stem != "__init__")
    out = subprocess.run(
        [sys.executable, "-c", f"import sys, {names}; "
         "print(sorted({m.split('.')[0] for m in sys.modules}))"],
        cwd=ROOT, capture_output=True, text=True, check=True, timeout=60).stdout
    loaded = set(ast.literal_eval(out)) & set(PACKAGES)
    assert loaded == {"server", "common"}, loaded
