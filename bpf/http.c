/* HTTP probe: the first bytes of reads and writes that start like HTTP/1.x, on both sides of a
 * connection (a server reads a request and writes a response; a client writes a request and
 * reads the response). Tracepoints: syscalls:sys_enter/exit_ read, recvfrom, readv, recvmsg
 * (the bytes are there at exit: the buffer is noted at entry) and syscalls:sys_enter_ write,
 * sendto, writev, sendmsg (the bytes are there at entry), plus syscalls:sys_enter_close for
 * the descriptors that carried HTTP.
 *
 * Only the first 16 bytes (8 when shorter) are read of every read and write; at most
 * HTTP_PAYLOAD bytes are copied, and only when they look like a request line ("GET ",
 * "POST ", ...). The probe pairs a request with its final response per (pid, fd) and sends ONE
 * event per exchange (EV_HTTP_EXCHANGE: the request's first bytes, the status line's first 16,
 * both times). A connection that pipelines (a second request before the first's response) is
 * handed to user space from then on: its reads and writes go out as EV_HTTP and
 * inputs/ebpf/http.py pairs them, in order, any number at once. */
#include "events.h"
#include "serving.h"

/* One more event the ring buffer had no room for (read by user space: LossEvents). */
static __always_inline void count_lost(void)
{
    int zero = 0;
    u64 *n = lost.lookup(&zero);
    if (n)
        *n += 1;
}

struct io_args {
    u64 buf;               /* the buffer, or the first struct iovec when vec */
    s32 fd;
    u32 vec;
};

struct iovec_user {
    u64 base;
    u64 len;
};

/* A plain hash (cheaper than an LRU one on this hot path): every entry is deleted at the exit. */
BPF_HASH(reading, u64, struct io_args, 16384);                /* pid_tgid -> read in progress */

/* What the probe knows of a connection that carried HTTP: the request waiting for its response
 * (at most one: a second one before the first's response is pipelining, and the connection then
 * goes to user space raw, which pairs any number in order). */
struct conn_state {
    u64 ts_ns;             /* the waiting request's first bytes; 0 when none waits */
    u32 tid;
    u32 uid;
    u32 op;                /* the waiting request's: HTTP_OP_READ (server) or HTTP_OP_WRITE */
    u32 len;
    u32 copied;
    u32 raw;               /* 1: every HTTP read and write of it is sent as is (EV_HTTP) */
    char comm[COMM_LEN];
    char data[HTTP_PAYLOAD];
};

BPF_TABLE("lru_hash", u64, struct conn_state, conns, HTTP_CONNS); /* pid << 32 | fd */
BPF_PERCPU_ARRAY(conn_zero, struct conn_state, 1);  /* a zeroed entry (too big for the stack) */

/* What each thread serves (bpf/serving.h), public: the logwrite probe reads it. */
BPF_TABLE_PUBLIC("lru_hash", u64, struct serving, serving, SERVING_THREADS);

/* A server thread read a request (ts: its key with pid and fd; 0: one user space pairs). */
static __always_inline void serving_request(u64 id, s32 fd, u64 ts)
{
    struct serving *s = serving.lookup(&id);
    if (!s) {
        struct serving n = {.req_ts = ts, .fd = fd};
        serving.update(&id, &n);
        return;
    }
    if (s->req_ts && !s->resp_ts && s->fd != fd)
        s->multi_ts = ts ? ts : bpf_ktime_get_boot_ns();  /* another one is still in flight */
    s->req_ts = ts;
    s->resp_ts = 0;
    s->fd = fd;
}

/* A server thread wrote the response to the request of (fd, req_ts). */
static __always_inline void serving_response(u64 id, s32 fd, u64 req_ts, u64 ts)
{
    struct serving *s = serving.lookup(&id);
    if (!s)
        return;
    if (s->fd == fd && s->req_ts == req_ts)
        s->resp_ts = ts;
    else
        s->multi_ts = ts;  /* it answers a request it did not read last */
}

static __always_inline int looks_http(const char *p)
{
    switch (p[0]) {
    case 'G':
        return p[1] == 'E' && p[2] == 'T' && p[3] == ' ';
    case 'P':
        return (p[1] == 'O' && p[2] == 'S' && p[3] == 'T' && p[4] == ' ') ||
               (p[1] == 'U' && p[2] == 'T' && p[3] == ' ') ||
               (p[1] == 'A' && p[2] == 'T' && p[3] == 'C' && p[4] == 'H' && p[5] == ' ');
    case 'H':
        return (p[1] == 'E' && p[2] == 'A' && p[3] == 'D' && p[4] == ' ') ||
               (p[1] == 'T' && p[2] == 'T' && p[3] == 'P' && p[4] == '/' && p[5] == '1' &&
                p[6] == '.');
    case 'D':
        return p[1] == 'E' && p[2] == 'L' && p[3] == 'E' && p[4] == 'T' && p[5] == 'E' &&
               p[6] == ' ';
    case 'O':
        return p[1] == 'P' && p[2] == 'T' && p[3] == 'I' && p[4] == 'O' && p[5] == 'N' &&
               p[6] == 'S';
    }
    return 0;
}

/* A read or write as is (a connection in raw mode): user space pairs it. */
static __always_inline void emit_raw(s32 fd, u32 op, u64 buf, u64 len)
{
    struct http_ev *e = events.ringbuf_reserve(sizeof(*e));
    if (!e) {
        count_lost();
        return;
    }
    fill_header(&e->h, EV_HTTP);
    e->fd = fd;
    e->op = op;
    e->len = len > 0xffffffff ? 0xffffffff : (u32)len;
    u32 n = len > HTTP_PAYLOAD ? HTTP_PAYLOAD : (u32)len;
    if (bpf_probe_read_user(e->data, n, (void *)buf))
        n = 0;
    e->copied = n;
    events.ringbuf_submit(e, 0);
}

/* The waiting request of a connection, as the EV_HTTP it would have been. */
static __always_inline void emit_raw_waiting(u64 key, s32 fd, struct conn_state *c)
{
    struct http_ev *e = events.ringbuf_reserve(sizeof(*e));
    if (!e) {
        count_lost();
        return;
    }
    e->h.type = EV_HTTP;
    e->h.pid = key >> 32;
    e->h.tid = c->tid;
    e->h.uid = c->uid;
    e->h.ts_ns = c->ts_ns;
    __builtin_memcpy(e->h.comm, c->comm, COMM_LEN);
    e->fd = fd;
    e->op = c->op;
    e->len = c->len;
    u32 n = c->copied > HTTP_PAYLOAD ? HTTP_PAYLOAD : c->copied;
    if (bpf_probe_read_kernel(e->data, n, c->data))
        n = 0;
    e->copied = n;
    events.ringbuf_submit(e, 0);
}

/* A read (at its exit) or a write (at its entry) of a process: when its first bytes look like a
 * request, it waits in the connection's state; when they look like a final response and a
 * request of the other side waits, the pair goes out as one EV_HTTP_EXCHANGE. */
static __always_inline int on_data(u64 id, s32 fd, u32 op, u64 buf, u64 len)
{
    char head[HTTP_STATUS_LEN] = {};
    if (len < 8 || !buf)
        return 0;
    if (len >= HTTP_STATUS_LEN) {
        if (bpf_probe_read_user(head, HTTP_STATUS_LEN, (void *)buf))
            return 0;
    } else if (bpf_probe_read_user(head, 8, (void *)buf)) {
        return 0;
    }
    if (!looks_http(head))
        return 0;
    int response = head[1] == 'T';   /* "HTTP/1." (HEAD has 'E') */
    u64 key = (id & 0xffffffff00000000ULL) | (u32)fd;
    struct conn_state *c = conns.lookup(&key);
    if (response) {
        if (!c)
            return 0;                /* no request seen on it: nothing to answer */
        if (c->raw) {
            emit_raw(fd, op, buf, len);
            return 0;
        }
        if (!c->ts_ns || c->op == op)
            return 0;                /* nothing waits on this side: an orphan */
        if (len >= 12 && head[9] == '1')
            return 0;                /* 1xx (100 Continue): the final response is to come */
        u64 now = bpf_ktime_get_boot_ns();
        if (op == HTTP_OP_WRITE)
            serving_response(id, fd, c->ts_ns, now);
        struct http_exchange_ev *e = events.ringbuf_reserve(sizeof(*e));
        if (!e) {
            c->ts_ns = 0;
            count_lost();
            return 0;
        }
        e->h.type = EV_HTTP_EXCHANGE;
        e->h.pid = id >> 32;
        e->h.tid = c->tid;
        e->h.uid = c->uid;
        e->h.ts_ns = c->ts_ns;
        __builtin_memcpy(e->h.comm, c->comm, COMM_LEN);
        e->fd = fd;
        e->op = c->op;
        e->response_ts_ns = now;
        e->len = c->len;
        e->response_len = len > 0xffffffff ? 0xffffffff : (u32)len;
        e->pad = 0;
        __builtin_memcpy(e->status, head, HTTP_STATUS_LEN);
        u32 n = c->copied > HTTP_PAYLOAD ? HTTP_PAYLOAD : c->copied;
        if (bpf_probe_read_kernel(e->data, n, c->data))
            n = 0;
        e->copied = n;
        events.ringbuf_submit(e, 0);
        c->ts_ns = 0;
        return 0;
    }
    /* A request. */
    if (!c) {
        int zero = 0;
        struct conn_state *z = conn_zero.lookup(&zero);
        if (!z)
            return 0;
        conns.update(&key, z);
        c = conns.lookup(&key);
        if (!c)
            return 0;
    }
    if (c->raw) {
        if (op == HTTP_OP_READ)
            serving_request(id, fd, 0);
        emit_raw(fd, op, buf, len);
        return 0;
    }
    if (c->ts_ns && c->op == op) {
        /* Pipelining: a second request before the first's response. From now on user space
         * pairs this connection's requests and responses, in order. */
        c->raw = 1;
        if (op == HTTP_OP_READ)
            serving_request(id, fd, 0);
        emit_raw_waiting(key, fd, c);
        c->ts_ns = 0;
        emit_raw(fd, op, buf, len);
        return 0;
    }
    /* It waits (replacing one of the other side: the descriptor changed hands). */
    c->ts_ns = bpf_ktime_get_boot_ns();
    if (op == HTTP_OP_READ)
        serving_request(id, fd, c->ts_ns);
    c->tid = (u32)id;
    c->uid = (u32)bpf_get_current_uid_gid();
    c->op = op;
    c->len = len > 0xffffffff ? 0xffffffff : (u32)len;
    bpf_get_current_comm(&c->comm, sizeof(c->comm));
    u32 n = len > HTTP_PAYLOAD ? HTTP_PAYLOAD : (u32)len;
    if (bpf_probe_read_user(c->data, n, (void *)buf))
        n = 0;
    c->copied = n;
    return 0;
}

/* The first struct iovec of an array in user memory: its base and length. */
static __always_inline int first_iov(u64 vec, u64 *base, u64 *len)
{
    struct iovec_user iov = {};
    if (!vec || bpf_probe_read_user(&iov, sizeof(iov), (void *)vec))
        return -1;
    *base = iov.base;
    if (*len > iov.len)
        *len = iov.len;
    return 0;
}

/* struct user_msghdr: msg_iov is at offset 16 (a user-space ABI). */
static __always_inline u64 msghdr_iov(u64 msg)
{
    u64 iov = 0;
    if (msg)
        bpf_probe_read_user(&iov, sizeof(iov), (void *)(msg + 16));
    return iov;
}

static __always_inline int read_enter(s32 fd, u64 buf, u32 vec)
{
    u64 id = bpf_get_current_pid_tgid();
    if (is_self(id >> 32))
        return 0;
    struct io_args a = {.buf = buf, .fd = fd, .vec = vec};
    reading.update(&id, &a);
    return 0;
}

static __always_inline int read_exit(long ret)
{
    u64 id = bpf_get_current_pid_tgid();
    struct io_args *a = reading.lookup(&id);
    if (!a)
        return 0;
    struct io_args c = *a;
    reading.delete(&id);
    if (ret <= 0)
        return 0;
    u64 buf = c.buf;
    u64 len = ret;
    if (c.vec && first_iov(c.buf, &buf, &len))
        return 0;
    return on_data(id, c.fd, HTTP_OP_READ, buf, len);
}

static __always_inline int write_enter(s32 fd, u64 buf, u64 len, u32 vec)
{
    u64 id = bpf_get_current_pid_tgid();
    if (is_self(id >> 32))
        return 0;
    if (vec) {
        len = ~0ULL;
        if (first_iov(buf, &buf, &len))
            return 0;
    }
    return on_data(id, fd, HTTP_OP_WRITE, buf, len);
}

TRACEPOINT_PROBE(syscalls, sys_enter_read) { return read_enter(args->fd, (u64)args->buf, 0); }
TRACEPOINT_PROBE(syscalls, sys_exit_read) { return read_exit(args->ret); }
TRACEPOINT_PROBE(syscalls, sys_enter_recvfrom) { return read_enter(args->fd, (u64)args->ubuf, 0); }
TRACEPOINT_PROBE(syscalls, sys_exit_recvfrom) { return read_exit(args->ret); }
TRACEPOINT_PROBE(syscalls, sys_enter_readv) { return read_enter(args->fd, (u64)args->vec, 1); }
TRACEPOINT_PROBE(syscalls, sys_exit_readv) { return read_exit(args->ret); }
TRACEPOINT_PROBE(syscalls, sys_enter_recvmsg)
{
    return read_enter(args->fd, msghdr_iov((u64)args->msg), 1);
}
TRACEPOINT_PROBE(syscalls, sys_exit_recvmsg) { return read_exit(args->ret); }

TRACEPOINT_PROBE(syscalls, sys_enter_write)
{
    return write_enter(args->fd, (u64)args->buf, args->count, 0);
}
TRACEPOINT_PROBE(syscalls, sys_enter_sendto)
{
    return write_enter(args->fd, (u64)args->buff, args->len, 0);
}
TRACEPOINT_PROBE(syscalls, sys_enter_writev)
{
    return write_enter(args->fd, (u64)args->vec, 0, 1);
}
TRACEPOINT_PROBE(syscalls, sys_enter_sendmsg)
{
    return write_enter(args->fd, msghdr_iov((u64)args->msg), 0, 1);
}

TRACEPOINT_PROBE(syscalls, sys_enter_close)
{
    u64 id = bpf_get_current_pid_tgid();
    u64 key = (id & 0xffffffff00000000ULL) | (u32)args->fd;
    if (!conns.lookup(&key))
        return 0;
    conns.delete(&key);
    struct fd_close_ev *e = events.ringbuf_reserve(sizeof(*e));
    if (!e) {
        count_lost();
        return 0;
    }
    fill_header(&e->h, EV_FD_CLOSE);
    e->fd = args->fd;
    e->pad = 0;
    events.ringbuf_submit(e, 0);
    return 0;
}
