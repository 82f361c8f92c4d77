/* File locks held at a checkpoint, taken again after a restart.
 *
 * /proc/self/fdinfo/N lists, for the open file description of fd N, its
 * flock(2) and OFD (F_OFD_SETLK) locks, which belong to the description,
 * and this process's fcntl (POSIX record) locks set through it, which
 * belong to the process. At CAPTURE each process records its POSIX locks
 * and, for the descriptions it leads (fd.c), their flock and OFD locks; the
 * table lives in our static data, so it comes back with the image. At
 * RST_REFILL, once every descriptor is in place, each process takes its
 * locks again without waiting: the computation's locks were compatible
 * when they were saved, so a conflict means a process outside the
 * computation holds the file, and the restart fails rather than let the
 * program run without a lock it believes it has.
 *
 * Leases (F_SETLEASE) are refused at checkpoint. Blocked lock requests are
 * not locks: the thread waiting in F_SETLKW is interrupted by the checkpoint
 * and asks again. Suspended-safe. */
#include <fcntl.h>
#include <string.h>
#include <sys/file.h>

#include "fd.h"
#include "raw-syscall.h"
#include "shm.h"
#include "util.h"

#define MAX_LOCKS 4096

enum lock_kind { LK_POSIX = 1, LK_OFD, LK_FLOCK };

struct lock_rec {
        int32_t fd;
        uint32_t kind;                  /* enum lock_kind */
        int16_t type;                   /* F_RDLCK / F_WRLCK */
        int64_t start, len;             /* len 0: to the end of the file */
        uint64_t dev, ino;
};

static struct lock_rec locks[MAX_LOCKS];
static uint32_t n_locks;

static const char *kind_name(uint32_t k) {
        return k == LK_POSIX ? "fcntl" : k == LK_OFD ? "OFD" : "flock";
}

static int add_lock(const struct lock_rec *l) {
        for (uint32_t i = 0; i < n_locks; i++) {
                const struct lock_rec *o = &locks[i];
                if (o->kind == l->kind && o->dev == l->dev && o->ino == l->ino && o->start == l->start &&
                    o->len == l->len && o->type == l->type && (l->kind == LK_POSIX || o->fd == l->fd))
                        return 0;       /* the same lock, seen through another descriptor */
        }
        if (n_locks == MAX_LOCKS)
                return -E2BIG;
        locks[n_locks++] = *l;
        return 0;
}

/* "lock:\t1: POSIX  ADVISORY  WRITE 1234 fe:00:5678 0 EOF" */
static int parse_lock(const struct rt_fd *f, char *line, char *err, size_t errsize) {
        char *tok[9], *save = NULL;
        int n = 0;
        for (char *s = strtok_r(line, " \t", &save); s && n < 9; s = strtok_r(NULL, " \t", &save))
                tok[n++] = s;
        if (n < 9 || strcmp(tok[0], "lock:"))
                return 0;
        struct lock_rec l = { .fd = f->d.fd, .dev = f->d.dev, .ino = f->d.ino };
        int i = 2;      /* after "lock:" and "1:" */
        if (!strcmp(tok[i], "->"))
                return 0;       /* a request waiting, not a lock */
        if (!strcmp(tok[i], "POSIX"))
                l.kind = LK_POSIX;
        else if (!strcmp(tok[i], "OFDLCK"))
                l.kind = LK_OFD;
        else if (!strcmp(tok[i], "FLOCK"))
                l.kind = LK_FLOCK;
        else {
                snprintf(err, errsize, "fd %d (%s) holds a %s, which cannot be checkpointed", f->d.fd, f->path,
                         !strcmp(tok[i], "LEASE") ? "lease" : tok[i]);
                return -EOPNOTSUPP;
        }
        if (strcmp(tok[i + 1], "ADVISORY")) {
                snprintf(err, errsize, "fd %d (%s) holds a mandatory lock, which cannot be checkpointed", f->d.fd,
                         f->path);
                return -EOPNOTSUPP;
        }
        l.type = !strcmp(tok[i + 2], "WRITE") ? F_WRLCK : F_RDLCK;
        char *end;
        l.start = strtoll(tok[i + 5], &end, 10);
        if (!strcmp(tok[i + 6], "EOF"))
                l.len = 0;
        else
                l.len = strtoll(tok[i + 6], &end, 10) - l.start + 1;
        if (l.kind != LK_POSIX && !f->leader)
                return 0;       /* the description's leader takes it again */
        int r = add_lock(&l);
        if (r < 0)
                snprintf(err, errsize, "more than %d file locks", MAX_LOCKS);
        return r;
}

static void warn_external_lock(const struct rt_fd *f) {
        static int warned[32];
        static unsigned n_warned;
        for (unsigned i = 0; i < n_warned; i++)
                if (warned[i] == f->d.fd)
                        return;
        if (n_warned < ARRAY_SIZE(warned))
                warned[n_warned++] = f->d.fd;
        rt_warn("fd %d (%s), inherited at launch, holds a file lock: a restart will not take it again "
                "(the descriptor is bound to the restarting command's)", f->d.fd, f->path ? f->path : "?");
}

int rt_locks_capture(char *err, size_t errsize) {
        n_locks = 0;
        for (uint32_t i = 0; i < rt_cap->n_fds; i++) {
                const struct rt_fd *f = &rt_cap->fds[i];
                char path[64], buf[16384];
                snprintf(path, sizeof path, "/proc/self/fdinfo/%d", f->d.fd);
                ssize_t n = read_small_file(path, buf, sizeof buf);
                if (n < 0)
                        continue;
                if (f->d.kind == IMG_FD_EXTERNAL) {
                        /* The outside world's: a restart binds the descriptor
                         * to the restarting command's, which the lock was never
                         * on. Say so, once per descriptor. */
                        if (strstr(buf, "lock:"))
                                warn_external_lock(f);
                        continue;
                }
                for (char *line = strstr(buf, "lock:"); line; line = strstr(line, "lock:")) {
                        char *nl = strchr(line, '\n');
                        if (nl)
                                *nl = 0;
                        char *next = nl ? nl + 1 : line + strlen(line);
                        int r = parse_lock(f, line, err, errsize);
                        if (r < 0)
                                return r;
                        line = next;
                }
        }
        return 0;
}

static const char *fd_path(int fd) {
        for (uint32_t i = 0; rt_cap && i < rt_cap->n_fds; i++)
                if (rt_cap->fds[i].d.fd == fd)
                        return rt_cap->fds[i].path;
        return "?";
}

int rt_locks_rst_refill(char *err, size_t errsize) {
        for (uint32_t i = 0; i < n_locks; i++) {
                const struct lock_rec *l = &locks[i];
                long r;
                if (l->kind == LK_FLOCK)
                        r = raw_syscall2(SYS_flock, l->fd, (l->type == F_WRLCK ? LOCK_EX : LOCK_SH) | LOCK_NB);
                else {
                        struct flock fl = { .l_type = l->type, .l_whence = SEEK_SET, .l_start = l->start, .l_len = l->len };
                        r = raw_syscall3(SYS_fcntl, l->fd, l->kind == LK_OFD ? F_OFD_SETLK : F_SETLK, (long) &fl);
                }
                if (r < 0) {
                        char range[64] = "";
                        if (l->kind != LK_FLOCK && l->len)
                                snprintf(range, sizeof range, " on bytes %lld-%lld", (long long) l->start,
                                         (long long) (l->start + l->len - 1));
                        else if (l->kind != LK_FLOCK)
                                snprintf(range, sizeof range, " from byte %lld to the end", (long long) l->start);
                        snprintf(err, errsize, "fd %d (%s): cannot take its %s %s lock%s again: %s%s", l->fd,
                                 fd_path(l->fd), kind_name(l->kind), l->type == F_WRLCK ? "write" : "read", range,
                                 strerror((int) -r),
                                 r == -EAGAIN || r == -EACCES ? " (a process outside the computation holds it)" : "");
                        return (int) r;
                }
        }
        return 0;
}
