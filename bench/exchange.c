/* The kernel floor micro-bench of bench/ebpf_overhead.py (compiled there with gcc).

   exchange N [tcp|pipe]

   One process, one loopback TCP connection to itself: N times, the client writes a small
   request ("GET /x HTTP/1.1..."), the server reads it, writes a small response ("HTTP/1.1 200
   OK..."), the client reads it: the four syscalls of an HTTP exchange, as an HTTP probe sees
   them on both sides. With "pipe", the same bytes go through two pipes instead (what a probe
   costs the reads and writes of the host that are not sockets). Prints the process's CPU time (user + system, getrusage) per exchange in
   nanoseconds, so that runs with no probes, with empty programs and with the real probes
   attached can be compared. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

static const char REQ[] = "GET /floor HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
static const char RESP[] = "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n";

static double cpu_ns(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1e9 +
           (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1e3;
}

int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 100000;
    int pipes = argc > 2 && strcmp(argv[2], "pipe") == 0;
    int ls = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t sl = sizeof(sa);
    if (bind(ls, (struct sockaddr *)&sa, sizeof(sa)) || listen(ls, 1) ||
        getsockname(ls, (struct sockaddr *)&sa, &sl)) {
        perror("listen");
        return 2;
    }
    int c = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(c, (struct sockaddr *)&sa, sizeof(sa))) {
        perror("connect");
        return 2;
    }
    int s = accept(ls, NULL, NULL);
    int one = 1;
    setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    /* The four ends: client writes to cw, server reads sr, server writes sw, client reads cr. */
    int cw = c, sr = s, sw = s, cr = c;
    if (pipes) {
        int up[2], down[2];
        if (pipe(up) || pipe(down)) {
            perror("pipe");
            return 2;
        }
        cw = up[1], sr = up[0], sw = down[1], cr = down[0];
    }
    char buf[4096];
    double t0 = cpu_ns();
    for (long i = 0; i < n; i++) {
        if (write(cw, REQ, sizeof(REQ) - 1) < 0 || read(sr, buf, sizeof(buf)) <= 0 ||
            write(sw, RESP, sizeof(RESP) - 1) < 0 || read(cr, buf, sizeof(buf)) <= 0) {
            perror("exchange");
            return 2;
        }
    }
    printf("%.1f\n", (cpu_ns() - t0) / n);
    return 0;
}
