/* The benchmark's TCP sink (bench/shippers.py compiles it with gcc at run time).

   sink PORT MODE EXPECT TIMEOUT
     MODE count:   count newline-framed records (memchr over 1 MiB reads)
     MODE verify:  also find "seq=NNNNNNNNNN" in every record and check the sequence
                   (in order, no gap; duplicates counted: delivery is at-least-once)
     MODE latency: find "ts=NNNNNNNNNNNNNNNNNNN" (CLOCK_REALTIME ns at write) in every record;
                   the delay is the time of the read() that brought the record's end, minus ts
   Listens on 127.0.0.1:PORT (any number of connections, epoll), prints "ready" once listening,
   and when EXPECT records have arrived (or TIMEOUT seconds passed without a byte) prints one
   JSON object: records, bytes, first_ns / last_ns (CLOCK_MONOTONIC, first and last byte) and
   the mode's results, then exits. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BUF (1 << 20)
#define MAXCONN 64

static long long now_ns(clockid_t c) {
    struct timespec ts;
    clock_gettime(c, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int cmp_ll(const void *a, const void *b) {
    long long x = *(const long long *)a, y = *(const long long *)b;
    return (x > y) - (x < y);
}

struct conn { int fd; char *carry; size_t ncarry; };

static int mode; /* 0 count, 1 verify, 2 latency */
static long long records, nbytes, expected_seq, dups, gaps, bad, first_ns, last_ns;
static long long *delays; static long long ndelays, maxdelays;

static long long digits(const char *p, const char *end, int n) {
    long long v = 0;
    if (end - p < n) return -1;
    for (int i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9') return -1;
        v = v * 10 + (p[i] - '0');
    }
    return v;
}

static void record(const char *s, const char *e, long long t_real) {
    if (mode == 1) {
        const char *p = memmem(s, e - s, "seq=", 4);
        long long seq = p ? digits(p + 4, e, 10) : -1;
        if (seq < 0) bad++;
        else if (seq == expected_seq) expected_seq++;
        else if (seq < expected_seq) dups++;
        else { gaps += seq - expected_seq; expected_seq = seq + 1; }
    } else {
        const char *p = memmem(s, e - s, "ts=", 3);
        long long ts = p ? digits(p + 3, e, 19) : -1;
        if (ts < 0) bad++;
        else if (ndelays < maxdelays) delays[ndelays++] = t_real - ts;
    }
}

/* Parse the complete records of carry+data; keep the incomplete tail in carry. */
static void parse(struct conn *c, const char *data, size_t n, long long t_real) {
    const char *p = data, *end = data + n;
    if (c->ncarry) {
        const char *nl = memchr(p, '\n', n);
        size_t take = nl ? (size_t)(nl - p + 1) : n;
        c->carry = realloc(c->carry, c->ncarry + take);
        memcpy(c->carry + c->ncarry, p, take);
        c->ncarry += take;
        p += take;
        if (!nl) return;
        record(c->carry, c->carry + c->ncarry - 1, t_real);
        c->ncarry = 0;
    }
    for (;;) {
        const char *nl = memchr(p, '\n', end - p);
        if (!nl) break;
        record(p, nl, t_real);
        p = nl + 1;
    }
    if (p < end) {
        c->carry = realloc(c->carry, end - p);
        memcpy(c->carry, p, end - p);
        c->ncarry = end - p;
    }
}

int main(int argc, char **argv) {
    if (argc != 5) { fprintf(stderr, "usage: sink PORT count|verify|latency EXPECT TIMEOUT\n"); return 2; }
    int port = atoi(argv[1]);
    mode = !strcmp(argv[2], "verify") ? 1 : !strcmp(argv[2], "latency") ? 2 : 0;
    long long expect = atoll(argv[3]);
    int timeout = atoi(argv[4]);
    if (mode == 2) { maxdelays = expect; delays = malloc(sizeof(long long) * (expect + 1)); }
    int ls = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(ls, (struct sockaddr *)&a, sizeof a) || listen(ls, 16)) { perror("bind/listen"); return 1; }
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(ep, EPOLL_CTL_ADD, ls, &ev);
    printf("ready\n");
    fflush(stdout);
    char *buf = malloc(BUF);
    struct epoll_event evs[MAXCONN];
    long long idle_since = now_ns(CLOCK_MONOTONIC);
    int conns = 0;
    while (records < expect) {
        int k = epoll_wait(ep, evs, MAXCONN, 200);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) {
            if (now_ns(CLOCK_MONOTONIC) - idle_since > (long long)timeout * 1000000000LL) break;
            continue;
        }
        for (int i = 0; i < k; i++) {
            struct conn *c = evs[i].data.ptr;
            if (!c) {
                int fd = accept(ls, NULL, NULL);
                if (fd < 0) continue;
                int rcv = 4 << 20;
                setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcv, sizeof rcv);
                c = calloc(1, sizeof *c);
                c->fd = fd;
                struct epoll_event ce = {.events = EPOLLIN, .data.ptr = c};
                epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ce);
                conns++;
                continue;
            }
            ssize_t n = read(c->fd, buf, BUF);
            if (n <= 0) {
                if (n < 0 && errno == EAGAIN) continue;
                epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
                close(c->fd);
                free(c->carry);
                free(c);
                continue;
            }
            long long t = now_ns(CLOCK_MONOTONIC);
            if (!first_ns) first_ns = t;
            last_ns = idle_since = t;
            nbytes += n;
            if (mode) parse(c, buf, n, mode == 2 ? now_ns(CLOCK_REALTIME) : 0);
            for (char *p = buf, *e = buf + n; (p = memchr(p, '\n', e - p)); p++) records++;
        }
    }
    printf("{\"records\": %lld, \"bytes\": %lld, \"first_ns\": %lld, \"last_ns\": %lld, "
           "\"connections\": %d", records, nbytes, first_ns, last_ns, conns);
    if (mode == 1)
        printf(", \"next_seq\": %lld, \"duplicates\": %lld, \"gaps\": %lld, \"unparsed\": %lld",
               expected_seq, dups, gaps, bad);
    if (mode == 2) {
        qsort(delays, ndelays, sizeof *delays, cmp_ll);
        long long p50 = ndelays ? delays[ndelays / 2] : -1;
        long long p99 = ndelays ? delays[(ndelays * 99) / 100] : -1;
        long long mx = ndelays ? delays[ndelays - 1] : -1;
        printf(", \"measured\": %lld, \"p50_ns\": %lld, \"p99_ns\": %lld, \"max_ns\": %lld, "
               "\"unparsed\": %lld", ndelays, p50, p99, mx, bad);
    }
    printf("}\n");
    return 0;
}
