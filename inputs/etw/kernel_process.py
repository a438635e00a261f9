"""Microsoft-Windows-Kernel-Process {22fb2cd6-0e7b-422b-a0c7-2fad1fd0e716}: ProcessStart,
ProcessStop and ProcessRundown payloads, every version of the manifest, into ProcessEvents.

The layouts are fixed by the provider's manifest, so they are decoded here directly (no TDH
call on the hot path), by the event's id and version:

    ProcessStart (1)   v0  ProcessID CreateTime ParentProcessID SessionID ImageName
                       v1  ... SessionID Flags ImageName
                       v2  v1 + ImageChecksum TimeDateStamp PackageFullName PackageRelativeAppId
                       v3  ProcessID ProcessSequenceNumber CreateTime ParentProcessID
                           ParentProcessSequenceNumber SessionID Flags ProcessTokenElevationType
                           ProcessTokenIsElevated MandatoryLabel(SID) ImageName ImageChecksum
                           TimeDateStamp PackageFullName PackageRelativeAppId
    ProcessStop (2)    v0  ProcessID CreateTime ExitTime ExitCode TokenElevationType HandleCount
                           CommitCharge CommitPeak ImageName(ANSI)
                       v1  ... CommitPeak CPUCycleCount ReadOperationCount WriteOperationCount
                           ReadTransferKiloBytes WriteTransferKiloBytes HardFaultCount ImageName
                       v2  v1 with ProcessSequenceNumber after ProcessID
    ProcessRundown (15) v0 = ProcessStart v2, v1 = ProcessStart v3 (sent on CAPTURE_STATE)

ImageName is the NT path of the image (``\\Device\\HarddiskVolume3\\...``) on start and rundown,
the bare file name on stop. Every ProcessEvent's ``start_ns`` is the process's CreateTime in
nanoseconds since the Unix epoch: the same value in its start, rundown and stop events, so
(pid, start_ns) is a key that survives pid reuse (see docs/etw.md).
"""

from __future__ import annotations

import ntpath
from typing import Any

from common.events import ProcessEvent
from inputs.etw.errors import PayloadError
from inputs.etw.payload import Reader
from inputs.etw.structs import guid_bytes

PROVIDER = "{22fb2cd6-0e7b-422b-a0c7-2fad1fd0e716}"
PROVIDER_BYTES = guid_bytes(PROVIDER)
KEYWORD_PROCESS = 0x10
"""WINEVENT_KEYWORD_PROCESS: process start, stop and rundown."""
PROCESS_START, PROCESS_STOP, PROCESS_RUNDOWN = 1, 2, 15

_START_V0 = (("ProcessID", "u32"), ("CreateTime", "filetime"), ("ParentProcessID", "u32"),
             ("SessionID", "u32"), ("ImageName", "utf16z"))
_START_V1 = (*_START_V0[:4], ("Flags", "u32"), ("ImageName", "utf16z"))
_START_V2 = (*_START_V1, ("ImageChecksum", "u32"), ("TimeDateStamp", "u32"),
             ("PackageFullName", "utf16z"), ("PackageRelativeAppId", "utf16z"))
_START_V3 = (("ProcessID", "u32"), ("ProcessSequenceNumber", "u64"), ("CreateTime", "filetime"),
             ("ParentProcessID", "u32"), ("ParentProcessSequenceNumber", "u64"),
             ("SessionID", "u32"), ("Flags", "u32"), ("ProcessTokenElevationType", "u32"),
             ("ProcessTokenIsElevated", "u32"), ("MandatoryLabel", "sid"),
             ("ImageName", "utf16z"), ("ImageChecksum", "u32"), ("TimeDateStamp", "u32"),
             ("PackageFullName", "utf16z"), ("PackageRelativeAppId", "utf16z"))
_STOP_V0 = (("ProcessID", "u32"), ("CreateTime", "filetime"), ("ExitTime", "filetime"),
            ("ExitCode", "u32"), ("TokenElevationType", "u32"), ("HandleCount", "u32"),
            ("CommitCharge", "u64"), ("CommitPeak", "u64"), ("ImageName", "ansiz"))
_STOP_V1 = (*_STOP_V0[:8], ("CPUCycleCount", "u64"), ("ReadOperationCount", "u32"),
            ("WriteOperationCount", "u32"), ("ReadTransferKiloBytes", "u32"),
            ("WriteTransferKiloBytes", "u32"), ("HardFaultCount", "u32"), ("ImageName", "ansiz"))
_STOP_V2 = (_STOP_V1[0], ("ProcessSequenceNumber", "u64"), *_STOP_V1[1:])

LAYOUTS: dict[tuple[int, int], tuple[tuple[str, str], ...]] = {
    (PROCESS_START, 0): _START_V0,
    (PROCESS_START, 1): _START_V1,
    (PROCESS_START, 2): _START_V2,
    (PROCESS_START, 3): _START_V3,
    (PROCESS_STOP, 0): _STOP_V0,
    (PROCESS_STOP, 1): _STOP_V1,
    (PROCESS_STOP, 2): _STOP_V2,
    (PROCESS_RUNDOWN, 0): _START_V2,
    (PROCESS_RUNDOWN, 1): _START_V3,
}
"""(event id, version) -> the payload's fields in order, as (name, kind)."""

_KINDS = {PROCESS_START: "exec", PROCESS_STOP: "exit", PROCESS_RUNDOWN: "rundown"}


def handles(event_id: int) -> bool:
    """True for the events of this provider that become ProcessEvents."""
    return event_id in _KINDS


def decode(event_id: int, version: int, payload: bytes) -> dict[str, Any]:
    """The payload's fields by name. Raises PayloadError for an unknown version or bad bytes."""
    layout = LAYOUTS.get((event_id, version))
    if layout is None:
        raise PayloadError(f"Kernel-Process event {event_id} version {version}: no known layout")
    r = Reader(payload)
    out: dict[str, Any] = {}
    for name, kind in layout:
        field = f"Kernel-Process {event_id} v{version} {name}"
        if kind == "u32":
            out[name] = r.u32(field)
        elif kind == "u64":
            out[name] = r.u64(field)
        elif kind == "filetime":
            out[name] = r.filetime_ns(field)
        elif kind == "sid":
            out[name] = r.sid(field)
        elif kind == "utf16z":
            out[name] = r.utf16z(field)
        else:  # ansiz
            out[name] = r.ansiz(field)
    return out


def process_event(event_id: int, version: int, payload: bytes, *, time_ns: int) -> ProcessEvent:
    """A ProcessEvent (kind exec / exit / rundown, source "etw") from one event's payload.

    ``time_ns`` is the event's own time (its header's timestamp)."""
    fields = decode(event_id, version, payload)
    image = fields["ImageName"]
    if event_id == PROCESS_STOP:
        return ProcessEvent(kind="exit", time_ns=time_ns, pid=fields["ProcessID"],
                            comm=ntpath.basename(image), exit_code=fields["ExitCode"],
                            start_ns=fields["CreateTime"], source="etw")
    return ProcessEvent(kind=_KINDS[event_id], time_ns=time_ns, pid=fields["ProcessID"],
                        ppid=fields["ParentProcessID"], comm=ntpath.basename(image),
                        filename=image, start_ns=fields["CreateTime"], source="etw")
