/* The quick start's demo: counts once per tick and prints a running total,
 * so a restart shows it continuing from where it was checkpointed. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
        long tick_ms = argc > 1 ? atol(argv[1]) : 200;
        unsigned long long sum = 0;
        for (long i = 1;; i++) {
                sum += (unsigned long long) i * i;
                printf("step %ld (pid %d, sum of squares %llu)\n", i, (int) getpid(), sum);
                fflush(stdout);
                struct timespec ts = { tick_ms / 1000, (tick_ms % 1000) * 1000000L };
                while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
                        ;
        }
}
