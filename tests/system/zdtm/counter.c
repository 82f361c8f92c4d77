/* counter: one counter kept in every kind of memory a process has (data,
 * bss, heap, stack, an anonymous mapping, thread-local storage), advanced
 * together, and logged one line per value to an O_APPEND file.
 *
 * Checked on every step: all copies agree, the pid is the one recorded at
 * start, CLOCK_MONOTONIC did not go back. At verification: counter.log
 * holds exactly 1..counter, one per line (the runtime cuts the file back to
 * its size at the checkpoint, so what the lost process wrote after it is
 * neither duplicated nor missing), and the counter moved on after the
 * program became ready. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "zdtmtst.h"

#define LOG_FILE "counter.log"
#define KEY 0x5a5aa5a5deadbeefULL

static uint64_t data_copy = 1234567;            /* .data */
static uint64_t bss_copy;                       /* .bss */
static __thread uint64_t tls_copy;
static volatile uint64_t *heap_copy;
static volatile uint64_t *map_copy;
static uint64_t ready_value;

static void check_copies(uint64_t c, const volatile uint64_t *stack_copy) {
        check(bss_copy == c, "bss copy %llu != counter %llu", (unsigned long long) bss_copy, (unsigned long long) c);
        check(data_copy == (c ^ KEY), "data copy corrupted at %llu", (unsigned long long) c);
        check(tls_copy == c, "TLS copy %llu != counter %llu", (unsigned long long) tls_copy, (unsigned long long) c);
        check(*heap_copy == c, "heap copy %llu != counter %llu", (unsigned long long) *heap_copy, (unsigned long long) c);
        check(map_copy[0] == c && map_copy[511] == mix64(c), "mmap copy %llu != counter %llu",
              (unsigned long long) map_copy[0], (unsigned long long) c);
        check(*stack_copy == c, "stack copy %llu != counter %llu", (unsigned long long) *stack_copy,
              (unsigned long long) c);
}

static void verify_log(uint64_t c) {
        int fd = open(LOG_FILE, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                fail_errno("open %s", LOG_FILE);
        struct stat st;
        if (fstat(fd, &st) < 0)
                fail_errno("fstat %s", LOG_FILE);
        char *buf = malloc((size_t) st.st_size + 1);
        check(buf, "out of memory");
        read_all(fd, buf, (size_t) st.st_size, LOG_FILE);
        buf[st.st_size] = 0;
        close(fd);
        uint64_t want = 1;
        for (char *p = buf; *p;) {
                char *nl = strchr(p, '\n');
                check(nl, "%s: last line has no newline (torn write) after %llu", LOG_FILE,
                      (unsigned long long) (want - 1));
                *nl = 0;
                unsigned long long v = strtoull(p, NULL, 10);
                check(v == want, "%s: line %llu holds %llu (%s)", LOG_FILE, (unsigned long long) want, v,
                      v < want ? "duplicated after a restart" : "values missing");
                want++;
                p = nl + 1;
        }
        check(want - 1 == c, "%s ends at %llu but the counter is %llu", LOG_FILE, (unsigned long long) (want - 1),
              (unsigned long long) c);
        free(buf);
}

int main(int argc, char **argv) {
        test_init(argc, argv);
        int logfd = open(LOG_FILE, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0644);
        if (logfd < 0)
                fail_errno("open %s", LOG_FILE);
        heap_copy = malloc(sizeof *heap_copy);
        map_copy = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        check(heap_copy && map_copy != MAP_FAILED, "out of memory");
        volatile uint64_t stack_copy = 0;
        uint64_t counter = 0;
        data_copy = KEY;
        *heap_copy = 0;
        map_copy[0] = 0;
        map_copy[511] = mix64(0);
        struct timespec last;
        clock_gettime(CLOCK_MONOTONIC, &last);
        test_ready();
        ready_value = counter;

        while (!test_verify_requested()) {
                check_copies(counter, &stack_copy);
                check(getpid() == test_pid, "getpid() is %d, the program started as %d", (int) getpid(),
                      (int) test_pid);
                struct timespec now;
                clock_gettime(CLOCK_MONOTONIC, &now);
                check(now.tv_sec > last.tv_sec || (now.tv_sec == last.tv_sec && now.tv_nsec >= last.tv_nsec),
                      "CLOCK_MONOTONIC went back");
                last = now;

                counter++;
                bss_copy = counter;
                data_copy = counter ^ KEY;
                tls_copy = counter;
                *heap_copy = counter;
                map_copy[0] = counter;
                map_copy[511] = mix64(counter);
                stack_copy = counter;
                char line[32];
                int n = snprintf(line, sizeof line, "%llu\n", (unsigned long long) counter);
                write_all(logfd, line, (size_t) n, LOG_FILE);
                test_heartbeat();
                test_msleep(1);
        }
        check_copies(counter, &stack_copy);
        check(counter > ready_value, "the counter did not move after start");
        verify_log(counter);
        pass();
}
