/* TCP probe: connections opened with connect() or accept() and their close, with family,
 * addresses, ports, process and descriptor. Tracepoints: sock:inet_sock_set_state (addresses,
 * ports and states as arguments) joined with syscalls:sys_enter/exit_connect and
 * syscalls:sys_enter/exit_accept(4).
 *
 * connect: SYN_SENT is set in the caller's context (its pid, and the fd of its connect()); the
 *   local port is chosen after that, so the event is sent at SYN_SENT -> ESTABLISHED, from what
 *   was noted then.
 * accept: the child socket reaches ESTABLISHED in softirq context (no process), and accept()
 *   returns its fd and peer address (read from the caller's sockaddr) in the process: the two
 *   are joined on the peer's family, address and port, whichever comes first.
 * close: TCP_CLOSE of a socket whose opening was seen, with how long it was established. */
#include "events.h"

/* One more event the ring buffer had no room for (read by user space: LossEvents). */
static __always_inline void count_lost(void)
{
    int zero = 0;
    u64 *n = lost.lookup(&zero);
    if (n)
        *n += 1;
}

#define TCP_PROTO 6
#define FAMILY_INET 2
#define FAMILY_INET6 10
#define ST_ESTABLISHED 1
#define ST_SYN_SENT 2
#define ST_SYN_RECV 3
#define ST_CLOSE 7

struct sock_info {
    u32 pid;
    u32 tid;
    u32 uid;
    s32 fd;
    u64 ts_ns;             /* ESTABLISHED (or SYN_SENT, until established) */
    u32 kind;              /* EV_CONNECT or EV_ACCEPT */
    u32 established;
    char comm[COMM_LEN];
};

struct peer_key {
    u16 family;
    u16 port;
    u32 pad;
    u8 addr[16];
};

struct half_open {         /* an ESTABLISHED child socket no accept() returned yet */
    u64 skaddr;
    u64 ts_ns;
    u16 sport;
    u16 pad[3];
    u8 saddr[16];
};

BPF_TABLE("lru_hash", u64, struct sock_info, socks, 65536);       /* skaddr -> opener */
BPF_TABLE("lru_hash", u32, s32, connecting, 16384);               /* tid -> fd in connect() */
BPF_TABLE("lru_hash", u32, u64, accept_addr, 16384);              /* tid -> user sockaddr * */
BPF_TABLE("lru_hash", struct peer_key, struct half_open, unaccepted, 65536);
BPF_TABLE("lru_hash", struct peer_key, struct sock_info, accepted, 16384); /* accept() first */

static __always_inline void copy_addr(u8 *dst, u16 family, const u8 *v4, const u8 *v6)
{
    if (family == FAMILY_INET6)
        __builtin_memcpy(dst, v6, 16);
    else
        __builtin_memcpy(dst, v4, 4);
}

static __always_inline void emit_conn(u32 type, struct sock_info *si, u64 now, u16 family,
                                      u16 sport, u16 dport, const u8 *saddr, const u8 *daddr,
                                      u64 duration)
{
    struct conn_ev *e = ev_reserve(sizeof(*e));
    if (!e) {
        count_lost();
        return;
    }
    e->h.type = type;
    e->h.pid = si->pid;
    e->h.tid = si->tid;
    e->h.uid = si->uid;
    e->h.ts_ns = now;
    __builtin_memcpy(e->h.comm, si->comm, COMM_LEN);
    e->fd = si->fd;
    e->family = family;
    e->sport = sport;
    e->dport = dport;
    e->pad = 0;
    e->pad2 = 0;
    __builtin_memcpy(e->saddr, saddr, 16);
    __builtin_memcpy(e->daddr, daddr, 16);
    e->duration_ns = duration;
    ev_submit(e);
}

static __always_inline void current_info(struct sock_info *si, u32 kind, s32 fd, u64 now)
{
    u64 id = bpf_get_current_pid_tgid();
    si->pid = id >> 32;
    si->tid = (u32)id;
    si->uid = (u32)bpf_get_current_uid_gid();
    si->fd = fd;
    si->ts_ns = now;
    si->kind = kind;
    si->established = 0;
    bpf_get_current_comm(&si->comm, sizeof(si->comm));
}

TRACEPOINT_PROBE(syscalls, sys_enter_connect)
{
    u32 tid = (u32)bpf_get_current_pid_tgid();
    s32 fd = args->fd;
    connecting.update(&tid, &fd);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_connect)
{
    u32 tid = (u32)bpf_get_current_pid_tgid();
    connecting.delete(&tid);
    return 0;
}

TRACEPOINT_PROBE(sock, inet_sock_set_state)
{
    if (args->protocol != TCP_PROTO)
        return 0;
    u64 sk = (u64)args->skaddr;
    int old = args->oldstate;
    int state = args->newstate;
    u64 now = bpf_ktime_get_boot_ns();
    u16 family = args->family;
    u8 saddr[16] = {};
    u8 daddr[16] = {};
    copy_addr(saddr, family, args->saddr, args->saddr_v6);
    copy_addr(daddr, family, args->daddr, args->daddr_v6);

    if (state == ST_SYN_SENT) {
        struct sock_info si = {};
        u32 tid = (u32)bpf_get_current_pid_tgid();
        s32 *fd = connecting.lookup(&tid);
        current_info(&si, EV_CONNECT, fd ? *fd : -1, now);
        if (is_self(si.pid))
            return 0;
        socks.update(&sk, &si);
        return 0;
    }
    if (state == ST_ESTABLISHED && old == ST_SYN_SENT) {
        struct sock_info *si = socks.lookup(&sk);
        if (!si)
            return 0;
        si->ts_ns = now;
        si->established = 1;
        emit_conn(EV_CONNECT, si, now, family, args->sport, args->dport, saddr, daddr, 0);
        return 0;
    }
    if (state == ST_ESTABLISHED && old == ST_SYN_RECV) {
        struct peer_key k = {};
        k.family = family;
        k.port = args->dport;
        __builtin_memcpy(k.addr, daddr, 16);
        struct sock_info *si = accepted.lookup(&k);
        if (si) { /* accept() returned before this state change was traced */
            struct sock_info copy = *si;
            copy.ts_ns = now;
            copy.established = 1;
            accepted.delete(&k);
            socks.update(&sk, &copy);
            emit_conn(EV_ACCEPT, &copy, now, family, args->sport, args->dport, saddr, daddr, 0);
            return 0;
        }
        struct half_open h = {};
        h.skaddr = sk;
        h.ts_ns = now;
        h.sport = args->sport;
        __builtin_memcpy(h.saddr, saddr, 16);
        unaccepted.update(&k, &h);
        return 0;
    }
    if (state == ST_CLOSE) {
        struct sock_info *si = socks.lookup(&sk);
        if (!si)
            return 0;
        if (si->established)
            emit_conn(EV_CLOSE, si, now, family, args->sport, args->dport, saddr, daddr,
                      now - si->ts_ns);
        socks.delete(&sk);
    }
    return 0;
}

static __always_inline int accept_enter(u64 addr)
{
    u32 tid = (u32)bpf_get_current_pid_tgid();
    accept_addr.update(&tid, &addr);
    return 0;
}

static __always_inline int accept_exit(long ret)
{
    u32 tid = (u32)bpf_get_current_pid_tgid();
    u64 *addrp = accept_addr.lookup(&tid);
    if (!addrp)
        return 0;
    u64 uaddr = *addrp;
    accept_addr.delete(&tid);
    if (ret < 0)
        return 0;
    u64 now = bpf_ktime_get_boot_ns();
    struct sock_info si = {};
    current_info(&si, EV_ACCEPT, (s32)ret, now);
    if (is_self(si.pid))
        return 0;
    u8 zero[16] = {};
    /* struct sockaddr_in / sockaddr_in6: family, port (network order), then the address. */
    u8 sa[28] = {};
    if (!uaddr || bpf_probe_read_user(sa, sizeof(sa), (void *)uaddr)) {
        emit_conn(EV_ACCEPT, &si, now, 0, 0, 0, zero, zero, 0);
        return 0;
    }
    struct peer_key k = {};
    k.family = sa[0] | (sa[1] << 8);
    k.port = (sa[2] << 8) | sa[3];
    if (k.family == FAMILY_INET6)
        __builtin_memcpy(k.addr, &sa[8], 16);
    else if (k.family == FAMILY_INET)
        __builtin_memcpy(k.addr, &sa[4], 4);
    else
        return 0; /* not TCP/IP (a unix socket) */
    struct half_open *h = unaccepted.lookup(&k);
    if (!h) { /* the ESTABLISHED state change is not traced yet: it will emit the event */
        accepted.update(&k, &si);
        return 0;
    }
    struct half_open ho = *h;
    unaccepted.delete(&k);
    si.ts_ns = ho.ts_ns;
    si.established = 1;
    socks.update(&ho.skaddr, &si);
    emit_conn(EV_ACCEPT, &si, now, k.family, ho.sport, k.port, ho.saddr, k.addr, 0);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_accept)
{
    return accept_enter((u64)args->upeer_sockaddr);
}

TRACEPOINT_PROBE(syscalls, sys_enter_accept4)
{
    return accept_enter((u64)args->upeer_sockaddr);
}

TRACEPOINT_PROBE(syscalls, sys_exit_accept)
{
    return accept_exit(args->ret);
}

TRACEPOINT_PROBE(syscalls, sys_exit_accept4)
{
    return accept_exit(args->ret);
}
