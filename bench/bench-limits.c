/* The machine's own limits, measured in the same run as the checkpoint
 * figures so that each can be read as a ratio:
 *
 *   bench-limits MIB
 *
 * prints, one per line, "memcpy_gbps X" (copying MIB MiB between two
 * buffers already faulted in, best of 5) and "fault_us X" (cost per 4 KiB
 * page of touching fresh anonymous memory for the first time, median of 5).
 * Sequential write bandwidth with fsync is measured by the driver with dd. */

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

static double now_s(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

static int cmp_double(const void *a, const void *b) {
        double x = *(const double *) a, y = *(const double *) b;
        return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
        if (argc != 2) {
                fprintf(stderr, "usage: bench-limits MIB\n");
                return 2;
        }
        size_t size = (size_t) strtoull(argv[1], NULL, 10) << 20;
        if (!size) {
                fprintf(stderr, "bench-limits: size must be at least 1 MiB\n");
                return 2;
        }
        uint8_t *a = malloc(size), *b = malloc(size);
        if (!a || !b) {
                perror("malloc");
                return 1;
        }
        memset(a, 0x5a, size);
        memset(b, 0, size);
        double best = 1e9;
        for (int i = 0; i < 5; i++) {
                double t = now_s();
                memcpy(b, a, size);
                t = now_s() - t;
                if (t < best)
                        best = t;
                a[i] ^= b[size - 1 - (size_t) i];       /* keep the copies */
        }
        printf("memcpy_gbps %.2f\n", (double) size / best / 1e9);

        double fault[5];
        size_t pages = size / 4096;
        for (int i = 0; i < 5; i++) {
                uint8_t *m = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
                if (m == MAP_FAILED) {
                        perror("mmap");
                        return 1;
                }
                double t = now_s();
                for (size_t p = 0; p < pages; p++)
                        m[p * 4096] = 1;
                fault[i] = (now_s() - t) / (double) pages * 1e6;
                munmap(m, size);
        }
        qsort(fault, 5, sizeof fault[0], cmp_double);
        printf("fault_us %.3f\n", fault[2]);
        free(a);
        free(b);
        return 0;
}
