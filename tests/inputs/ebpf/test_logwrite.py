"""The logwrite probe's event: decoded from made-up bytes, its offsets checked against
bpf/logwrite.h compiled by the system's C compiler, and its translation (file identity,
per-CPU sequence gaps = losses). The probe itself runs in tests/pipeline/test_tracing_live.py."""

from __future__ import annotations

import shutil
import struct
import subprocess

import pytest

import bpf
from inputs.ebpf import layouts as L
from inputs.ebpf.logwrite import (EV_LOG_WRITE, LOG_WRITE, SIZE, LogWriteTranslator,
                                  decode_log_write)


def raw(*, seq=1, cpu=0, data=b"GET /x 200\n", length=None, req=(0, 0, 0, -1)) -> bytes:
    head = L.HEADER.pack(EV_LOG_WRITE, 10, 11, 0, 5_000, b"nginx\0".ljust(16, b"\0"))
    body = LOG_WRITE.pack(7, len(data) if length is None else length, seq, req[0], req[1], req[2],
                          req[3], cpu, len(data))
    return head + body + data.ljust(128, b"\0")


def test_decode_cuts_data_to_copied():
    w = decode_log_write(raw(data=b"hello\n", req=(100, 200, 0, 4)))
    assert (w.h.pid, w.h.tid, w.fd, w.length, w.data) == (10, 11, 7, 6, b"hello\n")
    assert (w.req_ts, w.resp_ts, w.multi_ts, w.req_fd) == (100, 200, 0, 4)
    with pytest.raises(L.DecodeError):
        decode_log_write(raw()[:SIZE - 1])


def test_translation_gives_the_file_and_counts_gaps_per_cpu():
    t = LogWriteTranslator(lambda pid, fd: (8, 99) if (pid, fd) == (10, 7) else None)
    first = t.event(decode_log_write(raw(seq=1, cpu=0)), 1_000)
    assert (first.dev, first.ino, first.time_ns, first.boot_ns, first.lost_before) == \
        (8, 99, 6_000, 5_000, 0)
    assert t.event(decode_log_write(raw(seq=1, cpu=1)), 0).lost_before == 0  # another CPU
    assert t.event(decode_log_write(raw(seq=4, cpu=0)), 0).lost_before == 2  # 2 and 3 lost
    assert t.event(decode_log_write(raw(seq=5, cpu=0)), 0).lost_before == 0
    assert t.gaps == 2


OFFSETS_C = r"""
#include <stddef.h>
#include <stdio.h>
typedef unsigned char u8; typedef unsigned short u16; typedef unsigned int u32;
typedef int s32; typedef unsigned long long u64;
#define EVENTS_LAYOUT_ONLY
#include "events.h"
#include "serving.h"
#include "logwrite.h"
#define P(s, f) printf(#s "." #f " %zu\n", offsetof(struct s, f))
int main(void) {
    P(log_write_ev, fd); P(log_write_ev, seq); P(log_write_ev, req_ts); P(log_write_ev, multi_ts);
    P(log_write_ev, req_fd); P(log_write_ev, cpu); P(log_write_ev, copied); P(log_write_ev, data);
    printf("serving %zu\n", sizeof(struct serving));
    return 0;
}
"""


@pytest.mark.skipif(shutil.which("cc") is None, reason="needs a C compiler (gcc: ./scripts/setup "
                                                        "installs it with the test extras)")
def test_offsets_match_the_c_header(tmp_path):
    src = tmp_path / "offsets.c"
    src.write_text(OFFSETS_C)
    exe = tmp_path / "offsets"
    subprocess.run(["cc", f"-I{bpf.DIR}", "-o", str(exe), str(src)], check=True)
    got = dict(line.rsplit(" ", 1) for line in
               subprocess.check_output([str(exe)], text=True).splitlines())
    got = {k: int(v) for k, v in got.items()}
    h = L.HEADER.size
    assert (got["log_write_ev.fd"], got["log_write_ev.seq"], got["log_write_ev.req_ts"]) == \
        (h, h + 8, h + 16)
    assert (got["log_write_ev.multi_ts"], got["log_write_ev.req_fd"]) == (h + 32, h + 40)
    assert (got["log_write_ev.cpu"], got["log_write_ev.copied"]) == (h + 44, h + 46)
    assert got["log_write_ev.data"] == SIZE
    assert got["serving"] == 32
    assert struct.calcsize("<" + LOG_WRITE.format.lstrip("<")) == SIZE - h
