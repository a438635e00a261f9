"""The plan of RED metrics: metric outputs get the pipeline's metric batches only and are kept
off the acknowledgement board; stdout gets both with ``[pipeline.metrics] stdout``; metrics are
on by themselves with a metric output; a user may not set the routes; file lines with only
metric outputs are refused. Then the pipeline itself, with real queues: events and metric
points go where the routes say."""

from __future__ import annotations

import logging

import msgspec

import pytest

from agent.config import load_config
from agent.plan import plan
from common.component import Context, Stop
from common.errors import ConfigError
from common.events import Batch, BatchCodec, HttpEvent, MetricEvent
from common.shmqueue import Empty, Full, ShmQueue
from pipeline.config import MetricsConfig, PipelineConfig, ProcessesConfig
from pipeline.spans import SpansConfig
from pipeline.runner import build


def _load(tmp_path, text):
    path = tmp_path / "agent.toml"
    path.write_text(text)
    return load_config(str(path), environ={})


def test_routes_and_board(tmp_path):
    cfg = _load(tmp_path, f"""
[inputs.ebpf]
[pipeline.metrics]
stdout = true
[outputs.stdout]
[[outputs.tcp]]
address = "127.0.0.1:9"
[[outputs.influxdb]]
url = "http://127.0.0.1:8086"
[outputs.prometheus]
listen = "127.0.0.1:0"
[[outputs.metrics_jsonl]]
path = "{tmp_path}/m.jsonl"
""")
    assert not cfg.pipeline.metrics.enabled
    specs, queues = plan(cfg)
    try:
        (pipe,) = [s for s in specs if s.kind == "pipeline"]
        outputs = [s.role for s in specs if s.kind == "output"]
        assert outputs == ["output stdout", "output tcp", "output influxdb", "output prometheus",
                           "output metrics_jsonl"]
        assert pipe.config.routes == ["both", "events", "metrics", "metrics", "metrics"]
        assert pipe.config.metrics.enabled
        on_board = [s.role for s in specs if s.kind == "output" and s.progress is not None]
        assert on_board == ["output stdout", "output tcp"]
    finally:
        for q in queues:
            q.destroy()


def test_the_process_table_is_fed_by_events_when_the_ebpf_input_traces_processes(tmp_path):
    for text, fed in [("[inputs.ebpf]\n", True), ('[inputs.ebpf]\nprobes = ["tcp", "http"]\n', False),
                      (f'[[inputs.file]]\npaths = ["{tmp_path}/a.log"]\n', False)]:
        specs, queues = plan(_load(tmp_path, text + "[outputs.stdout]\n"))
        try:
            (pipe,) = [s for s in specs if s.kind == "pipeline"]
            assert pipe.config.processes.fed_by_events is fed, text
        finally:
            for q in queues:
                q.destroy()
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, "[inputs.ebpf]\n[pipeline.processes]\nfed_by_events = true\n")
    assert info.value.problems == [
        "pipeline.processes.fed_by_events: is set by the agent, not in a configuration"]


def test_refusals(tmp_path):
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, '[inputs.ebpf]\n[pipeline]\nroutes = ["events"]\n')
    assert info.value.problems == ["pipeline.routes: is set by the agent, not in a configuration"]
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, f'[[inputs.file]]\npaths = ["{tmp_path}/a.log"]\n'
                        '[[outputs.influxdb]]\nprotocol = "udp"\naddress = "127.0.0.1:8089"\n')
    assert info.value.problems == [
        "outputs: only metric outputs are configured: what the file input reads would go "
        "nowhere; add an output of events (stdout, tcp, grpc)"]


def test_the_pipeline_sends_metric_points_only_where_routed():
    queues = [ShmQueue.create(name=f"t{i}", capacity=1 << 20) for i in range(4)]
    try:
        source, events_q, metrics_q, both_q = queues
        cfg = PipelineConfig(processes=ProcessesConfig(enabled=False),
                             spans=SpansConfig(enabled=False),  # routing only, no spans
                             metrics=MetricsConfig(enabled=True, interval=60),
                             routes=["events", "metrics", "both"])
        stop = Stop()
        ctx = Context(name="pipeline", config=cfg, host="h", stop=stop,
                      consumers=[source.consumer()],
                      producers=[q.producer() for q in (events_q, metrics_q, both_q)],
                      log=logging.getLogger("test"))
        runner = build(ctx)
        codec = BatchCodec()
        ev = HttpEvent(time_ns=1, pid=7, tid=7, comm="srv", fd=3, direction="server",
                       method="GET", path="/items/42", status=503, duration_ns=2_000_000)
        producer = source.producer()
        producer.put(codec.encode(Batch(events=[ev, ev], seq=1)))
        producer.close()
        runner.run()  # the input closed: it drains, flushes and sends the interval so far

        def batches(q):
            c = q.consumer()
            out = []
            while True:
                try:
                    out.append(codec.decode(c.get_nowait()))
                except Empty:
                    return out

        def unnumbered(evs):  # the pipeline numbers every event for its record id
            return [msgspec.structs.replace(e, seq=0) for e in evs]

        (events,) = batches(events_q)
        assert unnumbered(events.events) == [ev, ev] and events.acks == [(0, 1)]
        assert len({e.seq for e in events.events}) == 2
        (metrics,) = batches(metrics_q)
        (point,) = metrics.events
        assert isinstance(point, MetricEvent) and metrics.acks == []
        assert (point.count, point.errors, point.attrs["http.route"]) == (2, 2, "/items/{id}")
        both = batches(both_q)
        assert [unnumbered(both[0].events), both[1].events] == [[ev, ev], [point]]
    finally:
        for q in queues:
            q.destroy()


def test_a_full_metrics_queue_drops_points_and_never_stops_the_events(caplog):
    queues = [ShmQueue.create(name=f"t{i}", capacity=1 << 20) for i in range(3)]
    try:
        source, events_q, metrics_q = queues
        cfg = PipelineConfig(processes=ProcessesConfig(enabled=False),
                             spans=SpansConfig(enabled=False),  # routing only, no spans
                             metrics=MetricsConfig(enabled=True, interval=0.1),
                             routes=["events", "metrics"])
        filler = metrics_q.producer()
        for size in (60_000, 4096, 64, 1):  # nobody reads the metrics queue: fill it up
            while True:
                try:
                    filler.put_nowait(b"x" * size)
                except Full:
                    break
        ctx = Context(name="pipeline", config=cfg, host="h", stop=Stop(),
                      consumers=[source.consumer()],
                      producers=[events_q.producer(), metrics_q.producer()],
                      log=logging.getLogger("test"))
        runner = build(ctx)
        codec = BatchCodec()
        ev = HttpEvent(time_ns=1, pid=7, tid=7, comm="srv", fd=3, direction="server",
                       method="GET", path="/", status=200, duration_ns=1000)
        producer = source.producer()
        for seq in range(1, 4):
            producer.put(codec.encode(Batch(events=[ev], seq=seq)))
        producer.close()
        runner.run()
        c = events_q.consumer()
        got = []
        while True:
            try:
                got += codec.decode(c.get_nowait()).events
            except Empty:
                break
        assert [msgspec.structs.replace(e, seq=0) for e in got] == [ev, ev, ev]
        assert runner.metric_points_dropped >= 1
        assert "points dropped" in caplog.text
    finally:
        for q in queues:
            q.destroy()
