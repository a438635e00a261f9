/* What the files of the compiled module common._speedups share (setup.py builds them as one
 * extension, every symbol but its init hidden). module.c says what each function does and who
 * calls it; each file holds those of one caller:
 *
 *   ndjson.c  count_lines, render_lines, render_events, tagged: the file input, the batch codec
 *             and the NDJSON renderer (inputs/file/tailer.py, common/events.py,
 *             outputs/ndjson.py);
 *   spans.c   pack_span, observe_spans, hex_ids: the span builder and its ids
 *             (pipeline/spans.py, common/tracecontext.py);
 *   ebpf.c    http_exchange, ring_read: the eBPF input (inputs/ebpf/translate.py, loader.py).
 *
 * Here: the helpers more than one of them uses (all static inline: each file has its own copy,
 * inlined in its loops as when they were one file). */
#ifndef LOG_SHUTTLE_SPEEDUPS_H
#define LOG_SHUTTLE_SPEEDUPS_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

static const char HEX[] = "0123456789abcdef";

/* Whether a METH_FASTCALL function got other than ``want`` arguments (a TypeError set). */
static inline int
wrong_nargs(const char *name, Py_ssize_t nargs, Py_ssize_t want)
{
    if (nargs == want)
        return 0;
    PyErr_Format(PyExc_TypeError, "%s takes %zd arguments", name, want);
    return 1;
}

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

/* ndjson.c */
void init_escapes(void);
PyObject *count_lines(PyObject *self, PyObject *arg);
PyObject *render_lines(PyObject *self, PyObject *args);
PyObject *render_events(PyObject *self, PyObject *args);
PyObject *tagged(PyObject *self, PyObject *args);
/* spans.c */
int intern_span_names(void);
extern PyObject *S_empty, *S_zero;  /* "" and 0, made by intern_span_names (ebpf.c uses them) */
PyObject *pack_span(PyObject *self, PyObject *const *args, Py_ssize_t nargs);
PyObject *observe_spans(PyObject *self, PyObject *const *args, Py_ssize_t nargs);
PyObject *hex_ids(PyObject *self, PyObject *args);
/* ebpf.c */
PyObject *http_exchange(PyObject *self, PyObject *const *args, Py_ssize_t nargs);
PyObject *ring_read(PyObject *self, PyObject *const *args, Py_ssize_t nargs);

#endif
