/* The agent's byte loops that Python does slowly, for common/fastpath.py (which has the
 * pure-Python equivalents, used where this module was not built: setup.py).
 *
 *   count_lines(data) -> int
 *
 * The newlines in data: bytes.count(b"\n") looks at one byte at a time (about 210 µs per 256 KiB
 * here, seven times the read that brought them); memchr finds them a vector at a time. The file
 * input counts every run of lines it reads (inputs/file/tailer.py).
 *
 *   render_lines(head, data, offset, id_prefix) -> bytes
 *
 * The NDJSON renderer's fast path (outputs/ndjson.py): a run of plain lines straight from the
 * LogEvent's bytes to the NDJSON the pure-Python path makes, byte for byte, with no Python object
 * per line. head, data and id_prefix must be bytes; offset a non-negative int.
 *
 * head       b'{"time":"...","host":"...","path":"...","offset":' (what every line of the run
 *            shares, already JSON);
 * data       the run's lines, each ending in b"\n" (bytes after the last newline are not a line,
 *            as in outputs.records.line_run); the caller passes only valid UTF-8;
 * offset     the file offset of data's first byte;
 * id_prefix  b"" (no ids) or the lines' record id without the offset (common.identity).
 *
 * Each line becomes  head <offset> ,"line":"<escaped>" [,"id":"<id_prefix><offset>"] }\n
 * with msgspec's escapes: \" \\ \b \t \n \f \r, any other byte below 0x20 as \u00XX, the rest
 * as it is. tests/outputs/test_ndjson_fast.py holds it to the Python path's output.
 *
 *   render_events(events, start, stop, shapes, id_prefix, shift) -> (bytes, next)
 *
 * The same renderer's path for events other than lines (spans, HTTP exchanges, connections,
 * processes, losses, ETW events): from each one's msgpack bytes (msgspec.Raw: what
 * BatchCodec.decode_lines leaves of a batch) straight to the NDJSON object the Python path
 * makes of the decoded event (outputs/ndjson.py event_object), with no Python object per event
 * or per field. events[start:stop] in order until one it does not take: next is that one's
 * index (stop when all went). It takes an event whose kind is in shapes (outputs/ndjson.py
 * compiled_shapes: the keys in order, where the time, seq and process are, what kinds of
 * msgpack value each field may hold) with all its fields, every top-level value of a kind its
 * field's type allows (and a list's items or a dict's values likewise), strings of valid
 * UTF-8, no float, binary or extension anywhere, no key twice in a map, no process (a nested
 * struct: see PROCESS in render_event). What msgspec would reject is so handed back, and the
 * caller's decoding says why. A map of more than MAX_KEYS keys and an event of more than
 * MAX_EVENT bytes are handed back too.
 *
 *   pack_span(values, places, trace_id, span_id, parent, tracestate, how, local, resource,
 *             head, keys) -> bytes | None
 *
 * An HTTP exchange's span as the pipeline sends it (pipeline/spans.py SpanBuilder(packed=True)):
 * the msgpack bytes msgspec makes of the SpanEvent that SpanBuilder._event builds, the same
 * rules for its attributes, with no dict or SpanEvent per span (tests/pipeline/test_spans.py
 * holds the two together). None for a value of a type the rules do not expect.
 *
 *   tagged(events, tag) -> list[int]
 *
 * The indices of the events (msgpack bytes) with that tag, or that are not a tagged array at
 * all (common/events.py BatchCodec.decode_lines decodes those).
 *
 *   observe_spans(builder, events, now, out, kit) -> None
 *
 * The span builder's loop (pipeline/spans.py SpanBuilder.observe, packed): the exchanges whose
 * span needs no wait are made, kept and packed here, with the same effects on the builder's
 * tables as its Python path; the others are handed to that path before anything changed
 * (tests/pipeline/test_spans.py runs scripts through both and holds them together).
 *
 *   http_exchange(record, offset, peers, comms, kit) -> HttpEvent | None
 *
 * A kernel-paired exchange's event, from its record's bytes, in its common case (inputs/ebpf/translate.py feed_records),
 * None for anything else, which the Python loop makes (tests/inputs/ebpf/test_translate_fast.py).
 *
 *   hex_ids(raw, size) -> list[str]
 *
 * Random bytes cut into trace or span ids as hex, all-zero ones left out (common/tracecontext.py).
 *
 *   ring_read(consumer, producer, base, mask, out) -> int
 *
 * One pass over a BPF ring buffer's memory: its complete records as bytes, their space handed
 * back, with the memory ordering libbpf's consumer uses (inputs/ebpf/loader.py RingReader).
 *
 * One file per caller (speedups.h lists them); this one is the module itself.
 */
#include "speedups.h"

static PyMethodDef methods[] = {
    {"count_lines", count_lines, METH_O, "count_lines(data) -> int: the newlines in data."},
    {"render_lines", render_lines, METH_VARARGS,
     "render_lines(head, data, offset, id_prefix) -> bytes: a run of plain lines as NDJSON."},
    {"render_events", render_events, METH_VARARGS,
     "render_events(events, start, stop, shapes, id_prefix, shift) -> (bytes, next): events "
     "other than lines, from their msgpack bytes, as NDJSON."},
    {"pack_span", (PyCFunction)(void (*)(void))pack_span, METH_FASTCALL,
     "pack_span(values, places, trace_id, span_id, parent, tracestate, how, local, resource, "
     "head, keys) -> bytes | None: an exchange's SpanEvent as msgpack (pipeline/spans.py)."},
    {"observe_spans", (PyCFunction)(void (*)(void))observe_spans, METH_FASTCALL,
     "observe_spans(builder, events, now, out, kit) -> None: SpanBuilder.observe's loop, its "
     "common case in C (pipeline/spans.py)."},
    {"http_exchange", (PyCFunction)(void (*)(void))http_exchange, METH_FASTCALL,
     "http_exchange(item, offset, peers, comms, kit) -> HttpEvent | None: a kernel-paired "
     "exchange's event, its common case (inputs/ebpf/translate.py)."},
    {"hex_ids", hex_ids, METH_VARARGS,
     "hex_ids(raw, size) -> list[str]: raw in pieces of size bytes as hex, all-zero ones left "
     "out (common/tracecontext.py)."},
    {"ring_read", (PyCFunction)(void (*)(void))ring_read, METH_FASTCALL,
     "ring_read(consumer, producer, base, mask, out) -> int: the complete records of a BPF "
     "ring buffer appended to out as bytes, their space given back (inputs/ebpf/loader.py)."},
    {"tagged", tagged, METH_VARARGS,
     "tagged(events, tag) -> list[int]: the indices of the events (msgpack) of that tag."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "common._speedups",
    "Compiled byte loops: count_lines, tagged, pack_span and the NDJSON renderer's fast paths (common/fastpath.py).",
    -1,
    methods,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    init_escapes();
    if (intern_span_names() < 0)
        return NULL;
    return PyModule_Create(&module);
}
