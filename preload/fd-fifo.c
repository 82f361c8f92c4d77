/* FIFOs (named pipes): reopened by path with their flags, their bytes in
 * flight kept byte for byte.
 *
 * One FIFO (one inode) may be open in many descriptions: each open(2) of
 * its name makes one, in any process, any of them inherited further. Each
 * description is saved by its leader (fd.c), but the bytes in the FIFO
 * belong to the inode: exactly one description carries them. Its leader is
 * chosen through the coordinator: every leader publishes itself under the
 * FIFO's identity during DRAIN, and the one the store holds at CAPTURE
 * (the same answer for all) copies the bytes with tee(2), which leaves them
 * in place, as fd-pipe.c does. A description open for writing only peeks
 * through a reader of its own, opened on the FIFO for that moment.
 *
 * Restart: each process first opens the FIFO O_RDWR for itself (a
 * "keeper": opening never blocks then, and the FIFO's buffer lives on while
 * the processes open their ends), then each description with its access
 * mode and O_NONBLOCK, then its own flags. The carrier writes the bytes
 * (with the FIFO's capacity) through its keeper. Keepers are closed in
 * RST_REFILL, when every process of the computation has opened its ends.
 * A FIFO whose name is gone at the restart is made again (mkfifo, its old
 * mode); a name that is something else now is an error.
 *
 * Not done: a FIFO whose name was deleted while it was open fails the
 * checkpoint (there is no name to open it by). */
#include <fcntl.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>

#include "fd-event.h"
#include "raw-syscall.h"
#include "util.h"

#define FIFO_CARRIER 1u                 /* img_fd.aux: this description restores the bytes */

static bool fifo_match(const struct rt_fd_probe *p) {
        return S_ISFIFO(p->st.st_mode) && p->path[0] == '/';
}

static void fifo_key(char *key, size_t size, const struct rt_fd *f) {
        snprintf(key, size, "fifo/%s/%llu/%llu", host_name(), (unsigned long long) f->d.dev,
                 (unsigned long long) f->d.ino);
}

static void fifo_me(char *val, size_t size, const struct rt_fd *f) {
        snprintf(val, size, "%s/%d", rt.cfg.upid, f->d.fd);
}

static int fifo_publish(struct rt_fd *f, char *err, size_t errsize) {
        if (evfd_note_dup(f))
                return 0;
        char key[PROTO_KEY_MAX + 1], me[PROTO_ID_MAX + 16];
        fifo_key(key, sizeof key, f);
        fifo_me(me, sizeof me, f);
        int r = rt_kv_put(key, me, strlen(me) + 1);
        if (r < 0)
                snprintf(err, errsize, "fd %d (FIFO %s): cannot publish it: %s", f->d.fd, f->path, strerror(-r));
        return r;
}

/* A copy of the bytes in the FIFO (readable on fd), left in place. */
static int peek(int fd, struct rt_fd *f, char *err, size_t errsize) {
        int avail = 0;
        if (raw_syscall3(SYS_ioctl, fd, FIONREAD, (long) &avail) < 0 || avail <= 0)
                return 0;
        long cap = raw_syscall2(SYS_fcntl, fd, F_GETPIPE_SZ);
        int p[2];
        long r = raw_syscall2(SYS_pipe2, (long) p, O_CLOEXEC | O_NONBLOCK);
        if (r < 0) {
                snprintf(err, errsize, "fd %d (FIFO %s): no pipe to copy its bytes into: %s", f->d.fd, f->path,
                         strerror((int) -r));
                return (int) r;
        }
        f->data = rt_alloc(RT_ARENA_STATE, (size_t) avail);
        /* tee(2) takes no more than the copy's capacity: give it as many slots. */
        if (cap > 0)
                raw_syscall3(SYS_fcntl, p[1], F_SETPIPE_SZ, cap);
        r = f->data ? raw_syscall4(SYS_tee, fd, p[1], avail, SPLICE_F_NONBLOCK) : -ENOMEM;
        if (r == avail)
                r = read_full(p[0], f->data, (size_t) avail);
        else
                r = r < 0 ? r : -EIO;
        raw_syscall1(SYS_close, p[0]);
        raw_syscall1(SYS_close, p[1]);
        if (r < 0) {
                snprintf(err, errsize, "fd %d (FIFO %s): cannot copy its %d bytes: %s", f->d.fd, f->path, avail,
                         strerror((int) -r));
                return (int) r;
        }
        f->data_len = (size_t) avail;
        return 0;
}

static int fifo_save(const struct rt_fd_probe *p, struct rt_fd *f, char *err, size_t errsize) {
        if (f->d.aux & EVFD_AUX_DUP)
                return 0;
        if (p->st.st_nlink == 0) {
                snprintf(err, errsize, "fd %d is a FIFO whose name was deleted (%s): it cannot be opened again",
                         p->fd, p->path);
                return -EOPNOTSUPP;
        }
        f->d.rdev = p->st.st_mode;      /* to make it again if its name is gone */
        char key[PROTO_KEY_MAX + 1], me[PROTO_ID_MAX + 16], who[PROTO_ID_MAX + 16];
        size_t len;
        fifo_key(key, sizeof key, f);
        fifo_me(me, sizeof me, f);
        int r = rt_kv_get(key, who, sizeof who - 1, &len);
        if (r < 0) {
                if (r != -ECANCELED)
                        snprintf(err, errsize, "fd %d (FIFO %s): cannot look up who saves its bytes: %s", p->fd,
                                 p->path, strerror(-r));
                return r;
        }
        who[len] = 0;
        if (strcmp(who, me))
                return 0;
        f->d.aux |= FIFO_CARRIER;
        long cap = raw_syscall2(SYS_fcntl, p->fd, F_GETPIPE_SZ);
        f->d.offset = cap > 0 ? cap : 0;
        if ((p->flags & O_ACCMODE) != O_WRONLY)
                r = peek(p->fd, f, err, errsize);
        else {
                /* A reader of our own for the moment of the copy. */
                char self[64];
                snprintf(self, sizeof self, "/proc/self/fd/%d", p->fd);
                int rfd = (int) raw_syscall4(SYS_openat, AT_FDCWD, (long) self, O_RDONLY | O_NONBLOCK | O_CLOEXEC, 0);
                if (rfd < 0) {
                        snprintf(err, errsize, "fd %d (FIFO %s): cannot open it for reading to copy its bytes: %s",
                                 p->fd, p->path, strerror(-rfd));
                        return rfd;
                }
                r = peek(rfd, f, err, errsize);
                raw_syscall1(SYS_close, rfd);
        }
        f->d.size = f->data_len;
        return r;
}

/* Restart: this process's keepers, one per FIFO. */
struct keeper {
        uint64_t dev, ino;              /* at the checkpoint */
        int fd;
};
static struct keeper *keepers;
static uint32_t n_keepers;

static int keeper_for(const struct rt_fd *f, char *err, size_t errsize) {
        for (uint32_t i = 0; i < n_keepers; i++)
                if (keepers[i].dev == f->d.dev && keepers[i].ino == f->d.ino)
                        return keepers[i].fd;
        if (!keepers) {
                keepers = rt_alloc(RT_ARENA_SCRATCH, rt_cap->n_fds * sizeof *keepers);
                if (!keepers)
                        return -ENOMEM;
        }
        struct stat st;
        if (stat(f->path, &st) < 0 && errno == ENOENT) {
                if (mknod(f->path, S_IFIFO | (f->d.rdev & 07777), 0) < 0 && errno != EEXIST) {
                        snprintf(err, errsize, "fd %d: the FIFO %s is gone and cannot be made again: %s", f->d.fd,
                                 f->path, strerror(errno));
                        return -errno;
                }
                rt_info("the FIFO %s was gone: made it again", f->path);
        }
        int fd = (int) raw_syscall4(SYS_openat, AT_FDCWD, (long) f->path, O_RDWR | O_NONBLOCK | O_CLOEXEC, 0);
        if (fd < 0) {
                snprintf(err, errsize, "fd %d: cannot open the FIFO %s: %s", f->d.fd, f->path, strerror(-fd));
                return fd;
        }
        if (fstat(fd, &st) < 0 || !S_ISFIFO(st.st_mode)) {
                raw_syscall1(SYS_close, fd);
                snprintf(err, errsize, "fd %d: %s is not a FIFO any more", f->d.fd, f->path);
                return -EEXIST;
        }
        fd = evfd_private(fd);
        keepers[n_keepers++] = (struct keeper) { f->d.dev, f->d.ino, fd };
        return fd;
}

static int fifo_restore(struct rt_fd *f, char *err, size_t errsize) {
        if (f->d.aux & EVFD_AUX_DUP)
                return evfd_restore_dup(f, err, errsize);
        int keeper = keeper_for(f, err, errsize);
        if (keeper < 0)
                return keeper;
        int fd = (int) raw_syscall4(SYS_openat, AT_FDCWD, (long) f->path,
                                    (long) ((f->d.flags & O_ACCMODE) | O_NONBLOCK | O_NOCTTY | O_CLOEXEC), 0);
        if (fd < 0) {
                snprintf(err, errsize, "fd %d: cannot open the FIFO %s: %s", f->d.fd, f->path, strerror(-fd));
                return fd;
        }
        if ((f->d.aux & FIFO_CARRIER) && f->d.size) {
                long cur = raw_syscall2(SYS_fcntl, keeper, F_GETPIPE_SZ);
                if (f->d.offset > 0 && cur != f->d.offset)
                        raw_syscall3(SYS_fcntl, keeper, F_SETPIPE_SZ, (long) f->d.offset);
                int r = f->data && f->data_len == f->d.size ? write_full(keeper, f->data, f->data_len) : -EBADMSG;
                if (r < 0) {
                        raw_syscall1(SYS_close, fd);
                        snprintf(err, errsize, "fd %d: cannot put %llu bytes back into the FIFO %s: %s", f->d.fd,
                                 (unsigned long long) f->d.size, f->path, strerror(-r));
                        return r;
                }
        }
        return evfd_place(fd, f, "FIFO", err, errsize);
}

static int fifo_rst_refill(struct rt_fd *f, char *err, size_t errsize) {
        /* Every process has opened its ends: the keepers may go. */
        for (uint32_t i = 0; i < n_keepers; i++)
                evfd_close_private(keepers[i].fd);
        n_keepers = 0;
        keepers = NULL;
        return 0;
}

const struct rt_fd_ops rt_fd_fifo_ops = {
        .kind = IMG_FD_FIFO,
        .name = "FIFO",
        .shareable = true,
        .match = fifo_match,
        .publish = fifo_publish,
        .save = fifo_save,
        .restore = fifo_restore,
        .rst_refill = fifo_rst_refill,
};
