"""Notifications of change for the file input: inotify on the watched directories, read by the
input's own loop (inputs/file/inotify.py), and a polling fallback when inotify is unavailable
(or ``watch = "poll"``).

There is no watcher thread: the input sleeps in ``poll`` on ``wakeup.fileno()`` (the inotify
descriptor) and, once awake, calls ``wakeup.clear()``, which reads every queued event at once
and says whether any concerned a file the globs can match (a write, a close after writing) or
changed a directory's entries (which also asks for a glob evaluation: ``take_rescan``). While the
input is busy or lingers, the kernel merges repeated events, so a file written a thousand times
costs one wake-up, not a thousand. A recursive watch (a pattern with wildcards in its directory
part) watches every directory below its root, and each new one as it appears."""

from __future__ import annotations

import errno
import logging
import os

from common.wake import Wakeup
from inputs.file import inotify
from inputs.file.paths import Globber


class _Events:
    """``wakeup`` with inotify: readable when events are queued; ``clear`` reads them and says
    whether any matters to the input."""

    def __init__(self, watcher: Watcher, ino: inotify.Inotify) -> None:
        self._watcher = watcher
        self._ino = ino

    def fileno(self) -> int:
        return self._ino.fileno()

    def clear(self) -> bool:
        return self._watcher._take_events()

    def close(self) -> None:
        self._ino.close()


class _NoEvents:
    """``wakeup`` when polling: a pipe nobody writes to (only the poll interval wakes)."""

    def __init__(self) -> None:
        self._pipe = Wakeup()

    def fileno(self) -> int:
        return self._pipe.fileno()

    def clear(self) -> bool:
        self._pipe.clear()
        return False

    def close(self) -> None:
        self._pipe.close()


class Watcher:
    def __init__(self, globber: Globber, *, mode: str, log: logging.Logger) -> None:
        self.globber = globber
        self.mode = mode
        self.log = log
        self.wakeup: _Events | _NoEvents = _NoEvents()
        self._ino: inotify.Inotify | None = None
        self._rescan = False
        self._watches: dict[tuple[str, bool], set[int]] = {}
        """(root directory, recursive) the globs need -> its watch descriptors."""
        self._dirs: dict[int, str] = {}
        """Watch descriptor -> the directory it watches."""
        self._recursive: dict[int, int] = {}
        """Watch descriptor -> how many recursive roots it is under (new subdirectories of those
        are watched as they appear)."""

    @property
    def polling(self) -> bool:
        return self._ino is None

    def start(self) -> None:
        if self.mode == "poll":
            return
        try:
            if not inotify.available():
                raise OSError(errno.ENOSYS, "inotify is Linux only")
            ino = inotify.Inotify()
        except OSError as exc:
            if self.mode == "inotify":
                raise
            self.log.warning("inotify unavailable (%s): polling instead", exc)
            return
        self.wakeup.close()
        self._ino = ino
        self.wakeup = _Events(self, ino)
        self.update()

    def update(self) -> None:
        """Watch the directories the globs need now (new ones appear, old ones may go)."""
        if self._ino is None:
            return
        wanted = set(self.globber.watch_dirs().items())
        for key in list(self._watches):
            if key not in wanted:
                for wd in self._watches.pop(key):
                    self._unwatch(wd, recursive=key[1])
        for key in wanted - set(self._watches):
            path, recursive = key
            wds: set[int] = set()
            self._watches[key] = wds
            self._watch_tree(path, recursive, wds)

    def take_rescan(self) -> bool:
        """Whether a directory entry changed since the last call."""
        rescan, self._rescan = self._rescan, False
        return rescan

    def stop(self) -> None:
        self.wakeup.close()
        self._ino = None
        self._watches.clear()
        self._dirs.clear()
        self._recursive.clear()

    # --- inside --------------------------------------------------------------------------------

    def _watch_tree(self, path: str, recursive: bool, wds: set[int]) -> None:
        todo = [path]
        while todo:
            d = todo.pop()
            try:
                wd = self._ino.add(d)
            except OSError as exc:
                # Too many watches, or the directory went away: the periodic rescan covers it.
                self.log.warning("cannot watch %s (%s): relying on polling for it", d,
                                 exc.strerror)
                continue
            wds.add(wd)
            self._dirs[wd] = d
            if recursive:
                self._recursive[wd] = self._recursive.get(wd, 0) + 1
                try:
                    with os.scandir(d) as it:
                        todo += [e.path for e in it if e.is_dir(follow_symlinks=False)]
                except OSError:
                    pass

    def _unwatch(self, wd: int, *, recursive: bool) -> None:
        if recursive and wd in self._recursive:
            self._recursive[wd] -= 1
            if self._recursive[wd] <= 0:
                del self._recursive[wd]
        if any(wd in wds for wds in self._watches.values()):
            return  # another root still needs it
        self._dirs.pop(wd, None)
        self._recursive.pop(wd, None)
        if self._ino is not None:
            self._ino.remove(wd)

    def _take_events(self) -> bool:
        """Read what inotify queued; True when any of it concerns the input."""
        if self._ino is None:
            return False
        relevant = False
        matches = self.globber.matches
        for wd, mask, name in self._ino.read():
            if mask & inotify.IN_Q_OVERFLOW:
                self._rescan = relevant = True  # events were lost: look at everything
                continue
            if mask & inotify.IN_IGNORED:
                self._dirs.pop(wd, None)
                self._recursive.pop(wd, None)
                for wds in self._watches.values():
                    wds.discard(wd)
                continue
            directory = self._dirs.get(wd)
            if directory is None:
                continue
            if mask & (inotify.IN_DELETE_SELF | inotify.IN_MOVE_SELF):
                self._rescan = relevant = True
                continue
            path = os.path.join(directory, os.fsdecode(name)) if name else directory
            if mask & inotify.IN_ISDIR:
                if mask & inotify.ENTRY_CHANGED:
                    self._rescan = relevant = True
                    if mask & (inotify.IN_CREATE | inotify.IN_MOVED_TO) \
                            and wd in self._recursive:
                        for key, wds in self._watches.items():
                            if key[1] and wd in wds:
                                self._watch_tree(path, True, wds)
                continue
            if not matches(path):
                continue
            relevant = True
            if mask & inotify.ENTRY_CHANGED:
                self._rescan = True
        return relevant
