"""The ETW input's errors: Windows status codes and bad payloads become these, with the cause kept."""

from __future__ import annotations

from common.errors import LogShuttleError


class EtwError(LogShuttleError):
    """An ETW call failed. ``winerror`` is the Windows status code it returned (0 if none)."""

    def __init__(self, message: str, *, winerror: int = 0) -> None:
        super().__init__(f"{message} (Windows error {winerror})" if winerror else message)
        self.winerror = winerror


class EtwUnavailable(EtwError):
    """ETW exists only on Windows: advapi32 / tdh cannot be loaded on this platform."""


class PayloadError(LogShuttleError):
    """An event's payload does not match the layout of its (provider, id, version): truncated,
    longer than its strings allow, or otherwise malformed. The event is counted and skipped."""
