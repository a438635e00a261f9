"""The server's NDJSON files: rotated by size, the oldest deleted beyond max_files, nothing
lost or reordered among the files kept."""

from __future__ import annotations

import json

from server.writer import FileWriter


def test_rotation_keeps_the_newest_files_in_order(tmp_path):
    w = FileWriter(directory=str(tmp_path), file_bytes=4096, max_files=3)
    for i in range(2000):
        w.write([{"n": i, "pad": "p" * 20}])
    w.close()
    rotated = w.rotated()
    assert [p.rsplit("-", 1)[1] for p in rotated] == \
        [f"{n}.ndjson" for n in range(w.rotations - 2, w.rotations + 1)]
    files = [*rotated, str(tmp_path / "received.ndjson")]
    ns = [json.loads(line)["n"] for f in files for line in open(f)]
    assert ns == list(range(ns[0], 2000))               # contiguous up to the last
    assert all((tmp_path / p).stat().st_size <= 4096 for p in files)
    # A restart appends to the current file and numbers on after the highest rotated one.
    w2 = FileWriter(directory=str(tmp_path), file_bytes=4096, max_files=3)
    w2.rotate()
    w2.close()
    assert w2.rotated()[-1].endswith(f"received-{w.rotations + 1}.ndjson")
