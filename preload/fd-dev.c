/* Character devices with no state worth saving (/dev/null, /dev/zero,
 * /dev/full, /dev/random, /dev/urandom) and terminals. A terminal the
 * program opened itself is reopened on the restarting command's terminal. */
#include <fcntl.h>
#include <string.h>
#include <sys/sysmacros.h>

#include "fd.h"
#include "raw-syscall.h"

static bool is_tty_dev(dev_t rdev) {
        unsigned ma = major(rdev), mi = minor(rdev);
        return (ma >= 136 && ma <= 143) || (ma == 4 && mi < 64) || (ma == 5 && mi == 0);
}

static bool chardev_match(const struct rt_fd_probe *p) {
        if (!S_ISCHR(p->st.st_mode))
                return false;
        unsigned ma = major(p->st.st_rdev), mi = minor(p->st.st_rdev);
        return ma == 1 && (mi == 3 || mi == 5 || mi == 7 || mi == 8 || mi == 9);
}

static int none_save(const struct rt_fd_probe *p, struct rt_fd *out, char *err, size_t errsize) {
        return 0;
}

static int open_install(struct rt_fd *f, const char *path, char *err, size_t errsize) {
        int fd = (int) raw_syscall4(SYS_openat, AT_FDCWD, (long) path,
                                    (long) ((f->d.flags & ~(uint32_t) (O_CREAT | O_EXCL | O_TRUNC)) | O_CLOEXEC), 0);
        if (fd < 0) {
                snprintf(err, errsize, "fd %d: cannot open %s: %s", f->d.fd, path, strerror(-fd));
                return fd;
        }
        int r = rt_fd_install(fd, f->d.fd, (int) f->d.fdflags);
        if (r < 0)
                snprintf(err, errsize, "fd %d: cannot place %s", f->d.fd, path);
        return r;
}

static int chardev_restore(struct rt_fd *f, char *err, size_t errsize) {
        return open_install(f, f->path, err, errsize);
}

const struct rt_fd_ops rt_fd_chardev_ops = {
        .kind = IMG_FD_CHARDEV,
        .name = "character device",
        .shareable = true,
        .match = chardev_match,
        .save = none_save,
        .restore = chardev_restore,
};

static bool tty_match(const struct rt_fd_probe *p) {
        return S_ISCHR(p->st.st_mode) && is_tty_dev(p->st.st_rdev);
}

static int tty_restore(struct rt_fd *f, char *err, size_t errsize) {
        if (open_install(f, "/dev/tty", err, errsize) == 0)
                return 0;
        /* No controlling terminal: use the terminal on stdin, if any. */
        struct stat st;
        if (fstat(0, &st) == 0 && S_ISCHR(st.st_mode) && is_tty_dev(st.st_rdev) &&
            open_install(f, "/proc/self/fd/0", err, errsize) == 0)
                return 0;
        rt_warn("fd %d was the terminal %s; the restart has no terminal, so it is /dev/null now", f->d.fd, f->path);
        return open_install(f, "/dev/null", err, errsize);
}

const struct rt_fd_ops rt_fd_tty_ops = {
        .kind = IMG_FD_TTY,
        .name = "terminal",
        .shareable = true,
        .match = tty_match,
        .save = none_save,
        .restore = tty_restore,
};
