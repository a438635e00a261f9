"""The per-run directory: made by the supervisor before the first fork, removed when it exits.

It holds prometheus_client's multiprocess files (``PROMETHEUS_MULTIPROC_DIR`` points here, and
every child inherits it: each process writes its own ``counter_<pid>.db``, the listener adds
them all up) and ``children.json``, the supervisor's table of its children (role, pid, restarts),
which the listener reads for ``/status``, the restarts and each child's CPU and memory.

Counters of a child that exited stay (a restarted child's totals add to its predecessor's, as
Prometheus expects of a counter); its ``livesum`` gauges are removed when it is reaped
(:meth:`RunDir.forget`, prometheus_client's ``mark_process_dead``).
"""

from __future__ import annotations

import glob
import os
import time
from typing import Any

# json, shutil and tempfile (with bz2, lzma and zlib, which shutil imports) are imported where
# used: this module is imported by every supervisor, which makes a run directory only with the
# listener on, and what the supervisor imports is in the RSS of each child it forks.

ENV = "PROMETHEUS_MULTIPROC_DIR"
CHILDREN = "children.json"
PREFIX = "log-shuttle-run-"


class RunDir:
    def __init__(self, path: str) -> None:
        self.path = path
        self.started = time.time()

    @classmethod
    def create(cls, *, owner: int | None = None) -> RunDir:
        """A new private directory, in /run when this process may write there (root), else the
        temporary directory. ``owner``: the uid of the unprivileged children (outputs, the
        listener), which must write their files here too: it gets the directory, group root
        (the privileged children keep uid 0 but no CAP_DAC_OVERRIDE), mode 0770."""
        import tempfile

        parent = "/run" if os.access("/run", os.W_OK) else tempfile.gettempdir()
        _remove_stale(parent)
        path = tempfile.mkdtemp(prefix=PREFIX, dir=parent)
        if owner is not None:
            os.chown(path, owner, 0)
            os.chmod(path, 0o770)
        os.environ[ENV] = path
        return cls(path)

    def write_children(self, table: dict[str, Any]) -> None:
        """Replace ``children.json`` atomically (a reader sees the old table or the new one)."""
        import json

        tmp = os.path.join(self.path, f".{CHILDREN}.tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(table, f)
        os.chmod(tmp, 0o644)
        os.replace(tmp, os.path.join(self.path, CHILDREN))

    def forget(self, pid: int) -> None:
        """A child is gone: its live gauges go (its counters stay)."""
        for path in glob.glob(os.path.join(self.path, f"gauge_live*_{pid}.db")):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass

    def remove(self) -> None:
        import shutil

        shutil.rmtree(self.path, ignore_errors=True)
        if os.environ.get(ENV) == self.path:
            del os.environ[ENV]


def read_children(path: str) -> dict[str, Any]:
    import json

    try:
        with open(os.path.join(path, CHILDREN), encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return {"children": []}


def _remove_stale(parent: str) -> None:
    """Directories of runs whose supervisor is gone (SIGKILLed: it could not remove them)."""
    import shutil

    for path in glob.glob(os.path.join(parent, PREFIX + "*")):
        pid = read_children(path).get("pid")
        if not isinstance(pid, int):
            continue
        try:
            os.kill(pid, 0)
            continue  # still running
        except ProcessLookupError:
            shutil.rmtree(path, ignore_errors=True)
        except PermissionError:
            continue
