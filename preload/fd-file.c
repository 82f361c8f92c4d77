/* Regular files and directories opened by the program. A file is reopened
 * by path with its flags and offset; one that grew since the checkpoint and
 * is open for writing is cut back to its size at the checkpoint, so output
 * written after the checkpoint by the lost process is not duplicated. A file
 * deleted while open has its contents saved in the image; the restart tool
 * recreates it as an unnamed file and hands us its descriptor. */
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>

#include "fd.h"
#include "raw-syscall.h"
#include "shm.h"
#include "util.h"

#define DELETED_SUFFIX " (deleted)"

static bool is_deleted(const struct rt_fd_probe *p) {
        size_t n = strlen(p->path), s = strlen(DELETED_SUFFIX);
        return p->st.st_nlink == 0 || (n > s && !strcmp(p->path + n - s, DELETED_SUFFIX));
}

static bool regular_match(const struct rt_fd_probe *p) {
        /* Shared memory objects (memfd, /dev/shm) and message queues are
         * files too, but their kinds come first in fd.c's table: their
         * contents do not survive a reboot, so they are saved, not reopened
         * by path. A System V segment opened through /proc/PID/map_files is
         * neither. */
        return S_ISREG(p->st.st_mode) && p->path[0] == '/' && strncmp(p->path, "/SYSV", 5) != 0;
}

static int regular_save(const struct rt_fd_probe *p, struct rt_fd *out, char *err, size_t errsize) {
        out->d.offset = (int64_t) raw_syscall3(SYS_lseek, p->fd, 0, SEEK_CUR);
        out->d.size = (uint64_t) p->st.st_size;
        if (!is_deleted(p))
                return 0;
        /* Keep its bytes: snapshot them now, while the program is stopped. */
        char path[PATH_MAX];
        strscpy(path, p->path, sizeof path);
        size_t n = strlen(path), s = strlen(DELETED_SUFFIX);
        if (n > s && !strcmp(path + n - s, DELETED_SUFFIX))
                path[n - s] = 0;
        int idx = rt_file_add(p->st.st_dev, p->st.st_ino, path, IMG_FF_DELETED | IMG_FF_CONTENT, &p->st);
        if (idx < 0)
                return idx;
        struct rt_file *f = &rt_cap->files[idx];
        if (!f->content && p->st.st_size > 0) {
                f->content = rt_copy_alloc((size_t) p->st.st_size);
                if (!f->content) {
                        snprintf(err, errsize, "fd %d: no memory to save the deleted file %s", p->fd, path);
                        return -ENOMEM;
                }
                int r = pread_full(p->fd, f->content, (size_t) p->st.st_size, 0);
                if (r < 0) {
                        snprintf(err, errsize, "fd %d: cannot read the deleted file %s: %s", p->fd, path,
                                 strerror(-r));
                        return r;
                }
        }
        out->d.file = (uint32_t) idx;
        out->path = f->path;
        return 0;
}

static int reopen_flags(const struct rt_fd *f) {
        return (int) (f->d.flags & ~(uint32_t) (O_CREAT | O_EXCL | O_TRUNC | O_NOCTTY)) | O_CLOEXEC;
}

static int regular_restore(struct rt_fd *f, char *err, size_t errsize) {
        int fd = -1;
        if (f->d.file != IMG_NONE) {
                for (uint32_t i = 0; rt_incoming && i < rt_incoming->n_file_fds; i++)
                        if (rt_incoming->file_fds[i].file == f->d.file) {
                                char link[64];
                                snprintf(link, sizeof link, "/proc/self/fd/%d", rt_incoming->file_fds[i].fd);
                                fd = (int) raw_syscall4(SYS_openat, AT_FDCWD, (long) link, reopen_flags(f), 0);
                                break;
                        }
                if (fd < 0) {
                        snprintf(err, errsize, "fd %d: the deleted file %s was not recreated", f->d.fd, f->path);
                        return -ENOENT;
                }
        } else {
                fd = (int) raw_syscall4(SYS_openat, AT_FDCWD, (long) f->path, reopen_flags(f), 0);
                if (fd < 0) {
                        snprintf(err, errsize, "fd %d: cannot reopen %s: %s", f->d.fd, f->path, strerror(-fd));
                        return fd;
                }
                struct stat st;
                if ((f->d.flags & O_ACCMODE) != O_RDONLY && fstat(fd, &st) == 0 &&
                    (uint64_t) st.st_size > f->d.size) {
                        if (raw_syscall2(SYS_ftruncate, fd, (long) f->d.size) == 0)
                                rt_info("%s grew after the checkpoint; cut back to its checkpointed size %llu",
                                        f->path, (unsigned long long) f->d.size);
                }
        }
        raw_syscall3(SYS_lseek, fd, f->d.offset, SEEK_SET);
        int r = rt_fd_install(fd, f->d.fd, (int) f->d.fdflags);
        if (r < 0)
                snprintf(err, errsize, "fd %d: cannot place %s: %s", f->d.fd, f->path, strerror(-r));
        return r;
}

const struct rt_fd_ops rt_fd_regular_ops = {
        .kind = IMG_FD_REGULAR,
        .name = "regular file",
        .shareable = true,
        .match = regular_match,
        .save = regular_save,
        .restore = regular_restore,
};

static bool directory_match(const struct rt_fd_probe *p) {
        return S_ISDIR(p->st.st_mode) && p->path[0] == '/';
}

static int directory_save(const struct rt_fd_probe *p, struct rt_fd *out, char *err, size_t errsize) {
        out->d.offset = (int64_t) raw_syscall3(SYS_lseek, p->fd, 0, SEEK_CUR);
        return 0;
}

static int directory_restore(struct rt_fd *f, char *err, size_t errsize) {
        int fd = (int) raw_syscall4(SYS_openat, AT_FDCWD, (long) f->path,
                                    (long) ((f->d.flags & ~(uint32_t) (O_CREAT | O_EXCL | O_TRUNC)) | O_DIRECTORY | O_CLOEXEC), 0);
        if (fd < 0) {
                snprintf(err, errsize, "fd %d: cannot reopen directory %s: %s", f->d.fd, f->path, strerror(-fd));
                return fd;
        }
        if (f->d.offset > 0)
                raw_syscall3(SYS_lseek, fd, f->d.offset, SEEK_SET);
        int r = rt_fd_install(fd, f->d.fd, (int) f->d.fdflags);
        if (r < 0)
                snprintf(err, errsize, "fd %d: cannot place directory %s", f->d.fd, f->path);
        return r;
}

const struct rt_fd_ops rt_fd_directory_ops = {
        .kind = IMG_FD_DIRECTORY,
        .name = "directory",
        .shareable = true,
        .match = directory_match,
        .save = directory_save,
        .restore = directory_restore,
};
