"""Each exchange goes out as its span only, unless ``[pipeline.spans] http_events`` asks for its
http event too; either way the RED metrics count every exchange. The real pipeline, real
shared-memory queues."""

from __future__ import annotations

import logging

import pytest

from common.component import Context, Stop
from common.events import Batch, BatchCodec, ConnEvent, HttpEvent, MetricEvent, SpanEvent
from common.shmqueue import Empty, ShmQueue
from pipeline.config import MetricsConfig, PipelineConfig, ProcessesConfig
from pipeline.runner import build
from pipeline.spans import SpansConfig


def exchange(i: int, status: int) -> HttpEvent:
    return HttpEvent(time_ns=1_000 + i, pid=7, tid=7, comm="srv", fd=3, direction="server",
                     method="GET", path=f"/items/{i}", status=status, duration_ns=2_000_000,
                     boot_ns=500 + i)


def run_pipeline(spans: SpansConfig, events: list, *more: list) -> tuple[list, list, int]:
    """What the pipeline sends for ``events`` (and the input messages ``more`` after it):
    (its events, its metric points, its count of http events sent as their span only)."""
    queues = [ShmQueue.create(name=f"h{i}", capacity=1 << 20) for i in range(2)]
    try:
        source, out = queues
        cfg = PipelineConfig(processes=ProcessesConfig(enabled=False), spans=spans,
                             metrics=MetricsConfig(enabled=True, interval=60), routes=["both"])
        ctx = Context(name="pipeline", config=cfg, host="h", stop=Stop(),
                      consumers=[source.consumer()], producers=[out.producer()],
                      log=logging.getLogger("test"))
        runner = build(ctx)
        codec = BatchCodec()
        producer = source.producer()
        for seq, message in enumerate([events, *more], 1):
            producer.put(codec.encode(Batch(events=message, seq=seq)))
        producer.close()
        runner.run()  # the input closed: it drains, sends held spans and the interval so far
        got, consumer = [], out.consumer()
        while True:
            try:
                got += codec.decode(consumer.get_nowait()).events
            except Empty:
                break
        return ([e for e in got if not isinstance(e, MetricEvent)],
                [e for e in got if isinstance(e, MetricEvent)], runner.http_as_spans)
    finally:
        for q in queues:
            q.destroy()


@pytest.mark.parametrize("http_events", [False, True])
def test_an_exchange_goes_out_as_its_span_and_its_http_event_only_when_asked(http_events):
    sent = [exchange(1, 200), exchange(2, 503)]
    events, points, as_spans = run_pipeline(SpansConfig(http_events=http_events), sent)
    assert as_spans == (0 if http_events else 2)
    spans = [e for e in events if isinstance(e, SpanEvent)]
    assert sorted(s.attrs["url.path"] for s in spans) == ["/items/1", "/items/2"]
    assert [s.error for s in sorted(spans, key=lambda s: s.attrs["url.path"])] == [False, True]
    http = [e for e in events if isinstance(e, HttpEvent)]
    assert [e.path for e in http] == (["/items/1", "/items/2"] if http_events else [])
    assert all(e.seq for e in http)  # shipped: numbered for their record ids
    assert len(events) == len(spans) + len(http)
    # The metrics saw both exchanges either way.
    assert sum(p.count for p in points if p.name == "http.server.request.duration") == 2
    assert sum(p.errors for p in points if p.name == "http.server.request.duration") == 1


def test_without_spans_the_http_events_go_out():
    sent = [exchange(1, 200)]
    events, _, as_spans = run_pipeline(SpansConfig(enabled=False), sent)
    assert as_spans == 0
    assert [type(e) for e in events] == [HttpEvent]


def test_an_exchange_whose_span_waits_for_its_parent_ships_its_http_event_too():
    """A server exchange whose client (a local process, by their connection) comes in a later
    message: its span waits, so its http event goes out (a pipeline killed before the span is
    sent loses no exchange); the span follows once the client's exchange came."""
    client_end = ("127.0.0.1", 40000, "127.0.0.1", 8080)
    connect = ConnEvent("connect", 900, pid=8, saddr=client_end[0], sport=client_end[1],
                        daddr=client_end[2], dport=client_end[3], fd=5)
    accept = ConnEvent("accept", 950, pid=7, saddr=client_end[2], sport=client_end[3],
                       daddr=client_end[0], dport=client_end[1], fd=3)
    server = HttpEvent(time_ns=1_000, pid=7, tid=7, comm="srv", fd=3, direction="server",
                       method="GET", path="/s", status=200, duration_ns=1_000, boot_ns=1_000)
    client = HttpEvent(time_ns=990, pid=8, tid=8, comm="cli", fd=5, direction="client",
                       method="GET", path="/s", status=200, duration_ns=1_100, boot_ns=990)
    events, points, as_spans = run_pipeline(SpansConfig(hold=30), [connect, accept, server],
                                            [client])
    assert as_spans == 1  # the client's
    http = [e for e in events if isinstance(e, HttpEvent)]
    spans = {s.kind: s for s in events if isinstance(s, SpanEvent)}
    assert [e.direction for e in http] == ["server"] and http[0].seq  # numbered: it has an id
    assert spans["server"].parent_span_id == spans["client"].span_id
    assert spans["server"].parent_how == "connection"
    assert sum(p.count for p in points if p.name == "http.server.request.duration") == 1
