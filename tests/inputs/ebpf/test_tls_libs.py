"""Finding the libssl files to attach the TLS uprobes to: the system's, and those a running
process maps, as paths through its /proc/PID/root; a copy of the library is another file
(another inode), so it gets its own uprobes (on the real http probe), the same file never twice,
and a file that is not a libssl is refused once and remembered."""

from __future__ import annotations

import logging
import os
import shutil
import ssl  # noqa: F401  (this process maps libssl from here on)
import subprocess

from inputs.ebpf.loader import ProgramOptions, Programs
from inputs.ebpf.tls import TlsAttacher, libssl_of, system_libssl
from tests.inputs.ebpf.conftest import needs_ebpf


def test_this_process_maps_the_system_libssl():
    mine = libssl_of(os.getpid())
    assert mine and all(p.startswith(f"/proc/{os.getpid()}/root/") for p in mine)
    system = system_libssl()
    assert system, "ldconfig -p names no libssl.so.N"
    inodes = {os.stat(p).st_ino for p in system}
    assert {os.stat(p).st_ino for p in mine} <= inodes


def test_a_process_gone_or_without_libssl_gives_nothing():
    proc = subprocess.Popen(["sleep", "30"])
    try:
        assert libssl_of(proc.pid) == set()
    finally:
        proc.kill()
        proc.wait()
    assert libssl_of(proc.pid) == set()


@needs_ebpf
def test_each_library_file_is_attached_once(tmp_path):
    programs = Programs(["http"], ProgramOptions(ring_buffer_bytes=256 * 1024))
    try:
        tls = TlsAttacher(programs.objects["http"], log=logging.getLogger("test"))
        system = sorted(system_libssl())[0]
        assert tls.attach(system) is True
        assert tls.attach(system) is False  # the same file
        assert tls.scan([os.getpid()]) == 0  # this process maps that same file
        copy = tmp_path / "libssl.so.3"
        shutil.copy(system, copy)
        assert tls.attach(str(copy)) is True  # another file (inode): its own uprobes
        assert sorted(tls.attached.values()) == sorted([system, str(copy)])
        not_ssl = tmp_path / "libssl.so.9"
        not_ssl.write_bytes(b"not an ELF file")
        assert tls.attach(str(not_ssl)) is False and not tls.attach(str(not_ssl))
    finally:
        programs.close()
