"""The layout's rule: imports flow agent -> inputs / pipeline / outputs -> common, never back."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ["agent", "inputs", "pipeline", "outputs", "common", "bpf"]
ALLOWED = {
    "agent": {"agent", "inputs", "pipeline", "outputs", "common", "bpf"},
    "inputs": {"inputs", "common", "bpf"},
    "pipeline": {"pipeline", "common"},
    "outputs": {"outputs", "common"},
    "common": {"common"},
    "bpf": {"bpf", "common"},
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
