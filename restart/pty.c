/* Controlling terminals of the computation's sessions.
 *
 * Linux gives a controlling terminal to a session leader only (TIOCSCTTY),
 * and to the other processes of the session only by fork: each inherits
 * its parent's. The runtime recreates ptys once the processes exist, too
 * late for that. So a pty that was the controlling terminal of a session
 * leader of the computation (its slave's record says IMG_PTS_CTTY) is made
 * here, with its old number when that is free, before any process: every
 * process inherits its master, and its session leader, right after
 * setsid() and before it forks the rest of its session (tree.c), opens the
 * slave and takes it. The leader keeps that slave open on a number
 * reserved for it in every process, since a session loses its terminal
 * when the last descriptor of it closes, until its runtime has the
 * program's own descriptors back; the runtime of the process whose master
 * it was takes the master (preload/fd-pty.c). The numbers are above every
 * descriptor of the images, close-on-exec, and handed to the runtime
 * (struct rst_pty_fd), which closes them. */
#include <fcntl.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "restart.h"
#include "util.h"

/* The pty a session leader's image says was its terminal, or -1. */
static int64_t ctty_of(const struct img *img) {
        if (img->hdr.sid != img->hdr.pid)
                return -1;
        for (size_t i = 0; i < img->n_fds; i++) {
                const struct img_fd *d = &img->fds[i].d;
                if (d->kind == IMG_FD_PTY_SLAVE && (d->aux & IMG_PTS_CTTY) && d->offset >= 0 && d->offset <= UINT32_MAX)
                        return d->offset;
        }
        return -1;
}

static const struct rst_pty_fd *pty_of(const struct rst_options *o, int64_t index) {
        for (size_t i = 0; i < o->n_ptys; i++)
                if (o->ptys[i].index == index)
                        return &o->ptys[i];
        return NULL;
}

int rst_ptys_make(const struct rst_image *ims, size_t n, struct rst_options *o, char *err, size_t errsize) {
        int min_fd = 3;
        for (size_t i = 0; i < n; i++)
                for (size_t k = 0; k < ims[i].img.n_fds; k++)
                        min_fd = MAX(min_fd, ims[i].img.fds[k].d.fd + 1);
        o->n_ptys = 0;
        for (size_t i = 0; i < n; i++) {
                int64_t index = ctty_of(&ims[i].img);
                if (index < 0 || pty_of(o, index))
                        continue;
                if (o->n_ptys == RST_MAX_PTYS) {
                        snprintf(err, errsize, "more than %d sessions have a pty of the computation as their terminal",
                                 RST_MAX_PTYS);
                        return -E2BIG;
                }
                uint32_t got = 0;
                int m = pty_open_numbered("/dev/ptmx", (uint32_t) index, &got), unlock = 0;
                int high = m < 0 ? m : fcntl(m, F_DUPFD_CLOEXEC, min_fd);
                int slave = high < 0 ? -1 : open("/dev/null", O_RDONLY | O_CLOEXEC);   /* its number, reserved */
                int slave_high = slave < 0 ? -1 : fcntl(slave, F_DUPFD_CLOEXEC, min_fd);
                int r = m < 0 ? m : high < 0 || slave_high < 0 || ioctl(high, TIOCSPTLCK, &unlock) < 0 ? -errno : 0;
                if (m >= 0)
                        close(m);
                if (slave >= 0)
                        close(slave);
                if (r < 0) {
                        snprintf(err, errsize, "cannot make a pty for the terminal of process %u (/dev/pts/%lld): %s",
                                 ims[i].img.hdr.pid, (long long) index, strerror(-r));
                        return r;
                }
                o->ptys[o->n_ptys++] = (struct rst_pty_fd) { (uint32_t) index, high, slave_high };
        }
        return 0;
}

int rst_ptys_take_ctty(const struct rst_image *im, const struct rst_options *o, char *err, size_t errsize) {
        const struct rst_pty_fd *p = pty_of(o, ctty_of(&im->img));
        if (!p)
                return 0;
        int s = ioctl(p->master, TIOCGPTPEER, O_RDWR | O_NOCTTY | O_CLOEXEC);
        int r = s < 0 || ioctl(s, TIOCSCTTY, 0) < 0 || dup3(s, p->slave, O_CLOEXEC) < 0 ? -errno : 0;
        if (s >= 0)
                close(s);
        if (r < 0)
                snprintf(err, errsize, "process %u cannot take its terminal (the pty that was /dev/pts/%u) again: %s",
                         im->img.hdr.pid, p->index, strerror(-r));
        return r;
}

void rst_ptys_close(const struct rst_options *o) {
        for (size_t i = 0; i < o->n_ptys; i++) {
                close(o->ptys[i].master);
                close(o->ptys[i].slave);
        }
}
