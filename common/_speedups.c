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
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

/* 0: copy; 'u': \u00XX; else the character after the backslash. */
static char ESC[256];

static void
init_escapes(void)
{
    for (int c = 0; c < 0x20; c++)
        ESC[c] = 'u';
    ESC['\b'] = 'b';
    ESC['\t'] = 't';
    ESC['\n'] = 'n';
    ESC['\f'] = 'f';
    ESC['\r'] = 'r';
    ESC['"'] = '"';
    ESC['\\'] = '\\';
}

static const char HEX[] = "0123456789abcdef";

#define ONES 0x0101010101010101ULL
#define HIGHS 0x8080808080808080ULL

/* Whether any of the eight bytes of w may need escaping (below 0x20, '"' or '\\'): exact for
 * ASCII bytes, sometimes true for a word with bytes of 0x80 and above (those are then looked at
 * one by one: a false alarm costs time, never bytes). */
static inline int
word_flags(const char *p)
{
    uint64_t w, q, b;
    memcpy(&w, p, 8);
    q = w ^ (ONES * '"');
    b = w ^ (ONES * '\\');
    return (((w - ONES * 0x20) & ~w) | ((q - ONES) & ~q) | ((b - ONES) & ~b)) & HIGHS ? 1 : 0;
}

/* Copy [p, end) escaped to o; returns the end of what was written. */
static inline char *
put_escaped(char *o, const char *p, const char *end)
{
    const char *run = p;
    while (p < end) {
        if (end - p >= 8 && !word_flags(p)) {
            p += 8;
            continue;
        }
        const char *stop = end - p >= 8 ? p + 8 : end;
        for (; p < stop; p++) {
            char e = ESC[(unsigned char)*p];
            if (!e)
                continue;
            memcpy(o, run, (size_t)(p - run));
            o += p - run;
            *o++ = '\\';
            if (e == 'u') {
                unsigned char c = (unsigned char)*p;
                *o++ = 'u';
                *o++ = '0';
                *o++ = '0';
                *o++ = HEX[c >> 4];
                *o++ = HEX[c & 15];
            } else {
                *o++ = e;
            }
            run = p + 1;
        }
    }
    memcpy(o, run, (size_t)(end - run));
    return o + (end - run);
}

static inline char *
put_u64(char *p, uint64_t v)
{
    char tmp[20];
    int n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (n)
        *p++ = tmp[--n];
    return p;
}

static const char LINE_KEY[] = ",\"line\":\"";
static const char ID_KEY[] = "\",\"id\":\"";

static PyObject *
render_lines(PyObject *self, PyObject *args)
{
    PyObject *head_obj, *data_obj, *offset_obj, *idp_obj, *out;

    /* bytes only (S): immutable, so the second pass, without the GIL, finds what the first
     * counted. */
    if (!PyArg_ParseTuple(args, "SSOS:render_lines", &head_obj, &data_obj, &offset_obj, &idp_obj))
        return NULL;
    unsigned long long offset = PyLong_AsUnsignedLongLong(offset_obj);  /* < 0: OverflowError */
    if (offset == (unsigned long long)-1 && PyErr_Occurred())
        return NULL;
    struct { const char *buf; Py_ssize_t len; } head, data, idp;
    head.buf = PyBytes_AS_STRING(head_obj);
    head.len = PyBytes_GET_SIZE(head_obj);
    data.buf = PyBytes_AS_STRING(data_obj);
    data.len = PyBytes_GET_SIZE(data_obj);
    idp.buf = PyBytes_AS_STRING(idp_obj);
    idp.len = PyBytes_GET_SIZE(idp_obj);

    const char *src = data.buf;
    const char *end = src + data.len;
    Py_ssize_t lines = 0, escapes = 0;  /* escapes: the bytes to escape, and the newlines */
    const char *p = src;
    for (; end - p >= 8; p += 8) {
        if (!word_flags(p))
            continue;
        for (int i = 0; i < 8; i++) {
            unsigned char c = (unsigned char)p[i];
            lines += c == '\n';
            escapes += ESC[c] != 0;
        }
    }
    for (; p < end; p++) {
        lines += *p == '\n';
        escapes += ESC[(unsigned char)*p] != 0;
    }
    /* Upper bound: every escape at most 6 bytes (counted once already), two offsets of at most
     * 20 digits per line. */
    Py_ssize_t fixed = head.len + 20 + (Py_ssize_t)sizeof(LINE_KEY) - 1 + 1
                       + (idp.len ? (Py_ssize_t)sizeof(ID_KEY) - 1 + idp.len + 20 + 1 : 0) + 2;
    if (lines && fixed > (PY_SSIZE_T_MAX - data.len - 5 * escapes) / lines)
        return PyErr_NoMemory();
    Py_ssize_t bound = lines * fixed + data.len + 5 * escapes;
    out = PyBytes_FromStringAndSize(NULL, bound);
    if (out == NULL)
        return NULL;
    char *o = PyBytes_AS_STRING(out);
    const char *line = src;
    uint64_t off = offset;
    Py_BEGIN_ALLOW_THREADS
    while (lines--) {
        const char *nl = memchr(line, '\n', (size_t)(end - line));
        memcpy(o, head.buf, (size_t)head.len);
        o += head.len;
        o = put_u64(o, off);
        memcpy(o, LINE_KEY, sizeof(LINE_KEY) - 1);
        o += sizeof(LINE_KEY) - 1;
        o = put_escaped(o, line, nl);
        if (idp.len) {
            memcpy(o, ID_KEY, sizeof(ID_KEY) - 1);
            o += sizeof(ID_KEY) - 1;
            memcpy(o, idp.buf, (size_t)idp.len);
            o += idp.len;
            o = put_u64(o, off);
        }
        *o++ = '"';
        *o++ = '}';
        *o++ = '\n';
        off += (uint64_t)(nl - line) + 1;
        line = nl + 1;
    }
    Py_END_ALLOW_THREADS
    if (_PyBytes_Resize(&out, o - PyBytes_AS_STRING(out)) < 0)
        return NULL;
    return out;
}

/* --- render_events: events other than lines, from their msgpack bytes straight to NDJSON -----
 *
 * Room for an event is made once, before it is rendered (EVENT_ROOM): nothing after that
 * checks for space. */

typedef struct {
    char *p;
    size_t len, cap;
} Buf;

static int
buf_grow(Buf *b, size_t more)
{
    size_t cap = b->cap ? b->cap : 65536;
    while (cap - b->len < more) {
        if (cap > ((size_t)PY_SSIZE_T_MAX) / 2)
            return -1;
        cap *= 2;
    }
    char *p = PyMem_Realloc(b->p, cap);
    if (p == NULL)
        return -1;
    b->p = p;
    b->cap = cap;
    return 0;
}

enum { TJ_OK = 0, TJ_OTHER = -1, TJ_NOMEM = -2 };
/* TJ_OTHER: bytes this does not render (a float, binary, an extension, a key that is not a
 * string, invalid UTF-8, too deep, cut short): the caller renders that event in Python, which
 * decodes it (and raises for what is not valid). */

#define MAX_DEPTH 32
#define MAX_FIELDS 64
#define MAX_KEYS 32         /* a map with more is handed back */
#define MAX_EVENT (1 << 20) /* an event of more bytes is handed back (its room: 8 per byte) */

static inline uint64_t
be(const unsigned char *p, int n)
{
    uint64_t v = 0;
    for (int i = 0; i < n; i++)
        v = (v << 8) | p[i];
    return v;
}

/* Strict UTF-8, as Python's decoder takes it: no overlong forms, no surrogates, at most
 * U+10FFFF. */
static int
valid_utf8(const unsigned char *p, size_t n)
{
    const unsigned char *end = p + n;
    while (p < end) {
        unsigned char c = *p;
        if (c < 0x80) {
            p++;
        } else if (c >= 0xC2 && c <= 0xDF) {
            if (end - p < 2 || (p[1] & 0xC0) != 0x80)
                return 0;
            p += 2;
        } else if (c >= 0xE0 && c <= 0xEF) {
            if (end - p < 3 || (p[1] & 0xC0) != 0x80 || (p[2] & 0xC0) != 0x80)
                return 0;
            if ((c == 0xE0 && p[1] < 0xA0) || (c == 0xED && p[1] >= 0xA0))
                return 0;  /* overlong; a surrogate */
            p += 3;
        } else if (c >= 0xF0 && c <= 0xF4) {
            if (end - p < 4 || (p[1] & 0xC0) != 0x80 || (p[2] & 0xC0) != 0x80
                    || (p[3] & 0xC0) != 0x80)
                return 0;
            if ((c == 0xF0 && p[1] < 0x90) || (c == 0xF4 && p[1] >= 0x90))
                return 0;  /* overlong; above U+10FFFF */
            p += 4;
        } else {
            return 0;
        }
    }
    return 1;
}

/* The length of a str at *pp (its header read, *pp moved to its bytes), or -1 if not a str. */
static inline Py_ssize_t
str_len(const unsigned char **pp, const unsigned char *end)
{
    const unsigned char *p = *pp;
    if (p >= end)
        return -1;
    unsigned char t = *p;
    size_t n, h;
    if ((t & 0xE0) == 0xA0) {
        n = t & 0x1F;
        h = 1;
    } else if (t >= 0xD9 && t <= 0xDB) {
        h = 1 + ((size_t)1 << (t - 0xD9));
        if ((size_t)(end - p) < h)
            return -1;
        n = (size_t)be(p + 1, (int)h - 1);
    } else {
        return -1;
    }
    if ((size_t)(end - p) - h < n)
        return -1;
    *pp = p + h;
    return (Py_ssize_t)n;
}

/* A string as JSON: most are ASCII with nothing to escape, copied at once. */
static inline int
put_str(Buf *b, const unsigned char *s, size_t n)
{
    size_t i = 0;
    for (; n - i >= 8; i += 8) {
        uint64_t w;
        memcpy(&w, s + i, 8);
        if ((w & HIGHS) || word_flags((const char *)s + i))
            goto slow;
    }
    for (; i < n; i++)
        if (s[i] >= 0x80 || ESC[s[i]])
            goto slow;
    b->p[b->len++] = '"';
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len++] = '"';
    return TJ_OK;
slow:
    if (!valid_utf8(s, n))
        return TJ_OTHER;
    b->p[b->len++] = '"';
    char *o = put_escaped(b->p + b->len, (const char *)s, (const char *)s + n);
    b->len = (size_t)(o - b->p);
    b->p[b->len++] = '"';
    return TJ_OK;
}

/* Reads an integer; 1 if it is one (*neg: below zero, *v: its magnitude). */
static inline int
read_int(const unsigned char **pp, const unsigned char *end, int *neg, uint64_t *v)
{
    const unsigned char *p = *pp;
    if (p >= end)
        return 0;
    unsigned char t = *p;
    *neg = 0;
    if (t < 0x80) {
        *v = t;
        *pp = p + 1;
        return 1;
    }
    if (t >= 0xE0) {
        *neg = 1;
        *v = (uint64_t)(256 - t);
        *pp = p + 1;
        return 1;
    }
    if (t >= 0xCC && t <= 0xCF) {
        int n = 1 << (t - 0xCC);
        if (end - p < 1 + n)
            return 0;
        *v = be(p + 1, n);
        *pp = p + 1 + n;
        return 1;
    }
    if (t >= 0xD0 && t <= 0xD3) {
        int n = 1 << (t - 0xD0);
        if (end - p < 1 + n)
            return 0;
        uint64_t u = be(p + 1, n);
        int bits = 8 * n;
        int64_t x = bits == 64 ? (int64_t)u
                               : (int64_t)(u ^ ((uint64_t)1 << (bits - 1))) - ((int64_t)1 << (bits - 1));
        if (x < 0) {
            *neg = 1;
            *v = (uint64_t)0 - (uint64_t)x;
        } else {
            *v = (uint64_t)x;
        }
        *pp = p + 1 + n;
        return 1;
    }
    return 0;
}

/* A map's or an array's header at *pp: its items (a map's pairs) and whether a map; -1 if not
 * one. */
static inline Py_ssize_t
container(const unsigned char **pp, const unsigned char *end, int *map)
{
    const unsigned char *p = *pp;
    if (p >= end)
        return -1;
    unsigned char t = *p;
    size_t count, h;
    if ((t & 0xE0) == 0x80) {  /* fixmap 0x8_, fixarray 0x9_ */
        *map = t < 0x90;
        count = t & 0x0F;
        h = 1;
    } else if (t >= 0xDC && t <= 0xDF) {
        *map = t >= 0xDE;
        h = (t & 1) ? 5 : 3;
        if ((size_t)(end - p) < h)
            return -1;
        count = (size_t)be(p + 1, (int)h - 1);
        if (count > (size_t)(end - p))
            return -1;  /* every item takes a byte at least */
    } else {
        return -1;
    }
    *pp = p + h;
    return (Py_ssize_t)count;
}

/* What a field may hold, as outputs/ndjson.py's shapes say it (one byte per field for the
 * field, one for the items of a list or the values of a dict): a set of these. */
enum { K_INT = 1, K_STR = 2, K_BOOL = 4, K_NIL = 8, K_MAP = 16, K_ARRAY = 32, K_ANY = 63 };

static inline int
kind_of(unsigned char t)
{
    if (t < 0x80 || t >= 0xE0 || (t >= 0xCC && t <= 0xD3))
        return K_INT;
    if ((t & 0xE0) == 0xA0 || (t >= 0xD9 && t <= 0xDB))
        return K_STR;
    if (t == 0xC2 || t == 0xC3)
        return K_BOOL;
    if (t == 0xC0)
        return K_NIL;
    if ((t & 0xF0) == 0x80 || t == 0xDE || t == 0xDF)
        return K_MAP;
    if ((t & 0xF0) == 0x90 || t == 0xDC || t == 0xDD)
        return K_ARRAY;
    return 0;  /* float, binary, extension: never rendered here */
}

/* One msgpack value at *pp as JSON (msgspec's: the same bytes msgspec.json gives for what
 * msgspec.msgpack decodes it to), *pp moved past it; the items of a list or the values of a
 * dict must be of the kinds in items. At most 8 bytes out per byte in. */
static int
put_value(Buf *b, const unsigned char **pp, const unsigned char *end, int depth, int items)
{
    const unsigned char *p = *pp;
    if (p >= end || depth > MAX_DEPTH)
        return TJ_OTHER;
    unsigned char t = *p;
    int neg, map;
    uint64_t v;
    Py_ssize_t n = str_len(pp, end);
    if (n >= 0) {
        int r = put_str(b, *pp, (size_t)n);
        *pp += n;
        return r;
    }
    if (read_int(pp, end, &neg, &v)) {
        if (neg)
            b->p[b->len++] = '-';
        b->len = (size_t)(put_u64(b->p + b->len, v) - b->p);
        return TJ_OK;
    }
    if (t == 0xC0 || t == 0xC2 || t == 0xC3) {
        const char *s = t == 0xC0 ? "null" : t == 0xC2 ? "false" : "true";
        size_t k = t == 0xC2 ? 5 : 4;
        memcpy(b->p + b->len, s, k);
        b->len += k;
        *pp = p + 1;
        return TJ_OK;
    }
    n = container(&p, end, &map);
    if (n < 0)
        return TJ_OTHER;  /* float, binary, extension, or a reserved byte */
    if (map && n > MAX_KEYS)
        return TJ_OTHER;  /* its keys' uniqueness is not worth checking here */
    const unsigned char *key_at[MAX_KEYS];
    Py_ssize_t key_len[MAX_KEYS];
    b->p[b->len++] = map ? '{' : '[';
    for (Py_ssize_t i = 0; i < n; i++) {
        if (i)
            b->p[b->len++] = ',';
        if (map) {
            Py_ssize_t k = str_len(&p, end);
            if (k < 0)
                return TJ_OTHER;  /* msgspec.json writes other keys as strings: left to it */
            for (Py_ssize_t j = 0; j < i; j++)
                if (key_len[j] == k && memcmp(key_at[j], p, (size_t)k) == 0)
                    return TJ_OTHER;  /* a key twice: msgspec keeps the last value only */
            key_at[i] = p;
            key_len[i] = k;
            int r = put_str(b, p, (size_t)k);
            if (r)
                return r;
            p += k;
            b->p[b->len++] = ':';
        }
        if (p >= end || !(kind_of(*p) & items))
            return TJ_OTHER;  /* not what the field's type lets it hold: msgspec says so */
        int r = put_value(b, &p, end, depth + 1, K_ANY);
        if (r)
            return r;
    }
    b->p[b->len++] = map ? '}' : ']';
    *pp = p;
    return TJ_OK;
}

/* Moves *pp past one value. */
static int
skip_value(const unsigned char **pp, const unsigned char *end, int depth)
{
    const unsigned char *p = *pp;
    if (p >= end || depth > MAX_DEPTH)
        return TJ_OTHER;
    unsigned char t = *p;
    int neg, map;
    uint64_t v;
    Py_ssize_t n = str_len(pp, end);
    if (n >= 0) {
        *pp += n;
        return TJ_OK;
    }
    if (read_int(pp, end, &neg, &v))
        return TJ_OK;
    if (t == 0xC0 || t == 0xC2 || t == 0xC3) {
        *pp = p + 1;
        return TJ_OK;
    }
    n = container(&p, end, &map);
    if (n < 0)
        return TJ_OTHER;
    for (Py_ssize_t i = 0; i < n << map; i++)
        if (skip_value(&p, end, depth + 1))
            return TJ_OTHER;
    *pp = p;
    return TJ_OK;
}

static const char TIME_KEY[] = "{\"time\":\"";
static const char ID_OPEN[] = ",\"id\":\"";

static struct { int64_t secs; char text[48]; } last_second = {-1, ""};

/* "YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ" as rfc3339_ns writes it (and the closing quote). A u64 of
 * nanoseconds is 1970 to 2554: always four digits of year. The date from the days since the
 * epoch by Howard Hinnant's civil_from_days (no gmtime_r: not every C library has it). */
static void
put_time(Buf *b, uint64_t ns)
{
    int64_t secs = (int64_t)(ns / 1000000000u);
    uint32_t frac = (uint32_t)(ns % 1000000000u);
    if (last_second.secs != secs) {
        int64_t days = secs / 86400, rem = secs % 86400;
        int64_t z = days + 719468, era = z / 146097;
        int64_t doe = z - era * 146097;
        int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
        int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        int64_t mp = (5 * doy + 2) / 153;
        int64_t day = doy - (153 * mp + 2) / 5 + 1, month = mp < 10 ? mp + 3 : mp - 9;
        int64_t year = yoe + era * 400 + (month <= 2);
        snprintf(last_second.text, sizeof last_second.text, "%04d-%02d-%02dT%02d:%02d:%02d",
                 (int)year, (int)month, (int)day, (int)(rem / 3600), (int)(rem / 60 % 60),
                 (int)(rem % 60));
        last_second.secs = secs;
    }
    memcpy(b->p + b->len, last_second.text, 19);
    b->len += 19;
    char *o = b->p + b->len;
    *o++ = '.';
    for (int i = 8; i >= 0; i--) {
        o[i] = (char)('0' + frac % 10);
        frac /= 10;
    }
    o += 9;
    *o++ = 'Z';
    *o++ = '"';
    b->len = (size_t)(o - b->p);
}

/* A shape: (tag, items, time_at, seq_at, process_at, head, keys, kinds), built by
 * outputs/ndjson.py for one event kind; positions count the msgpack array's items, the tag
 * first; kinds: two bytes per item (K_*: what it may be, what its items may be). */
typedef struct {
    const char *tag;
    Py_ssize_t tag_len, fields, time_at, seq_at, process_at;
    PyObject *head, *keys;
    const unsigned char *kinds;
    size_t fixed;  /* the bytes of the object's keys and head: what its values do not make */
} Shape;

static int
read_shape(PyObject *t, Shape *s)
{
    PyObject *tag;
    if (!PyTuple_Check(t)) {
        PyErr_SetString(PyExc_TypeError, "render_events: a shape is a tuple");
        return -1;
    }
    PyObject *kinds;
    if (!PyArg_ParseTuple(t, "SnnnnSO!S", &tag, &s->fields, &s->time_at, &s->seq_at,
                          &s->process_at, &s->head, &PyTuple_Type, &s->keys, &kinds))
        return -1;
    s->kinds = (const unsigned char *)PyBytes_AS_STRING(kinds);
    s->tag = PyBytes_AS_STRING(tag);
    s->tag_len = PyBytes_GET_SIZE(tag);
    if (s->fields > MAX_FIELDS || PyTuple_GET_SIZE(s->keys) != s->fields || s->time_at <= 0
            || s->time_at >= s->fields || s->seq_at < 0 || s->seq_at >= s->fields
            || s->process_at < 0 || s->process_at >= s->fields
            || PyBytes_GET_SIZE(kinds) != 2 * s->fields) {
        PyErr_SetString(PyExc_ValueError, "render_events: a shape that does not fit");
        return -1;
    }
    if ((s->seq_at && (s->seq_at == s->time_at || s->seq_at == s->process_at))
            || (s->process_at && s->process_at == s->time_at)) {
        PyErr_SetString(PyExc_ValueError, "render_events: time, seq and process in one place");
        return -1;
    }
    s->fixed = (size_t)PyBytes_GET_SIZE(s->head);
    for (Py_ssize_t i = 0; i < s->fields; i++) {
        PyObject *key = PyTuple_GET_ITEM(s->keys, i);
        int apart = i == 0 || i == s->time_at || i == s->seq_at || i == s->process_at;
        if (apart ? key != Py_None : !PyBytes_CheckExact(key)) {
            PyErr_SetString(PyExc_TypeError, "render_events: a key is None for the tag, time, "
                            "seq and process, bytes for any other field");
            return -1;
        }
        if (!apart)
            s->fixed += (size_t)PyBytes_GET_SIZE(key);
    }
    return 0;
}

static inline void
put_key(Buf *b, PyObject *key)
{
    memcpy(b->p + b->len, PyBytes_AS_STRING(key), (size_t)PyBytes_GET_SIZE(key));
    b->len += (size_t)PyBytes_GET_SIZE(key);
}

/* One event; TJ_OTHER leaves the buffer as it found it. */
static int
render_event(Buf *b, const unsigned char *p, const unsigned char *end, const Shape *shapes,
             Py_ssize_t nshapes, const char *idp, size_t idp_len, int shift)
{
    size_t mark = b->len;
    int map, neg;
    Py_ssize_t count = container(&p, end, &map);
    if (count < 0 || map)
        return TJ_OTHER;
    const unsigned char *q = p;
    Py_ssize_t tl = str_len(&q, end);
    if (tl < 0)
        return TJ_OTHER;
    const Shape *s = NULL;
    for (Py_ssize_t i = 0; i < nshapes; i++)
        if (shapes[i].tag_len == tl && memcmp(shapes[i].tag, q, (size_t)tl) == 0) {
            s = &shapes[i];
            break;
        }
    if (s == NULL || count != s->fields || end - p > MAX_EVENT)
        return TJ_OTHER;  /* not a kind this renders, not all its fields, or very large */
    /* EVENT_ROOM: a value's JSON is at most 8 bytes per byte of its msgpack (a string 6 per
     * byte and its quotes; a nil, a bool, an int, a separator fewer), then the fixed parts. */
    size_t room = 8 * (size_t)(end - p) + s->fixed + sizeof(TIME_KEY) + 32 + sizeof(ID_OPEN)
                  + idp_len + 48 + 2;
    if (b->cap - b->len < room && buf_grow(b, room) < 0)
        return TJ_NOMEM;
    p = q + tl;  /* past the tag */
    uint64_t ns, seq = 0;
    if (s->time_at == 1 && !(idp_len && s->seq_at)) {
        /* one pass: the time first, no id to wait for */
        if (!read_int(&p, end, &neg, &ns) || neg)
            return TJ_OTHER;
        memcpy(b->p + b->len, TIME_KEY, sizeof(TIME_KEY) - 1);
        b->len += sizeof(TIME_KEY) - 1;
        put_time(b, ns);
        put_key(b, s->head);
        for (Py_ssize_t i = 2; i < count; i++) {
            if (i == s->seq_at) {
                if (!read_int(&p, end, &neg, &seq))
                    goto other;  /* not an int: msgspec says what it is */
            } else if (i == s->process_at) {
                if (p >= end || *p != 0xC0)
                    goto other;  /* a process: see PROCESS below */
                p++;
            } else {
                if (p >= end || !(kind_of(*p) & s->kinds[2 * i]))
                    goto other;
                put_key(b, PyTuple_GET_ITEM(s->keys, i));
                if (put_value(b, &p, end, 1, s->kinds[2 * i + 1]))
                    goto other;
            }
        }
    } else {
        /* two: where each item starts, then the time, the id, the items in order */
        const unsigned char *at[MAX_FIELDS + 1];
        at[0] = q;
        for (Py_ssize_t i = 1; i < count; i++) {
            at[i] = p;
            if (skip_value(&p, end, 1))
                return TJ_OTHER;
        }
        q = at[s->time_at];
        if (!read_int(&q, end, &neg, &ns) || neg)
            return TJ_OTHER;
        if (s->seq_at) {
            q = at[s->seq_at];
            if (!read_int(&q, end, &neg, &seq) || neg)
                return TJ_OTHER;
        }
        memcpy(b->p + b->len, TIME_KEY, sizeof(TIME_KEY) - 1);
        b->len += sizeof(TIME_KEY) - 1;
        put_time(b, ns);
        put_key(b, s->head);
        if (idp_len && seq) {
            memcpy(b->p + b->len, ID_OPEN, sizeof(ID_OPEN) - 1);
            b->len += sizeof(ID_OPEN) - 1;
            memcpy(b->p + b->len, idp, idp_len);
            b->len += idp_len;
            b->len = (size_t)(put_u64(b->p + b->len, seq >> shift) - b->p);
            b->p[b->len++] = '.';
            b->len = (size_t)(put_u64(b->p + b->len, seq & (((uint64_t)1 << shift) - 1)) - b->p);
            b->p[b->len++] = '"';
        }
        for (Py_ssize_t i = 1; i < count; i++) {
            if (i == s->process_at) {
                if (*at[i] != 0xC0)
                    goto other;  /* a process: see PROCESS below */
                continue;
            }
            PyObject *key = PyTuple_GET_ITEM(s->keys, i);
            if (key == Py_None)
                continue;  /* the time, the seq: placed apart */
            q = at[i];
            if (!(kind_of(*q) & s->kinds[2 * i]))
                goto other;
            put_key(b, key);
            if (put_value(b, &q, end, 1, s->kinds[2 * i + 1]))
                goto other;
        }
    }
    if (p != end)
        goto other;  /* bytes after the event: not what msgspec would take */
    /* PROCESS: an event's process (a ProcessInfo, a msgpack map) is handed back: msgspec
     * decodes a struct's map whatever its keys' order, drops unknown keys and values equal to
     * their defaults, and checks each field's type; this would have to do all that to write
     * the same JSON. Spans, the bulk of what comes this way, have none; a None process is
     * left out of the object, as the Python path does. */
    b->p[b->len++] = '}';
    b->p[b->len++] = '\n';
    return TJ_OK;
other:
    b->len = mark;
    return TJ_OTHER;
}

static PyObject *
render_events(PyObject *self, PyObject *args)
{
    PyObject *events;
    PyObject *shapes_obj;
    Py_ssize_t start, stop;
    const char *idp;
    Py_ssize_t idp_len;
    int shift;
    Shape shapes[16];

    if (!PyArg_ParseTuple(args, "O!nnO!y#i:render_events", &PyList_Type, &events, &start, &stop,
                          &PyTuple_Type, &shapes_obj, &idp, &idp_len, &shift))
        return NULL;
    Py_ssize_t nshapes = PyTuple_GET_SIZE(shapes_obj);
    if (nshapes > 16 || shift <= 0 || shift >= 64) {
        PyErr_SetString(PyExc_ValueError, "render_events: at most 16 shapes, 0 < shift < 64");
        return NULL;
    }
    for (Py_ssize_t i = 0; i < nshapes; i++)
        if (read_shape(PyTuple_GET_ITEM(shapes_obj, i), &shapes[i]) < 0)
            return NULL;
    if (start < 0)
        start = 0;
    if (stop > PyList_GET_SIZE(events))
        stop = PyList_GET_SIZE(events);
    Buf b = {NULL, 0, 0};
    Py_ssize_t i = start;
    for (; i < stop && i < PyList_GET_SIZE(events); i++) {
        Py_buffer view;
        PyObject *item = PyList_GET_ITEM(events, i);
        Py_INCREF(item);  /* a __buffer__ in Python could change the list */
        int got = PyObject_GetBuffer(item, &view, PyBUF_SIMPLE);
        Py_DECREF(item);  /* the view holds it from here */
        if (got < 0) {
            PyErr_Clear();
            break;  /* not bytes: the caller's to render */
        }
        const unsigned char *p = view.buf;
        int r = render_event(&b, p, p + view.len, shapes, nshapes, idp, (size_t)idp_len, shift);
        PyBuffer_Release(&view);
        if (r == TJ_NOMEM) {
            PyMem_Free(b.p);
            return PyErr_NoMemory();
        }
        if (r)
            break;
    }
    PyObject *data = PyBytes_FromStringAndSize(b.p ? b.p : "", (Py_ssize_t)b.len);
    PyMem_Free(b.p);
    if (data == NULL)
        return NULL;
    return Py_BuildValue("Nn", data, i);
}

/* The indices of the events (msgpack bytes of tagged array_like Structs) whose tag is tag, or
 * that are not such arrays at all (msgspec says what they are when they are decoded). */
static PyObject *
tagged(PyObject *self, PyObject *args)
{
    PyObject *events, *out;
    const char *tag;
    Py_ssize_t tag_len;

    if (!PyArg_ParseTuple(args, "O!y#:tagged", &PyList_Type, &events, &tag, &tag_len))
        return NULL;
    out = PyList_New(0);
    if (out == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(events); i++) {
        Py_buffer view;
        int hit = 1;
        if (PyObject_GetBuffer(PyList_GET_ITEM(events, i), &view, PyBUF_SIMPLE) < 0) {
            PyErr_Clear();
        } else {
            const unsigned char *p = view.buf, *end = p + view.len;
            if (p < end && ((*p & 0xF0) == 0x90 || (*p == 0xDC && end - p >= 3))) {
                p += *p == 0xDC ? 3 : 1;
                Py_ssize_t n = str_len(&p, end);
                hit = n < 0 || (n == tag_len && memcmp(p, tag, (size_t)n) == 0);
            }
            PyBuffer_Release(&view);
        }
        if (hit) {
            PyObject *k = PyLong_FromSsize_t(i);
            if (k == NULL || PyList_Append(out, k) < 0) {
                Py_XDECREF(k);
                Py_DECREF(out);
                return NULL;
            }
            Py_DECREF(k);
        }
    }
    return out;
}

static PyObject *
count_lines(PyObject *self, PyObject *arg)
{
    Py_buffer data;
    Py_ssize_t n = 0;

    if (PyObject_GetBuffer(arg, &data, PyBUF_SIMPLE) < 0)
        return NULL;
    const char *p = data.buf, *end = p + data.len;
    Py_BEGIN_ALLOW_THREADS
    while (p < end && (p = memchr(p, '\n', (size_t)(end - p))) != NULL) {
        n++;
        p++;
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&data);
    return PyLong_FromSsize_t(n);
}

/* --- pack_span: an HTTP exchange's span, straight to its msgpack bytes ------------------------ */

/* msgpack writers: msgspec's encodings (the shortest form of each int, str and map header). */
/* A type byte, then v's low n bytes, big-endian. */
static inline char *
mp_fixed(char *o, unsigned char type, uint64_t v, int n)
{
    *o++ = (char)type;
    for (int i = n - 1; i >= 0; i--)
        *o++ = (char)(v >> (8 * i));
    return o;
}

static inline char *
mp_uint(char *o, uint64_t v)
{
    if (v < 0x80) {
        *o++ = (char)v;
        return o;
    }
    return v <= 0xFF ? mp_fixed(o, 0xCC, v, 1) : v <= 0xFFFF ? mp_fixed(o, 0xCD, v, 2)
         : v <= 0xFFFFFFFFu ? mp_fixed(o, 0xCE, v, 4) : mp_fixed(o, 0xCF, v, 8);
}

static inline char *
mp_int(char *o, int64_t v)
{
    if (v >= 0)
        return mp_uint(o, (uint64_t)v);
    if (v >= -32) {
        *o++ = (char)(unsigned char)(0xE0 | (v + 32));
        return o;
    }
    uint64_t u = (uint64_t)v;  /* two's complement: its low bytes are the narrower forms' */
    return v >= -128 ? mp_fixed(o, 0xD0, u, 1) : v >= -32768 ? mp_fixed(o, 0xD1, u, 2)
         : v >= INT32_MIN ? mp_fixed(o, 0xD2, u, 4) : mp_fixed(o, 0xD3, u, 8);
}

static inline char *
mp_str_head(char *o, size_t n)
{
    if (n < 32) {
        *o++ = (char)(0xA0 | n);
        return o;
    }
    return n <= 0xFF ? mp_fixed(o, 0xD9, n, 1) : n <= 0xFFFF ? mp_fixed(o, 0xDA, n, 2)
         : mp_fixed(o, 0xDB, n, 4);
}

static inline char *
mp_str(char *o, const char *s, size_t n)
{
    o = mp_str_head(o, n);
    memcpy(o, s, n);
    return o + n;
}

static inline char *
mp_bytes(char *o, PyObject *b)
{
    memcpy(o, PyBytes_AS_STRING(b), (size_t)PyBytes_GET_SIZE(b));
    return o + PyBytes_GET_SIZE(b);
}

/* The attributes' keys, in the order pipeline/spans.py passes them (_ATTR_KEYS) and a span's
 * attributes come in. */
enum { A_METHOD, A_PATH, A_QUERY, A_STATUS, A_ERROR, A_VERSION, A_PEER_ADDR, A_PEER_PORT,
       A_SERVER_ADDR, A_SERVER_PORT, A_CLIENT_ADDR, A_CLIENT_PORT, A_URL_FULL, A_THREAD,
       A_HEADERS_CUT, A_WEIGHT, A_KEYS };
/* The HttpEvent fields it reads, in the order pipeline/spans.py gives their places in
 * msgspec.structs.astuple(event) (_PACKED_FIELDS). */
enum { F_TIME, F_TID, F_DIRECTION, F_METHOD, F_PATH, F_STATUS, F_DURATION, F_PEER_ADDR,
       F_PEER_PORT, F_VERSION, F_TRACEPARENT, F_HEADERS_CUT, F_WEIGHT, F_COUNT };

typedef struct {
    const char *s;
    Py_ssize_t n;
} Str;

static inline int
as_str(PyObject *o, Str *out)
{
    if (!PyUnicode_CheckExact(o))
        return 0;
    out->s = PyUnicode_AsUTF8AndSize(o, &out->n);
    if (out->s == NULL) {  /* a lone surrogate: msgspec raises, and so will the caller's path */
        PyErr_Clear();
        return 0;
    }
    return (uint64_t)out->n <= UINT32_MAX;  /* msgspec's longest str */
}

static inline int
as_int(PyObject *o, int64_t *out)
{
    if (!PyLong_CheckExact(o))
        return 0;
    int overflow;
    long long v = PyLong_AsLongLongAndOverflow(o, &overflow);
    if (overflow || (v == -1 && PyErr_Occurred())) {
        PyErr_Clear();
        return 0;
    }
    *out = (int64_t)v;
    return 1;
}

/* pack_span(values, places, trace_id, span_id, parent, tracestate, how, local, resource, head,
 *           keys) -> bytes | None
 *
 * The msgpack bytes msgspec makes of the SpanEvent that pipeline/spans.py's SpanBuilder._event
 * builds of an exchange (the same rules: tests/pipeline/test_spans.py holds the two together):
 * values is astuple(HttpEvent), places the indices in it of the fields it reads (F_*), local the
 * connection's (local address, port, peer address, port) or None, resource the resource's
 * msgpack (a map), head the SpanEvent's array header and tag, keys the attributes' keys as
 * msgpack strs (A_*). None when a value is not of the type the rules expect (the caller then
 * builds the SpanEvent in Python). */
/* Whether a METH_FASTCALL function got other than ``want`` arguments (a TypeError set). */
static int
wrong_nargs(const char *name, Py_ssize_t nargs, Py_ssize_t want)
{
    if (nargs == want)
        return 0;
    PyErr_Format(PyExc_TypeError, "%s takes %zd arguments", name, want);
    return 1;
}

static PyObject *
pack_span_of(PyObject *const *args)
{
    PyObject *values = args[0], *places = args[1], *local = args[7], *resource = args[8];
    PyObject *head = args[9], *keys = args[10];
    if (!PyTuple_CheckExact(values) || !PyBytes_CheckExact(places)
            || PyBytes_GET_SIZE(places) != F_COUNT || !PyBytes_CheckExact(resource)
            || !PyBytes_CheckExact(head) || !PyTuple_CheckExact(keys)
            || PyTuple_GET_SIZE(keys) != A_KEYS) {
        PyErr_SetString(PyExc_TypeError, "pack_span: arguments of the wrong types");
        return NULL;
    }
    size_t key_bytes = 0;
    for (int i = 0; i < A_KEYS; i++) {
        if (!PyBytes_CheckExact(PyTuple_GET_ITEM(keys, i))) {
            PyErr_SetString(PyExc_TypeError, "pack_span: keys are bytes");
            return NULL;
        }
        key_bytes += (size_t)PyBytes_GET_SIZE(PyTuple_GET_ITEM(keys, i));
    }
    PyObject *f[F_COUNT];
    const unsigned char *at = (const unsigned char *)PyBytes_AS_STRING(places);
    for (int i = 0; i < F_COUNT; i++) {
        if (at[i] >= PyTuple_GET_SIZE(values)) {
            PyErr_SetString(PyExc_ValueError, "pack_span: a place past the event's fields");
            return NULL;
        }
        f[i] = PyTuple_GET_ITEM(values, at[i]);
    }
    Str direction, method, path, peer, version, traceparent, trace_id, span_id, parent,
        tracestate, how;
    Str laddr = {"", 0};
    int64_t time_ns, tid, status, duration, peer_port, weight, lport = 0;
    if (!as_str(f[F_DIRECTION], &direction) || !as_str(f[F_METHOD], &method)
            || !as_str(f[F_PATH], &path) || !as_str(f[F_PEER_ADDR], &peer)
            || !as_str(f[F_VERSION], &version) || !as_int(f[F_TIME], &time_ns)
            || !as_int(f[F_TID], &tid) || !as_int(f[F_STATUS], &status)
            || !as_int(f[F_DURATION], &duration) || !as_int(f[F_PEER_PORT], &peer_port)
            || !as_int(f[F_WEIGHT], &weight) || !as_str(f[F_TRACEPARENT], &traceparent)
            || !PyBool_Check(f[F_HEADERS_CUT]) || !as_str(args[2], &trace_id)
            || !as_str(args[3], &span_id) || !as_str(args[4], &parent)
            || !as_str(args[5], &tracestate) || !as_str(args[6], &how))
        Py_RETURN_NONE;
    if (time_ns < 0 || duration < 0 || time_ns > INT64_MAX - duration)
        Py_RETURN_NONE;  /* msgspec would write the sum as it is: not worth a path of its own */
    int server = direction.n == 6 && memcmp(direction.s, "server", 6) == 0;
    int has_local = server && local != Py_None;  /* a client span's is not used */
    if (has_local) {
        if (!PyTuple_CheckExact(local) || PyTuple_GET_SIZE(local) < 2
                || !as_str(PyTuple_GET_ITEM(local, 0), &laddr)
                || !as_int(PyTuple_GET_ITEM(local, 1), &lport))
            Py_RETURN_NONE;
    }
    int error = status >= 500 || (!server && status >= 400);
    const char *q = memchr(path.s, '?', (size_t)path.n);
    Str upath = path, query = {"", 0};
    if (q != NULL) {
        upath.n = q - path.s;
        query.s = q + 1;
        query.n = path.n - upath.n - 1;
    }
    /* network.protocol.version: what follows the '/', or the whole when nothing does */
    Str pv = version;
    const char *slash = memchr(version.s, '/', (size_t)version.n);
    if (slash != NULL && slash + 1 < version.s + version.n) {
        pv.s = slash + 1;
        pv.n = version.s + version.n - pv.s;
    }
    int cut = f[F_HEADERS_CUT] == Py_True && traceparent.n == 0;

    int n = 4 + (q != NULL) + (status != 0) + error + cut + (weight > 1);
    if (server) {
        if (peer.n)
            n += has_local ? 6 : 4;
        else if (has_local)
            n += 2;
    } else if (peer.n) {
        n += 5;
    }
    if (n > 15)
        Py_RETURN_NONE;  /* not a fixmap: cannot happen with these rules; Python's, if it did */
    size_t strings = (size_t)(direction.n + method.n * 2 + path.n * 3 + peer.n * 5 + version.n
                              + trace_id.n + span_id.n + parent.n + tracestate.n + how.n
                              + laddr.n * 2);
    /* ints at most 9 bytes, str headers 5, the error's and url.full's port digits and the
     * rest of url.full under 128 */
    size_t bound = 16 * 9 + 20 * 5 + 128 + strings + key_bytes
                   + (size_t)PyBytes_GET_SIZE(resource) + (size_t)PyBytes_GET_SIZE(head);
    PyObject *out = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)bound);
    if (out == NULL)
        return NULL;
    char *o = PyBytes_AS_STRING(out);
#define KEY(k) (o = mp_bytes(o, PyTuple_GET_ITEM(keys, (k))))
    o = mp_bytes(o, head);
    o = mp_int(o, time_ns);
    o = mp_int(o, time_ns + duration);
    o = mp_str(o, trace_id.s, (size_t)trace_id.n);
    o = mp_str(o, span_id.s, (size_t)span_id.n);
    o = mp_str(o, parent.s, (size_t)parent.n);
    o = mp_str(o, direction.s, (size_t)direction.n);
    o = mp_str(o, method.s, (size_t)method.n);
    *o++ = (char)(error ? 0xC3 : 0xC2);
    /* the attributes, counted before they are written */
    *o++ = (char)(0x80 | n);  /* at most 15 (checked above): a fixmap */
    KEY(A_METHOD);
    o = mp_str(o, method.s, (size_t)method.n);
    KEY(A_PATH);
    o = mp_str(o, upath.s, (size_t)upath.n);
    if (q != NULL) {
        KEY(A_QUERY);
        o = mp_str(o, query.s, (size_t)query.n);
    }
    if (status) {
        KEY(A_STATUS);
        o = mp_int(o, status);
    }
    if (error) {
        char digits[24];
        int k = snprintf(digits, sizeof digits, "%lld", (long long)status);
        KEY(A_ERROR);
        o = mp_str(o, digits, (size_t)k);
    }
    KEY(A_VERSION);
    o = mp_str(o, pv.s, (size_t)pv.n);
/* an address and a port, as two attributes */
#define ENDPOINT(ka, kp, a, port) \
    (KEY(ka), o = mp_str(o, (a).s, (size_t)(a).n), KEY(kp), o = mp_int(o, (port)))
    if (server) {
        if (peer.n)
            ENDPOINT(A_PEER_ADDR, A_PEER_PORT, peer, peer_port);
        if (has_local)
            ENDPOINT(A_SERVER_ADDR, A_SERVER_PORT, laddr, lport);
        if (peer.n)
            ENDPOINT(A_CLIENT_ADDR, A_CLIENT_PORT, peer, peer_port);
    } else if (peer.n) {
        ENDPOINT(A_PEER_ADDR, A_PEER_PORT, peer, peer_port);
        ENDPOINT(A_SERVER_ADDR, A_SERVER_PORT, peer, peer_port);
        KEY(A_URL_FULL);
        char port[24];
        int k = snprintf(port, sizeof port, "%lld", (long long)peer_port);
        o = mp_str_head(o, 7 + (size_t)peer.n + 1 + (size_t)k + (size_t)path.n);
        memcpy(o, "http://", 7);
        o += 7;
        memcpy(o, peer.s, (size_t)peer.n);
        o += peer.n;
        *o++ = ':';
        memcpy(o, port, (size_t)k);
        o += k;
        memcpy(o, path.s, (size_t)path.n);
        o += path.n;
    }
    KEY(A_THREAD);
    o = mp_int(o, tid);
    if (cut) {
        KEY(A_HEADERS_CUT);
        *o++ = 1;
    }
    if (weight > 1) {
        KEY(A_WEIGHT);
        o = mp_int(o, weight);
    }
#undef ENDPOINT
#undef KEY
    o = mp_bytes(o, resource);
    o = mp_str(o, tracestate.s, (size_t)tracestate.n);
    o = mp_str(o, how.s, (size_t)how.n);
    assert((size_t)(o - PyBytes_AS_STRING(out)) <= bound);
    if (_PyBytes_Resize(&out, o - PyBytes_AS_STRING(out)) < 0)
        return NULL;
    return out;
}

static PyObject *
pack_span(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (wrong_nargs("pack_span", nargs, 11))
        return NULL;
    return pack_span_of(args);
}

/* observe_spans(builder, events, now, out, kit) -> None
 *
 * pipeline/spans.py's SpanBuilder.observe, the loop over a message's events in the builder's
 * packed mode: a ConnEvent goes to builder._conn, an HttpEvent to builder._exchange, but for
 * the common case, which is done here with the same effects on the builder's tables: an
 * exchange with no traceparent whose span needs no wait (a root: no local parent to look for;
 * or its parent found among the recent spans with its trace id known) and that no waiting span
 * would take as its parent (none_adopted: spans may wait on its thread or connection, for a
 * parent whose interval this one does not hold). Its span goes to out as msgspec.Raw(pack_span(...)) (or, when a value is
 * not of the type pack_span expects, builder._event's SpanEvent). Everything else (a
 * traceparent to parse, a span that waits, a parent that waits, waiters to adopt) is left to
 * builder._exchange, before anything was changed. kit: see K_*; the same ids
 * (new_span_id then, for a root, new_trace_id) are drawn in the same order as in Python, so
 * that with the same ids both give the same spans (tests/pipeline/test_spans.py).
 * kit[K_KEPT]: spans kept in builder.exchanges at most (EXCHANGES_KEPT), or 0 for none (a
 * builder without keep_exchanges). */
enum { K_HTTP, K_CONN, K_SPAN, K_RELAX, K_SPAN_ID, K_TRACE_ID, K_SPAN_IDS, K_TRACE_IDS,
       K_ASTUPLE, K_RAW, K_PLACES, K_HEAD, K_KEYS, K_MORE, K_KEPT, K_COUNT };
/* The other HttpEvent fields it reads, in the order of their places in kit[K_MORE]. */
enum { M_PID, M_FD, M_COMM, M_PROCESS, M_BOOT, M_COUNT };
/* What it counts, added to builder.stats at the end. */
enum { C_SPANS, C_ROOTS, C_CONNECTION, C_THREAD, C_COUNT };
static const char *const COUNTED[C_COUNT] = {"spans", "roots", "connection", "thread"};

static PyObject *S_start, *S_end, *S_trace_id, *S_span_id, *S_start_ns, *S_exchange, *S_conn,
    *S_new_queue, *S_resource, *S_event, *S_trim, *S_append, *S_ready, *S_popitem,
    *S_connection, *S_thread, *S_conn_tag, *S_empty, *S_zero, *S_want;
static const char *const TABLES[] = {"conns", "connectors", "servers", "by_thread", "by_conn",
                                     "exchanges", "waiting", "pending", "resource_cache"};
enum { T_CONNS, T_CONNECTORS, T_SERVERS, T_BY_THREAD, T_BY_CONN, T_EXCHANGES, T_WAITING,
       T_PENDING, T_RESOURCES, T_COUNT };

static int
intern_span_names(void)
{
#define INTERN(var, text) if ((var = PyUnicode_InternFromString(text)) == NULL) return -1
    INTERN(S_start, "start");
    INTERN(S_end, "end");
    INTERN(S_trace_id, "trace_id");
    INTERN(S_span_id, "span_id");
    INTERN(S_start_ns, "start_ns");
    INTERN(S_exchange, "_exchange");
    INTERN(S_conn, "_conn");
    INTERN(S_new_queue, "_new_queue");
    INTERN(S_resource, "_resource");
    INTERN(S_event, "_event");
    INTERN(S_trim, "_trim");
    INTERN(S_append, "append");
    INTERN(S_ready, "_ready");
    INTERN(S_popitem, "popitem");
    INTERN(S_want, "want");
    INTERN(S_connection, "connection");
    INTERN(S_thread, "thread");
    INTERN(S_conn_tag, "conn");
    INTERN(S_empty, "");
#undef INTERN
    return (S_zero = PyLong_FromLong(0)) == NULL ? -1 : 0;
}

/* The last span of recent spans q (a deque) whose interval holds [start, end], as a new
 * reference in *found (NULL: none does). -1: an error; 1: a span whose bounds are not ints
 * (Python's comparison, then). */
static int
holder(PyObject *q, int64_t start, int64_t end, PyObject **found)
{
    *found = NULL;
    Py_ssize_t n = PyObject_Length(q);
    if (n < 0)
        return -1;
    for (Py_ssize_t i = n - 1; i >= 0; i--) {
        PyObject *p = PySequence_GetItem(q, i);
        if (p == NULL)
            return -1;
        PyObject *a = PyObject_GetAttr(p, S_start), *b = a ? PyObject_GetAttr(p, S_end) : NULL;
        int64_t ps, pe;
        int ints = b != NULL && as_int(a, &ps) && as_int(b, &pe);
        Py_XDECREF(a);
        Py_XDECREF(b);
        if (!ints) {
            Py_DECREF(p);
            return PyErr_Occurred() ? -1 : 1;
        }
        if (ps <= start && end <= pe) {
            *found = p;
            return 0;
        }
        Py_DECREF(p);
    }
    return 0;
}

/* A new id: the last of pool (common/tracecontext.py's list of ids drawn ahead, a list), as
 * new_span_id or new_trace_id, draw, pops it, or, when the pool is empty, draw's. */
static PyObject *
new_id(PyObject *pool, PyObject *draw)
{
    Py_ssize_t n = PyList_GET_SIZE(pool);
    if (n == 0)
        return PyObject_CallNoArgs(draw);
    PyObject *id = PyList_GET_ITEM(pool, n - 1);
    Py_INCREF(id);
    if (PyList_SetSlice(pool, n - 1, n, NULL) < 0) {
        Py_DECREF(id);
        return NULL;
    }
    return id;
}

/* Whether key is a tuple of exact strs and ints: comparing it runs no Python. */
static int
plain_key(PyObject *key)
{
    if (!PyTuple_CheckExact(key))
        return 0;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(key); i++) {
        PyObject *k = PyTuple_GET_ITEM(key, i);
        if (!PyUnicode_CheckExact(k) && !PyLong_CheckExact(k))
            return 0;
    }
    return 1;
}

/* Whether _adopt(want, a span of [start, end]) would change nothing but the list's identity:
 * waiters (builder.waiting[want]) is a list of _Spans (span_type) that all still want ``want``
 * (an equal tuple of strs and ints) and either have their trace id or are not held by
 * [start, end]. 1: so (the exchange stays in C); 0: not, or not sure, or an error on the way
 * (cleared: Python's _adopt decides, and meets the same error after the same changes). Nothing
 * here runs Python. A connection whose server span waits for a parent that never comes (its
 * client's exchange was not sampled) has all its later exchanges come here until that span
 * expires. */
static int
none_adopted(PyObject *waiters, PyObject *want, PyObject *span_type, int64_t start, int64_t end)
{
    if (!PyList_CheckExact(waiters) || !plain_key(want))
        return 0;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(waiters); i++) {
        PyObject *c = PyList_GET_ITEM(waiters, i);
        if (Py_TYPE(c) != (PyTypeObject *)span_type)
            return 0;  /* not a _Span: its attributes may run Python, which Python's _adopt runs */
        Py_INCREF(c);
        PyObject *cw = PyObject_GetAttr(c, S_want), *tr = NULL, *a = NULL, *b = NULL;
        int r = 0, same, traced;
        int64_t cs, ce;
        if (cw == NULL || !plain_key(cw))
            goto next;  /* (an error: Python's _adopt meets it, after the same changes; a key
                         * whose comparison could run Python: Python's too) */
        if ((same = PyObject_RichCompareBool(cw, want, Py_EQ)) <= 0)
            goto next;  /* a stale waiter (_adopt drops it from the list), or an error */
        if ((tr = PyObject_GetAttr(c, S_trace_id)) == NULL || (traced = PyObject_IsTrue(tr)) < 0)
            goto next;
        if (traced) {
            r = 1;
            goto next;
        }
        /* held by [start, end] (_Span.holds, which reads end only when start <= cs)? */
        if ((a = PyObject_GetAttr(c, S_start)) == NULL || !as_int(a, &cs))
            goto next;
        if (cs < start) {
            r = 1;
            goto next;
        }
        if ((b = PyObject_GetAttr(c, S_end)) == NULL || !as_int(b, &ce))
            goto next;
        r = ce > end;  /* held: this span is its parent */
    next:
        if (r == 0)
            PyErr_Clear();  /* 0: Python decides, and raises what it raises */
        Py_XDECREF(cw);
        Py_XDECREF(tr);
        Py_XDECREF(a);
        Py_XDECREF(b);
        Py_DECREF(c);
        if (r != 1)
            return r;
    }
    return 1;
}

/* Borrowed from a dict (or OrderedDict): the value, NULL when absent or on an error. */
#define LOOKUP(d, k) PyDict_GetItemWithError((d), (k))

/* holder() of the recent spans index[key] (none when index has no such key). */
static int
parent_in(PyObject *index, PyObject *key, int64_t start, int64_t end, PyObject **found)
{
    *found = NULL;
    PyObject *q = LOOKUP(index, key);
    if (q == NULL)
        return PyErr_Occurred() ? -1 : 0;
    Py_INCREF(q);  /* holder() runs Python (the spans' attributes): q is held meanwhile */
    int h = holder(q, start, end, found);
    Py_DECREF(q);
    return h;
}

/* One HttpEvent: 1 done here, 0 left to builder._exchange (nothing changed), -1 an error. */
static int
fast_exchange(PyObject *builder, PyObject **t, PyObject *ev, PyObject *now, PyObject *out,
              PyObject *const *kit, int64_t kept, int64_t max_pending, long *counts)
{
    PyObject *vals = PyObject_CallOneArg(kit[K_ASTUPLE], ev);
    if (vals == NULL)
        return -1;
    int r = -1;
    PyObject *conn_key = NULL, *local = NULL, *wkey = NULL, *tkey = NULL, *ckey = NULL,
             *client = NULL, *p = NULL, *ptrace = NULL, *pspan = NULL, *span_id = NULL,
             *trace_id = NULL, *endobj = NULL, *s = NULL, *ekey = NULL, *q = NULL,
             *start_ns = NULL, *rkey = NULL, *entry = NULL, *data = NULL, *item = NULL,
             *res = NULL;
    const unsigned char *at = (const unsigned char *)PyBytes_AS_STRING(kit[K_PLACES]);
    const unsigned char *more = (const unsigned char *)PyBytes_AS_STRING(kit[K_MORE]);
    Py_ssize_t nv = PyTuple_GET_SIZE(vals);
    for (int i = 0; i < F_COUNT; i++)
        if (at[i] >= nv)
            goto pass;
    for (int i = 0; i < M_COUNT; i++)
        if (more[i] >= nv)
            goto pass;
#define V(i) PyTuple_GET_ITEM(vals, (i))
    PyObject *pid = V(more[M_PID]), *fd = V(more[M_FD]), *tid = V(at[F_TID]);
    PyObject *direction = V(at[F_DIRECTION]), *tp = V(at[F_TRACEPARENT]);
    PyObject *boot = V(more[M_BOOT]), *timev = V(at[F_TIME]);
    int64_t b, tm, d;
    if (!PyUnicode_CheckExact(tp) || PyUnicode_GET_LENGTH(tp) != 0
            || !PyUnicode_CheckExact(direction) || !as_int(boot, &b) || !as_int(timev, &tm)
            || !as_int(V(at[F_DURATION]), &d))
        goto pass;  /* rule 1 (a traceparent), or values Python handles as they are */
    int server = PyUnicode_CompareWithASCIIString(direction, "server") == 0;
    PyObject *startobj = b ? boot : timev;  /* ev.boot_ns or ev.time_ns */
    int64_t start = b ? b : tm;
    if (d < 0 ? start < INT64_MIN - d : start > INT64_MAX - d)
        goto pass;
    int64_t end = start + d;

    if ((conn_key = PyTuple_Pack(2, pid, fd)) == NULL)
        goto done;
    local = LOOKUP(t[T_CONNS], conn_key);
    if (local == NULL && PyErr_Occurred())
        goto done;
    Py_XINCREF(local);
    if ((tkey = PyTuple_Pack(2, pid, tid)) == NULL)  /* its thread: (pid, tid) */
        goto done;
    /* A waiting span that wants this one as its parent: Python adopts it (_adopt). */
    if (PyDict_GET_SIZE(t[T_WAITING])) {
        wkey = server ? PyTuple_Pack(3, S_thread, pid, tid) : PyTuple_Pack(3, S_conn_tag, pid, fd);
        if (wkey == NULL)
            goto done;
        PyObject *w = LOOKUP(t[T_WAITING], wkey);
        if (w == NULL && PyErr_Occurred())
            goto done;
        if (w != NULL) {
            Py_INCREF(w);  /* borrowed: none_adopted may run Python, which may drop it */
            int quiet = none_adopted(w, wkey, kit[K_SPAN], start, end);
            Py_DECREF(w);
            if (quiet < 0)
                goto done;
            if (!quiet)
                goto pass;
        }
    }
    /* Its parent, by the rules (2: connection, 3: thread); a root when none applies. */
    PyObject *how = S_empty;
    int rule = C_ROOTS;
    if (server) {
        if (local != NULL) {
            if (!PyTuple_CheckExact(local) || PyTuple_GET_SIZE(local) != 4)
                goto pass;
            ckey = PyTuple_Pack(4, PyTuple_GET_ITEM(local, 2), PyTuple_GET_ITEM(local, 3),
                                PyTuple_GET_ITEM(local, 0), PyTuple_GET_ITEM(local, 1));
            if (ckey == NULL)
                goto done;
            client = LOOKUP(t[T_CONNECTORS], ckey);
            if (client == NULL && PyErr_Occurred())
                goto done;
            Py_XINCREF(client);
        }
        if (client != NULL) {
            int h = parent_in(t[T_BY_CONN], client, start, end, &p);
            if (h < 0)
                goto done;
            if (h > 0 || p == NULL)
                goto pass;  /* it waits for its parent */
            how = S_connection;
            rule = C_CONNECTION;
        }
    } else {
        int in = PyDict_Contains(t[T_SERVERS], pid);
        if (in < 0)
            goto done;
        if (in) {
            int h = parent_in(t[T_BY_THREAD], tkey, start, end, &p);
            if (h < 0)
                goto done;
            if (h > 0 || p == NULL)
                goto pass;
            how = S_thread;
            rule = C_THREAD;
        }
    }
    if (p != NULL) {
        if ((ptrace = PyObject_GetAttr(p, S_trace_id)) == NULL
                || (pspan = PyObject_GetAttr(p, S_span_id)) == NULL)
            goto done;
        if (!PyUnicode_CheckExact(ptrace) || PyUnicode_GET_LENGTH(ptrace) == 0)
            goto pass;  /* the parent waits for its own trace id: this one waits with it */
    }

    /* From here on the builder's tables change: the span is made and sent. */
    if ((span_id = new_id(kit[K_SPAN_IDS], kit[K_SPAN_ID])) == NULL)
        goto done;
    if (p == NULL) {
        if ((trace_id = new_id(kit[K_TRACE_IDS], kit[K_TRACE_ID])) == NULL)
            goto done;
    } else {
        trace_id = ptrace;
        Py_INCREF(trace_id);
    }
    PyObject *parent = p != NULL ? pspan : S_empty;
    if ((endobj = PyLong_FromLongLong(end)) == NULL)
        goto done;
    PyObject *sargs[13] = {ev, span_id, startobj, endobj, now, trace_id, parent, how, S_empty,
                           Py_None, Py_None, Py_True, local != NULL ? local : Py_None};
    if ((s = PyObject_Vectorcall(kit[K_SPAN], sargs, 13, NULL)) == NULL)
        goto done;
    counts[C_SPANS]++;  /* where _exchange counts it: before anything else can fail */
    /* exchanges[(pid, fd, start)] = s, the oldest going past ``kept`` (0: none kept) */
    if (kept > 0 && ((ekey = PyTuple_Pack(3, pid, fd, startobj)) == NULL
                     || PyObject_SetItem(t[T_EXCHANGES], ekey, s) < 0))
        goto done;
    if (kept > 0 && PyDict_GET_SIZE(t[T_EXCHANGES]) > kept) {  /* popitem(last=False) */
        if ((res = PyObject_CallMethodOneArg(t[T_EXCHANGES], S_popitem, Py_False)) == NULL)
            goto done;
        Py_CLEAR(res);
    }
    /* its recent spans: its thread's (a server span) or its connection's (a client's) */
    PyObject *index = server ? t[T_BY_THREAD] : t[T_BY_CONN], *qkey = server ? tkey : conn_key;
    q = LOOKUP(index, qkey);
    if (q == NULL || q == Py_None) {  /* index.get(key) is None */
        if (PyErr_Occurred())
            goto done;
        q = PyObject_CallMethodObjArgs(builder, S_new_queue, index, qkey, NULL);
        if (q == NULL)
            goto done;
    } else {
        Py_INCREF(q);
    }
    if ((res = PyObject_CallMethodOneArg(q, S_append, s)) == NULL)
        goto done;
    Py_CLEAR(res);
    counts[rule]++;
    /* its bytes: _packed */
    PyObject *proc = V(more[M_PROCESS]);
    if (proc == Py_None) {
        start_ns = S_zero;
        Py_INCREF(start_ns);
    } else if ((start_ns = PyObject_GetAttr(proc, S_start_ns)) == NULL) {
        goto done;
    }
    if ((rkey = PyTuple_Pack(3, pid, start_ns, V(more[M_COMM]))) == NULL)
        goto done;
    entry = LOOKUP(t[T_RESOURCES], rkey);
    if (entry == NULL) {
        if (PyErr_Occurred()
                || (entry = PyObject_CallMethodOneArg(builder, S_resource, ev)) == NULL)
            goto done;
    } else {
        Py_INCREF(entry);
    }
    if (!PyTuple_CheckExact(entry) || PyTuple_GET_SIZE(entry) != 2) {
        PyErr_SetString(PyExc_TypeError, "observe_spans: a resource entry is (dict, bytes)");
        goto done;
    }
    PyObject *pargs[11] = {vals, kit[K_PLACES], trace_id, span_id, parent, S_empty, how,
                           local != NULL ? local : Py_None, PyTuple_GET_ITEM(entry, 1),
                           kit[K_HEAD], kit[K_KEYS]};
    if ((data = pack_span_of(pargs)) == NULL)
        goto done;
    item = data == Py_None ? PyObject_CallMethodOneArg(builder, S_event, s)
                           : PyObject_CallOneArg(kit[K_RAW], data);
    if (item == NULL || PyList_Append(out, item) < 0)
        goto done;
    /* _trim when spans became ready or too many wait (neither happens here: as in Python) */
    PyObject *ready = PyObject_GetAttr(builder, S_ready);
    if (ready == NULL)
        goto done;
    int truth = PyObject_IsTrue(ready);
    Py_DECREF(ready);
    if (truth < 0)
        goto done;
    Py_ssize_t waiting = PyObject_Length(t[T_PENDING]);
    if (waiting < 0)
        goto done;
    if (truth || waiting > max_pending) {
        if ((res = PyObject_CallMethodOneArg(builder, S_trim, out)) == NULL)
            goto done;
        Py_CLEAR(res);
    }
#undef V
    r = 1;
    goto done;
pass:
    r = PyErr_Occurred() ? -1 : 0;
done:
    Py_XDECREF(conn_key);
    Py_XDECREF(local);
    Py_XDECREF(wkey);
    Py_XDECREF(tkey);
    Py_XDECREF(ckey);
    Py_XDECREF(client);
    Py_XDECREF(p);
    Py_XDECREF(ptrace);
    Py_XDECREF(pspan);
    Py_XDECREF(span_id);
    Py_XDECREF(trace_id);
    Py_XDECREF(endobj);
    Py_XDECREF(s);
    Py_XDECREF(ekey);
    Py_XDECREF(q);
    Py_XDECREF(start_ns);
    Py_XDECREF(rkey);
    Py_XDECREF(entry);
    Py_XDECREF(data);
    Py_XDECREF(item);
    Py_XDECREF(res);
    Py_DECREF(vals);
    return r;
}

static PyObject *
observe_spans(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (wrong_nargs("observe_spans", nargs, 5))
        return NULL;
    PyObject *builder = args[0], *now = args[2], *out = args[3], *kitobj = args[4];
    if (!PyList_CheckExact(out) || !PyTuple_CheckExact(kitobj)
            || PyTuple_GET_SIZE(kitobj) != K_COUNT
            || !PyBytes_CheckExact(PyTuple_GET_ITEM(kitobj, K_PLACES))
            || PyBytes_GET_SIZE(PyTuple_GET_ITEM(kitobj, K_PLACES)) != F_COUNT
            || !PyBytes_CheckExact(PyTuple_GET_ITEM(kitobj, K_MORE))
            || PyBytes_GET_SIZE(PyTuple_GET_ITEM(kitobj, K_MORE)) != M_COUNT
            || !PyList_CheckExact(PyTuple_GET_ITEM(kitobj, K_SPAN_IDS))
            || !PyList_CheckExact(PyTuple_GET_ITEM(kitobj, K_TRACE_IDS))) {
        PyErr_SetString(PyExc_TypeError, "observe_spans: arguments of the wrong types");
        return NULL;
    }
    PyObject *const *kit = &PyTuple_GET_ITEM(kitobj, 0);
    int64_t kept;
    if (!as_int(kit[K_KEPT], &kept)) {
        PyErr_SetString(PyExc_TypeError, "observe_spans: kit[K_KEPT] is an int");
        return NULL;
    }
    PyObject *it = PyObject_GetIter(args[1]), *ev = NULL;  /* as Python's for: lazily, each held */
    if (it == NULL)
        return NULL;
    PyObject *t[T_COUNT] = {NULL};
    PyObject *result = NULL, *stats = NULL;
    long counts[C_COUNT] = {0};
    int64_t max_pending;
    for (int i = 0; i < T_COUNT; i++) {
        if ((t[i] = PyObject_GetAttrString(builder, TABLES[i])) == NULL)
            goto error;
        if (!PyDict_Check(t[i])) {  /* dict or OrderedDict: what LOOKUP reads */
            PyErr_Format(PyExc_TypeError, "observe_spans: builder.%s is not a dict", TABLES[i]);
            goto error;
        }
    }
    PyObject *mp = PyObject_GetAttrString(builder, "max_pending");
    if (mp == NULL)
        goto error;
    int ok = as_int(mp, &max_pending);
    Py_DECREF(mp);
    if (!ok) {
        PyErr_SetString(PyExc_TypeError, "observe_spans: builder.max_pending is an int");
        goto error;
    }
    Py_ssize_t exchanges = 0;
    while ((ev = PyIter_Next(it)) != NULL) {
        PyObject *res;
        if (Py_TYPE(ev) == (PyTypeObject *)kit[K_HTTP]) {
            int r = fast_exchange(builder, t, ev, now, out, kit, kept, max_pending, counts);
            if (r < 0)
                goto error;
            if (r == 0) {
                res = PyObject_CallMethodObjArgs(builder, S_exchange, ev, now, out, NULL);
                if (res == NULL)
                    goto error;
                Py_DECREF(res);
            }
            if (!(++exchanges & 15)) {  /* a hundred microseconds of spans: the CPU to whoever waits */
                if ((res = PyObject_CallNoArgs(kit[K_RELAX])) == NULL)
                    goto error;
                Py_DECREF(res);
            }
        } else if (Py_TYPE(ev) == (PyTypeObject *)kit[K_CONN]) {
            if ((res = PyObject_CallMethodOneArg(builder, S_conn, ev)) == NULL)
                goto error;
            Py_DECREF(res);
        }
        Py_CLEAR(ev);
    }
    if (PyErr_Occurred())  /* the iterator's */
        goto error;
    result = Py_None;
    Py_INCREF(result);
error:
    /* what was counted goes to builder.stats, even when an error stops the loop */
    if (counts[C_SPANS]) {
        PyObject *type, *value, *tb;
        PyErr_Fetch(&type, &value, &tb);
        stats = PyObject_GetAttrString(builder, "stats");
        for (int i = 0; stats != NULL && i < C_COUNT; i++) {
            if (!counts[i])
                continue;
            PyObject *was = PyMapping_GetItemString(stats, COUNTED[i]);
            PyObject *add = was ? PyLong_FromLong(counts[i]) : NULL;
            PyObject *now_n = add ? PyNumber_Add(was, add) : NULL;
            Py_XDECREF(was);
            Py_XDECREF(add);
            if (now_n == NULL || PyMapping_SetItemString(stats, COUNTED[i], now_n) < 0) {
                Py_XDECREF(now_n);
                break;
            }
            Py_DECREF(now_n);
        }
        Py_XDECREF(stats);
        if (type != NULL) {
            PyErr_Restore(type, value, tb);
        } else if (PyErr_Occurred()) {
            Py_CLEAR(result);
        }
    }
    for (int i = 0; i < T_COUNT; i++)
        Py_XDECREF(t[i]);
    Py_XDECREF(ev);
    Py_DECREF(it);
    return result;
}

/* http_exchange(item, offset, peers, comms, kit) -> HttpEvent | None
 *
 * inputs/ebpf/translate.py's Translator.feed_records, for one kernel-paired exchange: item is
 * the record's bytes (struct ev_header, struct http_exchange_ev and its data: EX_* below), read
 * in place, with no Python object per field that the event does not keep; the HttpEvent the Python loop makes of it, or None when the loop must
 * make it (a request line other than METHOD SP path SP HTTP/1.x, a traceparent or tracestate to
 * find among the headers, a peer to find among closed connections, values of unexpected types).
 * kit: see X_*; comms: the process names' cache (the record's 16 bytes -> str), filled here as
 * there. With kit[X_RAW] (msgspec.Raw, not None) the event comes as its msgpack bytes, those
 * msgspec makes of the HttpEvent (what the input sends on, with no object per event), or None
 * for values of types it does not expect. */
enum { X_EVENT, X_NEED, X_READ_OP, X_SHIFT, X_METHODS, X_VERSIONS, X_SERVER, X_CLIENT, X_RAW,
       X_COUNT };
/* Where the record's fields are: struct ev_header then struct http_exchange_ev, packed, little
 * endian (inputs/ebpf/translate.py EXCHANGE: "<IIIIQ16s" "iIQIIII16s"; tests/inputs/ebpf/
 * test_layouts.py holds those to bpf/events.h). A kit whose X_NEED is not EX_DATA (the layout
 * changed) leaves every record to Python. */
enum { EX_PID = 4, EX_TID = 8, EX_TS = 16, EX_COMM = 24, EX_FD = 40, EX_OP = 44, EX_RESP_TS = 48,
       EX_COPIED = 60, EX_RESP_LEN = 64, EX_FLAGS = 68, EX_STATUS = 72, EX_DATA = 88 };

static const char *
find2(const char *s, Py_ssize_t n, const char *pat, Py_ssize_t m)
{
    for (Py_ssize_t i = 0; i + m <= n; i++)
        if (s[i] == pat[0] && memcmp(s + i, pat, (size_t)m) == 0)
            return s + i;
    return NULL;
}

/* Whether "\ntrace" (any case) is in s: a traceparent or tracestate header may be there. */
static int
names_trace(const char *s, Py_ssize_t n)
{
    static const char lower[] = "\ntrace";
    for (Py_ssize_t i = 0; i + 6 <= n; i++) {
        if (s[i] != '\n')
            continue;
        int k = 1;
        while (k < 6 && (s[i + k] | 0x20) == lower[k])
            k++;
        if (k == 6)
            return 1;
    }
    return 0;
}

/* The str of a pair (bytes, str) in pairs whose bytes are s[:n] (borrowed), or NULL. */
static PyObject *
text_of(PyObject *pairs, const char *s, Py_ssize_t n)
{
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(pairs); i++) {
        PyObject *pair = PyTuple_GET_ITEM(pairs, i), *b = PyTuple_GET_ITEM(pair, 0);
        if (PyBytes_GET_SIZE(b) == n && memcmp(PyBytes_AS_STRING(b), s, (size_t)n) == 0)
            return PyTuple_GET_ITEM(pair, 1);
    }
    return NULL;
}

/* Whether pairs is a tuple of (bytes, str) tuples, what text_of reads unchecked. */
static int
pairs_ok(PyObject *pairs)
{
    if (!PyTuple_CheckExact(pairs))
        return 0;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(pairs); i++) {
        PyObject *pair = PyTuple_GET_ITEM(pairs, i);
        if (!PyTuple_CheckExact(pair) || PyTuple_GET_SIZE(pair) != 2
                || !PyBytes_CheckExact(PyTuple_GET_ITEM(pair, 0))
                || !PyUnicode_CheckExact(PyTuple_GET_ITEM(pair, 1)))
            return 0;
    }
    return 1;
}

/* The record's u64 time at ``at`` into *out; 0 when it does not fit an int64. */
static inline int
time_at(const char *rec, int at, int64_t *out)
{
    uint64_t v;
    memcpy(&v, rec + at, sizeof(v));
    *out = (int64_t)v;
    return v <= (uint64_t)INT64_MAX;
}

static PyObject *
http_exchange(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (wrong_nargs("http_exchange", nargs, 5))
        return NULL;
    PyObject *item = args[0], *peers = args[2], *comms = args[3], *kitobj = args[4];
    int64_t offset, need, read_op, shift;
    if (!PyTuple_CheckExact(kitobj) || PyTuple_GET_SIZE(kitobj) != X_COUNT
            || !PyDict_CheckExact(comms) || !PyDict_Check(peers) || !as_int(args[1], &offset)) {
        PyErr_SetString(PyExc_TypeError, "http_exchange: arguments of the wrong types");
        return NULL;
    }
    PyObject *const *kit = &PyTuple_GET_ITEM(kitobj, 0);  /* translate._FAST_KIT, a constant:
                                                          * its pairs are (bytes, str) */
    if (!as_int(kit[X_NEED], &need) || !as_int(kit[X_READ_OP], &read_op)
            || !as_int(kit[X_SHIFT], &shift) || shift < 0 || shift > 31
            || !pairs_ok(kit[X_METHODS]) || !pairs_ok(kit[X_VERSIONS])) {
        PyErr_SetString(PyExc_TypeError, "http_exchange: a kit of the wrong types");
        return NULL;
    }
    if (!PyBytes_CheckExact(item) || need != EX_DATA || PyBytes_GET_SIZE(item) < EX_DATA)
        Py_RETURN_NONE;  /* not the layout this reads (EXCHANGE's), or too short for it */
    const char *rec = PyBytes_AS_STRING(item);
    uint32_t u32;
    int32_t i32;
#define FIELD(var, at) memcpy(&(var), rec + (at), sizeof(var))
    FIELD(u32, EX_PID); int64_t pid = u32;
    FIELD(u32, EX_TID); int64_t tid = u32;
    int64_t ts, resp_ts;
    if (!time_at(rec, EX_TS, &ts) || !time_at(rec, EX_RESP_TS, &resp_ts))
        Py_RETURN_NONE;  /* past int64: Python's */
    FIELD(i32, EX_FD); int64_t fd = i32;
    FIELD(u32, EX_OP); int64_t op = u32;
    FIELD(u32, EX_COPIED); int64_t copied = u32;
    FIELD(u32, EX_RESP_LEN); int64_t resp_len = u32;
    FIELD(u32, EX_FLAGS); int64_t flags = u32;
#undef FIELD
    if (offset > 0 && ts > INT64_MAX - offset)
        Py_RETURN_NONE;
    PyObject *data = item;
    /* the request: data[need:need + copied] */
    const char *d = PyBytes_AS_STRING(data);
    Py_ssize_t size = PyBytes_GET_SIZE(data);
    Py_ssize_t start = need < size ? (Py_ssize_t)need : size;
    Py_ssize_t stop = copied < size - start ? start + (Py_ssize_t)copied : size;
    const char *req = d + start;
    Py_ssize_t rn = stop - start;
    /* no header named trace...: most requests (else Python's find_headers) */
    const char *blank = find2(req, rn, "\r\n\r\n", 4);
    Py_ssize_t head = blank != NULL ? blank - req + 2 : rn;
    if (names_trace(req, head))
        Py_RETURN_NONE;
    /* the request line: METHOD SP path SP HTTP/1.x */
    const char *eol = find2(req, rn, "\r\n", 2);
    Py_ssize_t ln = eol != NULL ? eol - req : rn;
    const char *sp1 = memchr(req, ' ', (size_t)ln);
    if (sp1 == NULL)
        Py_RETURN_NONE;
    const char *sp2 = memchr(sp1 + 1, ' ', (size_t)(req + ln - sp1 - 1));
    if (sp2 == NULL)
        Py_RETURN_NONE;
    PyObject *method = text_of(kit[X_METHODS], req, sp1 - req);
    PyObject *version = text_of(kit[X_VERSIONS], sp2 + 1, req + ln - sp2 - 1);
    if (method == NULL || version == NULL)
        Py_RETURN_NONE;
    /* the peer, of the connection open on (pid, fd) since before the request */
    PyObject *pid_o = PyLong_FromLongLong(pid), *fd_o = PyLong_FromLongLong(fd);
    PyObject *key = pid_o != NULL && fd_o != NULL ? PyTuple_Pack(2, pid_o, fd_o) : NULL;
    PyObject *peer = key != NULL ? PyDict_GetItemWithError(peers, key) : NULL;
    Py_XINCREF(peer);
    Py_XDECREF(key);
    int64_t opened;
    if (peer == NULL || !PyTuple_CheckExact(peer) || PyTuple_GET_SIZE(peer) != 4
            || !as_int(PyTuple_GET_ITEM(peer, 3), &opened) || ts < opened) {
        /* none: maybe a closed one's (Python's closed_peer); or an error */
        Py_XDECREF(peer);
        Py_XDECREF(pid_o);
        Py_XDECREF(fd_o);
        if (PyErr_Occurred())
            return NULL;
        Py_RETURN_NONE;
    }
    /* the status code of the first 12 bytes, "HTTP/1.x NNN" */
    long code = 0;
    const char *st = rec + EX_STATUS;  /* its 16 bytes: a status line's first 12 are there */
    if (resp_len >= 12 && memcmp(st, "HTTP/1.", 7) == 0
            && st[8] == ' ' && st[9] >= '0' && st[9] <= '9' && st[10] >= '0' && st[10] <= '9'
            && st[11] >= '0' && st[11] <= '9')
        code = (st[9] - '0') * 100 + (st[10] - '0') * 10 + (st[11] - '0');
    /* the process name, cached by its 16 bytes (a new reference here) */
    PyObject *out = NULL, *name = NULL, *path = NULL, *time = NULL, *codeobj = NULL,
             *dur = NULL, *w = NULL, *tid_o = NULL, *ts_o = NULL, *packed = NULL;
    PyObject *comm = PyBytes_FromStringAndSize(rec + EX_COMM, 16);
    if (comm == NULL)
        goto done;
    name = PyDict_GetItemWithError(comms, comm);
    if (name != NULL) {
        Py_INCREF(name);
    } else {
        if (PyErr_Occurred())
            goto done;
        const char *c = rec + EX_COMM, *nul = memchr(c, 0, 16);
        name = PyUnicode_DecodeUTF8(c, nul != NULL ? nul - c : 16, "replace");
        if (name == NULL)
            goto done;
        if (PyDict_SetItem(comms, comm, name) < 0)
            goto done;
        if (PyDict_GET_SIZE(comms) > 4096)
            PyDict_Clear(comms);
    }
    if ((path = PyUnicode_DecodeUTF8(sp1 + 1, sp2 - sp1 - 1, "replace")) == NULL)
        goto done;
    int64_t weight = flags >> shift;
    if (kit[X_RAW] != Py_None) {  /* the event's msgpack bytes, as msgspec encodes it */
        Str sn, sp, sm, sv, sd, sa;
        int64_t port;
        PyObject *dir = op == read_op ? kit[X_SERVER] : kit[X_CLIENT];
        if (!as_str(name, &sn) || !as_str(path, &sp) || !as_str(method, &sm)
                || !as_str(version, &sv) || !as_str(dir, &sd)
                || !as_str(PyTuple_GET_ITEM(peer, 0), &sa)
                || !as_int(PyTuple_GET_ITEM(peer, 1), &port)) {
            if (!PyErr_Occurred()) {  /* values of other types: the object, as Python's */
                Py_INCREF(Py_None);
                out = Py_None;
            }
            goto done;
        }
        /* the array's header and tag, nine ints, six strs and their heads, five constants */
        size_t room = 3 + 5 + 9 * 9 + 6 * 5 + (size_t)(sn.n + sp.n + sm.n + sv.n + sd.n + sa.n)
                      + 5;
        if ((packed = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)room)) == NULL)
            goto done;
        char *o = PyBytes_AS_STRING(packed);
        static const char head[] = "\xdc\x00\x15\xa4http";  /* 21 items: the tag, 20 fields */
        memcpy(o, head, 8);
        o += 8;
        o = mp_int(o, ts + offset);
        o = mp_int(o, pid);
        o = mp_int(o, tid);
        o = mp_str(o, sn.s, (size_t)sn.n);
        o = mp_int(o, fd);
        o = mp_str(o, sd.s, (size_t)sd.n);
        o = mp_str(o, sm.s, (size_t)sm.n);
        o = mp_str(o, sp.s, (size_t)sp.n);
        o = mp_int(o, code);
        o = mp_int(o, resp_ts > ts ? resp_ts - ts : 0);
        o = mp_str(o, sa.s, (size_t)sa.n);
        o = mp_int(o, port);
        o = mp_str(o, sv.s, (size_t)sv.n);
        *o++ = (char)0xC0;  /* process: None (the pipeline's to fill) */
        o = mp_int(o, ts);  /* boot_ns */
        *o++ = (char)0xA0;  /* traceparent: "" */
        *o++ = (char)0xA0;  /* tracestate: "" */
        *o++ = (char)(blank == NULL ? 0xC3 : 0xC2);  /* headers_cut */
        *o++ = 0;  /* seq */
        o = mp_int(o, weight ? weight : 1);
        if (_PyBytes_Resize(&packed, o - PyBytes_AS_STRING(packed)) < 0)
            goto done;  /* packed is NULL then */
        out = PyObject_CallOneArg(kit[X_RAW], packed);
        goto done;
    }
    time = PyLong_FromLongLong(ts + offset);
    codeobj = PyLong_FromLong(code);
    dur = PyLong_FromLongLong(resp_ts > ts ? resp_ts - ts : 0);
    w = weight ? PyLong_FromLongLong(weight) : PyLong_FromLong(1);
    tid_o = PyLong_FromLongLong(tid);
    ts_o = PyLong_FromLongLong(ts);
    if (time == NULL || codeobj == NULL || dur == NULL || w == NULL || tid_o == NULL
            || ts_o == NULL)
        goto done;
    PyObject *fields[20] = {
        time, pid_o, tid_o, name, fd_o,
        op == read_op ? kit[X_SERVER] : kit[X_CLIENT], method, path, codeobj, dur,
        PyTuple_GET_ITEM(peer, 0), PyTuple_GET_ITEM(peer, 1), version, Py_None, ts_o,
        S_empty, S_empty, blank == NULL ? Py_True : Py_False, S_zero, w};
    out = PyObject_Vectorcall(kit[X_EVENT], fields, 20, NULL);
done:
    Py_XDECREF(packed);
    Py_DECREF(peer);
    Py_XDECREF(comm);
    Py_XDECREF(name);
    Py_XDECREF(path);
    Py_XDECREF(time);
    Py_XDECREF(codeobj);
    Py_XDECREF(dur);
    Py_XDECREF(w);
    Py_XDECREF(tid_o);
    Py_XDECREF(ts_o);
    Py_DECREF(pid_o);
    Py_DECREF(fd_o);
    return out;
}

/* hex_ids(raw, size) -> list[str]
 *
 * common/tracecontext.py's ids: raw cut in pieces of size bytes, each as lower-case hex, in
 * order, but for pieces all zero (not a valid W3C id). (A last piece shorter than size, which
 * _draw never makes, is kept as its Python cut keeps it.) */
static PyObject *
hex_ids(PyObject *self, PyObject *args)
{
    Py_buffer raw;
    Py_ssize_t size;
    if (!PyArg_ParseTuple(args, "y*n", &raw, &size))
        return NULL;
    PyObject *out = NULL;
    if (size <= 0 || size > 64) {
        PyErr_SetString(PyExc_ValueError, "hex_ids: size is 1 to 64 bytes");
        goto done;
    }
    if ((out = PyList_New(0)) == NULL)
        goto done;
    const unsigned char *b = raw.buf;
    for (Py_ssize_t at = 0; at < raw.len; at += size) {
        Py_ssize_t n = raw.len - at < size ? raw.len - at : size;
        unsigned char any = 0;
        for (Py_ssize_t i = 0; i < n; i++)
            any |= b[at + i];
        if (!any && n == size)
            continue;  /* a short last piece is kept, whatever it holds, as Python keeps it */
        PyObject *id = PyUnicode_New(2 * n, 127);
        if (id == NULL) {
            Py_CLEAR(out);
            goto done;
        }
        Py_UCS1 *o = PyUnicode_1BYTE_DATA(id);
        for (Py_ssize_t i = 0; i < n; i++) {
            o[2 * i] = (Py_UCS1)HEX[b[at + i] >> 4];
            o[2 * i + 1] = (Py_UCS1)HEX[b[at + i] & 15];
        }
        int failed = PyList_Append(out, id) < 0;
        Py_DECREF(id);
        if (failed) {
            Py_CLEAR(out);
            goto done;
        }
    }
done:
    PyBuffer_Release(&raw);
    return out;
}

/* ring_read(consumer, producer, base, mask, out) -> int
 *
 * One pass over a BPF ring buffer (inputs/ebpf/loader.py RingReader, libbpf's layout):
 * consumer is the mapping of its consumer page (writable), producer that of its producer page
 * and its data pages, mapped twice in a row from ``base`` (a record that wraps around is
 * contiguous there), mask the data's size less one. Each record: a u32 length (bit 31: still
 * being written; bit 30: discarded), a u32 for the kernel, the data, padded to 8 bytes. Every
 * complete record not discarded is appended to out as bytes, in order, up to the first one
 * still being written; the consumer position then moves past them all, which hands their space
 * back to the kernel. The positions and lengths are read with acquire and the consumer
 * position written with release ordering, as libbpf's consumer does: correct on any CPU, where
 * the Python loop beside it relies on x86's ordering. ValueError for a length that does not
 * fit the ring (not libbpf's layout). */
#define RB_BUSY (1U << 31)
#define RB_DISCARD (1U << 30)
#define RB_HDR 8

static PyObject *
ring_read(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (wrong_nargs("ring_read", nargs, 5))
        return NULL;
    int64_t base, mask;
    PyObject *out = args[4];
    if (!as_int(args[2], &base) || !as_int(args[3], &mask) || base < 8 || base % 8 != 0
            || mask < 7
            || mask >= (INT64_MAX - base) / 2  /* base + 2 * (mask + 1) must not overflow */
            || (mask & (mask + 1)) != 0 || !PyList_Check(out)) {
        PyErr_SetString(PyExc_TypeError, "ring_read: arguments of the wrong types");
        return NULL;
    }
    Py_buffer cb, pb;
    if (PyObject_GetBuffer(args[0], &cb, PyBUF_WRITABLE) < 0)
        return NULL;
    if (PyObject_GetBuffer(args[1], &pb, PyBUF_SIMPLE) < 0) {
        PyBuffer_Release(&cb);
        return NULL;
    }
    Py_ssize_t n = 0;
    int failed = 0;
    if (cb.len < 8 || pb.len < base + 2 * (mask + 1)) {
        PyErr_SetString(PyExc_ValueError, "ring_read: mappings smaller than the ring");
        failed = 1;
        goto done;
    }
    uint64_t *consp = (uint64_t *)cb.buf;
    const char *data = (const char *)pb.buf;
    uint64_t cons = __atomic_load_n(consp, __ATOMIC_RELAXED);  /* ours alone to write */
    uint64_t prod = __atomic_load_n((const uint64_t *)data, __ATOMIC_ACQUIRE);
    uint64_t start = cons;
    if (cons % 8 != 0) {  /* the kernel keeps it 8-aligned: the loads below need it */
        PyErr_Format(PyExc_ValueError, "ring_read: a consumer position of %llu",
                     (unsigned long long)cons);
        failed = 1;
        goto done;
    }
    if (cons < prod && prod - cons > (uint64_t)mask + 1) {
        PyErr_Format(PyExc_ValueError, "ring_read: %llu bytes written, in a ring of %lld",
                     (unsigned long long)(prod - cons), (long long)(mask + 1));
        failed = 1;
        goto done;
    }
    /* cons < prod, without wrapping past 2**64 (what is taken against what was there) */
    while (cons - start < prod - start && cons < prod) {
        const char *rec = data + base + (cons & (uint64_t)mask);
        uint32_t length = __atomic_load_n((const uint32_t *)rec, __ATOMIC_ACQUIRE);
        if (length & RB_BUSY)
            break;  /* being written: the next pass takes it */
        uint64_t size = length & ~(RB_BUSY | RB_DISCARD);
        if (size + RB_HDR > (uint64_t)mask + 1) {
            PyErr_Format(PyExc_ValueError, "ring_read: a record of %llu bytes in a ring of %lld",
                         (unsigned long long)size, (long long)(mask + 1));
            failed = 1;
            break;
        }
        if (!(length & RB_DISCARD)) {
            PyObject *b = PyBytes_FromStringAndSize(rec + RB_HDR, (Py_ssize_t)size);
            if (b == NULL || PyList_Append(out, b) < 0) {
                Py_XDECREF(b);
                failed = 1;
                break;
            }
            Py_DECREF(b);
            n++;
        }
        cons += (size + RB_HDR + 7) & ~(uint64_t)7;
    }
    if (cons != start)  /* what was taken (even before an error) is given back */
        __atomic_store_n(consp, cons, __ATOMIC_RELEASE);
done:
    PyBuffer_Release(&pb);
    PyBuffer_Release(&cb);
    return failed ? NULL : PyLong_FromSsize_t(n);
}

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
