"""What the eBPF input needs from this machine, checked one by one: the kernel, BTF, tracefs,
BCC, kernel headers, privileges. Each failed check says how to fix it. ``log-shuttle doctor``
prints them all (and which probes load); the input runs the needed ones before it loads
anything, so that a missing piece is one clear message, never a traceback.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

TRACEFS = Path("/sys/kernel/tracing")
BTF = Path("/sys/kernel/btf/vmlinux")
MIN_KERNEL = (5, 8)
"""BPF ring buffers and bpf_ktime_get_boot_ns() came with Linux 5.8."""
SETUP_HINT = "run ./scripts/setup as root"

# Capability bits (linux/capability.h)
CAP_SYS_ADMIN = 21
CAP_PERFMON = 38
CAP_BPF = 39


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""
    needed: bool = True
    """A failed needed check stops the eBPF input; the others only inform."""
    skipped: bool = False
    """Not tried, because a check it depends on failed."""


def kernel_release() -> str:
    return os.uname().release


def kernel_version(release: str | None = None) -> tuple[int, int]:
    parts = (release or kernel_release()).split(".")
    try:
        return int(parts[0]), int("".join(c for c in parts[1] if c.isdigit()) or 0)
    except (IndexError, ValueError):
        return 0, 0


def check_kernel() -> Check:
    release = kernel_release()
    version = kernel_version(release)
    ok = version >= MIN_KERNEL
    return Check("kernel", ok, f"Linux {release}",
                 "" if ok else f"needs Linux {MIN_KERNEL[0]}.{MIN_KERNEL[1]} or later "
                               "(BPF ring buffers)")


def check_btf() -> Check:
    ok = BTF.exists()
    return Check("BTF", ok, str(BTF) if ok else f"{BTF} is missing",
                 "" if ok else "a kernel built with CONFIG_DEBUG_INFO_BTF=y; the probes do not "
                               "need it (they read only tracepoint arguments)", needed=False)


def _capabilities() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    except (OSError, ValueError):
        pass
    return 0


def check_privileges() -> Check:
    caps = _capabilities()
    has = lambda bit: bool(caps >> bit & 1)  # noqa: E731
    if os.geteuid() == 0 and has(CAP_SYS_ADMIN):
        return Check("privileges", True, "root")
    if has(CAP_SYS_ADMIN) or (has(CAP_BPF) and has(CAP_PERFMON)):
        return Check("privileges", True, f"uid {os.geteuid()} with CAP_BPF and CAP_PERFMON")
    return Check("privileges", False, f"uid {os.geteuid()} without CAP_BPF/CAP_PERFMON",
                 "run as root (sudo log-shuttle ...): loading BPF programs needs it")


def tracefs_mounted() -> bool:
    """Whether tracefs is mounted at TRACEFS (from /proc/self/mounts: an unprivileged user
    may not look inside it)."""
    try:
        with open("/proc/self/mounts") as f:
            return any(line.split()[1:3] == [str(TRACEFS), "tracefs"] for line in f)
    except OSError:
        return False


def check_tracefs(*, mount: bool = True) -> Check:
    """Whether tracefs is mounted at /sys/kernel/tracing; mounts it when allowed to (root)."""
    if tracefs_mounted():
        if not os.access(TRACEFS / "events", os.R_OK | os.X_OK, effective_ids=True):
            # Capabilities without root (CAP_BPF, CAP_PERFMON) load programs, but BCC reads
            # each tracepoint's format there: tracefs is root's alone by default (mode 0700).
            return Check("tracefs", False, f"mounted at {TRACEFS}, but uid {os.geteuid()} cannot "
                         "read it (BCC reads the tracepoints' formats there)",
                         "run as root (sudo log-shuttle ...), or remount it readable: "
                         f"mount -o remount,mode=0755 {TRACEFS}")
        return Check("tracefs", True, f"mounted at {TRACEFS}")
    if mount and os.geteuid() == 0:
        result = subprocess.run(["mount", "-t", "tracefs", "nodev", str(TRACEFS)],
                                capture_output=True, text=True)
        if result.returncode == 0 and tracefs_mounted():
            return Check("tracefs", True, f"mounted it at {TRACEFS}")
        return Check("tracefs", False, f"cannot mount at {TRACEFS}: "
                     f"{result.stderr.strip() or result.returncode}",
                     "a kernel with CONFIG_TRACING; mount -t tracefs nodev /sys/kernel/tracing")
    return Check("tracefs", False, f"not mounted at {TRACEFS}",
                 "as root: mount -t tracefs nodev /sys/kernel/tracing (the agent mounts it "
                 "when run as root)")


def check_bcc() -> Check:
    try:
        import bcc  # noqa: F401  (Debian's python3-bpfcc, linked into the venv by the setup)
    except ImportError as exc:
        return Check("bcc", False, f"cannot import bcc: {exc}",
                     "install Debian's python3-bpfcc and link it into the venv: "
                     f"{SETUP_HINT} (never pip install the unrelated 'bcc' of PyPI)")
    except Exception as exc:  # libbcc.so missing or broken: bcc raises at import
        return Check("bcc", False, f"bcc fails to load: {exc}",
                     f"reinstall Debian's libbpfcc and python3-bpfcc: {SETUP_HINT}")
    where = Path(bcc.__file__).resolve().parent
    return Check("bcc", True, f"bcc {getattr(bcc, '__version__', '?')} ({where})")


def headers_dir() -> Path:
    return Path("/lib/modules") / kernel_release() / "build"


def check_headers() -> Check:
    build = headers_dir()
    if (build / "include").is_dir() or (build / "Makefile").exists():
        target = build.resolve()
        note = "" if target.name.startswith(f"linux-headers-{kernel_release()}") else \
            " (the nearest available version, linked by the setup)"
        return Check("headers", True, f"{build} -> {target}{note}")
    return Check("headers", False, f"no kernel headers at {build}",
                 f"{SETUP_HINT}: it installs Debian's linux-headers and links the nearest "
                 "version when the running kernel has none")


def environment(*, mount: bool = True) -> list[Check]:
    """Every check but the probes', in the order doctor prints them."""
    return [check_kernel(), check_btf(), check_tracefs(mount=mount), check_bcc(),
            check_headers(), check_privileges()]


def problems(checks: list[Check]) -> list[str]:
    """The failed needed checks as one line each: what is wrong, then how to fix it."""
    return [f"{c.name}: {c.detail}; fix: {c.fix}" for c in checks if c.needed and not c.ok]
