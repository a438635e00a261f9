"""What a component's own counters say, as metric samples.

The components already count what happens (their ``stats`` dataclasses, their queues' words in
shared memory); this module only *reads* them, from the publishing thread, once per interval.
Nothing is counted here, and nothing here runs on a component's per-line path.

A sample is ``(metric, extra label values, value)``; the metric's name and extra label names are
in :data:`METRICS`. Counters are totals since the process started (the publisher turns them
into increments), gauges are values now.
"""

from __future__ import annotations

import os
from typing import Any, Literal

Sample = tuple[str, tuple[str, ...], float]

METRICS: dict[str, tuple[Literal["counter", "gauge"], tuple[str, ...], str]] = {
    "received_events": ("counter", (), "Events (log lines, eBPF events) a component took in."),
    "sent_events": ("counter", (), "Events a component handed on (an output: delivered)."),
    "received_bytes": ("counter", (), "Bytes a component took in (files read, queue payload)."),
    "sent_bytes": ("counter", (), "Bytes a component handed on (queue payload, bytes written)."),
    "errors": ("counter", ("error_type",), "Errors, by type (connect, write, open, ...)."),
    "discarded_events": ("counter", ("reason",), "Events dropped for good, by reason."),
    "output_retries": ("counter", (), "Batches an output tried again after a failure."),
    "dead_letter_batches": ("counter", (), "Batches set aside in the dead-letter file."),
    "rotations": ("counter", ("kind",), "Followed files rotated, truncated, copied, deleted."),
    "bpf_lost_events": ("counter", ("probe",), "Events a BPF ring buffer had no room for."),
    "bpf_sampled_out_exchanges": ("counter", (), "HTTP exchanges the http probe counted and did "
                                  "not send: its budget (max_exchanges_per_second) was exceeded."),
    "bpf_sampling_one_in": ("gauge", (), "The http probe sends 1 HTTP exchange in this many."),
    "queue_bytes": ("gauge", ("queue",), "Bytes in a queue, published and not yet committed."),
    "queue_capacity_bytes": ("gauge", ("queue",), "A queue's capacity in bytes."),
    "file_lag_bytes": ("gauge", ("path",),
                       "Bytes written to a followed file and not yet acknowledged by every "
                       "output (per path up to agent.http.max_path_series, then path=_other)."),
    "files_watched": ("gauge", (), "Files a file input follows."),
    "delivering": ("gauge", (), "1 while an output delivers, 0 while it retries a batch."),
    "failing_seconds": ("gauge", (), "Seconds an output has been failing to deliver (0: not)."),
    "sending_seconds": ("gauge", (), "Seconds an output has been in its current send (0: none)."),
    "log_join_lines": ("counter", ("outcome",), "Lines of files whose writes the eBPF input "
                       "notes, by what the log join made of them: joined (to a request), "
                       "ambiguous, no_request (written outside any), unmatched (no write found)."),
}

OTHER_PATHS = "_other"


def samples(runner: Any, *, consumers: list[Any], max_paths: int) -> list[Sample]:
    """Every sample of this component now: its kind's counters, and the queues it reads."""
    out: list[Sample] = []
    kind = type(runner).__name__
    if kind == "FileInput":
        out += _file_input(runner, max_paths)
    elif kind == "EbpfInput":
        out += _ebpf_input(runner)
    elif kind == "Pipeline":
        out += _pipeline(runner)
    elif hasattr(runner, "sink") and hasattr(runner, "stats"):
        out += _output(runner)
    taken = 0
    for c in consumers:  # each queue has one consumer: it reports the queue
        q = c._queue
        try:
            st = q.stats()
        except Exception:  # noqa: BLE001 - a destroyed queue: nothing to say
            continue
        out.append(("queue_bytes", (q.name,), st.used_bytes))
        out.append(("queue_capacity_bytes", (q.name,), st.capacity))
        taken += st.bytes_committed
    if consumers:
        out.append(("received_bytes", (), taken))
    return out


def _file_input(r: Any, max_paths: int) -> list[Sample]:
    st = r.stats
    out: list[Sample] = [
        ("received_events", (), st.lines_read), ("received_bytes", (), st.bytes_read),
        ("sent_events", (), st.lines_read), ("sent_bytes", (), _put_bytes(r.producer)),
        ("rotations", ("rotated",), st.files_rotated),
        ("rotations", ("truncated",), st.files_truncated),
        ("rotations", ("copied",), st.files_copied),
        ("rotations", ("deleted",), st.files_deleted),
        ("errors", ("open",), st.open_errors), ("errors", ("format",), st.format_errors),
        ("errors", ("scan",), st.scan_errors),
        ("discarded_events", ("unreadable_bytes",), st.bytes_unread),
    ]
    files = list(r.registry.all_files())
    out.append(("files_watched", (), len(r.registry.files)))
    other = 0
    seen: set[str] = set()
    for i, f in enumerate(files):
        lag = max(0, _size(f) - f.acked)
        if i < max_paths and f.path not in seen:
            seen.add(f.path)
            out.append(("file_lag_bytes", (f.path,), lag))
        else:
            other += lag
    if len(files) > max_paths:
        out.append(("file_lag_bytes", (OTHER_PATHS,), other))
    return out


def _size(f: Any) -> int:
    """The file's size now (its descriptor if open, else its path), else what was last seen."""
    try:
        return os.fstat(f.fd).st_size if f.fd >= 0 else os.stat(f.path).st_size
    except OSError:
        return getattr(f, "size_seen", f.acked)


def _ebpf_input(r: Any) -> list[Sample]:
    st = r.stats
    out: list[Sample] = [
        ("received_events", (), st.raw_events), ("sent_events", (), st.events_sent),
        ("sent_bytes", (), _put_bytes(r.producer)),
        ("discarded_events", ("queue_full",), st.lost_queue_full),
        ("errors", ("undecodable",), st.undecodable),
    ]
    by_probe = getattr(st, "lost_by_probe", None) or {"all": st.lost_ring_buffer}
    out += [("bpf_lost_events", (probe,), n) for probe, n in by_probe.items()]
    if getattr(r, "sampling", None) is not None and r.sampling.budget:
        out += [("bpf_sampled_out_exchanges", (), st.sampled_out),
                ("bpf_sampling_one_in", (), r.sampling.one_in)]
    return out


def _pipeline(r: Any) -> list[Sample]:
    sent = getattr(r, "records_out", 0)
    as_spans = getattr(r, "http_as_spans", 0)
    out: list[Sample] = [
        ("received_events", (), sent + r.batcher.count + as_spans), ("sent_events", (), sent),
        ("sent_bytes", (), sum(_put_bytes(p) for p in r.ctx.producers)),
        ("discarded_events", ("metric_queue_full",), r.metric_points_dropped),
        ("discarded_events", ("http_as_span",), as_spans),
    ]
    joiner = getattr(r, "joiner", None)
    if joiner is not None:
        st = joiner.stats
        out += [("log_join_lines", (outcome,), n) for outcome, n in (
            ("joined", st.joined), ("ambiguous", st.ambiguous), ("no_request", st.no_request),
            ("unmatched", st.unmatched))]
    return out


def _output(r: Any) -> list[Sample]:
    st, sink = r.stats, r.sink
    records = getattr(st, "records_sent", st.events_sent)
    out: list[Sample] = [
        ("received_events", (), records + getattr(st, "records_dropped", 0)),
        ("sent_events", (), records),
        ("output_retries", (), st.batches_retried),
        ("dead_letter_batches", (), getattr(st, "batches_dead", 0)),
        ("discarded_events", ("rejected",), getattr(st, "records_dropped", 0)),
    ]
    if hasattr(sink, "bytes_sent"):
        out.append(("sent_bytes", (), sink.bytes_sent))
    failures = getattr(sink, "failures", None)
    for error_type, n in (getattr(failures, "counts", None) or {}).items():
        out.append(("errors", (error_type,), n))
    grpc = getattr(sink, "stats", None)
    if grpc is not None and hasattr(grpc, "records_rejected"):
        out.append(("discarded_events", ("rejected_by_receiver",), grpc.records_rejected))
    since = getattr(r, "failing_since", None)
    out.append(("delivering", (), 0 if since is not None else 1))
    out.append(("failing_seconds", (), _ago(since)))
    out.append(("sending_seconds", (), _ago(getattr(r, "sending_since", None))))
    return out


def _ago(since: float | None) -> float:
    if since is None:
        return 0.0
    import time

    return max(0.0, time.monotonic() - since)


def _put_bytes(producer: Any) -> int:
    try:
        return producer._queue.stats().bytes_put
    except Exception:  # noqa: BLE001
        return 0
