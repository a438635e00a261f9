/* HTTP probe: the first bytes of reads and writes that start like HTTP/1.x, on both sides of a
 * connection (a server reads a request and writes a response; a client writes a request and
 * reads the response). Tracepoints: syscalls:sys_enter/exit_ read, recvfrom, readv, recvmsg
 * (the bytes are there at exit: the buffer is noted at entry) and syscalls:sys_enter_ write,
 * sendto, writev, sendmsg (the bytes are there at entry), plus syscalls:sys_enter_close for
 * the descriptors that carried HTTP.
 *
 * At most HTTP_PAYLOAD bytes are copied, and only when the first 8 look like a request line
 * ("GET ", "POST ", ...) or a status line ("HTTP/1."). Parsing and pairing requests with
 * responses per (pid, fd) is user space's (inputs/ebpf/http.py). */
#include "events.h"

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
BPF_TABLE("lru_hash", u64, u8, http_fds, 65536);             /* pid << 32 | fd -> carried HTTP */

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

static __always_inline int emit_http(u64 id, s32 fd, u32 op, u64 buf, u64 len)
{
    char head[8] = {};
    if (len < sizeof(head) || !buf)
        return 0;
    if (bpf_probe_read_user(head, sizeof(head), (void *)buf))
        return 0;
    if (!looks_http(head))
        return 0;
    struct http_ev *e = events.ringbuf_reserve(sizeof(*e));
    if (!e) {
        count_lost();
        return 0;
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
    u64 key = (id & 0xffffffff00000000ULL) | (u32)fd;
    u8 one = 1;
    http_fds.update(&key, &one);
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
    return emit_http(id, c.fd, HTTP_OP_READ, buf, len);
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
    return emit_http(id, fd, HTTP_OP_WRITE, buf, len);
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
    if (!http_fds.lookup(&key))
        return 0;
    http_fds.delete(&key);
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
