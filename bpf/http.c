/* HTTP probe: the first bytes of reads and writes that start like HTTP/1.x, on both sides of a
 * connection (a server reads a request and writes a response; a client writes a request and
 * reads the response), in the clear at the syscalls or, for TLS, in OpenSSL's plaintext
 * (uprobes, attached by user space to each libssl it finds).
 *
 * The file is in sections (BCC rewrites map calls in this file only, so they share it):
 *   1. descriptors   which (pid, fd) are followed: sockets seen accepted or connected (and, at
 *                    start, from /proc), forgotten at close(); any other read or write returns
 *                    after one lookup. A new kind of descriptor to follow is a new FD_* bit.
 *   2. pairing       per connection: a request waits, the other side's final response pairs
 *                    with it, ONE event per exchange (EV_HTTP_EXCHANGE); a connection that
 *                    pipelines goes to user space raw (EV_HTTP), which pairs it.
 *   3. syscalls      read, recvfrom, readv, recvmsg (the bytes are there at exit: the buffer is
 *                    noted at entry); write, sendto, writev, sendmsg (at entry); accept,
 *                    connect, close for section 1.
 *   4. TLS           SSL_read(_ex)/SSL_write(_ex) at return (the plaintext and, by then, the
 *                    socket); SSL_set_fd, or the socket the call's own syscalls used, gives the
 *                    fd, so the exchange joins its connection (its peer) like a clear one.
 *
 * Only the first 16 bytes (8 when shorter) are read of a followed read or write, but on a
 * connection that carried HTTP with no request waiting, where the next bytes are most likely
 * the next request: there up to HTTP_PAYLOAD are read at once, into its state, and wiped at
 * once unless they start a request. At most HTTP_PAYLOAD bytes are kept, and only of a
 * request, until its connection's next one. */
#include <uapi/linux/ptrace.h>  /* struct pt_regs: a uprobe's registers (the user ABI) */
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

static __always_inline u64 fd_key(u64 id, s32 fd)
{
    return (id & 0xffffffff00000000ULL) | (u32)fd;
}

/* ===== 1. descriptors ===================================================================== */

#define FD_SOCKET 1        /* a socket accept()ed or connect()ed (or a TCP socket from /proc) */
#define FD_HTTP 2          /* ... that carried a request: the probe keeps a state of it (conns) */

/* LRU: a process that exits closes its descriptors without close(), so entries of dead
 * processes stay until the least recently used go. */
BPF_TABLE("lru_hash", u64, u32, fds, HTTP_FDS);          /* pid << 32 | fd -> FD_* bits */
BPF_TABLE("lru_hash", u64, s32, connecting, 16384);      /* pid_tgid -> fd of its connect() */

/* The descriptor's FD_* bits: 0 when it is not followed. */
static __always_inline u32 followed(u64 id, s32 fd)
{
    u64 key = fd_key(id, fd);
    u32 *bits = fds.lookup(&key);
    return bits ? *bits : 0;
}

static __always_inline void follow(u64 id, s32 fd, u32 kind)
{
    u64 key = fd_key(id, fd);
    fds.update(&key, &kind);
}

/* ===== 2. pairing ========================================================================= */

struct io_args {
    u64 buf;               /* the buffer, or the first struct iovec when vec */
    s32 fd;
    u32 vec;
    u32 bits;              /* the descriptor's FD_* */
    u32 pad;
};

struct iovec_user {
    u64 base;
    u64 len;
};

/* The read in progress of each thread, from its entry to its exit: task-local storage (no hash,
 * no lock, nothing to delete: fd < 0 marks it done). */
BPF_TASK_STORAGE(reading, struct io_args);

/* What the probe knows of a connection that carried HTTP: the request waiting for its response
 * (at most one: a second one before the first's response is pipelining, and the connection then
 * goes to user space raw, which pairs any number in order), kept as the very record its
 * exchange will be: the response fills in the rest and the record goes out with the request's
 * bytes only (bpf_ringbuf_output of the used part: one copy, no reservation of the whole). */
struct conn_state {
    u32 raw;               /* 1: every HTTP read and write of it is sent as is (EV_HTTP) */
    u32 weight;            /* 0: not sampled (its exchange is only counted); else what it
                            * stands for (1, or N when 1 in N is sampled) */
    struct http_exchange_ev ev; /* the waiting request: ev.h.ts_ns its first bytes' time, 0 when
                                 * none waits; ev.op HTTP_OP_READ (server) or HTTP_OP_WRITE;
                                 * ev.flags its HTTP_FLAG_*; ev.copied bytes of it in ev.data */
};

BPF_TABLE("lru_hash", u64, struct conn_state, conns, HTTP_CONNS); /* pid << 32 | fd */
BPF_PERCPU_ARRAY(conn_zero, struct conn_state, 1);  /* a zeroed entry (too big for the stack) */

/* Sampling, set by user space when exchanges come faster than its budget ([inputs.ebpf]
 * max_exchanges_per_second): 0 or 1, every exchange goes out; N, one in N does, carrying the
 * weight N; the others reserve nothing in the ring buffer and are counted (exchange_counts). A
 * connection that pipelines goes to user space raw, unsampled. */
BPF_ARRAY(sampling, u32, 1);
/* [0] exchanges paired here (final responses), sent or not; [1] those not sent (sampling). The
 * first is the input's measure of the host's rate: exact, ring buffer losses included. */
BPF_PERCPU_ARRAY(exchange_counts, u64, 2);

#define SAMPLE_SLOT_NS 16000000ULL     /* requests are chosen by the 16 ms slot they start in */
#define SAMPLE_INHERIT_NS 1000000000ULL /* a call up to 1 s into the request it serves follows it */

static __always_inline void count_exchange(int which)
{
    u64 *n = exchange_counts.lookup(&which);
    if (n)
        *n += 1;
}

/* What each thread serves (bpf/serving.h), public: the logwrite probe reads it. */
BPF_TABLE_PUBLIC("lru_hash", u64, struct serving, serving, SERVING_THREADS);

/* A server thread read a request (ts: its key with pid and fd; 0: one user space pairs). */
static __always_inline void serving_request(u64 id, s32 fd, u64 ts, u32 weight)
{
    struct serving *s = serving.lookup(&id);
    if (!s) {
        struct serving n = {.req_ts = ts, .fd = fd, .weight = weight};
        serving.update(&id, &n);
        return;
    }
    if (s->req_ts && !s->resp_ts && s->fd != fd)
        s->multi_ts = ts ? ts : bpf_ktime_get_boot_ns();  /* another one is still in flight */
    s->req_ts = ts;
    s->resp_ts = 0;
    s->fd = fd;
    s->weight = weight;
}

/* The weight of a request seen at ``ts``: 0 (not sampled) or what it stands for. Requests are
 * chosen 1 in N by the time slot they start in (a hash of its number), not one by one: the
 * client's write and the server's read of one request on this host fall in the same slot but
 * for one that straddles its edge, so both sides of an exchange are chosen together. A request
 * written by a thread while it serves one (a call made for it, up to SAMPLE_INHERIT_NS into it;
 * not by an event loop, which serves several at once) takes that one's choice, so a service's
 * spans and the calls they made are kept or left together. */
static __always_inline u32 sample_weight(u64 id, u32 op, u64 ts)
{
    int zero = 0;
    u32 *one_in = sampling.lookup(&zero);
    if (!one_in || *one_in <= 1)
        return 1;
    if (op == HTTP_OP_WRITE) {
        struct serving *s = serving.lookup(&id);
        if (s && s->req_ts && !s->resp_ts && s->multi_ts < s->req_ts &&
            ts - s->req_ts < SAMPLE_INHERIT_NS)
            return s->weight;
    }
    /* The slot's number through MurmurHash3's 64-bit finalizer: a multiplicative hash alone
     * (Fibonacci's) is nearly an arithmetic progression from one slot to the next, and modulo
     * N it chose slots in long regular runs and droughts (4.7 s without one at N = 21). */
    u64 h = ts / SAMPLE_SLOT_NS;
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ULL;
    h ^= h >> 33;
    u32 n = *one_in;
    return (u32)h % n ? 0 : n;
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
    struct http_ev *e = ev_reserve(sizeof(*e));
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
    ev_submit(e);
}

/* The waiting request of a connection, as the EV_HTTP it would have been. */
static __always_inline void emit_raw_waiting(u64 key, s32 fd, struct conn_state *c)
{
    struct http_ev *e = ev_reserve(sizeof(*e));
    if (!e) {
        count_lost();
        return;
    }
    e->h.type = EV_HTTP;
    e->h.pid = key >> 32;
    e->h.tid = c->ev.h.tid;
    e->h.uid = c->ev.h.uid;
    e->h.ts_ns = c->ev.h.ts_ns;
    __builtin_memcpy(e->h.comm, c->ev.h.comm, COMM_LEN);
    e->fd = fd;
    e->op = c->ev.op;
    e->len = c->ev.len;
    u32 n = c->ev.copied > HTTP_PAYLOAD ? HTTP_PAYLOAD : c->ev.copied;
    if (bpf_probe_read_kernel(e->data, n, c->ev.data))
        n = 0;
    e->copied = n;
    ev_submit(e);
}

static __always_inline void note_tls_fd(u64 id, s32 fd);

/* A request waits in its connection's state (replacing one of the other side: the descriptor
 * changed hands). ``copied``: its first bytes already in c->ev.data (on_data read them there), or
 * -1 to read them from ``buf`` now. */
static __always_inline int wait_request(struct conn_state *c, u64 id, s32 fd, u32 op, u64 buf,
                                        u64 len, u32 flags, u64 ts, int copied)
{
    u64 at = ts ? ts : bpf_ktime_get_boot_ns();
    c->ev.h.ts_ns = at;
    /* Sampled or not, its bytes are kept: should the connection pipeline, user space pairs
     * every request from then on, this one included. */
    c->weight = sample_weight(id, op, at);
    if (op == HTTP_OP_READ)
        serving_request(id, fd, at, c->weight);
    c->ev.h.type = EV_HTTP_EXCHANGE;
    c->ev.h.pid = id >> 32;
    c->ev.h.tid = (u32)id;
    c->ev.h.uid = (u32)bpf_get_current_uid_gid();
    bpf_get_current_comm(&c->ev.h.comm, sizeof(c->ev.h.comm));
    c->ev.fd = fd;
    c->ev.op = op;
    c->ev.flags = flags;
    c->ev.len = len > 0xffffffff ? 0xffffffff : (u32)len;
    if (copied >= 0) {
        c->ev.copied = copied;
        return 0;
    }
    u32 n = len > HTTP_PAYLOAD ? HTTP_PAYLOAD : (u32)len;
    if (bpf_probe_read_user(c->ev.data, n, (void *)buf))
        n = 0;
    c->ev.copied = n;
    return 0;
}

/* A read (at its exit) or a write (at its entry) of a followed descriptor, or TLS plaintext
 * (flags HTTP_FLAG_TLS): when its first bytes look like a request, it waits in the
 * connection's state; when they look like a final response and a request of the other side
 * waits, the pair goes out as one EV_HTTP_EXCHANGE. ``ts``: when the bytes were there (0: now;
 * an SSL_write is handled at its return, but its time is its entry's). */
static __always_inline int on_data(u64 id, s32 fd, u32 op, u64 buf, u64 len, u32 flags, u64 ts,
                                   u32 bits)
{
    char head[HTTP_STATUS_LEN] = {};
    if (len < 8 || !buf)
        return 0;
    u64 key = fd_key(id, fd);
    struct conn_state *c = 0;
    if (bits & FD_HTTP)              /* else only once its bytes look like HTTP, below */
        c = conns.lookup(&key);
    if (c && !c->ev.h.ts_ns && !c->raw) {
        /* A connection that carried HTTP, with no request waiting: its next bytes are most
         * likely the next request. They are read once, straight into the state where a
         * request waits (a read of user memory costs ~100 ns, whatever its size up to this);
         * anything else there (a response with nothing waiting: an orphan; a body) is wiped
         * at once. When the read fails (the bytes run into a page not in memory), the first
         * bytes are read as for any other connection, below. Two threads of one process on
         * one descriptor at once (a tunnel's reader and writer) may mix their bytes here, as
         * they could the waiting request's before. */
        u32 n = len > HTTP_PAYLOAD ? HTTP_PAYLOAD : (u32)len;
        if (!bpf_probe_read_user(c->ev.data, n, (void *)buf)) {
            int http = looks_http(c->ev.data);
            if (http && c->ev.data[1] != 'T')
                return wait_request(c, id, fd, op, buf, len, flags, ts, n);
            __builtin_memset(c->ev.data, 0, HTTP_PAYLOAD);
            if (!http && !(flags & HTTP_FLAG_TLS))
                note_tls_fd(id, fd);  /* maybe a TLS record, under an SSL_read/SSL_write */
            return 0;
        }
    }
    if (len >= HTTP_STATUS_LEN) {
        if (bpf_probe_read_user(head, HTTP_STATUS_LEN, (void *)buf))
            return 0;
    } else if (bpf_probe_read_user(head, 8, (void *)buf)) {
        return 0;
    }
    if (!looks_http(head)) {
        if (!(flags & HTTP_FLAG_TLS))
            note_tls_fd(id, fd);     /* maybe a TLS record, under an SSL_read/SSL_write */
        return 0;
    }
    if (!(bits & FD_HTTP))
        c = conns.lookup(&key);
    int response = head[1] == 'T';   /* "HTTP/1." (HEAD has 'E') */
    if (response) {
        if (!c)
            return 0;                /* no request seen on it: nothing to answer */
        if (c->raw) {
            emit_raw(fd, op, buf, len);
            return 0;
        }
        if (!c->ev.h.ts_ns || c->ev.op == op)
            return 0;                /* nothing waits on this side: an orphan */
        if (len >= 12 && head[9] == '1')
            return 0;                /* 1xx (100 Continue): the final response is to come */
        u64 now = ts ? ts : bpf_ktime_get_boot_ns();
        if (op == HTTP_OP_WRITE)
            serving_response(id, fd, c->ev.h.ts_ns, now);
        count_exchange(0);
        if (!c->weight) {
            c->ev.h.ts_ns = 0;
            count_exchange(1);
            return 0;
        }
        struct http_exchange_ev *e = &c->ev;  /* the request's part set by wait_request() */
        e->response_ts_ns = now;
        e->response_len = len > 0xffffffff ? 0xffffffff : (u32)len;
        e->flags |= flags | (c->weight > 1 ? c->weight << HTTP_WEIGHT_SHIFT : 0);
        __builtin_memcpy(e->status, head, HTTP_STATUS_LEN);
        u32 n = e->copied > HTTP_PAYLOAD ? HTTP_PAYLOAD : e->copied;
        if (ev_output(e, offsetof(struct http_exchange_ev, data) + n))
            count_lost();
        e->h.ts_ns = 0;
        return 0;
    }
    /* A request. */
    if (!(bits & FD_HTTP)) {         /* from now on its state is looked up first */
        u32 *fbits = fds.lookup(&key);
        if (fbits)
            *fbits |= FD_HTTP;
    }
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
            serving_request(id, fd, 0, 1);
        emit_raw(fd, op, buf, len);
        return 0;
    }
    if (c->ev.h.ts_ns && c->ev.op == op) {
        /* Pipelining: a second request before the first's response. From now on user space
         * pairs this connection's requests and responses, in order. */
        c->raw = 1;
        if (op == HTTP_OP_READ)
            serving_request(id, fd, 0, 1);
        emit_raw_waiting(key, fd, c);
        c->ev.h.ts_ns = 0;
        emit_raw(fd, op, buf, len);
        return 0;
    }
    return wait_request(c, id, fd, op, buf, len, flags, ts, -1);
}

/* ===== 3. syscalls ======================================================================== */

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
    u32 bits = followed(id, fd);
    if (!bits || is_self(id >> 32))
        return 0;
    struct task_struct *task = (struct task_struct *)bpf_get_current_task_btf();
    struct io_args *a = reading.task_storage_get(task, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
    if (a) {
        a->buf = buf;
        a->fd = fd;
        a->vec = vec;
        a->bits = bits;
    }
    return 0;
}

static __always_inline int read_exit(long ret)
{
    struct task_struct *task = (struct task_struct *)bpf_get_current_task_btf();
    struct io_args *a = reading.task_storage_get(task, 0, 0);
    if (!a || a->fd < 0)
        return 0;
    struct io_args c = *a;
    a->fd = -1;
    u64 id = bpf_get_current_pid_tgid();
    if (ret <= 0)
        return 0;
    u64 buf = c.buf;
    u64 len = ret;
    if (c.vec && first_iov(c.buf, &buf, &len))
        return 0;
    return on_data(id, c.fd, HTTP_OP_READ, buf, len, 0, 0, c.bits);
}

static __always_inline int write_enter(s32 fd, u64 buf, u64 len, u32 vec)
{
    u64 id = bpf_get_current_pid_tgid();
    u32 bits = followed(id, fd);
    if (!bits || is_self(id >> 32))
        return 0;
    if (vec) {
        len = ~0ULL;
        if (first_iov(buf, &buf, &len))
            return 0;
    }
    return on_data(id, fd, HTTP_OP_WRITE, buf, len, 0, 0, bits);
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

static __always_inline int accepted(long ret)
{
    if (ret >= 0)
        follow(bpf_get_current_pid_tgid(), (s32)ret, FD_SOCKET);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_accept) { return accepted(args->ret); }
TRACEPOINT_PROBE(syscalls, sys_exit_accept4) { return accepted(args->ret); }

TRACEPOINT_PROBE(syscalls, sys_enter_connect)
{
    u64 id = bpf_get_current_pid_tgid();
    s32 fd = args->fd;
    connecting.update(&id, &fd);
    return 0;
}

#define EINPROGRESS 115

TRACEPOINT_PROBE(syscalls, sys_exit_connect)
{
    u64 id = bpf_get_current_pid_tgid();
    s32 *fd = connecting.lookup(&id);
    if (!fd)
        return 0;
    s32 f = *fd;
    connecting.delete(&id);
    if (args->ret == 0 || args->ret == -EINPROGRESS)
        follow(id, f, FD_SOCKET);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_close)
{
    u64 id = bpf_get_current_pid_tgid();
    u64 key = fd_key(id, args->fd);
    if (!fds.lookup(&key))
        return 0;
    fds.delete(&key);
    if (!conns.lookup(&key))
        return 0;
    conns.delete(&key);
    struct fd_close_ev *e = ev_reserve(sizeof(*e));
    if (!e) {
        count_lost();
        return 0;
    }
    fill_header(&e->h, EV_FD_CLOSE);
    e->fd = args->fd;
    e->pad = 0;
    ev_submit(e);
    return 0;
}

/* ===== 4. TLS (OpenSSL uprobes: attached by inputs/ebpf/tls.py, not at load) =============== */

struct tls_call {
    u64 ts_ns;             /* the call's entry */
    u64 ssl;               /* the SSL * */
    u64 buf;
    u64 done_ptr;          /* SSL_read_ex/SSL_write_ex: the size_t * of bytes done; else 0 */
    s32 fd;                /* the socket this call's syscalls used; -1 until one is seen */
    u32 op;
};

struct ssl_key {
    u64 ssl;
    u32 pid;
    u32 pad;
};

BPF_TABLE("lru_hash", u64, struct tls_call, tls_calls, 16384); /* pid_tgid -> call in progress */
BPF_TABLE("lru_hash", struct ssl_key, s32, tls_fds, 65536);    /* (pid, SSL *) -> fd */

/* A followed socket's bytes that are not HTTP, read or written by a thread inside SSL_read or
 * SSL_write: the TLS records of that call, so its SSL * is on this fd. */
static __always_inline void note_tls_fd(u64 id, s32 fd)
{
    struct tls_call *t = tls_calls.lookup(&id);
    if (t)
        t->fd = fd;
}

static __always_inline int tls_enter(struct pt_regs *ctx, u32 op, int ex)
{
    u64 id = bpf_get_current_pid_tgid();
    if (is_self(id >> 32))
        return 0;
    struct tls_call t = {};
    t.ts_ns = bpf_ktime_get_boot_ns();
    t.ssl = PT_REGS_PARM1(ctx);
    t.buf = PT_REGS_PARM2(ctx);
    t.done_ptr = ex ? PT_REGS_PARM4(ctx) : 0;
    t.fd = -1;
    t.op = op;
    tls_calls.update(&id, &t);
    return 0;
}

static __always_inline int tls_exit(struct pt_regs *ctx)
{
    u64 id = bpf_get_current_pid_tgid();
    struct tls_call *tp = tls_calls.lookup(&id);
    if (!tp)
        return 0;
    struct tls_call t = *tp;
    tls_calls.delete(&id);
    long ret = PT_REGS_RC(ctx);
    u64 len = 0;
    if (t.done_ptr) {
        if (ret != 1 || bpf_probe_read_user(&len, sizeof(len), (void *)t.done_ptr))
            return 0;
    } else {
        if (ret <= 0)
            return 0;
        len = ret;
    }
    struct ssl_key k = {.ssl = t.ssl, .pid = id >> 32};
    if (t.fd >= 0) {
        tls_fds.update(&k, &t.fd);
    } else {
        s32 *fd = tls_fds.lookup(&k);
        if (!fd)
            return 0;        /* the socket is not known yet (a custom BIO, no syscall seen) */
        t.fd = *fd;
    }
    /* A write's bytes were there at its entry; a read's at its return. */
    return on_data(id, t.fd, t.op, t.buf, len, HTTP_FLAG_TLS, t.op == HTTP_OP_WRITE ? t.ts_ns : 0,
                   FD_HTTP);         /* its state is looked up first: TLS carries HTTP here */
}

int tls_read_enter(struct pt_regs *ctx) { return tls_enter(ctx, HTTP_OP_READ, 0); }
int tls_read_ex_enter(struct pt_regs *ctx) { return tls_enter(ctx, HTTP_OP_READ, 1); }
int tls_write_enter(struct pt_regs *ctx) { return tls_enter(ctx, HTTP_OP_WRITE, 0); }
int tls_write_ex_enter(struct pt_regs *ctx) { return tls_enter(ctx, HTTP_OP_WRITE, 1); }
int tls_exit_probe(struct pt_regs *ctx) { return tls_exit(ctx); }

/* SSL_set_fd(ssl, fd) (nginx, Python's ssl): the socket of an SSL * before any data. */
int tls_set_fd(struct pt_regs *ctx)
{
    u64 id = bpf_get_current_pid_tgid();
    struct ssl_key k = {.ssl = PT_REGS_PARM1(ctx), .pid = id >> 32};
    s32 fd = (s32)PT_REGS_PARM2(ctx);
    tls_fds.update(&k, &fd);
    return 0;
}
