/* Event layouts shared by every probe of log-shuttle's eBPF input, and the ring buffer they
 * share. User space decodes these bytes in inputs/ebpf/layouts.py: a change here is a change
 * there (tests/inputs/ebpf/test_layouts.py compiles this header and compares the offsets).
 *
 * Every event starts with struct ev_header. Times are bpf_ktime_get_boot_ns() (CLOCK_BOOTTIME).
 * Only tracepoint arguments, BPF helpers and user memory are read: never a kernel struct, so the
 * programs mean the same whatever kernel headers BCC compiles them against.
 *
 * Each probe file is loaded on its own: BPF(src_file="<probe>.c", cflags=[...]). BCC rewrites
 * map calls (map.lookup(), ...) in that file only, not in headers: code that uses a BCC map
 * lives in the probe's own file; this header holds layouts and helpers-only code.
 * Compile-time options (cflags from inputs/ebpf/loader.py):
 *   EVENTS_FD       the probe's ring buffer, a map user space created (so that the programs can
 *                   ask it how much is pending: BCC has no ringbuf_query)
 *   RINGBUF_PAGES   pages of that ring buffer (a power of two)
 *   WAKEUP_BYTES    pending bytes from which a submit wakes the reader (else it polls)
 *   HTTP_PAYLOAD    bytes of an HTTP payload copied (a power of two, 64..4096)
 *   SELF_PID        the agent's own eBPF process, never traced
 *   HTTP_CONNS      connections the http probe keeps a request of (an LRU map)
 *   HTTP_FDS        descriptors the http probe follows (sockets that were accepted/connected)
 */
#ifndef LOG_SHUTTLE_EVENTS_H
#define LOG_SHUTTLE_EVENTS_H

#ifndef RINGBUF_PAGES
#define RINGBUF_PAGES 1024
#endif
#ifndef HTTP_PAYLOAD
#define HTTP_PAYLOAD 256
#endif
#ifndef SELF_PID
#define SELF_PID 0
#endif
#ifndef HTTP_CONNS
#define HTTP_CONNS 16384  /* connections whose HTTP state the http probe keeps (LRU) */
#endif
#ifndef HTTP_FDS
#define HTTP_FDS 65536    /* sockets the http probe follows */
#endif
#ifndef WAKEUP_BYTES
#define WAKEUP_BYTES (RINGBUF_PAGES * 4096 / 4)
#endif

#define COMM_LEN 16
#define ARGV_MAX 8        /* exec: at most this many arguments... */
#define ARG_LEN 64        /* ...each cut to this many bytes (with its NUL) */
#define FILENAME_LEN 128

enum ev_type {
    EV_EXEC_ARGS = 1,     /* execve/execveat entered: its argv (paired with EV_EXEC by tid) */
    EV_EXEC = 2,          /* sched_process_exec: the exec succeeded */
    EV_FORK = 3,          /* sched_process_fork of a process (not a thread) */
    EV_EXIT = 4,          /* sched_process_exit of a thread group leader */
    EV_CONNECT = 5,       /* a connect() reached ESTABLISHED */
    EV_ACCEPT = 6,        /* accept()/accept4() returned a connection */
    EV_CLOSE = 7,         /* a connection seen opening reached TCP_CLOSE */
    EV_HTTP = 8,          /* a read or write whose bytes start like HTTP/1.x (pipelining) */
    EV_FD_CLOSE = 9,      /* close() of a descriptor that carried HTTP */
    EV_HTTP_EXCHANGE = 10,/* a request and its final response, paired in the kernel */
};

/* 40 bytes */
struct ev_header {
    u32 type;
    u32 pid;              /* thread group id (the process) */
    u32 tid;
    u32 uid;
    u64 ts_ns;            /* CLOCK_BOOTTIME */
    char comm[COMM_LEN];
};

struct exec_args_ev {
    struct ev_header h;
    u32 argc;             /* arguments copied (at most ARGV_MAX) */
    u32 truncated;        /* 1 when argv had more than ARGV_MAX arguments */
    char argv[ARGV_MAX][ARG_LEN];
};

struct exec_ev {
    struct ev_header h;
    u32 ppid;             /* 0 when the fork was not seen */
    u32 old_pid;          /* the tid that called execve (pairs with EV_EXEC_ARGS) */
    char filename[FILENAME_LEN];
};

struct fork_ev {
    struct ev_header h;   /* the parent */
    u32 child_pid;
    u32 pad;
};

#define EXIT_HAS_CODE 1   /* exit_group()/exit() gave code */
#define EXIT_HAS_SIGNAL 2 /* a signal with its default, fatal action ended it */

struct exit_ev {
    struct ev_header h;
    u32 ppid;
    u32 flags;
    s32 code;
    s32 signal;
};

/* connect / accept / close. Local address in saddr/sport, the peer in daddr/dport. */
struct conn_ev {
    struct ev_header h;
    s32 fd;
    u16 family;           /* AF_INET (2) or AF_INET6 (10) */
    u16 sport;
    u16 dport;
    u16 pad;
    u32 pad2;
    u8 saddr[16];         /* IPv4 in the first 4 bytes */
    u8 daddr[16];
    u64 duration_ns;      /* close: since ESTABLISHED */
};

#define HTTP_OP_READ 0
#define HTTP_OP_WRITE 1

struct http_ev {
    struct ev_header h;
    s32 fd;
    u32 op;               /* HTTP_OP_READ or HTTP_OP_WRITE */
    u32 len;              /* bytes the syscall moved */
    u32 copied;           /* bytes of it in data (at most HTTP_PAYLOAD) */
    char data[HTTP_PAYLOAD];
};

#define HTTP_STATUS_LEN 16

/* One request and its response on a connection, paired by the http probe: the header is the
 * request's (its thread, its time: the first bytes read by a server or written by a client). */
#define HTTP_FLAG_TLS 1    /* seen in the TLS library's plaintext (uprobes), not the syscalls */
#define HTTP_WEIGHT_SHIFT 16 /* flags >> 16: how many exchanges this one stands for, when the
                              * probe samples (1 in N: N); 0 means 1 */

/* To carry more of an exchange (e.g. a header's value): add fields before `data` (which stays
 * last: user space reads `copied` bytes of it), keep 8-byte alignment, and change
 * inputs/ebpf/layouts.py's HTTP_EXCHANGE and SIZES with it (tests/inputs/ebpf/test_layouts.py
 * compiles this header and checks the offsets). */
struct http_exchange_ev {
    struct ev_header h;
    s32 fd;
    u32 op;               /* of the request: HTTP_OP_READ (server side) or HTTP_OP_WRITE (client) */
    u64 response_ts_ns;   /* the response's first bytes (CLOCK_BOOTTIME) */
    u32 len;              /* bytes the request's read or write moved */
    u32 copied;           /* bytes of the request in data (at most HTTP_PAYLOAD) */
    u32 response_len;     /* bytes the response's write or read moved */
    u32 flags;            /* HTTP_FLAG_*, and the weight above HTTP_WEIGHT_SHIFT */
    char status[HTTP_STATUS_LEN]; /* the response's first bytes: "HTTP/1.1 200 OK\r\n" */
    char data[HTTP_PAYLOAD];      /* the request's first bytes: its request line (the record
                                   * the http probe sends ends after ``copied`` of them) */
};

struct fd_close_ev {
    struct ev_header h;
    s32 fd;
    u32 pad;
};

#ifndef EVENTS_LAYOUT_ONLY  /* the layouts alone, for a plain C compiler (the layout test) */

/* Each probe is its own BPF object, with its own ring buffer and per-CPU counter of the events
 * the ring buffer had no room for (user space reads it: LossEvents). The ring buffer is created
 * by user space (EVENTS_FD): the programs reserve and submit with the helpers themselves. */
#ifndef EVENTS_FD
#error "EVENTS_FD: the ring buffer's map descriptor (inputs/ebpf/loader.py gives it)"
#endif
#define EVENTS ((void *)bpf_pseudo_fd(1, EVENTS_FD))
BPF_PERCPU_ARRAY(lost, u64, 1);

static __always_inline void *ev_reserve(u64 size)
{
    return bpf_ringbuf_reserve(EVENTS, size, 0);
}

/* Submit without waking the reader (a wake-up is an irq_work and an IPI, ~1 us, against some
 * 25 ns without): user space polls on a short timer. Only when WAKEUP_BYTES are pending does a
 * submit wake it, so a burst never waits for the timer with the ring filling up. */
static __always_inline void ev_submit(void *e)
{
    u64 pending = bpf_ringbuf_query(EVENTS, BPF_RB_AVAIL_DATA);
    bpf_ringbuf_submit(e, pending >= WAKEUP_BYTES ? BPF_RB_FORCE_WAKEUP : BPF_RB_NO_WAKEUP);
}

/* The same for a record that is already whole (a map value): ``size`` bytes of it go out, in
 * one copy. Non-zero when the ring buffer had no room. */
static __always_inline long ev_output(void *e, u64 size)
{
    u64 pending = bpf_ringbuf_query(EVENTS, BPF_RB_AVAIL_DATA) + size;  /* as ev_submit's */
    return bpf_ringbuf_output(EVENTS, e, size,
                              pending >= WAKEUP_BYTES ? BPF_RB_FORCE_WAKEUP : BPF_RB_NO_WAKEUP);
}

/* count_lost() is in each probe's file: BCC rewrites map calls (lost.lookup) only there. */

static __always_inline int is_self(u32 pid)
{
    return SELF_PID != 0 && pid == SELF_PID;
}

static __always_inline void fill_header(struct ev_header *h, u32 type)
{
    u64 id = bpf_get_current_pid_tgid();
    h->type = type;
    h->pid = id >> 32;
    h->tid = (u32)id;
    h->uid = (u32)bpf_get_current_uid_gid();
    h->ts_ns = bpf_ktime_get_boot_ns();
    bpf_get_current_comm(&h->comm, sizeof(h->comm));
}

#endif /* EVENTS_LAYOUT_ONLY */
#endif
