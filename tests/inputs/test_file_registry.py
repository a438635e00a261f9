"""The file registry on its own, with real files in temporary directories: what it reports for
new, renamed, rotated, copied (copytruncate), truncated, deleted and replaced files, checkpoints
matched by identity and fingerprint, and the descriptor budget (files closed and opened in turn,
fairly, never more open than the budget)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from inputs.file.config import FileInputConfig
from common.events import UNTERMINATED
from inputs.file.changes import (Closed, Followed, Forgotten, Opened, Released, Renamed, Rotated,
                                 Truncated)
from inputs.file.checkpoint import Entry
from inputs.file.fingerprint import Fingerprint
from inputs.file.paths import Globber
from inputs.file.registry import Registry
from inputs.file.tailer import TailedFile


def make(tmp: Path, pattern: str, *, max_open: int = 0, restored=None, first_start=False,
         **options) -> Registry:
    cfg = FileInputConfig(paths=[str(tmp / pattern)], **options)
    return Registry(cfg=cfg, globber=Globber(cfg.paths), restored=restored,
                    first_start=first_start, max_open=max_open)


@pytest.fixture
def registries():
    made: list[Registry] = []
    yield made
    for r in made:
        r.close_all()


def kinds(changes) -> list[str]:
    return [type(c).__name__ for c in changes]


def read_all(f: TailedFile) -> bytes:
    """Everything readable from f now, as the runner would read it."""
    out = b""
    while True:
        events, n = f.read(1 << 16, max_line=1 << 20, now_ns=1)
        out += b"".join(e.data for e in events)
        if n == 0:
            return out


def lines(prefix: str, n: int, start: int = 0) -> bytes:
    return b"".join(b"%s line %04d with some padding to be long\n" % (prefix.encode(), i)
                    for i in range(start, start + n))


def open_paths() -> list[str]:
    out = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            out.append(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            pass
    return out


def test_new_files_are_followed_from_their_start_or_end(tmp_path, registries):
    (tmp_path / "a.log").write_bytes(lines("a", 3))
    first = make(tmp_path, "*.log", first_start=True)
    registries.append(first)
    changes = first.scan(now=0, initial=True)
    assert kinds(changes) == ["Followed"]
    assert changes[0].why == "new" and changes[0].file.offset == os.path.getsize(tmp_path / "a.log")
    again = make(tmp_path, "*.log", first_start=True, from_beginning=True)
    registries.append(again)
    assert again.scan(now=0, initial=True)[0].file.offset == 0
    # After the very first start, a file found later is new as a whole.
    (tmp_path / "b.log").write_bytes(lines("b", 2))
    changes = first.scan(now=1)
    assert [(type(c).__name__, c.file.path, c.file.offset) for c in changes] == [
        ("Followed", str(tmp_path / "b.log"), 0)]
    assert first.scan(now=2) == []


def test_a_checkpoint_resumes_only_the_same_file(tmp_path, registries):
    log = tmp_path / "app.log"
    log.write_bytes(lines("old", 10))
    st = os.stat(log)
    fp = Fingerprint.of_bytes(log.read_bytes())
    entry = Entry(st.st_dev, st.st_ino, fp, str(log), 123)
    r = make(tmp_path, "app.log", restored={(st.st_dev, st.st_ino): entry})
    registries.append(r)
    changes = r.scan(now=0, initial=True)
    assert [(c.why, c.file.offset) for c in changes] == [("resumed", 123)]
    r.close_all()
    # Same (device, inode), other first bytes: the inode was reused by another file.
    log.write_bytes(lines("new", 10))
    assert os.stat(log).st_ino == st.st_ino
    r2 = make(tmp_path, "app.log", restored={(st.st_dev, st.st_ino): entry})
    registries.append(r2)
    changes = r2.scan(now=0, initial=True)
    assert [(c.why, c.file.offset) for c in changes] == [("new", 0)]
    assert r2.restored == {}


def test_rotation_by_rename_within_the_glob_keeps_the_position(tmp_path, registries):
    log = tmp_path / "app.log"
    log.write_bytes(lines("one", 5))
    r = make(tmp_path, "app.log*")
    registries.append(r)
    f = r.scan(now=0)[0].file
    assert read_all(f) == lines("one", 5)
    os.rename(log, tmp_path / "app.log.1")
    log.write_bytes(lines("two", 2))
    changes = r.scan(now=1)
    assert kinds(changes) == ["Renamed", "Followed"]
    assert changes[0] == Renamed(f, str(log)) and f.path == str(tmp_path / "app.log.1")
    assert f.read_pos == len(lines("one", 5))         # not read again
    assert changes[1].file.path == str(log) and changes[1].file.offset == 0


def test_rotation_by_rename_out_of_the_glob_detaches_then_releases(tmp_path, registries):
    log = tmp_path / "app.log"
    log.write_bytes(lines("one", 5) + b"no newline yet")
    r = make(tmp_path, "app.log", rotate_wait=0.5)
    registries.append(r)
    f = r.scan(now=0)[0].file
    read_all(f)
    os.rename(log, tmp_path / "app.log.1")
    with open(tmp_path / "app.log.1", "ab") as w:
        w.write(b" late\n")                              # written after the rename
    log.write_bytes(b"")
    changes = r.scan(now=1)
    assert kinds(changes) == ["Rotated", "Followed"]
    assert changes[0].deleted is False and r.detached == [f]
    assert read_all(f) == b"no newline yet late\n"      # read to its end through its descriptor
    released = r.let_go(f, 1)
    assert kinds(released) == ["Released"] and released[0].unread == 0
    assert not f.is_open and f.identity in r.released


def test_let_go_sends_what_the_file_held_and_counts_what_it_could_not_read(tmp_path, registries):
    log = tmp_path / "app.log"
    log.write_bytes(b"whole\npartial")
    r = make(tmp_path, "app.log")
    registries.append(r)
    f = r.scan(now=0)[0].file
    read_all(f)
    with open(log, "ab") as w:
        w.write(b" more\nunread\n")
    (released,) = r.let_go(f, 1)
    assert [(e.data, bool(e.flags & UNTERMINATED)) for e in released.events] == [
        (b"partial", True)]
    assert released.unread == len(b" more\nunread\n")


def test_deletion_reads_to_the_end_then_forgets_once_acknowledged(tmp_path, registries):
    log = tmp_path / "app.log"
    log.write_bytes(lines("x", 3))
    r = make(tmp_path, "app.log")
    registries.append(r)
    f = r.scan(now=0)[0].file
    with open(log, "ab") as w:
        w.write(lines("x", 2, start=3))
        log.unlink()
    changes = r.scan(now=1)
    assert [(type(c).__name__, c.deleted) for c in changes] == [("Rotated", True)]
    assert read_all(f) == lines("x", 5)
    assert kinds(r.let_go(f, 1)) == ["Released"]
    assert r.scan(now=2) == []                          # not acknowledged yet: remembered
    f.acked = f.read_pos
    assert r.scan(now=3) == [Forgotten(f.identity)]
    assert r.released == {}


def test_truncation_in_place_is_read_again_from_zero(tmp_path, registries):
    log = tmp_path / "app.log"
    log.write_bytes(lines("before", 4))
    r = make(tmp_path, "app.log")
    registries.append(r)
    f = r.scan(now=0)[0].file
    read_all(f)
    with open(log, "r+b") as w:
        w.truncate(0)
        w.write(b"after\n")
    changes = r.scan(now=1)                             # first bytes changed
    assert kinds(changes) == ["Truncated"] and changes[0].file is f
    assert (f.offset, f.acked) == (0, 0)
    assert read_all(f) == b"after\n"


def test_copytruncate_copy_is_read_from_where_the_original_stopped(tmp_path, registries):
    log = tmp_path / "app.log"
    log.write_bytes(lines("c", 10))
    r = make(tmp_path, "app.log*")
    registries.append(r)
    f = r.scan(now=0)[0].file
    read_all(f)
    stop = f.read_pos
    with open(log, "ab") as w:
        w.write(lines("c", 5, start=10))                 # written, not read yet
    shutil.copyfile(log, tmp_path / "app.log.1")        # logrotate's copy...
    assert r.scan(now=1) == []                           # ... held: a copy of app.log?
    assert list(r.copies.values())[0].of is f
    with open(log, "r+b") as w:                          # ... and its truncate
        w.truncate(0)
    changes = r.scan(now=2)
    # (The copy, detached to be let go once read, is still named by the glob: followed.)
    assert kinds(changes) == ["Truncated", "Followed", "Renamed"]
    copy = changes[1].file
    assert changes[1].why == "copy" and copy.offset == stop
    assert r.files[str(tmp_path / "app.log.1")] is copy
    assert read_all(copy) == lines("c", 5, start=10)     # exactly what the original had not sent
    assert read_all(f) == b""


def test_a_plain_copy_is_read_whole_after_rotate_wait(tmp_path, registries):
    log = tmp_path / "app.log"
    log.write_bytes(lines("p", 10))
    r = make(tmp_path, "*.log", rotate_wait=1.0)
    registries.append(r)
    r.scan(now=0)
    shutil.copyfile(log, tmp_path / "copy.log")
    assert r.scan(now=0.5) == []
    changes = r.scan(now=1.6)
    assert [(type(c).__name__, c.file.path, c.file.offset) for c in changes] == [
        ("Followed", str(tmp_path / "copy.log"), 0)]


def test_an_idle_closed_file_rewritten_while_closed_is_a_new_file(tmp_path, registries):
    log = tmp_path / "app.log"
    log.write_bytes(lines("first", 3))
    r = make(tmp_path, "app.log")
    registries.append(r)
    f = r.scan(now=0)[0].file
    read_all(f)
    assert r.close_idle(f) == Closed(f, idle=True) and not f.is_open
    with open(log, "ab") as w:                           # grows: opened again, same position
        w.write(lines("first", 1, start=3))
    changes = r.scan(now=1)
    assert changes == [Opened(f, True)] and f.is_open
    assert read_all(f) == lines("first", 1, start=3)
    r.close_idle(f)
    with open(log, "r+b") as w:                          # same inode, other first bytes
        w.write(lines("other", 6))
    changes = r.scan(now=2)
    assert kinds(changes) == ["Released", "Followed"]
    assert changes[0].file is f and changes[1].why == "replaced"
    assert changes[1].file.offset == 0 and changes[1].file.identity == f.identity


def test_the_budget_reads_every_file_in_turn_never_more_open(tmp_path, registries):
    n, budget = 12, 4
    for i in range(n):
        (tmp_path / f"f{i:02d}.log").write_bytes(lines(f"f{i:02d}", 50))
    r = make(tmp_path, "*.log", max_open=budget)
    registries.append(r)
    changes = r.scan(now=0)
    assert kinds(changes).count("Followed") == n
    assert [c.waiting for c in changes if isinstance(c, Closed)] == [True] * (n - budget)
    assert len(r.opened) == budget and len(r.waiting) == n - budget
    got = {f.path: b"" for f in r.files.values()}
    rounds = 0
    opened_at_once = []
    while any(len(v) < len(lines("x", 50)) for v in got.values()):
        rounds += 1
        assert rounds < 50, got
        for f in list(r.files.values()):
            if f.is_open:                                 # one read per round, as the runner
                events, _ = f.read(600, max_line=1 << 20, now_ns=1)
                got[f.path] += b"".join(e.data for e in events)
        mine = [p for p in open_paths() if p.startswith(str(tmp_path))]
        opened_at_once.append(len(mine))
        r.rebalance(now=rounds)
    assert max(opened_at_once) <= budget
    for path, data in got.items():
        name = Path(path).stem
        assert data == lines(name, 50)                   # every line once, in order
    # Fair: every file got its turn before any got a second one.
    assert rounds <= (n // budget) * (len(lines("x", 50)) // 600 + 1) + 2


def test_a_waiting_file_renamed_away_is_found_by_inode_and_read_to_its_end(tmp_path, registries):
    for name in ("a.log", "b.log"):
        (tmp_path / name).write_bytes(lines(name, 20))
    r = make(tmp_path, "*.log", max_open=1)
    registries.append(r)
    r.scan(now=0)
    (waiting,) = r.waiting
    assert not waiting.is_open and waiting.size_seen > waiting.read_pos
    os.rename(waiting.path, tmp_path / "rotated.1")        # renamed out of the glob
    changes = r.scan(now=1)
    assert [(type(c).__name__, c.file) for c in changes] == [("Rotated", waiting)]
    assert r.detached == [waiting] and waiting.moved_to == str(tmp_path / "rotated.1")
    assert not waiting.is_open and list(r.waiting) == [waiting]   # still within the budget
    other = next(f for f in r.files.values() if f.is_open)
    read_all(other)
    changes = r.rebalance(now=2)                            # its turn
    assert kinds(changes) == ["Closed", "Opened"] and changes[1].file is waiting
    assert read_all(waiting) == lines(Path(waiting.path).name, 20)


def test_a_waiting_file_deleted_before_its_turn_is_counted_unread(tmp_path, registries):
    for name in ("a.log", "b.log"):
        (tmp_path / name).write_bytes(lines(name, 20))
    r = make(tmp_path, "*.log", max_open=1)
    registries.append(r)
    r.scan(now=0)
    (waiting,) = r.waiting
    os.unlink(waiting.path)
    changes = r.scan(now=1)
    assert kinds(changes) == ["Released", "Forgotten"]   # nothing of it was read: nothing to ack
    assert changes[0].unread == len(lines("x.log", 20))


def test_a_waiting_file_replaced_before_its_turn_is_not_resumed(tmp_path, registries):
    for name in ("a.log", "b.log"):
        (tmp_path / name).write_bytes(lines(name, 20))
    r = make(tmp_path, "*.log", max_open=1)
    registries.append(r)
    r.scan(now=0)
    (waiting,) = r.waiting
    with open(waiting.path, "r+b") as w:                  # same inode, rewritten
        w.write(lines("other", 20))
    first = next(f for f in r.files.values() if f.is_open)
    read_all(first)
    changes = r.rebalance(now=1)                          # its turn: it is not the same file
    assert kinds(changes) == ["Closed", "Released", "Followed"]
    assert changes[2].why == "replaced" and changes[2].file.offset == 0


def test_out_of_descriptors_the_scan_concludes_nothing(tmp_path, registries):
    import resource

    from inputs.file.paths import ScanError

    d = tmp_path / "logs"
    d.mkdir()
    (d / "a.log").write_bytes(lines("a", 2))
    r = make(d, "*.log")
    registries.append(r)
    (f,) = [c.file for c in r.scan(now=0)]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    probe = os.open("/dev/null", os.O_RDONLY)
    os.close(probe)
    resource.setrlimit(resource.RLIMIT_NOFILE, (probe, hard))  # the next open fails
    try:
        with pytest.raises(ScanError) as err:
            r.scan(now=1)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert err.value.errno == 24
    assert r.files == {f.path: f} and f.is_open and not r.detached   # not taken for deleted


def test_a_checkpointed_file_that_cannot_be_opened_yet_resumes_later(tmp_path, registries):
    log = tmp_path / "app.log"
    log.write_bytes(lines("x", 10))
    st = os.stat(log)
    entry = Entry(st.st_dev, st.st_ino, Fingerprint.of_bytes(log.read_bytes()), str(log), 200)
    r = make(tmp_path, "app.log", restored={(st.st_dev, st.st_ino): entry})
    registries.append(r)
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    probe = os.open("/dev/null", os.O_RDONLY)
    os.close(probe)
    resource.setrlimit(resource.RLIMIT_NOFILE, (probe, hard))  # a literal path needs no listing
    try:
        changes = r.scan(now=0, initial=True)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert kinds(changes) == ["OpenFailed"] and changes[0].errno == 24
    changes = r.scan(now=1)
    assert [(c.why, c.file.offset) for c in changes] == [("resumed", 200)]


def test_a_waiting_file_deleted_while_its_writer_holds_it_is_read_to_its_end(tmp_path,
                                                                               registries):
    """Deleted before its turn (logrotate's compress right after the rename), but its writer
    has not reopened yet: found through the writer's descriptor, read to its end."""
    for name in ("a.log", "b.log"):
        (tmp_path / name).write_bytes(lines(name, 20))
    r = make(tmp_path, "*.log", max_open=1)
    registries.append(r)
    r.scan(now=0)
    (waiting,) = r.waiting
    with open(waiting.path, "ab") as out:                 # only the writer holds it then
        writer = subprocess.Popen(["sleep", "30"], stdout=out)
    try:
        os.unlink(waiting.path)
        changes = r.scan(now=1)
        assert [(type(c).__name__, c.file) for c in changes] == [("Rotated", waiting)]
        assert r.detached == [waiting] and waiting.moved_to.startswith(f"/proc/{writer.pid}/fd/")
        read_all(next(f for f in r.files.values() if f.is_open))
        assert kinds(r.rebalance(now=2)) == ["Closed", "Opened"] and waiting.is_open
        assert read_all(waiting) == lines(Path(waiting.path).name, 20)
    finally:
        writer.kill()
        writer.wait()


@pytest.mark.parametrize("new", [lines("new", 3), b"X" + lines("old", 50)],
                         ids=["shorter", "as-long-other-first-bytes"])
def test_a_new_file_on_the_inode_of_a_let_go_one_is_followed(tmp_path, registries, new):
    """logrotate's compress deletes a rotated file the input has let go, and the kernel may give
    its inode to the next app.log at once: the same (device, inode), another file, to be read
    (a logrotate storm lost whole files to this). The inode's reuse is arranged by re-keying the
    let-go entry to the new file's identity, since no test can make the kernel reuse one."""
    log = tmp_path / "app.log"
    log.write_bytes(lines("old", 50))
    r = make(tmp_path, "app.log")
    registries.append(r)
    f = r.scan(now=0)[0].file
    read_all(f)
    log.unlink()
    assert [(type(c).__name__, c.deleted) for c in r.scan(now=1)] == [("Rotated", True)]
    assert kinds(r.let_go(f, 1)) == ["Released"]
    log.write_bytes(new)
    st = os.stat(log)
    r.released = {(st.st_dev, st.st_ino): r.released.popitem()[1]}
    changes = r.scan(now=2)
    assert kinds(changes) == ["Forgotten", "Followed"], changes
    assert read_all(changes[1].file) == new


def test_a_let_go_file_still_named_is_not_read_again(tmp_path, registries):
    """The same file (same first bytes, not shorter) under a matching name stays let go."""
    log = tmp_path / "app.log"
    log.write_bytes(lines("x", 5))
    r = make(tmp_path, "app.log*")
    registries.append(r)
    f = r.scan(now=0)[0].file
    read_all(f)
    os.rename(log, tmp_path / "app.log.1")
    r.scan(now=1)
    assert kinds(r.let_go(f, 1)) == ["Released"]
    assert r.scan(now=2) == []  # app.log.1 is the let-go file: not followed again
