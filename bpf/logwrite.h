/* The logwrite probe's event (bpf/logwrite.c; decoded in inputs/ebpf/logwrite.py, whose test
 * compiles this header and compares the offsets). */
#ifndef LOG_SHUTTLE_LOGWRITE_H
#define LOG_SHUTTLE_LOGWRITE_H

#ifndef LOG_HEAD
#define LOG_HEAD 128   /* bytes of a log write copied (a power of two) */
#endif

#define EV_LOG_WRITE 32  /* a write() to a (pid, fd) user space marked as a log file */

struct log_write_ev {
    struct ev_header h;   /* the writing thread, the write's entry */
    s32 fd;
    u32 len;              /* bytes given to write() */
    u64 seq;              /* this CPU's count of log writes seen (a gap: events were lost) */
    u64 req_ts;           /* struct serving of the thread, at the write (0: none) */
    u64 resp_ts;
    u64 multi_ts;
    s32 req_fd;
    u16 cpu;
    u16 copied;           /* bytes of the write in data */
    char data[LOG_HEAD];
};

#endif
