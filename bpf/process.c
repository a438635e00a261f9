/* Process probe: exec (with its argv), fork (of processes, not threads) and exit (with the status
 * given to exit_group()/exit(), or the fatal signal). Tracepoints: syscalls:sys_enter_execve(at),
 * sched:sched_process_exec, syscalls:sys_enter/exit_clone(3), sched:sched_process_fork,
 * syscalls:sys_enter_exit(_group), signal:signal_deliver, sched:sched_process_exit.
 *
 * The argv of an exec is copied when execve() is entered (the caller's memory still holds it) and
 * sent as EV_EXEC_ARGS; user space pairs it with the EV_EXEC that follows from the same thread
 * (old_pid), so a failed execve() (PATH search) leaves only an EV_EXEC_ARGS that the next one
 * replaces. */
#include "events.h"

/* One more event the ring buffer had no room for (read by user space: LossEvents). */
static __always_inline void count_lost(void)
{
    int zero = 0;
    u64 *n = lost.lookup(&zero);
    if (n)
        *n += 1;
}

#define CLONE_THREAD 0x00010000

BPF_TABLE("lru_hash", u32, u64, clone_flags, 16384);      /* tid -> flags of its clone() */
BPF_TABLE("lru_hash", u32, u32, parents, 65536);          /* pid -> ppid, from the forks seen */
BPF_TABLE("lru_hash", u32, s32, exit_codes, 65536);       /* tgid -> code of exit_group() */
BPF_TABLE("lru_hash", u32, s32, fatal_signals, 65536);    /* tgid -> signal, default action */

static __always_inline int emit_exec_args(const char *const *argv)
{
    struct exec_args_ev *e = ev_reserve(sizeof(*e));
    if (!e) {
        count_lost();
        return 0;
    }
    fill_header(&e->h, EV_EXEC_ARGS);
    e->argc = 0;
    e->truncated = 0;
#pragma unroll
    for (int i = 0; i < ARGV_MAX; i++) {
        const char *arg = NULL;
        if (bpf_probe_read_user(&arg, sizeof(arg), &argv[i]) || !arg)
            break;
        if (bpf_probe_read_user_str(e->argv[i], ARG_LEN, arg) < 0)
            break;
        e->argc = i + 1;
    }
    if (e->argc == ARGV_MAX) {
        const char *more = NULL;
        bpf_probe_read_user(&more, sizeof(more), &argv[ARGV_MAX]);
        e->truncated = more != NULL;
    }
    ev_submit(e);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_execve)
{
    return emit_exec_args(args->argv);
}

TRACEPOINT_PROBE(syscalls, sys_enter_execveat)
{
    return emit_exec_args(args->argv);
}

TRACEPOINT_PROBE(sched, sched_process_exec)
{
    struct exec_ev *e = ev_reserve(sizeof(*e));
    if (!e) {
        count_lost();
        return 0;
    }
    fill_header(&e->h, EV_EXEC);
    u32 pid = e->h.pid;
    u32 *ppid = parents.lookup(&pid);
    e->ppid = ppid ? *ppid : 0;
    e->old_pid = args->old_pid;
    unsigned short off = args->data_loc_filename & 0xFFFF;
    if (bpf_probe_read_str(e->filename, sizeof(e->filename), (char *)args + off) < 0)
        e->filename[0] = 0;
    ev_submit(e);
    /* Killing the other threads of an exec delivers them SIGKILL: that is no exit. */
    fatal_signals.delete(&pid);
    exit_codes.delete(&pid);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_clone)
{
    u32 tid = (u32)bpf_get_current_pid_tgid();
    u64 flags = args->clone_flags;
    clone_flags.update(&tid, &flags);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_clone3)
{
    u32 tid = (u32)bpf_get_current_pid_tgid();
    u64 flags = 0; /* struct clone_args begins with its u64 flags (a user-space ABI) */
    bpf_probe_read_user(&flags, sizeof(flags), args->uargs);
    clone_flags.update(&tid, &flags);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_clone)
{
    u32 tid = (u32)bpf_get_current_pid_tgid();
    clone_flags.delete(&tid);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_clone3)
{
    u32 tid = (u32)bpf_get_current_pid_tgid();
    clone_flags.delete(&tid);
    return 0;
}

TRACEPOINT_PROBE(sched, sched_process_fork)
{
    u64 id = bpf_get_current_pid_tgid();
    u32 tid = (u32)id;
    u64 *flags = clone_flags.lookup(&tid);
    if (flags && (*flags & CLONE_THREAD))
        return 0; /* a new thread, not a new process */
    u32 child = args->child_pid;
    u32 parent = id >> 32;
    parents.update(&child, &parent);
    struct fork_ev *e = ev_reserve(sizeof(*e));
    if (!e) {
        count_lost();
        return 0;
    }
    fill_header(&e->h, EV_FORK);
    e->child_pid = child;
    e->pad = 0;
    ev_submit(e);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_exit_group)
{
    u32 tgid = bpf_get_current_pid_tgid() >> 32;
    s32 code = args->error_code & 0xff;
    exit_codes.update(&tgid, &code);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_exit)
{
    u64 id = bpf_get_current_pid_tgid();
    u32 tgid = id >> 32;
    if (tgid != (u32)id)
        return 0; /* a thread's own exit is not the process's status */
    s32 code = args->error_code & 0xff;
    exit_codes.insert(&tgid, &code);
    return 0;
}

TRACEPOINT_PROBE(signal, signal_deliver)
{
    if (args->sa_handler != 0)
        return 0; /* handled or ignored: not the default action */
    int sig = args->sig;
    /* Signals whose default action is to ignore or to stop. */
    if (sig == 17 || sig == 18 || sig == 19 || sig == 20 || sig == 21 || sig == 22 ||
        sig == 23 || sig == 28)
        return 0;
    u32 tgid = bpf_get_current_pid_tgid() >> 32;
    s32 s = sig;
    fatal_signals.update(&tgid, &s);
    return 0;
}

TRACEPOINT_PROBE(sched, sched_process_exit)
{
    u64 id = bpf_get_current_pid_tgid();
    u32 tgid = id >> 32;
    if (tgid != (u32)id)
        return 0; /* a thread; the process ends with its leader */
    struct exit_ev *e = ev_reserve(sizeof(*e));
    if (!e) {
        count_lost();
    } else {
        fill_header(&e->h, EV_EXIT);
        u32 *ppid = parents.lookup(&tgid);
        e->ppid = ppid ? *ppid : 0;
        e->flags = 0;
        e->code = 0;
        e->signal = 0;
        s32 *code = exit_codes.lookup(&tgid);
        if (code) {
            e->flags |= EXIT_HAS_CODE;
            e->code = *code;
        }
        s32 *sig = fatal_signals.lookup(&tgid);
        if (sig) {
            e->flags |= EXIT_HAS_SIGNAL;
            e->signal = *sig;
        }
        ev_submit(e);
    }
    exit_codes.delete(&tgid);
    fatal_signals.delete(&tgid);
    parents.delete(&tgid);
    return 0;
}
