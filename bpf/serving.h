/* What each thread is serving: the server request it read last, and whether it has answered it.
 * Kept by the http probe (http.c declares the map public), read by the logwrite probe: a log
 * line written by a thread belongs to the exchange that thread is serving, or has just answered
 * (nginx writes its access log after the response), unless the thread serves several at once.
 * A layout only (no map calls: BCC rewrites those in the probe's own file). */
#ifndef LOG_SHUTTLE_SERVING_H
#define LOG_SHUTTLE_SERVING_H

#ifndef SERVING_THREADS
#define SERVING_THREADS 65536  /* threads whose serving state is kept (LRU) */
#endif

struct serving {
    u64 req_ts;     /* the request this thread read last (first bytes, CLOCK_BOOTTIME): with the
                       pid and fd, the key of its exchange; 0: a request user space pairs (a
                       pipelining connection), which no line may be joined to */
    u64 resp_ts;    /* when the thread wrote that request's response; 0 while in flight */
    u64 multi_ts;   /* the last time the thread had two requests in flight at once (an event
                       loop), or answered one it had not read last; 0: never */
    s32 fd;         /* the request's connection */
    u32 weight;     /* the http probe's sampling of that request: 0 not sampled, else the number
                       of exchanges it stands for (1: every exchange is sent) */
};

#endif
