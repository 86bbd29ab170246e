/*
 * bare_write: the smallest possible timing loop, to check that droidoom-helper's numbers
 * are what a bare C loop sees (fidelity benchmark).
 *
 *   bare_write <pid> <n> <adj_a> <adj_b> [persistent]
 *
 * Times n writes to /proc/<pid>/oom_score_adj alternating adj_a, adj_b, each either
 * open+write+close (default, as lmkd does) or write() on one fd (persistent), with
 * CLOCK_MONOTONIC around each. Prints: median_ns=<> p90_ns=<> mean_ns=<> total_ns=<>
 * Build: cc -O2 -o bare_write bare_write.c
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int cmp(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    if (argc < 5 || argc > 6 || (argc == 6 && strcmp(argv[5], "persistent") != 0)) {
        fprintf(stderr, "usage: bare_write <pid> <n> <adj_a> <adj_b> [persistent]\n");
        return 2;
    }
    long n = atol(argv[2]);
    if (n <= 0) {
        fprintf(stderr, "n must be > 0\n");
        return 2;
    }
    int persistent = argc == 6;
    char path[64], val[2][16];
    snprintf(path, sizeof path, "/proc/%s/oom_score_adj", argv[1]);
    size_t len[2];
    for (int k = 0; k < 2; k++)
        len[k] = (size_t)snprintf(val[k], sizeof val[k], "%d", atoi(argv[3 + k]));
    int64_t *lat = malloc((size_t)n * sizeof *lat);
    int pfd = persistent ? open(path, O_WRONLY | O_CLOEXEC) : -1;
    if (!lat || (persistent && pfd < 0)) {
        perror(path);
        return 1;
    }
    int64_t sum = 0, start = now_ns();
    for (long i = 0; i < n; i++) {
        int k = (int)(i & 1);
        int64_t t0 = now_ns();
        if (persistent) {
            if (write(pfd, val[k], len[k]) != (ssize_t)len[k]) {
                perror("write");
                return 1;
            }
        } else {
            int fd = open(path, O_WRONLY | O_CLOEXEC);
            if (fd < 0 || write(fd, val[k], len[k]) != (ssize_t)len[k] || close(fd) != 0) {
                perror(path);
                return 1;
            }
        }
        lat[i] = now_ns() - t0;
        sum += lat[i];
    }
    int64_t total = now_ns() - start;
    qsort(lat, (size_t)n, sizeof *lat, cmp);
    printf("median_ns=%lld p90_ns=%lld mean_ns=%lld total_ns=%lld\n", (long long)lat[n / 2],
           (long long)lat[(n * 9) / 10 < n ? (n * 9) / 10 : n - 1], (long long)(sum / n),
           (long long)total);
    return 0;
}
