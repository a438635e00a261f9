"""The watcher with real directories and real inotify (watchdog's observer): a new matching file
wakes the input and asks for a glob evaluation, a write only wakes it, files that cannot match
do neither, a directory that appears later is watched once the globs need it, and polling mode
starts no observer."""

from __future__ import annotations

import logging
import select
import threading

import pytest

from inputs.file.paths import Globber
from inputs.file.watcher import Watcher

LOG = logging.getLogger("test")


def woken(w: Watcher, timeout: float) -> bool:
    ready, _, _ = select.select([w.wakeup], [], [], timeout)
    w.wakeup.clear()
    return bool(ready)


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
