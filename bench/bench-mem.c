/* Benchmark workload: holds SIZE MiB of memory with given contents and
 * stamps the time every millisecond, so a driver can see how long the
 * program was stopped (the pause) and when a restarted program runs again.
 *
 *   bench-mem SIZE_MIB random|text|zeros|untouched HEARTBEAT_FILE
 *
 * HEARTBEAT_FILE (4 KiB, shared mapping) holds struct heartbeat: the driver
 * reads `ready`, `stamp_ns` (CLOCK_REALTIME of the last tick) and
 * `max_gap_ns` (longest time between two ticks since the last reset, which
 * the driver requests by writing reset=1), `checksum` (of the whole memory,
 * computed after filling it). Writing verify=1 asks the program to compute
 * the checksum again into `verified` and set verify=2: the driver's proof
 * that a restarted program has every byte back. */

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

struct heartbeat {
        volatile uint64_t ready;
        volatile uint64_t stamp_ns;
        volatile uint64_t max_gap_ns;
        volatile uint64_t reset;
        volatile uint64_t checksum;
        volatile uint64_t verify;
        volatile uint64_t verified;
};

static uint64_t now_ns(clockid_t c) {
        struct timespec ts;
        clock_gettime(c, &ts);
        return (uint64_t) ts.tv_sec * 1000000000ull + (uint64_t) ts.tv_nsec;
}

static uint64_t xorshift(uint64_t *s) {
        uint64_t x = *s;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        return *s = x;
}

/* Repeating words with a random word every few KiB: compressible, not trivially. */
static void fill_text(uint8_t *p, size_t n, uint64_t *seed) {
        static const char *words[] = { "lorem ", "ipsum ", "dolor ", "sit ", "amet ", "consectetur ",
                                       "adipiscing ", "elit ", "sed ", "do ", "eiusmod ", "tempor " };
        size_t o = 0, next_random = 2048;
        while (o < n) {
                char buf[24];
                const char *w;
                if (o >= next_random) {
                        uint64_t r = xorshift(seed);
                        snprintf(buf, sizeof buf, "%08llx ", (unsigned long long) (r & 0xffffffffull));
                        w = buf;
                        next_random = o + 2048 + (r >> 40) % 4096;
                } else
                        w = words[xorshift(seed) % 12];
                size_t l = strlen(w);
                if (l > n - o)
                        l = n - o;
                memcpy(p + o, w, l);
                o += l;
        }
}

/* Every 8-byte word, position-weighted: a page moved, lost or zeroed shows.
 * mem NULL: the checksum of zeros, without touching (untouched memory). */
static uint64_t checksum(const uint8_t *mem, size_t size) {
        const uint64_t *w = (const uint64_t *) mem;
        uint64_t sum = 0;
        for (size_t i = 0; i < size / 8; i++)
                sum += ((w ? w[i] : 0) ^ i) * 0x9e3779b97f4a7c15ull + (sum >> 29);
        return sum;
}

static struct heartbeat *hb;

static void *stamper(void *arg) {
        uint64_t last = now_ns(CLOCK_MONOTONIC);
        for (;;) {
                struct timespec ts = { 0, 1000000 };
                while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
                        ;
                uint64_t t = now_ns(CLOCK_MONOTONIC);
                if (hb->reset) {
                        hb->max_gap_ns = 0;
                        hb->reset = 0;
                } else if (t - last > hb->max_gap_ns)
                        hb->max_gap_ns = t - last;
                last = t;
                hb->stamp_ns = now_ns(CLOCK_REALTIME);
        }
        return NULL;
}

int main(int argc, char **argv) {
        if (argc != 4) {
                fprintf(stderr, "usage: bench-mem SIZE_MIB random|text|zeros|untouched HEARTBEAT_FILE\n");
                return 2;
        }
        size_t size = (size_t) strtoull(argv[1], NULL, 10) << 20;
        const char *kind = argv[2];
        int fd = open(argv[3], O_RDWR | O_CREAT, 0600);
        if (fd < 0 || ftruncate(fd, 4096) < 0) {
                perror(argv[3]);
                return 1;
        }
        hb = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        close(fd);
        if (hb == MAP_FAILED) {
                perror("mmap");
                return 1;
        }
        uint8_t *mem = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (mem == MAP_FAILED) {
                perror("mmap");
                return 1;
        }
        uint64_t seed = 0x9e3779b97f4a7c15ull;
        if (!strcmp(kind, "random")) {
                for (size_t i = 0; i < size / 8; i++)
                        ((uint64_t *) mem)[i] = xorshift(&seed);
        } else if (!strcmp(kind, "text"))
                fill_text(mem, size, &seed);
        else if (!strcmp(kind, "zeros"))
                memset(mem, 0, size);
        else if (strcmp(kind, "untouched")) {
                fprintf(stderr, "unknown contents %s\n", kind);
                return 2;
        }
        hb->checksum = checksum(strcmp(kind, "untouched") ? mem : NULL, size);
        pthread_t t;
        pthread_create(&t, NULL, stamper, NULL);
        hb->stamp_ns = now_ns(CLOCK_REALTIME);
        hb->ready = 1;
        for (;;) {
                struct timespec ts = { 0, 2000000 };
                nanosleep(&ts, NULL);
                if (hb->verify == 1) {
                        hb->verified = checksum(mem, size);
                        hb->verify = 2;
                }
        }
}
