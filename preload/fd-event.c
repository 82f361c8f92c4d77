/* Event descriptors without a filesystem name: eventfd, signalfd and timerfd.
 * All may be inherited across fork, so they are shareable: the elected
 * leader saves and recreates each, the others receive it (fd.c, mailbox.c).
 * Their state is read from /proc/self/fdinfo without disturbing them, so
 * nothing is drained and nothing is put back after a checkpoint.
 *
 * eventfd   the counter (64 bits: created at 0, then written), the
 *           EFD_SEMAPHORE flag ("eventfd-semaphore" in fdinfo, Linux 6.7+;
 *           an older kernel does not say it, and such an eventfd is
 *           restored as a plain counter, with a warning at the checkpoint).
 * signalfd  its mask. The checkpoint signal (DMTCP_SIGCKPT, SIGUSR2 by
 *           default) is hidden from the program: the signalfd() wrapper
 *           below takes it out of every mask, so a signalfd can never take
 *           the runtime's signal. A program that reads its own SIGUSR2
 *           through a signalfd therefore never sees it: give dmtcp another
 *           checkpoint signal (--ckpt-signal) for such a program. Signals
 *           pending at the checkpoint are the process's, saved with it
 *           (signals.c): a signalfd reads them after the restart.
 * timerfd   clock, flags, remaining time and interval, and the expirations
 *           not yet read (restored with TFD_IOC_SET_TICKS). A one-shot
 *           timer due at the very moment of the checkpoint, whose timer
 *           interrupt had not run yet, looks disarmed and is restored so
 *           (its expiration lost; a periodic one is restored as due). What
 *           a restart does with time:
 *             - a relative timer, or an absolute one on CLOCK_MONOTONIC or
 *               CLOCK_BOOTTIME, continues with the time it had left at the
 *               checkpoint: the time the computation was not running does
 *               not count (those clocks start anew after a reboot or on
 *               another machine, so an absolute value of them would mean
 *               nothing there). An absolute one keeps TFD_TIMER_ABSTIME,
 *               re-based on the new clock.
 *             - an absolute timer on CLOCK_REALTIME (or _ALARM) keeps its
 *               wall-clock deadline: it means "at 12:00", on any machine.
 *               Restarted after that moment it fires at once, and a
 *               periodic one counts every period missed since, as after a
 *               suspend. TFD_TIMER_CANCEL_ON_SET is kept.
 */
#include <fcntl.h>
#include <linux/kcmp.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/signalfd.h>
#include <sys/timerfd.h>
#include <time.h>

#include "fd-event.h"
#include "raw-syscall.h"
#include "util.h"

#ifndef TFD_IOC_SET_TICKS
#define TFD_IOC_SET_TICKS _IOW('T', 0, uint64_t)
#endif

/* F_SETFL can change these; the others are fixed at creation. */
#define SETFL_MASK (O_APPEND | O_ASYNC | O_NONBLOCK | O_NOATIME)

/* --- helpers for all the kinds of fd-event.h ---------------------------- */

char *evfd_fdinfo(int fd, char *err, size_t errsize) {
        char path[64];
        snprintf(path, sizeof path, "/proc/self/fdinfo/%d", fd);
        for (size_t cap = 16384;; cap *= 4) {
                char *buf = rt_alloc(RT_ARENA_SCRATCH, cap);
                if (!buf) {
                        snprintf(err, errsize, "fd %d: no memory to read its state", fd);
                        return NULL;
                }
                int pfd = (int) raw_syscall4(SYS_openat, AT_FDCWD, (long) path, O_RDONLY | O_CLOEXEC, 0);
                if (pfd < 0) {
                        snprintf(err, errsize, "fd %d: cannot read %s: %s", fd, path, strerror(-pfd));
                        return NULL;
                }
                size_t len = 0;
                long k;
                while (len < cap - 1 && (k = raw_syscall3(SYS_read, pfd, (long) (buf + len), (long) (cap - 1 - len))) > 0)
                        len += (size_t) k;
                raw_syscall1(SYS_close, pfd);
                if (k < 0) {
                        snprintf(err, errsize, "fd %d: cannot read %s: %s", fd, path, strerror((int) -k));
                        return NULL;
                }
                if (len < cap - 1) {
                        buf[len] = 0;
                        return buf;
                }
        }
}

int evfd_info_u64(const char *info, const char *key, int base, uint64_t *out) {
        size_t n = strlen(key);
        for (const char *p = info; (p = strstr(p, key)); p += n) {
                if (p != info && p[-1] != '\n')
                        continue;
                const char *v = p + n;
                while (*v == ' ' || *v == '\t')
                        v++;
                char *end;
                errno = 0;
                *out = strtoull(v, &end, base);
                return end == v || errno ? -EBADMSG : 0;
        }
        return -ENOENT;
}

bool evfd_info_next(const char **pos, const char *prefix, char *line, size_t size) {
        size_t plen = strlen(prefix);
        for (const char *l = *pos; *l;) {
                const char *nl = strchr(l, '\n'), *next = nl ? nl + 1 : l + strlen(l);
                if (!strncmp(l, prefix, plen)) {
                        size_t len = MIN((size_t) ((nl ? nl : next) - l), size - 1);
                        memcpy(line, l, len);
                        line[len] = 0;
                        *pos = next;
                        return true;
                }
                l = next;
        }
        return false;
}

uint32_t evfd_info_count(const char *info, const char *prefix) {
        char line[16];
        uint32_t n = 0;
        while (evfd_info_next(&info, prefix, line, sizeof line))
                n++;
        return n;
}

int64_t evfd_stat_field(pid_t pid, int field) {
        char path[64], buf[1024];
        if (pid)
                snprintf(path, sizeof path, "/proc/%d/stat", (int) pid);
        else
                strscpy(path, "/proc/self/stat", sizeof path);
        if (read_small_file(path, buf, sizeof buf) < 0)
                return -1;
        const char *p = strrchr(buf, ')');     /* after the command name, which may hold spaces */
        for (int k = 2; p && k < field; k++)
                p = strchr(p + 1, ' ');
        return p ? (int64_t) strtoull(p + 1, NULL, 10) : -1;
}

/* Descriptors of the kinds that note their dups (see fd-event.h). */
static bool notes_dups(const struct rt_fd *f) {
        static const struct rt_fd_ops *const mine[] = { &rt_fd_eventfd_ops, &rt_fd_signalfd_ops, &rt_fd_timerfd_ops,
                                                        &rt_fd_epoll_ops, &rt_fd_inotify_ops, &rt_fd_fifo_ops,
                                                        &rt_fd_ptmx_ops, &rt_fd_pts_ops };
        for (size_t i = 0; i < ARRAY_SIZE(mine); i++)
                if (f->ops == mine[i])
                        return f->leader;
        return false;
}

/* The order of two descriptions: by kind, then as kcmp orders open files
 * (0 the same description). */
static int cmp_desc(const struct rt_fd *a, const struct rt_fd *b) {
        if (a->d.kind != b->d.kind)
                return a->d.kind < b->d.kind ? -1 : 1;
        long r = raw_syscall5(SYS_kcmp, rt.pid, rt.pid, KCMP_FILE, a->d.fd, b->d.fd);
        if (r == 0 || r == 1 || r == 2)
                return r == 0 ? 0 : r == 1 ? -1 : 1;
        return a->d.fd < b->d.fd ? -1 : a->d.fd > b->d.fd;      /* not comparable: apart */
}

static void sift_down(struct rt_fd **h, size_t i, size_t n) {
        for (size_t c; (c = 2 * i + 1) < n; i = c) {
                if (c + 1 < n && cmp_desc(h[c], h[c + 1]) < 0)
                        c++;
                if (cmp_desc(h[i], h[c]) >= 0)
                        return;
                struct rt_fd *t = h[i];
                h[i] = h[c];
                h[c] = t;
        }
}

/* Once a checkpoint: sort our descriptors by description (heap sort, no
 * allocation but the scratch arena: n log n kcmp calls instead of n^2), and
 * mark each but the first (lowest) of a description a dup of it. */
static void mark_dups(void) {
        struct rt_fd **h = rt_alloc(RT_ARENA_SCRATCH, (rt_cap->n_fds + 1) * sizeof *h);
        size_t n = 0;
        for (uint32_t i = 0; i < rt_cap->n_fds; i++) {
                struct rt_fd *f = &rt_cap->fds[i];
                if (!notes_dups(f))
                        continue;
                f->d.aux |= EVFD_AUX_SEEN;
                if (h)
                        h[n++] = f;
        }
        for (size_t i = n / 2; i-- > 0;)
                sift_down(h, i, n);
        for (size_t end = n; end > 1; end--) {
                struct rt_fd *t = h[0];
                h[0] = h[end - 1];
                h[end - 1] = t;
                sift_down(h, 0, end - 1);
        }
        for (size_t i = 0; i < n;) {
                size_t j = i + 1;
                struct rt_fd *first = h[i];
                for (; j < n && cmp_desc(h[i], h[j]) == 0; j++)
                        if (h[j] < first)
                                first = h[j];
                for (size_t k = i; k < j; k++)
                        if (h[k] != first) {
                                h[k]->d.aux |= EVFD_AUX_DUP;
                                h[k]->d.leader_fd = first->d.fd;
                        }
                i = j;
        }
}

bool evfd_note_dup(struct rt_fd *f) {
        if (!(f->d.aux & EVFD_AUX_SEEN))
                mark_dups();
        return f->d.aux & EVFD_AUX_DUP;
}

int evfd_restore_dup(struct rt_fd *f, char *err, size_t errsize) {
        long r = raw_syscall3(SYS_dup3, f->d.leader_fd, f->d.fd, (f->d.fdflags & FD_CLOEXEC) ? O_CLOEXEC : 0);
        if (r < 0)
                snprintf(err, errsize, "fd %d: cannot make it a duplicate of fd %d again: %s", f->d.fd, f->d.leader_fd,
                         strerror((int) -r));
        return r < 0 ? (int) r : 0;
}

int evfd_place(int newfd, struct rt_fd *f, const char *what, char *err, size_t errsize) {
        raw_syscall3(SYS_fcntl, newfd, F_SETFL, f->d.flags & SETFL_MASK);
        int r = rt_fd_install(newfd, f->d.fd, (int) f->d.fdflags);
        if (r < 0)
                snprintf(err, errsize, "fd %d: cannot place the %s: %s", f->d.fd, what, strerror(-r));
        return r;
}

int evfd_private(int fd) {
        if (fd < 0)
                return fd;
        fd = rt_fd_move_private(fd);
        rt_fd_set_private(fd, true);
        return fd;
}

void evfd_close_private(int fd) {
        if (fd >= 0) {
                rt_fd_set_private(fd, false);
                raw_syscall1(SYS_close, fd);
        }
}

int64_t evfd_ts_ns(const struct timespec *t) {
        return (int64_t) t->tv_sec * 1000000000LL + t->tv_nsec;
}

struct timespec evfd_ns_ts(int64_t ns) {
        return (struct timespec) { .tv_sec = ns / 1000000000LL, .tv_nsec = ns % 1000000000LL };
}

/* A descriptor created by a syscall (r), placed at f's number. */
static int place_new(long r, struct rt_fd *f, const char *what, char *err, size_t errsize) {
        if (r < 0) {
                snprintf(err, errsize, "fd %d: cannot create the %s: %s", f->d.fd, what, strerror((int) -r));
                return (int) r;
        }
        return evfd_place((int) r, f, what, err, errsize);
}

/* --- eventfd --------------------------------------------------------------- */

#define EVENTFD_SEMAPHORE 1u            /* img_fd.aux */

static bool eventfd_match(const struct rt_fd_probe *p) {
        return !strcmp(p->path, "anon_inode:[eventfd]");
}

static int eventfd_save(const struct rt_fd_probe *p, struct rt_fd *f, char *err, size_t errsize) {
        if (evfd_note_dup(f))
                return 0;
        const char *info = evfd_fdinfo(p->fd, err, errsize);
        if (!info)
                return -EIO;
        uint64_t count, sem = 0;
        if (evfd_info_u64(info, "eventfd-count:", 16, &count) < 0) {
                snprintf(err, errsize, "fd %d (eventfd): its counter is not in /proc/self/fdinfo", p->fd);
                return -EBADMSG;
        }
        if (evfd_info_u64(info, "eventfd-semaphore:", 10, &sem) < 0)
                rt_warn("fd %d (eventfd): this kernel does not say whether it is a semaphore (EFD_SEMAPHORE): "
                        "it will be restored as a plain counter", p->fd);
        f->d.offset = (int64_t) count;
        f->d.aux |= sem ? EVENTFD_SEMAPHORE : 0;
        return 0;
}

static int eventfd_restore(struct rt_fd *f, char *err, size_t errsize) {
        if (f->d.aux & EVFD_AUX_DUP)
                return evfd_restore_dup(f, err, errsize);
        long fd = raw_syscall2(SYS_eventfd2, 0, EFD_CLOEXEC | EFD_NONBLOCK |
                                                      ((f->d.aux & EVENTFD_SEMAPHORE) ? EFD_SEMAPHORE : 0));
        if (fd >= 0 && f->d.offset) {
                uint64_t count = (uint64_t) f->d.offset;
                long w = raw_syscall3(SYS_write, fd, (long) &count, sizeof count);
                if (w != (long) sizeof count) {
                        raw_syscall1(SYS_close, fd);
                        snprintf(err, errsize, "fd %d: cannot give the eventfd its count %llu: %s", f->d.fd,
                                 (unsigned long long) count, strerror(w < 0 ? (int) -w : EIO));
                        return w < 0 ? (int) w : -EIO;
                }
        }
        return place_new(fd, f, "eventfd", err, errsize);
}

const struct rt_fd_ops rt_fd_eventfd_ops = {
        .kind = IMG_FD_EVENTFD,
        .name = "eventfd",
        .shareable = true,
        .match = eventfd_match,
        .save = eventfd_save,
        .restore = eventfd_restore,
};

/* --- signalfd -------------------------------------------------------------- */

static uint64_t ckpt_signal_bit(void) {
        return rt.initialized && rt.cfg.sigckpt > 0 ? rt_sigckpt_bit() : 0;
}

/* The program's signalfd(): the same, without the checkpoint signal. */
_public_ int signalfd(int fd, const sigset_t *mask, int flags) {
        uint64_t m;
        memcpy(&m, mask, sizeof m);
        m &= ~ckpt_signal_bit();
        long r = raw_syscall4(SYS_signalfd4, fd, (long) &m, sizeof m, flags);
        if (r < 0) {
                errno = (int) -r;
                return -1;
        }
        return (int) r;
}

static bool signalfd_match(const struct rt_fd_probe *p) {
        return !strcmp(p->path, "anon_inode:[signalfd]");
}

static int signalfd_save(const struct rt_fd_probe *p, struct rt_fd *f, char *err, size_t errsize) {
        if (evfd_note_dup(f))
                return 0;
        const char *info = evfd_fdinfo(p->fd, err, errsize);
        if (!info)
                return -EIO;
        uint64_t mask;
        if (evfd_info_u64(info, "sigmask:", 16, &mask) < 0) {
                snprintf(err, errsize, "fd %d (signalfd): its mask is not in /proc/self/fdinfo", p->fd);
                return -EBADMSG;
        }
        f->d.size = mask;
        return 0;
}

static int signalfd_restore(struct rt_fd *f, char *err, size_t errsize) {
        if (f->d.aux & EVFD_AUX_DUP)
                return evfd_restore_dup(f, err, errsize);
        uint64_t mask = f->d.size & ~ckpt_signal_bit();
        long fd = raw_syscall4(SYS_signalfd4, -1, (long) &mask, sizeof mask, SFD_CLOEXEC);
        return place_new(fd, f, "signalfd", err, errsize);
}

const struct rt_fd_ops rt_fd_signalfd_ops = {
        .kind = IMG_FD_SIGNALFD,
        .name = "signalfd",
        .shareable = true,
        .match = signalfd_match,
        .save = signalfd_save,
        .restore = signalfd_restore,
};

/* --- timerfd --------------------------------------------------------------- */

struct timerfd_state {
        int32_t clock;
        uint32_t flags;                 /* TFD_TIMER_ABSTIME, TFD_TIMER_CANCEL_ON_SET */
        uint64_t ticks;                 /* expirations not yet read */
        int64_t value_ns;               /* time left, 0 = disarmed */
        int64_t interval_ns;
        int64_t deadline_ns;            /* CLOCK_REALTIME absolute timers: the expiry */
};

static bool timerfd_match(const struct rt_fd_probe *p) {
        return !strcmp(p->path, "anon_inode:[timerfd]");
}

static bool wall_clock(int32_t clock) {
        return clock == CLOCK_REALTIME || clock == CLOCK_REALTIME_ALARM;
}

/* The wall-clock deadline of an absolute CLOCK_REALTIME timer: the time
 * left plus the time now, read in the narrowest window of a few tries. */
static int64_t wall_deadline(int fd) {
        int64_t window = INT64_MAX, deadline = 0;
        for (int i = 0; i < 5 && window > 1000; i++) {
                struct timespec a, b;
                struct itimerspec t;
                clock_gettime(CLOCK_REALTIME, &a);
                long k = raw_syscall2(SYS_timerfd_gettime, fd, (long) &t);
                clock_gettime(CLOCK_REALTIME, &b);
                if (k == 0 && evfd_ts_ns(&b) - evfd_ts_ns(&a) < window) {
                        window = evfd_ts_ns(&b) - evfd_ts_ns(&a);
                        deadline = evfd_ts_ns(&a) + window / 2 + evfd_ts_ns(&t.it_value);
                }
        }
        return deadline;
}

static int timerfd_save(const struct rt_fd_probe *p, struct rt_fd *f, char *err, size_t errsize) {
        if (evfd_note_dup(f))
                return 0;
        struct timerfd_state *s = rt_alloc(RT_ARENA_STATE, sizeof *s);
        if (!s)
                return -ENOMEM;
        memset(s, 0, sizeof *s);
        /* gettime first: it moves the expirations of a periodic timer that
         * fired since the last read into "ticks", which fdinfo then shows. */
        struct itimerspec its;
        long r = raw_syscall2(SYS_timerfd_gettime, p->fd, (long) &its);
        const char *info = r < 0 ? NULL : evfd_fdinfo(p->fd, err, errsize);
        uint64_t clock, ticks, flags;
        if (!info || evfd_info_u64(info, "clockid:", 10, &clock) < 0 || evfd_info_u64(info, "ticks:", 10, &ticks) < 0 ||
            evfd_info_u64(info, "settime flags:", 8, &flags) < 0) {
                if (!info || !err[0])
                        snprintf(err, errsize, "fd %d (timerfd): cannot read its settings", p->fd);
                return -EBADMSG;
        }
        s->clock = (int32_t) clock;
        s->flags = (uint32_t) flags;
        s->ticks = ticks;
        s->value_ns = evfd_ts_ns(&its.it_value);
        s->interval_ns = evfd_ts_ns(&its.it_interval);
        /* An expiry due this very moment, whose timer interrupt has not run
         * yet, reads as 0 left, as if disarmed. A periodic timer is never
         * disarmed by itself: it is due now. */
        if (!s->value_ns && s->interval_ns)
                s->value_ns = 1;
        if ((s->flags & TFD_TIMER_ABSTIME) && wall_clock(s->clock) && s->value_ns)
                s->deadline_ns = wall_deadline(p->fd);
        f->d.offset = s->value_ns;
        f->d.size = s->ticks;
        f->d.rdev = (uint64_t) s->clock;
        f->d.aux |= s->flags & (TFD_TIMER_ABSTIME | TFD_TIMER_CANCEL_ON_SET);
        f->priv = s;
        return 0;
}

static int timerfd_restore(struct rt_fd *f, char *err, size_t errsize) {
        if (f->d.aux & EVFD_AUX_DUP)
                return evfd_restore_dup(f, err, errsize);
        const struct timerfd_state *s = f->priv;
        if (!s) {
                snprintf(err, errsize, "fd %d: the timerfd's saved settings are missing", f->d.fd);
                return -EBADMSG;
        }
        long fd = raw_syscall2(SYS_timerfd_create, s->clock, TFD_CLOEXEC | TFD_NONBLOCK);
        if (fd < 0) {
                snprintf(err, errsize, "fd %d: cannot create a timerfd on clock %d: %s", f->d.fd, s->clock,
                         strerror((int) -fd));
                return (int) fd;
        }
        struct itimerspec its = { .it_interval = evfd_ns_ts(s->interval_ns), .it_value = evfd_ns_ts(s->value_ns) };
        int flags = 0;
        if (s->value_ns && (s->flags & TFD_TIMER_ABSTIME)) {
                flags = (int) (s->flags & (TFD_TIMER_ABSTIME | TFD_TIMER_CANCEL_ON_SET));
                if (wall_clock(s->clock))
                        its.it_value = evfd_ns_ts(s->deadline_ns);
                else {
                        struct timespec now;
                        clock_gettime(s->clock, &now);
                        its.it_value = evfd_ns_ts(evfd_ts_ns(&now) + s->value_ns);
                }
        }
        long r = raw_syscall4(SYS_timerfd_settime, fd, flags, (long) &its, 0);
        if (r == 0 && s->ticks)
                r = raw_syscall3(SYS_ioctl, fd, TFD_IOC_SET_TICKS, (long) &s->ticks);
        if (r < 0) {
                raw_syscall1(SYS_close, fd);
                snprintf(err, errsize, "fd %d: cannot set the timerfd (%s): %s", f->d.fd,
                         s->ticks ? "its time and unread expirations" : "its time", strerror((int) -r));
                return (int) r;
        }
        return place_new(fd, f, "timerfd", err, errsize);
}

const struct rt_fd_ops rt_fd_timerfd_ops = {
        .kind = IMG_FD_TIMERFD,
        .name = "timerfd",
        .shareable = true,
        .match = timerfd_match,
        .save = timerfd_save,
        .restore = timerfd_restore,
};
