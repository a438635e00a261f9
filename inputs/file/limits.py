"""File descriptors for the file input: the soft RLIMIT_NOFILE raised to the hard one at start,
and the budget of files open at once derived from it (docs/file-input.md, "Many files").

The budget leaves a reserve for the rest of the process: the queues' shared memory, the
inotify descriptor and wake-up pipes, the checkpoint being written, the directories a glob
evaluation reads, a file being classified."""

from __future__ import annotations

import logging

RESERVE_MIN = 32
"""Descriptors always left to the rest of the input process."""

RESERVE_SHARE = 8
"""... or one in this many of the limit, whichever is more."""


def raise_descriptor_limit(log: logging.Logger) -> int:
    """Raise the soft RLIMIT_NOFILE to the hard one (to fs.nr_open where the hard limit is
    unlimited); return the soft limit in force (0 where the platform has none)."""
    try:
        import resource
    except ImportError:  # Windows
        return 0
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard
    if hard == resource.RLIM_INFINITY:
        try:
            with open("/proc/sys/fs/nr_open") as f:
                target = int(f.read())
        except (OSError, ValueError):
            target = soft
    if soft == resource.RLIM_INFINITY or soft >= target:
        log.debug("descriptor limit: %s (already at its hard limit)", soft)
        return soft if soft != resource.RLIM_INFINITY else target
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError) as exc:
        log.debug("descriptor limit: %d; cannot raise it to %d: %s", soft, target, exc)
        return soft
    log.debug("descriptor limit raised from %d to %d (the hard limit)", soft, target)
    return target


def descriptor_budget(*, limit: int, configured: int, log: logging.Logger) -> int:
    """How many files may be open at once: ``configured`` (``max_open_files``) if set and
    possible, else the limit less the reserve; 0 means no limit (no descriptor limit known)."""
    if limit <= 0:
        return configured
    derived = max(1, limit - max(RESERVE_MIN, limit // RESERVE_SHARE))
    if configured <= 0:
        return derived
    if configured > derived:
        log.warning("max_open_files = %d does not fit the descriptor limit %d: using %d "
                    "(raise the limit, e.g. LimitNOFILE= in the systemd unit)",
                    configured, limit, derived)
        return derived
    return configured
