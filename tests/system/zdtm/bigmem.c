/* bigmem: a large anonymous mapping (1 GiB by default) rewritten forever,
 * one chunk per step, with a pattern derived from a seed, the page number
 * and the sweep number: every page is verified just before it is rewritten,
 * so each sweep checks the whole mapping as the last restart left it.
 *
 * The first sweep writes over never-touched (zero) pages, so the first
 * checkpoint catches a half-filled mapping; later ones a full one. At
 * verification the whole mapping is checked against (sweep, position). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "zdtmtst.h"

#define PAGE 4096u
#define WORDS (PAGE / 8)

static uint64_t seed = 0x0123456789abcdefULL;

static uint64_t page_base(uint64_t page, uint64_t sweep) {
        return mix64(seed ^ (page << 16) ^ (sweep << 48));
}

static void fill_page(uint64_t *w, uint64_t page, uint64_t sweep) {
        uint64_t b = page_base(page, sweep);
        w[0] = page | (sweep << 40);
        for (unsigned j = 1; j < WORDS; j++)
                w[j] = b + j * 0x9e3779b97f4a7c15ULL;
}

/* 0 if the page holds the pattern of sweep (sweep 0: never written, zeros),
 * else the index of the first bad word + 1. */
static unsigned page_bad(const uint64_t *w, uint64_t page, uint64_t sweep) {
        if (sweep == 0) {
                for (unsigned j = 0; j < WORDS; j++)
                        if (w[j])
                                return j + 1;
                return 0;
        }
        if (w[0] != (page | (sweep << 40)))
                return 1;
        uint64_t b = page_base(page, sweep);
        for (unsigned j = 1; j < WORDS; j++)
                if (w[j] != b + j * 0x9e3779b97f4a7c15ULL)
                        return j + 1;
        return 0;
}

static _Noreturn void bad_page(const uint64_t *w, uint64_t page, uint64_t sweep, unsigned bad, const char *when) {
        fail("%s: page %llu (of sweep %llu) differs at word %u: found %#llx (page header %#llx)", when,
             (unsigned long long) page, (unsigned long long) sweep, bad - 1, (unsigned long long) w[bad - 1],
             (unsigned long long) w[0]);
}

int main(int argc, char **argv) {
        test_init(argc, argv);
        uint64_t mib = 1024, chunk_mib = 8;
        for (int i = 1; i + 1 < argc; i += 2) {
                if (!strcmp(argv[i], "--mib"))
                        mib = strtoull(argv[i + 1], NULL, 10);
                else if (!strcmp(argv[i], "--chunk-mib"))
                        chunk_mib = strtoull(argv[i + 1], NULL, 10);
                else if (!strcmp(argv[i], "--seed"))
                        seed = strtoull(argv[i + 1], NULL, 0);
        }
        const uint64_t npages = mib * 1024 * 1024 / PAGE, chunk = chunk_mib * 1024 * 1024 / PAGE;
        uint64_t *mem = mmap(NULL, npages * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        check(mem != MAP_FAILED, "mmap %llu MiB: %s", (unsigned long long) mib, strerror(errno));
        uint64_t sweep = 1, pos = 0, sweeps_since_ready = 0;
        test_ready();

        while (!test_verify_requested()) {
                for (uint64_t n = 0; n < chunk; n++) {
                        uint64_t *w = mem + pos * WORDS;
                        unsigned bad = page_bad(w, pos, sweep - 1);
                        if (bad)
                                bad_page(w, pos, sweep - 1, bad, "before rewriting");
                        fill_page(w, pos, sweep);
                        if (++pos == npages) {
                                pos = 0;
                                sweep++;
                                sweeps_since_ready++;
                                break;
                        }
                }
                test_heartbeat();
        }
        for (uint64_t p = 0; p < npages; p++) {
                uint64_t want = p < pos ? sweep : sweep - 1;
                unsigned bad = page_bad(mem + p * WORDS, p, want);
                if (bad)
                        bad_page(mem + p * WORDS, p, want, bad, "at verification");
        }
        check(sweeps_since_ready >= 1, "not one full sweep done (sweep %llu, page %llu of %llu)",
              (unsigned long long) sweep, (unsigned long long) pos, (unsigned long long) npages);
        fprintf(stderr, "bigmem: %llu MiB verified, sweep %llu, page %llu\n", (unsigned long long) mib,
                (unsigned long long) sweep, (unsigned long long) pos);
        pass();
}
