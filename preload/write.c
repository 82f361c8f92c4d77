/* The image writer (format: common/img.h, docs/image-format.md).
 *
 * Runs either in the snapshot child of a copy-on-write checkpoint or in the
 * checkpoint thread while the program is stopped; in both, other code may
 * hold libc locks, so this file uses raw system calls, the runtime's arenas,
 * raw worker threads and libdeflate with our own allocator. Suspended-safe.
 *
 * Pipeline: the memory to save is cut into work items (windows of at most
 * 1 MiB of populated pages, in address order). Worker threads take items in
 * turn; for each they drop all-zero pages, cut the rest into runs, and store
 * each run raw or deflated (a 4 KiB sample decides cheaply whether deflate is
 * worth it, so random data costs no compression time), with its crc32. The
 * calling thread writes finished items strictly in order: raw blocks on page
 * boundaries (so a lazy restart can map them), deflate blocks packed, in
 * large sequential writes, starting writeback early with sync_file_range.
 * Metadata and finally the header follow; then fdatasync. */
#include <fcntl.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/utsname.h>
#include <libdeflate.h>

#include "raw-syscall.h"
#include "rawthread.h"
#include "rt.h"
#include "util.h"
#include "write.h"

#define WINDOW (1u << 20)
#define SLOT_MAX_BLOCKS 264
#define SYNC_EVERY (64ull << 20)
#define STAGE (4u << 20)
#define DIRECT_MIN (64ull << 20)     /* less data: written through the page cache, which keeps it warm */
#define SAMPLE 4096u
#define DEFLATE_LEVEL 1

/* PAGEMAP_SCAN (Linux 6.7), defined here for older headers. */
struct wr_pm_scan_arg {
        uint64_t size, flags, start, end, walk_end, vec, vec_len, max_pages;
        uint64_t category_inverted, category_mask, category_anyof_mask, return_mask;
};
struct wr_page_region {
        uint64_t start, end, categories;
};
#define WR_PAGEMAP_SCAN _IOWR('f', 16, struct wr_pm_scan_arg)
#define PAGE_IS_FILE (1u << 2)
#define PAGE_IS_PRESENT (1u << 3)
#define PAGE_IS_SWAPPED (1u << 4)
#define PAGE_IS_PFNZERO (1u << 5)
#define PAGE_IS_GUARD (1u << 8)

#define PM_PRESENT (1ULL << 63)
#define PM_SWAPPED (1ULL << 62)
#define PM_FILE (1ULL << 61)
#define PM_GUARD (1ULL << 58)

struct wr_item {
        uint32_t target;                /* IMG_BT_MEMORY / IMG_BT_FILE / IMG_BT_SHM */
        uint32_t index;                 /* region, file or shared memory object */
        uint64_t start, end;
        const uint8_t *src;             /* IMG_BT_SHM: the bytes of [start, end) */
        bool known;                     /* every page in [start,end) is wanted (from PAGEMAP_SCAN) */
        bool guard;                     /* a guard range: record, never read */
};

struct wr_out {
        struct img_block b;
        const uint8_t *data;
};

struct wr_slot {
        _Atomic uint32_t free_for;      /* item this slot may be filled for */
        _Atomic uint32_t ready_for;     /* item + 1 once filled */
        int err;
        uint32_t n;
        struct wr_out blocks[SLOT_MAX_BLOCKS];
        uint8_t *out;
        size_t out_cap, out_used;
        uint8_t *mem;                   /* WINDOW bytes: the item's memory read through mem_fd */
        size_t mem_ready;               /* how much of mem is populated */
};

struct wr_worker {
        struct wr_ctx *w;
        struct rt_rawthread thread;
        struct libdeflate_compressor *z;
        uint8_t *sample_out;
        uint64_t pagemap[WINDOW / PAGE_SZ];
};

struct wr_ctx {
        const struct wr_request *req;
        int fd, pagemap_fd;
        int mem_fd;                     /* /proc/self/mem in the snapshot child, else -1 */
        struct wr_item *items;
        uint32_t n_items, cap_items;
        _Atomic uint32_t next_item;
        _Atomic int failed;
        struct wr_slot *slots;
        uint32_t n_slots;
        struct img_block *blocks;
        size_t n_blocks, cap_blocks;
        uint64_t off, synced, mem_bytes;
        /* Direct output (see out_put): bytes not yet written, from file
         * offset stage_off (page aligned) on. */
        bool direct, direct_used;
        uint8_t *stage;
        size_t stage_len;
        uint64_t stage_off;
        uint64_t usec_write, usec_wait;          /* DMTCP_TRACE: where the writer's time went */
        uint64_t vol_start, vol_end;            /* the region of the stack we run on: it changes */
        bool compressed;
        char err[256];
};

/* --- libdeflate's allocator: the snapshot child must not call malloc (a
 * frozen thread of the program may hold its lock), so its compressors are
 * mapped and unmapped directly. Only the writing thread allocates. */
struct wr_alloc_head {
        size_t len;
        uint8_t pad[56];
};

static void *wr_deflate_alloc(size_t n) {
        size_t len = ALIGN_UP(n + sizeof(struct wr_alloc_head), PAGE_SZ);
        struct wr_alloc_head *h = rt_map_scratch(len);
        if (!h)
                return NULL;
        h->len = len;
        return h + 1;
}

static void wr_deflate_free(void *p) {
        if (p) {
                struct wr_alloc_head *h = (struct wr_alloc_head *) p - 1;
                rt_unmap_scratch(h, h->len);
        }
}

static bool page_is_zero(const uint8_t *p) {
        const uint64_t *q = (const uint64_t *) p;
        for (size_t i = 0; i < PAGE_SZ / 8; i += 64) {
                uint64_t acc = 0;
                for (size_t k = 0; k < 64; k++)
                        acc |= q[i + k];
                if (acc)
                        return false;
        }
        return true;
}

static int raw_pwrite_all(int fd, const void *buf, size_t len, uint64_t off) {
        const uint8_t *p = buf;
        while (len) {
                long n = raw_syscall4(SYS_pwrite64, fd, (long) p, (long) MIN(len, (size_t) 1 << 30), (long) off);
                if (n == -EINTR)
                        continue;
                if (n < 0)
                        return (int) n;
                if (n == 0)
                        return -EIO;
                p += n;
                off += (uint64_t) n;
                len -= (size_t) n;
        }
        return 0;
}

static const struct rt_region *item_region(const struct wr_ctx *w, const struct wr_item *it) {
        return &w->req->cap->regions[it->index];
}

/* Where the bytes of an address in this region can be read: its copy made
 * during the pause, or the memory itself. */
static const uint8_t *region_src(const struct rt_region *rg, uint64_t addr) {
        return rg->copy ? (const uint8_t *) rg->copy + (addr - rg->r.start) : (const uint8_t *) addr;
}

static void slot_add(struct wr_slot *s, const struct img_block *b, const uint8_t *data) {
        if (s->n >= SLOT_MAX_BLOCKS) {
                s->err = -E2BIG;
                return;
        }
        s->blocks[s->n++] = (struct wr_out) { *b, data };
}

/* Store one run of bytes: deflated if it pays, else raw. */
static void emit_run(struct wr_ctx *w, struct wr_worker *wk, struct wr_slot *s, const struct wr_item *it,
                     const uint8_t *src, uint64_t addr, uint32_t len) {
        struct img_block b = { .addr = addr, .ulen = len, .target = (uint16_t) it->target, .index = it->index };
        /* Our own stack changes while we write it: work from a copy, so the
         * stored bytes are those the crc was computed over, and the
         * compressor, which reads its input more than once, sees one
         * version of it (else its output may not even decompress). */
        if (it->target == IMG_BT_MEMORY && addr < w->vol_end && addr + len > w->vol_start) {
                if (!s->out || s->out_cap - s->out_used < len) {
                        s->err = -ENOBUFS;
                        return;
                }
                uint8_t *copy = s->out + s->out_used;
                memcpy(copy, src, len);
                s->out_used += ALIGN_UP((size_t) len, 64);
                src = copy;
        }
        if (w->req->gzip && wk->z) {
                /* Deflate is kept only if it saves a sixteenth; a sample that
                 * does not save a tenth (or does not fit) says not to try. */
                bool try_it = len <= 2 * SAMPLE ||
                              libdeflate_deflate_compress(wk->z, src + ALIGN_DOWN((size_t) len / 2, PAGE_SZ), SAMPLE,
                                                          wk->sample_out, SAMPLE - SAMPLE / 10) != 0;
                size_t room = len - len / 16;
                if (try_it && s->out_cap - s->out_used >= room) {
                        uint8_t *dst = s->out + s->out_used;
                        size_t clen = libdeflate_deflate_compress(wk->z, src, len, dst, room);
                        if (clen) {
                                b.enc = IMG_ENC_DEFLATE;
                                b.clen = (uint32_t) clen;
                                b.crc = img_crc32(0, dst, clen);
                                s->out_used += ALIGN_UP(clen, 64);
                                slot_add(s, &b, dst);
                                return;
                        }
                }
        }
        b.enc = IMG_ENC_RAW;
        b.clen = len;
        b.crc = img_crc32(0, src, len);
        slot_add(s, &b, src);
}

enum page_verdict { PV_SKIP, PV_DATA, PV_ZERO, PV_GUARD };

/* What to do with page q of an item. A zero page needs no data: fresh
 * anonymous memory is zero already, while over a file mapping zeros must be
 * written back explicitly. */
static enum page_verdict classify(const struct wr_ctx *w, const struct wr_worker *wk, const struct rt_region *rg,
                                  const struct wr_item *it, const uint8_t *view, bool need_pagemap, size_t q) {
        if (need_pagemap) {
                uint64_t e = wk->pagemap[q];
                if (e & PM_GUARD)
                        return PV_GUARD;
                bool want = rg->r.kind == IMG_RK_FILE_PRIVATE ? ((e & PM_PRESENT) && !(e & PM_FILE)) || (e & PM_SWAPPED)
                                                               : (e & (PM_PRESENT | PM_SWAPPED)) != 0;
                if (!want)
                        return PV_SKIP;
        }
        if (page_is_zero(view ? view + q * PAGE_SZ : region_src(rg, it->start + q * PAGE_SZ)))
                return rg->r.kind == IMG_RK_FILE_PRIVATE || rg->r.kind == IMG_RK_FILE_SHARED ? PV_ZERO : PV_SKIP;
        return PV_DATA;
}

/* The snapshot child runs in an address space fork just made: on virtual
 * machines that shadow page tables (this project's CI among them), its first
 * touch of each page costs a trap to the hypervisor, several microseconds,
 * and reading memory in place ran at under 1 GB/s. The kernel reads
 * /proc/self/mem through its own mapping of the pages instead, several
 * times faster there and one extra copy elsewhere. So a window whose pages
 * are all wanted (known from PAGEMAP_SCAN, or saved in full) is read into
 * the slot's buffer in one pread; NULL: read in place (no mem_fd, pages to
 * pick from /proc/self/pagemap, a region copied during the pause, or a
 * read that failed). */
static const uint8_t *read_item(const struct wr_ctx *w, const struct rt_region *rg, const struct wr_item *it,
                                bool need_pagemap, struct wr_slot *s) {
        size_t len = (size_t) (it->end - it->start);
        if (w->mem_fd < 0 || !s->mem || rg->copy || need_pagemap || len > WINDOW)
                return NULL;
        if (s->mem_ready < len) {
                /* Faulting in a whole range at once costs a fraction of
                 * faulting it page by page in the read. Only as much as the
                 * items have needed: a small image needs little. */
                raw_syscall3(SYS_madvise, (long) (s->mem + s->mem_ready), (long) (len - s->mem_ready),
                             MADV_POPULATE_WRITE);
                s->mem_ready = len;
        }
        long n = raw_syscall4(SYS_pread64, w->mem_fd, (long) s->mem, (long) len, (long) it->start);
        return n == (long) len ? s->mem : NULL;
}

static void process_item(struct wr_ctx *w, struct wr_worker *wk, const struct wr_item *it, struct wr_slot *s) {
        s->n = 0;
        s->out_used = 0;
        s->err = 0;
        if (it->target == IMG_BT_FILE) {
                const struct rt_file *f = &w->req->cap->files[it->index];
                emit_run(w, wk, s, it, (const uint8_t *) f->content + it->start, it->start,
                         (uint32_t) (it->end - it->start));
                return;
        }
        if (it->target == IMG_BT_SHM) {
                /* A copy of shared memory: its zero pages are holes. */
                size_t npages = (size_t) ((it->end - it->start) / PAGE_SZ);
                for (size_t p = 0; p < npages && !s->err;) {
                        bool zero = page_is_zero(it->src + p * PAGE_SZ);
                        size_t q = p + 1;
                        while (q < npages && page_is_zero(it->src + q * PAGE_SZ) == zero)
                                q++;
                        if (!zero)
                                emit_run(w, wk, s, it, it->src + p * PAGE_SZ, it->start + p * PAGE_SZ,
                                         (uint32_t) ((q - p) * PAGE_SZ));
                        p = q;
                }
                return;
        }
        const struct rt_region *rg = item_region(w, it);
        if (it->guard) {
                struct img_block b = { .addr = it->start, .ulen = (uint32_t) (it->end - it->start),
                                       .enc = IMG_ENC_GUARD, .target = IMG_BT_MEMORY, .index = it->index };
                slot_add(s, &b, NULL);
                return;
        }
        size_t npages = (size_t) ((it->end - it->start) / PAGE_SZ);
        bool need_pagemap = !it->known && !rg->copy && !(rg->r.flags & IMG_RF_FULL) &&
                            rg->r.kind != IMG_RK_FILE_SHARED;
        if (need_pagemap) {
                long r = raw_syscall4(SYS_pread64, w->pagemap_fd, (long) wk->pagemap, (long) (npages * 8),
                                      (long) (it->start / PAGE_SZ * 8));
                if (r != (long) (npages * 8)) {
                        s->err = r < 0 ? (int) r : -EIO;
                        return;
                }
        }
        const uint8_t *view = read_item(w, rg, it, need_pagemap, s);
        size_t p = 0;
        while (p < npages) {
                enum page_verdict v = classify(w, wk, rg, it, view, need_pagemap, p);
                size_t q = p + 1;
                while (q < npages && classify(w, wk, rg, it, view, need_pagemap, q) == v)
                        q++;
                uint64_t addr = it->start + p * PAGE_SZ;
                uint32_t len = (uint32_t) ((q - p) * PAGE_SZ);
                if (v == PV_DATA)
                        emit_run(w, wk, s, it, view ? view + p * PAGE_SZ : region_src(rg, addr), addr, len);
                else if (v == PV_ZERO || v == PV_GUARD) {
                        struct img_block b = { .addr = addr, .ulen = len, .enc = v == PV_ZERO ? IMG_ENC_ZERO : IMG_ENC_GUARD,
                                               .target = IMG_BT_MEMORY, .index = it->index };
                        slot_add(s, &b, NULL);
                }
                if (s->err)
                        return;
                p = q;
        }
}

static void wake_all_slots(struct wr_ctx *w) {
        for (uint32_t i = 0; i < w->n_slots; i++) {
                raw_futex_wake((uint32_t *) &w->slots[i].free_for, INT32_MAX);
                raw_futex_wake((uint32_t *) &w->slots[i].ready_for, INT32_MAX);
        }
}

static void worker_main(void *arg) {
        struct wr_worker *wk = arg;
        struct wr_ctx *w = wk->w;
        for (;;) {
                uint32_t i = atomic_fetch_add(&w->next_item, 1);
                if (i >= w->n_items || atomic_load(&w->failed))
                        break;
                struct wr_slot *s = &w->slots[i % w->n_slots];
                for (;;) {
                        uint32_t f = atomic_load(&s->free_for);
                        if (f == i || atomic_load(&w->failed))
                                break;
                        raw_futex_wait((uint32_t *) &s->free_for, f, NULL);
                }
                if (atomic_load(&w->failed))
                        break;
                process_item(w, wk, &w->items[i], s);
                atomic_store(&s->ready_for, i + 1);
                raw_futex_wake((uint32_t *) &s->ready_for, INT32_MAX);
        }
}

static int add_item(struct wr_ctx *w, struct wr_item it) {
        if (w->n_items == w->cap_items) {
                uint32_t ncap = w->cap_items ? w->cap_items * 2 : 4096;
                struct wr_item *n = rt_alloc(RT_ARENA_SCRATCH, (size_t) ncap * sizeof *n);
                if (!n)
                        return -ENOMEM;
                if (w->n_items)
                        memcpy(n, w->items, (size_t) w->n_items * sizeof *n);
                w->items = n;
                w->cap_items = ncap;
        }
        w->items[w->n_items++] = it;
        return 0;
}

/* Cut [start,end) into items that never cross a WINDOW boundary. src: the
 * bytes of [start, end), if they are not at the address start. */
static int add_range_src(struct wr_ctx *w, uint32_t target, uint32_t index, uint64_t start, uint64_t end,
                         const uint8_t *src, bool known, bool guard) {
        const uint64_t first = start;
        while (start < end) {
                uint64_t stop = MIN(end, ALIGN_DOWN(start, (uint64_t) WINDOW) + WINDOW);
                int r = add_item(w, (struct wr_item) { target, index, start, stop, src ? src + (start - first) : NULL,
                                                       known, guard });
                if (r < 0)
                        return r;
                start = stop;
        }
        return 0;
}

static int add_range(struct wr_ctx *w, uint32_t target, uint32_t index, uint64_t start, uint64_t end, bool known,
                     bool guard) {
        return add_range_src(w, target, index, start, end, NULL, known, guard);
}

static bool pagemap_scan_works = true;

/* Populated pages of a region, from PAGEMAP_SCAN. Returns -ENOTTY when the
 * kernel lacks it (then workers read /proc/self/pagemap per window). */
static int scan_region(struct wr_ctx *w, uint32_t idx, const struct rt_region *rg) {
        if (!pagemap_scan_works)
                return -ENOTTY;
        struct wr_page_region vec[512];
        uint64_t start = rg->r.start;
        while (start < rg->r.end) {
                struct wr_pm_scan_arg a = {
                        .size = sizeof a, .start = start, .end = rg->r.end,
                        .vec = (uint64_t) vec, .vec_len = ARRAY_SIZE(vec),
                        .category_anyof_mask = PAGE_IS_PRESENT | PAGE_IS_SWAPPED | PAGE_IS_GUARD,
                        .return_mask = PAGE_IS_PRESENT | PAGE_IS_SWAPPED | PAGE_IS_FILE | PAGE_IS_PFNZERO | PAGE_IS_GUARD,
                };
                long n = raw_syscall3(SYS_ioctl, w->pagemap_fd, WR_PAGEMAP_SCAN, (long) &a);
                if (n < 0) {
                        if (n == -EINVAL && a.category_anyof_mask & PAGE_IS_GUARD) {
                                /* Kernel without guard regions: ask again without. */
                                pagemap_scan_works = true;
                        }
                        if (start == rg->r.start) {
                                pagemap_scan_works = n != -ENOTTY && n != -EINVAL;
                                return n == -ENOTTY || n == -EINVAL ? -ENOTTY : (int) n;
                        }
                        return (int) n;
                }
                for (long i = 0; i < n; i++) {
                        uint64_t c = vec[i].categories;
                        bool want;
                        if (c & PAGE_IS_GUARD) {
                                int r = add_range(w, IMG_BT_MEMORY, idx, vec[i].start, vec[i].end, true, true);
                                if (r < 0)
                                        return r;
                                continue;
                        }
                        if (c & PAGE_IS_PFNZERO)
                                want = false;   /* the shared zero page: nothing to save */
                        else if (rg->r.kind == IMG_RK_FILE_PRIVATE)
                                want = ((c & PAGE_IS_PRESENT) && !(c & PAGE_IS_FILE)) || (c & PAGE_IS_SWAPPED);
                        else
                                want = true;
                        if (want) {
                                int r = add_range(w, IMG_BT_MEMORY, idx, vec[i].start, vec[i].end, true, false);
                                if (r < 0)
                                        return r;
                        }
                }
                if (a.walk_end <= start || a.walk_end >= rg->r.end)
                        break;
                start = a.walk_end;
        }
        return 0;
}

/* How much of a region may be read: file pages past EOF raise SIGBUS. */
static uint64_t region_content_end(const struct wr_request *req, const struct rt_region *rg) {
        if (rg->r.kind != IMG_RK_FILE_SHARED && rg->r.kind != IMG_RK_FILE_PRIVATE)
                return rg->r.end;
        uint64_t size = req->cap->files[rg->r.file].f.size;
        if (size <= rg->r.pgoff)
                return rg->r.start;
        return MIN(rg->r.end, rg->r.start + ALIGN_UP(size - rg->r.pgoff, PAGE_SZ));
}

static int build_items(struct wr_ctx *w) {
        const struct rt_capture *cap = w->req->cap;
        for (uint32_t i = 0; i < cap->n_regions; i++) {
                const struct rt_region *rg = &cap->regions[i];
                if (rg->r.kind == IMG_RK_VDSO || rg->r.kind == IMG_RK_VVAR || rg->r.kind == IMG_RK_RESERVED ||
                    rg->r.kind == IMG_RK_SHM)
                        continue;
                uint64_t end = region_content_end(w->req, rg);
                bool by_content = rg->copy || (rg->r.flags & IMG_RF_FULL) || rg->r.kind == IMG_RK_FILE_SHARED;
                if (!by_content) {
                        int r = scan_region(w, i, rg);
                        if (r == 0)
                                continue;
                        if (r != -ENOTTY)
                                return r;
                }
                int r = add_range(w, IMG_BT_MEMORY, i, rg->r.start, end, false, false);
                if (r < 0)
                        return r;
        }
        for (uint32_t i = 0; i < cap->n_files; i++) {
                const struct rt_file *f = &cap->files[i];
                if ((f->f.flags & IMG_FF_CONTENT) && f->content && f->f.size) {
                        int r = add_range(w, IMG_BT_FILE, i, 0, f->f.size, true, false);
                        if (r < 0)
                                return r;
                }
        }
        for (uint32_t i = 0; i < cap->n_shms; i++)
                for (uint32_t k = 0; k < cap->shms[i].n_ext; k++) {
                        const struct rt_shm_extent *e = &cap->shms[i].ext[k];
                        int r = add_range_src(w, IMG_BT_SHM, i, e->off, e->off + e->len, e->data, true, false);
                        if (r < 0)
                                return r;
                }
        return 0;
}

/* --- output -----------------------------------------------------------------
 *
 * A large image is written with O_DIRECT: on virtual machines that back
 * guest memory lazily, buffered writes of gigabytes ran at a third of the
 * disk's speed while the program held gigabytes itself, each new page
 * cache page costing the hypervisor a fault (bench/README.md); and the
 * image need not push the program's own files out of the page cache.
 * Direct writes need page-aligned offsets, lengths and buffers: a raw block
 * whose bytes are page aligned (the window buffers, memory read in place)
 * goes straight from there; everything else (deflate blocks, packed; the
 * zero padding before a raw block) is collected in a stage buffer written
 * in whole pages. The unaligned end of the data, the metadata and the
 * header are written through the page cache after O_DIRECT is cleared,
 * into pages no direct write touched. A file system that refuses direct
 * I/O gets the page cache for the rest. */
static void direct_off(struct wr_ctx *w) {
        long fl = raw_syscall2(SYS_fcntl, w->fd, F_GETFL);
        if (fl >= 0)
                raw_syscall3(SYS_fcntl, w->fd, F_SETFL, fl & ~(long) O_DIRECT);
        w->direct = false;
}

static void direct_on(struct wr_ctx *w, uint64_t expected) {
        if (expected < DIRECT_MIN || w->off % PAGE_SZ)
                return;
        long fl = raw_syscall2(SYS_fcntl, w->fd, F_GETFL);
        w->stage = fl >= 0 ? rt_map_scratch(STAGE) : NULL;
        if (!w->stage)
                return;
        if (raw_syscall3(SYS_fcntl, w->fd, F_SETFL, fl | O_DIRECT) < 0) {
                rt_unmap_scratch(w->stage, STAGE);
                w->stage = NULL;
                return;
        }
        w->direct = w->direct_used = true;
        w->stage_off = w->off;
        w->stage_len = 0;
}

/* Write n bytes at off, directly while direct I/O is on; a refusal (EINVAL)
 * turns it off and writes them through the page cache. */
static int direct_write(struct wr_ctx *w, const void *p, size_t n, uint64_t off) {
        int r = raw_pwrite_all(w->fd, p, n, off);
        if (r == -EINVAL && w->direct) {
                direct_off(w);
                r = raw_pwrite_all(w->fd, p, n, off);
        }
        return r;
}

/* Write the stage's whole pages (all of it: the caller knows it is whole
 * pages), keep the rest. */
static int stage_flush(struct wr_ctx *w, bool all) {
        size_t n = all ? w->stage_len : ALIGN_DOWN(w->stage_len, (size_t) PAGE_SZ);
        if (!n)
                return 0;
        int r = direct_write(w, w->stage, n, w->stage_off);
        if (r < 0)
                return r;
        memmove(w->stage, w->stage + n, w->stage_len - n);
        w->stage_len -= n;
        w->stage_off += n;
        return 0;
}

/* Append len bytes (zeros if p is NULL) to the stage. */
static int stage_append(struct wr_ctx *w, const uint8_t *p, size_t len) {
        while (len) {
                if (w->stage_len == STAGE) {
                        int r = stage_flush(w, false);
                        if (r < 0)
                                return r;
                }
                size_t k = MIN(len, STAGE - w->stage_len);
                if (p) {
                        memcpy(w->stage + w->stage_len, p, k);
                        p += k;
                } else
                        memset(w->stage + w->stage_len, 0, k);
                w->stage_len += k;
                len -= k;
        }
        return 0;
}

/* The unaligned rest, through the page cache from now on. */
static int out_finish(struct wr_ctx *w) {
        if (!w->stage)
                return 0;
        direct_off(w);
        int r = stage_flush(w, true);
        rt_unmap_scratch(w->stage, STAGE);
        w->stage = NULL;
        return r;
}

/* Write len bytes at off, which is at or past the end of what was put. */
static int out_put(struct wr_ctx *w, const uint8_t *p, size_t len, uint64_t off) {
        int r;
        if (!w->direct)
                return (r = out_finish(w)) < 0 ? r : raw_pwrite_all(w->fd, p, len, off);
        r = stage_append(w, NULL, (size_t) (off - (w->stage_off + w->stage_len)));
        if (r < 0)
                return r;
        if (off % PAGE_SZ == 0 && len % PAGE_SZ == 0 && (uintptr_t) p % PAGE_SZ == 0) {
                /* The stage ends at off, a page boundary: whole pages. */
                if ((r = stage_flush(w, true)) < 0)
                        return r;
                /* (Through the page cache if the flush found direct I/O refused.) */
                if ((r = direct_write(w, p, len, off)) < 0)
                        return r;
                w->stage_off = off + len;
                return 0;
        }
        return stage_append(w, p, len);
}

static int put_block(struct wr_ctx *w, const struct wr_out *o) {
        struct img_block b = o->b;
        if (b.clen) {
                if (b.enc == IMG_ENC_RAW)
                        w->off = ALIGN_UP(w->off, PAGE_SZ);
                uint64_t t = now_usec(CLOCK_MONOTONIC);
                int r = out_put(w, o->data, b.clen, w->off);
                w->usec_write += now_usec(CLOCK_MONOTONIC) - t;
                if (r < 0)
                        return r;
                b.file_off = w->off;
                w->off += b.clen;
                if (b.enc == IMG_ENC_DEFLATE)
                        w->compressed = true;
        }
        if (b.target != IMG_BT_FILE && (b.enc == IMG_ENC_RAW || b.enc == IMG_ENC_DEFLATE))
                w->mem_bytes += b.ulen;
        if (w->n_blocks == w->cap_blocks) {
                size_t ncap = w->cap_blocks ? w->cap_blocks * 2 : 8192;
                struct img_block *n = rt_alloc(RT_ARENA_SCRATCH, ncap * sizeof *n);
                if (!n)
                        return -ENOMEM;
                if (w->n_blocks)
                        memcpy(n, w->blocks, w->n_blocks * sizeof *n);
                w->blocks = n;
                w->cap_blocks = ncap;
        }
        w->blocks[w->n_blocks++] = b;
        if (!w->direct && w->off - w->synced >= SYNC_EVERY) {
                /* Start writeback now so the final fdatasync has little left. */
                raw_syscall4(SYS_sync_file_range, w->fd, (long) w->synced, (long) (w->off - w->synced),
                             SYNC_FILE_RANGE_WRITE);
                w->synced = w->off;
        }
        return 0;
}

/* --- metadata ----------------------------------------------------------- */

struct meta_buf {
        uint8_t *p;
        size_t len, cap;
        uint32_t n_records;
};

static void *meta_record(struct meta_buf *m, uint32_t type, size_t len) {
        size_t need = sizeof(struct img_record) + ALIGN_UP(len, 8);
        if (need > m->cap - m->len)
                return NULL;
        struct img_record rec = { type, (uint32_t) len };
        memcpy(m->p + m->len, &rec, sizeof rec);
        void *payload = m->p + m->len + sizeof rec;
        memset(payload, 0, ALIGN_UP(len, 8));
        m->len += need;
        m->n_records++;
        return payload;
}

static int meta_struct_str(struct meta_buf *m, uint32_t type, const void *fixed, size_t fixed_len,
                           const char *s1, size_t l1, const char *s2, size_t l2) {
        uint8_t *p = meta_record(m, type, fixed_len + l1 + l2);
        if (!p)
                return -ENOSPC;
        memcpy(p, fixed, fixed_len);
        if (l1)
                memcpy(p + fixed_len, s1, l1);
        if (l2)
                memcpy(p + fixed_len + l1, s2, l2);
        return 0;
}

static int build_meta(struct wr_ctx *w, struct meta_buf *m) {
        const struct wr_request *req = w->req;
        const struct rt_capture *cap = req->cap;
        size_t need = 1 << 16;
        need += cap->auxv_len + strlen(cap->exe) + strlen(cap->cwd);
        need += (size_t) req->n_threads * (sizeof(struct img_thread) + 16);
        for (uint32_t i = 0; i < cap->n_files; i++)
                need += sizeof(struct img_file) + cap->files[i].f.path_len + 24;
        for (uint32_t i = 0; i < cap->n_regions; i++)
                need += sizeof(struct img_region) + cap->regions[i].r.name_len + 24;
        for (uint32_t i = 0; i < cap->n_fds; i++)
                need += sizeof(struct img_fd) + cap->fds[i].d.path_len + 24;
        need += w->n_blocks * sizeof(struct img_block) + cap->n_timers * (sizeof(struct img_timer) + 16);
        need += cap->n_children * (sizeof(struct img_child) + 16);
        for (uint32_t i = 0; i < cap->n_shms; i++)
                need += sizeof(struct img_shm) + cap->shms[i].s.name_len + 24;
        for (uint32_t i = 0; i < cap->n_sysv; i++)
                need += sizeof(struct img_sysv) + cap->sysv[i].s.data_len + 24;
        m->cap = ALIGN_UP(need, PAGE_SZ);
        m->p = rt_map_scratch(m->cap);
        m->len = 0;
        m->n_records = 0;
        if (!m->p)
                return -ENOMEM;

        int r = meta_struct_str(m, IMG_R_PROCESS, &cap->proc, sizeof cap->proc, cap->exe, cap->proc.exe_len, cap->cwd,
                                cap->proc.cwd_len);
        if (r < 0)
                return r;
        if (cap->auxv_len) {
                void *p = meta_record(m, IMG_R_AUXV, cap->auxv_len);
                if (!p)
                        return -ENOSPC;
                memcpy(p, cap->auxv, cap->auxv_len);
        }
        for (uint32_t i = 0; i < req->n_threads; i++)
                if ((r = meta_struct_str(m, IMG_R_THREAD, &req->threads[i], sizeof req->threads[i], NULL, 0, NULL, 0)) < 0)
                        return r;
        for (uint32_t i = 0; i < cap->n_files; i++)
                if ((r = meta_struct_str(m, IMG_R_FILE, &cap->files[i].f, sizeof cap->files[i].f, cap->files[i].path,
                                         cap->files[i].f.path_len, NULL, 0)) < 0)
                        return r;
        for (uint32_t i = 0; i < cap->n_regions; i++)
                if ((r = meta_struct_str(m, IMG_R_REGION, &cap->regions[i].r, sizeof cap->regions[i].r,
                                         cap->regions[i].name, cap->regions[i].r.name_len, NULL, 0)) < 0)
                        return r;
        if (w->n_blocks) {
                void *p = meta_record(m, IMG_R_BLOCKS, w->n_blocks * sizeof(struct img_block));
                if (!p)
                        return -ENOSPC;
                memcpy(p, w->blocks, w->n_blocks * sizeof(struct img_block));
        }
        for (uint32_t i = 0; i < cap->n_fds; i++)
                if ((r = meta_struct_str(m, IMG_R_FD, &cap->fds[i].d, sizeof cap->fds[i].d, cap->fds[i].path,
                                         cap->fds[i].d.path_len, NULL, 0)) < 0)
                        return r;
        void *sa = meta_record(m, IMG_R_SIGACTIONS, sizeof cap->sigactions);
        if (!sa)
                return -ENOSPC;
        memcpy(sa, cap->sigactions, sizeof cap->sigactions);
        for (uint32_t i = 0; i < cap->n_timers; i++)
                if ((r = meta_struct_str(m, IMG_R_TIMER, &cap->timers[i], sizeof cap->timers[i], NULL, 0, NULL, 0)) < 0)
                        return r;
        for (uint32_t i = 0; i < cap->n_children; i++)
                if ((r = meta_struct_str(m, IMG_R_CHILD, &cap->children[i], sizeof cap->children[i], NULL, 0, NULL, 0)) < 0)
                        return r;
        for (uint32_t i = 0; i < cap->n_shms; i++)
                if ((r = meta_struct_str(m, IMG_R_SHM, &cap->shms[i].s, sizeof cap->shms[i].s, cap->shms[i].name,
                                         cap->shms[i].s.name_len, NULL, 0)) < 0)
                        return r;
        for (uint32_t i = 0; i < cap->n_sysv; i++)
                if ((r = meta_struct_str(m, IMG_R_SYSV, &cap->sysv[i].s, sizeof cap->sysv[i].s,
                                         (const char *) cap->sysv[i].data, cap->sysv[i].s.data_len, NULL, 0)) < 0)
                        return r;
        return 0;
}

static uint64_t xcr0(void) {
        uint32_t lo, hi;
        __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
        return ((uint64_t) hi << 32) | lo;
}

static void fill_header(struct wr_ctx *w, struct img_header *h, const struct meta_buf *m, uint64_t meta_off) {
        const struct wr_request *req = w->req;
        memset(h, 0, sizeof *h);
        memcpy(h->magic, IMG_MAGIC, 8);
        h->version = IMG_VERSION;
        h->header_size = IMG_HEADER_SIZE;
        h->arch = IMG_ARCH_X86_64;
        h->page_size = PAGE_SZ;
        h->flags = (w->compressed ? IMG_HF_COMPRESSED : 0) | (rt.cfg.ckpt_libraries ? IMG_HF_LIBS_SAVED : 0);
        h->data_off = IMG_HEADER_SIZE;
        h->data_end = meta_off;
        h->meta_off = meta_off;
        h->meta_len = m->len;
        h->meta_crc = img_crc32(0, m->p, m->len);
        h->n_records = m->n_records;
        h->file_size = meta_off + m->len;
        h->generation = req->generation;
        h->ckpt_time_usec = req->ckpt_time_usec;
        h->uid = (uint32_t) raw_syscall0(SYS_getuid);
        h->gid = (uint32_t) raw_syscall0(SYS_getgid);
        h->pid = (uint32_t) req->pid;
        h->ppid = (uint32_t) req->ppid;
        h->pgid = (uint32_t) req->pgid;
        h->sid = (uint32_t) req->sid;
        h->xcr0 = xcr0();
        h->mem_bytes = w->mem_bytes;
        h->n_members = req->members;
        for (uint32_t i = 0; i < req->cap->n_regions; i++) {
                const struct rt_region *rg = &req->cap->regions[i];
                if (rg->r.kind == IMG_RK_VDSO) {
                        h->vdso_size = (uint32_t) (rg->r.end - rg->r.start);
                        h->vdso_crc = img_crc32(0, (const void *) (uintptr_t) rg->r.start, h->vdso_size);
                }
        }
        struct utsname u;
        if (raw_syscall1(SYS_uname, (long) &u) == 0) {
                strscpy(h->kernel_release, u.release, sizeof h->kernel_release);
                strscpy(h->kernel_build, u.version, sizeof h->kernel_build);
        }
        strscpy(h->comp_id, req->comp_id, sizeof h->comp_id);
        strscpy(h->upid, rt.cfg.upid, sizeof h->upid);
        strscpy(h->program, rt.cfg.program, sizeof h->program);
        strscpy(h->host, host_name(), sizeof h->host);
        h->header_crc = img_header_crc(h);
}

/* ncpus-1 worker threads, plus one worker context (the last) for the
 * writing thread, which works on items while it waits: one thread per CPU. */
static int setup_workers(struct wr_ctx *w, struct wr_worker **out, unsigned *n_out) {
        unsigned ncpu = rt_ncpus();
        unsigned n = ncpu > 1 ? ncpu - 1 : 1;
        struct wr_worker *wks = rt_alloc(RT_ARENA_SCRATCH, (n + 1) * sizeof *wks);
        if (!wks)
                return -ENOMEM;
        memset(wks, 0, (n + 1) * sizeof *wks);
        w->n_slots = 4 * ncpu;
        w->slots = rt_alloc(RT_ARENA_SCRATCH, w->n_slots * sizeof *w->slots);
        if (!w->slots)
                return -ENOMEM;
        memset(w->slots, 0, w->n_slots * sizeof *w->slots);
        size_t out_cap = 2 * WINDOW + 4096;     /* a copy of a volatile window and its deflate */
        for (uint32_t i = 0; i < w->n_slots; i++) {
                atomic_store(&w->slots[i].free_for, i);
                atomic_store(&w->slots[i].ready_for, 0);
                if (out_cap) {
                        w->slots[i].out = rt_map_scratch(out_cap);
                        if (!w->slots[i].out)
                                return -ENOMEM;
                        w->slots[i].out_cap = out_cap;
                }
                if (w->mem_fd >= 0)
                        w->slots[i].mem = rt_map_scratch(WINDOW);
        }
        if (w->req->gzip)
                libdeflate_set_memory_allocator(wr_deflate_alloc, wr_deflate_free);
        for (unsigned i = 0; i <= n; i++) {
                struct wr_worker *wk = &wks[i];
                wk->w = w;
                if (w->req->gzip) {
                        /* Without a compressor, blocks are stored raw. */
                        wk->sample_out = rt_map_scratch(SAMPLE);
                        wk->z = wk->sample_out ? libdeflate_alloc_compressor(DEFLATE_LEVEL) : NULL;
                }
        }
        *out = wks;
        *n_out = n;
        return 0;
}

/* In the checkpoint thread (no copy-on-write) the buffers would otherwise
 * stay mapped after every checkpoint. */
static void teardown_workers(struct wr_ctx *w, struct wr_worker *wks, unsigned n) {
        for (uint32_t i = 0; w->slots && i < w->n_slots; i++) {
                rt_unmap_scratch(w->slots[i].out, w->slots[i].out_cap);
                rt_unmap_scratch(w->slots[i].mem, WINDOW);
        }
        for (unsigned i = 0; wks && i <= n; i++) {
                if (wks[i].z)
                        libdeflate_free_compressor(wks[i].z);
                rt_unmap_scratch(wks[i].sample_out, SAMPLE);
        }
}

int rt_write_image(const struct wr_request *req, struct wr_result *res) {
        struct wr_ctx w = { .req = req, .fd = req->fd, .pagemap_fd = -1, .mem_fd = -1, .off = IMG_HEADER_SIZE,
                            .synced = 0 };
        memset(res, 0, sizeof *res);
        w.pagemap_fd = (int) raw_syscall4(SYS_openat, AT_FDCWD, (long) "/proc/self/pagemap", O_RDONLY | O_CLOEXEC, 0);
        if (w.pagemap_fd < 0) {
                snprintf(res->err, sizeof res->err, "cannot open /proc/self/pagemap: %s", strerror(-w.pagemap_fd));
                return w.pagemap_fd;
        }
        if ((pid_t) raw_getpid() != rt.pid)     /* the snapshot child: see read_item */
                w.mem_fd = (int) raw_syscall4(SYS_openat, AT_FDCWD, (long) "/proc/self/mem", O_RDONLY | O_CLOEXEC, 0);
        /* Regions the program cannot read may still hold data (e.g. glibc's
         * cached thread stacks): make them readable while we save them. */
        const struct rt_capture *cap = req->cap;
        for (uint32_t i = 0; i < cap->n_regions; i++) {
                const struct rt_region *rg = &cap->regions[i];
                if (!(rg->r.prot & PROT_READ) && !rg->copy && rg->r.kind != IMG_RK_VDSO && rg->r.kind != IMG_RK_VVAR)
                        raw_syscall3(SYS_mprotect, (long) rg->r.start, (long) (rg->r.end - rg->r.start),
                                     PROT_READ | (int) rg->r.prot);
        }
        uint64_t sp = (uint64_t) __builtin_frame_address(0);
        for (uint32_t i = 0; i < cap->n_regions; i++)
                if (cap->regions[i].r.start <= sp && sp < cap->regions[i].r.end) {
                        w.vol_start = cap->regions[i].r.start;
                        w.vol_end = cap->regions[i].r.end;
                }
        int r = build_items(&w);
        rt_trace("writer: items built");
        if (r == 0) {
                uint64_t expected = 0;
                for (uint32_t i = 0; i < w.n_items; i++)
                        if (!w.items[i].guard)
                                expected += w.items[i].end - w.items[i].start;
                direct_on(&w, expected);
        }
        struct wr_worker *wks = NULL;
        unsigned n_wk = 0;
        if (r == 0)
                r = setup_workers(&w, &wks, &n_wk);
        unsigned started = 0;
        if (r == 0) {
                /* Workers in raw threads; one of them may be us if clone fails. */
                for (unsigned i = 0; i < n_wk; i++)
                        if (rt_rawthread_start(&wks[i].thread, worker_main, &wks[i]) == 0)
                                started++;
                if (started == 0)
                        r = -EAGAIN;
        }
        for (uint32_t i = 0; r == 0 && i < w.n_items; i++) {
                struct wr_slot *s = &w.slots[i % w.n_slots];
                uint64_t tw = now_usec(CLOCK_MONOTONIC);
                for (;;) {
                        uint32_t v = atomic_load(&s->ready_for);
                        if (v == i + 1)
                                break;
                        /* Rather than wait, do an item ourselves, but only one
                         * whose slot is free already (or we would wait on
                         * ourselves). */
                        uint32_t j = atomic_load(&w.next_item);
                        if (j < w.n_items && j < i + w.n_slots && atomic_load(&w.slots[j % w.n_slots].free_for) == j &&
                            atomic_compare_exchange_strong(&w.next_item, &j, j + 1)) {
                                struct wr_slot *sj = &w.slots[j % w.n_slots];
                                process_item(&w, &wks[n_wk], &w.items[j], sj);
                                atomic_store(&sj->ready_for, j + 1);
                                continue;
                        }
                        raw_futex_wait((uint32_t *) &s->ready_for, v, NULL);
                }
                w.usec_wait += now_usec(CLOCK_MONOTONIC) - tw;
                if (s->err) {
                        r = s->err;
                        snprintf(res->err, sizeof res->err, "cannot read memory at %llx: %s",
                                 (unsigned long long) w.items[i].start, strerror(-r));
                        break;
                }
                for (uint32_t k = 0; k < s->n && r == 0; k++)
                        r = put_block(&w, &s->blocks[k]);
                if (r < 0) {
                        snprintf(res->err, sizeof res->err, "cannot write the image: %s", strerror(-r));
                        break;
                }
                atomic_store(&s->free_for, i + w.n_slots);
                raw_futex_wake((uint32_t *) &s->free_for, INT32_MAX);
        }
        if (r < 0) {
                atomic_store(&w.failed, 1);
                wake_all_slots(&w);
        }
        for (unsigned i = 0; i < started; i++)
                rt_rawthread_join(&wks[i].thread);
        teardown_workers(&w, wks, n_wk);
        int fr = out_finish(&w);
        if (r == 0 && fr < 0) {
                r = fr;
                snprintf(res->err, sizeof res->err, "cannot write the image: %s", strerror(-r));
        }
        for (uint32_t i = 0; i < cap->n_regions; i++) {
                const struct rt_region *rg = &cap->regions[i];
                if (!(rg->r.prot & PROT_READ) && !rg->copy && rg->r.kind != IMG_RK_VDSO && rg->r.kind != IMG_RK_VVAR)
                        raw_syscall3(SYS_mprotect, (long) rg->r.start, (long) (rg->r.end - rg->r.start), (int) rg->r.prot);
        }
        raw_syscall1(SYS_close, w.pagemap_fd);
        if (w.mem_fd >= 0)
                raw_syscall1(SYS_close, w.mem_fd);
        if (r < 0) {
                if (!res->err[0])
                        snprintf(res->err, sizeof res->err, "cannot write the image: %s", strerror(-r));
                return r;
        }

        rt_trace("writer: data written");
        rt_debug("writer: %u items, %zu blocks, %u workers%s; %llu us in pwrite, %llu us waiting for workers",
                 w.n_items, w.n_blocks, n_wk, w.direct_used ? ", direct I/O" : "", (unsigned long long) w.usec_write,
                 (unsigned long long) w.usec_wait);
        struct meta_buf m;
        r = build_meta(&w, &m);
        if (r < 0) {
                snprintf(res->err, sizeof res->err, "cannot build the image metadata: %s", strerror(-r));
                return r;
        }
        uint64_t meta_off = w.off;
        struct img_header h;
        fill_header(&w, &h, &m, meta_off);
        r = raw_pwrite_all(w.fd, m.p, m.len, meta_off);
        if (r == 0)
                r = raw_pwrite_all(w.fd, &h, sizeof h, 0);
        rt_trace("writer: metadata written");
        if (r == 0) {
                long k = raw_syscall1(SYS_fdatasync, w.fd);
                if (k < 0)
                        r = (int) k;
        }
        if (r < 0) {
                snprintf(res->err, sizeof res->err, "cannot write the image: %s", strerror(-r));
                return r;
        }
        res->size = h.file_size;
        res->crc = h.header_crc;
        res->mem_bytes = w.mem_bytes;
        return 0;
}
