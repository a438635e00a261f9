"""The Containerfile installs every package that pyproject.toml ships (it copies them one by one,
to keep tests, benchmarks and the venv out of the image)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_containerfile_copies_every_package():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = [p.rstrip("*") for p in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]]
    assert "agent" in packages
    text = (ROOT / "Containerfile").read_text()
    missing = [p for p in packages if not re.search(rf"^COPY {p} /src/{p}$", text, re.M)]
    assert missing == [], f"Containerfile does not copy {missing}"


def test_ignore_files_agree():
    # podman reads .containerignore, docker .dockerignore: the same context either way.
    assert (ROOT / ".containerignore").read_text() == (ROOT / ".dockerignore").read_text()
