"""The whole agent through its real command line: real processes, files and shared memory."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.harness import (SESSIONS, Agent, agent_command, agent_env, append, lines_of, sync,
                           wait_for)


def test_lines_arrive_exactly_once_and_in_order(tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    a = logs / "a.log"
    a.write_bytes(b"present before start: not read\n")
    with Agent(tmp_path, "--input-file", str(logs / "*.log")) as agent:
        base = sync(agent, a)
        append(a, b"first\n\nsecond half")            # an empty line and a partial one
        time.sleep(0.5)                               # the partial is held meanwhile
        append(a, b"-done\ninvalid \xff\xfe utf-8\n")
        b = logs / "b.log"                            # a file that appears after start
        b.write_bytes(b"from the start of b\nb2\n")
        append(a, "last é\n".encode())
        recs = agent.wait_records(base + 7)
        assert agent.stop() == 0
    recs = agent.records()
    assert lines_of(recs, a) == ["first", "", "second half-done", "invalid \ufffd\ufffd utf-8",
                                 "last é"]
    assert lines_of(recs, b) == ["from the start of b", "b2"]
    assert not any("not read" in r["line"] for r in recs)
    bad = [r for r in recs if r["line"].startswith("invalid")]
    assert bad[0]["invalid_utf8"] is True
    assert all("invalid_utf8" not in r for r in recs if r is not bad[0])
    # offsets are byte offsets in the file
    data = a.read_bytes()
    for r in recs:
        if r["path"] == str(a):
            raw = data[r["offset"]:].split(b"\n", 1)[0]
            assert raw.decode("utf-8", "replace") == r["line"]
    for r in recs:
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z", r["time"])
        assert r["host"] == os.uname().nodename


def test_a_3_mib_line_arrives_as_flagged_pieces_that_join_back(tmp_path):
    p = tmp_path / "big.log"
    long_line = "".join(f"{i:07d}é" for i in range(3 * 1024 * 1024 // 9))
    p.write_bytes(b"before\n" + long_line.encode() + b"\nafter\n")
    with Agent(tmp_path, "--input-file", str(p), "--from-beginning") as agent:
        wait_for(lambda: b'"line":"after"' in agent.stdout(), what="the line after")
        assert agent.stop() == 0
    recs = agent.records()
    assert recs[0]["line"] == "before" and recs[-1]["line"] == "after"
    pieces = recs[1:-1]
    assert len(pieces) >= 3
    assert [r["piece"] for r in pieces] == list(range(len(pieces)))
    assert [r["last_piece"] for r in pieces] == [False] * (len(pieces) - 1) + [True]
    assert all(len(r["line"].encode()) <= 1024 * 1024 for r in pieces)
    assert "".join(r["line"] for r in pieces) == long_line
    assert pieces[0]["offset"] == 7


def test_text_format_and_a_config_file(tmp_path):
    p = tmp_path / "app.log"
    p.write_text("one\ntwo\n")
    cfg = tmp_path / "agent.toml"
    cfg.write_text(f'[[inputs.file]]\npaths = ["{p}"]\nfrom_beginning = true\n'
                   '[outputs.stdout]\nformat = "text"\n')
    with Agent(tmp_path, "--config", str(cfg)) as agent:
        wait_for(lambda: agent.stdout().count(b"\n") >= 2, what="two text lines")
        assert agent.stop() == 0
    lines = agent.stdout().decode().splitlines()
    assert [ln.split(" ", 2)[2] for ln in lines] == [f"{p}:0 one", f"{p}:4 two"]


def test_one_process_per_role_with_readable_titles(tmp_path):
    p = tmp_path / "a.log"
    p.touch()
    with Agent(tmp_path, "--input-file", str(p)) as agent:
        titles = agent.children()
        assert sorted(titles) == ["log-shuttle: input file", "log-shuttle: output stdout",
                                  "log-shuttle: pipeline"]
        with open(f"/proc/{agent.pid}/cmdline", "rb") as f:
            assert f.read().split(b"\0")[0] == b"log-shuttle: supervisor"
        assert agent.stop() == 0
    assert "Traceback" not in agent.stderr()


def test_closed_stdout_ends_the_agent_quietly(tmp_path):
    p = tmp_path / "a.log"
    p.write_bytes(b"".join(b"line %d\n" % i for i in range(50_000)))
    proc = subprocess.Popen(agent_command("--input-file", str(p), "--from-beginning"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=agent_env())
    first = [proc.stdout.readline() for _ in range(5)]  # like `| head -n 5`
    proc.stdout.close()
    try:
        code = proc.wait(timeout=30)
    finally:
        err = proc.stderr.read().decode()
        proc.stderr.close()
    assert all(b'"line":"line ' in ln for ln in first)
    assert code == 0, err
    assert "Traceback" not in err and "Error" not in err


def test_sigterm_drains_every_line_read(tmp_path):
    p = tmp_path / "a.log"
    n = 300_000
    p.write_bytes(b"".join(b"%07d some text to make a line of realistic length\n" % i
                           for i in range(n)))
    with Agent(tmp_path, "--input-file", str(p), "--from-beginning", "--log-level", "debug") as agent:
        agent.wait_records(1000)
        code = agent.stop(signal.SIGTERM)
    assert code == 0, agent.stderr()
    recs = agent.records()
    read = int(re.search(r"'lines_read': (\d+)", agent.stderr()).group(1))
    assert len(recs) == read  # everything the input had read reached stdout
    assert [int(r["line"][:7]) for r in recs] == list(range(len(recs)))  # in order, no gap


def test_sigint_drains_like_sigterm(tmp_path):
    p = tmp_path / "a.log"
    p.write_bytes(b"".join(b"%07d\n" % i for i in range(100_000)))
    with Agent(tmp_path, "--input-file", str(p), "--from-beginning", "--log-level", "debug") as agent:
        agent.wait_records(100)
        os.killpg(agent.pid, signal.SIGINT)  # Ctrl-C: the terminal signals the whole group
        code = agent.proc.wait(timeout=30)
    assert code == 0, agent.stderr()
    read = int(re.search(r"'lines_read': (\d+)", agent.stderr()).group(1))
    assert len(agent.records()) == read


def test_a_second_ctrl_c_kills_what_is_left_and_exits_1(tmp_path):
    p = tmp_path / "a.log"
    p.write_bytes(b"".join(b"line %d padded to be long enough to fill pipes\n" % i
                           for i in range(200_000)))
    err_path = tmp_path / "agent.stderr"
    # stdout is a pipe nobody reads: the output blocks, so the first Ctrl-C's drain cannot end
    # before the deadline (60 s): only the second Ctrl-C ends it.
    with open(err_path, "wb") as err:
        proc = subprocess.Popen(agent_command("--input-file", str(p), "--from-beginning",
                                              "--drain-timeout", "60"),
                                stdout=subprocess.PIPE, stderr=err, env=agent_env(),
                                start_new_session=True)
    SESSIONS.add(proc.pid)
    try:
        proc.stdout.read(1)  # it has started writing
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C: the terminal signals the whole group
        wait_for(lambda: "interrupted: draining" in err_path.read_text(), what="the first drain")
        time.sleep(0.3)
        assert proc.poll() is None  # still draining, stuck on stdout
        os.killpg(proc.pid, signal.SIGINT)
        code = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
    err = err_path.read_text()
    assert code == 1, err
    assert "a second interrupt" in err and "output stdout" in err
    assert "Traceback" not in err


class Writer(threading.Thread):
    """Appends sequence-numbered lines at a steady pace until stopped."""

    def __init__(self, path: Path, rate: int = 2000) -> None:
        super().__init__(daemon=True)
        self.path, self.rate = path, rate
        self.seq = 0
        self.halt = threading.Event()

    def run(self) -> None:
        with open(self.path, "ab", buffering=0) as f:
            while not self.halt.is_set():
                chunk = b"".join(b"seq %08d\n" % (self.seq + i) for i in range(20))
                f.write(chunk)
                self.seq += 20
                time.sleep(20 / self.rate)

    def stop(self) -> None:
        self.halt.set()
        self.join()


def seqs(agent: Agent) -> list[int]:
    return [int(r["line"][4:]) for r in agent.records() if r["line"].startswith("seq ")]


def test_sigkill_of_each_child_is_recovered(tmp_path):
    p = tmp_path / "a.log"
    p.touch()
    writer = Writer(p)
    with Agent(tmp_path, "--input-file", str(p), "--log-level", "info") as agent:
        agent.children()
        writer.start()
        try:
            wait_for(lambda: seqs(agent), what="first lines")
            input_down = None
            for role in ("output stdout", "pipeline", "input file"):
                title = f"log-shuttle: {role}"
                old = agent.children()[title]
                if role == "input file":
                    input_down = writer.seq
                os.kill(old, signal.SIGKILL)
                wait_for(lambda: agent.children().get(title, old) != old, what=f"{role} restarted")
                mark = writer.seq
                wait_for(lambda: any(s > mark for s in seqs(agent)), what=f"lines after {role}")
                input_up = mark if role == "input file" else None
        finally:
            writer.stop()
        last = writer.seq - 1
        wait_for(lambda: last in seqs(agent), what="the last line")
        assert agent.stop() == 0
    got = seqs(agent)
    missing = sorted(set(range(got[0], last + 1)) - set(got))
    # A killed pipeline or output loses nothing: its successor reads the uncommitted batches
    # again. A killed file input restarts at the end of the file (until checkpoints land):
    # what was written while it was down is the only gap allowed, and it is one range.
    assert all(input_down - 2000 <= s <= input_up for s in missing), (missing[:5], missing[-5:])
    if missing:
        assert missing == list(range(missing[0], missing[-1] + 1))
    assert "killed by SIGKILL; restarting" in agent.stderr()
    # Lines come in order, apart from a batch an output wrote again after a kill.
    assert got[-1] == last


def test_a_child_that_cannot_start_stops_the_agent(tmp_path):
    # What only the running machine shows stops the agent from the child that found it:
    # here a checkpoint file that is a directory (the configuration cannot know it).
    state = tmp_path / "state"
    (state / "file-file.checkpoints").mkdir(parents=True)
    log = tmp_path / "a.log"
    log.touch()
    env = agent_env(LOG_SHUTTLE_AGENT__STATE_DIR=str(state))
    r = subprocess.run(agent_command("--input-file", str(log), "--log-level", "debug"),
                       capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 3
    assert r.stderr.count("file-file.checkpoints: Is a directory") == 1
    assert r.stderr.count("started input file") == 1  # no restart loop
    assert "Traceback" not in r.stderr
    assert r.stdout == ""


def test_a_directory_as_the_input_file_is_refused_before_any_process_starts(tmp_path):
    r = subprocess.run(agent_command("--input-file", str(tmp_path), "--log-level", "debug"),
                       capture_output=True, text=True, env=agent_env(), timeout=60)
    assert r.returncode == 2
    assert (f"inputs.file[0].paths[0]: {tmp_path} is a directory, not a file: to follow the files "
            f"in it, give a glob such as '{tmp_path}/*.log'") in r.stderr
    assert "started" not in r.stderr and "supervisor" not in r.stderr
    assert r.stdout == ""


@pytest.mark.parametrize("content", [b"", b"no newline at all"])
def test_nothing_is_printed_for_nothing(tmp_path, content):
    p = tmp_path / "a.log"
    p.write_bytes(content)
    with Agent(tmp_path, "--input-file", str(p), "--from-beginning") as agent:
        agent.children()
        time.sleep(0.5)
        assert agent.stop() == 0
    assert agent.stdout() == b""


def test_drain_deadline_kills_a_stuck_output(tmp_path):
    p = tmp_path / "a.log"
    p.write_bytes(b"".join(b"line %d padded to be long enough to fill pipes\n" % i
                           for i in range(200_000)))
    # stdout is a pipe nobody reads: the output blocks, the drain cannot finish.
    proc = subprocess.Popen(agent_command("--input-file", str(p), "--from-beginning",
                                          "--drain-timeout", "1"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=agent_env())
    try:
        proc.stdout.read(1)  # it has started writing
        time.sleep(0.5)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
        took = time.monotonic() - t0
        err = proc.stderr.read().decode()
    finally:
        proc.stdout.close()
        proc.stderr.close()
    assert code == 1, err
    assert "the drain deadline passed" in err and "output stdout" in err
    assert took >= 0.9


def test_polling_mode_and_several_input_flags(tmp_path):
    a, b = tmp_path / "a.log", tmp_path / "sub" / "b.txt"
    cfg = tmp_path / "agent.toml"
    cfg.write_text(f'[[inputs.file]]\npaths = ["{a}", "{tmp_path}/sub/*.txt"]\nwatch = "poll"\n'
                   "poll_interval = 0.05\nglob_interval = 0.2\n")
    with Agent(tmp_path, "--config", str(cfg)) as agent:
        a.touch()
        base = sync(agent, a)
        b.parent.mkdir()
        b.write_text("in a directory that did not exist at start\n")
        append(a, b"polled\n")
        recs = agent.wait_records(base + 2)
        assert agent.stop() == 0
    assert lines_of(recs, a) == ["polled"]
    assert lines_of(recs, b) == ["in a directory that did not exist at start"]
    x, y = tmp_path / "x.log", tmp_path / "y.log"
    x.write_text("x1\n")
    y.write_text("y1\n")
    with Agent(tmp_path, "-f", str(x), "--input-file", str(y), "--from-beginning") as agent:
        recs = agent.wait_records(2)
        assert agent.stop() == 0
    assert sorted(r["line"] for r in recs) == ["x1", "y1"]


def test_rotation_by_rename_reads_the_old_file_to_its_end(tmp_path):
    p = tmp_path / "app.log"
    p.touch()
    with Agent(tmp_path, "--input-file", str(p)) as agent:
        base = sync(agent, p)
        append(p, b"before rotation\n")
        with open(p, "ab") as old:
            p.rename(tmp_path / "app.log.1")
            p.write_bytes(b"new file\n")
            old.write(b"late write to the old file\n")  # the writer has not reopened yet
        recs = agent.wait_records(base + 3)
        assert agent.stop() == 0
    lines = [r["line"] for r in recs if not r["line"].startswith("sync")]
    assert sorted(lines) == ["before rotation", "late write to the old file", "new file"]


def test_a_stop_during_start_up_is_a_clean_stop(tmp_path):
    p = tmp_path / "a.log"
    p.write_text("x\n")
    for i in range(3):
        with Agent(tmp_path / f"r{i}" if (tmp_path / f"r{i}").mkdir() is None else tmp_path,
                   "--input-file", str(p)) as agent:
            # As soon as the supervisor has its title (signals are held from then on), before
            # its children exist or its handlers are installed.
            wait_for(lambda: open(f"/proc/{agent.pid}/cmdline", "rb").read().startswith(
                b"log-shuttle: supervisor"), interval=0.001, what="the supervisor's title")
            assert agent.stop() == 0, agent.stderr()
        assert "Traceback" not in agent.stderr()


@pytest.mark.skipif(os.geteuid() != 0, reason="runs the agent as another user: needs root "
                                              "(CI runs tests as root)")
def test_an_unreadable_file_is_said_so_then_shipped_once_it_can_be_read():
    """As an unprivileged user, a file it may not read: the agent says it cannot open it and
    will retry (not that no file matches), and ships it once its mode lets it."""
    import shutil
    import tempfile

    shared = Path(tempfile.mkdtemp(prefix="log-shuttle-e2e-"))
    shared.chmod(0o777)
    log = shared / "secret.log"
    log.write_text("first\n")
    log.chmod(0o600)  # root's
    out, err = shared / "out", shared / "err"
    nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all"]
    with open(out, "wb") as o, open(err, "wb") as e:
        proc = subprocess.Popen([*nobody, *agent_command("-f", str(log), "--from-beginning",
                                                        "--state-dir", str(shared / "state"))],
                                stdout=o, stderr=e, env=agent_env(), stdin=subprocess.DEVNULL,
                                start_new_session=True)
    try:
        wait_for(lambda: "cannot open" in err.read_text() or proc.poll() is not None,
                 timeout=60, what="the agent saying it cannot open the file")
        text = err.read_text()
        assert "Permission denied (will retry)" in text and "no file matches" not in text, text
        log.chmod(0o644)
        wait_for(lambda: b'"line":"first"' in out.read_bytes() or proc.poll() is not None,
                 timeout=60, what="the line once the file can be read")
        assert proc.poll() is None, err.read_text()
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            assert proc.wait(timeout=30) == 0
        finally:
            shutil.rmtree(shared)
