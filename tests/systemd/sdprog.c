/* The program the systemd tests run as a job:
 *
 *   sdprog FILE [STEP_MS [EXIT_AT [STATUS [MEM_MB]]]]
 *
 * Counts 1, 2, 3, ... every STEP_MS (default 100) ms. Each count is appended
 * to FILE as "tick N UID" (opened, written and closed each time, so no
 * descriptor state is involved) and printed on stdout (the job's journal
 * stream). The count lives only in memory: after a restart from a checkpoint
 * the file shows where the restored process went on from, which the tests
 * compare with where it was checkpointed. At count EXIT_AT (0: never) it
 * exits with STATUS (default 0). MEM_MB megabytes of memory filled with
 * data that compresses poorly make its checkpoints take a while.
 *
 * It checks itself, too: a count that does not follow the previous one in
 * the same process (memory damage) is reported as "BAD" and exit 3. */
#include <errno.h>
#include <stdint.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static void append(const char *path, const char *line) {
        int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
        if (fd < 0) {
                fprintf(stderr, "sdprog: %s: %s\n", path, strerror(errno));
                exit(4);
        }
        size_t n = strlen(line);
        if (write(fd, line, n) != (ssize_t) n) {
                fprintf(stderr, "sdprog: %s: short write\n", path);
                exit(4);
        }
        close(fd);
}

int main(int argc, char *argv[]) {
        if (argc < 2 || argc > 6) {
                fprintf(stderr, "usage: sdprog FILE [STEP_MS [EXIT_AT [STATUS [MEM_MB]]]]\n");
                return 64;
        }
        long step = argc > 2 ? atol(argv[2]) : 100;
        long exit_at = argc > 3 ? atol(argv[3]) : 0;
        int status = argc > 4 ? atoi(argv[4]) : 0;
        size_t mem = argc > 5 ? (size_t) atol(argv[5]) << 20 : 0;
        if (mem) {
                unsigned char *m = malloc(mem);
                if (!m)
                        return 5;
                uint32_t x = 12345;
                for (size_t i = 0; i < mem; i++) {
                        x = x * 1103515245u + 12345u;
                        m[i] = (unsigned char) (x >> 16);
                }
        }
        volatile long count = 0, shadow = 0;    /* shadow == count - 1 between steps */
        char line[64];
        for (;;) {
                if (shadow != count) {
                        snprintf(line, sizeof line, "BAD %ld %ld\n", count, shadow);
                        append(argv[1], line);
                        return 3;
                }
                count++;
                snprintf(line, sizeof line, "tick %ld %u\n", count, (unsigned) getuid());
                append(argv[1], line);
                printf("tick %ld\n", count);
                fflush(stdout);
                shadow = count;
                if (exit_at && count >= exit_at)
                        return status;
                struct timespec ts = { step / 1000, (step % 1000) * 1000000 };
                nanosleep(&ts, NULL);
        }
}
