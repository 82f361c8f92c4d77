/* Memory capture: what is mapped, what kind it is, and what must be saved.
 * Shared memory objects are listed and saved by shm.c; their regions here
 * only say where each process sees them.
 *
 * Before the pause (threads running), rt_mem_presuspend reads
 * /proc/self/smaps for the VmFlags (smaps walks every page table, too slow
 * for the pause) and checksums the mapped files not seen before (cached by
 * identity). During the pause, rt_mem_capture reads /proc/self/maps, builds
 * the region and file tables and, for a copy-on-write checkpoint, copies
 * what fork would not preserve (shared memory, MADV_DONTFORK/WIPEONFORK). */
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include "fd.h"
#include "shm.h"
#include "raw-syscall.h"
#include "rt.h"
#include "util.h"

#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22
#define MADV_POPULATE_WRITE 23
#endif

struct vmflags {
        uint64_t start, end;
        uint32_t flags;                 /* IMG_RF_* */
        bool splittable;                /* private, not VM_IO/PFNMAP/hugetlb: see rt_mem_share_ahead */
        uint64_t anon;                  /* bytes of anonymous pages */
};

static struct vmflags *vmf;
static size_t n_vmf;
static bool vmf_stale;                  /* madvise changed flags since the read */

#define CRC_CACHE 1024
struct crc_entry {
        uint64_t dev, ino, size;
        int64_t mtime_sec;
        uint32_t mtime_nsec, crc;
};
static struct crc_entry crc_cache[CRC_CACHE];
static uint32_t n_crc_cache;

bool rt_mem_fork_advice(int advice) {
        return advice == MADV_DONTFORK || advice == MADV_DOFORK || advice == MADV_WIPEONFORK ||
               advice == MADV_KEEPONFORK;
}

void rt_mem_note_madvise(int advice) {
        if (rt_mem_fork_advice(advice) || advice == MADV_HUGEPAGE || advice == MADV_NOHUGEPAGE)
                vmf_stale = true;
}

/* Read a whole /proc file into a growing scratch buffer. */
static char *read_proc(const char *path, size_t *len) {
        size_t size = 1 << 20;
        for (;;) {
                char *buf = rt_map_scratch(size);
                if (!buf)
                        return NULL;
                int fd = rt_open_quietly(path, O_RDONLY);
                if (fd < 0) {
                        rt_unmap_scratch(buf, size);
                        return NULL;
                }
                size_t o = 0;
                long n;
                while ((n = raw_syscall3(SYS_read, fd, (long) (buf + o), (long) (size - 1 - o))) > 0)
                        o += (size_t) n;
                raw_syscall1(SYS_close, fd);
                if (o < size - 1) {
                        buf[o] = 0;
                        *len = o;
                        return buf;
                }
                rt_unmap_scratch(buf, size);
                size *= 4;
        }
}

/* Mappings whose fork flags we may not toggle (MADV_DOFORK refuses VM_IO)
 * or need not (hugetlb: a page table entry per huge page). */
static bool vmflags_unsplittable(const char *p) {
        for (; *p && *p != '\n'; p++)
                if (p[0] == ' ' && ((p[1] == 'i' && p[2] == 'o') || (p[1] == 'p' && p[2] == 'f') ||
                                    (p[1] == 'h' && p[2] == 't')))
                        return true;
        return false;
}

static uint32_t parse_vmflags(const char *p) {
        uint32_t f = 0;
        while (*p && *p != '\n') {
                while (*p == ' ')
                        p++;
                char a = p[0], b = p[1];
                if (a == 'g' && b == 'd') f |= IMG_RF_GROWSDOWN;
                else if (a == 'n' && b == 'r') f |= IMG_RF_NORESERVE;
                else if (a == 'h' && b == 'g') f |= IMG_RF_HUGEPAGE;
                else if (a == 'n' && b == 'h') f |= IMG_RF_NOHUGEPAGE;
                else if (a == 'd' && b == 'c') f |= IMG_RF_DONTFORK;
                else if (a == 'w' && b == 'f') f |= IMG_RF_WIPEONFORK;
                else if (a == 'd' && b == 'd') f |= IMG_RF_DONTDUMP;
                else if (a == 'l' && b == 'o') f |= IMG_RF_LOCKED;
                while (*p && *p != ' ' && *p != '\n')
                        p++;
        }
        return f;
}

static int read_vmflags(void) {
        size_t len;
        char *buf = read_proc("/proc/self/smaps", &len);
        if (!buf)
                return -ENOMEM;
        size_t count = 0;
        for (const char *p = buf; (p = strstr(p, "\nVmFlags:")); p++)
                count++;
        vmf = rt_alloc(RT_ARENA_SCRATCH, (count + 2) * sizeof *vmf);
        n_vmf = 0;
        if (!vmf)
                return -ENOMEM;
        uint64_t start = 0, end = 0, anon = 0;
        bool shared = false;
        for (char *line = buf; line && *line;) {
                char *nl = strchr(line, '\n');
                if (!strncmp(line, "VmFlags:", 8)) {
                        if (n_vmf < count + 2)
                                vmf[n_vmf++] = (struct vmflags) { start, end, parse_vmflags(line + 8),
                                                                  !shared && !vmflags_unsplittable(line + 8), anon };
                } else if (!strncmp(line, "Anonymous:", 10)) {
                        anon = strtoull(line + 10, NULL, 10) * 1024;
                } else if (line[0] != ' ' && strchr(line, '-') && (line[0] >= '0' && line[0] <= '9' ? 1 : (line[0] >= 'a' && line[0] <= 'f'))) {
                        char *dash;
                        uint64_t s = strtoull(line, &dash, 16);
                        if (*dash == '-') {
                                char *perms;
                                start = s;
                                end = strtoull(dash + 1, &perms, 16);
                                shared = strlen(perms) > 4 && perms[4] == 's';
                                anon = 0;
                        }
                }
                line = nl ? nl + 1 : NULL;
        }
        vmf_stale = false;
        return 0;
}

static uint32_t vmflags_of(uint64_t start, uint64_t end) {
        for (size_t i = 0; i < n_vmf; i++)
                if (vmf[i].start == start && vmf[i].end == end)
                        return vmf[i].flags;
        /* Split or merged since the read: take the flags of what contained it. */
        for (size_t i = 0; i < n_vmf; i++)
                if (vmf[i].start <= start && end <= vmf[i].end)
                        return vmf[i].flags;
        return 0;
}

static const struct crc_entry *crc_lookup(const struct stat *st) {
        for (uint32_t i = 0; i < n_crc_cache; i++) {
                const struct crc_entry *e = &crc_cache[i];
                if (e->dev == st->st_dev && e->ino == st->st_ino && e->size == (uint64_t) st->st_size &&
                    e->mtime_sec == st->st_mtim.tv_sec && e->mtime_nsec == (uint32_t) st->st_mtim.tv_nsec)
                        return e;
        }
        return NULL;
}

/* The read buffer of file_crc, shared by the files of one rt_mem_presuspend:
 * the first touch of each page of fresh memory is dear (about 10 us on some
 * virtual machines), so a buffer per file made the checksums of a fresh
 * process's libraries take 10 ms. */
#define CRC_BUF (128u << 10)
static uint8_t *crc_buf;

static int file_crc(const char *path, const struct stat *st, uint32_t *crc) {
        const struct crc_entry *e = crc_lookup(st);
        if (e) {
                *crc = e->crc;
                return 0;
        }
        int fd = rt_open_quietly(path, O_RDONLY);
        if (fd < 0)
                return fd;
        uint8_t *buf = crc_buf ? crc_buf : rt_map_scratch(CRC_BUF);
        if (!buf) {
                raw_syscall1(SYS_close, fd);
                return -ENOMEM;
        }
        uint32_t c = 0;
        long n;
        while ((n = raw_syscall3(SYS_read, fd, (long) buf, CRC_BUF)) > 0)
                c = img_crc32(c, buf, (size_t) n);
        raw_syscall1(SYS_close, fd);
        if (buf != crc_buf)
                rt_unmap_scratch(buf, CRC_BUF);
        if (n < 0)
                return (int) n;
        *crc = (uint32_t) c;
        struct crc_entry ne = { st->st_dev, st->st_ino, (uint64_t) st->st_size, st->st_mtim.tv_sec,
                                (uint32_t) st->st_mtim.tv_nsec, (uint32_t) c };
        if (n_crc_cache < CRC_CACHE)
                crc_cache[n_crc_cache++] = ne;
        else
                crc_cache[ne.ino % CRC_CACHE] = ne;
        return 0;
}

/* Parse one line of /proc/self/maps in place. */
bool rt_parse_maps_line(char *line, struct rt_maps_line *m) {
        char *p = line, *end;
        m->start = strtoull(p, &end, 16);
        if (*end != '-')
                return false;
        m->end = strtoull(end + 1, &p, 16);
        if (*p++ != ' ' || strlen(p) < 5)
                return false;
        m->prot = (p[0] == 'r' ? PROT_READ : 0) | (p[1] == 'w' ? PROT_WRITE : 0) | (p[2] == 'x' ? PROT_EXEC : 0);
        m->shared = p[3] == 's';
        p += 5;
        m->pgoff = strtoull(p, &end, 16);
        p = end + 1;
        m->dev_major = (unsigned) strtoul(p, &end, 16);
        m->dev_minor = *end == ':' ? (unsigned) strtoul(end + 1, &end, 16) : 0;
        p = end;
        m->ino = strtoull(p, &end, 10);
        p = end;
        while (*p == ' ')
                p++;
        m->name = p;
        return true;
}

/* Does the path still name the file that is mapped? */
static bool path_is_mapped_file(const struct rt_maps_line *m, struct stat *st) {
        if (stat(m->name, st) < 0)
                return false;
        if (st->st_ino == m->ino && st->st_dev == makedev(m->dev_major, m->dev_minor))
                return true;
        /* Overlay filesystems show the lower file in maps: compare through
         * the mapping itself. */
        char mf[96];
        struct stat st2;
        snprintf(mf, sizeof mf, "/proc/self/map_files/%llx-%llx", (unsigned long long) m->start,
                 (unsigned long long) m->end);
        return stat(mf, &st2) == 0 && st2.st_ino == st->st_ino && st2.st_dev == st->st_dev;
}

static bool ends_with(const char *s, const char *suffix) {
        size_t n = strlen(s), k = strlen(suffix);
        return n >= k && !strcmp(s + n - k, suffix);
}

/* A private mapping of the image a lazy restart mapped memory from: to the
 * program that is anonymous memory, every page of it data (a page not
 * present is the image's, not zero). Wherever it has moved since. */
static bool is_lazy_image(const struct rt_maps_line *m) {
        return rt.image_ino && !m->shared && m->ino == rt.image_ino &&
               makedev(m->dev_major, m->dev_minor) == rt.image_dev;
}

int rt_mem_presuspend(void) {
        int r = read_vmflags();
        if (r < 0)
                return r;
        /* Checksum mapped files now, while the program runs. */
        size_t len;
        char *buf = read_proc("/proc/self/maps", &len);
        if (!buf)
                return -ENOMEM;
        crc_buf = rt_map_scratch(CRC_BUF);
        for (char *line = buf; line && *line;) {
                char *nl = strchr(line, '\n');
                if (nl)
                        *nl = 0;
                struct rt_maps_line m;
                struct stat st;
                uint32_t crc;
                if (rt_parse_maps_line(line, &m) && m.ino && m.name[0] == '/' && !m.shared && !is_lazy_image(&m) &&
                    !ends_with(m.name, " (deleted)") && path_is_mapped_file(&m, &st) && !crc_lookup(&st))
                        (void) file_crc(m.name, &st, &crc);
                line = nl ? nl + 1 : NULL;
        }
        if (crc_buf)
                rt_unmap_scratch(crc_buf, CRC_BUF);
        crc_buf = NULL;
        return 0;
}


/* --- sharing the pages ahead of the snapshot fork ------------------------
 *
 * The pause's fork is dear on memory written since the last fork: it
 * write-protects every such page and clears the page's exclusive mark,
 * 25-35 ms per GiB on this project's machines, against about 7 ms per GiB
 * for a fork with nothing written in between (bench/README.md). So, while
 * the program runs, short-lived children are forked that do that work
 * ahead: each exits at once, leaving the pages shared-and-protected as the
 * snapshot fork would, and the snapshot fork then pays the dear part only
 * for pages written since. One fork of all the memory would stop the
 * program as long as the pause it saves: a thread that writes memory waits
 * on a fork in progress. So the memory goes in slices of SHARE_SLICE
 * anonymous bytes: all but one slice are MADV_DONTFORK for each of these
 * forks, and every flag is put back before the pause.
 *
 * Called under the fork lock, right after the smaps read: the program's
 * fork() (whose child would lack the slices) and its own MADV_*FORK calls
 * wait for it, so the flags put back are the program's own. */
#define SHARE_SLICE (128ull << 20)
#define SHARE_MIN_REGION (1ull << 20)   /* anonymous bytes worth a region's split */
#define SHARE_MIN_TOTAL (256ull << 20)  /* less, and the pause's fork is short anyway */
#define SHARE_ALIGN (2ull << 20)        /* x86-64 PMD: a transparent huge page */

static uint64_t share_sp;              /* our stack: the children run on it */

static bool share_candidate(const struct vmflags *v) {
        return v->splittable && !(v->flags & (IMG_RF_DONTFORK | IMG_RF_WIPEONFORK)) && v->anon >= SHARE_MIN_REGION &&
               v->end > v->start && !(v->start <= share_sp && share_sp < v->end);
}

static void reap(long pid) {
        while (raw_syscall4(SYS_wait4, pid, 0, __WCLONE, 0) == -EINTR)
                ;
}

/* A child that exits at once. Its exit (tearing down its copy of the page
 * tables) overlaps our next fork: it is reaped a few forks later. */
#define SHARE_UNREAPED 4
static void fork_and_forget(long *unreaped, size_t *n) {
        if (*n == SHARE_UNREAPED) {
                reap(unreaped[0]);
                memmove(unreaped, unreaped + 1, (SHARE_UNREAPED - 1) * sizeof *unreaped);
                (*n)--;
        }
        long pid = raw_syscall5(SYS_clone, 0 /* no exit signal: invisible to wait(-1) */, 0, 0, 0, 0);
        if (pid == 0)
                raw_syscall1(SYS_exit_group, 0);
        if (pid > 0)
                unreaped[(*n)++] = pid;
}

static void set_fork_flag(uint64_t start, uint64_t end, bool fork) {
        raw_syscall3(SYS_madvise, (long) start, (long) (end - start), fork ? MADV_DOFORK : MADV_DONTFORK);
}

static void set_candidates_fork_flag(bool fork) {
        for (size_t i = 0; i < n_vmf; i++)
                if (share_candidate(&vmf[i]))
                        set_fork_flag(vmf[i].start, vmf[i].end, fork);
}

/* The candidates, walked in pieces of about a budget of anonymous bytes. */
struct share_walk {
        size_t region;                  /* index into vmf */
        uint64_t pos;                   /* next address in it */
};

static bool next_piece(struct share_walk *sw, uint64_t budget, uint64_t *start, uint64_t *end, uint64_t *anon) {
        while (sw->region < n_vmf && (!share_candidate(&vmf[sw->region]) || sw->pos >= vmf[sw->region].end)) {
                sw->region++;
                if (sw->region < n_vmf)
                        sw->pos = vmf[sw->region].start;
        }
        if (sw->region >= n_vmf)
                return false;
        const struct vmflags *v = &vmf[sw->region];
        /* Virtual length holding about budget anonymous bytes, ending on a
         * huge page boundary: a split there leaves transparent huge pages
         * whole. */
        uint64_t vlen = v->end - v->start;
        uint64_t want = (uint64_t) ((double) budget * (double) vlen / (double) v->anon);
        *start = sw->pos;
        *end = MIN(v->end, ALIGN_UP(sw->pos + MAX(want, (uint64_t) PAGE_SZ), SHARE_ALIGN));
        *anon = (uint64_t) ((double) v->anon * (double) (*end - *start) / (double) vlen);
        sw->pos = *end;
        return true;
}

void rt_mem_share_ahead(void) {
        share_sp = (uint64_t) __builtin_frame_address(0);
        uint64_t total = 0;
        for (size_t i = 0; i < n_vmf; i++)
                if (share_candidate(&vmf[i]))
                        total += vmf[i].anon;
        if (total < SHARE_MIN_TOTAL)
                return;
        set_candidates_fork_flag(false);
        struct share_walk sw = { 0, n_vmf ? vmf[0].start : 0 };
        uint64_t forks = 0;
        long unreaped[SHARE_UNREAPED];
        size_t n_unreaped = 0;
        for (;;) {
                /* One slice: pieces up to SHARE_SLICE anonymous bytes. */
                struct { uint64_t start, end; } piece[16];
                size_t n = 0;
                uint64_t got = 0, s, e, a;
                while (n < 16 && got < SHARE_SLICE && next_piece(&sw, SHARE_SLICE - got, &s, &e, &a)) {
                        piece[n].start = s;
                        piece[n++].end = e;
                        got += a;
                }
                if (!n)
                        break;
                for (size_t k = 0; k < n; k++)
                        set_fork_flag(piece[k].start, piece[k].end, true);
                fork_and_forget(unreaped, &n_unreaped);
                forks++;
                for (size_t k = 0; k < n; k++)
                        set_fork_flag(piece[k].start, piece[k].end, false);
        }
        set_candidates_fork_flag(true);
        for (size_t i = 0; i < n_unreaped; i++)
                reap(unreaped[i]);
        rt_debug("shared %llu MiB of anonymous memory ahead of the snapshot in %llu forks",
                 (unsigned long long) (total >> 20), (unsigned long long) forks);
}

static int copy_region(struct rt_region *rg, size_t len, char *err, size_t errsize) {
        rg->copy = rt_copy_alloc(len);
        if (!rg->copy) {
                snprintf(err, errsize, "no memory to copy the shared region %llx-%llx",
                         (unsigned long long) rg->r.start, (unsigned long long) rg->r.end);
                return -ENOMEM;
        }
        bool unreadable = !(rg->r.prot & PROT_READ);
        if (unreadable)
                raw_syscall3(SYS_mprotect, (long) rg->r.start, (long) (rg->r.end - rg->r.start), PROT_READ);
        /* The kernel maps both sides in one call each: cheaper than a fault
         * per page. */
        raw_syscall3(SYS_madvise, (long) rg->copy, (long) len, MADV_POPULATE_WRITE);
        raw_syscall3(SYS_madvise, (long) rg->r.start, (long) len, MADV_POPULATE_READ);
        memcpy(rg->copy, (void *) rg->r.start, len);
        if (unreadable)
                raw_syscall3(SYS_mprotect, (long) rg->r.start, (long) (rg->r.end - rg->r.start), rg->r.prot);
        return 0;
}

/* Content length of a shared file mapping: pages past EOF cannot be read. */
static size_t shared_file_len(const struct rt_region *rg, uint64_t file_size) {
        uint64_t len = rg->r.end - rg->r.start;
        if (file_size <= rg->r.pgoff)
                return 0;
        return (size_t) MIN(len, ALIGN_UP(file_size - rg->r.pgoff, PAGE_SZ));
}

/* Can plain anonymous memory [start, ...) with these properties extend the
 * region before it? The kernel keeps adjacent anonymous mappings apart
 * when they came from different places (a restart moves each region from
 * its own staging area; a lazy restart maps parts of regions from the
 * image and reads their ends): as one region they are restored as one
 * mapping, so their number does not grow from restart to restart. */
static bool extends_previous(const struct rt_region *rg, const char *name) {
        if (rt_cap->n_regions == 0)
                return false;
        const struct rt_region *prev = rg - 1;
        uint32_t own = IMG_RF_GROWSDOWN | IMG_RF_STACK | IMG_RF_DONTFORK | IMG_RF_WIPEONFORK | IMG_RF_FULL;
        return rg->r.kind == IMG_RK_ANON && prev->r.kind == IMG_RK_ANON && rg->ino == 0 && prev->ino == 0 &&
               !prev->copy && prev->r.end == rg->r.start && prev->r.prot == rg->r.prot &&
               prev->r.flags == rg->r.flags && !(rg->r.flags & own) && !strcmp(prev->name, name);
}

/* Record [start,end), a piece of the mapping m (the whole VMA), as a region. */
static int capture_region(const struct rt_maps_line *m, uint64_t start, uint64_t end, bool cow, char *err, size_t errsize) {
        struct rt_region *rg = &rt_cap->regions[rt_cap->n_regions];
        memset(rg, 0, sizeof *rg);
        rg->r.start = start;
        rg->r.end = end;
        rg->r.prot = m->prot;
        rg->r.pgoff = m->pgoff + (start - m->start);
        rg->r.file = IMG_NONE;
        rg->dev = makedev(m->dev_major, m->dev_minor);
        rg->ino = m->ino;
        rg->r.flags = vmflags_of(m->start, m->end);
        const char *name = m->name;
        struct stat st;
        int shm = m->shared ? rt_shm_find_mapping(m) : -1;

        if (!strcmp(name, "[vdso]"))
                rg->r.kind = IMG_RK_VDSO;
        else if (!strncmp(name, "[vvar", 5))
                rg->r.kind = IMG_RK_VVAR;
        else if (shm >= 0) {
                /* Shared memory: its content is the object's (shm.c). */
                rg->r.kind = IMG_RK_SHM;
                rg->r.shm = (uint32_t) shm;
        } else if (m->ino == 0 || is_lazy_image(m)) {
                rg->r.kind = m->shared ? IMG_RK_ANON_SHARED : IMG_RK_ANON;
                rg->image_backed = m->ino != 0;
                if (rg->image_backed) {
                        rg->r.flags |= IMG_RF_FULL;
                        name = "";
                }
                if (!strcmp(name, "[heap]"))
                        rg->r.flags |= IMG_RF_HEAP;
                if (!strcmp(name, "[stack]"))
                        rg->r.flags |= IMG_RF_STACK | IMG_RF_GROWSDOWN;
        } else if (m->shared && (!strncmp(name, "/SYSV", 5) || rt_shm_path_is_object(name))) {
                /* rt_shared_elect lists every one of these. */
                snprintf(err, errsize, "memory at %llx-%llx is shared memory (%s) that appeared during the checkpoint",
                         (unsigned long long) start, (unsigned long long) end, name);
                return -EOPNOTSUPP;
        } else if (!m->shared && rt_shm_path_is_object(name)) {
                /* A private map of a shared memory object, which may be gone
                 * after a restart: its pages are all we keep. */
                rg->r.kind = IMG_RK_ANON;
                rg->r.flags |= IMG_RF_FULL;
        } else if (name[0] == '/' && !ends_with(name, " (deleted)") && path_is_mapped_file(m, &st)) {
                rg->r.kind = m->shared ? IMG_RK_FILE_SHARED : IMG_RK_FILE_PRIVATE;
                int idx = rt_file_add(st.st_dev, st.st_ino, name, 0, &st);
                if (idx < 0)
                        return idx;
                struct rt_file *f = &rt_cap->files[idx];
                uint32_t crc;
                if (!m->shared && !(f->f.flags & IMG_FF_CRC)) {
                        const struct crc_entry *e = crc_lookup(&st);
                        if (e || file_crc(name, &st, &crc) == 0) {
                                f->f.crc = e ? e->crc : crc;
                                f->f.flags |= IMG_FF_CRC;
                        }
                }
                rg->r.file = (uint32_t) idx;
                if (rt.cfg.ckpt_libraries && !m->shared)
                        rg->r.flags |= IMG_RF_FULL;
        } else if (!m->shared) {
                /* A private map of a file that is gone or replaced: its
                 * pages are all we have. */
                rg->r.kind = IMG_RK_ANON;
                rg->r.flags |= IMG_RF_FULL;
        } else {
                snprintf(err, errsize, "memory at %llx-%llx is a shared map of %s, which no longer exists",
                         (unsigned long long) start, (unsigned long long) end, name);
                return -EOPNOTSUPP;
        }
        if (extends_previous(rg, name)) {
                rg[-1].r.end = end;
                return 0;
        }
        size_t nlen = strlen(name);
        rg->name = rt_alloc(RT_ARENA_SCRATCH, nlen + 1);
        if (!rg->name)
                return -ENOMEM;
        memcpy((char *) rg->name, name, nlen + 1);
        rg->r.name_len = (uint32_t) nlen;
        rt_cap->n_regions++;

        /* What fork will not preserve must be copied during the pause. */
        if (!cow || rg->r.kind == IMG_RK_VDSO || rg->r.kind == IMG_RK_VVAR || rg->r.kind == IMG_RK_SHM)
                return 0;
        bool shared = rg->r.kind == IMG_RK_ANON_SHARED || rg->r.kind == IMG_RK_FILE_SHARED;
        bool fork_loses = rg->r.flags & (IMG_RF_DONTFORK | IMG_RF_WIPEONFORK);
        if (!shared && !fork_loses)
                return 0;
        size_t clen = rg->r.kind == IMG_RK_FILE_SHARED ? shared_file_len(rg, rt_cap->files[rg->r.file].f.size)
                                                       : rg->r.end - rg->r.start;
        return clen ? copy_region(rg, clen, err, errsize) : 0;
}

char *rt_read_maps(size_t *lines, char *err, size_t errsize) {
        size_t len;
        char *buf = read_proc("/proc/self/maps", &len);
        if (!buf) {
                snprintf(err, errsize, "cannot read /proc/self/maps");
                return NULL;
        }
        *lines = 0;
        for (const char *p = buf; *p; p++)
                *lines += *p == '\n';
        return buf;
}

int rt_mem_capture(bool cow, char *err, size_t errsize) {
        if (vmf_stale)
                read_vmflags();
        size_t lines;
        char *buf = rt_read_maps(&lines, err, errsize);
        if (!buf)
                return -ENOMEM;
        size_t max_regions = 2 * lines + 64;   /* cutting out scratch may split a VMA */
        rt_cap->regions = rt_alloc(RT_ARENA_SCRATCH, max_regions * sizeof(struct rt_region));
        if (!rt_cap->regions)
                return -ENOMEM;
        rt_cap->n_regions = 0;

        for (char *line = buf; line && *line;) {
                char *nl = strchr(line, '\n');
                if (nl)
                        *nl = 0;
                struct rt_maps_line m;
                bool ok = rt_parse_maps_line(line, &m);
                line = nl ? nl + 1 : NULL;
                if (!ok || !strcmp(m.name, "[vsyscall]"))
                        continue;
                uint64_t pos = m.start, ps, pe;
                while (rt_next_saved_piece(&pos, m.end, &ps, &pe)) {
                        if (rt_cap->n_regions >= max_regions) {
                                snprintf(err, errsize, "too many memory regions");
                                return -E2BIG;
                        }
                        int r = capture_region(&m, ps, pe, cow, err, errsize);
                        if (r < 0)
                                return r;
                }
        }
        return 0;
}
