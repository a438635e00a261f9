"""Fingerprints and the checkpoint store, on real files."""

from __future__ import annotations

import os

import pytest

from inputs.file.checkpoint import Checkpointer, Entry, StateError
from inputs.file.fingerprint import FINGERPRINT_BYTES, Fingerprint


def fd_of(path):
    return os.open(path, os.O_RDONLY)


def test_fingerprint_of_a_short_file_grows_and_still_matches(tmp_path):
    p = tmp_path / "a.log"
    p.write_bytes(b"short\n")
    fd = fd_of(p)
    fp = Fingerprint.of_fd(fd)
    assert fp.length == 6
    with open(p, "ab") as f:
        f.write(b"x" * 5000)
    assert fp.matches_fd(fd)                          # its 6 bytes did not change
    grown = fp.extend(fd, os.fstat(fd).st_size)
    assert grown.length == FINGERPRINT_BYTES and grown.matches_fd(fd)
    assert grown.extend(fd, 10**6) is grown           # complete: no more reading
    os.close(fd)


def test_fingerprint_tells_inode_reuse_and_rewrites_apart(tmp_path):
    p = tmp_path / "a.log"
    p.write_bytes(b"first file contents\n")
    fd = fd_of(p)
    fp = Fingerprint.of_fd(fd)
    os.close(fd)
    p.unlink()
    p.write_bytes(b"another file, maybe on the same inode\n")
    fd = fd_of(p)
    assert not fp.matches_fd(fd)
    os.close(fd)
    p.write_bytes(b"first")                           # shorter than what was fingerprinted
    fd = fd_of(p)
    assert not fp.matches_fd(fd)
    os.close(fd)
    assert Fingerprint(0, Fingerprint.of_bytes(b"").digest).matches_fd(os.open(p, os.O_RDONLY))


def entries(n=3):
    return [Entry(1, 100 + i, Fingerprint.of_bytes(b"line %d\n" % i), f"/var/log/{i}.log", i * 10)
            for i in range(n)]


def test_save_and_load(tmp_path):
    c = Checkpointer(state_dir=str(tmp_path / "state"), input_name="app")
    c.prepare()
    assert c.load().existed is False
    c.save(entries())
    loaded = c.load()
    assert loaded.existed and loaded.damaged_lines == 0
    assert sorted(loaded.entries) == [(1, 100), (1, 101), (1, 102)]
    assert loaded.entries[(1, 102)].offset == 20
    assert loaded.entries[(1, 101)].path == "/var/log/1.log"
    assert not os.path.exists(c.path + ".tmp")


def test_a_checkpoint_file_cut_in_half_keeps_every_whole_entry(tmp_path):
    c = Checkpointer(state_dir=str(tmp_path), input_name="app")
    c.save(entries(10))
    data = open(c.path, "rb").read()
    with open(c.path, "wb") as f:
        f.write(data[: len(data) // 2])               # a crash in the middle of a copy
    loaded = c.load()
    assert loaded.existed
    assert 3 <= len(loaded.entries) < 10
    assert loaded.damaged_lines == 1                  # the entry that was cut
    for key, e in loaded.entries.items():
        assert e.offset == (key[1] - 100) * 10        # whole entries are intact


def test_garbage_instead_of_a_checkpoint_file(tmp_path):
    c = Checkpointer(state_dir=str(tmp_path), input_name="app")
    with open(c.path, "wb") as f:
        f.write(b"\x00\xff not json\n{}\n")
    loaded = c.load()
    assert loaded.existed and loaded.entries == {} and loaded.damaged_lines == 2


def test_state_dir_that_cannot_be_used(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(StateError, match="cannot use the state directory") as e:
        Checkpointer(state_dir=str(blocker / "state"), input_name="x").prepare()
    assert isinstance(e.value.__cause__, OSError)
