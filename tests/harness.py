"""Running the real agent, through its real command line, for end-to-end tests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

SESSIONS: set[int] = set()
"""Sessions of agents this test run started in sessions of their own (the leak check looks for
log-shuttle processes in these and in its own session only, not in other people's)."""


def agent_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "agent.cli", *args]


def agent_env(**extra: str) -> dict[str, str]:
    """The environment for the agent under test: no LOG_SHUTTLE_* from outside, and a state
    directory of the test's own (set by the caller, or a fresh temporary one)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOG_SHUTTLE_")}
    env["PYTHONPATH"] = str(ROOT)
    env["LOG_SHUTTLE_AGENT__STATE_DIR"] = tempfile.mkdtemp(prefix="log-shuttle-state-")
    env.update(extra)
    return env


def wait_for(check, *, timeout: float = 20.0, interval: float = 0.05, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


class Agent:
    """``log-shuttle`` in a subprocess, its stdout and stderr captured in files."""

    def __init__(self, tmp: Path, *args: str, env: dict[str, str] | None = None,
                 state_dir: Path | None = None) -> None:
        self.stdout_path = tmp / "agent.stdout"
        self.stderr_path = tmp / "agent.stderr"
        self._out = open(self.stdout_path, "wb")
        self._err = open(self.stderr_path, "wb")
        self.state_dir = state_dir or tmp / "state"
        env = env or agent_env()
        env["LOG_SHUTTLE_AGENT__STATE_DIR"] = str(self.state_dir)
        self.proc = subprocess.Popen(agent_command(*args), stdout=self._out, stderr=self._err,
                                     stdin=subprocess.DEVNULL, env=env,
                                     cwd=ROOT, start_new_session=True)
        SESSIONS.add(self.proc.pid)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stdout(self) -> bytes:
        return self.stdout_path.read_bytes()

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def records(self) -> list[dict]:
        """The NDJSON records written so far (a line still being written is left out)."""
        data = self.stdout()
        return [json.loads(line) for line in complete_lines(data)]

    def wait_records(self, n: int, *, timeout: float = 20.0) -> list[dict]:
        def enough():
            data = self.stdout()
            if data.count(b"\n") >= n:
                return self.records()
            if self.proc.poll() is not None:
                raise AssertionError(f"agent exited {self.proc.returncode}: {self.stderr()}")
            return None
        return wait_for(enough, timeout=timeout, what=f"{n} records on stdout")

    def children(self) -> dict[str, int]:
        """Process title -> pid of the supervisor's children."""
        return wait_for(self._children, what="the agent's children", timeout=20)

    def _children(self) -> dict[str, int] | None:
        titles = {}
        try:
            with open(f"/proc/{self.pid}/task/{self.pid}/children") as f:
                pids = [int(p) for p in f.read().split()]
        except OSError:
            return None
        for pid in pids:
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    titles[f.read().split(b"\0")[0].decode()] = pid
            except OSError:
                continue
        # A child that has just been forked still has the supervisor's title: not ready yet.
        named = titles and all(t.startswith("log-shuttle: ") and t != "log-shuttle: supervisor"
                               for t in titles)
        return titles if named else None

    def stop(self, sig: int = signal.SIGTERM, *, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            self.close()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._out.close()
        self._err.close()

    def __enter__(self) -> Agent:
        return self

    def __exit__(self, *exc) -> None:
        if self.proc.poll() is None:
            self.stop()
        self.close()


def complete_lines(data: bytes) -> list[bytes]:
    """The whole lines of ``data``: a file read while it is written may end inside a line."""
    return data[: data.rfind(b"\n") + 1].splitlines()


def append(path: Path, data: bytes) -> None:
    with open(path, "ab") as f:
        f.write(data)


def sync(agent: Agent, path: Path) -> int:
    """Append marker lines until one comes out: from then on the agent follows ``path``.
    Returns the number of records seen by then."""
    for i in range(200):
        append(path, f"sync {i}\n".encode())
        try:
            recs = agent.wait_records(1, timeout=0.3)
        except AssertionError:
            continue
        if any(r["line"].startswith("sync ") for r in recs):
            return len(recs)
    raise AssertionError("the agent never picked the file up")


def lines_of(recs: list[dict], path: Path) -> list[str]:
    return [r["line"] for r in recs if r["path"] == str(path) and not r["line"].startswith("sync ")]


def resident_kib(prefixes: str | tuple[str, ...]) -> int:
    """Resident KiB of this process's mappings of files whose name starts with ``prefixes``
    (/proc/self/smaps; a path may hold spaces)."""
    total, mine = 0, False
    with open("/proc/self/smaps") as f:
        for line in f:
            head = line.split(maxsplit=5)
            if not head[0].endswith(":") and "-" in head[0]:
                mine = len(head) >= 6 and os.path.basename(head[5].rstrip()).startswith(prefixes)
            elif mine and head[0] == "Rss:":
                total += int(head[1])
    return total
