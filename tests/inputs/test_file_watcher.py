"""The watcher with real directories and real inotify (read in the input's loop, no thread): a new
matching file wakes the input and asks for a glob evaluation, a write only wakes it, files that
cannot match do neither, a directory that appears later is watched once the globs need it,
repeated writes are merged into one wake-up while the input is busy, and polling mode starts no
thread and no inotify instance."""

from __future__ import annotations

import logging
import select
import threading
import time

import pytest

from inputs.file.paths import Globber
from inputs.file.watcher import Watcher

LOG = logging.getLogger("test")


def woken(w: Watcher, timeout: float) -> bool:
    """Whether something that concerns the input came within ``timeout`` (the descriptor is
    readable for any event of a watched directory; ``clear`` says whether one mattered)."""
    deadline = time.monotonic() + timeout
    while True:
        ready, _, _ = select.select([w.wakeup], [], [], max(0.0, deadline - time.monotonic()))
        if ready and w.wakeup.clear():
            return True
        if time.monotonic() >= deadline:
            return False


def quiet(w: Watcher) -> None:
    """Let events already on their way arrive, then forget them."""
    while woken(w, 0.2):
        pass
    w.take_rescan()


@pytest.fixture
def watcher(tmp_path):
    made = []

    def make(*patterns: str, mode: str = "inotify", exclude=()) -> Watcher:
        w = Watcher(Globber([str(tmp_path / p) for p in patterns], exclude=list(exclude)),
                    mode=mode, log=LOG)
        w.start()
        made.append(w)
        return w

    yield make
    for w in made:
        w.stop()


def test_a_new_matching_file_wakes_and_asks_for_a_rescan(tmp_path, watcher):
    w = watcher("*.log")
    assert not w.polling
    quiet(w)
    (tmp_path / "new.log").write_text("x\n")
    assert woken(w, 5.0)
    assert w.take_rescan() is True
    assert w.take_rescan() is False                    # taken once


def test_a_write_wakes_without_a_rescan(tmp_path, watcher):
    log = tmp_path / "app.log"
    log.write_text("a\n")
    w = watcher("*.log")
    quiet(w)
    with open(log, "a") as f:
        f.write("b\n")
    assert woken(w, 5.0)
    assert w.take_rescan() is False


def test_files_that_cannot_match_are_ignored(tmp_path, watcher):
    w = watcher("*.log", exclude=["*.gz"])
    quiet(w)
    (tmp_path / "notes.txt").write_text("x\n")
    (tmp_path / "old.log.gz").write_text("x\n")
    assert not woken(w, 0.5)
    assert w.take_rescan() is False
    (tmp_path / "yes.log").write_text("x\n")           # the same watch still works
    assert woken(w, 5.0) and w.take_rescan()


def test_a_renamed_file_asks_for_a_rescan(tmp_path, watcher):
    log = tmp_path / "app.log"
    log.write_text("a\n")
    w = watcher("app.log")
    quiet(w)
    log.rename(tmp_path / "app.log.1")                  # only the old name matches
    assert woken(w, 5.0) and w.take_rescan()


def test_a_directory_that_appears_later_is_watched(tmp_path, watcher):
    w = watcher("pods/*/*.log")                       # 'pods' does not exist yet
    quiet(w)
    (tmp_path / "pods" / "p1").mkdir(parents=True)      # seen through the ancestor's watch
    assert woken(w, 5.0) and w.take_rescan()
    w.update()                                         # what a rescan does first
    assert (str(tmp_path / "pods"), True) in w._watches
    quiet(w)
    (tmp_path / "pods" / "p1" / "c.log").write_text("x\n")
    assert woken(w, 5.0) and w.take_rescan()


def test_polling_mode_starts_no_observer(tmp_path, watcher):
    before = set(threading.enumerate())
    w = watcher("*.log", mode="poll")
    assert w.polling
    assert set(threading.enumerate()) == before
    (tmp_path / "new.log").write_text("x\n")
    assert not woken(w, 0.3)                          # the poll interval does the work


def test_inotify_starts_no_thread(tmp_path, watcher):
    before = set(threading.enumerate())
    w = watcher("*.log")
    assert not w.polling
    assert set(threading.enumerate()) == before


def test_writes_while_busy_are_one_wake_up(tmp_path, watcher):
    """Appends made while the input does not read its events are merged by the kernel: one
    event to read, not one per write (what made a watcher thread cost a wake-up per write)."""
    log = tmp_path / "app.log"
    log.write_text("a\n")
    w = watcher("*.log")
    quiet(w)
    with open(log, "a") as f:
        for i in range(1000):
            f.write(f"line {i}\n")
            f.flush()
    events = list(w._ino.read())
    assert 1 <= len(events) <= 3                       # IN_MODIFY (merged), IN_CLOSE_WRITE
    assert all(name == b"app.log" for _, _, name in events)


def test_a_new_subdirectory_of_a_recursive_watch_is_watched_at_once(tmp_path, watcher):
    (tmp_path / "pods").mkdir()
    w = watcher("pods/*/*.log")
    quiet(w)
    (tmp_path / "pods" / "p2").mkdir()
    assert woken(w, 5.0) and w.take_rescan()           # the new directory, watched already:
    (tmp_path / "pods" / "p2" / "d.log").write_text("x\n")
    assert woken(w, 5.0) and w.take_rescan()           # its new file wakes without an update()
