/* Shared memory at restart: one object for each IMG_R_SHM identity (host,
 * kind, device and inode at checkpoint) across all images, created here,
 * in dmtcp_restart, before any process of the computation exists:
 *
 *   anonymous  a MAP_SHARED|MAP_ANONYMOUS mapping of ours; each process
 *              inherits it and the restorer makes its views of it with
 *              mremap(old_size 0), which keeps them views of the same pages
 *              (and, in /proc/PID/maps, "/dev/zero (deleted)" again)
 *   memfd      memfd_create with the memfd's name, size, mode and seals
 *   POSIX      the file in /dev/shm under its name (created if missing,
 *              refused if another user owns it), or an unnamed file there
 *              if the program had unlinked it
 *   System V   a segment with its key, mode and id (sysv.c)
 *
 * Contents come from the content blocks of every image that saved some of
 * the object (its leader, plus what others mapped and the leader did not).
 * The processes inherit our descriptors and mappings through fork; loader.c
 * maps the views of each. Every process drops what it does not use once
 * its children are created (rst_shared_release). */
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <unistd.h>
#include <sys/mman.h>
#include <sys/shm.h>
#include <sys/stat.h>

#include "addr.h"
#include "shared.h"
#include "util.h"

#ifndef MFD_ALLOW_SEALING
#define MFD_ALLOW_SEALING 2U
#endif

static struct rst_shm *objs;
static size_t n_objs;
static struct rst_image *images;
static size_t n_images;
static uint32_t **obj_of;               /* [image][shm record] -> objs index */

struct sysv_set {
        const char *host;
        const struct img_parsed_sysv *v;
};
static struct sysv_set *sets;
static size_t n_sets;

static bool same_object(const struct rst_shm *o, const char *host, const struct img_shm *s) {
        if (strcmp(o->host, host) || o->s.kind != s->kind || o->s.ino != s->ino)
                return false;
        return s->kind == IMG_SHM_SYSV ? o->s.ns == s->ns : o->s.dev == s->dev;
}

static const char *object_desc(const struct rst_shm *o, char *buf, size_t size) {
        if (o->s.kind == IMG_SHM_SYSV)
                snprintf(buf, size, "System V shared memory segment %llu (key %#x)", (unsigned long long) o->s.ino,
                         (unsigned) o->s.key);
        else if (o->name[0])
                snprintf(buf, size, "%s %s", img_shm_kind_name(o->s.kind), o->name);
        else
                snprintf(buf, size, "%s (inode %llu)", img_shm_kind_name(o->s.kind), (unsigned long long) o->s.ino);
        return buf;
}

int rst_shared_collect(struct rst_image *ims, size_t n, char *err, size_t errsize) {
        images = ims;
        n_images = n;
        size_t total = 0, total_sets = 0;
        for (size_t i = 0; i < n; i++) {
                total += ims[i].img.n_shms;
                total_sets += ims[i].img.n_sysv;
        }
        objs = calloc(total + 1, sizeof *objs);
        sets = calloc(total_sets + 1, sizeof *sets);
        obj_of = calloc(n + 1, sizeof *obj_of);
        if (!objs || !sets || !obj_of)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++) {
                const struct img *img = &ims[i].img;
                const char *host = img->hdr.host;
                obj_of[i] = calloc(img->n_shms + 1, sizeof **obj_of);
                if (!obj_of[i])
                        return -ENOMEM;
                for (size_t k = 0; k < img->n_shms; k++) {
                        const struct img_parsed_shm *ps = &img->shms[k];
                        size_t j = 0;
                        while (j < n_objs && !same_object(&objs[j], host, &ps->s))
                                j++;
                        struct rst_shm *o = &objs[j];
                        if (j == n_objs) {
                                n_objs++;
                                o->s = ps->s;
                                o->name = ps->name.s;
                                o->host = host;
                                o->fd = -1;
                                o->shmid = -1;
                        }
                        uint64_t size = MAX(o->s.size, ps->s.size);
                        if (ps->s.flags & IMG_SHMF_LEADER) {
                                if (o->have_leader) {
                                        char d[PATH_MAX + 64];
                                        snprintf(err, errsize, "image %s: two processes saved %s", ims[i].path,
                                                 object_desc(o, d, sizeof d));
                                        return -EBADMSG;
                                }
                                o->s = ps->s;
                                o->name = ps->name.s;
                                o->have_leader = true;
                        }
                        o->s.size = size;
                        obj_of[i][k] = (uint32_t) j;
                }
                for (size_t k = 0; k < img->n_sysv; k++) {
                        const struct img_parsed_sysv *v = &img->sysv[k];
                        for (size_t j = 0; j < n_sets; j++)
                                if (!strcmp(sets[j].host, host) && sets[j].v->s.ns == v->s.ns &&
                                    sets[j].v->s.kind == v->s.kind && sets[j].v->s.id == v->s.id) {
                                        snprintf(err, errsize, "image %s: System V %s %d was saved twice", ims[i].path,
                                                 v->s.kind == IMG_SYSV_SEM ? "semaphore set" : "message queue", v->s.id);
                                        return -EBADMSG;
                                }
                        sets[n_sets++] = (struct sysv_set) { host, v };
                }
        }
        for (size_t j = 0; j < n_objs; j++)
                if (!objs[j].have_leader) {
                        char d[PATH_MAX + 64];
                        const char *user = "?";
                        for (size_t i = 0; i < n && user[0] == '?'; i++)
                                for (size_t k = 0; k < ims[i].img.n_shms; k++)
                                        if (obj_of[i][k] == j)
                                                user = ims[i].path;
                        snprintf(err, errsize, "image %s shares %s with a process whose image is not being restarted "
                                 "with it; restart the whole checkpoint", user, object_desc(&objs[j], d, sizeof d));
                        return -ENOENT;
                }
        return 0;
}

bool rst_shared_need_ipc_ns(void) {
        for (size_t j = 0; j < n_objs; j++)
                if (objs[j].s.kind == IMG_SHM_SYSV)
                        return true;
        return n_sets > 0;
}

const struct rst_shm *rst_shared_get(const struct rst_image *im, uint32_t shm) {
        if (!images || im < images || im >= images + n_images)
                return NULL;
        size_t i = (size_t) (im - images);
        return shm < im->img.n_shms ? &objs[obj_of[i][shm]] : NULL;
}

bool rst_shared_is_base(uint64_t start, uint64_t end) {
        for (size_t j = 0; j < n_objs; j++)
                if (objs[j].base && start >= objs[j].base &&
                    end <= objs[j].base + ALIGN_UP(objs[j].s.size, (uint64_t) PAGE_SZ))
                        return true;
        return false;
}

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_READ 22
#define MADV_POPULATE_WRITE 23
#endif

/* Decoding the blocks of one image into an object, by several threads. */
struct fill_job {
        const struct rst_image *im;
        const uint8_t *map;             /* the image, mapped */
        const struct img_parsed_shm *ps;
        uint8_t *mem;                   /* the object */
        _Atomic uint32_t next;
        _Atomic int err;
        uint32_t bad;                   /* the first block that failed */
        struct img_error e;
        pthread_mutex_t lock;
};

/* Into pages populated by the kernel, from a populated mapping of the image:
 * a page fault per page costs more than the copy. */
static void *fill_worker(void *arg) {
        struct fill_job *fj = arg;
        for (;;) {
                uint32_t b = atomic_fetch_add(&fj->next, 1);
                if (b >= fj->ps->n_blocks || atomic_load(&fj->err))
                        break;
                const struct img_block *bl = &fj->im->img.blocks[fj->ps->first_block + b];
                const uint8_t *src = fj->map + bl->file_off;
                madvise(fj->mem + bl->addr, bl->ulen, MADV_POPULATE_WRITE);
                madvise((void *) ALIGN_DOWN((uintptr_t) src, PAGE_SZ),
                        ALIGN_UP(bl->clen + ((uintptr_t) src % PAGE_SZ), PAGE_SZ), MADV_POPULATE_READ);
                struct img_error e = { 0 };
                int r = img_decode_block(bl, src, fj->mem + bl->addr, &e);
                if (r < 0) {
                        pthread_mutex_lock(&fj->lock);
                        if (!atomic_load(&fj->err)) {
                                fj->e = e;
                                fj->bad = b;
                                atomic_store(&fj->err, r);
                        }
                        pthread_mutex_unlock(&fj->lock);
                        break;
                }
        }
        return NULL;
}

/* Every content block of object j, from every image, into its memory at
 * mem. */
static int fill(size_t j, uint8_t *mem, char *err, size_t errsize) {
        long nc = sysconf(_SC_NPROCESSORS_ONLN);
        unsigned n_threads = nc < 1 ? 1 : nc > 16 ? 16 : (unsigned) nc;
        for (size_t i = 0; i < n_images; i++) {
                const struct img *img = &images[i].img;
                for (size_t k = 0; k < img->n_shms; k++) {
                        const struct img_parsed_shm *ps = &img->shms[k];
                        if (obj_of[i][k] != j || ps->n_blocks == 0)
                                continue;
                        void *map = mmap(NULL, images[i].size, PROT_READ, MAP_PRIVATE, images[i].fd, 0);
                        if (map == MAP_FAILED) {
                                snprintf(err, errsize, "image %s: cannot map it: %m", images[i].path);
                                return -errno;
                        }
                        struct fill_job fj = { .im = &images[i], .map = map, .ps = ps, .mem = mem,
                                               .lock = PTHREAD_MUTEX_INITIALIZER };
                        pthread_t th[16];
                        unsigned started = 0;
                        for (unsigned t = 1; t < n_threads; t++)
                                if (pthread_create(&th[started], NULL, fill_worker, &fj) == 0)
                                        started++;
                        fill_worker(&fj);
                        for (unsigned t = 0; t < started; t++)
                                pthread_join(th[t], NULL);
                        munmap(map, images[i].size);
                        int r = atomic_load(&fj.err);
                        if (r < 0) {
                                char d[PATH_MAX + 64];
                                snprintf(err, errsize, "image %s: cannot restore %s: %s", images[i].path,
                                         object_desc(&objs[j], d, sizeof d), fj.e.what);
                                return r;
                        }
                }
        }
        return 0;
}

static int create_anon(size_t j, char *err, size_t errsize) {
        struct rst_shm *o = &objs[j];
        uint64_t len = ALIGN_UP(o->s.size, (uint64_t) PAGE_SZ);
        if (len == 0)
                return 0;
        /* Somewhere no image has memory, so every process can keep it until
         * its views are made. */
        struct addr_map busy = { 0 };
        int r = addr_add_self(&busy);
        for (size_t i = 0; r == 0 && i < n_images; i++)
                for (size_t k = 0; r == 0 && k < images[i].img.n_regions; k++)
                        r = addr_add(&busy, images[i].img.regions[k].r.start, images[i].img.regions[k].r.end);
        uint64_t at = r == 0 ? addr_map_free(&busy, len, 0, MAP_NORESERVE) : 0;
        addr_free(&busy);
        void *p = at ? mmap((void *) at, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE,
                            -1, 0)
                     : MAP_FAILED;
        if (p == MAP_FAILED) {
                snprintf(err, errsize, "no room for %llu bytes of shared anonymous memory", (unsigned long long) len);
                return -ENOMEM;
        }
        o->base = (uint64_t) p;
        return fill(j, p, err, errsize);
}

static int open_posix(struct rst_shm *o, char *err, size_t errsize) {
        if (o->s.flags & IMG_SHMF_DELETED) {
                /* Unlinked by the program: an unnamed file in its directory. */
                char dir[PATH_MAX];
                strscpy(dir, o->name, sizeof dir);
                char *slash = strrchr(dir, '/');
                if (slash && slash != dir)
                        *slash = 0;
                int fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
                if (fd < 0)
                        snprintf(err, errsize, "cannot recreate the unlinked shared memory object %s in %s: %m", o->name,
                                 dir);
                return fd < 0 ? -errno : fd;
        }
        int fd = open(o->name, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, o->s.mode & 0777);
        if (fd < 0) {
                snprintf(err, errsize, "cannot recreate the shared memory object %s: %m", o->name);
                return -errno;
        }
        struct stat st;
        if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_uid != getuid()) {
                snprintf(err, errsize, "the shared memory object %s exists and is %s; remove it or restart as its owner",
                         o->name, S_ISREG(st.st_mode) ? "another user's" : "not a file");
                close(fd);
                return -EEXIST;
        }
        return fd;
}

static int create_file(size_t j, char *err, size_t errsize) {
        struct rst_shm *o = &objs[j];
        int fd;
        if (o->s.kind == IMG_SHM_MEMFD) {
                fd = memfd_create(o->name, MFD_CLOEXEC | MFD_ALLOW_SEALING);
                if (fd < 0) {
                        snprintf(err, errsize, "cannot recreate memfd %s: %m", o->name);
                        return -errno;
                }
        } else if ((fd = open_posix(o, err, errsize)) < 0)
                return fd;
        o->fd = fd;
        /* Whole pages while it is filled: blocks cover the last one. The
         * pages without a block must be zero: an existing object's are
         * punched out rather than truncated away, so that a process outside
         * the computation that maps it sees its content change, not a
         * SIGBUS while it is briefly empty. */
        size_t len = ALIGN_UP(o->s.size, (uint64_t) PAGE_SZ);
        if (ftruncate(fd, (off_t) len) < 0 ||
            (len && fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, (off_t) len) < 0 &&
             (ftruncate(fd, 0) < 0 || ftruncate(fd, (off_t) len) < 0))) {
                snprintf(err, errsize, "cannot give %s its size of %llu bytes: %m", o->name, (unsigned long long) o->s.size);
                return -errno;
        }
        int r = 0;
        if (len) {
                void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
                if (p == MAP_FAILED) {
                        snprintf(err, errsize, "cannot map %s: %m", o->name);
                        return -errno;
                }
                r = fill(j, p, err, errsize);
                munmap(p, len);
        }
        if (r < 0)
                return r;
        /* The last block covers a whole page: the size is the file's again. */
        if (ftruncate(fd, (off_t) o->s.size) < 0 || (o->s.mode && fchmod(fd, o->s.mode & 07777) < 0)) {
                snprintf(err, errsize, "cannot restore the size and mode of %s: %m", o->name);
                return -errno;
        }
        if (o->s.kind == IMG_SHM_MEMFD && o->s.seals && fcntl(fd, F_ADD_SEALS, (int) o->s.seals) < 0) {
                snprintf(err, errsize, "cannot seal memfd %s again (seals %#x): %m", o->name, o->s.seals);
                return -errno;
        }
        return 0;
}

int rst_shared_create(char *err, size_t errsize) {
        for (size_t j = 0; j < n_objs; j++) {
                int r;
                switch (objs[j].s.kind) {
                case IMG_SHM_ANON:
                        r = create_anon(j, err, errsize);
                        break;
                case IMG_SHM_SYSV:
                        r = rst_sysv_create_segment(&objs[j], err, errsize);
                        if (r == 0) {
                                void *p = shmat(objs[j].shmid, NULL, 0);
                                if (p == (void *) -1) {
                                        snprintf(err, errsize, "cannot attach System V shared memory %d: %m",
                                                 objs[j].shmid);
                                        return -errno;
                                }
                                r = fill(j, p, err, errsize);
                                shmdt(p);
                        }
                        break;
                default:
                        r = create_file(j, err, errsize);
                }
                if (r < 0)
                        return r;
        }
        for (size_t k = 0; k < n_sets; k++) {
                int r = rst_sysv_create_set(sets[k].host, sets[k].v, err, errsize);
                if (r < 0)
                        return r;
        }
        return 0;
}

static bool used_by(const struct rst_image *im, size_t j) {
        if (!im)
                return false;
        size_t i = (size_t) (im - images);
        for (size_t k = 0; k < im->img.n_shms; k++)
                if (obj_of[i][k] == j)
                        return true;
        return false;
}

void rst_shared_release(const struct rst_image *im) {
        for (size_t j = 0; j < n_objs; j++) {
                struct rst_shm *o = &objs[j];
                if (used_by(im, j))
                        continue;
                if (o->fd >= 0)
                        close(o->fd);
                if (o->base)
                        munmap((void *) o->base, ALIGN_UP(o->s.size, (uint64_t) PAGE_SZ));
                o->fd = -1;
                o->base = 0;
        }
}
