/* Unix sockets: stream, seqpacket and datagram; pairs, bound (path or
 * abstract) and unnamed, listening, accepted and connected.
 *
 * Identity: the socket's inode, and its peer's from sock_diag
 * (NETLINK_SOCK_DIAG, UNIX_DIAG_PEER). At DRAIN each leader publishes
 * "sku/<host>/<inode>" = who restores it and its peer's inode; a listening
 * socket also publishes the connections waiting in its backlog (their
 * server-side inodes, UNIX_DIAG_ICONS), so a client connected but not yet
 * accepted is known. At CAPTURE each looks its peer up:
 *   - a connection inside the computation is recreated once, with
 *     socketpair(), by the end with the lower inode, which hands the other
 *     end over (mailbox); the drained queues are exchanged after that
 *     (fd-sock.c). Names of connected stream sockets are not kept (an
 *     accepted socket shares its listener's name and cannot be bound to it).
 *   - a client not yet accepted connects again to the listener's name;
 *   - a datagram socket connected to a named socket connects to the name
 *     again, in or outside the computation (syslog's /dev/log);
 *   - a connection to a process outside the computation comes back closed.
 * Datagrams queued on a named socket are sent to it again from an unnamed
 * socket after the restart: their sender's address is not kept. */
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <linux/unix_diag.h>
#include <netinet/tcp.h>      /* TCP_LISTEN, TCP_ESTABLISHED: what sock_diag says of Unix sockets too */
#include <string.h>
#include <unistd.h>

#include "fd-sock.h"
#include "raw-syscall.h"
#include "util.h"

enum { SKU_EMBRYO = 1 };

/* sk_shutdown bits (include/net/sock.h), as UNIX_DIAG_SHUTDOWN reports them. */
#define RCV_SHUTDOWN 1
#define SEND_SHUTDOWN 2

/* What a leader publishes about its socket, or a listener about a waiting
 * connection. */
struct sku_record {
        char upid[PROTO_ID_MAX + 1];
        uint64_t ino, peer_ino;
        uint32_t flags;
        uint32_t rqueue;                /* embryo: bytes the client sent it */
};

struct unix_info {
        int state;
        uint64_t peer;
        uint32_t rqueue, wqueue;
        uint8_t shutdown;
        struct sk_addr name;
        const uint32_t *icons;
        uint32_t n_icons;
};

static void sku_key(char *key, size_t size, uint64_t ino) {
        snprintf(key, size, "sku/%s/%llu", host_name(), (unsigned long long) ino);
}

/* sock_diag about one Unix socket by inode. icons point into scratch. */
static int unix_diag(uint64_t ino, struct unix_info *out) {
        int nl = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
        if (nl < 0)
                return -errno;
        struct {
                struct nlmsghdr nh;
                struct unix_diag_req r;
        } req;
        memset(&req, 0, sizeof req);
        req.nh.nlmsg_len = sizeof req;
        req.nh.nlmsg_type = SOCK_DIAG_BY_FAMILY;
        req.nh.nlmsg_flags = NLM_F_REQUEST;
        req.nh.nlmsg_seq = 1;
        req.r.sdiag_family = AF_UNIX;
        req.r.udiag_states = ~0u;
        req.r.udiag_ino = (uint32_t) ino;
        req.r.udiag_show = UDIAG_SHOW_NAME | UDIAG_SHOW_PEER | UDIAG_SHOW_ICONS | UDIAG_SHOW_RQLEN;
        req.r.udiag_cookie[0] = req.r.udiag_cookie[1] = ~0u;
        struct sockaddr_nl kernel = { .nl_family = AF_NETLINK };
        int r = 0;
        if (sendto(nl, &req, sizeof req, 0, (struct sockaddr *) &kernel, sizeof kernel) < 0) {
                r = -errno;
                goto out;
        }
        size_t bufsize = 256 * 1024;
        uint8_t *buf = rt_alloc(RT_ARENA_SCRATCH, bufsize);
        if (!buf) {
                r = -ENOMEM;
                goto out;
        }
        ssize_t k;
        do
                k = recv(nl, buf, bufsize, 0);
        while (k < 0 && errno == EINTR);
        if (k < 0) {
                r = -errno;
                goto out;
        }
        struct nlmsghdr *nh = (struct nlmsghdr *) buf;
        if (!NLMSG_OK(nh, (size_t) k)) {
                r = -EBADMSG;
                goto out;
        }
        if (nh->nlmsg_type == NLMSG_ERROR) {
                const struct nlmsgerr *e = NLMSG_DATA(nh);
                r = e->error ? e->error : -ENOENT;
                goto out;
        }
        const struct unix_diag_msg *m = NLMSG_DATA(nh);
        memset(out, 0, sizeof *out);
        out->state = m->udiag_state;
        size_t alen = nh->nlmsg_len - NLMSG_LENGTH(sizeof *m);
        const uint8_t *a = (const uint8_t *) m + NLMSG_ALIGN(sizeof *m);
        while (alen >= sizeof(struct nlattr)) {
                const struct nlattr *at = (const struct nlattr *) a;
                if (at->nla_len < sizeof *at || at->nla_len > alen)
                        break;
                const uint8_t *pl = a + NLA_HDRLEN;
                size_t plen = at->nla_len - NLA_HDRLEN;
                switch (at->nla_type) {
                case UNIX_DIAG_NAME:
                        if (plen > 0 && plen <= sizeof out->name.u.un.sun_path) {
                                out->name.u.un.sun_family = AF_UNIX;
                                memcpy(out->name.u.un.sun_path, pl, plen);
                                out->name.len = (uint32_t) (offsetof(struct sockaddr_un, sun_path) + plen);
                        }
                        break;
                case UNIX_DIAG_PEER:
                        if (plen >= 4) {
                                uint32_t p;
                                memcpy(&p, pl, 4);
                                out->peer = p;
                        }
                        break;
                case UNIX_DIAG_ICONS:
                        out->icons = (const uint32_t *) pl;
                        out->n_icons = (uint32_t) (plen / 4);
                        break;
                case UNIX_DIAG_RQLEN:
                        if (plen >= sizeof(struct unix_diag_rqlen)) {
                                struct unix_diag_rqlen q;
                                memcpy(&q, pl, sizeof q);
                                out->rqueue = q.udiag_rqueue;
                                out->wqueue = q.udiag_wqueue;
                        }
                        break;
                case UNIX_DIAG_SHUTDOWN:
                        if (plen >= 1)
                                out->shutdown = pl[0];
                        break;
                }
                size_t step = NLA_ALIGN(at->nla_len);
                if (step > alen)
                        break;
                a += step;
                alen -= step;
        }
out:
        raw_syscall1(SYS_close, nl);
        return r;
}

int sk_unix_announce(struct rt_fd *f, char *err, size_t errsize) {
        return 0;
}

static int put_record(uint64_t ino, uint64_t peer, uint32_t flags, uint32_t rqueue) {
        struct sku_record rec;
        memset(&rec, 0, sizeof rec);
        strscpy(rec.upid, rt.cfg.upid, sizeof rec.upid);
        rec.ino = ino;
        rec.peer_ino = peer;
        rec.flags = flags;
        rec.rqueue = rqueue;
        char key[PROTO_KEY_MAX + 1];
        sku_key(key, sizeof key, ino);
        return rt_kv_put(key, &rec, sizeof rec);
}

int sk_unix_publish(struct rt_fd *f, char *err, size_t errsize) {
        struct sk_state *s = sk_of(f);
        struct unix_info u;
        int r = unix_diag(s->ino, &u);
        if (r < 0) {
                snprintf(err, errsize, "fd %d (Unix socket %llu): sock_diag cannot tell its state: %s", f->d.fd,
                         (unsigned long long) s->ino, strerror(-r));
                return r;
        }
        s->local = u.name;
        s->peer_ino = u.peer;
        if (u.shutdown & SEND_SHUTDOWN)
                s->flags |= SKF_SHUT_WR;
        if (u.state == TCP_LISTEN) {
                s->role = SK_LISTENING;
                s->backlog = (int32_t) u.wqueue;
                /* Connections waiting to be accepted: the clients find them here. */
                for (uint32_t i = 0; i < u.n_icons; i++) {
                        struct unix_info e;
                        if (unix_diag(u.icons[i], &e) < 0)
                                continue;
                        if ((r = put_record(u.icons[i], e.peer, SKU_EMBRYO, e.rqueue)) < 0)
                                break;
                }
        } else if (u.peer)
                s->role = SK_CONNECTED;
        else if (u.state == TCP_ESTABLISHED && s->type != SOCK_DGRAM)
                s->role = SK_CLOSED;            /* its peer is gone */
        else
                s->role = SK_UNCONNECTED;
        if (r >= 0)
                r = put_record(s->ino, s->peer_ino, 0, 0);
        if (r < 0)
                snprintf(err, errsize, "fd %d (Unix socket): cannot publish it: %s", f->d.fd, strerror(-r));
        return r;
}

int sk_unix_drain(struct rt_fd *f, char *err, size_t errsize) {
        struct sk_state *s = sk_of(f);
        if (s->role == SK_LISTENING)
                return 0;
        int r = sk_peek_queue(f, s->flags & SKF_RECORDS, err, errsize);
        if (r == -EOPNOTSUPP)
                snprintf(err, errsize, "fd %d: cannot read its receive queue without taking it (no SO_PEEK_OFF)",
                         f->d.fd);
        return r;
}

int sk_unix_save(struct rt_fd *f, char *err, size_t errsize) {
        struct sk_state *s = sk_of(f);
        int fd = f->d.fd;
        socklen_t len = sizeof s->peer.u;
        if (getpeername(fd, &s->peer.u.sa, &len) == 0 && len > offsetof(struct sockaddr_un, sun_path))
                s->peer.len = len;
        else
                s->peer.len = 0;
        bool named = s->local.len > offsetof(struct sockaddr_un, sun_path);
        if (named && (s->role != SK_CONNECTED || s->type == SOCK_DGRAM))
                s->flags |= SKF_NAMED;
        if (s->peer.len)
                s->flags |= SKF_PEER_NAMED;
        if (s->role == SK_CLOSED)
                return 0;               /* its peer is gone */
        if (s->role != SK_CONNECTED)
                return 0;
        struct sku_record rec;
        size_t rlen;
        char key[PROTO_KEY_MAX + 1];
        sku_key(key, sizeof key, s->peer_ino);
        int r = rt_kv_get(key, &rec, sizeof rec, &rlen);
        if (r < 0 && r != -ENOENT) {
                if (r != -ECANCELED)
                        snprintf(err, errsize, "fd %d: cannot look up its peer: %s", fd, strerror(-r));
                return r;
        }
        bool found = r == 0 && rlen == sizeof rec;
        if (found)
                rec.upid[sizeof rec.upid - 1] = 0;
        if (s->type == SOCK_DGRAM) {
                /* A default peer: by name if it has one (in the computation
                 * or not); an unnamed one only as a pair. */
                if (s->flags & SKF_PEER_NAMED)
                        return 0;
                if (found && !(rec.flags & SKU_EMBRYO) && rec.peer_ino == s->ino) {
                        s->flags |= SKF_PAIR | SKF_PEER_IN;
                } else {
                        rt_warn("fd %d: Unix datagram socket connected to an unnamed socket that is not connected "
                                "back: restored unconnected", fd);
                        s->role = SK_UNCONNECTED;
                        return 0;
                }
        } else if (!found) {
                s->role = SK_CLOSED;
                s->flags |= SKF_EXTERNAL;
                return 0;
        } else if (rec.flags & SKU_EMBRYO) {
                if (rec.rqueue) {
                        char pe[160];
                        sk_addr_format(&s->peer, pe, sizeof pe);
                        snprintf(err, errsize, "fd %d: its connection to %s is not accepted yet and holds %u bytes "
                                 "the server has not read, which cannot be checkpointed; checkpoint again once it is "
                                 "accepted", fd, pe, rec.rqueue);
                        return -EAGAIN;
                }
                if (!s->peer.len) {
                        snprintf(err, errsize, "fd %d: connected to a listening socket without a name", fd);
                        return -EOPNOTSUPP;
                }
                s->role = SK_PENDING;
                s->flags |= SKF_PEER_IN;
                return 0;
        } else
                s->flags |= SKF_PAIR | SKF_PEER_IN;
        if (s->ino < s->peer_ino)
                s->flags |= SKF_CREATOR;
        else
                strscpy(f->d.leader, rec.upid, sizeof f->d.leader);
        return 0;
}

/* ---- restart --------------------------------------------------------------- */

static bool is_path(const struct sk_addr *a) {
        return a->len > offsetof(struct sockaddr_un, sun_path) && a->u.un.sun_path[0] != 0;
}

/* Is a live socket bound at this path? (connect() says ECONNREFUSED when
 * only a stale file is left.) */
static bool path_in_use(const struct sk_state *s) {
        int t = socket(AF_UNIX, s->type | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (t < 0)
                return true;
        int r = connect(t, &s->local.u.sa, s->local.len);
        int e = errno;
        raw_syscall1(SYS_close, t);
        return r == 0 || (e != ECONNREFUSED && e != ENOENT);
}

static int bind_name(struct rt_fd *f, int fd, char *err, size_t errsize) {
        const struct sk_state *s = sk_of(f);
        char name[160];
        if (bind(fd, &s->local.u.sa, s->local.len) == 0)
                return 0;
        int e = errno;
        if (e == EADDRINUSE && is_path(&s->local)) {
                char path[sizeof s->local.u.un.sun_path + 1];
                memcpy(path, s->local.u.un.sun_path, sizeof s->local.u.un.sun_path);
                path[sizeof path - 1] = 0;
                struct stat st;
                if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode) && !path_in_use(s) && unlink(path) == 0 &&
                    bind(fd, &s->local.u.sa, s->local.len) == 0)
                        return 0;
                e = errno;
        }
        sk_addr_format(&s->local, name, sizeof name);
        snprintf(err, errsize, "fd %d: cannot bind the Unix socket to %s again: %s", f->d.fd, name, strerror(e));
        return -e;
}

/* Datagrams that were queued for a named socket: sent to it again. */
static void requeue_to_self(struct rt_fd *f) {
        struct sk_state *s = sk_of(f);
        if (!f->data_len)
                return;
        if (!(s->flags & SKF_NAMED)) {
                rt_warn("fd %d: %zu bytes of datagrams queued for an unnamed socket are lost", f->d.fd, f->data_len);
                return;
        }
        int t = socket(AF_UNIX, s->type | SOCK_CLOEXEC, 0);
        int r = t < 0 ? -errno : 0;
        if (t >= 0) {
                sk_set_buffers(t, (int) MIN((size_t) 1 << 30, 2 * f->data_len + 65536), 0);
                r = sk_push_data(t, f->data, f->data_len, true, &s->local);
                raw_syscall1(SYS_close, t);
        }
        if (r < 0)
                rt_warn("fd %d: the datagrams queued for it could not be put back: %s", f->d.fd, strerror(-r));
}

int sk_unix_restore(struct rt_fd *f, char *err, size_t errsize) {
        struct sk_state *s = sk_of(f);
        int fd = -1, r;
        if (s->role == SK_CLOSED) {
                if (s->flags & SKF_EXTERNAL)
                        sk_warn_external(f);
                return sk_make_closed(f, err, errsize);
        }
        if (s->flags & SKF_PAIR) {
                if (!(s->flags & SKF_CREATOR))
                        return 1;       /* the creator hands it over: RST_CONNECT */
                int p[2];
                if (socketpair(AF_UNIX, s->type | SOCK_CLOEXEC, 0, p) < 0) {
                        snprintf(err, errsize, "fd %d: cannot create a Unix socket pair: %s", f->d.fd, strerror(errno));
                        return -errno;
                }
                if ((r = rt_mailbox_offer(RT_MB_SOCK_PEER, s->peer_ino, p[1])) < 0) {
                        raw_syscall1(SYS_close, p[0]);
                        raw_syscall1(SYS_close, p[1]);
                        snprintf(err, errsize, "fd %d: cannot keep the other end of its socket pair", f->d.fd);
                        return r;
                }
                return sk_place(f, p[0], err, errsize);
        }
        fd = sk_new(s, 0);
        if (fd < 0) {
                snprintf(err, errsize, "fd %d: cannot create a Unix socket: %s", f->d.fd, strerror(-fd));
                return fd;
        }
        if ((s->flags & SKF_NAMED) && (r = bind_name(f, fd, err, errsize)) < 0)
                goto fail;
        if (s->role == SK_LISTENING && listen(fd, s->backlog > 0 ? s->backlog : 128) < 0) {
                r = -errno;
                snprintf(err, errsize, "fd %d: cannot listen again: %s", f->d.fd, strerror(errno));
                goto fail;
        }
        if ((r = sk_place(f, fd, err, errsize)) < 0)
                return r;
        if (s->type == SOCK_DGRAM)
                requeue_to_self(f);
        if (s->role == SK_CONNECTED || s->role == SK_PENDING) {
                /* In place, but connected only once every socket is bound. */
                f->restored = false;
                return 1;
        }
        return 0;
fail:
        raw_syscall1(SYS_close, fd);
        return r;
}

int sk_unix_connect(struct rt_fd *f, char *err, size_t errsize) {
        struct sk_state *s = sk_of(f);
        if (s->flags & SKF_PAIR) {
                int r = rt_mailbox_request(f->d.leader, RT_MB_SOCK_PEER, s->ino, f->d.fd, (int) f->d.fdflags);
                if (r < 0)
                        snprintf(err, errsize, "fd %d: cannot obtain its end of the socket pair from process %s: %s",
                                 f->d.fd, f->d.leader, strerror(-r));
                return r;
        }
        char pe[160];
        sk_addr_format(&s->peer, pe, sizeof pe);
        if (connect(f->d.fd, &s->peer.u.sa, s->peer.len) < 0) {
                if (s->role == SK_PENDING) {
                        snprintf(err, errsize, "fd %d: cannot connect again to %s: %s", f->d.fd, pe, strerror(errno));
                        return -errno;
                }
                rt_warn("fd %d: cannot connect the datagram socket to %s again (%s): restored unconnected", f->d.fd,
                        pe, strerror(errno));
        }
        f->restored = true;
        return 0;
}

int sk_unix_rst_refill(struct rt_fd *f, char *err, size_t errsize) {
        struct sk_state *s = sk_of(f);
        if (!(s->flags & SKF_PAIR))
                return 0;
        int r = sk_exchange_add(f, f->data, f->data_len, s->flags & SKF_RECORDS);
        if (r < 0)
                snprintf(err, errsize, "fd %d: out of memory", f->d.fd);
        return r;
}
