#include "addr.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "macro.h"

#define LOW_LIMIT  0x100000000ull           /* keep away from low addresses */
#define HIGH_LIMIT 0x7ff000000000ull        /* below the stack area of 47-bit spaces */
#define HUGE 0x200000ull

int addr_add(struct addr_map *m, uint64_t start, uint64_t end) {
        if (m->n == m->cap) {
                size_t ncap = m->cap ? m->cap * 2 : 256;
                struct plan_range *n = realloc(m->r, ncap * sizeof *n);
                if (!n)
                        return -ENOMEM;
                m->r = n;
                m->cap = ncap;
        }
        m->r[m->n++] = (struct plan_range) { start, end };
        return 0;
}

int addr_add_self(struct addr_map *m) {
        FILE *f = fopen("/proc/self/maps", "re");
        if (!f)
                return -errno;
        char line[4096];
        int r = 0;
        while (fgets(line, sizeof line, f)) {
                unsigned long long s, e;
                if (sscanf(line, "%llx-%llx", &s, &e) == 2 && (r = addr_add(m, s, e)) < 0)
                        break;
        }
        fclose(f);
        return r;
}

static bool busy(const struct addr_map *m, uint64_t start, uint64_t end) {
        for (size_t i = 0; i < m->n; i++)
                if (m->r[i].start < end && start < m->r[i].end)
                        return true;
        return false;
}

/* Lowest end of a busy range above addr that overlaps [addr, addr+size). */
static uint64_t next_free_after(const struct addr_map *m, uint64_t addr, uint64_t size) {
        uint64_t next = 0;
        for (size_t i = 0; i < m->n; i++)
                if (m->r[i].start < addr + size && addr < m->r[i].end && m->r[i].end > next)
                        next = m->r[i].end;
        return next;
}

uint64_t addr_map_free(struct addr_map *m, uint64_t size, uint64_t want, int flags) {
        size = ALIGN_UP(size, PAGE_SZ);
        uint64_t addr = m->next_hint ? m->next_hint : 0x200000000000ull;
        for (int round = 0; round < 2; round++) {
                while (addr + size <= HIGH_LIMIT) {
                        uint64_t a = want ? ALIGN_UP(addr, HUGE) + (want % HUGE) : ALIGN_UP(addr, PAGE_SZ);
                        if (!busy(m, a, a + size)) {
                                void *p = mmap((void *) a, size, PROT_READ | PROT_WRITE,
                                               MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE | flags, -1, 0);
                                if (p == (void *) a) {
                                        addr_add(m, a, a + size);
                                        m->next_hint = ALIGN_UP(a + size + PAGE_SZ, HUGE);
                                        return a;
                                }
                                if (p != MAP_FAILED)
                                        munmap(p, size);
                                /* Taken by something we did not know about. */
                                addr_add(m, a, a + size);
                                continue;
                        }
                        uint64_t n = next_free_after(m, a, size);
                        addr = n > a ? n : a + PAGE_SZ;
                }
                addr = LOW_LIMIT;
        }
        return 0;
}

void addr_free(struct addr_map *m) {
        free(m->r);
        memset(m, 0, sizeof *m);
}
