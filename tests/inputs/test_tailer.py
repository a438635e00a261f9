"""The file tailer's cutting of bytes into runs of lines and pieces, on real files."""

from __future__ import annotations

import os

from common.events import LAST_PIECE, PIECE, UNTERMINATED
from inputs.file.tailer import TailedFile, utf8_cut


def follow(path, **kw) -> TailedFile:
    return TailedFile.open(str(path), at_end=kw.get("at_end", False))


def drain(f: TailedFile, max_line=1024, budget=1024):
    events = []
    while True:
        evs, n = f.read(budget, max_line=max_line, now_ns=1)
        events += evs
        if n == 0:
            return events


def test_runs_of_lines_with_offsets_and_a_held_partial(tmp_path):
    p = tmp_path / "a.log"
    p.write_bytes(b"one\n\ntwo\nthr")
    f = follow(p)
    evs = drain(f)
    assert [(e.offset, e.data, e.lines, e.flags) for e in evs] == [(0, b"one\n\ntwo\n", 3, 0)]
    assert (f.offset, f.pending) == (9, b"thr")
    with open(p, "ab") as w:
        w.write(b"ee\nfour\n")
    evs = drain(f)
    assert [(e.offset, e.data, e.lines) for e in evs] == [(9, b"three\nfour\n", 2)]
    assert all((e.dev, e.ino, e.path) == (os.stat(p).st_dev, os.stat(p).st_ino, str(p)) for e in evs)
    f.close()


def test_start_at_end(tmp_path):
    p = tmp_path / "a.log"
    p.write_bytes(b"old\n")
    f = follow(p, at_end=True)
    assert drain(f) == []
    with open(p, "ab") as w:
        w.write(b"new\n")
    assert [(e.offset, e.data) for e in drain(f)] == [(4, b"new\n")]
    f.close()


def test_long_line_becomes_pieces_that_join_exactly(tmp_path):
    p = tmp_path / "a.log"
    long = bytes(range(33, 127)) * 30  # 2820 bytes
    p.write_bytes(b"short\n" + long + b"\nafter\n")
    f = follow(p)
    evs = drain(f, max_line=1000, budget=700)
    assert evs[0].data == b"short\n" and evs[0].flags == 0
    pieces = [e for e in evs if e.flags & PIECE]
    assert [e.piece for e in pieces] == [0, 1, 2]
    assert [bool(e.flags & LAST_PIECE) for e in pieces] == [False, False, True]
    assert all(len(e.data) <= 1000 for e in pieces)
    assert b"".join(e.data for e in pieces) == long + b"\n"
    assert pieces[0].offset == 6 and pieces[1].offset == 1006 and pieces[2].offset == 2006
    assert evs[-1].data == b"after\n" and evs[-1].offset == 6 + len(long) + 1
    f.close()


def test_line_of_exactly_the_maximum_is_not_split(tmp_path):
    p = tmp_path / "a.log"
    p.write_bytes(b"x" * 100 + b"\n" + b"y" * 101 + b"\n")
    f = follow(p)
    evs = drain(f, max_line=100, budget=100)
    assert [(e.data, e.flags) for e in evs] == [
        (b"x" * 100 + b"\n", 0),
        (b"y" * 100, PIECE), (b"y\n", PIECE | LAST_PIECE)]
    f.close()


def test_pieces_are_cut_on_utf8_boundaries(tmp_path):
    p = tmp_path / "a.log"
    line = "é€😀".encode() * 50  # 2, 3 and 4-byte characters
    p.write_bytes(line + b"\n")
    f = follow(p)
    evs = drain(f, max_line=64, budget=64)
    assert len(evs) > 2
    for e in evs:
        e.data.decode("utf-8")  # every piece decodes on its own
    assert b"".join(e.data for e in evs) == line + b"\n"
    f.close()


def test_utf8_cut_gives_up_on_bytes_that_are_not_utf8():
    assert utf8_cut(b"\x80" * 10, 5) == 5
    assert utf8_cut("aé".encode() + b"z", 2) == 1  # would split é
    assert utf8_cut(b"abcdef", 3) == 3


def test_truncation_reset_and_flush_of_unterminated(tmp_path):
    p = tmp_path / "a.log"
    p.write_bytes(b"one\ntail")
    f = follow(p)
    drain(f)
    (ev,) = f.flush(now_ns=5)
    assert (ev.data, ev.offset, ev.flags, ev.lines) == (b"tail", 4, UNTERMINATED, 1)
    assert f.read_pos == 8
    p.write_bytes(b"x\n")
    assert f.size() < f.read_pos
    f.reset()
    assert [(e.offset, e.data) for e in drain(f)] == [(0, b"x\n")]
    f.close()
