/* The eBPF input's ring buffer reading and its exchanges' events: ring_read, http_exchange
 * (module.c says what each does). */
#include "speedups.h"

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
enum { X_EVENT, X_NEED, X_READ_OP, X_SHIFT, X_METHODS, X_VERSIONS, X_SERVER, X_CLIENT, X_TLS,
       X_RAW, X_COUNT };
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

PyObject *
http_exchange(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (wrong_nargs("http_exchange", nargs, 5))
        return NULL;
    PyObject *item = args[0], *peers = args[2], *comms = args[3], *kitobj = args[4];
    int64_t offset, need, read_op, shift, tls_flag;
    if (!PyTuple_CheckExact(kitobj) || PyTuple_GET_SIZE(kitobj) != X_COUNT
            || !PyDict_CheckExact(comms) || !PyDict_Check(peers) || !as_int(args[1], &offset)) {
        PyErr_SetString(PyExc_TypeError, "http_exchange: arguments of the wrong types");
        return NULL;
    }
    PyObject *const *kit = &PyTuple_GET_ITEM(kitobj, 0);  /* translate._FAST_KIT, a constant:
                                                          * its pairs are (bytes, str) */
    if (!as_int(kit[X_NEED], &need) || !as_int(kit[X_READ_OP], &read_op)
            || !as_int(kit[X_SHIFT], &shift) || shift < 0 || shift > 31
            || !as_int(kit[X_TLS], &tls_flag)
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
    int tls = (flags & tls_flag) != 0;
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
        /* the array's header and tag, nine ints, six strs and their heads, six constants */
        size_t room = 3 + 5 + 9 * 9 + 6 * 5 + (size_t)(sn.n + sp.n + sm.n + sv.n + sd.n + sa.n)
                      + 6;
        if ((packed = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)room)) == NULL)
            goto done;
        char *o = PyBytes_AS_STRING(packed);
        static const char head[] = "\xdc\x00\x16\xa4http";  /* 22 items: the tag, 21 fields */
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
        *o++ = (char)(tls ? 0xC3 : 0xC2);  /* tls */
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
    PyObject *fields[21] = {
        time, pid_o, tid_o, name, fd_o,
        op == read_op ? kit[X_SERVER] : kit[X_CLIENT], method, path, codeobj, dur,
        PyTuple_GET_ITEM(peer, 0), PyTuple_GET_ITEM(peer, 1), version, Py_None, ts_o,
        S_empty, S_empty, blank == NULL ? Py_True : Py_False, S_zero, w,
        tls ? Py_True : Py_False};
    out = PyObject_Vectorcall(kit[X_EVENT], fields, 21, NULL);
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

PyObject *
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
