"""common.memory.release_code on real mappings of files: a read-only mapping's resident pages go
and read back the same; one with a page the process wrote, and a writable one, are left alone."""

from __future__ import annotations

import ctypes
import mmap
import os
import sys

import pytest

from common.memory import release_code
from tests.harness import resident_kib

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="madvise and /proc/self/smaps are Linux's")
PAGE = mmap.PAGESIZE
LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


def mapped(path, size: int, *, write_page: int | None = None) -> mmap.mmap:
    """A private mapping of a file, as ld.so makes (``MAP_PRIVATE``), every page read; one page
    written first if ``write_page`` (as the loader relocates data); then made read-only (as
    code, read-only data and relocated data end up). ``mmap.close`` unmaps it."""
    with open(path, "rb") as f:
        m = mmap.mmap(f.fileno(), size, access=mmap.ACCESS_COPY)
    if write_page is not None:
        m[PAGE * write_page] = 0xAB  # a private copy of that page
    buf = ctypes.c_char.from_buffer(m)
    address = ctypes.addressof(buf)
    del buf  # no exported pointer left: close() can unmap
    assert LIBC.mprotect(ctypes.c_void_p(address), size, mmap.PROT_READ) == 0
    m[:]  # every page resident
    return m


def test_a_read_only_mapping_is_unmapped_and_reads_the_same(tmp_path):
    data = os.urandom(4 << 20)
    (tmp_path / "a dir").mkdir()
    path = tmp_path / "a dir" / "liblogshuttle-clean.so.1"  # smaps' path column holds a space
    path.write_bytes(data)
    m = mapped(path, len(data))
    try:
        assert resident_kib("liblogshuttle-clean") >= 4000
        released = release_code(["liblogshuttle-clean"])
        assert released >= 4000 * 1024
        assert resident_kib("liblogshuttle-clean") < 100
        assert m[:] == data  # faulted back in from the file: the same bytes
        assert release_code(["liblogshuttle-other"]) == 0  # no such library: nothing
    finally:
        m.close()


def test_a_mapping_with_a_page_written_before_it_became_read_only_is_left_alone(tmp_path):
    """As relocated data (RELRO): the written page is the process's own copy, which
    ``MADV_DONTNEED`` would replace with the file's bytes."""
    data = bytes(range(256)) * (PAGE * 16 // 256)
    path = tmp_path / "liblogshuttle-relro.so.1"
    path.write_bytes(data)
    m = mapped(path, len(data), write_page=3)
    try:
        assert release_code(["liblogshuttle-relro"]) == 0
        assert m[PAGE * 3] == 0xAB
        assert resident_kib("liblogshuttle-relro") == 16 * PAGE // 1024
    finally:
        m.close()


def test_a_writable_mapping_is_left_alone(tmp_path):
    """As a library's variables: a write between the look and the drop would be lost."""
    data = bytes(range(256)) * (PAGE * 16 // 256)
    path = tmp_path / "liblogshuttle-data.so.1"
    path.write_bytes(data)
    with open(path, "rb") as f:
        m = mmap.mmap(f.fileno(), len(data), access=mmap.ACCESS_COPY)
    try:
        assert m[:] == data
        assert release_code(["liblogshuttle-data"]) == 0
        assert resident_kib("liblogshuttle-data") == 16 * PAGE // 1024
    finally:
        m.close()
