/* Descriptors the computation inherited when it was launched (stdin, stdout,
 * stderr, a journal stream, anything open before dmtcp_launch): they belong
 * to the outside world, and on restart they are bound to the restarting
 * command's descriptors of the same number (DESIGN.md). */
#include <fcntl.h>
#include <string.h>

#include "fd.h"
#include "raw-syscall.h"

static bool external_match(const struct rt_fd_probe *p) {
        return rt_fd_is_external(p->fd, &p->st);
}

static int external_save(const struct rt_fd_probe *p, struct rt_fd *out, char *err, size_t errsize) {
        return 0;
}

/* After restore, the descriptor at this number is the restarter's: remember
 * its identity so the next checkpoint still sees it as inherited. */
static void external_remember(int fd) {
        struct stat st;
        if (fstat(fd, &st) < 0)
                return;
        for (uint32_t i = 0; i < rt.n_external; i++)
                if (rt.external[i].fd == fd) {
                        rt.external[i].dev = st.st_dev;
                        rt.external[i].ino = st.st_ino;
                        return;
                }
        if (rt.n_external < RT_MAX_EXTERNAL_FDS)
                rt.external[rt.n_external++] = (struct rt_external_fd) { fd, st.st_dev, st.st_ino };
}

static int external_restore(struct rt_fd *f, char *err, size_t errsize) {
        int fd = f->d.fd;
        if (raw_syscall2(SYS_fcntl, fd, F_GETFD) < 0) {
                /* The restarting command has nothing there: give it /dev/null. */
                int nfd = (int) raw_syscall4(SYS_openat, AT_FDCWD, (long) "/dev/null", O_RDWR, 0);
                if (nfd < 0) {
                        snprintf(err, errsize, "cannot open /dev/null for fd %d", fd);
                        return nfd;
                }
                int r = rt_fd_install(nfd, fd, (int) f->d.fdflags);
                if (r < 0) {
                        snprintf(err, errsize, "cannot place /dev/null at fd %d", fd);
                        return r;
                }
        }
        external_remember(fd);
        return 0;
}

const struct rt_fd_ops rt_fd_external_ops = {
        .kind = IMG_FD_EXTERNAL,
        .name = "inherited",
        .match = external_match,
        .save = external_save,
        .restore = external_restore,
};
