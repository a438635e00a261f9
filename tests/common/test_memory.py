"""common.memory.release_code: the resident pages of a library's unwritten mappings go, the
bytes read through them stay the same, and a mapping with writes of its own is left alone."""

from __future__ import annotations

import mmap
import os
import sys

import pytest

from common.memory import release_code

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="madvise and /proc/self/smaps are Linux's")
PAGE = mmap.PAGESIZE


def resident_kb(name: str) -> int:
    """Rss of this process's mappings of files whose name starts with ``name``."""
    total, mine = 0, False
    with open("/proc/self/smaps") as f:
        for line in f:
            head = line.split(maxsplit=5)
            if not head[0].endswith(":") and "-" in head[0]:
                mine = len(head) >= 6 and os.path.basename(head[5].rstrip()).startswith(name)
            elif mine and head[0] == "Rss:":
                total += int(head[1])
    return total


def mapped(path, size: int) -> mmap.mmap:
    with open(path, "rb") as f:
        return mmap.mmap(f.fileno(), size, access=mmap.ACCESS_COPY)  # MAP_PRIVATE, as ld.so maps


def test_an_unwritten_mapping_is_unmapped_and_reads_the_same(tmp_path):
    data = os.urandom(4 << 20)
    (tmp_path / "a dir").mkdir()
    path = tmp_path / "a dir" / "liblogshuttle-clean.so.1"  # smaps' path column holds a space
    path.write_bytes(data)
    m = mapped(path, len(data))
    try:
        assert m[:] == data  # every page read: resident
        assert resident_kb("liblogshuttle-clean") >= 4000
        released = release_code(["liblogshuttle-clean"])
        assert released >= 4000 * 1024
        assert resident_kb("liblogshuttle-clean") < 100
        assert m[:] == data  # faulted back in from the file: the same bytes
        assert release_code(["liblogshuttle-other"]) == 0  # no such library: nothing
    finally:
        m.close()


def test_a_mapping_with_writes_of_its_own_keeps_them(tmp_path):
    data = bytes(range(256)) * (PAGE * 16 // 256)
    path = tmp_path / "liblogshuttle-written.so.1"
    path.write_bytes(data)
    m = mapped(path, len(data))
    try:
        assert m[:] == data
        m[PAGE * 3] = 0xAB  # a private copy of one page (a relocation, a library's variable)
        released = release_code(["liblogshuttle-written"])
        assert released == 0
        assert m[PAGE * 3] == 0xAB  # DONTNEED would have restored the file's byte
        assert resident_kb("liblogshuttle-written") >= 16 * PAGE // 1024
    finally:
        m.close()
