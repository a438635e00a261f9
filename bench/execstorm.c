/* An exec storm for bench/ebpf_ring_loss.py: fork and exec /bin/true with nine 59-byte
 * arguments (the process probe copies eight of them: its largest record), as fast as it can, for
 * SECONDS; prints how many. */
#include <unistd.h>
#include <sys/wait.h>
#include <stdlib.h>
#include <time.h>
#include <stdio.h>
int main(int argc, char **argv) {
    if (argc < 2) { fprintf(stderr, "usage: execstorm SECONDS\n"); return 2; }
    double secs = atof(argv[1]);
    char a[60]; for (int i = 0; i < 59; i++) a[i] = 'x'; a[59] = 0;
    char *args[] = {"/bin/true", a, a, a, a, a, a, a, a, a, NULL};
    struct timespec t0, t; clock_gettime(CLOCK_MONOTONIC, &t0);
    long n = 0;
    for (;;) {
        clock_gettime(CLOCK_MONOTONIC, &t);
        if (t.tv_sec - t0.tv_sec + (t.tv_nsec - t0.tv_nsec) / 1e9 > secs) break;
        pid_t p = fork();
        if (p == 0) { execv("/bin/true", args); _exit(127); }
        waitpid(p, NULL, 0); n++;
    }
    printf("%ld\n", n);
    return 0;
}
