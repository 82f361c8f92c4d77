/* epoll instances and their interest lists.
 *
 * Checkpoint: the interest list is read from /proc/self/fdinfo: for each
 * watch, the descriptor number it was added under (tfd), its events
 * (EPOLLET, EPOLLONESHOT, EPOLLEXCLUSIVE, EPOLLWAKEUP included) and its
 * data. kcmp(KCMP_EPOLL_TFD) tells whether our descriptor tfd is still the
 * watched file; if it is not (closed and the number reused, the file kept
 * open under another number), another descriptor of ours that is the file
 * will do. An instance shared by several processes is saved by one of them
 * (its leader, fd.c), which need not hold every watched file: a parent
 * adds a pipe's read end and forks, the child closes it. Such a file is
 * looked for in the other processes of the computation (kcmp again, over
 * /proc): the leader notes which one has it under which number, and asks
 * it for it at restart (mailbox.c, RST_CONNECT). A watched file no process
 * of the computation holds any more fails the checkpoint, naming it.
 *
 * A watched signalfd is the exception: it reports the signals of the
 * process that added it (signalfd(2)), so that process must add it again.
 * Which one it was the kernel does not say; the one chosen is the oldest of
 * the processes of the computation that hold both the epoll instance and
 * the signalfd under the number it was added as (the one that made them,
 * most likely, before it forked the others). Every process sharing the
 * instance makes the same choice at CAPTURE; the chosen one, leader or
 * follower, adds the watch in RST_REFILL.
 *
 * Restart: the instance is created in RST_RESTORE (followers get it in
 * RST_CONNECT) and its interest list rebuilt in RST_REFILL, once every other
 * descriptor is in place, those received from other processes included.
 * Each watch is added under its old number, so the program's later
 * EPOLL_CTL_MOD/DEL find it; one whose file now sits under another number
 * (or came from another process) is added through a moment's dup onto the
 * old number.
 *
 * Readiness is recomputed by the kernel when a watch is added: a
 * level-triggered watch reports what is ready, an edge-triggered one may
 * report once more an edge the program had already seen (it must cope with
 * EAGAIN anyway). A one-shot watch that had fired and was not re-armed is
 * added disarmed; if its file is ready at once it is fired and consumed
 * before the program runs, but otherwise the kernel arms EPOLLERR and
 * EPOLLHUP on it again: such a watch may report an error or hang-up after a
 * restart that it would not have reported before. */
#include <dirent.h>
#include <fcntl.h>
#include <linux/kcmp.h>
#include <string.h>
#include <sys/epoll.h>

#include "fd-event.h"
#include "raw-syscall.h"
#include "util.h"

struct epoll_watch {
        int32_t tfd;                    /* the number it was added under */
        int32_t via;                    /* our descriptor of its file, or -1: */
        int32_t from_fd;                /*   process `from` has it as from_fd */
        int32_t tmp;                    /* restart: where from_fd came to us */
        uint32_t events;
        uint32_t by_other;              /* a signalfd another process adds again */
        uint64_t data;
        char from[PROTO_ID_MAX + 1];
};

struct epoll_state {
        uint32_t n;
        struct epoll_watch w[];
};

/* Bits that make a watch report something; a fired one-shot keeps none. */
#define EPOLL_POLL_BITS (EPOLLIN | EPOLLOUT | EPOLLPRI | EPOLLRDNORM | EPOLLRDBAND | EPOLLWRNORM | EPOLLWRBAND | \
                         EPOLLMSG | EPOLLRDHUP | EPOLLERR | EPOLLHUP)

static bool epoll_match(const struct rt_fd_probe *p) {
        return !strcmp(p->path, "anon_inode:[eventpoll]");
}

static bool is_target(pid_t pid, int fd, const struct kcmp_epoll_slot *slot) {
        return raw_syscall5(SYS_kcmp, pid, rt.pid, KCMP_EPOLL_TFD, fd, (long) slot) == 0;
}

/* Our descriptor (one the restart recreates) that is the watched file,
 * preferring the number it was added under: its entry, or NULL. */
static const struct rt_fd *find_target(const struct kcmp_epoll_slot *slot) {
        const struct rt_fd *other = NULL;
        for (uint32_t i = 0; i < rt_cap->n_fds; i++) {
                const struct rt_fd *f = &rt_cap->fds[i];
                if (f->d.fd == (int) slot->tfd && is_target(rt.pid, f->d.fd, slot))
                        return f;
        }
        for (uint32_t i = 0; i < rt_cap->n_fds && !other; i++)
                if (is_target(rt.pid, rt_cap->fds[i].d.fd, slot))
                        other = &rt_cap->fds[i];
        return other;
}

/* Call cb for each entry of dir named by a number, until it returns
 * non-zero, which is returned (0 at the end). */
static int each_number(const char *dir, int (*cb)(uint32_t n, void *arg), void *arg) {
        char buf[4096];
        int dfd = (int) raw_syscall4(SYS_openat, AT_FDCWD, (long) dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0), r = 0;
        for (long k; dfd >= 0 && r == 0 && (k = raw_syscall3(SYS_getdents64, dfd, (long) buf, sizeof buf)) > 0;)
                for (long o = 0; o < k && r == 0;) {
                        struct dirent64 *de = (struct dirent64 *) (buf + o);
                        uint32_t n;
                        o += de->d_reclen;
                        if (parse_u32(de->d_name, &n) == 0)
                                r = cb(n, arg);
                }
        if (dfd >= 0)
                raw_syscall1(SYS_close, dfd);
        return r;
}

struct probe_arg {
        pid_t pid;
        const struct kcmp_epoll_slot *slot;
        int fd;                         /* ours, for KCMP_FILE; the answer */
};

static int fd_is_target(uint32_t fd, void *arg) {
        struct probe_arg *a = arg;
        if (!is_target(a->pid, (int) fd, a->slot))
                return 0;
        a->fd = (int) fd;
        return 1;
}

static int fd_is_same(uint32_t fd, void *arg) {
        const struct probe_arg *a = arg;
        return raw_syscall5(SYS_kcmp, a->pid, rt.pid, KCMP_FILE, fd, a->fd) == 0;
}

static void proc_fd_dir(char *buf, size_t size, pid_t pid) {
        snprintf(buf, size, "/proc/%d/fd", (int) pid);
}

/* Does process pid hold the watched file? Under the number it was added
 * as, or (any) under any number: that descriptor, or -1. */
static int remote_holder(pid_t pid, const struct kcmp_epoll_slot *slot, bool any) {
        if (!any)
                return is_target(pid, (int) slot->tfd, slot) ? (int) slot->tfd : -1;
        char dir[64];
        struct probe_arg a = { pid, slot, -1 };
        proc_fd_dir(dir, sizeof dir, pid);
        each_number(dir, fd_is_target, &a);
        return a.fd;
}

/* Does process pid hold our descriptor fd's file under any number? */
static bool holds_file(pid_t pid, int fd) {
        char dir[64];
        struct probe_arg a = { pid, NULL, fd };
        proc_fd_dir(dir, sizeof dir, pid);
        return each_number(dir, fd_is_same, &a) > 0;
}

struct remote_arg {
        const struct kcmp_epoll_slot *slot;
        struct epoll_watch *w;
        bool any;
};

static int remote_one(uint32_t pid, void *arg) {
        struct remote_arg *a = arg;
        int fd = (pid_t) pid == rt.pid ? -1 : remote_holder((pid_t) pid, a->slot, a->any);
        if (fd < 0)
                return 0;
        int r = rt_fds_upid_of((pid_t) pid, a->w->from, sizeof a->w->from);
        if (r == -ECANCELED)
                return r;
        if (r < 0)
                return 0;       /* not of the computation */
        a->w->from_fd = fd;
        return 1;
}

/* Another process of the computation that holds the watched file: one
 * with it under the number it was added as first, then under any. */
static int find_remote(const struct kcmp_epoll_slot *slot, struct epoll_watch *w) {
        for (int pass = 0; pass < 2; pass++) {
                struct remote_arg a = { slot, w, pass == 1 };
                int r = each_number("/proc", remote_one, &a);
                if (r != 0)
                        return r < 0 ? r : 0;
        }
        return -ENOENT;
}

static bool is_signalfd_at(pid_t pid, int fd) {
        char path[64], link[32];
        snprintf(path, sizeof path, "/proc/%d/fd/%d", (int) pid, fd);
        long k = raw_syscall3(SYS_readlink, (long) path, (long) link, sizeof link - 1);
        link[k > 0 ? k : 0] = 0;
        return !strcmp(link, "anon_inode:[signalfd]");
}

struct adder_arg {
        const struct kcmp_epoll_slot *slot;
        pid_t best;
        uint64_t best_start;
};

static int adder_one(uint32_t u, void *arg) {
        struct adder_arg *a = arg;
        pid_t pid = (pid_t) u;
        char upid[PROTO_ID_MAX + 1];
        if (!is_target(pid, (int) a->slot->tfd, a->slot))
                return 0;
        if (!is_signalfd_at(pid, (int) a->slot->tfd)) {
                a->best = 0;
                return 1;       /* not a signalfd: no question */
        }
        if (pid != rt.pid) {
                if (!holds_file(pid, (int) a->slot->efd))
                        return 0;
                int r = rt_fds_upid_of(pid, upid, sizeof upid);
                if (r < 0)
                        return r == -ECANCELED ? r : 0;         /* not of the computation */
        }
        uint64_t start = (uint64_t) evfd_stat_field(pid, 22);       /* start time; -1: the last */
        if (!a->best || start < a->best_start || (start == a->best_start && pid < a->best)) {
                a->best = pid;
                a->best_start = start;
        }
        return 0;
}

/* The process that adds a watched signalfd again (see the top): its pid in
 * *adder, 0 when the file is no signalfd or no process qualifies. */
static int signalfd_adder(const struct kcmp_epoll_slot *slot, pid_t *adder) {
        struct adder_arg a = { slot, 0, 0 };
        int r = each_number("/proc", adder_one, &a);
        *adder = a.best;
        return r < 0 ? r : 0;
}

/* "tfd: %8d events: %8x data: %16llx  pos:%lli ino:%lx sdev:%x" */
static int parse_watch(const char *line, struct epoll_watch *w) {
        uint64_t tfd, events, data;
        if (evfd_info_u64(line, "tfd:", 10, &tfd) < 0 || tfd > INT32_MAX)
                return -EBADMSG;
        const char *e = strstr(line, " events:"), *d = strstr(line, " data:");
        if (!e || !d || evfd_info_u64(e + 1, "events:", 16, &events) < 0 || evfd_info_u64(d + 1, "data:", 16, &data) < 0)
                return -EBADMSG;
        memset(w, 0, sizeof *w);
        w->tfd = (int32_t) tfd;
        w->via = w->from_fd = w->tmp = -1;
        w->events = (uint32_t) events;
        w->data = data;
        return 0;
}

/* Every watch of the instance on fd, as fdinfo lists them. */
static struct epoll_state *read_watches(int fd, enum rt_arena arena, char *err, size_t errsize) {
        const char *info = evfd_fdinfo(fd, err, errsize);
        if (!info)
                return NULL;
        uint32_t n = evfd_info_count(info, "tfd:");
        struct epoll_state *s = rt_alloc(arena, sizeof *s + n * sizeof s->w[0]);
        if (!s) {
                snprintf(err, errsize, "fd %d (epoll): no memory for its %u watches", fd, n);
                return NULL;
        }
        char line[256];
        for (s->n = 0; s->n < n && evfd_info_next(&info, "tfd:", line, sizeof line); s->n++)
                if (parse_watch(line, &s->w[s->n]) < 0) {
                        snprintf(err, errsize, "fd %d (epoll): cannot understand its watch \"%s\"", fd, line);
                        return NULL;
                }
        return s;
}

/* Which of the kernel's watches under one number watch i is: several files
 * may be watched under one number (one closed, the number reused). */
static struct kcmp_epoll_slot slot_of(int efd, const struct epoll_state *s, uint32_t i) {
        struct kcmp_epoll_slot slot = { (uint32_t) efd, (uint32_t) s->w[i].tfd, 0 };
        for (uint32_t k = 0; k < i; k++)
                slot.toff += s->w[k].tfd == s->w[i].tfd;
        return slot;
}

static int epoll_save(const struct rt_fd_probe *p, struct rt_fd *f, char *err, size_t errsize) {
        if (evfd_note_dup(f))
                return 0;
        struct epoll_state *s = read_watches(p->fd, RT_ARENA_STATE, err, errsize);
        if (!s)
                return -EBADMSG;
        for (uint32_t i = 0; i < s->n; i++) {
                struct epoll_watch *w = &s->w[i];
                struct kcmp_epoll_slot slot = slot_of(p->fd, s, i);
                const struct rt_fd *t = find_target(&slot);
                pid_t adder = 0;
                int r = 0;
                /* A signalfd's (or one we do not hold, which may be one). */
                if (!t || t->d.kind == IMG_FD_SIGNALFD)
                        r = signalfd_adder(&slot, &adder);
                if (r < 0)
                        return r;
                if (adder && adder != rt.pid) {
                        rt_debug("fd %d (epoll): process %d adds its signalfd %d again", p->fd, (int) adder, w->tfd);
                        w->by_other = 1;
                        continue;
                }
                w->via = t ? t->d.fd : -1;
                r = w->via < 0 ? find_remote(&slot, w) : 0;
                if (r == -ECANCELED)
                        return r;
                if (r == 0 && w->via < 0)
                        rt_debug("fd %d (epoll): fd %d of process %s is the file watched as fd %d", p->fd, w->from_fd,
                                 w->from, w->tfd);
                if (r < 0) {
                        snprintf(err, errsize, "fd %d (epoll) watches a file added as fd %d that no process of the "
                                 "computation holds any more: its interest list cannot be rebuilt", p->fd, w->tfd);
                        return -EOPNOTSUPP;
                }
        }
        f->priv = s;
        f->d.size = s->n;
        return 0;
}

/* Ask the process that has it for a watched file (it comes in RST_CONNECT),
 * into a descriptor of ours kept for it meanwhile. */
static int request_remote(struct rt_fd *f, struct epoll_watch *w, char *err, size_t errsize) {
        int tmp = evfd_private((int) raw_syscall4(SYS_openat, AT_FDCWD, (long) "/dev/null", O_RDONLY | O_CLOEXEC, 0));
        int r = tmp < 0 ? tmp : rt_mailbox_request(w->from, RT_MB_DESC, (uint64_t) w->from_fd, tmp, FD_CLOEXEC);
        if (r < 0) {
                evfd_close_private(tmp);
                snprintf(err, errsize, "fd %d (epoll): cannot ask process %s for its fd %d, watched as fd %d: %s",
                         f->d.fd, w->from, w->from_fd, w->tfd, strerror(-r));
                return r;
        }
        w->tmp = tmp;
        return 0;
}

static int epoll_restore(struct rt_fd *f, char *err, size_t errsize) {
        if (f->d.aux & EVFD_AUX_DUP)
                return evfd_restore_dup(f, err, errsize);
        struct epoll_state *s = f->priv;
        for (uint32_t i = 0; s && i < s->n; i++) {
                int r = s->w[i].via < 0 && !s->w[i].by_other ? request_remote(f, &s->w[i], err, errsize) : 0;
                if (r < 0)
                        return r;
        }
        long fd = raw_syscall1(SYS_epoll_create1, EPOLL_CLOEXEC);
        if (fd < 0) {
                snprintf(err, errsize, "fd %d: cannot create an epoll instance: %s", f->d.fd, strerror((int) -fd));
                return (int) fd;
        }
        return evfd_place((int) fd, f, "epoll instance", err, errsize);
}

/* Add the file at our descriptor via under its old number tfd: dup it
 * there for the EPOLL_CTL_ADD, then put back whatever was at that number. */
static long add_via(int epfd, int via, int tfd, struct epoll_event *ev) {
        int saved = (int) raw_syscall3(SYS_fcntl, tfd, F_DUPFD_CLOEXEC, RT_FD_BASE);
        int saved_fdflags = saved >= 0 ? (int) raw_syscall2(SYS_fcntl, tfd, F_GETFD) : 0;
        long r = raw_syscall3(SYS_dup3, via, tfd, O_CLOEXEC);
        if (r >= 0)
                r = raw_syscall4(SYS_epoll_ctl, epfd == tfd ? saved : epfd, EPOLL_CTL_ADD, tfd, (long) ev);
        if (saved >= 0) {
                raw_syscall3(SYS_dup3, saved, tfd, (saved_fdflags & FD_CLOEXEC) ? O_CLOEXEC : 0);
                raw_syscall1(SYS_close, saved);
        } else
                raw_syscall1(SYS_close, tfd);
        return r;
}

static int add_watch(struct rt_fd *f, struct epoll_watch *w, char *err, size_t errsize) {
        struct epoll_event ev = { .events = w->events, .data.u64 = w->data };
        int via = w->via >= 0 ? w->via : w->tmp;        /* or received from process w->from */
        long r = via == w->tfd ? raw_syscall4(SYS_epoll_ctl, f->d.fd, EPOLL_CTL_ADD, w->tfd, (long) &ev)
                               : add_via(f->d.fd, via, w->tfd, &ev);
        if (w->via < 0) {
                evfd_close_private(w->tmp);
                w->tmp = -1;
        }
        if (r < 0)
                snprintf(err, errsize, "fd %d (epoll): cannot watch fd %d again (events %#x): %s", f->d.fd, w->tfd,
                         w->events, strerror((int) -r));
        return (int) r;
}

static bool disarmed(const struct epoll_watch *w) {
        return (w->events & EPOLLONESHOT) && !(w->events & EPOLL_POLL_BITS) && !w->by_other;
}

static int epoll_rst_refill(struct rt_fd *f, char *err, size_t errsize) {
        struct epoll_state *s = f->priv;
        if ((f->d.aux & EVFD_AUX_DUP) || !s)
                return 0;
        int r;
        /* Pty slaves are opened anew in this phase: the files to watch must
         * be the final ones. */
        if ((r = evfd_pty_settle(err, errsize)) < 0)
                return r;
        /* Fired one-shot watches first, alone in the instance: any that is
         * ready at once fires now, and is disarmed as it was. */
        uint32_t n_disarmed = 0;
        for (uint32_t i = 0; i < s->n; i++)
                if (disarmed(&s->w[i])) {
                        if ((r = add_watch(f, &s->w[i], err, errsize)) < 0)
                                return r;
                        n_disarmed++;
                }
        struct epoll_event evs[64];
        while (n_disarmed && raw_syscall4(SYS_epoll_wait, f->d.fd, (long) evs, ARRAY_SIZE(evs), 0) > 0)
                ;
        for (uint32_t i = 0; i < s->n; i++)
                if (!disarmed(&s->w[i]) && !s->w[i].by_other && (r = add_watch(f, &s->w[i], err, errsize)) < 0)
                        return r;
        return 0;
}

/* A process sharing the instance: the signalfd watches it adds again. */
static int epoll_follower_save(const struct rt_fd_probe *p, struct rt_fd *f, char *err, size_t errsize) {
        const struct epoll_state *all = read_watches(p->fd, RT_ARENA_SCRATCH, err, errsize);
        if (!all)
                return -EBADMSG;
        struct epoll_state *s = rt_alloc(RT_ARENA_STATE, sizeof *s + all->n * sizeof s->w[0]);
        if (!s)
                return -ENOMEM;
        s->n = 0;
        for (uint32_t i = 0; i < all->n; i++) {
                struct kcmp_epoll_slot slot = slot_of(p->fd, all, i);
                /* Only a signalfd we hold under its number may be ours to add. */
                if (!is_target(rt.pid, all->w[i].tfd, &slot) || !is_signalfd_at(rt.pid, all->w[i].tfd))
                        continue;
                pid_t adder;
                int r = signalfd_adder(&slot, &adder);
                if (r < 0)
                        return r;
                if (adder == rt.pid)
                        s->w[s->n++] = all->w[i];
        }
        f->priv = s;
        return 0;
}

static int epoll_follower_rst_refill(struct rt_fd *f, char *err, size_t errsize) {
        struct epoll_state *s = f->priv;
        for (uint32_t i = 0; s && i < s->n; i++) {
                struct epoll_event ev = { .events = s->w[i].events, .data.u64 = s->w[i].data };
                long r = raw_syscall4(SYS_epoll_ctl, f->d.fd, EPOLL_CTL_ADD, s->w[i].tfd, (long) &ev);
                if (r < 0 && r != -EEXIST) {    /* EEXIST: another fd of ours for the instance did it */
                        snprintf(err, errsize, "fd %d (epoll): cannot watch the signalfd %d again: %s", f->d.fd,
                                 s->w[i].tfd, strerror((int) -r));
                        return (int) r;
                }
        }
        return 0;
}

const struct rt_fd_ops rt_fd_epoll_ops = {
        .kind = IMG_FD_EPOLL,
        .name = "epoll",
        .shareable = true,
        .match = epoll_match,
        .save = epoll_save,
        .restore = epoll_restore,
        .rst_refill = epoll_rst_refill,
        .follower_save = epoll_follower_save,
        .follower_rst_refill = epoll_follower_rst_refill,
};
