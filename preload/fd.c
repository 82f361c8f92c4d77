/* Descriptors: walk /proc/self/fd, hand each descriptor to its kind. */
#include <dirent.h>
#include <fcntl.h>
#include <string.h>
#include <sys/sysmacros.h>

#include "fd.h"
#include "raw-syscall.h"
#include "util.h"

static const struct rt_fd_ops *const kinds[] = {
        &rt_fd_external_ops,            /* first: inherited ones win over their type */
        &rt_fd_regular_ops,
        &rt_fd_directory_ops,
        &rt_fd_chardev_ops,
        &rt_fd_tty_ops,
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

char *rt_strdup_state(const char *s) {
        size_t n = strlen(s);
        char *d = rt_alloc(RT_ARENA_STATE, n + 1);
        if (d)
                memcpy(d, s, n + 1);
        return d;
}

int rt_fd_install(int newfd, int target, int fdflags) {
        if (newfd != target) {
                if (raw_syscall3(SYS_dup3, newfd, target, (fdflags & FD_CLOEXEC) ? O_CLOEXEC : 0) < 0) {
                        int r = -errno;
                        raw_syscall1(SYS_close, newfd);
                        return r ? r : -EBADF;
                }
                raw_syscall1(SYS_close, newfd);
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
                return "pipe or FIFO";
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

int rt_fds_capture(char *err, size_t errsize) {
        static int fds[65536];
        int n = list_fds(fds, (int) ARRAY_SIZE(fds));
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
                struct rt_fd_probe p = { .fd = fds[i] };
                char link[64];
                if (fstat(p.fd, &p.st) < 0)
                        continue;       /* closed meanwhile */
                snprintf(link, sizeof link, "/proc/self/fd/%d", p.fd);
                ssize_t k = raw_syscall3(SYS_readlink, (long) link, (long) p.path, sizeof p.path - 1);
                p.path[k > 0 ? k : 0] = 0;
                p.flags = (int) raw_syscall2(SYS_fcntl, p.fd, F_GETFL);
                p.fdflags = (int) raw_syscall2(SYS_fcntl, p.fd, F_GETFD);
                const struct rt_fd_ops *ops = NULL;
                for (size_t k2 = 0; k2 < ARRAY_SIZE(kinds) && !ops; k2++)
                        if (kinds[k2]->match(&p))
                                ops = kinds[k2];
                if (!ops) {
                        char kb[64];
                        snprintf(err, errsize, "fd %d is a %s (%s), which cannot be checkpointed", p.fd,
                                 fd_kind_desc(&p, kb, sizeof kb), p.path);
                        return -EOPNOTSUPP;
                }
                struct rt_fd *f = &rt_cap->fds[rt_cap->n_fds];
                memset(f, 0, sizeof *f);
                f->d.fd = p.fd;
                f->d.kind = ops->kind;
                f->d.flags = (uint32_t) p.flags;
                f->d.fdflags = (uint32_t) p.fdflags;
                f->d.file = IMG_NONE;
                f->d.rdev = p.st.st_rdev;
                int r = ops->save(&p, f, err, errsize);
                if (r < 0)
                        return r;
                if (!f->path)
                        f->path = rt_strdup_state(p.path);
                if (!f->path)
                        return -ENOMEM;
                f->d.path_len = (uint32_t) strlen(f->path);
                rt_cap->n_fds++;
        }
        return 0;
}

static const struct rt_fd_ops *ops_of(uint32_t kind) {
        for (size_t i = 0; i < ARRAY_SIZE(kinds); i++)
                if (kinds[i]->kind == kind)
                        return kinds[i];
        return NULL;
}

int rt_fds_restore(char *err, size_t errsize) {
        /* Close what the restarting process had open and the program did not:
         * saved descriptors are recreated below, inherited ones are kept. */
        static int fds[65536];
        int n = list_fds(fds, (int) ARRAY_SIZE(fds));
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
        for (uint32_t k = 0; k < rt_cap->n_fds; k++) {
                const struct rt_fd *f = &rt_cap->fds[k];
                const struct rt_fd_ops *ops = ops_of(f->d.kind);
                if (!ops) {
                        snprintf(err, errsize, "fd %d: unknown kind %u", f->d.fd, f->d.kind);
                        return -EINVAL;
                }
                int r = ops->restore(f, err, errsize);
                if (r < 0)
                        return r;
        }
        return 0;
}
