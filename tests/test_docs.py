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
