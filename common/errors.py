"""The project's own exceptions. Errors from libraries are mapped to these at the boundary,
with the original kept as ``__cause__`` (``raise ConfigError(...) from exc``)."""

from __future__ import annotations


class LogShuttleError(Exception):
    """Base of every error log-shuttle raises on purpose."""


class ConfigError(LogShuttleError):
    """The configuration is invalid. ``problems`` lists every problem found, each naming its key."""

    def __init__(self, problems: list[str], *, source: str | None = None) -> None:
        self.problems = list(problems)
        self.source = source
        where = f" in {source}" if source else ""
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"invalid configuration{where} ({len(self.problems)} problem(s)):\n{lines}")
