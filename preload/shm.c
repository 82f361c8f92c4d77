/* Shared memory objects: MAP_SHARED anonymous memory (and shared maps of
 * /dev/zero), memfds, POSIX shared memory (/dev/shm) and System V segments,
 * seen by one or several processes of the computation.
 *
 * Each object is saved once. During ELECT every process lists the objects
 * it maps (/proc/self/maps: "/dev/zero (deleted)", "/memfd:...", "/dev/shm/...",
 * "/SYSV...", with the object's inode) or holds a descriptor of, and stands
 * for each in the KV store, twice if it can read all of it (through a
 * descriptor, its path, or by attaching the System V segment): the winner
 * among those, else among all, is its leader. After GO(ELECT) the leader
 * publishes which parts it will save ("all", or the ranges it maps); at
 * CAPTURE the others save what they map or hold that the leader does not,
 * usually nothing. Contents are copied during the pause (the copy-on-write
 * snapshot child would see the program's later writes to shared pages) and
 * only the populated pages: SEEK_DATA through a descriptor, mincore(2)
 * through a mapping (after MADV_POPULATE_READ when swap is in use: mincore
 * does not see swapped-out tmpfs pages).
 *
 * Regions of such objects carry no content of their own (mem.c): the image
 * has one IMG_R_SHM record per object and the content blocks (IMG_BT_SHM) of
 * what this process saved. The restart tool recreates each object once and
 * maps it into every process that had it (restart/shared-mem.c). */
#include <dirent.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/shm.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include "fd.h"
#include "raw-syscall.h"
#include "shm.h"
#include "util.h"

#define DELETED " (deleted)"
#define COVER_MAX 254                   /* ranges a leader can publish */
#define COVER_UNKNOWN UINT32_MAX

/* One of our mappings of an object (scratch: this checkpoint only). */
struct view {
        uint64_t start, end, pgoff;
        uint32_t prot;
        uint32_t obj;
};

/* What this process knows of an object (scratch), parallel to rt_cap->shms. */
struct obj_info {
        int fd;                         /* a descriptor of the program's on it, or -1 */
        bool full;                      /* we can read all of it */
        char key[PROTO_KEY_MAX + 1];
};

/* What the leader saves: all, or ranges of the object ([start, end) pairs). */
struct cover {
        uint32_t full;
        uint32_t n;                     /* COVER_UNKNOWN: too many to say */
        uint64_t r[COVER_MAX][2];
};

struct range {
        uint64_t start, end;
};

static struct view *views;
static uint32_t n_views;
static struct obj_info *info;

/* Copies made during a pause (ours and mem.c's), unmapped once the image is
 * written: the snapshot child has its own. */
#define MAX_COPIES 1024
static struct rst_range copies[MAX_COPIES];
static uint32_t n_copies;

void *rt_copy_alloc(size_t size) {
        void *p = rt_map_scratch(size);
        if (p && n_copies < MAX_COPIES)         /* beyond, kept until the process ends */
                copies[n_copies++] = (struct rst_range) { (uint64_t) p, (uint64_t) p + ALIGN_UP(size, PAGE_SZ) };
        return p;
}

void rt_copies_release(void) {
        for (uint32_t i = 0; i < n_copies; i++)
                rt_unmap_scratch((void *) copies[i].start, copies[i].end - copies[i].start);
        n_copies = 0;
}

bool rt_shm_path_is_object(const char *path) {
        return !strncmp(path, "/memfd:", 7) || !strncmp(path, "/dev/shm/", 9);
}

static bool ends_with(const char *s, const char *suffix) {
        size_t n = strlen(s), k = strlen(suffix);
        return n >= k && !strcmp(s + n - k, suffix);
}

static uint32_t mapping_kind(const struct rt_maps_line *m) {
        if (!m->shared)
                return 0;
        if (!strncmp(m->name, "/dev/shm/", 9))
                return IMG_SHM_POSIX;
        if (m->dev_major != 0)
                return 0;
        if (!strncmp(m->name, "/SYSV", 5))
                return IMG_SHM_SYSV;
        if (!strncmp(m->name, "/memfd:", 7))
                return IMG_SHM_MEMFD;
        if (!strncmp(m->name, "/dev/zero", 9) || !strncmp(m->name, "[anon_shmem", 11))
                return IMG_SHM_ANON;
        return 0;
}

static uint32_t path_kind(const char *path) {
        return !strncmp(path, "/memfd:", 7) ? IMG_SHM_MEMFD : IMG_SHM_POSIX;
}

/* The name kept in the image: a memfd's name, a POSIX object's path. */
static const char *object_name(uint32_t kind, const char *path, char *buf, size_t size) {
        if (kind == IMG_SHM_SYSV || kind == IMG_SHM_ANON)
                return "";
        strscpy(buf, kind == IMG_SHM_MEMFD ? path + 7 : path, size);
        if (ends_with(buf, DELETED))
                buf[strlen(buf) - strlen(DELETED)] = 0;
        return buf;
}

static int find(uint32_t kind, uint64_t dev, uint64_t ino) {
        for (uint32_t i = 0; i < rt_cap->n_shms; i++) {
                const struct img_shm *s = &rt_cap->shms[i].s;
                if (s->kind == kind && s->ino == ino && (kind == IMG_SHM_SYSV || s->dev == dev))
                        return (int) i;
        }
        return -1;
}

int rt_shm_find_mapping(const struct rt_maps_line *m) {
        uint32_t kind = mapping_kind(m);
        return kind && rt_cap->shms ? find(kind, makedev(m->dev_major, m->dev_minor), m->ino) : -1;
}

int rt_shm_find_fd(uint64_t dev, uint64_t ino) {
        if (!rt_cap->shms)
                return -1;
        int i = find(IMG_SHM_MEMFD, dev, ino);
        return i >= 0 ? i : find(IMG_SHM_POSIX, dev, ino);
}

static int add(uint32_t kind, uint64_t dev, uint64_t ino, const char *path, bool deleted) {
        int i = find(kind, dev, ino);
        if (i >= 0)
                return i;
        struct rt_shm *o = &rt_cap->shms[rt_cap->n_shms];
        memset(o, 0, sizeof *o);
        o->s.kind = kind;
        o->s.dev = kind == IMG_SHM_SYSV ? 0 : dev;
        o->s.ino = ino;
        o->s.ns = kind == IMG_SHM_SYSV ? rt_ipc_ns() : 0;
        o->s.key = -1;
        if (deleted && kind == IMG_SHM_POSIX)
                o->s.flags |= IMG_SHMF_DELETED;
        char nb[PATH_MAX];
        o->name = rt_strdup_state(object_name(kind, path, nb, sizeof nb));
        if (!o->name)
                return -ENOMEM;
        o->s.name_len = (uint32_t) strlen(o->name);
        struct obj_info *in = &info[rt_cap->n_shms];
        memset(in, 0, sizeof *in);
        in->fd = -1;
        snprintf(in->key, sizeof in->key, "shm/%s/%u/%llu/%llu", host_name(), kind,
                 (unsigned long long) (kind == IMG_SHM_SYSV ? o->s.ns : dev), (unsigned long long) ino);
        return (int) rt_cap->n_shms++;
}

/* The name under which a POSIX object is linked in its directory now: the
 * name it was mapped under may be gone while another remains (sem_open
 * creates a temporary file, links it as sem.NAME and removes the first
 * name). */
static bool find_name(const struct rt_shm *o, char *out, size_t size) {
        char dir[PATH_MAX];
        strscpy(dir, o->name, sizeof dir);
        char *slash = strrchr(dir, '/');
        if (!slash || slash == dir)
                return false;
        *slash = 0;
        int dfd = (int) raw_syscall4(SYS_openat, AT_FDCWD, (long) dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0);
        if (dfd < 0)
                return false;
        bool found = false;
        char buf[8192];
        long k;
        while (!found && (k = raw_syscall3(SYS_getdents64, dfd, (long) buf, sizeof buf)) > 0)
                for (long off = 0; off < k && !found;) {
                        struct dirent64 *de = (struct dirent64 *) (buf + off);
                        off += de->d_reclen;
                        struct stat st;
                        if (de->d_ino != o->s.ino ||
                            raw_syscall4(SYS_newfstatat, dfd, (long) de->d_name, (long) &st, AT_SYMLINK_NOFOLLOW) < 0 ||
                            st.st_ino != o->s.ino || st.st_dev != o->s.dev || !S_ISREG(st.st_mode))
                                continue;
                        snprintf(out, size, "%s/%s", dir, de->d_name);
                        found = true;
                }
        raw_syscall1(SYS_close, dfd);
        return found;
}

static bool can_open(const char *path) {
        int fd = (int) raw_syscall4(SYS_openat, AT_FDCWD, (long) path, O_RDONLY | O_CLOEXEC, 0);
        if (fd < 0)
                return false;
        raw_syscall1(SYS_close, fd);
        return true;
}

/* Size, mode and whatever else the kernel says of object i. */
static int describe(uint32_t i, char *err, size_t errsize) {
        struct rt_shm *o = &rt_cap->shms[i];
        struct obj_info *in = &info[i];
        uint64_t extent = 0;
        for (uint32_t v = 0; v < n_views; v++)
                if (views[v].obj == i)
                        extent = MAX(extent, views[v].pgoff + (views[v].end - views[v].start));
        o->s.size = extent;
        struct stat st;
        switch (o->s.kind) {
        case IMG_SHM_SYSV: {
                struct shmid_ds ds;
                long r = raw_syscall3(SYS_shmctl, (long) o->s.ino, IPC_STAT, (long) &ds);
                if (r < 0) {
                        snprintf(err, errsize, "cannot read System V shared memory segment %llu: %s",
                                 (unsigned long long) o->s.ino, strerror((int) -r));
                        return (int) r;
                }
                o->s.size = ds.shm_segsz;
                o->s.key = ds.shm_perm.__key;
                o->s.mode = ds.shm_perm.mode & 0777;
                o->s.uid = ds.shm_perm.uid;
                o->s.gid = ds.shm_perm.gid;
                if (ds.shm_perm.mode & SHM_DEST)
                        o->s.flags |= IMG_SHMF_RMID;
                long a = raw_syscall3(SYS_shmat, (long) o->s.ino, 0, SHM_RDONLY);
                if (a >= 0 || a < -4095) {
                        raw_syscall1(SYS_shmdt, a);
                        in->full = true;
                }
                return 0;
        }
        case IMG_SHM_ANON:
                return 0;
        default:
                if (o->s.kind == IMG_SHM_POSIX) {
                        char now[PATH_MAX];
                        if (find_name(o, now, sizeof now)) {
                                if (strcmp(now, o->name) && !(o->name = rt_strdup_state(now)))
                                        return -ENOMEM;
                                o->s.name_len = (uint32_t) strlen(o->name);
                                o->s.flags &= ~(uint32_t) IMG_SHMF_DELETED;
                        } else
                                o->s.flags |= IMG_SHMF_DELETED;
                }
                if (in->fd >= 0 && fstat(in->fd, &st) == 0) {
                        in->full = true;
                } else if (o->s.kind == IMG_SHM_POSIX && !(o->s.flags & IMG_SHMF_DELETED) && stat(o->name, &st) == 0 &&
                           st.st_ino == o->s.ino && st.st_dev == o->s.dev) {
                        in->full = can_open(o->name);
                } else
                        return 0;       /* known only through our mappings */
                o->s.size = (uint64_t) st.st_size;
                o->s.mode = st.st_mode & 07777;
                o->s.uid = st.st_uid;
                o->s.gid = st.st_gid;
                if (in->fd >= 0 && o->s.kind == IMG_SHM_MEMFD) {
                        long seals = raw_syscall2(SYS_fcntl, in->fd, F_GET_SEALS);
                        o->s.seals = seals > 0 ? (uint32_t) seals : 0;
                }
                return 0;
        }
}

int rt_shared_elect(char *err, size_t errsize) {
        rt_copies_release();
        rt_cap->shms = NULL;
        rt_cap->n_shms = 0;
        n_views = 0;
        size_t lines;
        char *buf = rt_read_maps(&lines, err, errsize);
        if (!buf)
                return -ENOMEM;
        size_t max = lines + rt_cap->n_fds + 256 + 1;    /* maps, descriptors, System V segments */
        views = rt_alloc(RT_ARENA_SCRATCH, (lines + 1) * sizeof *views);
        info = rt_alloc(RT_ARENA_SCRATCH, max * sizeof *info);
        rt_cap->shms = rt_alloc(RT_ARENA_STATE, max * sizeof *rt_cap->shms);
        if (!views || !info || !rt_cap->shms)
                return -ENOMEM;
        for (char *line = buf; line && *line;) {
                char *nl = strchr(line, '\n');
                if (nl)
                        *nl = 0;
                struct rt_maps_line m;
                bool ok = rt_parse_maps_line(line, &m);
                line = nl ? nl + 1 : NULL;
                uint32_t kind = ok ? mapping_kind(&m) : 0;
                if (!kind)
                        continue;
                int i = add(kind, makedev(m.dev_major, m.dev_minor), m.ino, m.name, ends_with(m.name, DELETED));
                if (i < 0)
                        return i;
                views[n_views++] = (struct view) { m.start, m.end, m.pgoff, m.prot, (uint32_t) i };
        }
        /* System V segments the program used, even if none is attached now:
         * a segment lives on without attachments. */
        int r = rt_sysv_elect(err, errsize);
        if (r < 0)
                return r;
        int32_t segs[256];
        uint32_t n_segs = rt_sysv_segments(segs, ARRAY_SIZE(segs));
        for (uint32_t k = 0; k < n_segs; k++) {
                struct shmid_ds ds;
                if (find(IMG_SHM_SYSV, 0, (uint64_t) segs[k]) >= 0 ||
                    raw_syscall3(SYS_shmctl, segs[k], IPC_STAT, (long) &ds) < 0 || rt_cap->n_shms == max)
                        continue;       /* mapped (listed), or gone, or not ours to read */
                if ((r = add(IMG_SHM_SYSV, 0, (uint64_t) segs[k], "", false)) < 0)
                        return r;
        }
        for (uint32_t k = 0; k < rt_cap->n_fds; k++) {
                const struct rt_fd *f = &rt_cap->fds[k];
                if (f->d.kind != IMG_FD_SHM)
                        continue;
                int i = add(path_kind(f->path), f->d.dev, f->d.ino, f->path, ends_with(f->path, DELETED));
                if (i < 0)
                        return i;
                if (info[i].fd < 0)
                        info[i].fd = f->d.fd;
        }
        for (uint32_t i = 0; i < rt_cap->n_shms; i++) {
                if ((r = describe(i, err, errsize)) < 0)
                        return r;
                char key[PROTO_KEY_MAX + 1];
                snprintf(key, sizeof key, "%s/any", info[i].key);
                if ((r = rt_obj_stand(key)) < 0)
                        return r;
                snprintf(key, sizeof key, "%s/full", info[i].key);
                if (info[i].full && (r = rt_obj_stand(key)) < 0)
                        return r;
        }
        return 0;
}

/* --- leaders ---------------------------------------------------------- */

int rt_obj_stand(const char *key) {
        struct rt_obj_vote v;
        memset(&v, 0, sizeof v);
        strscpy(v.upid, rt.cfg.upid, sizeof v.upid);
        v.pid = rt.pid;
        return rt_kv_put(key, &v, sizeof v);
}

int rt_obj_leader(const char *key, char *upid, size_t size) {
        struct rt_obj_vote v;
        size_t len;
        int r = rt_kv_get(key, &v, sizeof v, &len);
        if (r < 0)
                return r;
        if (len != sizeof v)
                return -EBADMSG;
        v.upid[sizeof v.upid - 1] = 0;
        if (upid)
                strscpy(upid, v.upid, size);
        return !strcmp(v.upid, rt.cfg.upid);
}

/* Our views of object i as sorted, merged ranges of the object. */
static uint32_t my_ranges(uint32_t i, struct range *out, uint32_t max) {
        uint32_t n = 0;
        for (uint32_t v = 0; v < n_views; v++) {
                if (views[v].obj != i || n == max)
                        continue;
                struct range r = { views[v].pgoff, views[v].pgoff + (views[v].end - views[v].start) };
                uint32_t k = n;
                while (k > 0 && out[k - 1].start > r.start) {
                        out[k] = out[k - 1];
                        k--;
                }
                out[k] = r;
                n++;
        }
        uint32_t m = 0;
        for (uint32_t k = 0; k < n; k++) {
                if (m > 0 && out[k].start <= out[m - 1].end)
                        out[m - 1].end = MAX(out[m - 1].end, out[k].end);
                else
                        out[m++] = out[k];
        }
        return m;
}

static void cover_key(char *key, size_t size, uint32_t i) {
        snprintf(key, size, "%s/cover", info[i].key);
}

int rt_shared_resolve(char *err, size_t errsize) {
        for (uint32_t i = 0; i < rt_cap->n_shms; i++) {
                struct rt_shm *o = &rt_cap->shms[i];
                char key[PROTO_KEY_MAX + 1];
                snprintf(key, sizeof key, "%s/full", info[i].key);
                int r = rt_obj_leader(key, NULL, 0);
                if (r == -ENOENT) {
                        snprintf(key, sizeof key, "%s/any", info[i].key);
                        r = rt_obj_leader(key, NULL, 0);
                }
                if (r < 0) {
                        if (r != -ECANCELED)
                                snprintf(err, errsize, "cannot elect who saves %s %s: %s", img_shm_kind_name(o->s.kind),
                                         o->name, strerror(-r));
                        return r;
                }
                o->leader = r == 1;
                if (!o->leader)
                        continue;
                o->s.flags |= IMG_SHMF_LEADER;
                struct cover *c = rt_alloc(RT_ARENA_SCRATCH, sizeof *c);
                struct range *rs = rt_alloc(RT_ARENA_SCRATCH, (n_views + 1) * sizeof *rs);
                if (!c || !rs)
                        return -ENOMEM;
                memset(c, 0, sizeof *c);
                c->full = info[i].full;
                if (!c->full) {
                        uint32_t n = my_ranges(i, rs, n_views + 1);
                        c->n = n > COVER_MAX ? COVER_UNKNOWN : n;
                        for (uint32_t k = 0; k < n && k < COVER_MAX; k++) {
                                c->r[k][0] = rs[k].start;
                                c->r[k][1] = rs[k].end;
                        }
                }
                cover_key(key, sizeof key, i);
                size_t clen = offsetof(struct cover, r) + (c->n == COVER_UNKNOWN ? 0 : c->n) * sizeof c->r[0];
                if ((r = rt_kv_put(key, c, clen)) < 0) {
                        snprintf(err, errsize, "cannot publish what is saved of %s: %s", img_shm_kind_name(o->s.kind),
                                 strerror(-r));
                        return r;
                }
        }
        return rt_sysv_resolve(err, errsize);
}

/* --- contents --------------------------------------------------------- */

/* a minus b, both sorted and disjoint, into out (room for na + nb). */
static uint32_t subtract(const struct range *a, uint32_t na, const struct range *b, uint32_t nb, struct range *out) {
        uint32_t n = 0;
        for (uint32_t i = 0; i < na; i++) {
                uint64_t s = a[i].start;
                for (uint32_t k = 0; k < nb && s < a[i].end; k++) {
                        if (b[k].end <= s || b[k].start >= a[i].end)
                                continue;
                        if (b[k].start > s)
                                out[n++] = (struct range) { s, b[k].start };
                        s = MAX(s, b[k].end);
                }
                if (s < a[i].end)
                        out[n++] = (struct range) { s, a[i].end };
        }
        return n;
}

/* A piece to copy: from a descriptor (addr 0) or from memory. */
struct piece {
        uint64_t off, len, addr;
};

struct pieces {
        struct piece *p;
        uint32_t n, cap;
        uint64_t bytes;
};

static int piece_add(struct pieces *ps, uint64_t off, uint64_t len, uint64_t addr) {
        if (ps->n > 0) {
                struct piece *l = &ps->p[ps->n - 1];
                if (l->off + l->len == off && (l->addr ? l->addr + l->len == addr : addr == 0)) {
                        l->len += len;
                        ps->bytes += len;
                        return 0;
                }
        }
        if (ps->n == ps->cap) {
                uint32_t ncap = ps->cap ? ps->cap * 2 : 256;
                struct piece *np = rt_alloc(RT_ARENA_SCRATCH, ncap * sizeof *np);
                if (!np)
                        return -ENOMEM;
                if (ps->n)
                        memcpy(np, ps->p, ps->n * sizeof *np);
                ps->p = np;
                ps->cap = ncap;
        }
        ps->p[ps->n++] = (struct piece) { off, len, addr };
        ps->bytes += len;
        return 0;
}

static bool swap_in_use(void) {
        char buf[4096];
        if (read_small_file("/proc/meminfo", buf, sizeof buf) < 0)
                return true;
        const char *t = strstr(buf, "SwapTotal:"), *f = strstr(buf, "SwapFree:");
        return !t || !f || strtoull(t + 10, NULL, 10) != strtoull(f + 9, NULL, 10);
}

/* The populated pages of [off, off+len) through a descriptor. */
static int pieces_from_fd(int fd, uint64_t off, uint64_t len, uint64_t size, struct pieces *ps) {
        uint64_t end = MIN(off + len, ALIGN_UP(size, (uint64_t) PAGE_SZ));
        uint64_t pos = off;
        while (pos < end) {
                long d = raw_syscall3(SYS_lseek, fd, (long) pos, SEEK_DATA);
                if (d == -ENXIO)
                        break;
                if (d < 0)
                        return (int) d;
                if ((uint64_t) d >= end)
                        break;
                long h = raw_syscall3(SYS_lseek, fd, d, SEEK_HOLE);
                uint64_t s = ALIGN_DOWN((uint64_t) d, (uint64_t) PAGE_SZ);
                uint64_t e = h < 0 ? end : MIN(end, ALIGN_UP((uint64_t) h, (uint64_t) PAGE_SZ));
                s = MAX(s, pos);
                if (e <= s)
                        break;
                int r = piece_add(ps, s, e - s, 0);
                if (r < 0)
                        return r;
                pos = e;
        }
        return 0;
}

#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22
#define MADV_POPULATE_WRITE 23
#endif

/* The populated pages of [addr, addr+len), object offset off, by mincore.
 * swapped: swap is in use, and mincore does not see tmpfs pages swapped
 * out: bring them in first (pages past the end of a file fail quietly
 * instead of raising SIGBUS, and stay out of the copy). */
static int pieces_from_memory(uint64_t addr, uint64_t off, uint64_t len, bool swapped, struct pieces *ps) {
        size_t npages = len / PAGE_SZ;
        if (swapped)
                raw_syscall3(SYS_madvise, (long) addr, (long) len, MADV_POPULATE_READ);
        uint8_t *vec = rt_map_scratch(ALIGN_UP(npages, PAGE_SZ));
        if (!vec)
                return -ENOMEM;
        long r = raw_syscall3(SYS_mincore, (long) addr, (long) len, (long) vec);
        for (size_t p = 0; p < npages && r == 0;) {
                if (!(vec[p] & 1)) {
                        p++;
                        continue;
                }
                size_t q = p + 1;
                while (q < npages && (vec[q] & 1))
                        q++;
                r = piece_add(ps, off + p * PAGE_SZ, (q - p) * PAGE_SZ, addr + p * PAGE_SZ);
                p = q;
        }
        rt_unmap_scratch(vec, ALIGN_UP(npages, PAGE_SZ));
        return (int) r;
}

/* Copy from memory that may not be readable (PROT_NONE, write-only). Its
 * pages are mapped in first by the kernel, in one call: a fault per page
 * (the pages another process wrote are not in our page tables) costs more
 * than the copy. */
static void copy_memory(uint8_t *dst, uint64_t addr, uint64_t len, uint32_t prot) {
        uint64_t s = ALIGN_DOWN(addr, (uint64_t) PAGE_SZ), e = ALIGN_UP(addr + len, (uint64_t) PAGE_SZ);
        if (!(prot & PROT_READ))
                raw_syscall3(SYS_mprotect, (long) s, (long) (e - s), PROT_READ);
        raw_syscall3(SYS_madvise, (long) s, (long) (e - s), MADV_POPULATE_READ);
        memcpy(dst, (const void *) addr, len);
        if (!(prot & PROT_READ))
                raw_syscall3(SYS_mprotect, (long) s, (long) (e - s), prot);
}

static uint32_t view_prot(uint64_t addr) {
        for (uint32_t v = 0; v < n_views; v++)
                if (views[v].start <= addr && addr < views[v].end)
                        return views[v].prot;
        return PROT_READ;
}

/* Where we read object i from: a descriptor of our own (opened here), a
 * temporary attach of the whole System V segment, or our mappings. */
struct source {
        int fd;
        uint64_t attach;
};

static int open_source(uint32_t i, struct source *src) {
        const struct rt_shm *o = &rt_cap->shms[i];
        src->fd = -1;
        src->attach = 0;
        if (!info[i].full)
                return 0;
        if (o->s.kind == IMG_SHM_SYSV) {
                long a = raw_syscall3(SYS_shmat, (long) o->s.ino, 0, SHM_RDONLY);
                if (a < 0 && a > -4096)
                        return (int) a;
                src->attach = (uint64_t) a;
                return 0;
        }
        char path[64];
        const char *p = o->name;
        if (info[i].fd >= 0) {
                snprintf(path, sizeof path, "/proc/self/fd/%d", info[i].fd);
                p = path;
        }
        src->fd = (int) raw_syscall4(SYS_openat, AT_FDCWD, (long) p, O_RDONLY | O_CLOEXEC, 0);
        return src->fd < 0 ? src->fd : 0;
}

static void close_source(const struct rt_shm *o, struct source *src) {
        if (src->fd >= 0)
                raw_syscall1(SYS_close, src->fd);
        if (src->attach)
                raw_syscall1(SYS_shmdt, (long) src->attach);
}

/* The ranges of object i we save: all we can read, less what the leader
 * saves. */
static int wanted(uint32_t i, struct range **out, uint32_t *n_out) {
        const struct rt_shm *o = &rt_cap->shms[i];
        uint32_t cap = n_views + COVER_MAX + 2;
        struct range *mine = rt_alloc(RT_ARENA_SCRATCH, cap * sizeof *mine);
        struct range *res = rt_alloc(RT_ARENA_SCRATCH, 2 * cap * sizeof *res);
        if (!mine || !res)
                return -ENOMEM;
        uint32_t n;
        if (info[i].full) {
                mine[0] = (struct range) { 0, ALIGN_UP(o->s.size, (uint64_t) PAGE_SZ) };
                n = mine[0].end ? 1 : 0;
        } else
                n = my_ranges(i, mine, cap);
        if (o->leader) {
                *out = mine;
                *n_out = n;
                return 0;
        }
        struct cover *c = rt_alloc(RT_ARENA_SCRATCH, sizeof *c);
        if (!c)
                return -ENOMEM;
        char key[PROTO_KEY_MAX + 1];
        size_t len;
        cover_key(key, sizeof key, i);
        int r = rt_kv_get(key, c, sizeof *c, &len);
        if (r < 0)
                return r;
        if (len < offsetof(struct cover, r) ||
            (c->n != COVER_UNKNOWN && (c->n > COVER_MAX || len != offsetof(struct cover, r) + c->n * sizeof c->r[0])))
                return -EBADMSG;
        if (c->full) {
                *n_out = 0;
                return 0;
        }
        if (c->n == COVER_UNKNOWN) {
                *out = mine;
                *n_out = n;
                return 0;
        }
        struct range *theirs = rt_alloc(RT_ARENA_SCRATCH, (c->n + 1) * sizeof *theirs);
        if (!theirs)
                return -ENOMEM;
        for (uint32_t k = 0; k < c->n; k++)
                theirs[k] = (struct range) { c->r[k][0], c->r[k][1] };
        *out = res;
        *n_out = subtract(mine, n, theirs, c->n, res);
        return 0;
}

/* The pieces of range w of object i, read through src or our mappings. */
static int find_pieces(uint32_t i, const struct source *src, struct range w, bool swapped, struct pieces *ps) {
        const struct rt_shm *o = &rt_cap->shms[i];
        if (src->fd >= 0)
                return pieces_from_fd(src->fd, w.start, w.end - w.start, o->s.size, ps);
        if (src->attach)
                return pieces_from_memory(src->attach + w.start, w.start, w.end - w.start, swapped, ps);
        /* Through our views, in order of the object's offsets. */
        uint64_t pos = w.start;
        while (pos < w.end) {
                const struct view *best = NULL;
                for (uint32_t v = 0; v < n_views; v++) {
                        const struct view *x = &views[v];
                        if (x->obj == i && x->pgoff <= pos && pos < x->pgoff + (x->end - x->start))
                                best = x;
                }
                if (!best)
                        return -EFAULT;         /* my_ranges promised it */
                uint64_t stop = MIN(w.end, best->pgoff + (best->end - best->start));
                int r = pieces_from_memory(best->start + (pos - best->pgoff), pos, stop - pos, swapped, ps);
                if (r < 0)
                        return r;
                pos = stop;
        }
        return 0;
}

static int snapshot(uint32_t i, bool swapped, char *err, size_t errsize) {
        struct rt_shm *o = &rt_cap->shms[i];
        struct range *w;
        uint32_t nw = 0;
        int r = wanted(i, &w, &nw);
        if (r < 0) {
                if (r != -ECANCELED)
                        snprintf(err, errsize, "cannot learn what is saved of %s %s: %s", img_shm_kind_name(o->s.kind),
                                 o->name, strerror(-r));
                return r;
        }
        if (nw == 0)
                return 0;
        struct source src;
        if ((r = open_source(i, &src)) < 0) {
                snprintf(err, errsize, "cannot read %s %s: %s", img_shm_kind_name(o->s.kind), o->name, strerror(-r));
                return r;
        }
        struct pieces ps = { 0 };
        for (uint32_t k = 0; k < nw && r == 0; k++)
                r = find_pieces(i, &src, w[k], swapped, &ps);
        uint8_t *buf = NULL;
        if (r == 0 && ps.n) {
                o->ext = rt_alloc(RT_ARENA_SCRATCH, ps.n * sizeof *o->ext);
                buf = rt_copy_alloc(ps.bytes);
                if (!o->ext || !buf)
                        r = -ENOMEM;
                else
                        raw_syscall3(SYS_madvise, (long) buf, (long) ps.bytes, MADV_POPULATE_WRITE);
        }
        uint64_t at = 0;
        for (uint32_t k = 0; r == 0 && k < ps.n; k++) {
                const struct piece *p = &ps.p[k];
                if (p->addr)
                        copy_memory(buf + at, p->addr, p->len, src.attach ? PROT_READ : view_prot(p->addr));
                else {
                        /* Past the end of the file the copy stays zero. */
                        long n = raw_syscall4(SYS_pread64, src.fd, (long) (buf + at), (long) p->len, (long) p->off);
                        if (n < 0)
                                r = (int) n;
                }
                o->ext[k] = (struct rt_shm_extent) { p->off, p->len, buf + at };
                at += p->len;
        }
        close_source(o, &src);
        if (r < 0) {
                snprintf(err, errsize, "cannot copy %s %s: %s", img_shm_kind_name(o->s.kind), o->name, strerror(-r));
                return r;
        }
        o->n_ext = ps.n;
        return 0;
}

int rt_shared_capture(char *err, size_t errsize) {
        bool swapped = rt_cap->n_shms > 0 && swap_in_use();
        for (uint32_t i = 0; i < rt_cap->n_shms; i++) {
                int r = snapshot(i, swapped, err, errsize);
                if (r < 0)
                        return r;
        }
        int r = rt_sysv_capture(err, errsize);
        if (r < 0)
                return r;
        return rt_locks_capture(err, errsize);
}

int rt_shared_rst_refill(char *err, size_t errsize) {
        n_copies = 0;           /* they were the lost process's */
        int r = rt_sysv_rst_refill(err, errsize);
        if (r < 0)
                return r;
        return rt_locks_rst_refill(err, errsize);
}
