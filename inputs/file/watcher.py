"""Notifications of change for the file input: watchdog's inotify observer on the watched
directories, and a polling fallback when inotify is unavailable (or ``watch = "poll"``).

The observer's thread only sets a wake-up pipe (and a flag when a directory entry changed); the
input's own loop does all the reading."""

from __future__ import annotations

import logging
import threading

from common.wake import Wakeup
from inputs.file.paths import Globber


class Watcher:
    def __init__(self, globber: Globber, *, mode: str, log: logging.Logger) -> None:
        self.globber = globber
        self.mode = mode
        self.log = log
        self.wakeup = Wakeup()
        self._rescan = threading.Event()
        self._observer = None
        self._watches: dict[tuple[str, bool], object] = {}

    @property
    def polling(self) -> bool:
        return self._observer is None

    def start(self) -> None:
        if self.mode == "poll":
            return
        try:
            from watchdog.observers.inotify import InotifyObserver

            observer = InotifyObserver()
            observer.daemon = True
            observer.start()
        except (OSError, ImportError) as exc:
            if self.mode == "inotify":
                raise
            self.log.warning("inotify unavailable (%s): polling instead", exc)
            return
        self._observer = observer
        self.update()

    def update(self) -> None:
        """Watch the directories the globs need now (new ones appear, old ones may go)."""
        if self._observer is None:
            return
        wanted = set(self.globber.watch_dirs().items())
        for key in list(self._watches):
            if key not in wanted:
                try:
                    self._observer.unschedule(self._watches.pop(key))
                except (KeyError, OSError):
                    pass
        for key in wanted - set(self._watches):
            path, recursive = key
            try:
                self._watches[key] = self._observer.schedule(
                    _Handler(self), path, recursive=recursive)
            except OSError as exc:
                # Too many watches, or the directory went away: the periodic rescan covers it.
                self.log.warning("cannot watch %s (%s): relying on polling for it", path, exc)

    def take_rescan(self) -> bool:
        """Whether a directory entry changed since the last call."""
        if self._rescan.is_set():
            self._rescan.clear()
            return True
        return False

    def stop(self) -> None:
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=5)
            self._observer = None
        self.wakeup.close()


class _Handler:
    """watchdog calls ``dispatch`` on its thread for every event in a watched directory."""

    def __init__(self, watcher: Watcher) -> None:
        self.watcher = watcher

    def dispatch(self, event) -> None:  # noqa: ANN001 (watchdog's FileSystemEvent)
        w = self.watcher
        paths = [event.src_path, getattr(event, "dest_path", "")]
        if event.is_directory:
            if event.event_type == "modified":
                return  # an entry changed in it: that entry has its own event
        elif not any(p and w.globber.matches(_str(p)) for p in paths):
            return
        if event.event_type not in ("modified", "closed", "closed_no_write", "opened"):
            w._rescan.set()
        w.wakeup.set()


def _str(path: str | bytes) -> str:
    return path.decode() if isinstance(path, bytes) else path
