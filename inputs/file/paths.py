"""Which files an input follows: its globs, evaluated again and again, and the directories to
watch so that new matches are noticed at once.

Globs are expanded here rather than by ``glob.glob``, with its rules (``**`` is any number of
directories; ``*``, ``?`` and ``[...]`` match no name starting with a dot unless the pattern's
part does), for one difference: ``glob.glob`` takes a directory it cannot list for an empty one,
even when the listing failed for want of descriptors or memory. Concluding from that that every
file in it was deleted would let them go and read them again later; ``resolve`` raises
:class:`ScanError` instead, and the caller concludes nothing from that evaluation."""

from __future__ import annotations

import errno
import fnmatch
import glob
import os
import stat
from collections.abc import Iterator

from common.errors import LogShuttleError

TRANSIENT = (errno.EMFILE, errno.ENFILE, errno.ENOMEM)
"""Listing errors that say nothing about the directory: the evaluation fails as a whole."""


class ScanError(LogShuttleError):
    """The globs cannot be evaluated now (out of descriptors or memory)."""

    def __init__(self, message: str, *, errno: int) -> None:
        super().__init__(message)
        self.errno = errno


class Globber:
    """Absolute path patterns; ``**`` matches any number of directories. ``exclude`` patterns
    leave matching files out: a pattern with a ``/`` is matched against the whole path, one
    without against the file's name (``*.gz``)."""

    def __init__(self, patterns: list[str], *, exclude: list[str] = ()) -> None:
        self.patterns = [os.path.abspath(os.path.expanduser(p)) for p in patterns]
        self.exclude = list(exclude)
        # For fnmatch, ``**`` is ``*``: ``/x/**/*.log`` would want a directory between, so the
        # form with no directory (``/x/*.log``) is tried too.
        self._match_patterns = sorted({q for p in self.patterns
                                       for q in (p, p.replace(os.sep + "**" + os.sep, os.sep))})

    def excluded(self, path: str) -> bool:
        name = os.path.basename(path)
        return any(fnmatch.fnmatchcase(path if "/" in p else name, p) for p in self.exclude)

    def resolve(self) -> dict[str, os.stat_result]:
        """The regular files that match now, with their stat. Unreadable directories and files
        that vanish while we look are simply not matched (the next evaluation tries again).
        Raises ScanError when a directory cannot be listed for want of descriptors or memory."""
        found: dict[str, os.stat_result] = {}
        for pattern in self.patterns:
            paths = expand(pattern) if glob.has_magic(pattern) else [pattern]
            for path in paths:
                if path in found or (self.exclude and self.excluded(path)):
                    continue
                try:
                    st = os.stat(path)
                except OSError:
                    continue
                if stat.S_ISREG(st.st_mode):
                    found[path] = st
        return found

    def matches(self, path: str) -> bool:
        """Whether a path may match a pattern (to filter notifications; errs on matching)."""
        return any(fnmatch.fnmatchcase(path, p) for p in self._match_patterns) and not (
            self.exclude and self.excluded(path))

    def watch_dirs(self) -> dict[str, bool]:
        """Existing directories to watch -> whether to watch them recursively: the directory of a
        pattern, or, when the directory part has wildcards, the deepest directory without any."""
        dirs: dict[str, bool] = {}
        for pattern in self.patterns:
            parent = os.path.dirname(pattern)
            recursive = glob.has_magic(parent)
            while glob.has_magic(parent):
                parent = os.path.dirname(parent)
            while not os.path.isdir(parent) and parent != os.path.dirname(parent):
                # Not there yet: watch the nearest existing ancestor for it to appear.
                parent = os.path.dirname(parent)
                recursive = True
            dirs[parent] = dirs.get(parent, False) or recursive
        return dirs


def expand(pattern: str) -> list[str]:
    """The paths that match an absolute glob pattern, like ``glob.glob(pattern,
    recursive=True)``, names in each directory in sorted order. Raises ScanError when a
    directory cannot be listed for want of descriptors or memory (other errors: no match)."""
    parts = [p for p in pattern.split(os.sep) if p]
    return list(_walk(os.sep, parts))


def _walk(base: str, parts: list[str]) -> Iterator[str]:
    if not parts:
        yield base
        return
    head, rest = parts[0], parts[1:]
    if head == "**":
        if not rest:  # everything below, files and directories
            yield base
            yield from _below(base, dirs_only=False)
            return
        yield from _walk(base, rest)  # no directory at all
        for sub in _below(base, dirs_only=True):
            yield from _walk(sub, rest)
    elif not glob.has_magic(head):
        path = os.path.join(base, head)
        if rest:
            if os.path.isdir(path):
                yield from _walk(path, rest)
        elif os.path.lexists(path):
            yield path
    else:
        hidden_ok = head.startswith(".")
        for name, is_dir in _list(base):
            if (hidden_ok or not name.startswith(".")) and fnmatch.fnmatchcase(name, head):
                path = os.path.join(base, name)
                if not rest:
                    yield path
                elif is_dir:
                    yield from _walk(path, rest)


def _below(base: str, *, dirs_only: bool,
           ancestors: frozenset[tuple[int, int]] = frozenset()) -> Iterator[str]:
    """What ``**`` matches below ``base`` (names starting with a dot left out): directories,
    and files too unless ``dirs_only``. Symbolic links to directories are followed, but not
    into a directory that is its own ancestor (a loop)."""
    for name, is_dir in _list(base):
        if name.startswith("."):
            continue
        path = os.path.join(base, name)
        if not is_dir:
            if not dirs_only:
                yield path
            continue
        try:
            st = os.stat(path)
        except OSError:
            continue
        key = (st.st_dev, st.st_ino)
        if key in ancestors:
            continue
        yield path
        yield from _below(path, dirs_only=dirs_only, ancestors=ancestors | {key})


def _list(directory: str) -> list[tuple[str, bool]]:
    """(name, is a directory) of the entries of ``directory``, sorted; none if it cannot be
    listed (missing, not a directory, no permission); ScanError if out of descriptors/memory."""
    try:
        with os.scandir(directory) as it:
            entries = []
            for entry in it:
                try:
                    is_dir = entry.is_dir()
                except OSError:
                    is_dir = False
                entries.append((entry.name, is_dir))
    except OSError as exc:
        if exc.errno in TRANSIENT:
            raise ScanError(f"cannot list {directory}: {exc.strerror}", errno=exc.errno) from exc
        return []
    entries.sort()
    return entries
