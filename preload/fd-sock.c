/* Sockets: Unix (stream, seqpacket, datagram), TCP and UDP over IPv4 and
 * IPv6. This file holds what all families share: the ops table, the kind
 * check, socket options, and the exchange that puts drained bytes back
 * into a connection; fd-sock-unix.c and fd-sock-inet.c do the rest.
 *
 * Checkpoint (fd.c walks the phases):
 *   ELECT    every holder announces its socket (KV) and what a peer must
 *            know before it drains; a kind we cannot save fails here,
 *            naming the fd and the kind.
 *   DRAIN    Unix: the leader copies its receive queue without taking it
 *            (MSG_PEEK at SO_PEEK_OFF): the peer cannot add to it (every
 *            process is suspended) and nothing has to be put back. TCP:
 *            bytes still in the peer's send queue can only be had by
 *            reading ours, so the drain reads exactly what the peer wrote
 *            and we have not read (counted from both ends' TCP_INFO,
 *            announced at ELECT; no marker in the stream). When all of it
 *            has arrived it only peeks.
 *   CAPTURE  is the peer in the computation, and who restores it.
 *   REFILL   TCP bytes that were read out go back: each end sends the peer
 *            what it drained, the peer writes it back, so it lands in the
 *            receive queue it came from. Done before GO(REFILL): a program
 *            resumed by a copy-on-write checkpoint sees exactly its bytes.
 *            An abort after GO(ELECT) does the same (abandon), finishing a
 *            drain a peer may have started.
 * Restart:
 *   RST_RESTORE  listening and bound sockets are bound again (a stale
 *                socket file at the path is replaced); a Unix connection is
 *                recreated once (socketpair) by the end with the lower
 *                inode, which offers the other end (mailbox).
 *   RST_CONNECT  the other end takes it; TCP: one end listens on a
 *                temporary port published in the KV store, the other
 *                connects (the coordinator as name service).
 *   RST_REFILL   both ends exchange their drained bytes as above, then
 *                shutdown state, options and file flags are set.
 * A connection whose peer is outside the computation comes back closed:
 * what was queued for the program, then end of file (as after a network
 * failure), with a warning naming the fd and the peer, and a NOTICE the
 * coordinator logs.
 *
 * Not kept (each file says more): the ports of a TCP connection (new ones
 * after a restart) and the names of connected Unix stream sockets; UDP
 * datagrams in flight; the sender's address of Unix datagrams queued on a
 * named socket; TCP urgent data and shutdown(SHUT_RD); autotuning of TCP
 * buffers (their sizes are set as they were). Refused, naming the fd: a
 * half-closed TCP connection with bytes stuck in a send queue, and a
 * connection not accepted yet holding bytes the server never read (both
 * pass on a later checkpoint), and descriptors in flight (SCM_RIGHTS). */
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "fd-sock.h"
#include "raw-syscall.h"
#include "util.h"

#define SETFL_MASK (O_APPEND | O_ASYNC | O_NONBLOCK | O_NOATIME)
#define XFER_MAGIC 0x584b5344u          /* "DSKX" */
#define STALL_RAISE_USEC (200 * 1000ULL)
#define ECHO_RAISE_BYTES (64 * 1024)
#define STALL_FAIL_USEC (60 * 1000000ULL)

/* ---- what kind of socket ------------------------------------------------ */

const char *sk_family_name(int family, int type, int protocol, char *buf, size_t size) {
        const char *t = type == SOCK_STREAM ? "stream" : type == SOCK_DGRAM ? "datagram" :
                        type == SOCK_SEQPACKET ? "seqpacket" : type == SOCK_RAW ? "raw" : "other";
        switch (family) {
        case AF_UNIX:
                snprintf(buf, size, "Unix %s socket", t);
                break;
        case AF_INET:
        case AF_INET6: {
                const char *v = family == AF_INET ? "IPv4" : "IPv6";
                if (type == SOCK_STREAM && protocol == IPPROTO_TCP)
                        snprintf(buf, size, "TCP/%s socket", v);
                else if (type == SOCK_DGRAM && protocol == IPPROTO_UDP)
                        snprintf(buf, size, "UDP/%s socket", v);
                else
                        snprintf(buf, size, "%s %s socket (protocol %d)", v, t, protocol);
                break;
        }
        case AF_NETLINK:
                snprintf(buf, size, "netlink socket of protocol %d", protocol);
                break;
        case AF_PACKET:
                snprintf(buf, size, "packet socket");
                break;
        case AF_ALG:
                snprintf(buf, size, "AF_ALG (kernel crypto) socket");
                break;
        case AF_VSOCK:
                snprintf(buf, size, "vsock socket");
                break;
        default:
                snprintf(buf, size, "socket of address family %d", family);
        }
        return buf;
}

static bool supported(int family, int type, int protocol) {
        if (family == AF_UNIX)
                return type == SOCK_STREAM || type == SOCK_SEQPACKET || type == SOCK_DGRAM;
        if (family == AF_INET || family == AF_INET6)
                return (type == SOCK_STREAM && protocol == IPPROTO_TCP) ||
                       (type == SOCK_DGRAM && protocol == IPPROTO_UDP);
        return false;
}

void sk_addr_format(const struct sk_addr *a, char *buf, size_t size) {
        char ip[INET6_ADDRSTRLEN];
        if (!a->len) {
                snprintf(buf, size, "(unnamed)");
        } else if (a->u.sa.sa_family == AF_INET) {
                inet_ntop(AF_INET, &a->u.in.sin_addr, ip, sizeof ip);
                snprintf(buf, size, "%s:%u", ip, ntohs(a->u.in.sin_port));
        } else if (a->u.sa.sa_family == AF_INET6) {
                inet_ntop(AF_INET6, &a->u.in6.sin6_addr, ip, sizeof ip);
                snprintf(buf, size, "[%s]:%u", ip, ntohs(a->u.in6.sin6_port));
        } else if (a->u.sa.sa_family == AF_UNIX) {
                size_t n = a->len > offsetof(struct sockaddr_un, sun_path) ?
                           a->len - offsetof(struct sockaddr_un, sun_path) : 0;
                if (n == 0)
                        snprintf(buf, size, "(unnamed)");
                else if (a->u.un.sun_path[0] == 0)
                        snprintf(buf, size, "@%.*s", (int) MIN(n - 1, (size_t) 107), a->u.un.sun_path + 1);
                else
                        snprintf(buf, size, "%.*s", (int) strnlen(a->u.un.sun_path, MIN(n, (size_t) 108)),
                                 a->u.un.sun_path);
        } else
                snprintf(buf, size, "(family %d)", a->u.sa.sa_family);
}

/* ---- options ------------------------------------------------------------ */

struct opt_desc {
        int level, name;
        bool inet_only, tcp_only, v6_only;
};

/* Options a program sets and expects to keep. Buffer sizes are separate
 * (the kernel doubles them). */
static const struct opt_desc opt_table[] = {
        { SOL_SOCKET, SO_REUSEADDR, false, false, false },
        { SOL_SOCKET, SO_REUSEPORT, true, false, false },
        { SOL_SOCKET, SO_KEEPALIVE, false, false, false },
        { SOL_SOCKET, SO_OOBINLINE, false, false, false },
        { SOL_SOCKET, SO_PASSCRED, false, false, false },
        { SOL_SOCKET, SO_BROADCAST, true, false, false },
        { SOL_SOCKET, SO_RCVLOWAT, false, false, false },
        { SOL_SOCKET, SO_PRIORITY, false, false, false },
        { SOL_SOCKET, SO_LINGER, false, false, false },
        { SOL_SOCKET, SO_RCVTIMEO_OLD, false, false, false },
        { SOL_SOCKET, SO_SNDTIMEO_OLD, false, false, false },
        { IPPROTO_TCP, TCP_NODELAY, true, true, false },
        { IPPROTO_TCP, TCP_CORK, true, true, false },
        { IPPROTO_TCP, TCP_KEEPIDLE, true, true, false },
        { IPPROTO_TCP, TCP_KEEPINTVL, true, true, false },
        { IPPROTO_TCP, TCP_KEEPCNT, true, true, false },
        { IPPROTO_TCP, TCP_USER_TIMEOUT, true, true, false },
        { IPPROTO_TCP, TCP_NOTSENT_LOWAT, true, true, false },
        { IPPROTO_TCP, TCP_DEFER_ACCEPT, true, true, false },
        { IPPROTO_IPV6, IPV6_V6ONLY, true, false, true },
};

static bool opt_applies(const struct opt_desc *o, const struct sk_state *s) {
        bool inet = s->family == AF_INET || s->family == AF_INET6;
        if (o->inet_only && !inet)
                return false;
        if (o->tcp_only && s->protocol != IPPROTO_TCP)
                return false;
        if (o->v6_only && s->family != AF_INET6)
                return false;
        return true;
}

static void save_opts(struct sk_state *s, int fd) {
        s->n_opts = 0;
        for (size_t i = 0; i < ARRAY_SIZE(opt_table) && s->n_opts < SK_MAX_OPTS; i++) {
                const struct opt_desc *o = &opt_table[i];
                if (!opt_applies(o, s))
                        continue;
                struct sk_opt *v = &s->opts[s->n_opts];
                socklen_t len = sizeof v->val;
                memset(v->val, 0, sizeof v->val);
                if (getsockopt(fd, o->level, o->name, v->val, &len) < 0)
                        continue;
                v->level = o->level;
                v->name = o->name;
                v->len = len;
                s->n_opts++;
        }
        socklen_t len = sizeof(int);
        if (getsockopt(fd, SOL_SOCKET, SO_SNDBUF, &s->sndbuf, &len) < 0)
                s->sndbuf = 0;
        len = sizeof(int);
        if (getsockopt(fd, SOL_SOCKET, SO_RCVBUF, &s->rcvbuf, &len) < 0)
                s->rcvbuf = 0;
}

/* Set a buffer size as it was (getsockopt reports twice what was asked):
 * SO_*BUFFORCE where allowed, else the unprivileged call (capped). */
static void set_buffer(int fd, int opt, int force_opt, int saved) {
        if (saved <= 0)
                return;
        int cur = 0;
        socklen_t len = sizeof cur;
        if (getsockopt(fd, SOL_SOCKET, opt, &cur, &len) == 0 && cur == saved)
                return;
        int v = saved / 2;
        if (setsockopt(fd, SOL_SOCKET, force_opt, &v, sizeof v) < 0)
                setsockopt(fd, SOL_SOCKET, opt, &v, sizeof v);
}

void sk_set_buffers(int fd, int sndbuf, int rcvbuf) {
        set_buffer(fd, SO_SNDBUF, SO_SNDBUFFORCE, sndbuf);
        set_buffer(fd, SO_RCVBUF, SO_RCVBUFFORCE, rcvbuf);
}

void sk_apply_opts(const struct sk_state *s, int fd) {
        for (uint32_t i = 0; i < s->n_opts; i++) {
                const struct sk_opt *o = &s->opts[i];
                uint8_t cur[16] = { 0 };
                socklen_t len = sizeof cur;
                if (getsockopt(fd, o->level, o->name, cur, &len) == 0 && len == o->len && !memcmp(cur, o->val, len))
                        continue;
                if (setsockopt(fd, o->level, o->name, o->val, o->len) < 0 && o->name != TCP_DEFER_ACCEPT)
                        rt_warn("fd %d: cannot restore socket option %d/%d: %s", fd, o->level, o->name,
                                strerror(errno));
        }
        sk_set_buffers(fd, s->sndbuf, s->rcvbuf);
}

int sk_new(const struct sk_state *s, int extra_flags) {
        int fd = socket(s->family, s->type | SOCK_CLOEXEC | extra_flags, s->protocol);
        if (fd < 0)
                return -errno;
        sk_apply_opts(s, fd);
        return fd;
}

int sk_place(struct rt_fd *f, int newfd, char *err, size_t errsize) {
        sk_apply_opts(sk_of(f), newfd);
        int r = rt_fd_install(newfd, f->d.fd, (int) f->d.fdflags);
        if (r < 0) {
                snprintf(err, errsize, "fd %d: cannot place the socket: %s", f->d.fd, strerror(-r));
                return r;
        }
        f->restored = true;
        return 0;
}

int sk_wait(int fd, short events, int timeout_ms) {
        struct pollfd p = { fd, events, 0 };
        for (;;) {
                int n = poll(&p, 1, timeout_ms);
                if (n < 0 && errno == EINTR)
                        continue;
                return n < 0 ? -errno : n;
        }
}

/* ---- queues ------------------------------------------------------------- */

/* A growing buffer in the scratch arena (bump allocation: copy on growth). */
struct buf {
        uint8_t *p;
        size_t len, cap;
};

static int buf_reserve(struct buf *b, size_t more) {
        if (b->len + more <= b->cap)
                return 0;
        size_t cap = MAX(b->cap * 2, b->len + more);
        cap = MAX(cap, (size_t) 65536);
        uint8_t *p = rt_alloc(RT_ARENA_SCRATCH, cap);
        if (!p)
                return -ENOMEM;
        if (b->len)
                memcpy(p, b->p, b->len);
        b->p = p;
        b->cap = cap;
        return 0;
}

static int close_passed_fds(struct msghdr *mh) {
        int n = 0;
        for (struct cmsghdr *c = CMSG_FIRSTHDR(mh); c; c = CMSG_NXTHDR(mh, c))
                if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
                        size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
                        for (size_t i = 0; i < k; i++) {
                                int x;
                                memcpy(&x, CMSG_DATA(c) + i * sizeof(int), sizeof x);
                                raw_syscall1(SYS_close, x);
                                n++;
                        }
                }
        return n;
}

/* One peek at the queue (at the peek offset) into buf, with room for
 * passed descriptors so they can be seen and closed. */
static ssize_t peek_once(struct rt_fd *f, void *buf, size_t len, int flags, char *err, size_t errsize) {
        union {
                struct cmsghdr h;
                char buf[CMSG_SPACE(sizeof(int) * 64)];
        } u;
        struct iovec iov = { buf, len };
        struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf, .msg_controllen = sizeof u.buf };
        ssize_t k;
        do
                k = recvmsg(f->d.fd, &mh, MSG_PEEK | MSG_DONTWAIT | MSG_CMSG_CLOEXEC | flags);
        while (k < 0 && errno == EINTR);
        if (k < 0) {
                if (errno == EAGAIN)
                        return -EAGAIN;
                snprintf(err, errsize, "fd %d: cannot read its receive queue: %s", f->d.fd, strerror(errno));
                return -errno;
        }
        if (close_passed_fds(&mh) > 0 || (mh.msg_flags & MSG_CTRUNC)) {
                char kb[64];
                const struct sk_state *s = sk_of(f);
                snprintf(err, errsize, "fd %d is a %s with descriptors in flight (SCM_RIGHTS) in its receive queue, "
                         "which cannot be checkpointed", f->d.fd, sk_family_name(s->family, s->type, s->protocol, kb,
                         sizeof kb));
                return -EBADMSG;
        }
        return k;
}

int sk_peek_queue(struct rt_fd *f, bool records, char *err, size_t errsize) {
        int fd = f->d.fd, old = -1;
        socklen_t len = sizeof old;
        if (getsockopt(fd, SOL_SOCKET, SO_PEEK_OFF, &old, &len) < 0)
                old = -1;
        int zero = 0;
        if (setsockopt(fd, SOL_SOCKET, SO_PEEK_OFF, &zero, sizeof zero) < 0)
                return -EOPNOTSUPP;
        struct buf b = { 0 };
        ssize_t k;
        int r = 0;
        for (;;) {
                size_t want = 256 * 1024;
                if (records) {
                        /* Its length first (MSG_TRUNC, nothing copied, the
                         * offset stays), then the whole message. */
                        k = peek_once(f, NULL, 0, MSG_TRUNC, err, errsize);
                        if (k <= 0) {
                                if (k == 0)
                                        rt_warn("fd %d: an empty message in its receive queue and any after it "
                                                "are not saved", fd);
                                r = k == -EAGAIN || k == 0 ? 0 : (int) k;
                                break;
                        }
                        want = (size_t) k;
                }
                if ((r = buf_reserve(&b, want + 4)) < 0)
                        break;
                k = peek_once(f, b.p + b.len + (records ? 4 : 0), want, 0, err, errsize);
                if (k < 0) {
                        r = k == -EAGAIN ? 0 : (int) k;
                        break;
                }
                if (!records) {
                        if (k == 0)
                                break;          /* end of file */
                        b.len += (size_t) k;
                        continue;
                }
                if ((size_t) k != want) {
                        snprintf(err, errsize, "fd %d: a queued message changed while it was read", fd);
                        r = -EIO;
                        break;
                }
                uint32_t l = (uint32_t) k;
                memcpy(b.p + b.len, &l, 4);
                b.len += 4 + (size_t) k;
        }
        setsockopt(fd, SOL_SOCKET, SO_PEEK_OFF, &old, sizeof old);
        if (r < 0)
                return r;
        f->data = NULL;
        f->data_len = 0;
        if (b.len) {
                f->data = rt_alloc(RT_ARENA_STATE, b.len);
                if (!f->data) {
                        snprintf(err, errsize, "fd %d: no memory for its %zu queued bytes", fd, b.len);
                        return -ENOMEM;
                }
                memcpy(f->data, b.p, b.len);
                f->data_len = b.len;
        }
        return 0;
}

/* Next record of an encoded buffer at *off: its bytes and length. */
static bool next_record(const uint8_t *data, size_t len, size_t *off, const uint8_t **rec, uint32_t *rlen) {
        if (*off + 4 > len)
                return false;
        memcpy(rlen, data + *off, 4);
        if (*off + 4 + *rlen > len)
                return false;
        *rec = data + *off + 4;
        *off += 4 + *rlen;
        return true;
}

int sk_push_data(int fd, const uint8_t *data, size_t len, bool records, const struct sk_addr *to) {
        size_t off = 0;
        uint64_t t0 = now_usec(CLOCK_MONOTONIC);
        while (off < len) {
                ssize_t k;
                size_t next = off;
                const uint8_t *rec = data + off;
                uint32_t rlen = (uint32_t) MIN(len - off, (size_t) 1 << 20);
                if (records && !next_record(data, len, &next, &rec, &rlen))
                        return -EBADMSG;
                k = sendto(fd, rec, rlen, MSG_DONTWAIT | MSG_NOSIGNAL, to ? &to->u.sa : NULL, to ? to->len : 0);
                if (k < 0 && errno == EINTR)
                        continue;
                if (k < 0 && errno == EAGAIN) {
                        if (now_usec(CLOCK_MONOTONIC) - t0 > 10 * 1000000ULL)
                                return -EAGAIN;
                        sk_wait(fd, POLLOUT, 100);
                        continue;
                }
                if (k < 0)
                        return -errno;
                t0 = now_usec(CLOCK_MONOTONIC);
                off = records ? next : off + (size_t) k;
        }
        return 0;
}

/* A line for the coordinator's log (NOTICE), naming this process. */
static void notify_coordinator(int level, const char *fmt, ...) _printf_(2, 3);
static void notify_coordinator(int level, const char *fmt, ...) {
        if (rt.coord_fd < 0)
                return;
        struct proto_msg m;
        proto_init(&m, PROTO_NOTICE);
        m.u.notice.level = (uint8_t) level;
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(m.u.notice.text, sizeof m.u.notice.text, fmt, ap);
        va_end(ap);
        for (char *p = m.u.notice.text; *p; p++)
                if ((unsigned char) *p < 0x20 || *p == 0x7f)
                        *p = ' ';
        proto_send(rt.coord_fd, &m);
}

static void describe_external(const struct rt_fd *f, char *buf, size_t size) {
        const struct sk_state *s = sk_of(f);
        char peer[160], kb[64];
        sk_addr_format(&s->peer, peer, sizeof peer);
        snprintf(buf, size, "fd %d: %s connected to %s, outside the computation", f->d.fd,
                 sk_family_name(s->family, s->type, s->protocol, kb, sizeof kb), peer);
}

void sk_warn_external(const struct rt_fd *f) {
        char what[400];
        describe_external(f, what, sizeof what);
        rt_warn("%s: restored closed (the program reads the %zu bytes that were queued for it, then end of file)",
                what, f->data_len);
}

/* ---- the exchange of drained bytes -------------------------------------- */

struct xfer_hdr {
        uint32_t magic;
        uint32_t records;
        uint64_t len;                   /* bytes that follow (records: encoded [u32][bytes]...) */
        uint32_t max_record;
        uint32_t pad;
};

struct sk_xfer {
        struct rt_fd *f;
        int fd;
        bool records;
        struct xfer_hdr hdr;
        size_t hdr_off;                 /* of ours, sent */
        const uint8_t *mine;
        size_t mine_len, mine_off;
        struct xfer_hdr phdr;
        size_t phdr_off;                /* of the peer's, received */
        uint8_t *theirs;
        size_t theirs_len, theirs_off;
        size_t echo_off;
        bool done, failed, raised;
        int sndbuf;
};

static struct sk_xfer *xfers;
static uint32_t n_xfers, cap_xfers;

int sk_exchange_add(struct rt_fd *f, const uint8_t *mine, size_t mine_len, bool records) {
        if (n_xfers == cap_xfers) {
                uint32_t nc = cap_xfers ? cap_xfers * 2 : 64;
                struct sk_xfer *x = rt_alloc(RT_ARENA_SCRATCH, nc * sizeof *x);
                if (!x)
                        return -ENOMEM;
                if (n_xfers)
                        memcpy(x, xfers, n_xfers * sizeof *x);
                xfers = x;
                cap_xfers = nc;
        }
        struct sk_xfer *x = &xfers[n_xfers++];
        memset(x, 0, sizeof *x);
        x->f = f;
        x->fd = f->d.fd;
        x->records = records;
        x->mine = mine;
        x->mine_len = mine_len;
        x->hdr.magic = XFER_MAGIC;
        x->hdr.records = records;
        x->hdr.len = mine_len;
        size_t off = 0;
        const uint8_t *rec;
        uint32_t rlen;
        while (records && next_record(mine, mine_len, &off, &rec, &rlen))
                x->hdr.max_record = MAX(x->hdr.max_record, rlen);
        return 0;
}

static bool in_complete(const struct sk_xfer *x) {
        return x->phdr_off == sizeof x->phdr && x->theirs_off == x->theirs_len;
}

static bool out_complete(const struct sk_xfer *x) {
        return x->hdr_off == sizeof x->hdr && x->mine_off == x->mine_len;
}

/* Send what we can of a byte range or of the records in it. 1 progress, 0
 * would block, -errno. */
static int send_some(int fd, const uint8_t *data, size_t len, size_t *off, bool records) {
        if (*off >= len)
                return 0;
        const uint8_t *p = data + *off;
        size_t n = len - *off, next = *off;
        uint32_t rlen = 0;
        if (records) {
                if (!next_record(data, len, &next, &p, &rlen))
                        return -EBADMSG;
                n = rlen;
        }
        ssize_t k = send(fd, p, n, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (k < 0)
                return errno == EAGAIN || errno == EINTR ? 0 : -errno;
        *off = records ? next : *off + (size_t) k;
        return 1;
}

static int recv_some(struct sk_xfer *x) {
        ssize_t k;
        if (x->phdr_off < sizeof x->phdr) {
                /* Stream: exactly the header's bytes; records: one message. */
                k = recv(x->fd, (uint8_t *) &x->phdr + x->phdr_off, sizeof x->phdr - x->phdr_off, MSG_DONTWAIT);
                if (k < 0)
                        return errno == EAGAIN || errno == EINTR ? 0 : -errno;
                if (k == 0)
                        return -ECONNRESET;
                x->phdr_off += (size_t) k;
                if (x->records && x->phdr_off != sizeof x->phdr)
                        return -EBADMSG;
                if (x->phdr_off < sizeof x->phdr)
                        return 1;
                if (x->phdr.magic != XFER_MAGIC || x->phdr.records != x->records || x->phdr.len > (1ULL << 40))
                        return -EBADMSG;
                x->theirs_len = x->phdr.len;
                x->theirs = rt_alloc(RT_ARENA_SCRATCH, x->theirs_len + x->phdr.max_record + 16);
                if (!x->theirs)
                        return -ENOMEM;
                return 1;
        }
        if (x->theirs_off >= x->theirs_len)
                return 0;
        if (x->records) {
                size_t room = x->theirs_len - x->theirs_off;
                if (room < 4)
                        return -EBADMSG;
                k = recv(x->fd, x->theirs + x->theirs_off + 4, x->phdr.max_record + 1, MSG_DONTWAIT);
                if (k < 0)
                        return errno == EAGAIN || errno == EINTR ? 0 : -errno;
                if ((size_t) k > x->phdr.max_record || (size_t) k + 4 > room)
                        return -EBADMSG;
                uint32_t l = (uint32_t) k;
                memcpy(x->theirs + x->theirs_off, &l, 4);
                x->theirs_off += 4 + (size_t) k;
                return 1;
        }
        k = recv(x->fd, x->theirs + x->theirs_off, x->theirs_len - x->theirs_off, MSG_DONTWAIT);
        if (k < 0)
                return errno == EAGAIN || errno == EINTR ? 0 : -errno;
        if (k == 0)
                return -ECONNRESET;
        x->theirs_off += (size_t) k;
        return 1;
}

/* Our send queue gets room for the bytes we write back, on top of what it
 * holds, so they need not wait for the peer's receive queue (whose program
 * does not read yet); the program's size comes back once they are written. */
static void raise_sndbuf(struct sk_xfer *x) {
        socklen_t len = sizeof x->sndbuf;
        if (getsockopt(x->fd, SOL_SOCKET, SO_SNDBUF, &x->sndbuf, &len) < 0)
                return;
        int v = (int) MIN((size_t) 1 << 30, x->theirs_len + (size_t) x->sndbuf);
        if (setsockopt(x->fd, SOL_SOCKET, SO_SNDBUFFORCE, &v, sizeof v) < 0)
                setsockopt(x->fd, SOL_SOCKET, SO_SNDBUF, &v, sizeof v);
        x->raised = true;
}

static int step(struct sk_xfer *x) {
        int progress = 0, r;
        if (x->hdr_off < sizeof x->hdr) {
                if ((r = send_some(x->fd, (const uint8_t *) &x->hdr, sizeof x->hdr, &x->hdr_off, false)) < 0)
                        return r;
                progress |= r;
                if (x->records && r > 0)
                        x->hdr_off = sizeof x->hdr;     /* one message */
        }
        if (x->hdr_off == sizeof x->hdr) {
                if ((r = send_some(x->fd, x->mine, x->mine_len, &x->mine_off, x->records)) < 0)
                        return r;
                progress |= r;
        }
        if (!in_complete(x)) {
                while ((r = recv_some(x)) > 0)
                        progress = 1;
                if (r < 0)
                        return r;
        }
        if (in_complete(x) && out_complete(x)) {
                if (!x->raised && x->theirs_len - x->echo_off >= ECHO_RAISE_BYTES)
                        raise_sndbuf(x);
                if ((r = send_some(x->fd, x->theirs, x->theirs_len, &x->echo_off, x->records)) < 0)
                        return r;
                progress |= r;
                if (x->echo_off >= x->theirs_len)
                        x->done = true;
        }
        return progress;
}

int sk_exchange_run(const char *when, char *err, size_t errsize) {
        int result = 0;
        uint64_t last = now_usec(CLOCK_MONOTONIC);
        struct pollfd *p = n_xfers ? rt_alloc(RT_ARENA_SCRATCH, n_xfers * sizeof *p) : NULL;
        if (n_xfers && !p)
                return -ENOMEM;
        for (;;) {
                uint32_t open = 0;
                bool progress = false;
                for (uint32_t i = 0; i < n_xfers; i++) {
                        struct sk_xfer *x = &xfers[i];
                        if (x->done || x->failed)
                                continue;
                        int r = step(x);
                        if (r < 0) {
                                x->failed = true;
                                rt_error("fd %d: the connection broke while its in-flight bytes were put back %s "
                                         "(%s): %zu of its bytes and %zu of its peer's are lost", x->fd, when,
                                         strerror(-r), x->theirs_len - x->echo_off, x->mine_len);
                                if (!result) {
                                        snprintf(err, errsize, "fd %d: the connection broke while its in-flight bytes "
                                                 "were put back %s (%s)", x->fd, when, strerror(-r));
                                        result = r;
                                }
                                continue;
                        }
                        progress |= r > 0;
                        if (x->done)
                                continue;
                        p[open].fd = x->fd;
                        p[open].events = (short) ((!in_complete(x) ? POLLIN : 0) |
                                                  (!out_complete(x) || in_complete(x) ? POLLOUT : 0));
                        p[open].revents = 0;
                        open++;
                }
                uint64_t now = now_usec(CLOCK_MONOTONIC);
                if (progress)
                        last = now;
                if (!open)
                        break;
                if (now - last > STALL_RAISE_USEC)
                        for (uint32_t i = 0; i < n_xfers; i++)
                                if (!xfers[i].done && !xfers[i].failed && !xfers[i].raised && in_complete(&xfers[i]))
                                        raise_sndbuf(&xfers[i]);
                if (now - last > STALL_FAIL_USEC) {
                        for (uint32_t i = 0; i < n_xfers; i++) {
                                struct sk_xfer *x = &xfers[i];
                                if (x->done || x->failed)
                                        continue;
                                x->failed = true;
                                rt_error("fd %d: its peer did not take part in putting back in-flight bytes %s within "
                                         "%llu s: %zu of its bytes and %zu of its peer's are lost", x->fd, when,
                                         STALL_FAIL_USEC / 1000000ULL, x->theirs_len - x->echo_off,
                                         x->mine_len - x->mine_off);
                                if (!result) {
                                        snprintf(err, errsize, "fd %d: its peer did not take part in putting back "
                                                 "in-flight bytes %s", x->fd, when);
                                        result = -ETIMEDOUT;
                                }
                        }
                        break;
                }
                if (!progress && poll(p, open, 100) < 0 && errno != EINTR)
                        return -errno;
        }
        for (uint32_t i = 0; i < n_xfers; i++)
                if (xfers[i].raised)
                        setsockopt(xfers[i].fd, SOL_SOCKET, SO_SNDBUF, &(int) { xfers[i].sndbuf / 2 }, sizeof(int));
        xfers = NULL;
        n_xfers = cap_xfers = 0;
        return result;
}

/* ---- closed sockets ------------------------------------------------------ */

int sk_make_closed(struct rt_fd *f, char *err, size_t errsize) {
        const struct sk_state *s = sk_of(f);
        int r;
        if (s->family == AF_UNIX) {
                /* A pair of the same type; the other end writes the queue
                 * and goes away. */
                int p[2];
                if (socketpair(AF_UNIX, s->type | SOCK_CLOEXEC, 0, p) < 0) {
                        snprintf(err, errsize, "fd %d: cannot create a socket pair: %s", f->d.fd, strerror(errno));
                        return -errno;
                }
                sk_set_buffers(p[1], (int) MIN((size_t) 1 << 30, 2 * f->data_len + 65536), 0);
                r = sk_push_data(p[1], f->data, f->data_len, s->flags & SKF_RECORDS, NULL);
                if (r < 0)
                        rt_warn("fd %d: %zu bytes queued for it could not be put back: %s", f->d.fd, f->data_len,
                                strerror(-r));
                raw_syscall1(SYS_close, p[1]);
                return sk_place(f, p[0], err, errsize);
        }
        /* TCP: a real TCP connection on loopback, whose other end sends the
         * queue and closes. */
        struct sk_state tmp = *s;
        tmp.n_opts = 0;
        tmp.sndbuf = tmp.rcvbuf = 0;
        int l = sk_new(&tmp, 0), c = -1, a = -1;
        struct sk_addr la;
        memset(&la, 0, sizeof la);
        la.u.sa.sa_family = (sa_family_t) s->family;
        if (s->family == AF_INET) {
                la.u.in.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
                la.len = sizeof la.u.in;
        } else {
                la.u.in6.sin6_addr = in6addr_loopback;
                la.len = sizeof la.u.in6;
        }
        socklen_t len = la.len;
        if (l < 0 || bind(l, &la.u.sa, la.len) < 0 || listen(l, 1) < 0 || getsockname(l, &la.u.sa, &len) < 0)
                goto fail;
        c = sk_new(&tmp, 0);
        if (c < 0 || connect(c, &la.u.sa, len) < 0)
                goto fail;
        a = accept4(l, NULL, NULL, SOCK_CLOEXEC);
        if (a < 0)
                goto fail;
        int big = (int) MIN((size_t) 1 << 30, 2 * f->data_len + 65536);
        sk_set_buffers(c, 0, big);
        sk_set_buffers(a, big, 0);
        r = sk_push_data(a, f->data, f->data_len, false, NULL);
        if (r < 0)
                rt_warn("fd %d: %zu bytes queued for it could not be put back: %s", f->d.fd, f->data_len, strerror(-r));
        raw_syscall1(SYS_close, a);
        raw_syscall1(SYS_close, l);
        /* Wait until the end of file has arrived, so the program sees it. */
        for (int i = 0; i < 1000; i++) {
                struct tcp_info ti;
                socklen_t tl = sizeof ti;
                if (getsockopt(c, IPPROTO_TCP, TCP_INFO, &ti, &tl) < 0 || ti.tcpi_state != TCP_ESTABLISHED)
                        break;
                struct timespec ts = { 0, 1000000 };
                nanosleep(&ts, NULL);
        }
        return sk_place(f, c, err, errsize);
fail:
        r = -errno;
        snprintf(err, errsize, "fd %d: cannot make a closed TCP connection on loopback: %s", f->d.fd, strerror(errno));
        if (c >= 0)
                raw_syscall1(SYS_close, c);
        if (l >= 0)
                raw_syscall1(SYS_close, l);
        return r ? r : -EIO;
}

/* ---- the ops table -------------------------------------------------------- */

static bool sock_match(const struct rt_fd_probe *p) {
        return S_ISSOCK(p->st.st_mode);
}

static bool is_unix(const struct rt_fd *f) {
        return sk_of(f)->family == AF_UNIX;
}

/* Is f the first socket of the table this process restores or leads? The
 * phases that must handle all sockets at once (so that processes waiting
 * on each other never wait in a different order) run from there. */
static bool first_socket(const struct rt_fd *f, bool restart) {
        for (uint32_t i = 0; i < rt_cap->n_fds; i++) {
                const struct rt_fd *g = &rt_cap->fds[i];
                if (g->ops != &rt_fd_socket_ops || !g->priv)
                        continue;
                if (restart ? g->d.share == IMG_FD_FOLLOWER : !g->leader)
                        continue;
                return g == f;
        }
        return false;
}

static int sock_announce(struct rt_fd *f, char *err, size_t errsize) {
        int fd = f->d.fd;
        int v[3] = { -1, -1, -1 };
        const int names[3] = { SO_DOMAIN, SO_TYPE, SO_PROTOCOL };
        for (int i = 0; i < 3; i++) {
                socklen_t len = sizeof v[i];
                if (getsockopt(fd, SOL_SOCKET, names[i], &v[i], &len) < 0) {
                        snprintf(err, errsize, "fd %d (%s): cannot tell what socket it is: %s", fd, f->path,
                                 strerror(errno));
                        return -errno;
                }
        }
        if (!supported(v[0], v[1], v[2])) {
                char kb[64];
                snprintf(err, errsize, "fd %d is a %s (%s), which cannot be checkpointed", fd,
                         sk_family_name(v[0], v[1], v[2], kb, sizeof kb), f->path);
                return -EOPNOTSUPP;
        }
        struct sk_state *s = rt_alloc(RT_ARENA_STATE, sizeof *s);
        if (!s)
                return -ENOMEM;
        memset(s, 0, sizeof *s);
        s->family = v[0];
        s->type = v[1];
        s->protocol = v[2];
        s->ino = f->d.ino;
        if (s->type != SOCK_STREAM)
                s->flags |= SKF_RECORDS;
        f->priv = s;
        return s->family == AF_UNIX ? sk_unix_announce(f, err, errsize) : sk_inet_announce(f, err, errsize);
}

static int sock_publish(struct rt_fd *f, char *err, size_t errsize) {
        return is_unix(f) ? sk_unix_publish(f, err, errsize) : 0;
}

static int sock_drain(struct rt_fd *f, char *err, size_t errsize) {
        int r = is_unix(f) ? sk_unix_drain(f, err, errsize) : 0;
        return r >= 0 && first_socket(f, false) ? sk_inet_drain_all(err, errsize) : r;
}

static int sock_save(const struct rt_fd_probe *p, struct rt_fd *f, char *err, size_t errsize) {
        struct sk_state *s = sk_of(f);
        if (!s) {
                snprintf(err, errsize, "fd %d (%s) appeared during the checkpoint", f->d.fd, f->path);
                return -EBUSY;
        }
        save_opts(s, p->fd);
        int r = is_unix(f) ? sk_unix_save(f, err, errsize) : sk_inet_save(f, err, errsize);
        if (r < 0)
                return r;
        f->d.size = f->data_len;
        f->d.aux = s->flags;
        if (s->flags & SKF_EXTERNAL) {
                char what[400];
                describe_external(f, what, sizeof what);
                notify_coordinator(LOG_INFO, "%s: a restart restores it closed", what);
        }
        /* What --inspect shows: the kind and the addresses. */
        char kb[64], l[160], pe[160], desc[512];
        sk_addr_format(&s->local, l, sizeof l);
        sk_addr_format(&s->peer, pe, sizeof pe);
        const char *role = s->role == SK_LISTENING ? "listening" : s->role == SK_CONNECTED ? "connected" :
                           s->role == SK_PENDING ? "connecting" : s->role == SK_CLOSED ? "closed" : "unconnected";
        snprintf(desc, sizeof desc, "%s %s %s%s%s%s, %zu bytes queued", sk_family_name(s->family, s->type, s->protocol,
                 kb, sizeof kb), role, l, s->peer.len || s->role == SK_CONNECTED ? " -> " : "",
                 s->peer.len || s->role == SK_CONNECTED ? pe : "",
                 s->flags & SKF_EXTERNAL ? " (outside the computation)" : "", f->data_len);
        f->path = rt_strdup_state(desc);
        return f->path ? 0 : -ENOMEM;
}

static int sock_refill(struct rt_fd *f, char *err, size_t errsize) {
        return first_socket(f, false) ? sk_inet_refill_all(err, errsize) : 0;
}

static void sock_abandon(struct rt_fd *f) {
        if (f->priv && first_socket(f, false))
                sk_inet_abandon_all();
}

static int sock_restore(struct rt_fd *f, char *err, size_t errsize) {
        return is_unix(f) ? sk_unix_restore(f, err, errsize) : sk_inet_restore(f, err, errsize);
}

/* The restart whose TCP connections are made (rt.restart_count counts the
 * restarts this process went through, the image's value until it runs). */
static uint64_t connected_restart = UINT64_MAX;

static int sock_connect(struct rt_fd *f, char *err, size_t errsize) {
        /* TCP connections first, for every socket of ours at once, at the
         * first socket that is not in place yet. */
        int r = 0;
        if (connected_restart != rt.restart_count) {
                connected_restart = rt.restart_count;
                r = sk_inet_connect_all(err, errsize);
        }
        if (r >= 0 && is_unix(f))
                r = sk_unix_connect(f, err, errsize);
        return r;
}

/* After the exchange: shutdown state, options, file flags. */
static int finish(struct rt_fd *f) {
        const struct sk_state *s = sk_of(f);
        int fd = f->d.fd;
        if (s->role == SK_CONNECTED || s->role == SK_PENDING) {
                int how = (s->flags & SKF_SHUT_RD) && (s->flags & SKF_SHUT_WR) ? SHUT_RDWR :
                          (s->flags & SKF_SHUT_RD) ? SHUT_RD : (s->flags & SKF_SHUT_WR) ? SHUT_WR : -1;
                if (how >= 0)
                        shutdown(fd, how);
        }
        sk_apply_opts(s, fd);
        raw_syscall3(SYS_fcntl, fd, F_SETFL, f->d.flags & SETFL_MASK);
        return 0;
}

static int sock_rst_refill(struct rt_fd *f, char *err, size_t errsize) {
        if (first_socket(f, true)) {
                /* Every connection of ours: its exchange, all at once. */
                for (uint32_t i = 0; i < rt_cap->n_fds; i++) {
                        struct rt_fd *g = &rt_cap->fds[i];
                        if (g->ops != &rt_fd_socket_ops || g->d.share == IMG_FD_FOLLOWER)
                                continue;
                        int r = sk_of(g)->family == AF_UNIX ? sk_unix_rst_refill(g, err, errsize) :
                                                              sk_inet_rst_refill(g, err, errsize);
                        if (r < 0)
                                return r;
                        if (sk_of(g)->flags & SKF_EXTERNAL) {
                                char what[400];
                                describe_external(g, what, sizeof what);
                                notify_coordinator(LOG_WARNING, "%s: restored closed", what);
                        }
                }
                int r = sk_exchange_run("after the restart", err, errsize);
                if (r < 0)
                        return r;
        }
        return finish(f);
}

const struct rt_fd_ops rt_fd_socket_ops = {
        .kind = IMG_FD_SOCKET,
        .name = "socket",
        .shareable = true,
        .match = sock_match,
        .announce = sock_announce,
        .publish = sock_publish,
        .drain = sock_drain,
        .save = sock_save,
        .refill = sock_refill,
        .abandon = sock_abandon,
        .restore = sock_restore,
        .connect = sock_connect,
        .rst_refill = sock_rst_refill,
};
