"""The docs' maps name files that exist: every repository path written in backticks in
docs/*.md and README.md (``agent/child.py``, ``inputs/file/``) is checked, so that a file moved
or renamed without its docs fails here. Placeholders (``inputs/<name>/config.py``) and absolute
paths are not repository paths."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOP = ("agent", "inputs", "pipeline", "outputs", "common", "server", "bpf", "bench", "deploy",
       "docs", "scripts", "tests")
PATH = re.compile(r"`((?:%s)/[A-Za-z0-9_./-]*)`" % "|".join(TOP))


def test_every_path_the_docs_name_exists():
    missing = []
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for m in PATH.finditer(doc.read_text()):
            path = m.group(1).rstrip("/.")
            if not (ROOT / path).exists():
                missing.append(f"{doc.relative_to(ROOT)}: {m.group(1)}")
    assert not missing, "\n".join(missing)


def test_the_readme_names_every_flag_and_command_of_the_agent():
    """Every option and command `log-shuttle --help` lists is in the README (its flag table or
    its usage), so that a flag added without its docs fails here."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "agent.cli", "--help"], capture_output=True,
                         text=True, cwd=ROOT, env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"},
                         timeout=60).stdout
    flags = set(re.findall(r"(--[a-z][a-z-]+)", out)) - {"--help"}
    commands = set(re.findall(r"^│ ([a-z][a-z-]+)  ", out.split("Commands", 1)[1], re.M))
    assert len(flags) > 15 and {"doctor", "server", "status"} <= commands, out
    readme = (ROOT / "README.md").read_text()
    missing = sorted(f for f in flags if f"`{f}" not in readme and f"{f} " not in readme)
    missing += sorted(c for c in commands if f"log-shuttle {c}" not in readme)
    assert not missing, missing
