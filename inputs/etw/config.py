"""The ETW input's configuration: the ``[inputs.etw]`` table and its providers."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated

from msgspec import Meta

from common.config import PositiveFloat, Section


class EtwProviderConfig(Section):
    provider: str
    """A provider's GUID (``{...}``) or its registered name (e.g. Microsoft-Windows-DNS-Client)."""
    level: Annotated[int, Meta(ge=0, le=255)] = 4
    """1 critical .. 5 verbose; 4 (informational) by default."""
    keywords: Annotated[int, Meta(ge=0)] = 0
    """MatchAnyKeyword; 0 leaves the choice to the provider (usually every event)."""
    all_keywords: Annotated[int, Meta(ge=0)] = 0
    """MatchAllKeyword."""
    event_ids: list[Annotated[int, Meta(ge=0, le=65535)]] = []
    """Only these event ids (an EVENT_FILTER_TYPE_EVENT_ID filter, at most 64; Windows 8.1+)."""
    pids: list[Annotated[int, Meta(ge=0)]] = []
    """Only events of these processes (an EVENT_FILTER_TYPE_PID filter, at most 8)."""

    def problems(self, *, environ: Mapping[str, str] | None = None) -> list[str]:
        # here, not at the top: the supervisor imports every component's config, and the
        # Windows structures (ctypes) would be in its RSS and in each of its children's
        from inputs.etw.structs import MAX_EVENT_FILTER_EVENT_ID_COUNT, MAX_EVENT_FILTER_PID_COUNT

        out = []
        if len(set(self.event_ids)) > MAX_EVENT_FILTER_EVENT_ID_COUNT:
            out.append(f"event_ids: at most {MAX_EVENT_FILTER_EVENT_ID_COUNT} ids")
        if len(set(self.pids)) > MAX_EVENT_FILTER_PID_COUNT:
            out.append(f"pids: at most {MAX_EVENT_FILTER_PID_COUNT} pids")
        return out


class EtwInputConfig(Section):
    """The ETW input (Windows only; see docs/etw.md)."""

    session: str = "log-shuttle"
    """Name of the real-time ETW session (a stale one of this name is stopped at start)."""
    process_events: bool = True
    """Process start / stop (Microsoft-Windows-Kernel-Process) as process events."""
    rundown: bool = True
    """At start, an event for every process already running."""
    providers: list[EtwProviderConfig] = []
    buffer_kb: Annotated[int, Meta(ge=4, le=16384)] = 64
    """Size of each of the session's buffers."""
    send_interval: PositiveFloat = 0.2
    """At most this many seconds between a message to the pipeline and the next (when events came)."""
    send_events: Annotated[int, Meta(ge=1, le=100_000)] = 1000
    """At most this many events in one message to the pipeline."""
    loss_interval: PositiveFloat = 5.0
    """Seconds between queries of the session's lost-event counters."""
    max_pending: Annotated[int, Meta(ge=100)] = 100_000
    """Events held between the ETW callback and the pipeline's queue; beyond, they are dropped
    and counted (ETW's delivery thread never waits)."""

    def problems(self, *, environ: Mapping[str, str] | None = None) -> list[str]:
        """What can be told without Windows (names of providers are resolved at start)."""
        from inputs.etw import kernel_process  # (see EtwProviderConfig.problems)
        from inputs.etw.builders import MAX_NAME_CHARS
        from inputs.etw.structs import is_guid

        out = []
        if not self.session or len(self.session.encode("utf-16-le")) // 2 >= MAX_NAME_CHARS:
            out.append(f"session: a session name must have 1 to {MAX_NAME_CHARS - 1} characters")
        if not self.process_events and not self.providers:
            out.append("providers: nothing to trace: enable process_events or give a provider")
        for i, p in enumerate(self.providers):
            where = f"providers[{i}]"
            if (self.process_events and is_guid(p.provider) and "{" + p.provider.strip()
                    .strip("{}").lower() + "}" == kernel_process.PROVIDER):
                out.append(f"{where}: Kernel-Process is already enabled by process_events")
            out += [f"{where}.{problem}" for problem in p.problems(environ=environ)]
        return out
