/* A rate-limited HTTP/1.1 load generator for bench/ebpf_overhead.py (compiled there with gcc).

   loadgen PORT PATH RATE SECONDS CONNECTIONS

   Sends GET PATH to 127.0.0.1:PORT at RATE requests/s (0: as fast as the connections go) for
   SECONDS, over CONNECTIONS keep-alive connections, one request in flight per connection, from
   one thread (epoll). Open loop: request i is due at start + i / RATE and goes on the next free
   connection; its latency is measured from when it was DUE (not when it was sent), so a server
   that falls behind shows it in the percentiles (no coordinated omission). Responses are read
   to their Content-Length. Prints one JSON object: requests done, due, errors, the achieved
   rate, and latency p50/p90/p99/p999/max in microseconds. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAXCONN 1024
#define RBUF 65536

struct conn {
    int fd;
    int busy;
    long long due_ns;      /* the request in flight: when it was due */
    size_t have;
    char buf[RBUF];
};

static long long now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int cmp_ll(const void *a, const void *b) {
    long long x = *(const long long *)a, y = *(const long long *)b;
    return x < y ? -1 : x > y;
}

static int connect_to(int port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        perror("connect");
        exit(2);
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    return fd;
}

/* A complete response at the start of c->buf: its length, or 0 when more is needed. */
static size_t complete(struct conn *c) {
    char *end = memmem(c->buf, c->have, "\r\n\r\n", 4);
    if (!end)
        return 0;
    size_t head = end - c->buf + 4;
    size_t body = 0;
    char *cl = memmem(c->buf, head, "Content-Length:", 15);
    if (!cl)
        cl = memmem(c->buf, head, "content-length:", 15);
    if (cl)
        body = strtoul(cl + 15, NULL, 10);
    return c->have >= head + body ? head + body : 0;
}

int main(int argc, char **argv) {
    if (argc != 6) {
        fprintf(stderr, "usage: loadgen PORT PATH RATE SECONDS CONNECTIONS\n");
        return 2;
    }
    int port = atoi(argv[1]);
    const char *path = argv[2];
    double rate = atof(argv[3]);
    double seconds = atof(argv[4]);
    int nconn = atoi(argv[5]);
    if (nconn < 1 || nconn > MAXCONN)
        nconn = MAXCONN;
    char req[1024];
    int reqlen = snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", path);
    size_t cap = rate > 0 ? (size_t)(rate * seconds) + 16 : 4000000;
    long long *lat = malloc(cap * sizeof(long long));
    struct conn *conns = calloc(nconn, sizeof(struct conn));
    int ep = epoll_create1(0);
    int *freelist = malloc(nconn * sizeof(int));
    int nfree = 0;
    for (int i = 0; i < nconn; i++) {
        conns[i].fd = connect_to(port);
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = i};
        epoll_ctl(ep, EPOLL_CTL_ADD, conns[i].fd, &ev);
        freelist[nfree++] = i;
    }
    long long start = now_ns();
    long long end = start + (long long)(seconds * 1e9);
    long long interval = rate > 0 ? (long long)(1e9 / rate) : 0;
    long long next_due = start;
    size_t due = 0, done = 0, errors = 0;
    struct epoll_event evs[256];
    for (;;) {
        long long now = now_ns();
        /* Send what is due, on free connections. */
        while (next_due <= now && next_due < end && nfree > 0) {
            struct conn *c = &conns[freelist[--nfree]];
            if (write(c->fd, req, reqlen) != reqlen) {
                errors++;
                continue;
            }
            c->busy = 1;
            c->due_ns = next_due;
            due++;
            next_due = interval ? next_due + interval : now;
        }
        if (now >= end && nfree == nconn)
            break;
        if (now >= end + 5000000000LL)
            break; /* responses that never came */
        /* Sleep until the next request is due or a response comes (ns precision: no spin). */
        long long wait = 0;
        if (nfree == 0 || next_due > now) {
            wait = next_due > now ? next_due - now : 100000000;
            if (now >= end || nfree == 0)
                wait = 100000000;
        }
        struct timespec ts = {.tv_sec = wait / 1000000000LL, .tv_nsec = wait % 1000000000LL};
        int n = epoll_pwait2(ep, evs, 256, &ts, NULL);
        for (int k = 0; k < n; k++) {
            struct conn *c = &conns[evs[k].data.u32];
            ssize_t r = read(c->fd, c->buf + c->have, RBUF - c->have);
            if (r <= 0) {
                if (r < 0 && errno == EAGAIN)
                    continue;
                fprintf(stderr, "connection closed by the server\n");
                return 3;
            }
            c->have += r;
            size_t len;
            while (c->busy && (len = complete(c)) > 0) {
                long long t = now_ns();
                if (done < cap)
                    lat[done] = t - c->due_ns;
                done++;
                memmove(c->buf, c->buf + len, c->have - len);
                c->have -= len;
                c->busy = 0;
                freelist[nfree++] = evs[k].data.u32;
            }
        }
    }
    long long finished = now_ns();
    size_t m = done < cap ? done : cap;
    qsort(lat, m, sizeof(long long), cmp_ll);
#define PCT(p) (m ? lat[(size_t)((p) * (m - 1))] / 1000.0 : 0.0)
    printf("{\"done\": %zu, \"due\": %zu, \"errors\": %zu, \"seconds\": %.3f, \"rate\": %.1f, "
           "\"p50_us\": %.1f, \"p90_us\": %.1f, \"p99_us\": %.1f, \"p999_us\": %.1f, "
           "\"max_us\": %.1f}\n",
           done, due, errors, (finished - start) / 1e9, done / ((finished - start) / 1e9),
           PCT(0.5), PCT(0.9), PCT(0.99), PCT(0.999), m ? lat[m - 1] / 1000.0 : 0.0);
    return 0;
}
