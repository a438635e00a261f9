"""The record view (outputs.records) as NDJSON, one object per line, or as a human text form:
what stdout writes and the TCP output's ``ndjson`` framing sends.

NDJSON is the throughput path. A run of plain lines (no flags, no process, container or join,
valid UTF-8: what most runs are) goes from the LogEvent's bytes to NDJSON in one call of the
compiled fast path (common/speedups/), with no Python object per line. Any other run becomes
one :class:`LineRecord` per line, built in C loops (``map``), and is encoded with the batch's
other events in one ``encode_lines`` call. Without the compiled module (see setup.py) plain runs
take that way too: the bytes are the same either way (tests/outputs/test_ndjson_fast.py).
"""

from __future__ import annotations

import typing
from itertools import repeat
from operator import itemgetter
from typing import Any

import msgspec
import msgspec.inspect as mi

from common.cpu import relax
from common.events import (FORMAT_ERROR, ONE_RECORD, ContainerRef, Event, LogEvent, LogWriteEvent,
                           MetricEvent, ProcessInfo)
from common.fastpath import render_events, render_lines
from common.identity import INPUT_SHIFT, Identity, event_id, line_prefix
from common.timefmt import rfc3339_ns
from outputs.records import EventRecord, LineRun, line_run, view

RENDER_PIECE = 64
"""Events other than plain runs are rendered this many at a time, the CPU offered to others
between pieces (common.cpu.relax)."""
FAST_PATH = render_lines is not None
"""Whether runs of plain lines are rendered by the compiled fast path (else in Python, into the
same bytes)."""
RAW_PATH = render_events is not None
"""Whether events other than lines can be rendered from their msgpack bytes (``msgspec.Raw``,
as ``BatchCodec.decode_lines`` leaves them) by the compiled fast path."""
_ANY_EVENT = msgspec.msgpack.Decoder(Event)


class PlainLine(msgspec.Struct, omit_defaults=True):
    """One line as NDJSON with nothing but the fields every line has: what most lines are. Its
    six fields make and encode faster than LineRecord's twenty-one, into the same JSON."""

    time: str
    """When the line was read, RFC 3339 UTC with nanoseconds."""
    host: str
    path: str
    offset: int
    """Byte offset of the line's first byte in the file."""
    line: str
    """The line without its newline."""
    id: str = ""
    """The record's stable id (common.identity): the same however often it is sent."""


class LineRecord(PlainLine, omit_defaults=True):
    """One line as NDJSON, any of its fields set (the object's keys, in this order: a
    PlainLine's, then these)."""

    piece: int | None = None
    """For a piece of an over-long line: its number (0, 1, ...)."""
    last_piece: bool | None = None
    invalid_utf8: bool = False
    unterminated: bool = False
    """The file was let go with this line unfinished (no newline)."""
    log_time: str | None = None
    """A container log record's own time (RFC 3339)."""
    stream: str | None = None
    """A container log record's stream."""
    format_error: bool = False
    """The line did not parse in the input's format and is shipped raw."""
    process: ProcessInfo | None = None
    """The line's writer, when one process is known for it (``how`` says how it was found)."""
    writers: list[ProcessInfo] | None = None
    """When several processes have the file open for writing: all of them."""
    container: ContainerRef | None = None
    """The container whose log the file is."""
    trace_id: str | None = None
    """The trace of the request the line was written for (pipeline/logjoin.py)."""
    span_id: str | None = None
    """That request's span."""
    request: dict[str, Any] | None = None
    """That request: ``method``, ``path``, ``status``."""
    join: str | None = None
    """``"ambiguous"``: the writer served several requests at once; no ids, on purpose."""


def line_records(run: LineRun, host: str) -> list[LineRecord] | list[PlainLine]:
    recs = _line_records(run, host)
    for j in run.joins:
        if j.index < len(recs):
            r = recs[j.index]
            if j.ambiguous:
                r.join = "ambiguous"
            else:
                r.trace_id, r.span_id = j.trace_id, j.span_id
                r.request = {"method": j.method, "path": j.path, "status": j.status}
    return recs


def _line_records(run: LineRun, host: str) -> list[LineRecord] | list[PlainLine]:
    t = rfc3339_ns(run.read_ns)
    path = run.path
    ids = run.ids or repeat("")
    if run.invalid is None and run.piece is None and not run.unterminated \
            and not run.time_ns and not run.stream and not run.format_error:
        if run.process is None and run.writers is None and run.container is None:
            cls = LineRecord if run.joins else PlainLine  # joins set fields of LineRecord
            return list(map(cls, repeat(t), repeat(host), repeat(path), run.offsets,
                            run.texts, ids))
        return [LineRecord(t, host, path, off, s, i, process=run.process, writers=run.writers,
                           container=run.container)
                for off, s, i in zip(run.offsets, run.texts, ids)]
    invalid = run.invalid or repeat(False)
    log_time = rfc3339_ns(run.time_ns) if run.time_ns else None
    return [LineRecord(t, host, path, off, s, i, run.piece, run.last_piece, bad,
                       run.unterminated, log_time, run.stream or None, run.format_error,
                       run.process, run.writers, run.container)
            for off, s, bad, i in zip(run.offsets, run.texts, invalid, ids)]


class _Shape:
    """One event kind (any but LogEvent) as its NDJSON object: a msgspec Struct whose fields are
    the object's keys in order (``time``, ``host``, ``type``, ``id`` when the event has one, the
    event's own fields as declared, ``process`` when set), made from the event's values in C
    (``astuple`` and one ``itemgetter``): no dict per event."""

    __slots__ = ("with_id", "without_id", "tag", "time_at", "seq_at", "process_at", "pick")

    def __init__(self, kind: type) -> None:
        names = kind.__struct_fields__
        rest = [n for n in names if n not in ("time_ns", "process", "seq")]
        # No defaults but the last field's (omitted when None): every other field always goes,
        # and id is either there or not (two classes, not a default, which would have to come
        # after every field without one).
        fields = [(n, Any) for n in rest] + [("process", Any, None)]
        head = [("time", Any), ("host", Any), ("type", Any)]
        self.with_id = msgspec.defstruct(f"{kind.__name__}Object", head + [("id", Any)] + fields,
                                         omit_defaults=True)
        self.without_id = msgspec.defstruct(f"{kind.__name__}Object", head + fields,
                                            omit_defaults=True)
        self.tag: str = kind.__struct_config__.tag
        self.time_at = names.index("time_ns")
        self.seq_at = names.index("seq") if "seq" in names else -1
        self.process_at = names.index("process") if "process" in names else -1
        at = [names.index(n) for n in rest]
        self.pick = itemgetter(*at) if len(at) > 1 else lambda v, i=at[0]: (v[i],)


_SHAPES: dict[type, _Shape] = {}
_astuple = msgspec.structs.astuple


def event_object(ev: Event, host: str, identity: Identity | None = None) -> msgspec.Struct:
    """Any other event as one object: its time, the host, ``type`` (its tag), its record id
    (once the pipeline numbered it), its fields, and its enriched process if any."""
    shape = _SHAPES.get(type(ev))
    if shape is None:
        shape = _SHAPES[type(ev)] = _Shape(type(ev))
    v = _astuple(ev)
    seq = v[shape.seq_at] if shape.seq_at >= 0 else 0
    process = v[shape.process_at] if shape.process_at >= 0 else None
    if identity is not None and seq:
        return shape.with_id(rfc3339_ns(v[shape.time_at]), host, shape.tag,
                             event_id(identity.agent, identity.session, seq), *shape.pick(v),
                             process)
    return shape.without_id(rfc3339_ns(v[shape.time_at]), host, shape.tag, *shape.pick(v),
                            process)


def records(events: list[Event], host: str,
            identity: Identity | None = None) -> list[msgspec.Struct]:
    """The NDJSON objects of a batch's events, in order: LineRecords or PlainLines for lines,
    ``event_object`` for any other event."""
    out: list[msgspec.Struct] = []
    agent = identity.agent if identity is not None else ""
    for ev in events:  # the view, one event at a time: no list of the whole batch's runs
        if type(ev) is LogEvent:
            out += line_records(line_run(ev, agent), host)
        else:
            out.append(event_object(ev, host, identity))
    return out


def plain(ev: LogEvent) -> bool:
    """Whether a run's lines are PlainLines (nothing but the six fields) and valid UTF-8: what
    the fast path renders."""
    if ev.flags & (ONE_RECORD | FORMAT_ERROR) or ev.writers or ev.joins \
            or ev.container is not None or ev.time_ns or ev.stream:
        return False
    data = ev.data
    if data.isascii():
        return True
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


_K_INT, _K_STR, _K_BOOL, _K_NIL, _K_MAP, _K_ARRAY = 1, 2, 4, 8, 16, 32
_K_ANY = 63
"""What a msgpack value may be, as common/speedups/ndjson.c's ``render_events`` checks it."""


def _kinds(t: mi.Type) -> int:
    if isinstance(t, mi.UnionType):
        k = 0
        for u in t.types:
            k |= _kinds(u)
        return k
    return {mi.IntType: _K_INT, mi.StrType: _K_STR, mi.BoolType: _K_BOOL, mi.NoneType: _K_NIL,
            mi.DictType: _K_MAP, mi.StructType: _K_MAP, mi.ListType: _K_ARRAY,
            mi.AnyType: _K_ANY}.get(type(t), 0)


def _item_kinds(t: mi.Type) -> int:
    """What a list's items or a dict's values may be (_K_ANY: not a list or a dict)."""
    if isinstance(t, mi.UnionType):
        k = 0
        for u in t.types:
            if isinstance(u, (mi.DictType, mi.ListType)):
                k |= _item_kinds(u)
        return k or _K_ANY
    if isinstance(t, mi.DictType):
        return _kinds(t.value_type)
    if isinstance(t, mi.ListType):
        return _kinds(t.item_type)
    return _K_ANY


_SCALARS = (mi.IntType, mi.StrType, mi.BoolType, mi.NoneType, mi.FloatType)


def _modelled(t: mi.Type) -> bool:
    """Whether the kinds above say all msgspec would check of a field of this type: scalars
    without constraints, unions of them, and lists and dicts (str keys) of those. Floats are
    scalars here: the compiled path hands back any float it meets."""
    if isinstance(t, mi.UnionType):
        return all(_modelled(u) for u in t.types)
    if isinstance(t, _SCALARS):
        return not any(getattr(t, c, None) is not None for c in (
            "ge", "gt", "le", "lt", "multiple_of", "min_length", "max_length", "pattern"))
    if isinstance(t, mi.ListType):
        return isinstance(t.item_type, _SCALARS) and _modelled(t.item_type) \
            and t.min_length is None and t.max_length is None
    if isinstance(t, mi.DictType):
        return isinstance(t.key_type, mi.StrType) and _modelled(t.key_type) \
            and all(isinstance(u, _SCALARS) for u in getattr(t.value_type, "types",
                                                             (t.value_type,))) \
            and _modelled(t.value_type) and t.min_length is None and t.max_length is None
    return False


def compiled_shapes(host: str) -> tuple:
    """What ``render_events`` needs to know of each event kind it renders, in the order of the
    Python path's objects (``_Shape``): (tag, the msgpack array's items, where its time, seq
    and process are (0: none), the JSON of ``host`` and ``type``, each item's key (None: the
    tag, time, seq and process, placed apart), and two bytes per item: what msgpack kinds it
    may be, and its list items or dict values (what msgspec would take; a value it would
    not makes the compiled path hand the event back, and msgspec then says what is wrong). An
    event with a process (a nested struct) is handed back too, and so is every event of a
    kind with a field whose checks these kinds cannot say (``_modelled``).
    Lines have their own path; a write to a log file (bytes) and a metric point (floats) are
    left to Python: msgspec's JSON of those is not what the compiled path writes."""
    shapes = []
    for kind in typing.get_args(Event):
        if kind in (LogEvent, LogWriteEvent, MetricEvent):
            continue
        info = mi.type_info(kind)
        if not all(_modelled(f.type) for f in info.fields if f.name != "process"):
            continue  # a field whose checks the kinds cannot say: the Python path's
        names = [f.name for f in info.fields]
        tag = kind.__struct_config__.tag
        keys = (None,) + tuple(None if n in ("time_ns", "seq", "process")
                               else b',"' + n.encode() + b'":' for n in names)
        kinds = bytes([_K_STR, 0]) + b"".join(bytes([_kinds(f.type), _item_kinds(f.type)])
                                              for f in info.fields)
        at = {n: i + 1 for i, n in enumerate(names)}
        shapes.append((tag.encode(), len(names) + 1, at["time_ns"], at.get("seq", 0),
                       at.get("process", 0), b',"host":' + msgspec.json.encode(host)
                       + b',"type":' + msgspec.json.encode(tag), keys, kinds))
    return tuple(shapes)


class Renderer:
    """Renders a batch's events as bytes: NDJSON (one object per line) or a human text form.

    Events may come as their msgpack bytes (``msgspec.Raw``: what ``BatchCodec.decode_lines``
    leaves of a batch but its lines) when ``takes_raw``: NDJSON with the compiled module. Those
    go from their bytes to NDJSON with no Python object (``render_events``), the same bytes as
    decoding and rendering them here (tests/outputs/test_ndjson_fast.py); one it does not take
    (a float, bytes, a kind it does not know) is decoded and rendered here, and bytes that do
    not decode raise msgspec's errors as decoding the batch would have."""

    def __init__(self, *, fmt: str, host: str, identity: Identity | None = None,
                 fast: bool = FAST_PATH) -> None:
        self.fmt = fmt
        self.host = host
        self.identity = identity
        self._encoder = msgspec.json.Encoder()
        self._fast = fast and FAST_PATH
        self._host_json = b',"host":' + msgspec.json.encode(host) + b',"path":'
        self.takes_raw = self._fast and RAW_PATH and fmt == "ndjson"
        """Whether ``render`` takes events as their msgpack bytes."""
        self._shapes = compiled_shapes(host) if self.takes_raw else ()
        self._id_prefix = b"" if identity is None else \
            msgspec.json.encode(f"{identity.agent}.{identity.session}-")[1:-1]

    def render(self, events: list[Event]) -> bytes:
        if self.fmt != "ndjson":
            return "".join(text_lines(view(events), self.host)).encode("utf-8", "replace")
        if not self._fast:
            return self._encoder.encode_lines(records(events, self.host, self.identity))
        out: list[bytes] = []
        rest: list[Event] = []  # what the fast path does not take, in order, since the last run
        raws: list[msgspec.Raw] = []  # events as their bytes, in order, since the last run
        agent = self.identity.agent if self.identity is not None else ""
        encode = msgspec.json.encode
        for ev in events:
            if type(ev) is msgspec.Raw:
                if rest:
                    out.append(self._encoder.encode_lines(records(rest, self.host,
                                                                  self.identity)))
                    rest = []
                raws.append(ev)
                continue
            if raws:
                self._render_raw(raws, out)
                raws = []
            if type(ev) is not LogEvent or not plain(ev):
                rest.append(ev)
                if len(rest) >= RENDER_PIECE:
                    out.append(self._encoder.encode_lines(records(rest, self.host,
                                                                  self.identity)))
                    rest = []
                    relax()
                continue
            if rest:
                out.append(self._encoder.encode_lines(records(rest, self.host, self.identity)))
                rest = []
            relax()
            head = b'{"time":' + encode(rfc3339_ns(ev.read_ns)) + self._host_json \
                + encode(ev.path) + b',"offset":'
            prefix = line_prefix(agent, ev.fid).encode()
            out.append(render_lines(head, ev.data, ev.offset, prefix))
        if raws:
            self._render_raw(raws, out)
        if rest:
            out.append(self._encoder.encode_lines(records(rest, self.host, self.identity)))
        return out[0] if len(out) == 1 else b"".join(out)

    def _render_raw(self, raws: list[msgspec.Raw], out: list[bytes]) -> None:
        """Events as their msgpack bytes, RENDER_PIECE at a time; one the compiled path does not
        take is decoded (msgspec raises for bytes that are not an event) and rendered here."""
        i, n = 0, len(raws)
        while i < n:
            stop = min(n, i + RENDER_PIECE)
            data, i = render_events(raws, i, stop, self._shapes, self._id_prefix, INPUT_SHIFT)
            if data:
                out.append(data)
            if i < stop:  # it stopped at one it does not take
                ev = _ANY_EVENT.decode(raws[i])
                out.append(self._encoder.encode_lines(records([ev], self.host, self.identity)))
                i += 1
            relax()


def text_lines(items: list[LineRun | EventRecord], host: str) -> list[str]:
    out: list[str] = []
    for item in items:
        if type(item) is EventRecord:
            rest = " ".join(f"{k}={v}" for k, v in item.fields.items())
            if item.process is not None:
                rest += f" process={item.process}"
            out.append(f"{rfc3339_ns(item.time_ns)} {host} [{item.kind}] {rest}\n")
            continue
        mark = ""
        if item.piece is not None:
            mark = f"[piece {item.piece}{', last' if item.last_piece else ''}] "
        if item.unterminated:
            mark += "[no newline] "
        head = f"{rfc3339_ns(item.read_ns)} {host} {item.path}:"
        out += [f"{head}{off} {mark}{s}\n" for off, s in zip(item.offsets, item.texts)]
    return out
