/* The loader: runs in the child that will become the restored process, with
 * its pid already the image's. Everything that can fail for a reason other
 * than a bug happens here, before anything is destroyed: every block is read
 * and its checksum verified while it is placed into staging memory, files
 * the image maps are opened and checked. Then it reports to dmtcp_restart,
 * waits for the coordinator's address, builds the restorer's plan and jumps
 * into the blob: the point of no return.
 *
 * With --lazy, long runs of raw blocks of private anonymous memory are not
 * read: the restorer maps them privately from the image file over the
 * region, so they load on first touch and are never checksummed. The
 * restored runtime is told the image's identity so that it saves those
 * mappings as anonymous memory, never as references to the image. */
#include <fcntl.h>
#include <linux/prctl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/rseq.h>
#include <sys/shm.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>

#include "addr.h"
#include "plan.h"
#include "raw-syscall.h"
#include "restart.h"
#include "shared.h"
#include "util.h"

#define MAX_UNMAP 8192
#define MAIN_STACK (256 * 1024)
#define THREAD_STACK (16 * 1024)
#define VDSO_STAGE (4 * 1024 * 1024)
/* --lazy: a shorter run of raw blocks costs less to read than to map. */
#define LAZY_MIN_RUN (64 * 1024)
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_READ 22
#define MADV_POPULATE_WRITE 23
#endif
#ifndef MADV_GUARD_INSTALL
#define MADV_GUARD_INSTALL 102
#endif
#ifndef RSEQ_SIG
#define RSEQ_SIG 0x53053053
#endif

struct ops_vec {
        struct plan_op *v;
        size_t n, cap;
};

static int ops_add(struct ops_vec *o, struct plan_op op) {
        if (o->n == o->cap) {
                size_t ncap = o->cap ? o->cap * 2 : 1024;
                struct plan_op *n = realloc(o->v, ncap * sizeof *n);
                if (!n)
                        return -ENOMEM;
                o->v = n;
                o->cap = ncap;
        }
        o->v[o->n++] = op;
        return 0;
}

/* --lazy: which memory blocks are mapped from the image instead of read. */
enum {
        LAZY_MAPPED = 1 << 0,
        /* Mapped but for its first or last page, which begins or ends the
         * region and is read: a region must neither begin nor end with a
         * mapping of the image, or growing it (mremap, as realloc does)
         * would bring in the image's next bytes, or SIGBUS past its end. As
         * it is, resizing the region fails and realloc copies instead. */
        LAZY_READ_FIRST = 1 << 1,
        LAZY_READ_LAST = 1 << 2,
};

struct lazy_plan {
        uint8_t *block;                 /* per memory block, LAZY_* flags; NULL = nothing lazy */
        size_t n_runs;                  /* mappings of the image to make */
        uint64_t bytes;
};

static bool is_lazy(const struct lazy_plan *lp, size_t block) {
        return lp->block && lp->block[block];
}

/* Is (part of) the block read into staging? */
static bool block_is_read(const struct lazy_plan *lp, const struct img_block *b, size_t block) {
        return (b->enc == IMG_ENC_RAW || b->enc == IMG_ENC_DEFLATE) &&
               (!is_lazy(lp, block) || (lp->block[block] & (LAZY_READ_FIRST | LAZY_READ_LAST)));
}

struct load_state {
        struct rst_image *im;
        const uint8_t *map;             /* the image, mapped read-only */
        int mem_fd;                     /* /proc/self/mem, or -1 */
        uint64_t *staging;              /* per region: staging address, 0 = none */
        const struct lazy_plan *lazy;
        _Atomic size_t next;
        _Atomic int err;
        size_t bad_block;
        char bad_what[sizeof ((struct img_error *) 0)->what];  /* why, from the decoder */
        pthread_mutex_t lock;
        _Atomic uint64_t usec_populate, usec_read;
};

static bool block_has_data(const struct img_block *b) {
        return b->enc == IMG_ENC_RAW || b->enc == IMG_ENC_DEFLATE;
}

/* One block through the kernel's mapping of the pages: read from the image
 * into our buffer, check (and inflate) there, write to the staging address
 * through /proc/self/mem. Neither the image's pages nor the staging pages
 * are touched through our own page tables, whose every first touch traps to
 * the hypervisor on virtual machines that shadow them (about 10 us a page
 * here); the restored program pays that later, page by page, as it runs.
 * 1: this way is not available (fall back to reading in place). */
static int load_block_via_kernel(struct load_state *ls, const struct img_block *b, uint8_t *dst, uint8_t *cbuf,
                                 uint8_t *ubuf, struct img_error *e) {
        if (ls->mem_fd < 0 || !cbuf || !ubuf)
                return 1;
        if (pread_full(ls->im->fd, cbuf, b->clen, (off_t) b->file_off) < 0)
                return 1;
        const uint8_t *data = cbuf;
        if (b->enc == IMG_ENC_RAW) {
                int r = img_check_block(b, cbuf, e);
                if (r < 0)
                        return r;
        } else {
                int r = img_decode_block(b, cbuf, ubuf, e);
                if (r < 0)
                        return r;
                data = ubuf;
        }
        for (size_t done = 0; done < b->ulen;) {
                ssize_t n = pwrite(ls->mem_fd, data + done, b->ulen - done, (off_t) (uintptr_t) (dst + done));
                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0)
                        return 1;
                done += (size_t) n;
        }
        return 0;
}

/* The first block that failed is the one the error names. */
static void note_bad_block(struct load_state *ls, size_t i, int r, const struct img_error *e) {
        pthread_mutex_lock(&ls->lock);
        if (!atomic_load(&ls->err)) {
                atomic_store(&ls->err, r);
                ls->bad_block = i;
                snprintf(ls->bad_what, sizeof ls->bad_what, "%s", e->what);
        }
        pthread_mutex_unlock(&ls->lock);
}

static void *load_worker(void *arg) {
        struct load_state *ls = arg;
        const struct img *img = &ls->im->img;
        uint8_t *cbuf = ls->mem_fd >= 0 ? malloc(IMG_BLOCK_MAX + PAGE_SZ) : NULL;
        uint8_t *ubuf = ls->mem_fd >= 0 ? malloc(IMG_BLOCK_MAX) : NULL;
        for (;;) {
                size_t i = atomic_fetch_add(&ls->next, 1);
                if (i >= img->n_mem_blocks || atomic_load(&ls->err))
                        break;
                const struct img_block *b = &img->blocks[i];
                if (!block_is_read(ls->lazy, b, i) || !ls->staging[b->index])
                        continue;
                const struct img_region *rg = &img->regions[b->index].r;
                uint8_t *dst = (uint8_t *) (ls->staging[b->index] + (b->addr - rg->start));
                const uint8_t *src = ls->map + b->file_off;
                if (is_lazy(ls->lazy, i)) {
                        /* A page at an end only, unchecked like the rest. */
                        if (ls->lazy->block[i] & LAZY_READ_FIRST)
                                memcpy(dst, src, PAGE_SZ);
                        if (ls->lazy->block[i] & LAZY_READ_LAST)
                                memcpy(dst + b->ulen - PAGE_SZ, src + b->ulen - PAGE_SZ, PAGE_SZ);
                        continue;
                }
                struct img_error e = { 0 };
                uint64_t t0 = now_usec(CLOCK_MONOTONIC);
                int r = load_block_via_kernel(ls, b, dst, cbuf, ubuf, &e);
                if (r <= 0) {
                        atomic_fetch_add(&ls->usec_read, now_usec(CLOCK_MONOTONIC) - t0);
                        if (r == 0)
                                continue;
                        note_bad_block(ls, i, r, &e);
                        break;
                }
                /* Populate in the kernel: a page fault per 4 KiB page costs
                 * 10-15 us on virtual machines, 40x more than this. */
                madvise(dst, b->ulen, MADV_POPULATE_WRITE);
                madvise((void *) ALIGN_DOWN((uintptr_t) src, PAGE_SZ),
                        ALIGN_UP(b->clen + ((uintptr_t) src % PAGE_SZ), PAGE_SZ), MADV_POPULATE_READ);
                uint64_t t1 = now_usec(CLOCK_MONOTONIC);
                r = img_decode_block(b, src, dst, &e);
                atomic_fetch_add(&ls->usec_populate, t1 - t0);
                atomic_fetch_add(&ls->usec_read, now_usec(CLOCK_MONOTONIC) - t1);
                if (r < 0) {
                        note_bad_block(ls, i, r, &e);
                        break;
                }
        }
        free(cbuf);
        free(ubuf);
        return NULL;
}

static unsigned ncpus(void) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        return n < 1 ? 1 : n > 64 ? 64 : (unsigned) n;
}

/* Read every data block into its region's staging memory, verifying each. */
static int load_blocks(struct load_state *ls, char *err, size_t errsize) {
        void *map = mmap(NULL, ls->im->size, PROT_READ, MAP_PRIVATE, ls->im->fd, 0);
        if (map == MAP_FAILED) {
                snprintf(err, errsize, "cannot map the image: %m");
                return -errno;
        }
        ls->map = map;
        ls->mem_fd = open("/proc/self/mem", O_RDWR | O_CLOEXEC);
        unsigned n = ncpus();
        pthread_t th[64];
        unsigned started = 0;
        for (unsigned i = 1; i < n; i++)
                if (pthread_create(&th[started], NULL, load_worker, ls) == 0)
                        started++;
        load_worker(ls);
        for (unsigned i = 0; i < started; i++)
                pthread_join(th[i], NULL);
        if (getenv("DMTCP_TRACE"))
                fprintf(stderr, "dmtcp_restart: loader: %u threads, %llu us populating, %llu us reading and checking\n",
                        started + 1, (unsigned long long) atomic_load(&ls->usec_populate),
                        (unsigned long long) atomic_load(&ls->usec_read));
        munmap(map, ls->im->size);
        ls->map = NULL;
        if (ls->mem_fd >= 0)
                close(ls->mem_fd);
        ls->mem_fd = -1;
        int r = atomic_load(&ls->err);
        if (r < 0) {
                const struct img_block *b = &ls->im->img.blocks[ls->bad_block];
                snprintf(err, errsize, "image %s: %s (memory %llx)", ls->im->path, ls->bad_what,
                         (unsigned long long) b->addr);
                return r == -ENOMEM ? r : -EBADMSG;
        }
        return 0;
}

/* A private anonymous region may be mapped from the image in parts: not a
 * stack (it must stay one growable mapping), not wipe-on-fork (anonymous
 * memory only), nothing executable from a noexec mount. */
static bool lazy_region_ok(const struct img_region *rg, bool noexec) {
        return rg->kind == IMG_RK_ANON && !(rg->flags & (IMG_RF_GROWSDOWN | IMG_RF_STACK | IMG_RF_WIPEONFORK)) &&
               !(noexec && (rg->prot & PROT_EXEC));
}

/* Does raw block b continue the run that ends with a, in memory and in the
 * file, so that one mapping covers both? */
static bool lazy_continues(const struct img_block *a, const struct img_block *b) {
        return b->enc == IMG_ENC_RAW && a->addr + a->ulen == b->addr && a->file_off + a->clen == b->file_off;
}

static long max_map_count(void) {
        long n = 65530;
        FILE *f = fopen("/proc/sys/vm/max_map_count", "re");
        if (f) {
                if (fscanf(f, "%ld", &n) != 1 || n < 1024)
                        n = 65530;
                fclose(f);
        }
        return n;
}

/* Choose the runs of raw blocks to map. Each mapping may split a region in
 * three, so they are limited to a small share of the process's map count;
 * what is left over is read as without --lazy. */
static int lazy_choose(const struct rst_image *im, struct lazy_plan *lp) {
        const struct img *img = &im->img;
        struct statvfs sv;
        bool noexec = fstatvfs(im->fd, &sv) == 0 && (sv.f_flag & ST_NOEXEC);
        size_t budget = (size_t) max_map_count() / 8;
        lp->block = calloc(img->n_mem_blocks + 1, 1);
        if (!lp->block)
                return -ENOMEM;
        for (size_t ri = 0; ri < img->n_regions; ri++) {
                const struct img_parsed_region *pr = &img->regions[ri];
                if (!lazy_region_ok(&pr->r, noexec))
                        continue;
                for (uint32_t k = 0; k < pr->n_blocks && lp->n_runs < budget;) {
                        size_t first = pr->first_block + k;
                        if (img->blocks[first].enc != IMG_ENC_RAW) {
                                k++;
                                continue;
                        }
                        uint32_t n = 1;
                        uint64_t len = img->blocks[first].ulen;
                        while (k + n < pr->n_blocks && lazy_continues(&img->blocks[first + n - 1], &img->blocks[first + n]))
                                len += img->blocks[first + n++].ulen;
                        if (len >= LAZY_MIN_RUN) {
                                memset(lp->block + first, LAZY_MAPPED, n);
                                if (img->blocks[first].addr == pr->r.start) {
                                        lp->block[first] |= LAZY_READ_FIRST;
                                        len -= PAGE_SZ;
                                }
                                const struct img_block *last = &img->blocks[first + n - 1];
                                if (last->addr + last->ulen == pr->r.end) {
                                        lp->block[first + n - 1] |= LAZY_READ_LAST;
                                        len -= PAGE_SZ;
                                }
                                lp->n_runs++;
                                lp->bytes += len;
                        }
                        k += n;
                }
        }
        return 0;
}

/* The image's device and inode as /proc/self/maps shows its mappings (on
 * overlay file systems that is not what fstat says): how the restored
 * runtime recognizes them. */
static void image_identity(int fd, uint64_t *dev, uint64_t *ino) {
        struct stat st;
        *dev = fstat(fd, &st) == 0 ? st.st_dev : 0;
        *ino = st.st_ino;
        void *p = mmap(NULL, PAGE_SZ, PROT_READ, MAP_PRIVATE, fd, 0);
        if (p == MAP_FAILED)
                return;
        FILE *f = fopen("/proc/self/maps", "re");
        char line[512];
        while (f && fgets(line, sizeof line, f)) {
                unsigned long long s, i;
                unsigned maj, min;
                if (sscanf(line, "%llx-%*x %*s %*s %x:%x %llu", &s, &maj, &min, &i) == 4 && s == (uintptr_t) p) {
                        *dev = makedev(maj, min);
                        *ino = i;
                        break;
                }
        }
        if (f)
                fclose(f);
        munmap(p, PAGE_SZ);
}

/* The image mappings of one region, over what plan_region put there. */
static int plan_lazy_maps(const struct img *img, const struct img_parsed_region *pr, const struct lazy_plan *lp,
                          int image_fd, struct ops_vec *ops) {
        const struct img_region *rg = &pr->r;
        int flags = MAP_PRIVATE | (rg->flags & IMG_RF_NORESERVE ? MAP_NORESERVE : 0);
        for (uint32_t k = 0; k < pr->n_blocks;) {
                size_t i = pr->first_block + k;
                if (!is_lazy(lp, i)) {
                        k++;
                        continue;
                }
                const struct img_block *b = &img->blocks[i];
                struct plan_op op = { .kind = PLAN_MAP_OVER, .dst = b->addr, .len = b->ulen, .fd = image_fd,
                                      .off = b->file_off, .prot = rg->prot, .flags = (uint32_t) flags };
                if (lp->block[i] & LAZY_READ_FIRST) {
                        op.dst += PAGE_SZ;
                        op.off += PAGE_SZ;
                        op.len -= PAGE_SZ;
                }
                for (k++; k < pr->n_blocks && is_lazy(lp, i + 1) && lazy_continues(&img->blocks[i], &img->blocks[i + 1]); k++, i++)
                        op.len += img->blocks[i + 1].ulen;
                if (lp->block[i] & LAZY_READ_LAST)
                        op.len -= PAGE_SZ;
                int r = ops_add(ops, op);
                if (r < 0)
                        return r;
        }
        return 0;
}

/* Recreate each file that was deleted while open, as an unnamed file the
 * runtime reopens through /proc/self/fd. */
static int recreate_deleted(struct rst_image *im, struct rst_incoming *in, int min_fd, char *err, size_t errsize) {
        const struct img *img = &im->img;
        for (size_t i = 0; i < img->n_files; i++) {
                const struct img_parsed_file *pf = &img->files[i];
                if (!(pf->f.flags & IMG_FF_CONTENT))
                        continue;
                if (in->n_file_fds >= RST_MAX_FILE_FDS) {
                        snprintf(err, errsize, "too many deleted files to recreate");
                        return -E2BIG;
                }
                char dir[PATH_MAX];
                strscpy(dir, pf->path.s, sizeof dir);
                char *slash = strrchr(dir, '/');
                if (slash && slash != dir)
                        *slash = 0;
                int fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
                if (fd < 0) {
                        const char *tmp = getenv("DMTCP_TMPDIR");
                        fd = open(tmp && *tmp ? tmp : "/tmp", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
                }
                if (fd < 0) {
                        snprintf(err, errsize, "cannot recreate the deleted file %s: %m", pf->path.s);
                        return -errno;
                }
                uint8_t *buf = malloc(IMG_BLOCK_MAX), *scratch = malloc(IMG_BLOCK_MAX * 2);
                int r = buf && scratch ? 0 : -ENOMEM;
                for (uint32_t k = 0; r == 0 && k < pf->n_blocks; k++) {
                        const struct img_block *b = &img->blocks[pf->first_block + k];
                        struct img_error e;
                        r = img_read_block(im->fd, b, buf, scratch, &e);
                        if (r == 0)
                                r = pwrite_full(fd, buf, b->ulen, (off_t) b->addr);
                }
                free(buf);
                free(scratch);
                if (r == 0 && ftruncate(fd, (off_t) pf->f.size) < 0)
                        r = -errno;
                if (r < 0) {
                        close(fd);
                        snprintf(err, errsize, "cannot recreate the deleted file %s: %s", pf->path.s, strerror(-r));
                        return r;
                }
                int nfd = fcntl(fd, F_DUPFD, min_fd);
                close(fd);
                if (nfd < 0)
                        return -errno;
                in->file_fds[in->n_file_fds++] = (struct rst_file_fd) { (uint32_t) i, nfd };
        }
        return 0;
}

struct special {
        const char *name;
        uint64_t start, end;
};

/* [vdso], [vvar], [vvar_vclock] of this process, to be moved to the image's. */
static int find_specials(struct special *sp, size_t *n) {
        FILE *f = fopen("/proc/self/maps", "re");
        if (!f)
                return -errno;
        char line[512];
        *n = 0;
        while (fgets(line, sizeof line, f) && *n < 4) {
                unsigned long long s, e;
                char name[64] = "";
                if (sscanf(line, "%llx-%llx %*s %*s %*s %*s %63s", &s, &e, name) < 2)
                        continue;
                if (!strcmp(name, "[vdso]") || !strcmp(name, "[vvar]") || !strcmp(name, "[vvar_vclock]")) {
                        sp[*n] = (struct special) { !strcmp(name, "[vdso]") ? "[vdso]" :
                                                    !strcmp(name, "[vvar]") ? "[vvar]" : "[vvar_vclock]", s, e };
                        (*n)++;
                }
        }
        fclose(f);
        return 0;
}

static int open_region_file(const struct img *img, uint32_t file, int flags, int *fds, char *err, size_t errsize) {
        if (fds[file] >= 0)
                return fds[file];
        const struct img_parsed_file *pf = &img->files[file];
        int fd = open(pf->path.s, flags | O_CLOEXEC);
        if (fd < 0 && (flags & O_ACCMODE) == O_RDWR)
                fd = open(pf->path.s, O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
                snprintf(err, errsize, "the image maps %s, which cannot be opened: %m", pf->path.s);
                return -errno;
        }
        fds[file] = fd;
        return fd;
}

/* A view of shared memory: the object was made by dmtcp_restart (shared.h).
 * System V segments are attached beforehand (plan_attaches). */
static int plan_shm(const struct rst_image *im, const struct img_region *rg, const int *shm_fds, int base_flags,
                    struct ops_vec *ops, bool *need_protect, char *err, size_t errsize) {
        const struct rst_shm *o = rst_shared_get(im, rg->shm);
        uint64_t len = rg->end - rg->start;
        if (!o) {
                snprintf(err, errsize, "memory at %llx: its shared memory object is missing", (unsigned long long) rg->start);
                return -EINVAL;
        }
        switch (o->s.kind) {
        case IMG_SHM_ANON:
                if (!o->base || rg->pgoff + len > ALIGN_UP(o->s.size, (uint64_t) PAGE_SZ)) {
                        snprintf(err, errsize, "memory at %llx: its shared anonymous memory was not recreated",
                                 (unsigned long long) rg->start);
                        return -EINVAL;
                }
                *need_protect = rg->prot != (PROT_READ | PROT_WRITE);
                return ops_add(ops, (struct plan_op) { .kind = PLAN_DUP, .src = o->base + rg->pgoff, .dst = rg->start,
                                                       .len = len });
        case IMG_SHM_SYSV:
                return 0;
        default:
                if (shm_fds[rg->shm] < 0) {
                        snprintf(err, errsize, "memory at %llx: %s was not recreated", (unsigned long long) rg->start,
                                 o->name);
                        return -EINVAL;
                }
                return ops_add(ops, (struct plan_op) { .kind = PLAN_MAP_FILE, .dst = rg->start, .len = len,
                                                       .fd = shm_fds[rg->shm], .off = rg->pgoff, .prot = rg->prot,
                                                       .flags = (uint32_t) (MAP_SHARED | base_flags) });
        }
}

/* System V segments: each attach of one (regions with the same start less
 * offset) is made again whole, at its address, before any other memory;
 * what the program had unmapped of it goes again, and each region gets its
 * protection. The attaches' ranges are kept free of staging (busy). */
static int plan_attaches(const struct rst_image *im, struct addr_map *busy, struct ops_vec *ops, char *err,
                         size_t errsize) {
        const struct img *img = &im->img;
        for (size_t i = 0; i < img->n_regions; i++) {
                const struct img_region *rg = &img->regions[i].r;
                const struct rst_shm *o = rg->kind == IMG_RK_SHM ? rst_shared_get(im, rg->shm) : NULL;
                if (!o || o->s.kind != IMG_SHM_SYSV || rg->pgoff > rg->start)
                        continue;
                uint64_t base = rg->start - rg->pgoff, len = ALIGN_UP(o->s.size, (uint64_t) PAGE_SZ);
                bool first = true;
                uint32_t prot = 0;
                for (size_t k = 0; k < img->n_regions; k++) {
                        const struct img_region *x = &img->regions[k].r;
                        if (x->kind != IMG_RK_SHM || x->shm != rg->shm || x->start - x->pgoff != base)
                                continue;
                        if (k < i)
                                first = false;
                        prot |= x->prot;
                }
                if (!first)
                        continue;       /* this attach is planned already */
                if (o->shmid < 0) {
                        snprintf(err, errsize, "System V shared memory %llu was not recreated", (unsigned long long) o->s.ino);
                        return -EINVAL;
                }
                uint32_t aprot = PROT_READ | (prot & PROT_WRITE) | (prot & PROT_EXEC);
                int r = ops_add(ops, (struct plan_op) { .kind = PLAN_SHMAT, .fd = o->shmid, .dst = base, .len = len,
                                                        .flags = (prot & PROT_WRITE ? 0 : SHM_RDONLY) |
                                                                 (prot & PROT_EXEC ? SHM_EXEC : 0) });
                if (r == 0)
                        r = addr_add(busy, base, base + len);
                uint64_t pos = base;
                for (size_t k = 0; r == 0 && k < img->n_regions; k++) {
                        const struct img_region *x = &img->regions[k].r;
                        if (x->kind != IMG_RK_SHM || x->shm != rg->shm || x->start - x->pgoff != base)
                                continue;
                        if (x->start > pos)
                                r = ops_add(ops, (struct plan_op) { .kind = PLAN_UNMAP, .src = pos, .len = x->start - pos });
                        if (r == 0 && x->prot != aprot)
                                r = ops_add(ops, (struct plan_op) { .kind = PLAN_PROTECT, .dst = x->start,
                                                                    .len = x->end - x->start, .prot = x->prot });
                        pos = x->end;
                }
                if (r == 0 && pos < base + len)
                        r = ops_add(ops, (struct plan_op) { .kind = PLAN_UNMAP, .src = pos, .len = base + len - pos });
                if (r < 0)
                        return r;
        }
        return 0;
}

/* The plan's memory steps for one region. */
static int plan_region(const struct rst_image *im, size_t ri, uint64_t staging, const struct lazy_plan *lp, int *fds,
                       const int *shm_fds, struct ops_vec *ops, char *err, size_t errsize) {
        const struct img *img = &im->img;
        int image_fd = im->fd;
        const struct img_parsed_region *pr = &img->regions[ri];
        const struct img_region *rg = &pr->r;
        uint64_t len = rg->end - rg->start;
        int base_flags = (rg->flags & IMG_RF_NORESERVE ? MAP_NORESERVE : 0) | (rg->flags & IMG_RF_GROWSDOWN ? MAP_GROWSDOWN : 0);
        bool has_data = false;
        for (uint32_t k = 0; k < pr->n_blocks; k++)
                has_data |= img->blocks[pr->first_block + k].enc != IMG_ENC_GUARD;
        int r;
        bool need_protect = false;
        switch (rg->kind) {
        case IMG_RK_ANON:
                if (staging) {
                        if ((r = ops_add(ops, (struct plan_op) { .kind = PLAN_MOVE, .src = staging, .dst = rg->start, .len = len })) < 0)
                                return r;
                        need_protect = rg->prot != (PROT_READ | PROT_WRITE);
                } else if ((r = ops_add(ops, (struct plan_op) { .kind = PLAN_MAP_ANON, .dst = rg->start, .len = len,
                                                                .prot = rg->prot,
                                                                .flags = (uint32_t) (MAP_PRIVATE | base_flags) })) < 0)
                        return r;
                if ((r = plan_lazy_maps(img, pr, lp, image_fd, ops)) < 0)
                        return r;
                break;
        case IMG_RK_RESERVED:
                return ops_add(ops, (struct plan_op) { .kind = PLAN_MAP_ANON, .dst = rg->start, .len = len,
                                                       .prot = rg->prot, .flags = MAP_PRIVATE | MAP_NORESERVE });
        case IMG_RK_SHM:
                if ((r = plan_shm(im, rg, shm_fds, base_flags, ops, &need_protect, err, errsize)) < 0)
                        return r;
                break;
        case IMG_RK_ANON_SHARED:
                if ((r = ops_add(ops, (struct plan_op) { .kind = PLAN_MAP_ANON, .dst = rg->start, .len = len,
                                                         .prot = rg->prot | (has_data ? PROT_WRITE : 0),
                                                         .flags = MAP_SHARED | (uint32_t) base_flags })) < 0)
                        return r;
                need_protect = has_data && !(rg->prot & PROT_WRITE);
                break;
        case IMG_RK_FILE_PRIVATE:
        case IMG_RK_FILE_SHARED: {
                bool shared = rg->kind == IMG_RK_FILE_SHARED;
                /* A read-only shared map was never written by the program:
                 * its saved bytes are the file's, nothing to write back. */
                if (shared && !(rg->prot & PROT_WRITE))
                        has_data = false;
                int fd = open_region_file(img, rg->file, shared && (rg->prot & PROT_WRITE) ? O_RDWR : O_RDONLY, fds,
                                          err, errsize);
                if (fd < 0)
                        return fd;
                /* Writing back pages past the end of a file that shrank since
                 * would kill us with SIGBUS: give it back its size. */
                struct stat fst;
                if (shared && has_data && fstat(fd, &fst) == 0 && (uint64_t) fst.st_size < img->files[rg->file].f.size &&
                    ftruncate(fd, (off_t) img->files[rg->file].f.size) < 0) {
                        snprintf(err, errsize, "cannot extend %s back to %llu bytes: %m", img->files[rg->file].path.s,
                                 (unsigned long long) img->files[rg->file].f.size);
                        return -errno;
                }
                if ((r = ops_add(ops, (struct plan_op) { .kind = PLAN_MAP_FILE, .dst = rg->start, .len = len, .fd = fd,
                                                         .off = rg->pgoff, .prot = rg->prot | (has_data ? PROT_WRITE : 0),
                                                         .flags = (uint32_t) ((shared ? MAP_SHARED : MAP_PRIVATE) | base_flags) })) < 0)
                        return r;
                need_protect = has_data && !(rg->prot & PROT_WRITE);
                break;
        }
        default:
                return 0;
        }
        /* Saved pages over a file or shared mapping: copy, or zero. */
        if (rg->kind != IMG_RK_ANON && has_data) {
                for (uint32_t k = 0; k < pr->n_blocks; k++) {
                        const struct img_block *b = &img->blocks[pr->first_block + k];
                        if (b->enc == IMG_ENC_ZERO)
                                r = ops_add(ops, (struct plan_op) { .kind = PLAN_ZERO, .dst = b->addr, .len = b->ulen });
                        else if (block_has_data(b))
                                r = ops_add(ops, (struct plan_op) { .kind = PLAN_COPY, .src = staging + (b->addr - rg->start),
                                                                    .dst = b->addr, .len = b->ulen });
                        else
                                r = 0;
                        if (r < 0)
                                return r;
                }
                if (staging && (r = ops_add(ops, (struct plan_op) { .kind = PLAN_UNMAP, .src = staging, .len = len })) < 0)
                        return r;
        }
        if (need_protect && (r = ops_add(ops, (struct plan_op) { .kind = PLAN_PROTECT, .dst = rg->start, .len = len,
                                                                 .prot = rg->prot })) < 0)
                return r;
        static const struct { uint32_t flag; int advice; } advices[] = {
                { IMG_RF_HUGEPAGE, MADV_HUGEPAGE }, { IMG_RF_NOHUGEPAGE, MADV_NOHUGEPAGE },
                { IMG_RF_DONTFORK, MADV_DONTFORK }, { IMG_RF_WIPEONFORK, MADV_WIPEONFORK },
                { IMG_RF_DONTDUMP, MADV_DONTDUMP },
        };
        for (size_t a = 0; a < ARRAY_SIZE(advices); a++)
                if ((rg->flags & advices[a].flag) &&
                    (r = ops_add(ops, (struct plan_op) { .kind = PLAN_ADVISE, .dst = rg->start, .len = len,
                                                         .advice = advices[a].advice })) < 0)
                        return r;
        for (uint32_t k = 0; k < pr->n_blocks; k++) {
                const struct img_block *b = &img->blocks[pr->first_block + k];
                if (b->enc == IMG_ENC_GUARD &&
                    (r = ops_add(ops, (struct plan_op) { .kind = PLAN_ADVISE, .dst = b->addr, .len = b->ulen,
                                                         .advice = MADV_GUARD_INSTALL })) < 0)
                        return r;
        }
        return 0;
}

static void status(int fd, const char *s) {
        if (fd >= 0)
                write_full(fd, s, strlen(s));
}

int rst_load_and_jump(struct rst_image *im, const struct rst_options *o, int status_fd, struct rst_sync *sync,
                      char *err, size_t errsize) {
        const struct img *img = &im->img;
        struct addr_map busy = { 0 };
        int r;

        /* What must stay untouched: our own mappings and the image's regions. */
        if ((r = addr_add_self(&busy)) < 0) {
                snprintf(err, errsize, "cannot read /proc/self/maps");
                return r;
        }
        for (size_t i = 0; i < img->n_regions; i++)
                addr_add(&busy, img->regions[i].r.start, img->regions[i].r.end);
        addr_add(&busy, 0, 1ull << 20);
        struct ops_vec ops = { 0 };
        if ((r = plan_attaches(im, &busy, &ops, err, errsize)) < 0)
                return r;

        struct lazy_plan lazy = { 0 };
        if (o->lazy && (r = lazy_choose(im, &lazy)) < 0)
                return r;

        /* Staging memory for regions with saved data to read. */
        uint64_t *staging = calloc(img->n_regions + 1, sizeof *staging);
        if (!staging)
                return -ENOMEM;
        for (size_t i = 0; i < img->n_regions; i++) {
                const struct img_parsed_region *pr = &img->regions[i];
                bool data = false;
                for (uint32_t k = 0; k < pr->n_blocks && !data; k++)
                        data = block_is_read(&lazy, &img->blocks[pr->first_block + k], pr->first_block + k);
                if (!data)
                        continue;
                const struct img_region *rg = &pr->r;
                int flags = MAP_NORESERVE | (rg->kind == IMG_RK_ANON && (rg->flags & IMG_RF_GROWSDOWN) ? MAP_GROWSDOWN : 0);
                staging[i] = addr_map_free(&busy, rg->end - rg->start, rg->start, flags);
                if (!staging[i]) {
                        snprintf(err, errsize, "no room in the address space to stage %llu bytes",
                                 (unsigned long long) (rg->end - rg->start));
                        return -ENOMEM;
                }
        }
        struct load_state ls = { .im = im, .staging = staging, .lazy = &lazy, .lock = PTHREAD_MUTEX_INITIALIZER };
        if ((r = load_blocks(&ls, err, errsize)) < 0)
                return r;
        if (o->lazy && getenv("DMTCP_TRACE"))
                fprintf(stderr, "dmtcp_restart: loader: --lazy: %llu bytes in %zu mappings of the image\n",
                        (unsigned long long) lazy.bytes, lazy.n_runs);

        /* Files the image maps. */
        int *fds = malloc((img->n_files + 1) * sizeof *fds);
        if (!fds)
                return -ENOMEM;
        for (size_t i = 0; i < img->n_files; i++)
                fds[i] = -1;
        /* Our descriptors of shared memory objects, above the program's: the
         * runtime reopens its descriptors of them from these. */
        int max_fd = 2;
        for (size_t i = 0; i < img->n_fds; i++)
                max_fd = MAX(max_fd, img->fds[i].d.fd);
        int *shm_fds = malloc((img->n_shms + 1) * sizeof *shm_fds);
        if (!shm_fds)
                return -ENOMEM;
        for (size_t i = 0; i < img->n_shms; i++) {
                const struct rst_shm *sh = rst_shared_get(im, (uint32_t) i);
                shm_fds[i] = sh && sh->fd >= 0 ? fcntl(sh->fd, F_DUPFD_CLOEXEC, max_fd + 1) : -1;
        }
        for (size_t i = 0; i < img->n_regions; i++)
                if ((r = plan_region(im, i, staging[i], &lazy, fds, shm_fds, &ops, err, errsize)) < 0)
                        return r;
        /* The anonymous objects we inherited: their views are made, they go. */
        for (size_t i = 0; i < img->n_shms; i++) {
                const struct rst_shm *sh = rst_shared_get(im, (uint32_t) i);
                if (sh && sh->base &&
                    (r = ops_add(&ops, (struct plan_op) { .kind = PLAN_UNMAP, .src = sh->base,
                                                          .len = ALIGN_UP(sh->s.size, (uint64_t) PAGE_SZ) })) < 0)
                        return r;
        }
        for (size_t i = 0; i < img->n_files; i++)
                if (fds[i] >= 0 && (r = ops_add(&ops, (struct plan_op) { .kind = PLAN_CLOSE, .fd = fds[i] })) < 0)
                        return r;
        /* The restorer maps the image: it closes it. */
        if (lazy.n_runs && (r = ops_add(&ops, (struct plan_op) { .kind = PLAN_CLOSE, .fd = im->fd })) < 0)
                return r;

        /* The kernel's special mappings must match the image's. */
        struct special sp[4];
        size_t n_sp = 0;
        if ((r = find_specials(sp, &n_sp)) < 0)
                return r;
        uint64_t sp_to[4] = { 0 };
        for (size_t s = 0; s < n_sp; s++) {
                for (size_t i = 0; i < img->n_regions; i++) {
                        const struct img_parsed_region *pr = &img->regions[i];
                        if ((pr->r.kind == IMG_RK_VDSO || pr->r.kind == IMG_RK_VVAR) && !strcmp(pr->name.s, sp[s].name)) {
                                if (pr->r.end - pr->r.start != sp[s].end - sp[s].start) {
                                        snprintf(err, errsize, "this kernel's %s differs from the image's (another kernel build)",
                                                 sp[s].name);
                                        return -EXDEV;
                                }
                                sp_to[s] = pr->r.start;
                        }
                }
                if (!sp_to[s]) {
                        snprintf(err, errsize, "the image has no %s: it was taken under another kernel build", sp[s].name);
                        return -EXDEV;
                }
        }

        /* Now the report, and the coordinator's address in return. */
        char loaded[32];
        snprintf(loaded, sizeof loaded, "L%d\n", (int) getpid());
        status(status_fd, loaded);
        struct rst_go go;
        r = rst_sync_wait_go(sync, &go);
        if (r < 0 || go.magic != RST_GO_MAGIC) {
                snprintf(err, errsize, "dmtcp_restart gave up");
                return r < 0 ? r : -ECANCELED;
        }

        /* The bootstrap area: blob, plan, tables, stacks, vdso staging. */
        size_t blob_len = ALIGN_UP(rst_blob_size, PAGE_SZ);
        size_t off_plan = blob_len;
        size_t off_in = ALIGN_UP(off_plan + sizeof(struct plan), PAGE_SZ);
        size_t off_ops = ALIGN_UP(off_in + sizeof(struct rst_incoming), PAGE_SZ);
        size_t off_unmap = ALIGN_UP(off_ops + ops.n * sizeof(struct plan_op), PAGE_SZ);
        size_t off_thr = ALIGN_UP(off_unmap + MAX_UNMAP * sizeof(struct plan_range), PAGE_SZ);
        size_t off_stacks = ALIGN_UP(off_thr + img->n_threads * sizeof(struct plan_thread), PAGE_SZ);
        size_t off_vdso = off_stacks + MAIN_STACK + img->n_threads * THREAD_STACK;
        size_t boot_len = off_vdso + VDSO_STAGE;
        uint64_t boot = addr_map_free(&busy, boot_len, 0, 0);
        if (!boot) {
                snprintf(err, errsize, "no room in the address space for the restorer");
                return -ENOMEM;
        }
        uint8_t *b = (uint8_t *) boot;
        memcpy(b, rst_blob, rst_blob_size);
        if (mprotect(b, blob_len, PROT_READ | PROT_EXEC) < 0 ||
            munmap(b + off_vdso, VDSO_STAGE) < 0 ||
            mmap(b + off_vdso, VDSO_STAGE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE, -1, 0) == MAP_FAILED)
                return -errno;
        struct plan *p = (struct plan *) (b + off_plan);
        struct rst_incoming *in = (struct rst_incoming *) (b + off_in);
        memset(p, 0, sizeof *p);
        memset(in, 0, sizeof *in);
        p->magic = PLAN_MAGIC;
        p->boot_addr = boot;
        p->boot_len = boot_len;
        p->vdso_stage = boot + off_vdso;
        p->ops = (struct plan_op *) (b + off_ops);
        memcpy(p->ops, ops.v, ops.n * sizeof *ops.v);
        p->n_ops = (uint32_t) ops.n;
        p->unmap = (struct plan_range *) (b + off_unmap);
        p->threads = (struct plan_thread *) (b + off_thr);
        p->n_threads = (uint32_t) img->n_threads;
        for (size_t i = 0; i < img->n_threads; i++) {
                const struct img_thread *t = &img->threads[i];
                p->threads[i] = (struct plan_thread) {
                        .tid = t->tid, .leader = (t->flags & IMG_TF_LEADER) != 0, .fs_base = t->fs_base,
                        .gs_base = t->gs_base, .ctx = t->ctx_addr,
                        .stack_top = boot + off_stacks + MAIN_STACK + (i + 1) * THREAD_STACK,
                };
        }
        for (size_t s = 0; s < n_sp; s++)
                p->special[s].from = sp[s].start, p->special[s].to = sp_to[s], p->special[s].len = sp[s].end - sp[s].start;
        p->n_special = (uint32_t) n_sp;
        const struct img_process *pc = &img->proc;
        p->mm = (struct plan_mm_map) {
                .start_code = pc->start_code, .end_code = pc->end_code, .start_data = pc->start_data,
                .end_data = pc->end_data, .start_brk = pc->start_brk, .brk = pc->brk, .start_stack = pc->start_stack,
                .arg_start = pc->arg_start, .arg_end = pc->arg_end, .env_start = pc->env_start, .env_end = pc->env_end,
                .auxv_size = (uint32_t) MIN(img->auxv_len, sizeof p->auxv), .exe_fd = (uint32_t) -1,
        };
        memcpy(p->auxv, img->auxv, p->mm.auxv_size);
        int exe_fd = img->exe.len ? open(img->exe.s, O_RDONLY | O_CLOEXEC) : -1;
        if (exe_fd >= 0)
                p->mm.exe_fd = (uint32_t) exe_fd;
        p->status_fd = status_fd;
        p->fail_rc = o->fail_rc;
        p->dumpable = pc->dumpable;
        p->cap_effective = pc->cap_effective;
        p->cap_permitted = pc->cap_permitted;
        p->cap_inheritable = pc->cap_inheritable;
        p->cap_ambient = pc->cap_ambient;
        p->incoming_var = pc->rst_incoming;
        p->incoming = (uint64_t) in;

        /* The hand-off to the runtime. */
        in->magic = RST_INCOMING_MAGIC;
        in->version = RST_INCOMING_VERSION;
        in->flags = (o->lazy ? RST_F_LAZY : 0) | (o->interval >= 0 ? RST_F_INTERVAL_SET : 0) |
                    (getpid() == 1 || getenv("DMTCP_RESTART_NEW_PIDNS") ? RST_F_NEW_PIDNS : 0);
        in->bootstrap_addr = boot;
        in->bootstrap_len = boot_len;
        in->status_fd = status_fd;
        in->fail_rc = o->fail_rc;
        in->coord_kind = go.coord_kind;
        in->coord_port = go.port;
        strscpy(in->coord_host, go.host, sizeof in->coord_host);
        strscpy(in->coord_path, go.path, sizeof in->coord_path);
        in->interval = o->interval >= 0 ? (uint32_t) o->interval : 0;
        in->generation = im->img.hdr.generation;
        in->members = o->members;
        in->restart_start_usec = o->start_usec;
        if (lazy.n_runs)
                image_identity(im->fd, &in->image_dev, &in->image_ino);
        if (o->coord.job)
                strscpy(in->job, o->coord.job, sizeof in->job);
        if (o->ckptdir)
                strscpy(in->ckptdir, o->ckptdir, sizeof in->ckptdir);
        strscpy(in->gen_dir, im->gen_dir, sizeof in->gen_dir);
        const char *secret = getenv("DMTCP_SECRET");
        if (secret)
                strscpy(in->secret, secret, sizeof in->secret);
        for (size_t i = 0; i < img->n_shms; i++) {
                if (shm_fds[i] < 0)
                        continue;
                if (in->n_file_fds >= RST_MAX_FILE_FDS) {
                        snprintf(err, errsize, "too many shared memory objects");
                        return -E2BIG;
                }
                in->file_fds[in->n_file_fds++] = (struct rst_file_fd) { RST_FILE_SHM | (uint32_t) i, shm_fds[i] };
        }
        in->n_ptys = (uint32_t) o->n_ptys;
        memcpy(in->ptys, o->ptys, o->n_ptys * sizeof o->ptys[0]);
        if ((r = recreate_deleted(im, in, max_fd + 1, err, errsize)) < 0)
                return r;
        if (!lazy.n_runs)
                close(im->fd);

        /* From here on nothing may allocate: the list of our own mappings to
         * remove is read now and must stay true. */
        int mfd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
        char *mbuf = (char *) (b + off_stacks);          /* the blob stacks are free space yet */
        size_t mlen = 0;
        if (mfd >= 0) {
                ssize_t k;
                while (mlen < MAIN_STACK - 1 && (k = read(mfd, mbuf + mlen, MAIN_STACK - 1 - mlen)) > 0)
                        mlen += (size_t) k;
                close(mfd);
        }
        mbuf[mlen] = 0;
        for (char *line = mbuf; line && *line && p->n_unmap < MAX_UNMAP;) {
                char *nl = strchr(line, '\n');
                if (nl)
                        *nl = 0;
                char *e;
                uint64_t s = strtoull(line, &e, 16), en = *e == '-' ? strtoull(e + 1, NULL, 16) : 0;
                bool keep = strstr(line, "[vdso]") || strstr(line, "[vvar") || strstr(line, "[vsyscall]") ||
                            (s >= boot && en <= boot + boot_len) || rst_shared_is_base(s, en);
                for (size_t i = 0; i < img->n_regions && !keep; i++)
                        keep = staging[i] && s >= staging[i] && en <= staging[i] + (img->regions[i].r.end - img->regions[i].r.start);
                if (!keep && en > s)
                        p->unmap[p->n_unmap++] = (struct plan_range) { s, en };
                line = nl ? nl + 1 : NULL;
        }

        /* glibc's rseq area is about to disappear: unregister it, or the
         * kernel writes into the restored memory. */
        if (__rseq_size > 0) {
                uint64_t tp;
                __asm__("mov %%fs:0, %0" : "=r"(tp));
                raw_syscall4(SYS_rseq, (long) (tp + (uint64_t) __rseq_offset), 32, RSEQ_FLAG_UNREGISTER, RSEQ_SIG);
        }
        uint64_t all = ~0ULL;
        raw_syscall4(SYS_rt_sigprocmask, SIG_SETMASK, (long) &all, 0, 8);
        rst_enter(boot, p, boot + off_stacks + MAIN_STACK);
}
