/* Passing descriptors between the restored processes of a computation.
 *
 * A description shared by several processes (a pipe end inherited across
 * fork, a socket passed over SCM_RIGHTS) is recreated once, by its leader;
 * every other process holding it asks the leader for it during RST_CONNECT
 * and gets it over a Unix socket (SCM_RIGHTS). Each restored process binds
 * one datagram socket with an abstract name derived from its user,
 * computation and unique process id; requests and replies are datagrams.
 *
 * Only processes of the same user are answered or listened to: the kernel
 * vouches for the sender's uid (SCM_CREDENTIALS), so another user on the
 * machine can neither take our descriptors nor slip us one.
 *
 * A request may name a descriptor the leader has not got yet (a pipe's
 * write end whose leader is itself waiting for it from the pipe's creator):
 * it is kept and answered once the descriptor is in place. Every process
 * serves until the coordinator's GO(RST_CONNECT), which comes when every
 * process has all it asked for. */
#include <fcntl.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "fd.h"
#include "raw-syscall.h"
#include "util.h"

#define MB_MAGIC 0x626d7464u    /* "dtmb" */

enum { MB_REQUEST = 1, MB_REPLY };

struct mb_msg {
        uint32_t magic;
        uint32_t op;
        uint32_t type;                  /* enum rt_mailbox_type */
        int32_t status;                 /* reply: 0 (a descriptor is attached) or -errno */
        uint64_t what;
        uint64_t id;                    /* the requester's number for it */
};

struct mb_request {                     /* ours, to another process */
        struct sockaddr_un to;
        socklen_t to_len;
        char upid[PROTO_ID_MAX + 1];
        uint32_t type;
        uint64_t what;
        int want, fdflags;
        bool sent, done;
};

struct mb_deferred {                    /* another's, waiting for a descriptor of ours */
        struct sockaddr_un from;
        socklen_t from_len;
        struct mb_msg req;
        bool active;
};

struct mb_offer {
        uint32_t type;
        uint64_t key;
        int fd;
};

static int mb_fd = -1;
static struct mb_request *reqs;
static uint32_t n_reqs, cap_reqs;
static struct mb_deferred *deferred;
static uint32_t n_deferred, cap_deferred;
static struct mb_offer *offers;
static uint32_t n_offers, cap_offers;

static uint64_t fnv1a(uint64_t h, const char *s) {
        for (; *s; s++)
                h = (h ^ (uint8_t) *s) * 0x100000001b3ULL;
        return (h ^ 0xff) * 0x100000001b3ULL;
}

/* "\0dmtcp-mb-<uid>-<hash of computation and upid>" */
static socklen_t mb_addr(const char *upid, struct sockaddr_un *a) {
        memset(a, 0, sizeof *a);
        a->sun_family = AF_UNIX;
        uint64_t h = fnv1a(fnv1a(0xcbf29ce484222325ULL, rt.cfg.comp_id), upid);
        int n = snprintf(a->sun_path + 1, sizeof a->sun_path - 1, "dmtcp-mb-%u-%016llx", (unsigned) getuid(),
                         (unsigned long long) h);
        return (socklen_t) (offsetof(struct sockaddr_un, sun_path) + 1 + (size_t) n);
}

/* Grow one of our arrays (scratch arena: a restart's memory, thrown away). */
static void *grow(void *old, uint32_t n, uint32_t *cap, size_t elem) {
        if (n < *cap)
                return old;
        uint32_t nc = *cap ? *cap * 2 : 64;
        void *p = rt_alloc(RT_ARENA_SCRATCH, nc * elem);
        if (!p)
                return NULL;
        if (old)
                memcpy(p, old, n * elem);
        *cap = nc;
        return p;
}

int rt_mailbox_open(void) {
        rt_mailbox_close();
        int fd = (int) raw_syscall3(SYS_socket, AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0)
                return fd;
        int one = 1;
        raw_syscall5(SYS_setsockopt, fd, SOL_SOCKET, SO_PASSCRED, (long) &one, sizeof one);
        struct sockaddr_un a;
        socklen_t len = mb_addr(rt.cfg.upid, &a);
        long r = raw_syscall3(SYS_bind, fd, (long) &a, len);
        if (r < 0) {
                raw_syscall1(SYS_close, fd);
                /* EADDRINUSE: this very process is being restarted elsewhere
                 * on this machine right now. */
                return (int) r;
        }
        mb_fd = rt_fd_move_private(fd);
        rt_fd_set_private(mb_fd, true);
        return 0;
}

void rt_mailbox_close(void) {
        if (mb_fd >= 0) {
                rt_fd_set_private(mb_fd, false);
                raw_syscall1(SYS_close, mb_fd);
                mb_fd = -1;
        }
        for (uint32_t i = 0; i < n_offers; i++) {
                rt_fd_set_private(offers[i].fd, false);
                raw_syscall1(SYS_close, offers[i].fd);
        }
        n_offers = n_reqs = n_deferred = 0;
        cap_offers = cap_reqs = cap_deferred = 0;
        offers = NULL;
        reqs = NULL;
        deferred = NULL;
}

int rt_mailbox_offer(uint32_t type, uint64_t key, int fd) {
        struct mb_offer *o = grow(offers, n_offers, &cap_offers, sizeof *o);
        if (!o)
                return -ENOMEM;
        offers = o;
        fd = rt_fd_move_private(fd);
        rt_fd_set_private(fd, true);
        offers[n_offers++] = (struct mb_offer) { type, key, fd };
        return 0;
}

/* Our descriptor for a request: the number of a fresh duplicate the caller
 * closes, -EAGAIN (not yet in place: keep the request) or -errno. */
static int lookup(uint32_t type, uint64_t what) {
        if (type == RT_MB_DESC) {
                for (uint32_t i = 0; i < rt_cap->n_fds; i++) {
                        const struct rt_fd *f = &rt_cap->fds[i];
                        /* A follower's too, once it came: an epoll's watched
                         * file may be held by another process (fd-epoll.c). */
                        if ((uint64_t) (int64_t) f->d.fd != what)
                                continue;
                        if (!f->restored)
                                return -EAGAIN;
                        return (int) raw_syscall3(SYS_fcntl, f->d.fd, F_DUPFD_CLOEXEC, RT_FD_BASE);
                }
                return -ENOENT;
        }
        for (uint32_t i = 0; i < n_offers; i++)
                if (offers[i].type == type && offers[i].key == what)
                        return (int) raw_syscall3(SYS_fcntl, offers[i].fd, F_DUPFD_CLOEXEC, RT_FD_BASE);
        return -ENOENT;
}

static int send_msg(const struct sockaddr_un *to, socklen_t to_len, const struct mb_msg *m, int fd) {
        struct iovec iov = { (void *) m, sizeof *m };
        union {
                struct cmsghdr h;
                char buf[CMSG_SPACE(sizeof(int))];
        } u;
        struct msghdr mh = { .msg_name = (void *) to, .msg_namelen = to_len, .msg_iov = &iov, .msg_iovlen = 1 };
        if (fd >= 0) {
                memset(&u, 0, sizeof u);
                mh.msg_control = u.buf;
                mh.msg_controllen = sizeof u.buf;
                struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
                c->cmsg_level = SOL_SOCKET;
                c->cmsg_type = SCM_RIGHTS;
                c->cmsg_len = CMSG_LEN(sizeof(int));
                memcpy(CMSG_DATA(c), &fd, sizeof fd);
        }
        long r = raw_syscall3(SYS_sendmsg, mb_fd, (long) &mh, MSG_DONTWAIT | MSG_NOSIGNAL);
        return r < 0 ? (int) r : 0;
}

/* Answer a request now if we can. Returns 1 when answered (or the asker is
 * gone), 0 to keep it for later. */
static int answer(const struct sockaddr_un *from, socklen_t from_len, const struct mb_msg *req) {
        int fd = lookup(req->type, req->what);
        if (fd == -EAGAIN)
                return 0;
        struct mb_msg rep = { MB_MAGIC, MB_REPLY, req->type, fd < 0 ? fd : 0, req->what, req->id };
        int r = send_msg(from, from_len, &rep, fd);
        if (fd >= 0)
                raw_syscall1(SYS_close, fd);
        return r == -EAGAIN ? 0 : 1;   /* its queue is full: retry later */
}

static void mark_restored(int fd) {
        for (uint32_t i = 0; i < rt_cap->n_fds; i++)
                if (rt_cap->fds[i].d.fd == fd)
                        rt_cap->fds[i].restored = true;
}

int rt_mailbox_request(const char *upid, uint32_t type, uint64_t what, int want, int fdflags) {
        if (!strcmp(upid, rt.cfg.upid)) {
                /* Our own: no message needed. */
                int fd = lookup(type, what);
                if (fd < 0)
                        return fd == -EAGAIN ? -EDEADLK : fd;
                int r = rt_fd_install(fd, want, fdflags);
                if (r == 0)
                        mark_restored(want);
                return r;
        }
        struct mb_request *q = grow(reqs, n_reqs, &cap_reqs, sizeof *q);
        if (!q)
                return -ENOMEM;
        reqs = q;
        q = &reqs[n_reqs++];
        memset(q, 0, sizeof *q);
        q->to_len = mb_addr(upid, &q->to);
        strscpy(q->upid, upid, sizeof q->upid);
        q->type = type;
        q->what = what;
        q->want = want;
        q->fdflags = fdflags;
        return 0;
}


/* The ancillary data of a datagram: is the sender of our user, and the
 * descriptor it passed (any others closed). */
static int take_cmsgs(struct msghdr *mh, bool *same_user) {
        int passed = -1;
        *same_user = false;
        for (struct cmsghdr *c = CMSG_FIRSTHDR(mh); c; c = CMSG_NXTHDR(mh, c)) {
                if (c->cmsg_level != SOL_SOCKET)
                        continue;
                if (c->cmsg_type == SCM_CREDENTIALS && c->cmsg_len >= CMSG_LEN(sizeof(struct ucred))) {
                        struct ucred cr;
                        memcpy(&cr, CMSG_DATA(c), sizeof cr);
                        *same_user = cr.uid == getuid();
                } else if (c->cmsg_type == SCM_RIGHTS) {
                        size_t n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
                        for (size_t i = 0; i < n; i++) {
                                int x;
                                memcpy(&x, CMSG_DATA(c) + i * sizeof(int), sizeof x);
                                if (passed < 0)
                                        passed = x;
                                else
                                        raw_syscall1(SYS_close, x);
                        }
                }
        }
        return passed;
}

static int handle_request(const struct sockaddr_un *from, socklen_t from_len, const struct mb_msg *m) {
        if (answer(from, from_len, m))
                return 0;
        struct mb_deferred *d = grow(deferred, n_deferred, &cap_deferred, sizeof *d);
        if (!d)
                return -ENOMEM;
        deferred = d;
        deferred[n_deferred++] = (struct mb_deferred) { *from, from_len, *m, true };
        return 0;
}

static int handle_reply(const struct mb_msg *m, int passed, char *err, size_t errsize) {
        if (m->id >= n_reqs || reqs[m->id].done || reqs[m->id].what != m->what) {
                if (passed >= 0)
                        raw_syscall1(SYS_close, passed);
                return 0;
        }
        struct mb_request *q = &reqs[m->id];
        if (m->status < 0 || passed < 0) {
                if (passed >= 0)
                        raw_syscall1(SYS_close, passed);
                snprintf(err, errsize, "fd %d: process %s could not hand it over: %s", q->want, q->upid,
                         strerror(m->status < 0 ? -m->status : EPROTO));
                return m->status < 0 ? m->status : -EPROTO;
        }
        int r = rt_fd_install(passed, q->want, q->fdflags);
        if (r < 0) {
                snprintf(err, errsize, "fd %d: cannot place it: %s", q->want, strerror(-r));
                return r;
        }
        q->done = true;
        mark_restored(q->want);
        return 0;
}

/* One datagram: a request for us, or a reply to one of ours. Returns 1 when
 * one was handled, 0 when none is waiting, or -errno. */
static int receive_one(char *err, size_t errsize) {
        struct mb_msg m;
        struct sockaddr_un from;
        struct iovec iov = { &m, sizeof m };
        union {
                struct cmsghdr h;
                char buf[CMSG_SPACE(sizeof(struct ucred)) + CMSG_SPACE(sizeof(int) * 4)];
        } u;
        struct msghdr mh = { .msg_name = &from, .msg_namelen = sizeof from, .msg_iov = &iov, .msg_iovlen = 1,
                             .msg_control = u.buf, .msg_controllen = sizeof u.buf };
        long k = raw_syscall3(SYS_recvmsg, mb_fd, (long) &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
        if (k < 0)
                return k == -EAGAIN || k == -EINTR ? 0 : (int) k;
        bool same_user;
        int passed = take_cmsgs(&mh, &same_user);
        if (!same_user || k != (long) sizeof m || m.magic != MB_MAGIC || (mh.msg_flags & MSG_CTRUNC) ||
            (m.op != MB_REQUEST && m.op != MB_REPLY)) {
                if (passed >= 0)
                        raw_syscall1(SYS_close, passed);
                if (!same_user)
                        rt_warn("descriptor mailbox: ignored a message from another user");
                return 1;
        }
        int r;
        if (m.op == MB_REQUEST) {
                if (passed >= 0)
                        raw_syscall1(SYS_close, passed);
                r = handle_request(&from, mh.msg_namelen, &m);
        } else
                r = handle_reply(&m, passed, err, errsize);
        return r < 0 ? r : 1;
}

static int send_pending(char *err, size_t errsize) {
        for (uint32_t i = 0; i < n_reqs; i++) {
                struct mb_request *q = &reqs[i];
                if (q->sent)
                        continue;
                struct mb_msg m = { MB_MAGIC, MB_REQUEST, q->type, 0, q->what, i };
                int r = send_msg(&q->to, q->to_len, &m, -1);
                if (r == -EAGAIN)
                        continue;
                if (r < 0) {
                        snprintf(err, errsize, "fd %d: cannot reach process %s, which holds it%s (%s)", q->want,
                                 q->upid, r == -ECONNREFUSED ? ": it is not being restarted on this machine" : "",
                                 strerror(-r));
                        return r;
                }
                q->sent = true;
        }
        for (uint32_t i = 0; i < n_deferred; i++)
                if (deferred[i].active && answer(&deferred[i].from, deferred[i].from_len, &deferred[i].req))
                        deferred[i].active = false;
        return 0;
}

static bool all_done(void) {
        for (uint32_t i = 0; i < n_reqs; i++)
                if (!reqs[i].done)
                        return false;
        return true;
}

static bool work_left(void) {
        for (uint32_t i = 0; i < n_reqs; i++)
                if (!reqs[i].sent)
                        return true;
        for (uint32_t i = 0; i < n_deferred; i++)
                if (deferred[i].active)
                        return true;
        return false;
}

int rt_mailbox_run(char *err, size_t errsize) {
        bool reported = false;
        for (;;) {
                int r = send_pending(err, errsize);
                if (r < 0)
                        return r;
                if (!reported && all_done()) {
                        rt_rst_done(PROTO_PH_RST_CONNECT);
                        reported = true;
                }
                struct pollfd p[2] = { { mb_fd, POLLIN, 0 }, { rt.coord_fd, POLLIN, 0 } };
                int n = poll(p, 2, work_left() ? 10 : 1000);
                if (n < 0 && errno != EINTR)
                        return -errno;
                if (p[0].revents & POLLIN)
                        while ((r = receive_one(err, errsize)) > 0)
                                ;
                if (r < 0)
                        return r;
                if (p[1].revents) {
                        struct proto_msg m;
                        r = rt_recv(&m, 1000);
                        if (r < 0) {
                                snprintf(err, errsize, "lost the coordinator during the restart (%s)", strerror(-r));
                                return r;
                        }
                        if (m.type == PROTO_PHASE_GO && m.u.phase_go.phase == PROTO_PH_RST_CONNECT) {
                                if (!all_done()) {
                                        snprintf(err, errsize, "the coordinator went on before our descriptors came");
                                        return -EPROTO;
                                }
                                return 0;
                        }
                        if (m.type == PROTO_KILL) {
                                snprintf(err, errsize, "the coordinator gave up on this restart "
                                         "(a process of the computation failed or did not join)");
                                return -ECANCELED;
                        }
                }
        }
}
