/* lazymem: memory of every kind a lazy restart (dmtcp_restart --lazy) maps
 * or reads, each page's content a function of its place and its version so
 * that it can be recomputed and compared:
 *
 *   random     incompressible pages (raw blocks: mapped from the image)
 *   text       compressible pages (deflate blocks under gzip: read)
 *   sparse     runs of 20 data pages and single data pages between touched
 *              zero pages (short runs are read, long ones mapped)
 *   untouched  never written: must read as zeros
 *   readonly   random pages made PROT_READ
 *   heap       small malloc()ed blocks (the brk heap)
 *   grown      a malloc()ed buffer that realloc() grows and shrinks (an
 *              mmapped chunk: mremap after a lazy restart must not bring in
 *              the image's bytes)
 *
 * Every step rewrites some pages (a new version: after a lazy restart that
 * is a write over a private mapping of the image) and verifies a slice of
 * all pages; a full sweep checks everything, and verification checks it all
 * once more. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "zdtmtst.h"

#define PAGE 4096u
#define WORDS (PAGE / 8)
#define HEAP_BLOCKS 2048
#define GROWN_MIN (4u << 20)
#define GROWN_MAX (24u << 20)

enum area { RANDOM, TEXT, SPARSE, UNTOUCHED, READONLY, N_AREAS };
static const char *const area_name[N_AREAS] = { "random", "text", "sparse", "untouched", "readonly" };

static uint8_t *area[N_AREAS];
static uint64_t area_pages[N_AREAS];
static uint16_t *version[N_AREAS];
static uint64_t seed = 0x5eed1a2ffeedULL;

static bool sparse_has_data(uint64_t p) {
        return p % 64 < 20 || p % 64 == 40;
}

static bool page_has_data(enum area a, uint64_t p) {
        return a == RANDOM || a == TEXT || a == READONLY || (a == SPARSE && sparse_has_data(p));
}

static void fill(enum area a, uint64_t p, uint16_t ver, uint8_t *out) {
        uint64_t *w = (uint64_t *) out;
        if (!page_has_data(a, p)) {
                memset(out, 0, PAGE);
                return;
        }
        if (a == TEXT) {
                static const char words[] = "the quick brown fox jumps over the lazy dog while the restorer maps pages ";
                int n = snprintf((char *) out, PAGE, "page %llu version %u: ", (unsigned long long) p, ver);
                for (unsigned o = (unsigned) n; o < PAGE; o++)
                        out[o] = (uint8_t) words[(o + p) % (sizeof words - 1)];
                return;
        }
        uint64_t x = mix64(seed ^ ((uint64_t) a << 56) ^ (p << 16) ^ ver) | 1;
        for (unsigned j = 0; j < WORDS; j++) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                w[j] = x;
        }
}

static void check_page(enum area a, uint64_t p, const char *when) {
        uint8_t want[PAGE];
        fill(a, p, version[a][p], want);
        const uint8_t *got = area[a] + p * PAGE;
        if (memcmp(got, want, PAGE)) {
                unsigned o = 0;
                while (got[o] == want[o])
                        o++;
                fail("%s: %s page %llu (version %u) differs at byte %u: %#x, expected %#x", when, area_name[a],
                     (unsigned long long) p, version[a][p], o, got[o], want[o]);
        }
}

/* Heap blocks: block i holds bytes of mix64(i, its version). */
static uint8_t *heap[HEAP_BLOCKS];
static uint32_t heap_ver[HEAP_BLOCKS];

static size_t heap_len(unsigned i) {
        return 512 + (size_t) (mix64(i) % 2560);
}

static uint8_t heap_byte(unsigned i, size_t o) {
        return (uint8_t) (mix64(((uint64_t) i << 32) ^ heap_ver[i]) >> (8 * (o % 8))) ^ (uint8_t) o;
}

static void heap_fill(unsigned i) {
        for (size_t o = 0; o < heap_len(i); o++)
                heap[i][o] = heap_byte(i, o);
}

static void heap_check(unsigned i, const char *when) {
        for (size_t o = 0; o < heap_len(i); o++)
                check(heap[i][o] == heap_byte(i, o), "%s: heap block %u (version %u) differs at byte %zu", when, i,
                      heap_ver[i], o);
}

/* The grown buffer: word k holds mix64(k), whatever its size. */
static uint64_t *grown;
static size_t grown_len;

static void grown_check(size_t from, size_t to, const char *when) {
        for (size_t k = from; k < to / 8; k++)
                check(grown[k] == mix64(k ^ seed), "%s: the realloc()ed buffer (%zu bytes) differs at word %zu", when,
                      grown_len, k);
}

static void grown_resize(size_t len) {
        uint64_t *n = realloc(grown, len);
        check(n != NULL, "realloc to %zu bytes failed", len);
        grown = n;
        size_t keep = grown_len < len ? grown_len : len;
        grown_check(0, keep, "after realloc");
        for (size_t k = keep / 8; k < len / 8; k++)
                grown[k] = mix64(k ^ seed);
        grown_len = len;
}

int main(int argc, char **argv) {
        test_init(argc, argv);
        uint64_t mib = 160;
        for (int i = 1; i + 1 < argc; i += 2)
                if (!strcmp(argv[i], "--mib"))
                        mib = strtoull(argv[i + 1], NULL, 10);
        uint64_t pages = mib * 256;
        area_pages[RANDOM] = pages / 2;
        area_pages[TEXT] = pages / 4;
        area_pages[SPARSE] = pages / 8;
        area_pages[UNTOUCHED] = pages / 8;
        area_pages[READONLY] = 1024;
        for (int a = 0; a < N_AREAS; a++) {
                area[a] = mmap(NULL, area_pages[a] * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
                check(area[a] != MAP_FAILED, "mmap %s: %s", area_name[a], strerror(errno));
                version[a] = calloc(area_pages[a], sizeof *version[a]);
                check(version[a] != NULL, "calloc");
                if (a != UNTOUCHED)
                        for (uint64_t p = 0; p < area_pages[a]; p++)
                                fill((enum area) a, p, 0, area[a] + p * PAGE);
        }
        check(mprotect(area[READONLY], area_pages[READONLY] * PAGE, PROT_READ) == 0, "mprotect: %s", strerror(errno));
        for (unsigned i = 0; i < HEAP_BLOCKS; i++) {
                heap[i] = malloc(heap_len(i));
                check(heap[i] != NULL, "malloc");
                heap_fill(i);
        }
        grown_resize(GROWN_MIN);
        test_ready();

        uint64_t step = 0, cursor = 0, sweeps = 0, total = 0;
        for (int a = 0; a < N_AREAS; a++)
                total += area_pages[a];
        const uint64_t per_step = total / 16 + 1;
        while (!test_verify_requested()) {
                step++;
                /* Rewrite: pages of the writable data areas, heap blocks. */
                for (unsigned k = 0; k < 64; k++) {
                        uint64_t r = mix64(step * 64 + k);
                        enum area a = (enum area) (r % 3);
                        uint64_t p = (r >> 8) % area_pages[a];
                        if (!page_has_data(a, p))
                                continue;
                        check_page(a, p, "before rewriting");
                        version[a][p]++;
                        fill(a, p, version[a][p], area[a] + p * PAGE);
                        unsigned h = (unsigned) ((r >> 40) % HEAP_BLOCKS);
                        heap_check(h, "before rewriting");
                        heap_ver[h]++;
                        heap_fill(h);
                }
                if (step % 4 == 0)
                        grown_resize(grown_len >= GROWN_MAX ? GROWN_MIN : grown_len + (4u << 20) + PAGE);
                /* Verify a slice of everything. */
                for (uint64_t n = 0; n < per_step; n++, cursor++) {
                        if (cursor == total) {
                                cursor = 0;
                                sweeps++;
                        }
                        uint64_t p = cursor;
                        int a = 0;
                        while (p >= area_pages[a])
                                p -= area_pages[a++];
                        check_page((enum area) a, p, "while running");
                }
                for (unsigned i = 0; i < HEAP_BLOCKS; i += 16)
                        heap_check((i + (unsigned) step) % HEAP_BLOCKS, "while running");
                test_heartbeat();
                test_msleep(5);
        }
        for (int a = 0; a < N_AREAS; a++)
                for (uint64_t p = 0; p < area_pages[a]; p++)
                        check_page((enum area) a, p, "at verification");
        for (unsigned i = 0; i < HEAP_BLOCKS; i++)
                heap_check(i, "at verification");
        grown_check(0, grown_len, "at verification");
        check(sweeps >= 1, "not one full sweep done (step %llu)", (unsigned long long) step);
        fprintf(stderr, "lazymem: %llu MiB verified after %llu steps, %llu sweeps\n", (unsigned long long) mib,
                (unsigned long long) step, (unsigned long long) sweeps);
        pass();
}
