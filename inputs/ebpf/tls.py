"""HTTPS through OpenSSL: attach the http probe's TLS programs (bpf/http.c, section 4) as
uprobes to every libssl that processes map, so that the probe sees the plaintext of
``SSL_read``/``SSL_read_ex`` (at their return) and ``SSL_write``/``SSL_write_ex``, and the
socket of each ``SSL *`` (``SSL_set_fd``, or the syscalls the call made underneath).

A uprobe is set on a file (its inode), not on a process: one attachment per distinct libssl
covers every process that maps it, now and later. The libraries are found in
``/proc/PID/maps`` (opened through ``/proc/PID/root``, so a container's own libssl is found
too) when the input starts, then in the maps of processes new since the last look (a scan per
second, and a process that exec()s is looked at again). The system's libssl (``ldconfig -p``)
is attached at start even when nothing maps it yet, so that a short-lived client such as curl
is seen from its first request. A process whose libssl is another file (a container's) is
seen from the scan after it mapped it: its first second may be missed.

Not covered (no libssl.so calls to probe): Go's crypto/tls, rustls, BoringSSL or OpenSSL
linked statically (e.g. grpcio, Chrome, Envoy), Java's JSSE, GnuTLS and NSS.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
from collections.abc import Iterable
from typing import Any

LIBSSL = re.compile(r"/libssl\.so(\.[0-9]+)*$")
PROBES = (  # symbol, program at entry (the return is tls_exit_probe for all four)
    ("SSL_read", "tls_read_enter"),
    ("SSL_read_ex", "tls_read_ex_enter"),
    ("SSL_write", "tls_write_enter"),
    ("SSL_write_ex", "tls_write_ex_enter"),
)
SET_FD = ("SSL_set_fd", "tls_set_fd")


def libssl_of(pid: int | str) -> set[str]:
    """The libssl files ``pid`` maps, as paths this process can open."""
    out = set()
    try:
        with open(f"/proc/{pid}/maps") as f:
            for line in f:
                if "libssl" not in line:
                    continue
                path = line.rstrip("\n").split(None, 5)[-1]
                if LIBSSL.search(path):
                    out.add(f"/proc/{pid}/root{path}")
    except OSError:
        pass
    return out


def system_libssl() -> set[str]:
    """The libssl.so.N the dynamic linker would give a program here (``ldconfig -p``)."""
    try:
        text = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True,
                              timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return set()
    return {line.split("=>")[-1].strip() for line in text.splitlines()
            if "=>" in line and re.search(r"\blibssl\.so\.[0-9]", line)}


def _pids() -> set[int]:
    try:
        return {int(p) for p in os.listdir("/proc") if p.isdigit()}
    except OSError:
        return set()


class TlsAttacher:
    """Attaches the TLS programs of the http probe's BPF object ``obj`` to libssl files, once
    per file (device and inode)."""

    def __init__(self, obj: Any, *, log: logging.Logger, skip_pid: int = 0) -> None:
        self.obj = obj
        self.log = log
        self.skip_pid = skip_pid
        self.attached: dict[tuple[int, int], str] = {}
        self.failed: set[tuple[int, int]] = set()
        self.seen: set[int] = set()

    def attach(self, path: str) -> bool:
        """Attach to one library file; True when it is newly attached."""
        try:
            st = os.stat(path)
        except OSError:
            return False
        key = (st.st_dev, st.st_ino)
        if key in self.attached or key in self.failed:
            return False
        name = path.encode()
        done = []
        for sym, fn in PROBES:
            try:
                self.obj.attach_uprobe(name=name, sym=sym.encode(), fn_name=fn.encode())
                self.obj.attach_uretprobe(name=name, sym=sym.encode(),
                                          fn_name=b"tls_exit_probe")
            except Exception:  # an older libssl without the _ex calls: the others still work
                continue
            done.append(sym)
        try:
            self.obj.attach_uprobe(name=name, sym=SET_FD[0].encode(), fn_name=SET_FD[1].encode())
        except Exception:
            pass
        if not done:
            self.failed.add(key)
            self.log.warning("cannot attach to %s: none of %s found", path,
                             ", ".join(s for s, _ in PROBES))
            return False
        self.attached[key] = path
        self.log.info("HTTPS: uprobes on %s (%s)", path, ", ".join(done))
        return True

    def start(self) -> int:
        """Attach to the system's libssl and to every libssl a running process maps."""
        n = sum(self.attach(p) for p in sorted(system_libssl()))
        return n + self.scan()

    def scan(self, pids: Iterable[int] | None = None) -> int:
        """Look at the maps of processes not looked at yet; how many libraries were attached."""
        now = _pids() if pids is None else set(pids)
        new = now - self.seen
        self.seen = now if pids is None else self.seen | now
        n = 0
        for pid in new:
            if pid == self.skip_pid:
                continue
            for path in libssl_of(pid):
                n += self.attach(path)
        return n

    def forget(self, pid: int) -> None:
        """``pid`` exec()ed: it maps other libraries now, look again at the next scan."""
        self.seen.discard(pid)
