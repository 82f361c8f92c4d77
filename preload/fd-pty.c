/* Pseudo-terminals whose master the computation holds: a program that
 * opened /dev/ptmx itself (script, screen, expect, a terminal emulator) and
 * the programs running on its slave.
 *
 * The master (shareable) carries the pty: its number, the terminal modes
 * and window size of the slave (both are the slave's: ioctls on the master
 * reach them), the lock and packet-mode states, and the bytes buffered in
 * both directions:
 *   in   typed into the master, not yet read on the slave side (a partial
 *        line of canonical mode included),
 *   out  written on the slave side, not yet read from the master.
 * At CAPTURE its leader opens the slave for itself (TIOCGPTPEER), reads both
 * out (the slave switched to non-canonical mode for a moment, so a partial
 * line comes out too) and at once puts them back the way a restart does, so
 * nothing is left changed if the checkpoint is abandoned later:
 *   in   written to the master under modes that only store what comes (no
 *        signals, no editing characters, no input translation) and echo it
 *        raw; each byte's echo, read back from the master, says the line
 *        discipline has taken it (its work is asynchronous), and only then
 *        are the program's modes put back;
 *   out  written on the slave side with output processing off, so the bytes
 *        arrive exactly as they were (the master's own side is raw).
 *
 * A slave (one description per process: each process reopens its own)
 * whose master is in the computation asks the master's leader for the new
 * slave in RST_CONNECT and opens a description of its own on it in
 * RST_REFILL, with its old flags. A pty that was the controlling terminal
 * of a session is made by dmtcp_restart before the processes (restart/pty.c:
 * the session leader takes it before it forks the others, which inherit
 * it); its master's leader takes that one (rt_premade_pty). The session
 * leader gives the terminal its foreground process group (TIOCSPGRP).
 * /dev/tty is opened again (in a process that has no controlling terminal
 * after the restart, it is the slave itself). A slave whose master is not in the
 * computation is the terminal of the outside world: it is restored as
 * fd-dev.c restores a terminal (on the restarting command's terminal).
 *
 * The pty gets its old number if it is free (ptys are numbered lowest free
 * first: the ones below are held for a moment); otherwise another, with a
 * warning (the program's ttyname() changes).
 *
 * Not kept: a process of the session that gave its terminal up (TIOCNOTTY)
 * has it again; a pending end-of-file (^D) not yet read
 * becomes a NUL byte; an XOFF-stopped output and pending packet-mode status
 * bytes are not kept; bytes written to the master before any slave was
 * opened are not kept by a restart; only the N_TTY line discipline. */
#include <fcntl.h>
#include <linux/tty.h>
#include <poll.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/sysmacros.h>
#include <termios.h>

#include "fd-event.h"
#include "raw-syscall.h"
#include "rst-abi.h"
#include "util.h"

/* The kernel's struct termios (TCGETS/TCSETS), not glibc's. */
struct kterm {
        uint32_t iflag, oflag, cflag, lflag;
        uint8_t line;
        uint8_t cc[19];
};

#define PTY_BUF_MAX (256u * 1024)       /* more than a pty can buffer each way */
#define PTY_WAIT_MSEC 10000             /* a stuck line discipline fails after this */

struct ptmx_state {
        uint32_t index;
        int32_t locked, packet;
        bool slaves;                    /* the computation holds its slave */
        bool hup;                       /* every slave had been closed */
        bool peer;                      /* the slave is to be opened for the bytes */
        struct kterm tio;
        struct winsize ws;
        uint8_t *in, *out;
        uint32_t in_len, out_len;
};

struct pts_state {
        uint32_t index;
        int32_t fg_pgrp;                /* the controlling terminal's foreground group */
        bool ctty;                      /* the controlling terminal of this session leader */
        bool settled;                   /* restart: in its final place */
};

static void pty_key(char *key, size_t size, uint32_t index, bool slave) {
        snprintf(key, size, "pty/%s/%u%s", host_name(), index, slave ? "/s" : "");
}

static bool is_pts(dev_t rdev) {
        return major(rdev) >= 136 && major(rdev) <= 143;
}

static uint32_t pts_index(dev_t rdev) {
        return (major(rdev) - 136) * 256 + minor(rdev);
}

static int tcsets(int master, const struct kterm *t) {
        return (int) raw_syscall3(SYS_ioctl, master, TCSETS, (long) t);
}

/* Wait for fd to become ready for events, at most until deadline. */
static int wait_ready(int fd, short events, uint64_t deadline) {
        uint64_t now = now_usec(CLOCK_MONOTONIC);
        if (now >= deadline)
                return -ETIMEDOUT;
        struct pollfd p = { fd, events, 0 };
        poll(&p, 1, (int) MIN((deadline - now) / 1000 + 1, (uint64_t) 100));
        return 0;
}

/* Everything readable on fd now (non-blocking; an empty read flushes the
 * line discipline's pending work first, so nothing stays behind). */
static int read_out(int fd, uint8_t **data, uint32_t *len, char *err, size_t errsize) {
        uint8_t *buf = rt_alloc(RT_ARENA_SCRATCH, PTY_BUF_MAX);
        if (!buf)
                return -ENOMEM;
        size_t n = 0;
        for (;;) {
                long k = raw_syscall3(SYS_read, fd, (long) (buf + n), (long) (PTY_BUF_MAX - n));
                if (k > 0 && (n += (size_t) k) < PTY_BUF_MAX)
                        continue;
                if (k == 0 || k == -EAGAIN || k == -EIO)
                        break;
                if (k > 0)
                        snprintf(err, errsize, "more than %u bytes buffered", PTY_BUF_MAX);
                else
                        snprintf(err, errsize, "cannot read what it buffers: %s", strerror((int) -k));
                return k > 0 ? -EFBIG : (int) k;
        }
        *len = (uint32_t) n;
        *data = n ? rt_alloc(RT_ARENA_STATE, n) : NULL;
        if (n && !*data)
                return -ENOMEM;
        if (n)
                memcpy(*data, buf, n);
        return 0;
}

static int write_in(int fd, const uint8_t *data, size_t len, uint64_t deadline) {
        while (len) {
                long k = raw_syscall3(SYS_write, fd, (long) data, (long) len);
                if (k > 0) {
                        data += k;
                        len -= (size_t) k;
                } else if (k != -EAGAIN && k != -EINTR)
                        return k < 0 ? (int) k : -EIO;
                else if (wait_ready(fd, POLLOUT, deadline) < 0)
                        return -ETIMEDOUT;
        }
        return 0;
}

/* Read and drop n bytes of echo from the master. */
static int swallow_echo(int master, size_t n, uint64_t deadline) {
        uint8_t buf[4096];
        while (n) {
                long k = raw_syscall3(SYS_read, master, (long) buf, (long) MIN(n, sizeof buf));
                if (k > 0)
                        n -= (size_t) k;
                else if (k != -EAGAIN && k != -EINTR)
                        return k < 0 ? (int) k : -EIO;
                else if (wait_ready(master, POLLIN, deadline) < 0)
                        return -ETIMEDOUT;
        }
        return 0;
}

/* Modes under which bytes written to the master are stored as they are,
 * lines still formed by newline, EOL and EOL2, and each echoed as one raw
 * byte. */
static struct kterm refill_modes(const struct kterm *orig) {
        struct kterm t = *orig;
        t.lflag = (orig->lflag & (ICANON | IEXTEN)) | ECHO;
        t.iflag &= ~(uint32_t) (ISTRIP | INLCR | IGNCR | ICRNL | IUCLC | IXON | IXOFF | PARMRK | IMAXBEL);
        t.oflag = 0;
        static const int special[] = { VINTR, VQUIT, VERASE, VKILL, VEOF, VSTART, VSTOP,
                                       VSUSP, VREPRINT, VDISCARD, VWERASE, VLNEXT };
        for (size_t i = 0; i < ARRAY_SIZE(special); i++)
                t.cc[special[i]] = 0;   /* _POSIX_VDISABLE */
        return t;
}

/* Put the buffered bytes of a pty (its master and an open slave) back. */
static int pty_refill(int master, int peer, const struct ptmx_state *s, char *err, size_t errsize) {
        uint64_t deadline = now_usec(CLOCK_MONOTONIC) + PTY_WAIT_MSEC * 1000ULL;
        int r = 0;
        if (s->in_len) {
                struct kterm t = refill_modes(&s->tio);
                if ((r = tcsets(master, &t)) == 0 && (r = write_in(master, s->in, s->in_len, deadline)) == 0)
                        r = swallow_echo(master, s->in_len, deadline);
                tcsets(master, &s->tio);
                if (r < 0) {
                        snprintf(err, errsize, "cannot put back the %u bytes typed into it: %s%s", s->in_len,
                                 strerror(-r), r == -ETIMEDOUT ? " (is its output stopped by XOFF?)" : "");
                        return r;
                }
        }
        if (s->out_len) {
                struct kterm t = s->tio;
                t.oflag &= ~(uint32_t) OPOST;
                if ((r = tcsets(master, &t)) == 0)
                        r = write_in(peer, s->out, s->out_len, deadline);
                tcsets(master, &s->tio);
                if (r < 0) {
                        snprintf(err, errsize, "cannot put back the %u bytes written on its slave: %s", s->out_len,
                                 strerror(-r));
                        return r;
                }
        }
        return 0;
}

static int open_peer(int master) {
        return evfd_private((int) raw_syscall3(SYS_ioctl, master, TIOCGPTPEER,
                                               O_RDWR | O_NOCTTY | O_NONBLOCK | O_CLOEXEC));
}

/* --- master ------------------------------------------------------------------ */

static bool ptmx_match(const struct rt_fd_probe *p) {
        return S_ISCHR(p->st.st_mode) && major(p->st.st_rdev) == 5 && minor(p->st.st_rdev) == 2;
}

static int ptmx_publish(struct rt_fd *f, char *err, size_t errsize) {
        if (evfd_note_dup(f))
                return 0;
        unsigned index;
        if (raw_syscall3(SYS_ioctl, f->d.fd, TIOCGPTN, (long) &index) < 0) {
                snprintf(err, errsize, "fd %d (pty master): cannot get its number", f->d.fd);
                return -EIO;
        }
        f->d.offset = index;
        char key[PROTO_KEY_MAX + 1];
        pty_key(key, sizeof key, index, false);
        int r = rt_kv_put(key, rt.cfg.upid, strlen(rt.cfg.upid) + 1);
        if (r < 0)
                snprintf(err, errsize, "fd %d (pty master): cannot publish it: %s", f->d.fd, strerror(-r));
        return r;
}

/* Both directions out, then back in. */
static int ptmx_copy_bytes(int master, struct ptmx_state *s, char *err, size_t errsize) {
        int peer = open_peer(master);
        if (peer < 0) {
                snprintf(err, errsize, "cannot open its slave: %s", strerror(-peer));
                return peer;
        }
        int fl = (int) raw_syscall2(SYS_fcntl, master, F_GETFL), ldisc = N_TTY, r;
        raw_syscall3(SYS_fcntl, master, F_SETFL, fl | O_NONBLOCK);
        if (s->packet)
                raw_syscall3(SYS_ioctl, master, TIOCPKT, (long) &(int) { 0 });
        raw_syscall3(SYS_ioctl, peer, TIOCGETD, (long) &ldisc);
        if (ldisc != N_TTY) {
                snprintf(err, errsize, "its slave has line discipline %d, not N_TTY", ldisc);
                r = -EOPNOTSUPP;
        } else if ((r = read_out(master, &s->out, &s->out_len, err, errsize)) == 0) {
                struct kterm raw = s->tio;
                raw.lflag &= ~(uint32_t) ICANON;
                raw.cc[VMIN] = 0;
                raw.cc[VTIME] = 0;
                if ((r = tcsets(master, &raw)) == 0)
                        r = read_out(peer, &s->in, &s->in_len, err, errsize);
                tcsets(master, &s->tio);
                if (r == 0)
                        r = pty_refill(master, peer, s, err, errsize);
        }
        if (s->packet)
                raw_syscall3(SYS_ioctl, master, TIOCPKT, (long) &(int) { 1 });
        raw_syscall3(SYS_fcntl, master, F_SETFL, fl);
        evfd_close_private(peer);
        return r;
}

static int ptmx_save(const struct rt_fd_probe *p, struct rt_fd *f, char *err, size_t errsize) {
        if (f->d.aux & EVFD_AUX_DUP)
                return 0;
        struct ptmx_state *s = rt_alloc(RT_ARENA_STATE, sizeof *s);
        if (!s)
                return -ENOMEM;
        memset(s, 0, sizeof *s);
        s->index = (uint32_t) f->d.offset;
        int m = p->fd, pending = 0;
        if (raw_syscall3(SYS_ioctl, m, TCGETS, (long) &s->tio) < 0 ||
            raw_syscall3(SYS_ioctl, m, TIOCGWINSZ, (long) &s->ws) < 0 ||
            raw_syscall3(SYS_ioctl, m, TIOCGPTLCK, (long) &s->locked) < 0 ||
            raw_syscall3(SYS_ioctl, m, TIOCGPKT, (long) &s->packet) < 0) {
                snprintf(err, errsize, "fd %d (pty master /dev/pts/%u): cannot read its settings", m, s->index);
                return -EIO;
        }
        struct pollfd pf = { m, POLLIN, 0 };
        poll(&pf, 1, 0);
        s->hup = pf.revents & POLLHUP;
        raw_syscall3(SYS_ioctl, m, FIONREAD, (long) &pending);
        char key[PROTO_KEY_MAX + 1], val[8];
        size_t len;
        pty_key(key, sizeof key, s->index, true);
        int r = rt_kv_get(key, val, sizeof val, &len);
        if (r < 0 && r != -ENOENT) {
                if (r != -ECANCELED)
                        snprintf(err, errsize, "fd %d (pty master): cannot look up its slave: %s", m, strerror(-r));
                return r;
        }
        s->slaves = r == 0;
        /* Open the slave only where that changes nothing: it is open
         * already, or every slave was closed (closing ours leaves it so).
         * A slave never opened yet has nothing of ours to keep. */
        s->peer = (s->slaves || s->hup || pending > 0) && !s->locked;
        if (s->peer && (r = ptmx_copy_bytes(m, s, err, errsize)) < 0) {
                char why[256];
                strscpy(why, err, sizeof why);
                snprintf(err, errsize, "fd %d (pty master /dev/pts/%u): %s", m, s->index, why);
                return r;
        }
        f->priv = s;
        f->d.size = (uint64_t) s->in_len + s->out_len;
        rt_debug("fd %d (pty master /dev/pts/%u): kept %u bytes typed in, %u bytes out", m, s->index, s->in_len,
                 s->out_len);
        return 0;
}

/* --- ptys made by dmtcp_restart ------------------------------------------------ */

static struct rst_pty_fd premade[RST_MAX_PTYS];
static uint32_t n_premade;

void rt_premade_ptys_keep(const struct rst_pty_fd *ptys, uint32_t n) {
        n_premade = 0;
        for (uint32_t i = 0; i < n; i++) {
                struct rst_pty_fd p = ptys[i];
                /* Open in every process (the slave's number holds a
                 * placeholder outside the session the pty is the terminal
                 * of): ours to close. */
                if (raw_syscall2(SYS_fcntl, p.master, F_GETFD) < 0)
                        p.master = -1;
                if (raw_syscall2(SYS_fcntl, p.slave, F_GETFD) < 0)
                        p.slave = -1;
                rt_fd_set_private(p.master, true);
                rt_fd_set_private(p.slave, true);
                premade[n_premade++] = p;
        }
}

int rt_premade_pty(uint32_t index) {
        for (uint32_t i = 0; i < n_premade; i++)
                if (premade[i].index == index)
                        return premade[i].master;
        return -1;
}

void rt_premade_ptys_close(void) {
        for (uint32_t i = 0; i < n_premade; i++) {
                evfd_close_private(premade[i].master);
                evfd_close_private(premade[i].slave);
        }
        n_premade = 0;
}

/* The pty the restart tool made for us (the controlling terminal of a
 * session, see rst-abi.h), or a new one, numbered want if that is free; a
 * private descriptor. */
static int open_pty(const struct rt_fd *f, uint32_t want, uint32_t *got) {
        int m = rt_premade_pty(want);
        if (m >= 0) {
                unsigned index = want;
                raw_syscall3(SYS_ioctl, m, TIOCGPTN, (long) &index);   /* another if want was taken */
                *got = index;
                return evfd_private((int) raw_syscall3(SYS_fcntl, m, F_DUPFD_CLOEXEC, RT_FD_BASE));
        }
        m = pty_open_numbered(f->path, want, got);
        if (m < 0 && strcmp(f->path, "/dev/ptmx"))
                m = pty_open_numbered("/dev/ptmx", want, got);
        return evfd_private(m);
}

static int ptmx_restore(struct rt_fd *f, char *err, size_t errsize) {
        if (f->d.aux & EVFD_AUX_DUP)
                return evfd_restore_dup(f, err, errsize);
        const struct ptmx_state *s = f->priv;
        if (!s) {
                snprintf(err, errsize, "fd %d: the pty's saved state is missing", f->d.fd);
                return -EBADMSG;
        }
        uint32_t got = 0;
        int m = open_pty(f, s->index, &got);
        if (m < 0) {
                snprintf(err, errsize, "fd %d: cannot open a new pty (%s): %s", f->d.fd, f->path, strerror(-m));
                return m;
        }
        if (got != s->index)
                rt_warn("fd %d: the pty /dev/pts/%u is taken here: the program's pty is /dev/pts/%u now", f->d.fd,
                        s->index, got);
        char why[256] = "";
        int r = 0, peer = -1;
        if (raw_syscall3(SYS_ioctl, m, TIOCSPTLCK, (long) &(int) { 0 }) < 0 || tcsets(m, &s->tio) < 0 ||
            raw_syscall3(SYS_ioctl, m, TIOCSWINSZ, (long) &s->ws) < 0) {
                snprintf(why, sizeof why, "cannot give it its modes and window size");
                r = -EIO;
        }
        if (r == 0 && s->peer && (peer = r = open_peer(m)) < 0)
                snprintf(why, sizeof why, "cannot open its slave: %s", strerror(-r));
        if (r >= 0 && peer >= 0)
                r = pty_refill(m, peer, s, why, sizeof why);
        /* Its slave goes to the processes that had it (RST_CONNECT); with
         * none, closing ours leaves it closed as it was. */
        if (r >= 0 && peer >= 0 && s->slaves) {
                if ((r = rt_mailbox_offer(RT_MB_PTY_SLAVE, s->index, peer)) < 0)
                        snprintf(why, sizeof why, "cannot keep its slave for the processes that have it");
                else
                        peer = -1;
        }
        evfd_close_private(peer);
        if (r >= 0 && s->locked)
                raw_syscall3(SYS_ioctl, m, TIOCSPTLCK, (long) &(int) { 1 });
        if (r >= 0 && s->packet)
                raw_syscall3(SYS_ioctl, m, TIOCPKT, (long) &(int) { 1 });
        rt_fd_set_private(m, false);
        if (r < 0) {
                raw_syscall1(SYS_close, m);
                snprintf(err, errsize, "fd %d (pty master /dev/pts/%u): %s", f->d.fd, s->index, why);
                return r;
        }
        return evfd_place(m, f, "pty master", err, errsize);
}

const struct rt_fd_ops rt_fd_ptmx_ops = {
        .kind = IMG_FD_PTY_MASTER,
        .name = "pty master",
        .shareable = true,
        .match = ptmx_match,
        .publish = ptmx_publish,
        .save = ptmx_save,
        .restore = ptmx_restore,
};

/* --- slave ------------------------------------------------------------------- */

static bool is_devtty(dev_t rdev) {
        return major(rdev) == 5 && minor(rdev) == 0;
}

/* /dev/tty too: when our controlling terminal is a pty of ours, it is that. */
static bool pts_match(const struct rt_fd_probe *p) {
        return S_ISCHR(p->st.st_mode) && (is_pts(p->st.st_rdev) || is_devtty(p->st.st_rdev));
}

/* Our controlling terminal (/proc/self/stat tty_nr), 0 if none. */
static dev_t ctty_of_self(void) {
        int64_t v = evfd_stat_field(0, 7);
        uint64_t nr = v < 0 ? 0 : (uint64_t) v;
        return makedev((unsigned) ((nr >> 8) & 0xfff), (unsigned) ((nr & 0xff) | ((nr >> 12) & 0xfff00)));
}

/* The number of the pty a slave (or /dev/tty) is, -1 if it is no pty. */
static int pts_number(dev_t rdev) {
        if (is_devtty(rdev))
                rdev = ctty_of_self();
        return is_pts(rdev) ? (int) pts_index(rdev) : -1;
}

static int pts_publish(struct rt_fd *f, char *err, size_t errsize) {
        int index = pts_number(f->d.rdev);
        if (evfd_note_dup(f) || index < 0)
                return 0;
        char key[PROTO_KEY_MAX + 1];
        pty_key(key, sizeof key, (uint32_t) index, true);
        int r = rt_kv_put(key, "1", 2);
        if (r < 0)
                snprintf(err, errsize, "fd %d (pty slave): cannot publish it: %s", f->d.fd, strerror(-r));
        return r;
}

static const struct rt_fd *fd_entry(int fd) {
        for (uint32_t i = 0; i < rt_cap->n_fds; i++)
                if (rt_cap->fds[i].d.fd == fd)
                        return &rt_cap->fds[i];
        return NULL;
}

static int pts_save(const struct rt_fd_probe *p, struct rt_fd *f, char *err, size_t errsize) {
        struct pts_state *s = rt_alloc(RT_ARENA_STATE, sizeof *s);
        if (!s)
                return -ENOMEM;
        memset(s, 0, sizeof *s);
        int index = pts_number(p->st.st_rdev);
        s->index = index < 0 ? 0 : (uint32_t) index;
        f->d.offset = s->index;
        f->d.aux |= is_devtty(p->st.st_rdev) ? IMG_PTS_DEVTTY : 0;
        f->priv = s;
        if (f->d.aux & EVFD_AUX_DUP) {
                const struct rt_fd *o = fd_entry(f->d.leader_fd);
                if (o && o->d.kind == IMG_FD_TTY) {
                        f->d.kind = IMG_FD_TTY;
                        f->d.aux &= ~EVFD_AUX_DUP;
                        f->d.leader_fd = -1;
                }
                return 0;
        }
        char key[PROTO_KEY_MAX + 1];
        size_t len;
        pty_key(key, sizeof key, s->index, false);
        int r = index < 0 ? -ENOENT : rt_kv_get(key, f->d.leader, sizeof f->d.leader - 1, &len);
        if (r == -ENOENT) {
                /* The master is not ours: the outside world's terminal. */
                f->d.kind = IMG_FD_TTY;
                memset(f->d.leader, 0, sizeof f->d.leader);
                return 0;
        }
        if (r < 0) {
                if (r != -ECANCELED)
                        snprintf(err, errsize, "fd %d (pty slave %s): cannot look up its master: %s", p->fd, p->path,
                                 strerror(-r));
                return r;
        }
        f->d.leader[len] = 0;
        s->ctty = getsid(0) == rt.pid && (is_devtty(p->st.st_rdev) || ctty_of_self() == p->st.st_rdev);
        if (s->ctty && raw_syscall3(SYS_ioctl, p->fd, TIOCGPGRP, (long) &s->fg_pgrp) < 0)
                s->fg_pgrp = 0;
        f->d.aux |= s->ctty ? IMG_PTS_CTTY : 0;         /* for dmtcp_restart (rst-abi.h) */
        return 0;
}

static int pts_restore(struct rt_fd *f, char *err, size_t errsize) {
        return 1;       /* from the master's leader (RST_CONNECT), settled in RST_REFILL */
}

static int pts_connect(struct rt_fd *f, char *err, size_t errsize) {
        if (f->d.aux & EVFD_AUX_DUP)
                return 0;
        int r = rt_mailbox_request(f->d.leader, RT_MB_PTY_SLAVE, (uint64_t) f->d.offset, f->d.fd, (int) f->d.fdflags);
        if (r < 0)
                snprintf(err, errsize, "fd %d: cannot obtain the pty slave from process %s: %s", f->d.fd, f->d.leader,
                         strerror(-r));
        return r;
}

/* A description of our own on the slave received from the master's leader. */
static void reopen_own(struct rt_fd *f) {
        char self[64];
        snprintf(self, sizeof self, "/proc/self/fd/%d", f->d.fd);
        uint32_t flags = (f->d.flags & (O_ACCMODE | O_APPEND | O_ASYNC | O_NONBLOCK)) | O_NOCTTY | O_CLOEXEC;
        int fd = (int) raw_syscall4(SYS_openat, AT_FDCWD, (long) self, flags, 0);
        if (fd < 0 || rt_fd_install(fd, f->d.fd, (int) f->d.fdflags) < 0) {
                rt_warn("fd %d: cannot open the pty slave anew (%s): it shares its flags with the other processes "
                        "that have it", f->d.fd, strerror(fd < 0 ? -fd : EBADF));
                raw_syscall3(SYS_fcntl, f->d.fd, F_SETFL, f->d.flags & (O_APPEND | O_ASYNC | O_NONBLOCK));
        }
}

/* Our session's terminal again. dmtcp_restart gave it to the session
 * before it forked the session's other processes (they inherit it, the
 * only way they can have it); the ioctl is for a restart without that. */
static void take_ctty(const struct rt_fd *f, const struct pts_state *s) {
        struct stat st;
        if (fstat(f->d.fd, &st) < 0)
                return;
        long r = ctty_of_self() == st.st_rdev ? 0 : raw_syscall3(SYS_ioctl, f->d.fd, TIOCSCTTY, 0);
        if (r < 0) {
                rt_warn("fd %d: cannot make the pty slave the controlling terminal of session %d again: %s", f->d.fd,
                        (int) rt.pid, strerror((int) -r));
                return;
        }
        if (s->fg_pgrp > 0 && raw_syscall3(SYS_ioctl, f->d.fd, TIOCSPGRP, (long) &s->fg_pgrp) < 0)
                rt_warn("fd %d: cannot give the pty back to its foreground process group %d", f->d.fd,
                        (int) s->fg_pgrp);
}

/* /dev/tty again, now that our session has its terminal back; without
 * one (not the session leader), the slave itself. */
static void reopen_devtty(struct rt_fd *f) {
        uint32_t flags = (f->d.flags & (O_ACCMODE | O_APPEND | O_ASYNC | O_NONBLOCK)) | O_CLOEXEC;
        int fd = (int) raw_syscall4(SYS_openat, AT_FDCWD, (long) "/dev/tty", flags, 0);
        if (fd >= 0 && rt_fd_install(fd, f->d.fd, (int) f->d.fdflags) == 0)
                return;
        rt_info("fd %d was /dev/tty: this process has no controlling terminal after the restart (its session's "
                "leader was not restarted with it), so it is the pty slave itself", f->d.fd);
        reopen_own(f);
}

int evfd_pty_settle(char *err, size_t errsize) {
        /* The slaves, the session's terminal taken with them; then /dev/tty,
         * which needs it; then duplicates of either. */
        for (int pass = 0; pass < 3; pass++)
                for (uint32_t i = 0; i < rt_cap->n_fds; i++) {
                        struct rt_fd *f = &rt_cap->fds[i];
                        struct pts_state *s = f->priv;
                        int want = (f->d.aux & EVFD_AUX_DUP) ? 2 : (f->d.aux & IMG_PTS_DEVTTY) ? 1 : 0;
                        if (f->d.kind != IMG_FD_PTY_SLAVE || !s || s->settled || want != pass)
                                continue;
                        s->settled = true;
                        if (pass == 2) {
                                int r = evfd_restore_dup(f, err, errsize);
                                if (r < 0)
                                        return r;
                                f->restored = true;
                                continue;
                        }
                        if (pass == 0)
                                reopen_own(f);
                        if (s->ctty)
                                take_ctty(f, s);
                        if (pass == 1)
                                reopen_devtty(f);
                }
        return 0;
}

static int pts_rst_refill(struct rt_fd *f, char *err, size_t errsize) {
        return evfd_pty_settle(err, errsize);
}

const struct rt_fd_ops rt_fd_pts_ops = {
        .kind = IMG_FD_PTY_SLAVE,
        .name = "pty slave",
        .match = pts_match,
        .publish = pts_publish,
        .save = pts_save,
        .restore = pts_restore,
        .connect = pts_connect,
        .rst_refill = pts_rst_refill,
};
