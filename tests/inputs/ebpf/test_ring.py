"""The ring buffer reader (inputs/ebpf/loader.py RingReader), compiled and in Python, against a
real BPF ring buffer: a program of the test's own, on this process's getppid(), writes records
of three sizes into a ring of four pages, discarding every fifth, and the reader reads a few
dozen at a time, so that the ring wraps around hundreds of times under it."""

from __future__ import annotations

import os
import struct

import pytest

from common.fastpath import ring_read
from inputs.ebpf.loader import PAGE_SIZE, RingReader, create_ring
from tests.inputs.ebpf.conftest import needs_ebpf

PAGES = 4
SIZES = (13, 37, 203)
"""Not multiples of 8: the kernel pads each record to 8 bytes, the reader must skip that."""
PROGRAM = r"""
#define EVENTS ((void *)bpf_pseudo_fd(1, EVENTS_FD))
BPF_ARRAY(counter, u64, 1);

struct small { u64 n; u8 fill[5]; } __attribute__((packed));
struct medium { u64 n; u8 fill[29]; } __attribute__((packed));
struct large { u64 n; u8 fill[195]; } __attribute__((packed));

#define WRITE(T) do {                                                      \
        struct T *r = bpf_ringbuf_reserve(EVENTS, sizeof(struct T), 0);    \
        if (!r)                                                            \
            return 0;                                                      \
        r->n = n;                                                          \
        __builtin_memset(r->fill, (u8)n, sizeof(r->fill));                 \
        if (n % 5 == 4)                                                    \
            bpf_ringbuf_discard(r, 0);                                     \
        else                                                               \
            bpf_ringbuf_submit(r, BPF_RB_NO_WAKEUP);                       \
    } while (0)

TRACEPOINT_PROBE(syscalls, sys_enter_getppid)
{
    if ((bpf_get_current_pid_tgid() >> 32) != TARGET)
        return 0;
    int zero = 0;
    u64 *c = counter.lookup(&zero);
    if (!c)
        return 0;
    u64 n = __sync_fetch_and_add(c, 1);
    switch (n % 3) {
    case 0: WRITE(small); break;
    case 1: WRITE(medium); break;
    default: WRITE(large); break;
    }
    return 0;
}
"""


def expected(n: int) -> bytes | None:
    """The record the program writes on its n-th call (None: discarded)."""
    if n % 5 == 4:
        return None
    size = SIZES[n % 3]
    return struct.pack("<Q", n) + bytes([n & 0xFF]) * (size - 8)


@pytest.fixture
def ring():
    from bcc import BPF

    fd = create_ring("test_ring", PAGES * PAGE_SIZE)
    bpf = BPF(text=PROGRAM.encode(), cflags=[f"-DEVENTS_FD={fd}", f"-DTARGET={os.getpid()}"])
    try:
        yield fd
    finally:
        bpf.cleanup()
        os.close(fd)


@needs_ebpf
@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "python"])
def test_every_record_is_read_once_in_order_across_wraps(ring, compiled):
    if compiled and ring_read is None:
        pytest.fail("common._speedups is not built (tests/common/test_fastpath.py says why)")
    reader = RingReader(ring, PAGES * PAGE_SIZE, compiled=compiled)
    try:
        got: list[bytes] = []
        calls = 6000  # ~500 KiB through a 16 KiB ring
        for i in range(calls):
            os.getppid()
            if i % 37 == 36:  # ~3.5 KiB a read
                reader.read(got)
        reader.read(got)
        want = [r for r in map(expected, range(calls)) if r is not None]
        assert len(got) == len(want)
        assert got == want
        assert reader.read(got) == 0 and len(got) == len(want)
        cons = struct.unpack_from("<Q", reader._cons, 0)[0]
        prod = struct.unpack_from("<Q", reader._prod, 0)[0]
        assert cons == prod > 16 * PAGES * PAGE_SIZE  # all given back, after many laps
    finally:
        reader.close()


@needs_ebpf
def test_a_full_ring_loses_records_and_reading_makes_room_again(ring):
    """Records that find no room are the kernel's to drop; what was written is read, and once
    read the space is the program's again."""
    reader = RingReader(ring, PAGES * PAGE_SIZE)
    try:
        for _ in range(1000):  # far more than 16 KiB
            os.getppid()
        got: list[bytes] = []
        reader.read(got)
        assert got and len(got) < 800
        first = struct.unpack_from("<Q", got[0])[0]
        assert first == 0 and got[0] == expected(0)
        got.clear()
        os.getppid()
        os.getppid()
        reader.read(got)
        assert len(got) >= 1 and all(len(r) in SIZES for r in got)
    finally:
        reader.close()


@pytest.mark.skipif(ring_read is None, reason="common._speedups not built "
                                              "(tests/common/test_fastpath.py fails)")
def test_a_length_that_does_not_fit_the_ring_is_an_error_and_nothing_is_taken():
    """Memory that is not a ring buffer (a mapping of the wrong thing) is refused, not read
    past its end."""
    import mmap

    mask = PAGE_SIZE - 1
    cons = mmap.mmap(-1, PAGE_SIZE)
    prod = mmap.mmap(-1, PAGE_SIZE + 2 * PAGE_SIZE)
    struct.pack_into("<Q", prod, 0, 64)  # the producer is 64 bytes on
    struct.pack_into("<I", prod, PAGE_SIZE, 1 << 20)  # a first record of 1 MiB
    with pytest.raises(ValueError, match="1048576 bytes"):
        ring_read(cons, prod, PAGE_SIZE, mask, [])
    assert struct.unpack_from("<Q", cons, 0)[0] == 0
    with pytest.raises(ValueError, match="smaller than the ring"):
        ring_read(cons, mmap.mmap(-1, PAGE_SIZE), PAGE_SIZE, mask, [])


@pytest.mark.skipif(ring_read is None, reason="common._speedups not built "
                                              "(tests/common/test_fastpath.py fails)")
def test_positions_and_bounds_that_no_ring_has_are_refused():
    """Found by a review's AddressSanitizer fuzzing: bounds whose sums overflow, a producer
    more than a ring ahead (or about to wrap past 2**64), a consumer position that is not
    8-aligned: refused, not read past the mappings or looped on."""
    import mmap

    cons, prod = bytearray(8), bytearray(64 + 2 * 64)
    with pytest.raises(TypeError):
        ring_read(cons, prod, 8, 2**63 - 1, [])  # mask + 1 overflows
    with pytest.raises(TypeError):
        ring_read(cons, bytearray(16), 2**63 - 8, 7, [])  # base + 2 * size overflows
    with pytest.raises(TypeError):
        ring_read(cons, prod, 12, 63, [])  # base not 8-aligned
    struct.pack_into("<Q", prod, 0, 4096)  # the producer 4 KiB on, in a ring of 64 bytes
    with pytest.raises(ValueError, match="4096 bytes written"):
        ring_read(cons, prod, 64, 63, [])
    struct.pack_into("<Q", cons, 0, 2**64 - 16)
    struct.pack_into("<Q", prod, 0, 2**64 - 1)  # wraps past 2**64 as it is read
    struct.pack_into("<I", prod, 64 + 48, 8)
    out: list = []
    ring_read(cons, prod, 64, 63, out)
    assert out == [bytes(8)] and struct.unpack_from("<Q", cons, 0)[0] == 0
    struct.pack_into("<Q", cons, 0, 3)
    with pytest.raises(ValueError, match="consumer position of 3"):
        ring_read(cons, prod, 64, 63, [])
    assert mmap  # (the mappings of a real ring are the other tests')
