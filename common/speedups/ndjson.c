/* The NDJSON renderer's byte loops, and the line counting and tag finding of the file input
 * and the batch codec: count_lines, render_lines, render_events, tagged (module.c says what
 * each does). */
#include "speedups.h"

/* 0: copy; 'u': \u00XX; else the character after the backslash. */
static char ESC[256];

void
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

PyObject *
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

PyObject *
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
PyObject *
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

PyObject *
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
