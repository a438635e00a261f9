"""The whole consumer path on Linux: synthetic EVENT_RECORDs in memory, delivered through the
real EVENT_RECORD_CALLBACK function pointer by a fake ProcessTrace, come out of a real ShmQueue
as the right Events; losses become LossEvents. Only the Windows calls are faked."""

from __future__ import annotations

import logging
import struct
import sys
import threading

import pytest

from inputs.etw.config import EtwInputConfig, EtwProviderConfig
from common.component import BootError, Context, Stop
from common.events import BatchCodec, EtwEvent, LossEvent, ProcessEvent
from common.shmqueue import Empty, ShmQueue
from inputs.etw import build, tdh
from inputs.etw.records import LOST_EVENT_PROVIDER, RT_LOST_EVENT, EtwInputStats, Pending, RecordHandler
from inputs.etw.runner import LossTracker, provider_specs
from inputs.etw.structs import (
    ERROR_ACCESS_DENIED,
    EVENT_CONTROL_CODE_CAPTURE_STATE,
    EVENT_CONTROL_CODE_DISABLE_PROVIDER,
    EVENT_CONTROL_CODE_ENABLE_PROVIDER,
    EVENT_HEADER_FLAG_STRING_ONLY,
    EVENT_TRACE_CONTROL_QUERY,
    EVENT_TRACE_CONTROL_STOP,
    guid_bytes,
)
from tests.inputs.etw.helpers import (
    CREATE_NS,
    EXIT_NS,
    KP,
    FakeWindowsApi,
    event_info,
    make_record,
    start_payload,
    stop_payload,
    u16z,
)

DNS = "{1c95126e-7eea-49a9-a3fe-a378b03ddb4d}"
LOG = logging.getLogger("test")


@pytest.fixture
def queue():
    q = ShmQueue.create(name="etw-test", capacity=1 << 20)
    yield q
    q.destroy()


def dns_record(name: str = "example.org", status: int = 0):
    return make_record(DNS, 3008, 0, u16z(name) + struct.pack("<I", status), opcode=0, level=4,
                       keyword=0x8000000000000000, pid=321, tid=654)


DNS_SCHEMA = event_info([("QueryName", 0, tdh.IN_UNICODESTRING, 0, 1, 0),
                         ("QueryStatus", 0, tdh.IN_UINT32, 0, 1, 0)],
                        provider_name="Microsoft-Windows-DNS-Client", task="Query")


def run_input(api, queue, cfg, *, expect: int):
    """Run the input on its thread until ``expect`` events came out of the queue, stop it, and
    return every event read (the remainder after the stop included)."""
    stop = Stop()
    ctx = Context(name="input etw", config=cfg, host="h", stop=stop, producers=[queue.producer()], log=LOG)
    runner = build(ctx, api=api)
    errors = []

    def target():
        try:
            runner.run()
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    consumer, codec, events = queue.consumer(), BatchCodec(), []
    try:
        while len(events) < expect:
            events += codec.decode(consumer.get(timeout=20)).events
    finally:
        stop.set()
        thread.join(30)
    while True:
        try:
            events += codec.decode(consumer.get_nowait()).events
        except Empty:
            break
    assert not errors, errors
    return runner, events


def test_records_through_the_callback_become_events_on_a_real_queue(queue):
    records = [make_record(KP, 15, 1, start_payload(3, pid=10, ppid=4)),  # rundown
               make_record(KP, 1, 3, start_payload(3)),
               dns_record(),
               make_record(KP, 2, 2, stop_payload(2)),
               make_record(KP, 1, 3, start_payload(3)[:30]),  # truncated: counted, skipped
               make_record(LOST_EVENT_PROVIDER, 0, 0, b"", opcode=RT_LOST_EVENT)]
    api = FakeWindowsApi(records=records, schemas={(3008, 0): DNS_SCHEMA}, lost=(5, 1, 0))
    cfg = EtwInputConfig(providers=[EtwProviderConfig(provider=DNS)], loss_interval=3600.0)
    runner, events = run_input(api, queue, cfg, expect=4)

    procs = [e for e in events if isinstance(e, ProcessEvent)]
    assert [(p.kind, p.pid) for p in procs] == [("rundown", 10), ("exec", 4242), ("exit", 4242)]
    assert procs[1].start_ns == procs[2].start_ns == CREATE_NS
    assert procs[2].time_ns == EXIT_NS and procs[2].exit_code == 3
    (dns,) = [e for e in events if isinstance(e, EtwEvent)]
    assert dns.provider == DNS and dns.event_id == 3008 and (dns.pid, dns.tid) == (321, 654)
    assert dns.provider_name == "Microsoft-Windows-DNS-Client" and dns.task == "Query"
    assert dns.fields == {"QueryName": "example.org", "QueryStatus": 0}
    assert dns.keywords == 0x8000000000000000
    losses = {e.what: e.count for e in events if isinstance(e, LossEvent)}
    assert losses == {"session events": 5, "session real-time buffers": 1, "real-time notices": 1}
    assert all(e.source == "input etw" for e in events if isinstance(e, LossEvent))
    assert runner.stats.decode_errors == 1 and runner.stats.process_events == 3
    # The session was stopped cleanly: disabled, stopped, closed, its thread joined.
    assert api.closed.is_set() and not runner.session.alive()


def test_session_lifecycle_order_and_parameters(queue):
    api = FakeWindowsApi(stale=True)
    cfg = EtwInputConfig(providers=[EtwProviderConfig(provider=DNS, level=5, keywords=0x10,
                                                      event_ids=[3008])], loss_interval=3600.0)
    run_input(api, queue, cfg, expect=0)
    calls = api.calls
    assert calls[0] == ("control", 0, "log-shuttle", EVENT_TRACE_CONTROL_STOP)  # the stale session
    assert calls[1][:2] == ("start", "log-shuttle")
    enables = [c for c in calls if c[0] == "enable"]
    assert enables[0][1:6] == (KP, EVENT_CONTROL_CODE_ENABLE_PROVIDER, 4, 0x10, 0)
    assert enables[1][1:5] == (DNS, EVENT_CONTROL_CODE_ENABLE_PROVIDER, 5, 0x10)
    assert enables[1][6].FilterDescCount == 1  # the event-id filter
    names = api.names()
    # Rundown is asked for only once the consumer is open.
    capture = next(i for i, c in enumerate(calls) if c[0] == "enable" and c[2] == EVENT_CONTROL_CODE_CAPTURE_STATE)
    assert names.index("open") < capture
    tail = [c for c in calls[capture + 1:] if c[0] != "process"
            and not (c[0] == "control" and c[3] == EVENT_TRACE_CONTROL_QUERY)]
    assert [(c[0], c[2]) if c[0] == "enable" else c[0] for c in tail] == [
        ("enable", EVENT_CONTROL_CODE_DISABLE_PROVIDER), ("enable", EVENT_CONTROL_CODE_DISABLE_PROVIDER),
        "control", "close"]
    assert tail[2][3] == EVENT_TRACE_CONTROL_STOP and tail[2][1] == 0x1234


def test_access_denied_is_a_boot_error_and_leaves_nothing_open(queue):
    api = FakeWindowsApi(start_status=ERROR_ACCESS_DENIED)
    stop = Stop()
    ctx = Context(name="input etw", config=EtwInputConfig(), host="h", stop=stop,
                  producers=[queue.producer()], log=LOG)
    with pytest.raises(BootError, match="Administrator") as info:
        build(ctx, api=api)
    assert info.value.__cause__.winerror == ERROR_ACCESS_DENIED
    assert "open" not in api.names() and "close" not in api.names()


@pytest.mark.skipif(sys.platform == "win32", reason="checks the refusal off Windows")
def test_build_off_windows_is_a_boot_error_that_says_windows(queue):
    ctx = Context(name="input etw", config=EtwInputConfig(), host="h", stop=Stop(),
                  producers=[queue.producer()], log=LOG)
    with pytest.raises(BootError, match="Windows"):
        build(ctx)


def test_provider_names_resolve_through_tdh_and_unknown_names_are_boot_errors():
    blob = (struct.pack("<II", 1, 0) + guid_bytes(DNS) + struct.pack("<II", 0, 32)
            + u16z("Microsoft-Windows-DNS-Client"))
    api = FakeWindowsApi(providers_blob=blob)
    cfg = EtwInputConfig(providers=[EtwProviderConfig(provider="microsoft-windows-dns-client")])
    specs = provider_specs(cfg, api=api)
    assert [s.guid for s in specs] == [KP, DNS]
    with pytest.raises(BootError, match="Nope"):
        provider_specs(EtwInputConfig(providers=[EtwProviderConfig(provider="Nope")]), api=api)


def test_handoff_drops_are_counted_and_reported_as_losses():
    stats = EtwInputStats()
    pending = Pending(capacity=2)
    handler = RecordHandler(schemas=tdh.SchemaCache(lambda r: DNS_SCHEMA), pending=pending,
                            stats=stats, log=LOG)
    for _ in range(5):
        handler(dns_record().pointer())
    events, dropped = pending.take()
    assert len(events) == 2 and dropped == 3 and stats.handoff_dropped == 3
    tracker = LossTracker("input etw")
    assert tracker.events({"hand-off full": 3}, now_ns=1) == [
        LossEvent(time_ns=1, source="input etw", what="hand-off full", count=3)]
    assert tracker.events({"hand-off full": 3}, now_ns=2) == []  # nothing new
    assert tracker.events({"hand-off full": 4}, now_ns=3)[0].count == 1


def test_schema_is_fetched_once_per_provider_id_version():
    api = FakeWindowsApi(schemas={(3008, 0): DNS_SCHEMA})
    stats, pending = EtwInputStats(), Pending(capacity=100)
    handler = RecordHandler(schemas=tdh.SchemaCache(api.event_information), pending=pending,
                            stats=stats, log=LOG)
    for name in ("a.org", "b.org", "c.org"):
        handler(dns_record(name).pointer())
    unknown = make_record(DNS, 9999, 0, b"\x01")
    handler(unknown.pointer())
    handler(unknown.pointer())
    events, _ = pending.take()
    assert [e.fields["QueryName"] for e in events] == ["a.org", "b.org", "c.org"]
    assert api.tdh_calls == 2  # one per (provider, id, version), the failing one included
    assert stats.schema_failures == 1 and stats.decode_errors == 2


def test_string_only_events_need_no_schema():
    stats, pending = EtwInputStats(), Pending(capacity=10)
    handler = RecordHandler(schemas=tdh.SchemaCache(lambda r: pytest.fail("no TDH call")),
                            pending=pending, stats=stats, log=LOG)
    handler(make_record(DNS, 0, 0, u16z("hello"), flags=0x40 | EVENT_HEADER_FLAG_STRING_ONLY).pointer())
    (event,), _ = pending.take()
    assert event.fields == {"message": "hello"}


def test_etw_process_events_keep_the_process_table(queue, tmp_path):
    """ProcessStart/Stop from the callback path feed the pipeline's process table as the eBPF
    input's events do (no /proc here: an empty directory stands for Windows)."""
    from pipeline.proctable import ProcessTable

    records = [make_record(KP, 15, 1, start_payload(3, pid=10, ppid=4)),
               make_record(KP, 1, 3, start_payload(3)),
               make_record(KP, 2, 2, stop_payload(2))]
    api = FakeWindowsApi(records=records, schemas={}, lost=(0, 0, 0))
    cfg = EtwInputConfig(providers=[], loss_interval=3600.0)
    _, events = run_input(api, queue, cfg, expect=3)
    procs = [e for e in events if isinstance(e, ProcessEvent)]
    table = ProcessTable(proc_root=str(tmp_path))
    for i, ev in enumerate(procs):
        table.apply(ev, now=float(i))
    rundown = table.lookup(10, now=3.0, read=False)
    assert rundown is not None and rundown.exited_at is None
    started = table.lookup(4242, now=3.0, read=False, start_ns=CREATE_NS)
    assert started.exited_at == 2.0                     # the stop marked it exited
    assert started.exe.endswith(".exe") and started.start_ns == CREATE_NS
    # The pid comes back with another creation time: another process, the old one kept apart.
    reused = ProcessEvent(kind="exec", time_ns=0, pid=4242, comm="other.exe", filename="other.exe",
                          start_ns=CREATE_NS + 10**9, source="etw")
    fresh = table.apply(reused, now=4.0)
    assert fresh is not started and fresh.exe == "other.exe" and fresh.exited_at is None
    assert table.lookup(4242, now=4.0, read=False).exe == "other.exe"
    assert table.lookup(4242, now=4.0, read=False, start_ns=CREATE_NS) is started
