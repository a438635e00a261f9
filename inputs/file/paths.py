"""Which files an input follows: its globs, evaluated again and again, and the directories to
watch so that new matches are noticed at once."""

from __future__ import annotations

import fnmatch
import glob
import os
import stat


class Globber:
    """Absolute path patterns; ``**`` matches any number of directories. ``exclude`` patterns
    leave matching files out: a pattern with a ``/`` is matched against the whole path, one
    without against the file's name (``*.gz``)."""

    def __init__(self, patterns: list[str], *, exclude: list[str] = ()) -> None:
        self.patterns = [os.path.abspath(os.path.expanduser(p)) for p in patterns]
        self.exclude = list(exclude)

    def excluded(self, path: str) -> bool:
        name = os.path.basename(path)
        return any(fnmatch.fnmatchcase(path if "/" in p else name, p) for p in self.exclude)

    def resolve(self) -> dict[str, os.stat_result]:
        """The regular files that match now, with their stat. Unreadable directories and files
        that vanish while we look are simply not matched (the next evaluation tries again)."""
        found: dict[str, os.stat_result] = {}
        for pattern in self.patterns:
            paths = glob.glob(pattern, recursive=True) if glob.has_magic(pattern) else [pattern]
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
        return any(fnmatch.fnmatchcase(path, p) for p in self.patterns) and not (
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
