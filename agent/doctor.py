"""``log-shuttle doctor``: whether the eBPF input can run on this machine, and what to do when it
cannot. Prints one line per check (kernel, BTF, tracefs, bcc, headers, privileges), then loads
each probe for real (and unloads it) to tell which ones work here. Each failed check says how to
fix it; the exit code is 1 when something needed failed, else 0.

Also here, for the command line: the eBPF input's checks before the agent starts
(``preflight``), and ``--ebpf-print-program``.
"""

from __future__ import annotations

import sys
from typing import Any, TextIO

import bpf
from agent.config import load_config
from inputs.ebpf.config import EbpfInputConfig
from common.errors import ConfigError
from common.exitcodes import ExitCode
from inputs.ebpf.start import options_of
from inputs.ebpf.checks import Check, environment, problems
from inputs.ebpf.loader import (
    LoadError, ProgramOptions, cflags, close_probe, load_probe, program_text, source_file,
)

PROBE_CHECK_RING_BYTES = 256 * 1024
"""The doctor loads each probe with a small ring buffer: it only checks that it loads."""


def preflight() -> list[str]:
    """The eBPF input's needed checks that fail here (tracefs is mounted if it may be)."""
    return problems(environment(mount=True))


def probe_checks(ready: bool) -> list[Check]:
    """Load, attach and unload each probe, when the machine is ``ready`` for it."""
    out = []
    http = None  # logwrite reads a public map of http's: http stays loaded for its check
    for probe in bpf.PROBES:
        name = f"probe {probe}"
        if not ready:
            out.append(Check(name, False, "not tried", "fix the failed checks above first",
                             needed=False, skipped=True))
            continue
        try:
            obj, _ = load_probe(probe, ProgramOptions(ring_buffer_bytes=PROBE_CHECK_RING_BYTES))
        except LoadError as exc:
            out.append(Check(name, False, f"does not load: {exc}",
                             f"leave {probe!r} out of inputs.ebpf.probes, or report this with "
                             "the output of `log-shuttle --ebpf-print-program`"))
            continue
        count = len(obj.tracepoint_fds)
        if probe == "http":
            http = obj
        else:
            close_probe(obj)
        out.append(Check(name, True, f"loads ({count} tracepoints)"))
    if http is not None:
        close_probe(http)
    return out


def report(checks: list[Check], out: TextIO) -> int:
    width = max(len(c.name) for c in checks)
    failed = [c for c in checks if c.needed and not c.ok]
    print("log-shuttle doctor: what the eBPF input needs", file=out)
    for c in checks:
        mark = "ok" if c.ok else "skip" if c.skipped else "FAIL" if c.needed else "warn"
        print(f"  {mark:<5} {c.name:<{width}}  {c.detail}", file=out)
        if not c.ok and c.fix:
            print(f"  {'':<5} {'':<{width}}  fix: {c.fix}", file=out)
    if failed:
        print(f"result: the eBPF input cannot run here ({len(failed)} problem(s))", file=out)
        return ExitCode.FAILED
    print("result: the eBPF input can run here", file=out)
    return ExitCode.OK


def run(out: TextIO = sys.stdout) -> int:
    env = environment(mount=True)
    return report(env + probe_checks(not problems(env)), out)


def print_program(config_path: str | None, overrides: list[tuple[list[str], Any]],
                  out: TextIO = sys.stdout) -> int:
    """Print each probe of the eBPF input (as configured, else with the defaults) as BCC
    compiles it, with its cflags."""
    try:
        cfg = load_config(config_path, overrides=overrides).inputs.ebpf or EbpfInputConfig()
    except ConfigError:
        cfg = EbpfInputConfig()  # only the eBPF input's part matters here
    found = preflight()
    if found:
        print("log-shuttle: cannot print the BPF programs:\n" +
              "\n".join(f"  - {p}" for p in found), file=sys.stderr)
        return ExitCode.BOOT
    options = options_of(cfg)
    for probe in cfg.probes:
        print(f"/* ===== probe {probe}: BPF(src_file={source_file(probe)!r}, "
              f"cflags={cflags(options)!r}) ===== */", file=out)
        try:
            print(program_text(probe, options), file=out)
        except LoadError as exc:
            print(f"log-shuttle: {exc}", file=sys.stderr)
            return ExitCode.BOOT
    return ExitCode.OK
