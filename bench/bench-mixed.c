/* A mixed workload for the run-time overhead figure: THREADS threads each
 * run ITERS rounds of small allocations and frees, short system calls
 * (open/close of /dev/null, getppid, a 1-byte read of /dev/zero) and a
 * mutex shared by all threads. Prints "work_s X", the time of the work
 * itself measured inside the program, so that launch cost is not in it.
 *
 *   bench-mixed THREADS ITERS */

#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static pthread_mutex_t shared = PTHREAD_MUTEX_INITIALIZER;
static uint64_t counter;
static long iters;

static void *work(void *arg) {
        uint64_t seed = (uintptr_t) arg * 2654435761u + 1;
        void *keep[64] = { 0 };
        int zero = open("/dev/zero", O_RDONLY | O_CLOEXEC);
        if (zero < 0) {
                perror("/dev/zero");
                exit(1);
        }
        for (long i = 0; i < iters; i++) {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                size_t slot = seed % 64;
                free(keep[slot]);
                keep[slot] = malloc(16 + seed % 4096);
                if (!keep[slot]) {
                        perror("malloc");
                        exit(1);
                }
                ((char *) keep[slot])[0] = (char) i;
                if (i % 8 == 0) {
                        int fd = open("/dev/null", O_WRONLY | O_CLOEXEC);
                        if (fd < 0) {
                                perror("/dev/null");
                                exit(1);
                        }
                        close(fd);
                }
                if (i % 4 == 0) {
                        char c;
                        if (read(zero, &c, 1) != 1) {
                                perror("read");
                                exit(1);
                        }
                }
                if (i % 2 == 0)
                        (void) getppid();
                pthread_mutex_lock(&shared);
                counter++;
                pthread_mutex_unlock(&shared);
        }
        for (int k = 0; k < 64; k++)
                free(keep[k]);
        close(zero);
        return NULL;
}

int main(int argc, char **argv) {
        if (argc != 3) {
                fprintf(stderr, "usage: bench-mixed THREADS ITERS\n");
                return 2;
        }
        int n = atoi(argv[1]);
        iters = atol(argv[2]);
        if (n < 1 || n > 64 || iters < 1) {
                fprintf(stderr, "bench-mixed: 1-64 threads, at least 1 iteration\n");
                return 2;
        }
        pthread_t th[64];
        struct timespec a, b;
        clock_gettime(CLOCK_MONOTONIC, &a);
        for (int i = 0; i < n; i++)
                if (pthread_create(&th[i], NULL, work, (void *) (uintptr_t) (i + 1))) {
                        fprintf(stderr, "bench-mixed: cannot create a thread\n");
                        return 1;
                }
        for (int i = 0; i < n; i++)
                pthread_join(th[i], NULL);
        clock_gettime(CLOCK_MONOTONIC, &b);
        if (counter != (uint64_t) n * (uint64_t) iters) {
                fprintf(stderr, "bench-mixed: counter %llu, expected %llu\n", (unsigned long long) counter,
                        (unsigned long long) n * (unsigned long long) iters);
                return 1;
        }
        printf("work_s %.6f\n", (double) (b.tv_sec - a.tv_sec) + (double) (b.tv_nsec - a.tv_nsec) / 1e9);
        return 0;
}
