"""The Event schema: what flows between log-shuttle's processes.

Every queue message is one encoded :class:`Batch`. Events are msgspec Structs in one tagged
union (``Event``); they are ``array_like`` to keep messages small, so a struct may only grow
at the end, with a default for every new field.

Log lines travel in runs: a :class:`LogEvent` holds the raw bytes of one or more consecutive
lines of one file, with the file's identity and the byte offset of the first line. Nothing
between the file input and an output makes a Python object per line; an output expands a
LogEvent into one record per line when it renders (see ``outputs.records``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Union

import msgspec

from common.fastpath import tagged

# LogEvent.flags
PIECE = 1
"""``data`` is one piece of a line longer than the input's maximum; ``piece`` numbers it."""
LAST_PIECE = 2
"""With PIECE: the final piece of that line (its ``data`` ends with the line's newline)."""
UNTERMINATED = 4
"""``data`` is one record that no newline ended: the file was let go (rotated or deleted) with
these bytes at its end."""
RECORD = 8
"""``data`` is exactly one record's text, already without its line end, decoded from the file's
bytes ``offset`` .. ``end`` (a container log format, or multiline joining)."""
FORMAT_ERROR = 16
"""With RECORD: the line did not parse in the input's format; ``data`` is the raw line."""


NAMES_PID = 32
"""The input asks the pipeline to look for the writer's pid in each line (syslog ``app[1234]:``)."""
ONE_RECORD = PIECE | UNTERMINATED | RECORD
"""An event with any of these flags holds exactly one record; without, a run of lines."""


class ProcessInfo(msgspec.Struct, frozen=True, gc=False, omit_defaults=True):
    """The process an event is about, from the pipeline's process table. ``how`` says how it was
    found: "event" (the event's own pid: exact), "fd" (it has the log file open for writing:
    exact for who could write, a guess for which line), "line" (the line names its pid, e.g.
    syslog ``app[1234]:``: a best guess)."""

    pid: int
    ppid: int = 0
    comm: str = ""
    exe: str = ""
    cmdline: list[str] = []
    uid: int = -1
    user: str = ""
    start_ns: int = 0
    container_id: str = ""
    pod_uid: str = ""
    unit: str = ""
    """The systemd unit, for a process in no container."""
    cgroup: str = ""
    exited: bool = False
    """It had exited when the event was enriched (within the table's grace period)."""
    how: str = ""


class ContainerRef(msgspec.Struct, frozen=True, gc=False, omit_defaults=True):
    """The container a log file belongs to, from where the runtime keeps its logs."""

    id: str = ""
    runtime: str = ""
    pod_uid: str = ""
    pod: str = ""
    namespace: str = ""
    name: str = ""


class LineJoin(msgspec.Struct, array_like=True, frozen=True, gc=False):
    """The request a line of a LogEvent was written for (pipeline/logjoin.py)."""

    index: int
    """The line's number in the event's run (0 for its first)."""
    trace_id: str = ""
    span_id: str = ""
    method: str = ""
    path: str = ""
    status: int = 0
    ambiguous: bool = False
    """The writing thread served more than one request at once (or two writers wrote the same
    bytes at the same instant): no ids, on purpose."""


class LogEvent(msgspec.Struct, tag="log", array_like=True, frozen=True, gc=False):
    """One or more consecutive lines read from one file.

    ``data`` is the file's bytes from ``offset`` on, each line ending with ``\\n`` (a piece of an
    over-long line ends with its newline only if it is the last piece). ``lines`` counts the
    records in ``data``; an event with a ONE_RECORD flag holds exactly one record. The bytes are the
    file's own: nothing is decoded, stripped or dropped on the way.
    """

    path: str
    dev: int
    ino: int
    offset: int
    data: bytes
    lines: int
    read_ns: int
    """Wall-clock time the bytes were read, nanoseconds since the Unix epoch."""
    flags: int = 0
    piece: int = 0
    """With PIECE: 0 for the first piece of a long line, 1 for the next, and so on."""
    end: int = 0
    """File offset just past the raw bytes this event covers; 0 means ``offset + len(data)``."""
    time_ns: int = 0
    """With RECORD: the record's own time (a container log's), ns since the epoch; 0 if none."""
    stream: str = ""
    """With RECORD: the record's stream (stdout / stderr) in a container log format."""
    writers: list[ProcessInfo] = []
    """Set by the pipeline: the processes that wrote (or could have written) these lines."""
    container: ContainerRef | None = None
    """Set by the pipeline for a container runtime's log file."""
    joins: list[LineJoin] = []
    """Set by the pipeline: the lines joined to their request (or found ambiguous)."""
    fid: int = 0
    """The file's identity for record ids (common.identity.file_id: device, inode, first line);
    0: unknown. A line's id is the agent's id, this and the line's offset."""

    @property
    def end_offset(self) -> int:
        return self.end or self.offset + len(self.data)


class ProcessEvent(msgspec.Struct, tag="process", array_like=True, frozen=True, gc=False):
    """A process started (exec), was forked (fork), ended (exit), or was found running when the
    agent started (rundown). Fields a source cannot know stay at their defaults."""

    kind: str
    """"exec", "fork", "exit" or "rundown"."""
    time_ns: int
    """Wall-clock time of the event, nanoseconds since the Unix epoch."""
    pid: int
    ppid: int = 0
    tid: int = 0
    uid: int = -1
    comm: str = ""
    filename: str = ""
    """The executable (exec: the path given to execve; rundown: /proc/PID/exe)."""
    argv: list[str] = []
    """Bounded: the first arguments, each cut to a bounded length."""
    exit_code: int | None = None
    """exit: the status the process gave exit_group(), or -signal when a signal ended it."""
    start_ns: int = 0
    """When the process started; with pid, its key (pids are reused). Linux: nanoseconds since
    boot (CLOCK_BOOTTIME, as /proc/PID/stat's starttime); Windows (ETW): the creation time in
    nanoseconds since the Unix epoch. Either way the same value in every event of a process."""
    source: str = ""
    """"ebpf", "proc" (a /proc poll or the rundown) or "etw"."""
    process: ProcessInfo | None = None
    """Set by the pipeline: the process, from its process table."""
    seq: int = 0
    """Set by the pipeline: the event's sequence for its record id (common.identity.event_seq)."""


class ConnEvent(msgspec.Struct, tag="conn", array_like=True, frozen=True, gc=False):
    """A TCP connection opened (connect / accept) or closed by a process."""

    kind: str
    """"connect", "accept" or "close"."""
    time_ns: int
    pid: int
    tid: int = 0
    comm: str = ""
    family: int = 4
    """4 or 6."""
    saddr: str = ""
    sport: int = 0
    daddr: str = ""
    dport: int = 0
    duration_ns: int = 0
    """close: how long the connection was open, when its opening was seen."""
    fd: int = -1
    process: ProcessInfo | None = None
    """Set by the pipeline: the process, from its process table."""
    seq: int = 0
    """Set by the pipeline: the event's sequence for its record id (common.identity.event_seq)."""


class HttpEvent(msgspec.Struct, tag="http", array_like=True, frozen=True, gc=False):
    """One HTTP/1.x request and its response, seen at the syscall layer by a server or a client."""

    time_ns: int
    """When the request was first seen."""
    pid: int
    tid: int
    comm: str
    fd: int
    direction: str
    """"server" (the process read the request) or "client" (it wrote the request)."""
    method: str
    path: str
    status: int = 0
    duration_ns: int = 0
    """From the first byte of the request to the first byte of the response."""
    peer_addr: str = ""
    peer_port: int = 0
    version: str = "HTTP/1.1"
    process: ProcessInfo | None = None
    """Set by the pipeline: the process, from its process table."""
    boot_ns: int = 0
    """The request's first bytes in CLOCK_BOOTTIME (exact order between the input's events;
    with pid and fd, the exchange's key). 0: unknown."""
    traceparent: str = ""
    """The request's W3C ``traceparent`` header, when it lay in the captured bytes."""
    tracestate: str = ""
    """Its ``tracestate`` header, likewise."""
    headers_cut: bool = False
    """The captured request ended before its headers did (a traceparent may lie past it)."""
    seq: int = 0
    """Set by the pipeline: the event's sequence for its record id (common.identity.event_seq)."""
    weight: int = 1
    """How many exchanges this one stands for: N when the http probe sampled 1 in N (its
    budget, ``[inputs.ebpf] max_exchanges_per_second``, was exceeded), else 1."""
    tls: bool = False
    """Seen in the TLS library's plaintext (OpenSSL's uprobes): HTTPS."""


class LossEvent(msgspec.Struct, tag="loss", array_like=True, frozen=True, gc=False):
    """Events that were dropped rather than block something that must not wait (the kernel)."""

    time_ns: int
    source: str
    """The component that lost them, e.g. "input ebpf"."""
    what: str
    """Where: e.g. "ring buffer" (the kernel found it full) or "queue full"."""
    count: int
    seq: int = 0
    """Set by the pipeline: the event's sequence for its record id (common.identity.event_seq)."""


class EtwEvent(msgspec.Struct, tag="etw", array_like=True, frozen=True, gc=False):
    """An event of any ETW provider, decoded through TDH (Windows)."""

    time_ns: int
    provider: str
    """The provider's GUID, lower case, in braces."""
    event_id: int
    version: int = 0
    opcode: int = 0
    level: int = 0
    keywords: int = 0
    pid: int = 0
    tid: int = 0
    provider_name: str = ""
    task: str = ""
    fields: dict[str, str | int | float | bool | None] = {}
    seq: int = 0
    """Set by the pipeline: the event's sequence for its record id (common.identity.event_seq)."""


class MetricEvent(msgspec.Struct, tag="metric", array_like=True, frozen=True, gc=False):
    """One series' aggregate over one interval (delta temporality): what the pipeline's metrics
    aggregator (pipeline/metrics.py) saw of HTTP exchanges or TCP connections from ``start_ns``
    to ``time_ns``. Sinks that need cumulative values (Prometheus, OTLP cumulative) add the
    deltas up themselves."""

    name: str
    """``http.server.request.duration``, ``http.client.request.duration``,
    ``tcp.connection.duration`` (histograms, seconds) or ``tcp.connection.opened`` (counter)."""
    time_ns: int
    """End of the interval, nanoseconds since the Unix epoch."""
    start_ns: int
    """Start of the interval."""
    attrs: dict[str, str] = {}
    """The series: ``service.name``, ``http.request.method``, ``http.route``,
    ``http.response.status_class``, ``network.peer.address``... ``otel.metric.overflow`` =
    ``"true"`` marks the one series that counts what went past the series cap."""
    kind: str = "histogram"
    """"histogram" or "counter" (then only ``count`` is meaningful)."""
    count: int = 0
    """Observations in the interval (requests, connections)."""
    errors: int = 0
    """HTTP: exchanges that failed (server: 5xx; client: 4xx and 5xx, OpenTelemetry's rule)."""
    sum: float = 0.0
    """Sum of the observed durations, seconds."""
    bounds: list[float] = []
    """Histogram bucket upper bounds, seconds, ascending."""
    buckets: list[int] = []
    """Counts per bucket (not cumulative): ``len(bounds) + 1`` of them, the last one for
    values above the highest bound."""


class SpanEvent(msgspec.Struct, tag="span", array_like=True, frozen=True, gc=False):
    """One HTTP exchange as a span (pipeline/spans.py): OpenTelemetry's span, with the semantic
    conventions' attribute names. Ids are lower-case hex (trace 32 digits, span 16)."""

    time_ns: int
    """Start: the request's first bytes, nanoseconds since the Unix epoch."""
    end_ns: int
    """End: the response's first bytes (the syscall layer sees no later byte of it)."""
    trace_id: str
    span_id: str
    parent_span_id: str = ""
    kind: str = "server"
    """"server" or "client"."""
    name: str = ""
    """``METHOD`` (OpenTelemetry's HTTP span name without a route)."""
    error: bool = False
    """Status ERROR: 5xx on the server side, 4xx and 5xx on the client side."""
    attrs: dict[str, str | int] = {}
    resource: dict[str, str | int] = {}
    """``service.name``, ``process.pid``, ``process.executable.name``, ``container.id``..."""
    tracestate: str = ""
    parent_how: str = ""
    """How the parent was found: "traceparent" (the request's header), "thread" (the server
    exchange the same thread was serving), "connection" (the local client exchange whose
    connection this server accepted), or "" (a root: a new trace)."""


class LogWriteEvent(msgspec.Struct, tag="logwrite", array_like=True, frozen=True, gc=False):
    """A write() to a tailed log file, seen by the eBPF input's logwrite probe, with the exchange
    the writing thread was serving. The pipeline joins it to the line it wrote (pipeline/
    logjoin.py) and does not hand it on."""

    time_ns: int
    pid: int
    tid: int
    fd: int
    dev: int
    ino: int
    """The file's identity (what user space found the descriptor to be)."""
    length: int
    """Bytes given to write()."""
    head: bytes
    """The write's first bytes (at most the probe's LOG_HEAD)."""
    boot_ns: int
    req_boot_ns: int = 0
    """The request the thread read last (CLOCK_BOOTTIME; with pid and req_fd, its exchange's
    key); 0: none, or one no line may be joined to."""
    req_fd: int = -1
    resp_boot_ns: int = 0
    """When the thread answered that request; 0: in flight at the write."""
    multi_boot_ns: int = 0
    """The last time the thread had two requests in flight at once; 0: never."""
    lost_before: int = 0
    """Log writes the kernel could not report just before this one (on its CPU)."""


# One tagged union of every event kind (a new kind is added at the end).
Event = Union[LogEvent, ProcessEvent, ConnEvent, HttpEvent, LossEvent, EtwEvent, MetricEvent,
              SpanEvent, LogWriteEvent]


NUMBERED = (ProcessEvent, ConnEvent, HttpEvent, LossEvent, EtwEvent)
"""The events that get a record id of their own from the pipeline (``seq``; log lines have
theirs from their offsets)."""


class Batch(msgspec.Struct, array_like=True):
    """One queue message: the events a producer hands on in one go, in order."""

    events: list[Event]
    source: str = ""
    """Name of the component that produced the batch (for telemetry)."""
    seq: int = 0
    """From an input: the message's number, for acknowledgements (common.progress); 0: none."""
    acks: list[tuple[int, int]] = []
    """From the pipeline: (input index, highest seq of that input handed on up to this batch)."""


class _RawBatch(msgspec.Struct, array_like=True):
    """A Batch with its events not decoded yet (each one's msgpack bytes)."""

    events: list[msgspec.Raw]
    source: str = ""
    seq: int = 0
    acks: list[tuple[int, int]] = []


def _array_header(n: int) -> bytes:
    """A msgpack array's header for ``n`` items."""
    if n < 16:
        return bytes((0x90 | n,))
    if n < 1 << 16:
        return b"\xdc" + n.to_bytes(2, "big")
    return b"\xdd" + n.to_bytes(4, "big")


CODEC_PIECE = 128
"""``BatchCodec.decode_in_pieces`` and ``encode_in_pieces`` take this many events at a time."""
WHOLE_BELOW_BYTES = 16384
"""``decode_in_pieces`` decodes a message of at most this many bytes in one go."""


class BatchCodec:
    """msgpack encoding of Batches. Make one per process and reuse it (msgspec's advice)."""

    def __init__(self) -> None:
        self._encoder = msgspec.msgpack.Encoder()
        self._decoder = msgspec.msgpack.Decoder(Batch)
        self._raw = msgspec.msgpack.Decoder(_RawBatch)
        self._events = msgspec.msgpack.Decoder(list[Event])

    def encode(self, batch: Batch) -> bytes:
        return self._encoder.encode(batch)

    def decode(self, data: bytes | memoryview) -> Batch:
        return self._decoder.decode(data)

    def encode_in_pieces(self, batch: Batch, between: Callable[[], None]) -> bytes:
        """``encode``, ``CODEC_PIECE`` events at a time with ``between()`` called between
        pieces: the same bytes (a msgpack array's items are the items' encodings in a row)."""
        events = batch.events
        if len(events) <= CODEC_PIECE:
            return self._encoder.encode(batch)
        encode = self._encoder.encode
        tail = encode(Batch(events=[], source=batch.source, seq=batch.seq, acks=batch.acks))
        parts = [tail[:1], _array_header(len(events))]  # 0x94: the Batch's four fields
        for start in range(0, len(events), CODEC_PIECE):
            piece = events[start:start + CODEC_PIECE]
            parts.append(encode(piece)[len(_array_header(len(piece))):])
            between()
        parts.append(tail[2:])  # after the empty events array (0x90): source, seq, acks
        return b"".join(parts)

    def decode_in_pieces(self, data: bytes | memoryview, between: Callable[[], None]) -> Batch:
        """``decode``, a large batch ``CODEC_PIECE`` events at a time with ``between()``
        called between pieces (an output offers the CPU there: common.cpu.relax): the same
        Batch, and the same errors for bytes that are not one."""
        if len(data) <= WHOLE_BELOW_BYTES:  # too small to take long: no first pass
            return self._decoder.decode(data)
        raw = self._raw.decode(data)
        events = raw.events
        if len(events) <= CODEC_PIECE:
            return self._decoder.decode(data)
        out: list[Event] = []
        for start in range(0, len(events), CODEC_PIECE):
            piece = events[start:start + CODEC_PIECE]
            # the piece as one msgpack array: its header, then the items as they were
            out += self._events.decode(_array_header(len(piece)) + b"".join(piece))
            between()
        return Batch(events=out, source=raw.source, seq=raw.seq, acks=raw.acks)

    def decode_lines(self, data: bytes | memoryview, between: Callable[[], None]) -> Batch:
        """A Batch whose LogEvents are decoded and whose other events are left as their
        msgpack bytes (``msgspec.Raw``), for an output that renders those from their bytes
        (outputs/ndjson.py): decoding them would be most of its work. Their bytes are checked
        when they are rendered (a renderer that cannot take one decodes it, and msgspec raises
        as ``decode`` would have). Needs the compiled module (common.fastpath.tagged)."""
        raw = self._raw.decode(data)
        events: list = raw.events
        logs = tagged(events, b"log")
        for start in range(0, len(logs), CODEC_PIECE):
            piece = logs[start:start + CODEC_PIECE]
            decoded = self._events.decode(_array_header(len(piece))
                                          + b"".join([events[i] for i in piece]))
            for i, ev in zip(piece, decoded):
                events[i] = ev
            between()
        return Batch(events=events, source=raw.source, seq=raw.seq, acks=raw.acks)


LOG_EVENT_BYTES = 64
"""What a LogEvent counts for in batch limits besides its data."""
OTHER_EVENT_BYTES = 128
"""What any other event counts for."""


def event_lines(event: Event) -> int:
    """How many records an event counts for in batch limits."""
    return event.lines if type(event) is LogEvent else 1


def event_bytes(event: Event) -> int:
    """The approximate payload size of an event, for batch limits."""
    return len(event.data) + LOG_EVENT_BYTES if type(event) is LogEvent else OTHER_EVENT_BYTES


def events_size(events: list[Event]) -> tuple[int, int]:
    """``event_lines`` and ``event_bytes`` summed over a list, in one pass."""
    logs = [ev for ev in events if type(ev) is LogEvent]
    if not logs:
        return len(events), len(events) * OTHER_EVENT_BYTES
    others = len(events) - len(logs)
    return (others + sum(ev.lines for ev in logs),
            others * OTHER_EVENT_BYTES + len(logs) * LOG_EVENT_BYTES
            + sum(len(ev.data) for ev in logs))
