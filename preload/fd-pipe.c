/* Pipes (pipe(2)): the two ends, in one process or spread over several.
 *
 * Checkpoint: each end's leader publishes "pipe/<host>/<ino>/r" or ".../w"
 * (its upid). The read end's leader peeks at the bytes in the pipe with
 * tee(2) into a pipe of its own, which leaves them in place: nothing to put
 * back after the checkpoint, and a reader running on (copy-on-write) reads
 * exactly what it would have. At capture each leader looks up the other
 * end: is it in the computation, and who holds it.
 *
 * Restart: the read end's leader creates the pipe, gives it its capacity,
 * writes the saved bytes into it and keeps the read end; the write end is
 * handed to the write end's leader (mailbox, RST_CONNECT) or closed if no
 * process of the computation had it. A write end alone (its reader was not
 * in the computation, or closed it) gets a new pipe whose read end is
 * closed: a write fails with EPIPE as it would have.
 *
 * Not kept: packet boundaries of an O_DIRECT pipe's buffered data. */
#include <fcntl.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "fd.h"
#include "raw-syscall.h"
#include "util.h"

#define PIPE_OTHER_END 1u       /* aux: the other end is held in the computation */

/* F_SETFL can change these; the rest are fixed at creation (O_DIRECT). */
#define SETFL_MASK (O_APPEND | O_ASYNC | O_NONBLOCK | O_NOATIME)

static bool is_read_end(const struct rt_fd *f) {
        return (f->d.flags & O_ACCMODE) == O_RDONLY;
}

static void pipe_key(char *key, size_t size, uint64_t ino, bool read_end) {
        snprintf(key, size, "pipe/%s/%llu/%c", host_name(), (unsigned long long) ino, read_end ? 'r' : 'w');
}

static bool pipe_match(const struct rt_fd_probe *p) {
        return S_ISFIFO(p->st.st_mode) && !strncmp(p->path, "pipe:[", 6) &&
               ((p->flags & O_ACCMODE) == O_RDONLY || (p->flags & O_ACCMODE) == O_WRONLY);
}

static int pipe_publish(struct rt_fd *f, char *err, size_t errsize) {
        char key[PROTO_KEY_MAX + 1];
        pipe_key(key, sizeof key, f->d.ino, is_read_end(f));
        int r = rt_kv_put(key, rt.cfg.upid, strlen(rt.cfg.upid) + 1);
        if (r < 0)
                snprintf(err, errsize, "fd %d (pipe): cannot publish it: %s", f->d.fd, strerror(-r));
        return r;
}

/* The read end's leader: a copy of the bytes in the pipe, left in place. */
static int pipe_drain(struct rt_fd *f, char *err, size_t errsize) {
        if (!is_read_end(f))
                return 0;
        int avail = 0;
        if (raw_syscall3(SYS_ioctl, f->d.fd, FIONREAD, (long) &avail) < 0 || avail <= 0)
                return 0;
        long cap = raw_syscall2(SYS_fcntl, f->d.fd, F_GETPIPE_SZ);
        int p[2];
        long r = raw_syscall2(SYS_pipe2, (long) p, O_CLOEXEC | O_NONBLOCK);
        if (r < 0) {
                snprintf(err, errsize, "fd %d (pipe): no pipe to read its contents into: %s", f->d.fd,
                         strerror((int) -r));
                return (int) r;
        }
        if (cap > 0 && raw_syscall3(SYS_fcntl, p[1], F_SETPIPE_SZ, cap) < 0 && avail > 65536) {
                snprintf(err, errsize, "fd %d (pipe): cannot make a pipe of %ld bytes to read its contents into",
                         f->d.fd, cap);
                r = -ENOSPC;
                goto out;
        }
        f->data = rt_alloc(RT_ARENA_STATE, (size_t) avail);
        if (!f->data) {
                r = -ENOMEM;
                snprintf(err, errsize, "fd %d (pipe): no memory for its %d bytes", f->d.fd, avail);
                goto out;
        }
        /* tee(2) does not consume, so one call must take it all: the copy
         * has as many slots as the original. */
        r = raw_syscall4(SYS_tee, f->d.fd, p[1], avail, SPLICE_F_NONBLOCK);
        if (r != avail) {
                snprintf(err, errsize, "fd %d (pipe): copied %ld of its %d bytes", f->d.fd, r, avail);
                r = r < 0 ? r : -EIO;
                goto out;
        }
        r = read_full(p[0], f->data, (size_t) avail);
        if (r < 0) {
                snprintf(err, errsize, "fd %d (pipe): cannot read its contents: %s", f->d.fd, strerror((int) -r));
                goto out;
        }
        f->data_len = (size_t) avail;
        r = 0;
out:
        raw_syscall1(SYS_close, p[0]);
        raw_syscall1(SYS_close, p[1]);
        return (int) r;
}

static int pipe_save(const struct rt_fd_probe *p, struct rt_fd *f, char *err, size_t errsize) {
        long cap = raw_syscall2(SYS_fcntl, p->fd, F_GETPIPE_SZ);
        f->d.offset = cap > 0 ? cap : 0;        /* capacity */
        f->d.size = f->data_len;
        char key[PROTO_KEY_MAX + 1], upid[PROTO_ID_MAX + 1];
        size_t len;
        pipe_key(key, sizeof key, f->d.ino, !is_read_end(f));
        int r = rt_kv_get(key, upid, sizeof upid, &len);
        if (r == -ENOENT)
                return 0;
        if (r < 0) {
                if (r != -ECANCELED)
                        snprintf(err, errsize, "fd %d (pipe): cannot look up its other end: %s", f->d.fd,
                                 strerror(-r));
                return r;
        }
        upid[MIN(len, sizeof upid - 1)] = 0;
        f->d.aux |= PIPE_OTHER_END;
        strscpy(f->d.leader, upid, sizeof f->d.leader);
        return 0;
}

static int make_pipe(const struct rt_fd *f, int p[2], char *err, size_t errsize) {
        long r = raw_syscall2(SYS_pipe2, (long) p, O_CLOEXEC | (f->d.flags & O_DIRECT));
        if (r < 0) {
                snprintf(err, errsize, "fd %d: cannot create a pipe: %s", f->d.fd, strerror((int) -r));
                return (int) r;
        }
        long cur = raw_syscall2(SYS_fcntl, p[0], F_GETPIPE_SZ);
        if (f->d.offset > 0 && cur != f->d.offset &&
            raw_syscall3(SYS_fcntl, p[0], F_SETPIPE_SZ, (long) f->d.offset) < 0 && f->d.size > (uint64_t) cur) {
                snprintf(err, errsize, "fd %d: cannot give the pipe its capacity of %lld bytes", f->d.fd,
                         (long long) f->d.offset);
                raw_syscall1(SYS_close, p[0]);
                raw_syscall1(SYS_close, p[1]);
                return -ENOSPC;
        }
        return 0;
}

static int pipe_restore(struct rt_fd *f, char *err, size_t errsize) {
        int p[2], r;
        if (!is_read_end(f) && (f->d.aux & PIPE_OTHER_END))
                return 1;       /* the reader's leader creates it: RST_CONNECT */
        if ((r = make_pipe(f, p, err, errsize)) < 0)
                return r;
        int mine = is_read_end(f) ? p[0] : p[1], other = is_read_end(f) ? p[1] : p[0];
        if (is_read_end(f) && f->d.size) {
                if (f->d.size != f->data_len || !f->data) {
                        snprintf(err, errsize, "fd %d: the pipe's saved contents are missing", f->d.fd);
                        r = -EBADMSG;
                        goto fail;
                }
                raw_syscall3(SYS_fcntl, p[1], F_SETFL, O_NONBLOCK);
                r = write_full(p[1], f->data, f->data_len);
                raw_syscall3(SYS_fcntl, p[1], F_SETFL, 0);
                if (r < 0) {
                        snprintf(err, errsize, "fd %d: cannot put %zu bytes back into the pipe: %s", f->d.fd,
                                 f->data_len, strerror(-r));
                        goto fail;
                }
        }
        raw_syscall3(SYS_fcntl, mine, F_SETFL, f->d.flags & SETFL_MASK);
        if (is_read_end(f) && (f->d.aux & PIPE_OTHER_END)) {
                if ((r = rt_mailbox_offer(RT_MB_PIPE_WRITE, f->d.ino, other)) < 0) {
                        snprintf(err, errsize, "fd %d: cannot keep the pipe's write end", f->d.fd);
                        goto fail;
                }
        } else
                raw_syscall1(SYS_close, other);
        r = rt_fd_install(mine, f->d.fd, (int) f->d.fdflags);
        if (r < 0)
                snprintf(err, errsize, "fd %d: cannot place the pipe: %s", f->d.fd, strerror(-r));
        return r;
fail:
        raw_syscall1(SYS_close, p[0]);
        raw_syscall1(SYS_close, p[1]);
        return r;
}

static int pipe_connect(struct rt_fd *f, char *err, size_t errsize) {
        int r = rt_mailbox_request(f->d.leader, RT_MB_PIPE_WRITE, f->d.ino, f->d.fd, (int) f->d.fdflags);
        if (r < 0)
                snprintf(err, errsize, "fd %d: cannot obtain the pipe's write end from process %s: %s", f->d.fd,
                         f->d.leader, strerror(-r));
        return r;
}

static int pipe_rst_refill(struct rt_fd *f, char *err, size_t errsize) {
        /* A write end received from the reader: its flags are ours to set. */
        if (!is_read_end(f) && (f->d.aux & PIPE_OTHER_END))
                raw_syscall3(SYS_fcntl, f->d.fd, F_SETFL, f->d.flags & SETFL_MASK);
        return 0;
}

const struct rt_fd_ops rt_fd_pipe_ops = {
        .kind = IMG_FD_PIPE,
        .name = "pipe",
        .shareable = true,
        .match = pipe_match,
        .publish = pipe_publish,
        .drain = pipe_drain,
        .save = pipe_save,
        .restore = pipe_restore,
        .connect = pipe_connect,
        .rst_refill = pipe_rst_refill,
};
