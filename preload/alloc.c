/* The runtime's memory: never the program's malloc, whose locks a suspended
 * thread may hold. Suspended-safe. */
#include <string.h>
#include <sys/mman.h>

#include "raw-syscall.h"
#include "rt.h"

#define ARENA_RESERVE (1ULL << 30)     /* virtual only: pages cost when touched */
#define MAX_SCRATCH_MAPS 256

struct arena {
        uint8_t *base;
        size_t used;
};

static struct arena arenas[2];
static struct rst_range scratch_maps[MAX_SCRATCH_MAPS];
static uint32_t n_scratch_maps;

static void *raw_mmap(size_t size, int flags) {
        long r = raw_syscall6(SYS_mmap, 0, (long) size, PROT_READ | PROT_WRITE,
                              MAP_PRIVATE | MAP_ANONYMOUS | flags, -1, 0);
        return r < 0 && r > -4096 ? NULL : (void *) r;
}

static void scratch_register(void *p, size_t size) {
        for (uint32_t i = 0; i < n_scratch_maps; i++)
                if (scratch_maps[i].start == 0) {
                        scratch_maps[i] = (struct rst_range) { (uint64_t) p, (uint64_t) p + size };
                        return;
                }
        if (n_scratch_maps < MAX_SCRATCH_MAPS)
                scratch_maps[n_scratch_maps++] = (struct rst_range) { (uint64_t) p, (uint64_t) p + size };
}

void *rt_alloc(enum rt_arena a, size_t size) {
        struct arena *ar = &arenas[a];
        if (!ar->base) {
                ar->base = raw_mmap(ARENA_RESERVE, MAP_NORESERVE);
                if (!ar->base)
                        return NULL;
                if (a == RT_ARENA_SCRATCH)
                        scratch_register(ar->base, ARENA_RESERVE);
        }
        size = ALIGN_UP(size, 16);
        if (size > ARENA_RESERVE - ar->used)
                return NULL;
        void *p = ar->base + ar->used;
        ar->used += size;
        return p;
}

void rt_arena_reset(enum rt_arena a) {
        struct arena *ar = &arenas[a];
        if (!ar->base)
                return;
        /* Give the pages back and make the next checkpoint start from zeros. */
        if (ar->used)
                raw_syscall3(SYS_madvise, (long) ar->base, (long) ALIGN_UP(ar->used, PAGE_SZ), MADV_DONTNEED);
        ar->used = 0;
}

void *rt_map_scratch(size_t size) {
        size = ALIGN_UP(size, PAGE_SZ);
        void *p = raw_mmap(size, 0);
        if (p)
                scratch_register(p, size);
        return p;
}

void rt_unmap_scratch(void *p, size_t size) {
        if (!p)
                return;
        size = ALIGN_UP(size, PAGE_SZ);
        raw_syscall2(SYS_munmap, (long) p, (long) size);
        for (uint32_t i = 0; i < n_scratch_maps; i++)
                if (scratch_maps[i].start == (uint64_t) p) {
                        scratch_maps[i].start = scratch_maps[i].end = 0;
                        break;
                }
}

/* The first part of [start,end) that is not runtime scratch, from *pos on.
 * Scratch mappings may share a VMA with memory we must save (the kernel
 * merges adjacent anonymous mappings), so they are cut out, not skipped. */
bool rt_next_saved_piece(uint64_t *pos, uint64_t end, uint64_t *piece_start, uint64_t *piece_end) {
        uint64_t p = *pos;
        while (p < end) {
                bool moved = false;
                for (uint32_t i = 0; i < n_scratch_maps; i++)
                        if (scratch_maps[i].start <= p && p < scratch_maps[i].end) {
                                p = scratch_maps[i].end;
                                moved = true;
                        }
                if (!moved)
                        break;
        }
        if (p >= end) {
                *pos = end;
                return false;
        }
        uint64_t stop = end;
        for (uint32_t i = 0; i < n_scratch_maps; i++)
                if (scratch_maps[i].start > p && scratch_maps[i].start < stop)
                        stop = scratch_maps[i].start;
        *piece_start = p;
        *piece_end = stop;
        *pos = stop;
        return true;
}

/* After a restart the scratch mappings do not exist: forget them. The state
 * arena was restored with the image and stays. */
void rt_alloc_after_restart(void) {
        arenas[RT_ARENA_SCRATCH].base = NULL;
        arenas[RT_ARENA_SCRATCH].used = 0;
        memset(scratch_maps, 0, sizeof scratch_maps);
        n_scratch_maps = 0;
}
