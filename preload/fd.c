/* Descriptors through a checkpoint and a restart.
 *
 * Checkpoint:
 *   SUSPEND   rt_fds_scan: list /proc/self/fd, find each one's kind, note
 *             the owner (F_GETOWN_EX) of each shareable one.
 *   ELECT     rt_fds_elect: make ourselves the owner of each (F_SETOWN) and
 *             publish our list (KV "fds/<host>/<pid>").
 *   DRAIN     rt_fds_resolve: the owner read back is the description's
 *             leader, the same answer in every process sharing it; a
 *             follower finds the leader's descriptor among the leader's
 *             list with kcmp(2). Leaders publish what peers need and drain.
 *   CAPTURE   rt_fds_after_drain puts the owners back (no one reads them any
 *             more); rt_fds_capture records each descriptor.
 *   REFILL    rt_fds_refill: drained data back.
 * Restart:
 *   RST_RESTORE  leaders recreate their descriptions (rt_fds_restore)
 *   RST_CONNECT  followers receive theirs from the leaders over Unix
 *                sockets (mailbox.c), kinds connect (rt_fds_connect)
 *   RST_REFILL   kinds put data back (rt_fds_rst_refill) */
#include <dirent.h>
#include <fcntl.h>
#include <linux/kcmp.h>
#include <string.h>
#include <sys/sysmacros.h>

#include "fd.h"
#include "raw-syscall.h"
#include "util.h"

static const struct rt_fd_ops *const kinds[] = {
        &rt_fd_external_ops,            /* first: inherited ones win over their type */
        &rt_fd_shm_ops,                 /* before regular: memfds and /dev/shm are files too */
        &rt_fd_mq_ops,
        &rt_fd_regular_ops,
        &rt_fd_directory_ops,
        &rt_fd_chardev_ops,
        &rt_fd_ptmx_ops,
        &rt_fd_pts_ops,                 /* before tty: a pty slave whose master we have */
        &rt_fd_tty_ops,
        &rt_fd_pipe_ops,
        &rt_fd_socket_ops,
        &rt_fd_fifo_ops,
        &rt_fd_eventfd_ops,
        &rt_fd_signalfd_ops,
        &rt_fd_timerfd_ops,
        &rt_fd_inotify_ops,
        &rt_fd_epoll_ops,
};

static int private_fds[RST_MAX_FILE_FDS + 16];
static uint32_t n_private_fds;

bool rt_fd_is_private(int fd) {
        if (fd == rt.coord_fd)
                return true;
        for (uint32_t i = 0; i < n_private_fds; i++)
                if (private_fds[i] == fd)
                        return true;
        return false;
}

int rt_fd_move_private(int fd) {
        if (fd < 0)
                return fd;
        int nfd = fd;
        if (fd < RT_FD_BASE) {
                nfd = (int) raw_syscall3(SYS_fcntl, fd, F_DUPFD_CLOEXEC, RT_FD_BASE);
                if (nfd < 0) /* low RLIMIT_NOFILE: keep it where it is */
                        nfd = fd;
                else
                        raw_syscall1(SYS_close, fd);
        }
        raw_syscall3(SYS_fcntl, nfd, F_SETFD, FD_CLOEXEC);
        return nfd;
}

void rt_fd_set_private(int fd, bool on) {
        for (uint32_t i = 0; i < n_private_fds; i++)
                if (private_fds[i] == fd) {
                        if (!on)
                                private_fds[i] = private_fds[--n_private_fds];
                        return;
                }
        if (on && n_private_fds < ARRAY_SIZE(private_fds))
                private_fds[n_private_fds++] = fd;
}

/* Open while the program may be running: POSIX promises it the lowest free
 * descriptor on each open, and a program that closes one of its descriptors
 * twice (bash does) would close ours if it sat there. So ours leaves the
 * low range at once (a window of microseconds, not the whole use). */
int rt_open_quietly(const char *path, int flags) {
        int fd = (int) raw_syscall4(SYS_openat, AT_FDCWD, (long) path, flags | O_CLOEXEC, 0);
        if (fd < 0 || fd >= RT_FD_BASE)
                return fd;
        int high = (int) raw_syscall3(SYS_fcntl, fd, F_DUPFD_CLOEXEC, RT_FD_BASE);
        raw_syscall1(SYS_close, fd);
        return high;
}

void rt_fds_close_private(void) {
        rt.coord_fd = safe_close(rt.coord_fd);
        for (uint32_t i = 0; i < n_private_fds; i++) {

                raw_syscall1(SYS_close, private_fds[i]);
        }
        n_private_fds = 0;
}

char *rt_strdup_state(const char *s) {
        size_t n = strlen(s);
        char *d = rt_alloc(RT_ARENA_STATE, n + 1);
        if (d)
                memcpy(d, s, n + 1);
        return d;
}

int rt_fd_install(int newfd, int target, int fdflags) {
        if (newfd != target) {
                long r = raw_syscall3(SYS_dup3, newfd, target, (fdflags & FD_CLOEXEC) ? O_CLOEXEC : 0);
                raw_syscall1(SYS_close, newfd);
                if (r < 0)
                        return (int) r;
        } else
                raw_syscall3(SYS_fcntl, target, F_SETFD, fdflags);
        return 0;
}

/* Identity of every descriptor open when the computation was launched:
 * "fd:dev:ino,..." in DMTCP_EXTERNAL_FDS (set once by the first process,
 * inherited across exec and fork). */
int rt_fds_record_external(void) {
        const char *e = getenv("DMTCP_EXTERNAL_FDS");
        rt.n_external = 0;
        if (e) {
                const char *p = e;
                while (*p && rt.n_external < RT_MAX_EXTERNAL_FDS) {
                        struct rt_external_fd x;
                        char *end;
                        x.fd = (int) strtol(p, &end, 10);
                        if (*end != ':')
                                break;
                        x.dev = strtoull(end + 1, &end, 10);
                        if (*end != ':')
                                break;
                        x.ino = strtoull(end + 1, &end, 10);
                        rt.external[rt.n_external++] = x;
                        p = *end == ',' ? end + 1 : end;
                        if (*end != ',')
                                break;
                }
                return 0;
        }
        DIR *d = opendir("/proc/self/fd");
        if (!d)
                return -errno;
        char buf[RT_MAX_EXTERNAL_FDS * 48] = "";
        size_t o = 0;
        struct dirent *de;
        int dfd = dirfd(d);
        while ((de = readdir(d)) && rt.n_external < RT_MAX_EXTERNAL_FDS) {
                uint32_t fd;
                struct stat st;
                if (parse_u32(de->d_name, &fd) < 0 || (int) fd == dfd || fstat((int) fd, &st) < 0)
                        continue;
                rt.external[rt.n_external++] = (struct rt_external_fd) { (int) fd, st.st_dev, st.st_ino };
                int n = snprintf(buf + o, sizeof buf - o, "%s%u:%llu:%llu", o ? "," : "", fd,
                                 (unsigned long long) st.st_dev, (unsigned long long) st.st_ino);
                if (n > 0 && (size_t) n < sizeof buf - o)
                        o += (size_t) n;
        }
        closedir(d);
        setenv("DMTCP_EXTERNAL_FDS", buf, 1);
        return 0;
}

bool rt_fd_is_external(int fd, const struct stat *st) {
        for (uint32_t i = 0; i < rt.n_external; i++)
                if (rt.external[i].fd == fd && rt.external[i].dev == st->st_dev && rt.external[i].ino == st->st_ino)
                        return true;
        return false;
}

int rt_file_add(uint64_t dev, uint64_t ino, const char *path, uint32_t flags, const struct stat *st) {
        for (uint32_t i = 0; i < rt_cap->n_files; i++) {
                struct rt_file *f = &rt_cap->files[i];
                if (f->f.dev == dev && f->f.ino == ino && !((f->f.flags ^ flags) & IMG_FF_DELETED))
                        return (int) i;
        }
        /* rt_cap->files has room: capture sized it from the counts. */
        struct rt_file *f = &rt_cap->files[rt_cap->n_files];
        memset(f, 0, sizeof *f);
        f->f.dev = dev;
        f->f.ino = ino;
        f->f.flags = flags;
        if (st) {
                f->f.size = (uint64_t) st->st_size;
                f->f.mtime_sec = st->st_mtim.tv_sec;
                f->f.mtime_nsec = (uint32_t) st->st_mtim.tv_nsec;
                f->f.mode = st->st_mode;
        }
        f->path = rt_strdup_state(path);
        if (!f->path)
                return -ENOMEM;
        f->f.path_len = (uint32_t) strlen(path);
        return (int) rt_cap->n_files++;
}

static int list_fds(int *fds, int max) {
        int dfd = (int) raw_syscall4(SYS_openat, AT_FDCWD, (long) "/proc/self/fd", O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0);
        if (dfd < 0)
                return dfd;
        char buf[8192];
        int n = 0;
        for (;;) {
                long k = raw_syscall3(SYS_getdents64, dfd, (long) buf, sizeof buf);
                if (k <= 0)
                        break;
                for (long o = 0; o < k;) {
                        struct dirent64 *de = (struct dirent64 *) (buf + o);
                        o += de->d_reclen;
                        uint32_t fd;
                        if (parse_u32(de->d_name, &fd) == 0 && (int) fd != dfd && n < max)
                                fds[n++] = (int) fd;
                }
        }
        raw_syscall1(SYS_close, dfd);
        return n;
}

static const char *fd_kind_desc(const struct rt_fd_probe *p, char *buf, size_t size) {
        mode_t t = p->st.st_mode & S_IFMT;
        if (t == S_IFIFO)
                return "FIFO";
        if (t == S_IFSOCK)
                return "socket";
        if (t == S_IFCHR) {
                snprintf(buf, size, "character device %u:%u", major(p->st.st_rdev), minor(p->st.st_rdev));
                return buf;
        }
        if (t == S_IFBLK)
                return "block device";
        if (!strncmp(p->path, "anon_inode:", 11)) {
                snprintf(buf, size, "%s", p->path + 11);
                return buf;
        }
        if (strstr(p->path, "/memfd:"))
                return "memfd";
        return "unsupported descriptor";
}

static const struct rt_fd_ops *ops_of(const struct rt_fd *f) {
        return f->ops;
}

static int probe(int fd, struct rt_fd_probe *p) {
        char link[64];
        p->fd = fd;
        if (fstat(fd, &p->st) < 0)
                return -errno;
        snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
        ssize_t k = raw_syscall3(SYS_readlink, (long) link, (long) p->path, sizeof p->path - 1);
        p->path[k > 0 ? k : 0] = 0;
        /* Our own /proc directory (a program listing /proc/self/fd): after
         * a restart that is another pid's, or none; /proc/self is ours. */
        char own[32];
        int n = snprintf(own, sizeof own, "/proc/%d", (int) raw_getpid());
        if (!strncmp(p->path, own, (size_t) n) && (p->path[n] == '/' || !p->path[n])) {
                char rest[sizeof p->path];
                strscpy(rest, p->path + n, sizeof rest);
                snprintf(p->path, sizeof p->path, "/proc/self%s", rest);
        }
        p->flags = (int) raw_syscall2(SYS_fcntl, fd, F_GETFL);
        p->fdflags = (int) raw_syscall2(SYS_fcntl, fd, F_GETFD);
        return 0;
}

int rt_fds_scan(char *err, size_t errsize) {
        int *fds = rt_alloc(RT_ARENA_SCRATCH, 65536 * sizeof(int));
        if (!fds)
                return -ENOMEM;
        int n = list_fds(fds, 65536);
        if (n < 0) {
                snprintf(err, errsize, "cannot list descriptors: %s", strerror(-n));
                return n;
        }
        rt_cap->fds = rt_alloc(RT_ARENA_STATE, ((size_t) n + 1) * sizeof(struct rt_fd));
        if (!rt_cap->fds)
                return -ENOMEM;
        rt_cap->n_fds = 0;
        for (int i = 0; i < n; i++) {
                if (rt_fd_is_private(fds[i]))
                        continue;
                struct rt_fd_probe p;
                if (probe(fds[i], &p) < 0)
                        continue;       /* closed meanwhile */
                const struct rt_fd_ops *ops = NULL;
                for (size_t k = 0; k < ARRAY_SIZE(kinds) && !ops; k++)
                        if (kinds[k]->match(&p))
                                ops = kinds[k];
                if (!ops) {
                        char kb[64];
                        snprintf(err, errsize, "fd %d is a %s (%s), which cannot be checkpointed", p.fd,
                                 fd_kind_desc(&p, kb, sizeof kb), p.path);
                        return -EOPNOTSUPP;
                }
                struct rt_fd *f = &rt_cap->fds[rt_cap->n_fds++];
                memset(f, 0, sizeof *f);
                f->ops = ops;
                f->st = p.st;
                f->d.fd = p.fd;
                f->d.kind = ops->kind;
                f->d.flags = (uint32_t) p.flags;
                f->d.fdflags = (uint32_t) p.fdflags;
                f->d.file = IMG_NONE;
                f->d.rdev = p.st.st_rdev;
                f->d.dev = p.st.st_dev;
                f->d.ino = p.st.st_ino;
                f->d.leader_fd = -1;
                f->shareable = ops->shareable;
                f->leader = true;
                f->leader_pid = rt.pid;
                f->path = rt_strdup_state(p.path);
                if (!f->path)
                        return -ENOMEM;
                if (f->shareable) {
                        struct f_owner_ex o = { 0 };
                        if (raw_syscall3(SYS_fcntl, p.fd, F_GETOWN_EX, (long) &o) == 0) {
                                f->owner_type = o.type;
                                f->owner_pid = o.pid;
                        } else
                                f->shareable = false;   /* no owner to elect with */
                }
        }
        return 0;
}

/* Our shareable descriptors, published for the processes that share them:
 * "fds/<host>/<pid>/<page>" = upid + entries. */
struct fds_entry {
        int32_t fd;
        uint32_t kind;
        uint64_t dev, ino;
};

struct fds_page {
        char upid[PROTO_ID_MAX + 1];
        uint32_t n;
        uint32_t more;                  /* another page follows */
        struct fds_entry e[(PROTO_VALUE_MAX - PROTO_ID_MAX - 1 - 8) / sizeof(struct fds_entry)];
};

static void fds_key(char *key, size_t size, pid_t pid, uint32_t page) {
        snprintf(key, size, "fds/%s/%d/%u", host_name(), (int) pid, page);
}

static bool elected;    /* owners changed: put them back */
static bool resolving;  /* GO(ELECT) came and REFILL is not done: kinds may have drained */

int rt_fds_elect(char *err, size_t errsize) {
        struct fds_page pg;
        memset(&pg, 0, sizeof pg);
        strscpy(pg.upid, rt.cfg.upid, sizeof pg.upid);
        uint32_t page = 0;
        for (uint32_t i = 0; i < rt_cap->n_fds; i++) {
                struct rt_fd *f = &rt_cap->fds[i];
                if (!f->shareable)
                        continue;
                /* The last process to set the owner wins; everyone reads the
                 * same winner back after the barrier. */
                struct f_owner_ex o = { F_OWNER_PID, rt.pid };
                elected = true;
                if (raw_syscall3(SYS_fcntl, f->d.fd, F_SETOWN_EX, (long) &o) < 0) {
                        f->shareable = false;
                        continue;
                }
                if (pg.n == ARRAY_SIZE(pg.e)) {
                        pg.more = 1;
                        char key[PROTO_KEY_MAX + 1];
                        fds_key(key, sizeof key, rt.pid, page++);
                        int r = rt_kv_put(key, &pg, sizeof pg);
                        if (r < 0)
                                return r;
                        pg.n = 0;
                        pg.more = 0;
                }
                pg.e[pg.n++] = (struct fds_entry) { f->d.fd, f->d.kind, f->d.dev, f->d.ino };
        }
        char key[PROTO_KEY_MAX + 1];
        fds_key(key, sizeof key, rt.pid, page);
        int r = rt_kv_put(key, &pg, offsetof(struct fds_page, e) + pg.n * sizeof(struct fds_entry));
        if (r < 0) {
                snprintf(err, errsize, "cannot publish descriptors: %s", strerror(-r));
                return r;
        }
        for (uint32_t i = 0; i < rt_cap->n_fds; i++) {
                struct rt_fd *f = &rt_cap->fds[i];
                const struct rt_fd_ops *ops = ops_of(f);
                if (ops->announce && (r = ops->announce(f, err, errsize)) < 0)
                        return r;
        }
        return 0;
}

/* Which of the leader's descriptors is the same description as our fd? */
static int find_leader_fd(struct rt_fd *f, char *leader_upid, size_t size) {
        for (uint32_t page = 0;; page++) {
                struct fds_page pg;
                size_t len;
                char key[PROTO_KEY_MAX + 1];
                fds_key(key, sizeof key, f->leader_pid, page);
                int r = rt_kv_get(key, &pg, sizeof pg, &len);
                if (r < 0)
                        return r;
                if (len < offsetof(struct fds_page, e) || pg.n > ARRAY_SIZE(pg.e) ||
                    len < offsetof(struct fds_page, e) + pg.n * sizeof(struct fds_entry))
                        return -EBADMSG;
                pg.upid[sizeof pg.upid - 1] = 0;
                for (uint32_t k = 0; k < pg.n; k++) {
                        const struct fds_entry *e = &pg.e[k];
                        if (e->kind != f->d.kind || e->dev != f->d.dev || e->ino != f->d.ino)
                                continue;
                        long same = raw_syscall5(SYS_kcmp, rt.pid, f->leader_pid, KCMP_FILE, f->d.fd, e->fd);
                        if (same == 0) {
                                strscpy(leader_upid, pg.upid, size);
                                return e->fd;
                        }
                }
                if (!pg.more)
                        return -ENOENT;
        }
}

int rt_fds_upid_of(pid_t pid, char *upid, size_t size) {
        struct fds_page pg;
        size_t len;
        char key[PROTO_KEY_MAX + 1];
        fds_key(key, sizeof key, pid, 0);
        int r = rt_kv_get(key, &pg, sizeof pg, &len);
        if (r < 0)
                return r;
        if (len < sizeof pg.upid || !memchr(pg.upid, 0, sizeof pg.upid))
                return -EBADMSG;
        strscpy(upid, pg.upid, size);
        return 0;
}

int rt_fds_resolve(char *err, size_t errsize) {
        resolving = true;
        for (uint32_t i = 0; i < rt_cap->n_fds; i++) {
                struct rt_fd *f = &rt_cap->fds[i];
                if (!f->shareable)
                        continue;
                struct f_owner_ex o = { 0 };
                raw_syscall3(SYS_fcntl, f->d.fd, F_GETOWN_EX, (long) &o);
                if (o.type == F_OWNER_PID && o.pid != rt.pid && o.pid > 0) {
                        f->leader = false;
                        f->leader_pid = o.pid;
                        int lfd = find_leader_fd(f, f->d.leader, sizeof f->d.leader);
                        if (lfd < 0) {
                                snprintf(err, errsize, "fd %d (%s) is shared with process %d, which did not list it (%s)",
                                         f->d.fd, f->path, (int) o.pid, strerror(-lfd));
                                return lfd == -ENOENT ? -EPROTO : lfd;
                        }
                        f->d.share = IMG_FD_FOLLOWER;
                        f->d.leader_fd = lfd;
                }
        }
        for (uint32_t i = 0; i < rt_cap->n_fds; i++) {
                struct rt_fd *f = &rt_cap->fds[i];
                const struct rt_fd_ops *ops = ops_of(f);
                if (!f->leader)
                        continue;
                int r = 0;
                if (ops->publish)
                        r = ops->publish(f, err, errsize);
                if (r == 0 && ops->drain)
                        r = ops->drain(f, err, errsize);
                if (r < 0)
                        return r;
        }
        return 0;
}

void rt_fds_after_drain(void) {
        if (!elected)
                return;
        elected = false;
        for (uint32_t i = 0; i < rt_cap->n_fds; i++) {
                const struct rt_fd *f = &rt_cap->fds[i];
                if (f->shareable) {
                        struct f_owner_ex o = { f->owner_type, f->owner_pid };
                        if (!o.type)
                                o.type = F_OWNER_PID;
                        raw_syscall3(SYS_fcntl, f->d.fd, F_SETOWN_EX, (long) &o);
                }
        }
}

int rt_fds_capture(char *err, size_t errsize) {
        for (uint32_t i = 0; i < rt_cap->n_fds; i++) {
                struct rt_fd *f = &rt_cap->fds[i];
                int (*save)(const struct rt_fd_probe *, struct rt_fd *, char *, size_t) =
                        f->leader ? ops_of(f)->save : ops_of(f)->follower_save;
                if (!save)
                        continue;
                struct rt_fd_probe p;
                if (probe(f->d.fd, &p) < 0) {
                        snprintf(err, errsize, "fd %d vanished during the checkpoint", f->d.fd);
                        return -EBADF;
                }
                int r = save(&p, f, err, errsize);
                if (r < 0)
                        return r;
        }
        for (uint32_t i = 0; i < rt_cap->n_fds; i++) {
                struct rt_fd *f = &rt_cap->fds[i];
                f->d.path_len = f->path ? (uint32_t) strlen(f->path) : 0;
        }
        return 0;
}

int rt_fds_refill(char *err, size_t errsize) {
        for (uint32_t i = 0; i < rt_cap->n_fds; i++) {
                struct rt_fd *f = &rt_cap->fds[i];
                const struct rt_fd_ops *ops = ops_of(f);
                if (f->leader && ops->refill) {
                        int r = ops->refill(f, err, errsize);
                        if (r < 0)
                                return r;
                }
        }
        resolving = false;
        return 0;
}

void rt_fds_abandon(void) {
        if (!resolving)
                return;
        resolving = false;
        for (uint32_t i = 0; i < rt_cap->n_fds; i++) {
                struct rt_fd *f = &rt_cap->fds[i];
                if (f->shareable && elected) {
                        /* The election is settled even if resolving stopped early. */
                        struct f_owner_ex o = { 0 };
                        raw_syscall3(SYS_fcntl, f->d.fd, F_GETOWN_EX, (long) &o);
                        f->leader = !(o.type == F_OWNER_PID && o.pid != rt.pid && o.pid > 0);
                }
        }
        for (uint32_t i = 0; i < rt_cap->n_fds; i++) {
                struct rt_fd *f = &rt_cap->fds[i];
                const struct rt_fd_ops *ops = ops_of(f);
                if (f->leader && ops->abandon)
                        ops->abandon(f);
        }
}

static const struct rt_fd_ops *ops_by_kind(uint32_t kind) {
        for (size_t i = 0; i < ARRAY_SIZE(kinds); i++)
                if (kinds[i]->kind == kind)
                        return kinds[i];
        return NULL;
}

int rt_fds_restore(char *err, size_t errsize) {
        /* Close what the restarting process had open and the program did not:
         * saved descriptors are recreated below, inherited ones are kept. */
        int *fds = rt_alloc(RT_ARENA_SCRATCH, 65536 * sizeof(int));
        if (!fds)
                return -ENOMEM;
        int n = list_fds(fds, 65536);
        for (int i = 0; i < n; i++) {
                if (rt_fd_is_private(fds[i]))
                        continue;
                bool keep = false;
                for (uint32_t k = 0; k < rt_cap->n_fds; k++)
                        if (rt_cap->fds[k].d.fd == fds[i] && rt_cap->fds[k].d.kind == IMG_FD_EXTERNAL)
                                keep = true;
                if (!keep)
                        raw_syscall1(SYS_close, fds[i]);
        }
        int r = rt_mailbox_open();
        if (r < 0) {
                snprintf(err, errsize, "cannot open the descriptor mailbox: %s", strerror(-r));
                return r;
        }
        for (uint32_t k = 0; k < rt_cap->n_fds; k++) {
                struct rt_fd *f = &rt_cap->fds[k];
                f->ops = ops_by_kind(f->d.kind);
                f->restored = false;
                if (!f->ops) {
                        snprintf(err, errsize, "fd %d: unknown kind %u", f->d.fd, f->d.kind);
                        return -EINVAL;
                }
                if (f->d.share == IMG_FD_FOLLOWER)
                        continue;
                r = ops_of(f)->restore(f, err, errsize);
                if (r < 0)
                        return r;
                f->restored = r == 0;
        }
        return 0;
}

int rt_fds_connect(char *err, size_t errsize) {
        for (uint32_t k = 0; k < rt_cap->n_fds; k++) {
                struct rt_fd *f = &rt_cap->fds[k];
                int r = 0;
                if (f->d.share == IMG_FD_FOLLOWER)
                        r = rt_mailbox_request(f->d.leader, RT_MB_DESC, (uint64_t) f->d.leader_fd, f->d.fd,
                                               (int) f->d.fdflags);
                else if (!f->restored && ops_of(f)->connect)
                        r = ops_of(f)->connect(f, err, errsize);
                if (r < 0) {
                        if (!err[0])
                                snprintf(err, errsize, "fd %d: %s", f->d.fd, strerror(-r));
                        return r;
                }
        }
        return rt_mailbox_run(err, errsize);
}

int rt_fds_rst_refill(char *err, size_t errsize) {
        for (uint32_t k = 0; k < rt_cap->n_fds; k++) {
                struct rt_fd *f = &rt_cap->fds[k];
                const struct rt_fd_ops *ops = ops_of(f);
                if (f->d.share == IMG_FD_FOLLOWER) {
                        int r = ops->follower_rst_refill ? ops->follower_rst_refill(f, err, errsize) : 0;
                        if (r < 0)
                                return r;
                        continue;
                }
                if (ops->rst_refill) {
                        int r = ops->rst_refill(f, err, errsize);
                        if (r < 0)
                                return r;
                }
                /* Who gets its SIGIO/SIGURG (pids are the same after a restart). */
                if (f->owner_type && f->owner_pid) {
                        struct f_owner_ex o = { f->owner_type, f->owner_pid };
                        raw_syscall3(SYS_fcntl, f->d.fd, F_SETOWN_EX, (long) &o);
                }
        }
        rt_mailbox_close();
        return 0;
}
