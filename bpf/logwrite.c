/* Logwrite probe: writes to the log files the agent tails, with the exchange the writing thread
 * is serving. User space puts each (pid, fd) that is a tailed log file open for writing in
 * `logfds` (inputs/ebpf/logfiles.py, from /proc/PID/fd); every write() to one of them sends an
 * EV_LOG_WRITE: thread, time, length, the first LOG_HEAD bytes, and the thread's entry of the
 * http probe's `serving` map (a public map of http.c, so http must be loaded first). A close()
 * of such a descriptor forgets it. Any other write returns after one hash lookup. */
#include "events.h"
#include "serving.h"
#include "logwrite.h"

#ifndef LOG_FDS
#define LOG_FDS 16384
#endif

static __always_inline void count_lost(void)
{
    int zero = 0;
    u64 *n = lost.lookup(&zero);
    if (n)
        *n += 1;
}

BPF_HASH(logfds, u64, u32, LOG_FDS);                 /* pid << 32 | fd -> 1 (user space) */
BPF_TABLE("extern", u64, struct serving, serving, SERVING_THREADS);
BPF_PERCPU_ARRAY(seq, u64, 1);

static __always_inline int on_write(s32 fd, u64 buf, u64 len)
{
    u64 id = bpf_get_current_pid_tgid();
    u64 key = (id & 0xffffffff00000000ULL) | (u32)fd;
    if (!logfds.lookup(&key))
        return 0;
    int zero = 0;
    u64 s = 0;
    u64 *n = seq.lookup(&zero);
    if (n) {
        s = *n + 1;
        *n = s;
    }
    struct log_write_ev *e = ev_reserve(sizeof(*e));
    if (!e) {
        count_lost();
        return 0;
    }
    fill_header(&e->h, EV_LOG_WRITE);
    e->fd = fd;
    e->len = len > 0xffffffff ? 0xffffffff : (u32)len;
    e->seq = s;
    e->cpu = (u16)bpf_get_smp_processor_id();
    struct serving *sv = serving.lookup(&id);
    if (sv) {
        /* A request the http probe did not sample has no exchange to join: none is named, and
         * the line does not wait for one. */
        e->req_ts = sv->weight ? sv->req_ts : 0;
        e->resp_ts = sv->resp_ts;
        e->multi_ts = sv->multi_ts;
        e->req_fd = sv->fd;
    } else {
        e->req_ts = 0;
        e->resp_ts = 0;
        e->multi_ts = 0;
        e->req_fd = -1;
    }
    u32 c = len > LOG_HEAD ? LOG_HEAD : (u32)len;
    if (bpf_probe_read_user(e->data, c, (void *)buf))
        c = 0;
    e->copied = c;
    ev_submit(e);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_write)
{
    return on_write(args->fd, (u64)args->buf, args->count);
}

TRACEPOINT_PROBE(syscalls, sys_enter_close)
{
    u64 id = bpf_get_current_pid_tgid();
    u64 key = (id & 0xffffffff00000000ULL) | (u32)args->fd;
    if (logfds.lookup(&key))
        logfds.delete(&key);
    return 0;
}
