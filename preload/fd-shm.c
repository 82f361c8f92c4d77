/* Descriptors of shared memory objects: memfds and files in /dev/shm
 * (shm_open). Their contents are gone after a reboot or on another host, so
 * they are not reopened by path as regular files are: the object itself
 * (contents, size, mode, seals, name) is saved and recreated with the
 * program's shared memory (shm.c, restart/shared-mem.c), and the restart
 * tool hands us a descriptor of it (rst_incoming file_fds, marked
 * RST_FILE_SHM). Each description is then opened again from that one with
 * its own flags and offset. */
#include <fcntl.h>
#include <string.h>

#include "fd.h"
#include "raw-syscall.h"
#include "shm.h"
#include "util.h"

static bool shm_match(const struct rt_fd_probe *p) {
        return S_ISREG(p->st.st_mode) && rt_shm_path_is_object(p->path);
}

static int shm_save(const struct rt_fd_probe *p, struct rt_fd *out, char *err, size_t errsize) {
        int i = rt_shm_find_fd(p->st.st_dev, p->st.st_ino);
        if (i < 0) {
                snprintf(err, errsize, "fd %d (%s) appeared during the checkpoint", p->fd, p->path);
                return -EAGAIN;
        }
        out->d.offset = (int64_t) raw_syscall3(SYS_lseek, p->fd, 0, SEEK_CUR);
        out->d.size = (uint64_t) p->st.st_size;
        out->d.aux = (uint32_t) i;
        return 0;
}

static int shm_restore(struct rt_fd *f, char *err, size_t errsize) {
        int fd = -ENOENT;
        for (uint32_t i = 0; rt_incoming && i < rt_incoming->n_file_fds; i++)
                if (rt_incoming->file_fds[i].file == (RST_FILE_SHM | f->d.aux)) {
                        char link[64];
                        snprintf(link, sizeof link, "/proc/self/fd/%d", rt_incoming->file_fds[i].fd);
                        /* shm_open adds O_NOFOLLOW, which /proc/self/fd refuses. */
                        int flags = (int) (f->d.flags & ~(uint32_t) (O_CREAT | O_EXCL | O_TRUNC | O_NOCTTY | O_NOFOLLOW)) |
                                    O_CLOEXEC;
                        fd = (int) raw_syscall4(SYS_openat, AT_FDCWD, (long) link, flags, 0);
                        break;
                }
        if (fd < 0) {
                snprintf(err, errsize, "fd %d: the shared memory object %s was not recreated%s%s", f->d.fd, f->path,
                         fd == -ENOENT ? "" : ": ", fd == -ENOENT ? "" : strerror(-fd));
                return fd;
        }
        raw_syscall3(SYS_lseek, fd, f->d.offset, SEEK_SET);
        int r = rt_fd_install(fd, f->d.fd, (int) f->d.fdflags);
        if (r < 0)
                snprintf(err, errsize, "fd %d: cannot place %s: %s", f->d.fd, f->path, strerror(-r));
        return r;
}

const struct rt_fd_ops rt_fd_shm_ops = {
        .kind = IMG_FD_SHM,
        .name = "shared memory",
        .shareable = true,
        .match = shm_match,
        .save = shm_save,
        .restore = shm_restore,
};
