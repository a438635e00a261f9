/* The agent's two byte loops that Python does slowly, for common/fastpath.py (which has the
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

static PyMethodDef methods[] = {
    {"count_lines", count_lines, METH_O, "count_lines(data) -> int: the newlines in data."},
    {"render_lines", render_lines, METH_VARARGS,
     "render_lines(head, data, offset, id_prefix) -> bytes: a run of plain lines as NDJSON."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "common._speedups",
    "Compiled byte loops: count_lines and the NDJSON renderer's fast path (common/fastpath.py).",
    -1,
    methods,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    init_escapes();
    return PyModule_Create(&module);
}
