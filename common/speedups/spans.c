/* The span builder's loop and its spans' bytes, and the ids it draws: pack_span,
 * observe_spans, hex_ids (module.c says what each does). */
#include "speedups.h"

/* --- pack_span: an HTTP exchange's span, straight to its msgpack bytes ------------------------ */

/* The attributes' keys, in the order pipeline/spans.py passes them (_ATTR_KEYS) and a span's
 * attributes come in. */
enum { A_METHOD, A_PATH, A_QUERY, A_SCHEME, A_STATUS, A_ERROR, A_VERSION, A_PEER_ADDR, A_PEER_PORT,
       A_SERVER_ADDR, A_SERVER_PORT, A_CLIENT_ADDR, A_CLIENT_PORT, A_URL_FULL, A_THREAD,
       A_HEADERS_CUT, A_WEIGHT, A_KEYS };
/* The HttpEvent fields it reads, in the order pipeline/spans.py gives their places in
 * msgspec.structs.astuple(event) (_PACKED_FIELDS). */
enum { F_TIME, F_TID, F_DIRECTION, F_METHOD, F_PATH, F_STATUS, F_DURATION, F_PEER_ADDR,
       F_PEER_PORT, F_VERSION, F_TRACEPARENT, F_HEADERS_CUT, F_WEIGHT, F_TLS, F_COUNT };

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
            || !PyBool_Check(f[F_HEADERS_CUT]) || !PyBool_Check(f[F_TLS])
            || !as_str(args[2], &trace_id)
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

    int tls = f[F_TLS] == Py_True;
    int n = 5 + (q != NULL) + (status != 0) + error + cut + (weight > 1);
    if (server) {
        if (peer.n)
            n += has_local ? 6 : 4;
        else if (has_local)
            n += 2;
    } else if (peer.n) {
        n += 5;
    }
    size_t strings = (size_t)(direction.n + method.n * 2 + path.n * 3 + peer.n * 5 + version.n
                              + trace_id.n + span_id.n + parent.n + tracestate.n + how.n
                              + laddr.n * 2);
    /* ints at most 9 bytes, str headers 5, the error's and url.full's port digits and the
     * rest of url.full under 128 */
    size_t bound = 17 * 9 + 21 * 5 + 128 + strings + key_bytes
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
    /* the attributes, counted before they are written: a fixmap up to 15, else a map 16 (as
     * msgspec writes a dict) */
    if (n <= 15) {
        *o++ = (char)(0x80 | n);
    } else {
        *o++ = (char)0xDE;
        *o++ = 0;
        *o++ = (char)n;
    }
    KEY(A_METHOD);
    o = mp_str(o, method.s, (size_t)method.n);
    KEY(A_PATH);
    o = mp_str(o, upath.s, (size_t)upath.n);
    if (q != NULL) {
        KEY(A_QUERY);
        o = mp_str(o, query.s, (size_t)query.n);
    }
    KEY(A_SCHEME);
    o = tls ? mp_str(o, "https", 5) : mp_str(o, "http", 4);
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
        size_t sch = tls ? 8 : 7;
        o = mp_str_head(o, sch + (size_t)peer.n + 1 + (size_t)k + (size_t)path.n);
        memcpy(o, tls ? "https://" : "http://", sch);
        o += sch;
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

PyObject *
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
 * that with the same ids both give the same spans (tests/pipeline/test_spans.py). */
enum { K_HTTP, K_CONN, K_SPAN, K_RELAX, K_SPAN_ID, K_TRACE_ID, K_SPAN_IDS, K_TRACE_IDS,
       K_ASTUPLE, K_RAW, K_PLACES, K_HEAD, K_KEYS, K_MORE, K_KEPT, K_COUNT };
/* The other HttpEvent fields it reads, in the order of their places in kit[K_MORE]. */
enum { M_PID, M_FD, M_COMM, M_PROCESS, M_BOOT, M_COUNT };
/* What it counts, added to builder.stats at the end. */
enum { C_SPANS, C_ROOTS, C_CONNECTION, C_THREAD, C_COUNT };
static const char *const COUNTED[C_COUNT] = {"spans", "roots", "connection", "thread"};

static PyObject *S_start, *S_end, *S_trace_id, *S_span_id, *S_start_ns, *S_exchange, *S_conn,
    *S_new_queue, *S_resource, *S_event, *S_trim, *S_append, *S_ready, *S_popitem,
    *S_connection, *S_thread, *S_conn_tag, *S_want;
PyObject *S_empty, *S_zero;
static const char *const TABLES[] = {"conns", "connectors", "servers", "by_thread", "by_conn",
                                     "exchanges", "waiting", "pending", "resource_cache"};
enum { T_CONNS, T_CONNECTORS, T_SERVERS, T_BY_THREAD, T_BY_CONN, T_EXCHANGES, T_WAITING,
       T_PENDING, T_RESOURCES, T_COUNT };

int
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
    /* exchanges[(pid, fd, start)] = s, the oldest going past ``kept`` */
    if ((ekey = PyTuple_Pack(3, pid, fd, startobj)) == NULL
            || PyObject_SetItem(t[T_EXCHANGES], ekey, s) < 0)
        goto done;
    if (PyDict_GET_SIZE(t[T_EXCHANGES]) > kept) {  /* popitem(last=False), no kwnames tuple */
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

PyObject *
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

/* hex_ids(raw, size) -> list[str]
 *
 * common/tracecontext.py's ids: raw cut in pieces of size bytes, each as lower-case hex, in
 * order, but for pieces all zero (not a valid W3C id). (A last piece shorter than size, which
 * _draw never makes, is kept as its Python cut keeps it.) */
PyObject *
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
