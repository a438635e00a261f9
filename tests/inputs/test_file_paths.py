"""The globber on real directories: what matches (like glob.glob, with ``**``), what is left out
(excludes, directories, hidden names), which directories to watch, and that a directory it
cannot list for want of descriptors fails the evaluation instead of matching nothing."""

from __future__ import annotations

import glob
import os
import resource

import pytest

from inputs.file.paths import Globber, ScanError, expand

TREE = ["app.log", "app.log.1", "app.log.2.gz", ".hidden.log", "sub/a.log", "sub/deep/b.log",
        "sub/.cache/c.log", "other/d.txt"]


@pytest.fixture
def tree(tmp_path):
    for rel in TREE:
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(rel + "\n")
    os.mkfifo(tmp_path / "pipe.log")
    (tmp_path / "dir.log").mkdir()
    return tmp_path


def rel(tmp, found) -> list[str]:
    return sorted(os.path.relpath(p, tmp) for p in found)


@pytest.mark.parametrize("pattern", ["*.log", "app.log*", "**/*.log", "sub/**/*.log", "*/*.log",
                                     "**", "sub/*/b.log", ".*.log", "sub/**", "app.log.[0-9]",
                                     "nowhere/*.log", "sub/?.log"])
def test_expand_matches_what_glob_matches(tree, pattern):
    want = {p.rstrip("/") for p in glob.glob(str(tree / pattern), recursive=True)}
    assert set(expand(str(tree / pattern))) == want


def test_resolve_keeps_regular_files_and_leaves_out_excludes(tree):
    g = Globber([str(tree / "**" / "*.log*"), str(tree / "app.log")],
                exclude=["*.gz", str(tree / "sub" / "deep" / "*")])
    found = g.resolve()
    # No directory, no FIFO, no hidden name, no excluded name or path, each path once.
    assert rel(tree, found) == ["app.log", "app.log.1", "sub/a.log"]
    assert all(st.st_size > 0 for st in found.values())
    assert g.matches(str(tree / "new.log")) and not g.matches(str(tree / "x.log.gz"))


def test_a_literal_path_matches_once_it_exists(tmp_path):
    g = Globber([str(tmp_path / "later.log")])
    assert g.resolve() == {}
    (tmp_path / "later.log").write_text("x\n")
    assert rel(tmp_path, g.resolve()) == ["later.log"]


def test_patterns_are_made_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "rel.log").write_text("x\n")
    g = Globber(["*.log"])
    assert g.patterns == [str(tmp_path / "*.log")]
    assert list(g.resolve()) == [str(tmp_path / "rel.log")]


def test_a_symlink_loop_under_double_star_ends(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.log").write_text("x\n")
    os.symlink(tmp_path / "a", tmp_path / "a" / "loop")
    found = expand(str(tmp_path / "**" / "*.log"))
    assert str(tmp_path / "a" / "x.log") in found and len(found) <= 3


def test_watch_dirs_are_the_deepest_existing_ones(tmp_path):
    (tmp_path / "pods").mkdir()
    g = Globber([str(tmp_path / "*.log"), str(tmp_path / "pods" / "*" / "*.log"),
                 str(tmp_path / "later" / "x" / "*.log")])
    assert g.watch_dirs() == {
        str(tmp_path): True,                 # its own files; and 'later' to appear (recursive)
        str(tmp_path / "pods"): True,         # wildcards below: recursive
    }
    (tmp_path / "later" / "x").mkdir(parents=True)
    assert g.watch_dirs()[str(tmp_path / "later" / "x")] is False


def test_out_of_descriptors_fails_the_evaluation(tree):
    """glob.glob takes a directory it cannot list for an empty one; resolve must not, or every
    followed file would look deleted."""
    g = Globber([str(tree / "*.log")])
    assert rel(tree, g.resolve()) == ["app.log"]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    probe = os.open("/dev/null", os.O_RDONLY)
    os.close(probe)
    resource.setrlimit(resource.RLIMIT_NOFILE, (probe, hard))  # the next open fails
    try:
        assert glob.glob(str(tree / "*.log")) == []             # what glob would conclude
        with pytest.raises(ScanError, match="Too many open files"):
            g.resolve()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
