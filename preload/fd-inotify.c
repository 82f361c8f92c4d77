/* inotify instances and their watches.
 *
 * The kernel tells which inode each watch is on (fdinfo: wd, inode, device,
 * mask) but not by what path, and a restart must add the watches again by
 * path. So inotify_add_watch() is wrapped: it records the path it was given
 * (made absolute) for the inode it resolved to, in a table of this process
 * (inherited across fork, kept across a restart; not across exec). At the
 * checkpoint each watch must find there a path that still leads to its
 * inode; if none does (the file was renamed, replaced or deleted, or the
 * watch was added by a raw syscall or before an exec), the checkpoint fails
 * naming the descriptor, the watch and the inode.
 *
 * Restart: a new instance gets each watch again, with its mask (IN_ONESHOT,
 * IN_EXCL_UNLINK, IN_DONT_FOLLOW kept) and its old watch descriptor: the
 * kernel hands out numbers in increasing order, so numbers freed before the
 * checkpoint are used up by adding and removing the watch until it gets its
 * own. The IN_IGNORED events that leaves are read away before the program
 * runs.
 *
 * Not kept: the events queued at the checkpoint and not yet read. After a
 * checkpoint the program goes on with them; after a restart they are lost
 * (as are events of the moment of the restart itself), since a queued
 * event can neither be peeked at nor put back. A program must see a restart
 * like an IN_Q_OVERFLOW: rescan what it watches. */
#include <fcntl.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/mman.h>
#include <sys/sysmacros.h>

#include "fd-event.h"
#include "raw-syscall.h"
#include "util.h"

/* --- the table of paths (filled by the program's threads, lock-free) ------ */

struct watch_path {
        _Atomic uint32_t ready;         /* 1 once filled */
        uint32_t flags;                 /* IN_DONT_FOLLOW */
        uint64_t dev, ino;
        char path[PATH_MAX];
};

#define PATHS_PER_CHUNK 64
#define MAX_CHUNKS 64                   /* 4096 distinct (path, inode) pairs */

static struct watch_path *_Atomic chunks[MAX_CHUNKS];
static _Atomic uint32_t n_paths;

static struct watch_path *path_slot(uint32_t i) {
        struct watch_path *c = atomic_load(&chunks[i / PATHS_PER_CHUNK]);
        return c ? &c[i % PATHS_PER_CHUNK] : NULL;
}

static bool stat_path(const char *path, uint32_t flags, struct stat *st) {
        return raw_syscall4(SYS_newfstatat, AT_FDCWD, (long) path, (long) st,
                            (flags & IN_DONT_FOLLOW) ? AT_SYMLINK_NOFOLLOW : 0) == 0;
}

static void remember_path(const char *path, uint32_t mask) {
        char abs[PATH_MAX];
        if (path[0] == '/')
                strscpy(abs, path, sizeof abs);
        else {
                if (!getcwd(abs, sizeof abs))
                        return;
                size_t n = strlen(abs);
                if (snprintf(abs + n, sizeof abs - n, "/%s", path) >= (int) (sizeof abs - n))
                        return;
        }
        uint32_t flags = mask & IN_DONT_FOLLOW;
        struct stat st;
        if (!stat_path(abs, flags, &st))
                return;
        uint32_t n = MIN(atomic_load(&n_paths), (uint32_t) (PATHS_PER_CHUNK * MAX_CHUNKS));
        for (uint32_t i = 0; i < n; i++) {
                const struct watch_path *w = path_slot(i);
                if (w && atomic_load(&w->ready) && w->dev == st.st_dev && w->ino == st.st_ino && w->flags == flags &&
                    !strcmp(w->path, abs))
                        return;
        }
        uint32_t i = atomic_fetch_add(&n_paths, 1);
        if (i >= PATHS_PER_CHUNK * MAX_CHUNKS)
                return;         /* full: such a watch fails the checkpoint, saying so */
        struct watch_path *_Atomic *c = &chunks[i / PATHS_PER_CHUNK];
        if (!atomic_load(c)) {
                void *m = mmap(NULL, PATHS_PER_CHUNK * sizeof(struct watch_path), PROT_READ | PROT_WRITE,
                               MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
                if (m == MAP_FAILED)
                        return;
                struct watch_path *expect = NULL;
                if (!atomic_compare_exchange_strong(c, &expect, m))
                        munmap(m, PATHS_PER_CHUNK * sizeof(struct watch_path));
        }
        struct watch_path *w = path_slot(i);
        w->flags = flags;
        w->dev = st.st_dev;
        w->ino = st.st_ino;
        strscpy(w->path, abs, sizeof w->path);
        atomic_store(&w->ready, 1);
}

_public_ int inotify_add_watch(int fd, const char *path, uint32_t mask) {
        long wd = raw_syscall3(SYS_inotify_add_watch, fd, (long) path, mask);
        if (wd < 0) {
                errno = (int) -wd;
                return -1;
        }
        remember_path(path, mask);
        return (int) wd;
}

/* A recorded path that leads to (dev, ino) now; the newest first. */
static const struct watch_path *find_path(uint64_t dev, uint64_t ino) {
        uint32_t n = MIN(atomic_load(&n_paths), (uint32_t) (PATHS_PER_CHUNK * MAX_CHUNKS));
        for (uint32_t i = n; i-- > 0;) {
                const struct watch_path *w = path_slot(i);
                struct stat st;
                if (w && atomic_load(&w->ready) && w->dev == dev && w->ino == ino && stat_path(w->path, w->flags, &st) &&
                    st.st_dev == dev && st.st_ino == ino)
                        return w;
        }
        return NULL;
}

/* --- the kind ---------------------------------------------------------------- */

struct inotify_watch {
        int32_t wd;
        uint32_t mask;
        const char *path;               /* state arena */
};

struct inotify_state {
        uint32_t n;
        struct inotify_watch w[];
};

static bool inotify_match(const struct rt_fd_probe *p) {
        return !strcmp(p->path, "anon_inode:inotify");
}

/* "inotify wd:%x ino:%lx sdev:%x mask:%x ignored_mask:%x ..." */
static int parse_watch(const char *line, int32_t *wd, uint64_t *dev, uint64_t *ino, uint32_t *mask) {
        uint64_t v[4];
        static const char *const keys[4] = { " wd:", " ino:", " sdev:", " mask:" };
        for (int k = 0; k < 4; k++) {
                const char *p = strstr(line, keys[k]);
                if (!p || evfd_info_u64(p + 1, keys[k] + 1, 16, &v[k]) < 0)
                        return -EBADMSG;
        }
        if (v[0] > INT32_MAX || v[3] > UINT32_MAX)
                return -EBADMSG;
        *wd = (int32_t) v[0];
        *ino = v[1];
        /* The kernel's dev_t: 12 bits of major above 20 of minor. */
        *dev = makedev((unsigned) (v[2] >> 20), (unsigned) (v[2] & 0xfffff));
        *mask = (uint32_t) v[3];
        return 0;
}

static int inotify_save(const struct rt_fd_probe *p, struct rt_fd *f, char *err, size_t errsize) {
        if (evfd_note_dup(f))
                return 0;
        const char *info = evfd_fdinfo(p->fd, err, errsize);
        if (!info)
                return -EIO;
        uint32_t n = evfd_info_count(info, "inotify wd:");
        struct inotify_state *s = rt_alloc(RT_ARENA_STATE, sizeof *s + n * sizeof s->w[0]);
        if (!s)
                return -ENOMEM;
        char line[512];
        for (s->n = 0; s->n < n && evfd_info_next(&info, "inotify wd:", line, sizeof line);) {
                struct inotify_watch *w = &s->w[s->n];
                uint64_t dev, ino;
                if (parse_watch(line, &w->wd, &dev, &ino, &w->mask) < 0) {
                        snprintf(err, errsize, "fd %d (inotify): cannot understand its watch \"%s\"", p->fd, line);
                        return -EBADMSG;
                }
                const struct watch_path *wp = find_path(dev, ino);
                if (!wp) {
                        snprintf(err, errsize, "fd %d (inotify): watch %d is on inode %llu of device %u:%u, and no "
                                 "path leads there any more (renamed, replaced or deleted, or added without "
                                 "inotify_add_watch of this process): it cannot be added again by path", p->fd,
                                 w->wd, (unsigned long long) ino, major(dev), minor(dev));
                        return -EOPNOTSUPP;
                }
                w->mask |= wp->flags;
                w->path = rt_strdup_state(wp->path);
                if (!w->path)
                        return -ENOMEM;
                /* Kept in the order of their numbers, the order to add them. */
                struct inotify_watch t = *w;
                uint32_t k = s->n++;
                for (; k > 0 && s->w[k - 1].wd > t.wd; k--)
                        s->w[k] = s->w[k - 1];
                s->w[k] = t;
        }
        f->priv = s;
        f->d.size = s->n;
        return 0;
}

/* Read away every queued event (ours: IN_IGNORED of the numbers used up). */
static void discard_events(int fd) {
        char buf[8192];
        while (raw_syscall3(SYS_read, fd, (long) buf, sizeof buf) > 0)
                ;
}

static int add_numbered(int fd, const struct inotify_watch *w, const struct inotify_state *s, char *err,
                        size_t errsize) {
        for (uint32_t used = 0;; used++) {
                long wd = raw_syscall3(SYS_inotify_add_watch, fd, (long) w->path, w->mask);
                if (wd < 0) {
                        snprintf(err, errsize, "cannot watch %s again: %s", w->path, strerror((int) -wd));
                        return (int) wd;
                }
                if (wd == w->wd)
                        return 0;
                for (uint32_t k = 0; k < s->n && s->w[k].wd < w->wd; k++)
                        if (s->w[k].wd == wd) {
                                snprintf(err, errsize, "%s and %s are one file now: their watches %d and %d "
                                         "cannot both be restored", s->w[k].path, w->path, s->w[k].wd, w->wd);
                                return -EEXIST;
                        }
                if (wd > w->wd) {
                        snprintf(err, errsize, "watch %d on %s came back as %ld", w->wd, w->path, wd);
                        return -EBUSY;
                }
                raw_syscall2(SYS_inotify_rm_watch, fd, wd);
                if (used % 1024 == 1023)
                        discard_events(fd);     /* the queue holds 16384 events */
        }
}

static int inotify_restore(struct rt_fd *f, char *err, size_t errsize) {
        if (f->d.aux & EVFD_AUX_DUP)
                return evfd_restore_dup(f, err, errsize);
        const struct inotify_state *s = f->priv;
        long fd = raw_syscall1(SYS_inotify_init1, IN_CLOEXEC | IN_NONBLOCK);
        if (fd < 0 || !s) {
                snprintf(err, errsize, "fd %d: cannot create an inotify instance: %s", f->d.fd,
                         s ? strerror((int) -fd) : "its saved watches are missing");
                if (fd >= 0)
                        raw_syscall1(SYS_close, fd);
                return fd < 0 ? (int) fd : -EBADMSG;
        }
        for (uint32_t i = 0; i < s->n; i++) {
                char why[PATH_MAX + 200];
                int r = add_numbered((int) fd, &s->w[i], s, why, sizeof why);
                if (r < 0) {
                        raw_syscall1(SYS_close, fd);
                        snprintf(err, errsize, "fd %d (inotify): %s", f->d.fd, why);
                        return r;
                }
        }
        discard_events((int) fd);
        return evfd_place((int) fd, f, "inotify instance", err, errsize);
}

const struct rt_fd_ops rt_fd_inotify_ops = {
        .kind = IMG_FD_INOTIFY,
        .name = "inotify",
        .shareable = true,
        .match = inotify_match,
        .save = inotify_save,
        .restore = inotify_restore,
};
