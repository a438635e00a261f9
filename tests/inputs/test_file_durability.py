"""No line lost, none repeated: rotation (the real logrotate), truncation, deletion, inode reuse,
restarts from checkpoints, and kill -9 of every process, with a sequence-numbered writer."""

from __future__ import annotations

import collections
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.harness import (ROOT, SESSIONS, Agent, append, complete_lines, lines_of, sync,
                           wait_for)

WRITER = ROOT / "tests" / "writer.py"
LOGROTATE = "/usr/sbin/logrotate"
needs_logrotate = pytest.mark.skipif(not os.path.exists(LOGROTATE),
                                     reason="logrotate is not installed (scripts/setup installs it)")


def seqs_in(data: bytes) -> list[int]:
    out = []
    for line in complete_lines(data):  # the agent may be writing the last one
        rec = json.loads(line)
        m = re.match(r"seq (\d{8}) ", rec["line"])
        if m:
            out.append(int(m.group(1)))
    return out


def config(tmp: Path, paths: list[str], **extra) -> Path:
    body = [f"paths = {json.dumps(paths)}", "glob_interval = 0.2", "checkpoint_interval = 0.2"]
    body += [f"{k} = {json.dumps(v)}" for k, v in extra.items()]
    cfg = tmp / "agent.toml"
    cfg.write_text("[[inputs.file]]\n" + "\n".join(body) + "\n")
    return cfg


def start_writer(path: Path, count: int, rate: float) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(WRITER), str(path), str(count), str(rate)])


def test_a_restart_resumes_where_the_outputs_stopped(tmp_path):
    log = tmp_path / "app.log"
    log.write_bytes(b"".join(b"seq %08d a\n" % i for i in range(1000)))
    state = tmp_path / "state"
    cfg = config(tmp_path, [str(log)])
    run1 = tmp_path / "run1"
    run1.mkdir()
    with Agent(run1, "--config", str(cfg), "--from-beginning", state_dir=state) as agent:
        agent.wait_records(1000)
        assert agent.stop() == 0
    append(log, b"".join(b"seq %08d b\n" % i for i in range(1000, 1500)))  # while it is down
    run2 = tmp_path / "run2"
    run2.mkdir()
    with Agent(run2, "--config", str(cfg), "--from-beginning", state_dir=state) as agent:
        agent.wait_records(500)
        time.sleep(0.5)
        assert agent.stop() == 0
    assert seqs_in(agent.stdout()) == list(range(1000, 1500))  # no line again, none missed


def _env(extra: dict[str, str]) -> dict[str, str]:
    from tests.harness import agent_env

    env = agent_env()
    env.update(extra)
    return env


def run_agent(tmp: Path, state: Path, *args: str) -> subprocess.Popen:
    from tests.harness import agent_command

    env = _env({"LOG_SHUTTLE_AGENT__STATE_DIR": str(state)})
    out = open(tmp, "wb")
    err = open(f"{tmp}.stderr", "wb")
    proc = subprocess.Popen(agent_command(*args), stdout=out, stderr=err,
                            env=env, cwd=ROOT, start_new_session=True)
    SESSIONS.add(proc.pid)
    out.close()
    err.close()
    return proc


def started(proc: subprocess.Popen) -> None:
    """Wait until the agent is up (its supervisor has its title and holds its signals): a
    SIGTERM before that finds Python still starting, and ends it as any program."""
    wait_for(lambda: open(f"/proc/{proc.pid}/cmdline", "rb").read().startswith(
        b"log-shuttle: supervisor"), interval=0.005, what="the agent up")


def final_run(tmp_path: Path, state: Path, cfg: Path, outs: list[Path], total: int) -> None:
    """After the kill rounds: start the agent once more on the same state, until every sequence
    number has come out in one run or another, then stop it cleanly."""
    out = tmp_path / "final.ndjson"
    outs.append(out)
    proc = run_agent(out, state, "--config", str(cfg), "--from-beginning")
    try:
        started(proc)
        wait_for(lambda: set(range(total)) <= {s for o in outs for s in seqs_in(o.read_bytes())},
                 timeout=60, what="every line after the final restart")
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0


def test_kill_9_of_every_process_loses_no_line(tmp_path):
    """Rounds of: start the agent, let it run a random while, SIGKILL its whole process group.
    Every sequence number must come out at least once over all rounds; duplicates only from
    what was in flight when the agent was killed."""
    log = tmp_path / "app.log"
    state = tmp_path / "state"
    cfg = config(tmp_path, [str(log)])
    total, rate = 60_000, 6_000
    writer = start_writer(log, total, rate)
    rng = random.Random(7)
    outs = []
    try:
        for i in range(8):
            out = tmp_path / f"round{i}.ndjson"
            outs.append(out)
            proc = run_agent(out, state, "--config", str(cfg), "--from-beginning")
            time.sleep(rng.uniform(0.4, 1.5))
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    finally:
        writer.wait(timeout=60)
    final_run(tmp_path, state, cfg, outs, total)
    got = [s for o in outs for s in seqs_in(o.read_bytes())]
    counts = collections.Counter(got)
    missing = [s for s in range(total) if s not in counts]
    assert not missing, f"{len(missing)} lost, first {missing[:10]}"
    dups = sum(c - 1 for c in counts.values())
    # In flight at a kill: at most what the writer wrote in a checkpoint interval plus a batch
    # timer plus the time a kill takes to land, about 1 s at 6,000 lines/s, per kill.
    assert dups <= 8 * rate * 1.0, dups
    print(f"kill -9 x8: {total} lines, 0 lost, {dups} duplicates")


@needs_logrotate
def test_kill_9_during_a_logrotate_storm_loses_no_line(tmp_path):
    """Rotation (create) every 0.4 s while the agent is SIGKILLed at random moments and started
    again. The rotated names match the input's paths, so a file rotated while the agent was
    down is found again by its identity and resumed at its checkpoint."""
    logs = tmp_path / "logs"
    logs.mkdir()
    log = logs / "app.log"
    log.touch()
    conf = tmp_path / "logrotate.conf"
    conf.write_text(f"{log} {{\n  rotate 1000\n  missingok\n  create\n}}\n")
    state = tmp_path / "state"
    cfg = config(tmp_path, [str(logs / "app.log*")], rotate_wait=1.0)
    total, rate = 40_000, 5_000
    writer = start_writer(log, total, rate)
    rng = random.Random(11)
    outs, i = [], 0
    rotations = 0
    try:
        while writer.poll() is None or i < 3:
            out = tmp_path / f"round{i}.ndjson"
            outs.append(out)
            proc = run_agent(out, state, "--config", str(cfg), "--from-beginning")
            deadline = time.monotonic() + rng.uniform(0.5, 1.5)
            while time.monotonic() < deadline:
                time.sleep(0.4)
                subprocess.run([LOGROTATE, "-f", "-s", str(tmp_path / "lr.state"), str(conf)],
                               check=True, capture_output=True)
                rotations += 1
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            i += 1
    finally:
        writer.wait(timeout=60)
    final_run(tmp_path, state, cfg, outs, total)
    counts = collections.Counter(s for o in outs for s in seqs_in(o.read_bytes()))
    dups = sum(c - 1 for c in counts.values())
    assert sorted(counts) == list(range(total))
    assert dups <= i * rate * 1.0, dups
    print(f"kill -9 x{i} during {rotations} rotations: {total} lines, 0 lost, {dups} duplicates")


def test_idle_files_are_closed_and_opened_again_on_change(tmp_path):
    log = tmp_path / "app.log"
    log.touch()
    cfg = config(tmp_path, [str(log)], close_idle_after=0.3)
    with Agent(tmp_path, "--config", str(cfg), "--log-level", "debug") as agent:
        base = sync(agent, log)
        pid = agent.children()["log-shuttle: input file"]
        wait_for(lambda: str(log) not in _open_files(pid), what="the idle file closed")
        append(log, b"after a nap\n")
        agent.wait_records(base + 1)
        assert str(log) in _open_files(pid)
        assert agent.stop() == 0
    assert lines_of(agent.records(), log) == ["after a nap"]
    assert re.search(r"'files_idle_closed': [1-9]", agent.stderr())


def test_ignore_older_leaves_old_files_alone_until_they_change(tmp_path):
    old, new = tmp_path / "old.log", tmp_path / "new.log"
    old.write_text("ancient line\n")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    cfg = config(tmp_path, [str(tmp_path / "*.log")], ignore_older=3600)
    with Agent(tmp_path, "--config", str(cfg), "--from-beginning") as agent:
        agent.children()
        new.write_text("fresh line\n")
        agent.wait_records(1)
        append(old, b"woken up\n")
        agent.wait_records(2)
        time.sleep(0.3)
        assert agent.stop() == 0
    assert sorted(r["line"] for r in agent.records()) == ["fresh line", "woken up"]


ROTATE_MODES = {
    "create": "create\n",
    "create-dateext": "create\ndateext\ndateformat -%Y%m%d-%H%M%S\n",
    "create-compress-delaycompress": "create\ncompress\ndelaycompress\n",
    "copytruncate": "copytruncate\n",
}


@needs_logrotate
@pytest.mark.parametrize("mode", sorted(ROTATE_MODES))
def test_logrotate_storm(tmp_path, mode):
    logs = tmp_path / "logs"
    logs.mkdir()
    log = logs / "app.log"
    log.touch()
    conf = tmp_path / "logrotate.conf"
    conf.write_text(f"{log} {{\n  rotate 1000\n  missingok\n  {ROTATE_MODES[mode]}}}\n")
    if mode == "copytruncate":
        # The copies must be visible to the input for it to read what the original had not sent.
        cfg = config(tmp_path, [str(logs / "app.log*")], exclude=["*.gz"], rotate_wait=2.0)
    else:
        cfg = config(tmp_path, [str(log)], rotate_wait=2.0)
    total, rate = 40_000, 8_000
    with Agent(tmp_path, "--config", str(cfg), "--from-beginning", "--log-level", "debug") as agent:
        agent.children()
        time.sleep(0.5)
        writer = start_writer(log, total, rate)
        rotations = 0
        try:
            while writer.poll() is None:
                time.sleep(1.05 if "dateext" in mode else 0.4)
                subprocess.run([LOGROTATE, "-f", "-s", str(tmp_path / "lr.state"), str(conf)],
                               check=True, capture_output=True)
                rotations += 1
        finally:
            writer.wait(timeout=60)
        on_disk = set()
        for p in logs.iterdir():
            if not p.name.endswith(".gz"):
                on_disk |= {int(m) for m in re.findall(rb"^seq (\d{8}) ", p.read_bytes(), re.M)}
        want = set(range(total)) if mode != "copytruncate" else on_disk
        wait_for(lambda: want <= set(seqs_in(agent.stdout())), timeout=60,
                 what=f"every line after {rotations} rotations")
        time.sleep(0.5)
        assert agent.stop() == 0
    counts = collections.Counter(seqs_in(agent.stdout()))
    assert rotations >= 4
    if mode == "copytruncate":
        # copytruncate itself loses what the writer wrote between logrotate's copy and its
        # truncate: those lines are in no file. Every line that is in a file must arrive.
        lost_by_copytruncate = total - len(on_disk)
        assert set(counts) >= on_disk
        dups = sum(c - 1 for c in counts.values())
        # A copy is read from where the original stopped; duplicates only if a copy is caught
        # half-written (at most a writer's chunk of 50 lines per rotation).
        assert dups <= rotations * 50, dups
        print(f"{mode}: {rotations} rotations, {lost_by_copytruncate} lines lost by "
              f"copytruncate itself, {dups} duplicates")
    else:
        assert sorted(counts) == list(range(total))
        assert max(counts.values()) == 1, [s for s, c in counts.items() if c > 1][:10]
        print(f"{mode}: {rotations} rotations, every line exactly once")


def test_inode_reuse_is_not_taken_for_the_old_file(tmp_path):
    log = tmp_path / "app.log"
    log.write_bytes(b"old file line %d\n" % 1 * 1 + b"".join(b"old %d\n" % i for i in range(100)))
    state = tmp_path / "state"
    cfg = config(tmp_path, [str(log)])
    (tmp_path / "r1").mkdir()
    with Agent(tmp_path / "r1", "--config", str(cfg), "--from-beginning", state_dir=state) as agent:
        agent.wait_records(101)
        assert agent.stop() == 0
    old_ino = log.stat().st_ino
    log.unlink()
    new = b"".join(b"new %d\n" % i for i in range(5))   # shorter than the old offset
    log.write_bytes(new)
    reused = log.stat().st_ino == old_ino
    (tmp_path / "r2").mkdir()
    with Agent(tmp_path / "r2", "--config", str(cfg), "--from-beginning", state_dir=state) as agent:
        agent.wait_records(5)
        time.sleep(0.3)
        assert agent.stop() == 0
    assert [r["line"] for r in agent.records()] == [f"new {i}" for i in range(5)], reused


def test_truncation_in_place_and_rewrite(tmp_path):
    log = tmp_path / "app.log"
    log.touch()
    cfg = config(tmp_path, [str(log)])
    with Agent(tmp_path, "--config", str(cfg)) as agent:
        base = sync(agent, log)
        append(log, b"before truncation\n" * 3)
        agent.wait_records(base + 3)
        with open(log, "r+b") as f:                  # truncate in place, then write less
            f.truncate(0)
        append(log, b"after\n")
        agent.wait_records(base + 4)
        # Rewritten past the old position: the size alone cannot tell, the fingerprint does.
        size = log.stat().st_size
        log.write_bytes(b"".join(b"rewritten %03d\n" % i for i in range(size // 8 + 5)))
        n = size // 8 + 5
        agent.wait_records(base + 4 + n)
        assert agent.stop() == 0
    lines = lines_of(agent.records(), log)
    assert lines[:4] == ["before truncation"] * 3 + ["after"]
    assert lines[4:] == [f"rewritten {i:03d}" for i in range(n)]
    assert "was truncated" in agent.stderr()


def test_deleted_file_is_read_to_its_end_then_let_go(tmp_path):
    log = tmp_path / "app.log"
    log.touch()
    cfg = config(tmp_path, [str(log)], rotate_wait=0.3)
    with Agent(tmp_path, "--config", str(cfg), "--log-level", "debug") as agent:
        base = sync(agent, log)
        with open(log, "ab") as f:
            f.write(b"".join(b"seq %08d doomed\n" % i for i in range(20_000)))
            log.unlink()                               # deleted before the agent read it
        agent.wait_records(base + 20_000)
        pid = agent.children()["log-shuttle: input file"]
        wait_for(lambda: f"{log} (deleted)" not in _open_files(pid), what="the deleted file let go")
        assert agent.stop() == 0
    assert sorted(seqs_in(agent.stdout())) == list(range(20_000))
    assert re.search(r"'files_deleted': 1\b", agent.stderr())
    assert re.search(r"'bytes_unread': 0\b", agent.stderr())


def _open_files(pid: int) -> list[str]:
    out = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            out.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except OSError:
            pass
    return out


def test_500_files_written_at_once(tmp_path):
    d = tmp_path / "many"
    d.mkdir()
    cfg = config(tmp_path, [str(d / "*.log")])
    with Agent(tmp_path, "--config", str(cfg)) as agent:
        agent.children()
        time.sleep(0.5)
        for i in range(500):
            (d / f"f{i:03d}.log").write_bytes(b"".join(b"f%03d line %d\n" % (i, j)
                                                       for j in range(100)))
        agent.wait_records(50_000, timeout=120)
        time.sleep(0.5)
        assert agent.stop() == 0
    recs = agent.records()
    assert len(recs) == 50_000
    per_file = collections.defaultdict(list)
    for r in recs:
        per_file[r["path"]].append(r["line"])
    assert len(per_file) == 500
    for path, lines in per_file.items():
        i = int(Path(path).stem[1:])
        assert lines == [f"f{i:03d} line {j}" for j in range(100)]


def test_container_formats_through_the_agent(tmp_path):
    cri = tmp_path / "cri.log"
    cri.write_bytes(b"2026-11-25T10:00:00.000000001Z stdout P part 1 \n"
                    b"2026-11-25T10:00:00.5Z stderr F oops\n"
                    b"2026-11-25T10:00:01Z stdout F and the end\n")
    cfg = config(tmp_path, [str(cri)], format="cri")
    with Agent(tmp_path, "--config", str(cfg), "--from-beginning") as agent:
        recs = agent.wait_records(2)
        time.sleep(0.3)
        assert agent.stop() == 0
    recs = agent.records()
    assert [(r["line"], r["stream"], r["log_time"], r["offset"]) for r in recs] == [
        ("oops", "stderr", "2026-11-25T10:00:00.500000000Z", 48),
        ("part 1 and the end", "stdout", "2026-11-25T10:00:00.000000001Z", 0)]


def test_a_damaged_checkpoint_file_loses_nothing(tmp_path):
    log = tmp_path / "app.log"
    other = tmp_path / "other.log"
    log.write_bytes(b"".join(b"seq %08d a\n" % i for i in range(100)))
    other.write_bytes(b"o1\no2\n")
    state = tmp_path / "state"
    cfg = config(tmp_path, [str(log), str(other)])
    (tmp_path / "r1").mkdir()
    with Agent(tmp_path / "r1", "--config", str(cfg), "--from-beginning", state_dir=state) as agent:
        agent.wait_records(102)
        assert agent.stop() == 0
    ckpt = state / "file-file.checkpoints"
    lines = ckpt.read_bytes().splitlines(keepends=True)
    assert len(lines) == 3                                   # header and two files
    kept = [ln for ln in lines if b"other.log" not in ln]
    cut = [ln for ln in lines if b"other.log" in ln][0]
    ckpt.write_bytes(b"".join(kept) + cut[: len(cut) // 2])  # a write cut in the middle
    append(log, b"seq 00000100 a\n")
    (tmp_path / "r2").mkdir()
    with Agent(tmp_path / "r2", "--config", str(cfg), "--from-beginning", state_dir=state) as agent:
        agent.wait_records(3)
        time.sleep(0.3)
        assert agent.stop() == 0
    lines2 = sorted(r["line"] for r in agent.records())
    # app.log's entry survived: only its new line; other.log's was cut: read again, not lost.
    assert lines2 == ["o1", "o2", "seq 00000100 a"]
    assert "damaged line(s) skipped" in agent.stderr()


def test_an_unusable_state_directory_stops_the_agent(tmp_path):
    log = tmp_path / "a.log"
    log.touch()
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    env = _env({"LOG_SHUTTLE_AGENT__STATE_DIR": str(blocker / "state")})
    from tests.harness import agent_command

    r = subprocess.run(agent_command("--input-file", str(log)), capture_output=True, text=True,
                       env=env, timeout=60)
    assert r.returncode == 2  # refused by the configuration's check, before any process
    assert (f"agent.state_dir: {blocker / 'state'} cannot be made: {blocker} is a file, not a "
            f"directory") in r.stderr
    assert "supervisor" not in r.stderr
    assert "Traceback" not in r.stderr
