/* TCP and UDP sockets, IPv4 and IPv6.
 *
 * A TCP connection is known by its two endpoints. At ELECT every holder
 * announces "skt/<local>/<peer>" (v4-mapped addresses written as IPv4):
 * how many bytes it ever wrote (TCP_INFO: sent - retransmitted + not yet
 * sent), how many it read (received - still queued), what is queued, and
 * whether it closed its writing side. After GO(ELECT) each end knows
 * exactly how many bytes its peer wrote that it has not read, and whether
 * they have all arrived; both ends decide the same way:
 *   - all arrived: peek at them (SO_PEEK_OFF), take nothing;
 *   - some still in a send queue (a full window), either way: both ends
 *     read all theirs out (that is the only way to get them); after the
 *     checkpoint, or an abort, they exchange what they read and write the
 *     other's back (fd-sock.c), before the program runs again.
 * A half-closed connection with bytes still in a send queue cannot be put
 * back that way: the checkpoint fails, naming it; a later one works.
 * A connection whose peer announced nothing is outside the computation:
 * restored closed, after what was queued for the program; unless it waits
 * in the backlog of a listener of the computation (listeners announce
 * "sktl/<address>"): then a restart connects it again, and it waits there
 * again.
 *
 * Restart: listening and bound sockets bind again (SO_REUSEADDR while
 * binding), UDP sockets connect again to their peer (datagrams in flight
 * are not kept). For each connection, the end with the lower address
 * listens on a temporary port of its original address and publishes it
 * ("sktr/<lower>/<higher>"); the other end connects from its original
 * address and says which connection it is; the new connection takes the
 * original descriptor number, options and flags. Its ports are new
 * (getsockname/getpeername show them). A connect() in progress (SYN_SENT)
 * is started again. */
#include <arpa/inet.h>
#include <linux/tcp.h>          /* the whole struct tcp_info (glibc's lacks the byte counters) */
#include <poll.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "fd-sock.h"
#include "raw-syscall.h"
#include "util.h"

#define WAIT_PEER_MS 60000

/* TCP states (include/net/tcp_states.h). */
enum {
        ST_ESTABLISHED = 1, ST_SYN_SENT, ST_SYN_RECV, ST_FIN_WAIT1, ST_FIN_WAIT2, ST_TIME_WAIT, ST_CLOSE,
        ST_CLOSE_WAIT, ST_LAST_ACK, ST_LISTEN, ST_CLOSING,
};

enum {
        ANN_SHUT_WR = 1u << 0,          /* we sent (or queued) our FIN */
        ANN_PEER_FIN = 1u << 1,         /* the peer's FIN arrived */
        ANN_PEEK_OK = 1u << 2,          /* SO_PEEK_OFF works on it */
};

struct skt_ann {
        char upid[PROTO_ID_MAX + 1];
        uint64_t written, read, queued;
        uint32_t flags;
        uint32_t pad;
};

/* Per socket, this checkpoint: ours and the peer's announcements. */
struct inet_ck {
        struct skt_ann mine, peer;
        bool have_peer, looked_up;
};

static struct inet_ck *ck_of(const struct sk_state *s) {
        return s->ck;
}

static bool is_tcp(const struct sk_state *s) {
        return s->protocol == IPPROTO_TCP;
}

/* "ip:port" with v4-mapped addresses written as IPv4, so both ends of a
 * connection between an IPv6 and an IPv4 socket name it the same way. */
static void endpoint(const struct sk_addr *a, char *buf, size_t size) {
        struct sk_addr t = *a;
        if (a->u.sa.sa_family == AF_INET6 && IN6_IS_ADDR_V4MAPPED(&a->u.in6.sin6_addr)) {
                memset(&t, 0, sizeof t);
                t.u.in.sin_family = AF_INET;
                t.u.in.sin_port = a->u.in6.sin6_port;
                memcpy(&t.u.in.sin_addr, &a->u.in6.sin6_addr.s6_addr[12], 4);
                t.len = sizeof t.u.in;
        }
        sk_addr_format(&t, buf, size);
}

static void conn_key(char *key, size_t size, const char *prefix, const struct sk_addr *a, const struct sk_addr *b) {
        char x[80], y[80];
        endpoint(a, x, sizeof x);
        endpoint(b, y, sizeof y);
        snprintf(key, size, "%s/%s/%s", prefix, x, y);
}

static bool local_is_lower(const struct sk_state *s) {
        char x[80], y[80];
        endpoint(&s->local, x, sizeof x);
        endpoint(&s->peer, y, sizeof y);
        return strcmp(x, y) < 0;
}

static bool port_bound(const struct sk_addr *a) {
        return a->len && (a->u.sa.sa_family == AF_INET ? a->u.in.sin_port : a->u.in6.sin6_port) != 0;
}

static struct tcp_info tcp_info_of(int fd) {
        struct tcp_info ti;
        socklen_t len = sizeof ti;
        memset(&ti, 0, sizeof ti);
        getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len);
        return ti;
}

int sk_inet_announce(struct rt_fd *f, char *err, size_t errsize) {
        struct sk_state *s = sk_of(f);
        int fd = f->d.fd;
        socklen_t len = sizeof s->local.u;
        s->local.len = getsockname(fd, &s->local.u.sa, &len) == 0 ? len : 0;
        len = sizeof s->peer.u;
        s->peer.len = getpeername(fd, &s->peer.u.sa, &len) == 0 ? len : 0;
        if (!is_tcp(s)) {
                s->role = s->peer.len ? SK_CONNECTED : SK_UNCONNECTED;
                return 0;
        }
        struct tcp_info ti = tcp_info_of(fd);
        switch (ti.tcpi_state) {
        case ST_LISTEN: {
                s->role = SK_LISTENING;
                s->backlog = (int32_t) ti.tcpi_sacked;  /* a listener's sk_max_ack_backlog */
                /* Its clients not accepted yet find it here. */
                char key[PROTO_KEY_MAX + 1], l[80];
                endpoint(&s->local, l, sizeof l);
                snprintf(key, sizeof key, "sktl/%s", l);
                int r = rt_kv_put(key, rt.cfg.upid, strlen(rt.cfg.upid) + 1);
                if (r < 0)
                        snprintf(err, errsize, "fd %d (TCP listener): cannot announce it: %s", fd, strerror(-r));
                return r;
        }
        case ST_SYN_SENT:
        case ST_SYN_RECV:
                s->role = s->peer.len ? SK_PENDING : SK_UNCONNECTED;
                return 0;
        case ST_CLOSE:
                s->role = SK_UNCONNECTED;
                return 0;
        default:
                break;
        }
        if (!s->peer.len) {
                s->role = SK_UNCONNECTED;
                return 0;
        }
        s->role = SK_CONNECTED;
        struct inet_ck *ck = rt_alloc(RT_ARENA_SCRATCH, sizeof *ck);
        if (!ck)
                return -ENOMEM;
        memset(ck, 0, sizeof *ck);
        s->ck = ck;
        struct skt_ann *a = &ck->mine;
        strscpy(a->upid, rt.cfg.upid, sizeof a->upid);
        int inq = 0;
        ioctl(fd, FIONREAD, &inq);
        uint8_t st = ti.tcpi_state;
        if (st == ST_FIN_WAIT1 || st == ST_FIN_WAIT2 || st == ST_CLOSING || st == ST_LAST_ACK) {
                a->flags |= ANN_SHUT_WR;
                s->flags |= SKF_SHUT_WR;
        }
        if (st == ST_CLOSE_WAIT || st == ST_LAST_ACK || st == ST_CLOSING) {
                a->flags |= ANN_PEER_FIN;
                s->flags |= SKF_PEER_SHUT_WR;
        }
        /* A FIN still queued counts one in notsent; a received one one in
         * bytes_received. Neither is data. */
        a->written = ti.tcpi_bytes_sent - ti.tcpi_bytes_retrans + ti.tcpi_notsent_bytes -
                     ((a->flags & ANN_SHUT_WR) && ti.tcpi_notsent_bytes ? 1 : 0);
        a->queued = (uint64_t) inq;
        a->read = ti.tcpi_bytes_received - (uint64_t) inq - ((a->flags & ANN_PEER_FIN) ? 1 : 0);
        int po = -1;
        len = sizeof po;
        if (getsockopt(fd, SOL_SOCKET, SO_PEEK_OFF, &po, &len) == 0 &&
            setsockopt(fd, SOL_SOCKET, SO_PEEK_OFF, &po, sizeof po) == 0)
                a->flags |= ANN_PEEK_OK;
        char key[PROTO_KEY_MAX + 1];
        conn_key(key, sizeof key, "skt", &s->local, &s->peer);
        int r = rt_kv_put(key, a, sizeof *a);
        if (r < 0)
                snprintf(err, errsize, "fd %d (TCP connection): cannot announce it: %s", fd, strerror(-r));
        return r;
}

/* Does this direction's drain have to read (take) the bytes? Both ends
 * compute it from the same announcements. */
static bool must_take(const struct skt_ann *reader, const struct skt_ann *writer) {
        uint64_t need = writer->written - reader->read;
        return need > reader->queued || (need && !(reader->flags & ANN_PEEK_OK));
}

static struct sk_addr any_port(const struct sk_addr *a);

static int kv_get_past_abort(const char *key, void *value, size_t size, size_t *len, bool abandoning) {
        int r = rt_kv_get(key, value, size, len);
        if (r == -ECANCELED && abandoning) {
                /* The abort came first and waits to be read: look past it. */
                struct proto_msg m;
                if (rt_recv(&m, 0) == 0) {
                        r = rt_kv_get(key, value, size, len);
                        rt_unrecv(&m);
                }
        }
        return r;
}

static bool is_loopback(const struct sk_addr *a) {
        if (a->u.sa.sa_family == AF_INET)
                return (ntohl(a->u.in.sin_addr.s_addr) >> 24) == 127;
        return IN6_IS_ADDR_LOOPBACK(&a->u.in6.sin6_addr) ||
               (IN6_IS_ADDR_V4MAPPED(&a->u.in6.sin6_addr) && a->u.in6.sin6_addr.s6_addr[12] == 127);
}

static bool same_ip(const struct sk_addr *a, const struct sk_addr *b) {
        char x[80], y[80];
        struct sk_addr p = any_port(a), q = any_port(b);
        endpoint(&p, x, sizeof x);
        endpoint(&q, y, sizeof y);
        return !strcmp(x, y);
}

/* No process of the computation holds the peer: is it a connection still
 * waiting in the backlog of a listener of ours? Then a restart connects
 * again, unless it carries bytes the server never read (that cannot be
 * kept: the checkpoint fails, a later one works). 1 yes, 0 no, -errno. */
static int waiting_for_accept(struct rt_fd *f, bool abandoning, char *err, size_t errsize) {
        struct sk_state *s = sk_of(f);
        char key[PROTO_KEY_MAX + 1], p[80], upid[PROTO_ID_MAX + 1];
        size_t len;
        endpoint(&s->peer, p, sizeof p);
        snprintf(key, sizeof key, "sktl/%s", p);
        int r = kv_get_past_abort(key, upid, sizeof upid, &len, abandoning);
        if (r == -ENOENT && (is_loopback(&s->peer) || same_ip(&s->peer, &s->local))) {
                /* A listener on every address of this host. */
                uint16_t port = ntohs(s->peer.u.sa.sa_family == AF_INET ? s->peer.u.in.sin_port : s->peer.u.in6.sin6_port);
                snprintf(key, sizeof key, "sktl/0.0.0.0:%u", port);
                r = kv_get_past_abort(key, upid, sizeof upid, &len, abandoning);
                if (r == -ENOENT) {
                        snprintf(key, sizeof key, "sktl/[::]:%u", port);
                        r = kv_get_past_abort(key, upid, sizeof upid, &len, abandoning);
                }
        }
        if (r == -ENOENT)
                return 0;
        if (r < 0) {
                if (r != -ECANCELED)
                        snprintf(err, errsize, "fd %d: cannot look up its TCP peer: %s", f->d.fd, strerror(-r));
                return r;
        }
        if (ck_of(s)->mine.written) {
                snprintf(err, errsize, "fd %d: its connection to %s is not accepted yet and holds %llu bytes the server "
                         "has not read, which cannot be checkpointed; checkpoint again once it is accepted", f->d.fd, p,
                         (unsigned long long) ck_of(s)->mine.written);
                return -EAGAIN;
        }
        s->role = SK_PENDING;
        s->flags |= SKF_PEER_IN;
        return 1;
}

/* The peer's announcement; decide how this connection is drained. */
static int look_up_peer(struct rt_fd *f, bool abandoning, char *err, size_t errsize) {
        struct sk_state *s = sk_of(f);
        struct inet_ck *ck = ck_of(s);
        if (ck->looked_up)
                return 0;
        char key[PROTO_KEY_MAX + 1];
        conn_key(key, sizeof key, "skt", &s->peer, &s->local);
        size_t len;
        int r = kv_get_past_abort(key, &ck->peer, sizeof ck->peer, &len, abandoning);
        if (r < 0 && r != -ENOENT) {
                if (r != -ECANCELED)
                        snprintf(err, errsize, "fd %d: cannot look up its TCP peer: %s", f->d.fd, strerror(-r));
                return r;
        }
        ck->looked_up = true;
        ck->have_peer = r == 0 && len == sizeof ck->peer;
        if (!ck->have_peer) {
                if ((r = waiting_for_accept(f, abandoning, err, errsize)) != 0)
                        return r < 0 ? r : 0;
                s->flags |= SKF_EXTERNAL;
                return 0;
        }
        s->flags |= SKF_PEER_IN;
        s->need = ck->peer.written - ck->mine.read;
        /* One direction to take means both: the exchange runs through the
         * connection, which must hold no byte of the program's in front of
         * it either way. */
        if (must_take(&ck->mine, &ck->peer) || must_take(&ck->peer, &ck->mine))
                s->flags |= SKF_CONSUMED | SKF_EXCHANGE;
        if ((s->flags & SKF_EXCHANGE) && ((ck->mine.flags | ck->peer.flags) & ANN_SHUT_WR)) {
                /* Both ends see it so and take nothing, even if the abort
                 * that follows makes them finish draining. */
                s->flags &= ~(SKF_CONSUMED | SKF_EXCHANGE);
                char l[80], p[80];
                endpoint(&s->local, l, sizeof l);
                endpoint(&s->peer, p, sizeof p);
                snprintf(err, errsize, "fd %d: TCP connection %s -> %s is half closed with bytes still in flight "
                         "(%llu and %llu), which cannot be checkpointed; checkpoint again once they are read", f->d.fd,
                         l, p, (unsigned long long) (ck->peer.written - ck->mine.read),
                         (unsigned long long) (ck->mine.written - ck->peer.read));
                return -EAGAIN;
        }
        return 0;
}

/* Read out what the peers wrote and we have not read, on every connection
 * that must be, at once (peers wait on each other). */
static int take_all(struct rt_fd **fs, uint32_t n, char *err, size_t errsize) {
        struct pollfd *p = rt_alloc(RT_ARENA_SCRATCH, (n + 1) * sizeof *p);
        if (!p)
                return -ENOMEM;
        uint64_t last = now_usec(CLOCK_MONOTONIC);
        for (;;) {
                uint32_t open = 0;
                bool progress = false;
                for (uint32_t i = 0; i < n; i++) {
                        struct rt_fd *f = fs[i];
                        struct sk_state *s = sk_of(f);
                        while (s->drained < s->need) {
                                ssize_t k = recv(f->d.fd, f->data + s->drained, s->need - s->drained, MSG_DONTWAIT);
                                if (k < 0 && errno == EINTR)
                                        continue;
                                if (k < 0 && errno == EAGAIN)
                                        break;
                                if (k <= 0) {
                                        snprintf(err, errsize, "fd %d: its TCP connection ended while %llu of its bytes "
                                                 "in flight were read (%s)", f->d.fd,
                                                 (unsigned long long) (s->need - s->drained),
                                                 k == 0 ? "end of file" : strerror(errno));
                                        return k == 0 ? -ECONNRESET : -errno;
                                }
                                s->drained += (uint64_t) k;
                                progress = true;
                        }
                        if (s->drained < s->need)
                                p[open++] = (struct pollfd) { f->d.fd, POLLIN, 0 };
                }
                if (!open)
                        return 0;
                uint64_t now = now_usec(CLOCK_MONOTONIC);
                if (progress)
                        last = now;
                else if (now - last > WAIT_PEER_MS * 1000ULL) {
                        snprintf(err, errsize, "fd %d: the bytes its TCP peer wrote did not arrive within %d s",
                                 p[0].fd, WAIT_PEER_MS / 1000);
                        return -ETIMEDOUT;
                }
                if (poll(p, open, 100) < 0 && errno != EINTR)
                        return -errno;
        }
}

static bool tcp_connection(const struct rt_fd *f) {
        const struct sk_state *s = sk_of(f);
        return f->ops == &rt_fd_socket_ops && s && s->family != AF_UNIX && is_tcp(s) && s->role == SK_CONNECTED &&
               ck_of(s);
}

/* Drain every TCP connection this process leads; take (read out) those
 * that must be, all at once. force: also those already marked (abandon). */
static int drain_all(bool abandoning, char *err, size_t errsize) {
        struct rt_fd **take = rt_alloc(RT_ARENA_SCRATCH, (rt_cap->n_fds + 1) * sizeof *take);
        if (!take)
                return -ENOMEM;
        uint32_t n = 0;
        for (uint32_t i = 0; i < rt_cap->n_fds; i++) {
                struct rt_fd *f = &rt_cap->fds[i];
                if (!f->leader || !tcp_connection(f))
                        continue;
                struct sk_state *s = sk_of(f);
                if (s->drain_started)
                        continue;
                int r = look_up_peer(f, abandoning, err, errsize);
                if (r < 0)
                        return r;
                s->drain_started = true;
                if (s->flags & SKF_CONSUMED) {
                        f->data = rt_alloc(RT_ARENA_STATE, s->need + 1);
                        if (!f->data) {
                                snprintf(err, errsize, "fd %d: no memory for its %llu bytes in flight", f->d.fd,
                                         (unsigned long long) s->need);
                                return -ENOMEM;
                        }
                        f->data_len = s->need;
                        take[n++] = f;
                } else if (!abandoning) {
                        /* Peek: the queue holds them all (or none is ours to keep). */
                        if ((r = sk_peek_queue(f, false, err, errsize)) < 0)
                                return r;
                        if ((s->flags & SKF_PEER_IN) && f->data_len != s->need)
                                rt_warn("fd %d: expected %llu bytes in flight on its TCP connection, found %zu",
                                        f->d.fd, (unsigned long long) s->need, f->data_len);
                }
        }
        return take_all(take, n, err, errsize);
}

int sk_inet_drain_all(char *err, size_t errsize) {
        return drain_all(false, err, errsize);
}

int sk_inet_save(struct rt_fd *f, char *err, size_t errsize) {
        struct sk_state *s = sk_of(f);
        if (!is_tcp(s) || s->role != SK_CONNECTED)
                return 0;
        if (s->flags & SKF_EXTERNAL) {
                /* Already closed by its peer: nothing is lost, no warning. */
                if (s->flags & SKF_PEER_SHUT_WR)
                        s->flags &= ~SKF_EXTERNAL;
                s->role = SK_CLOSED;
                return 0;
        }
        if (local_is_lower(s))
                s->flags |= SKF_LISTENS;
        return 0;
}

static int exchange_all(const char *when, char *err, size_t errsize) {
        for (uint32_t i = 0; i < rt_cap->n_fds; i++) {
                struct rt_fd *f = &rt_cap->fds[i];
                if (!f->leader || !tcp_connection(f))
                        continue;
                struct sk_state *s = sk_of(f);
                if (s->refilled || !(s->flags & SKF_EXCHANGE))
                        continue;
                s->refilled = true;
                bool mine = s->flags & SKF_CONSUMED;
                if (mine && s->drained < s->need) {
                        /* The drain failed part-way (an abandoned checkpoint):
                         * what we hold is not the stream's next bytes, and
                         * handing it over would give both programs misaligned
                         * data. Break the connection instead, as a network
                         * failure would. */
                        rt_error("fd %d: only %llu of the %llu bytes in flight on its TCP connection were read "
                                 "before the checkpoint was abandoned: the connection is closed",
                                 f->d.fd, (unsigned long long) s->drained, (unsigned long long) s->need);
                        shutdown(f->d.fd, SHUT_RDWR);
                        continue;
                }
                int r = sk_exchange_add(f, mine ? f->data : NULL, mine ? f->data_len : 0, false);
                if (r < 0)
                        return r;
        }
        return sk_exchange_run(when, err, errsize);
}

int sk_inet_refill_all(char *err, size_t errsize) {
        return exchange_all("after the checkpoint", err, errsize);
}

void sk_inet_abandon_all(void) {
        /* A peer may have read its bytes out, and waits for ours: finish the
         * drain here too, then exchange. */
        char err[512] = "";
        int r = drain_all(true, err, sizeof err);
        if (r < 0)
                rt_error("after an abandoned checkpoint: %s", err);
        err[0] = 0;
        if (exchange_all("after the abandoned checkpoint", err, sizeof err) < 0)
                rt_error("after an abandoned checkpoint: %s", err);
}

/* ---- restart --------------------------------------------------------------- */

static int bind_again(struct rt_fd *f, int fd, const struct sk_addr *a, char *err, size_t errsize) {
        int one = 1, was = 0;
        socklen_t len = sizeof was;
        getsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &was, &len);
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        int r = bind(fd, &a->u.sa, a->len) < 0 ? -errno : 0;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &was, sizeof was);
        if (r < 0) {
                char l[80];
                endpoint(a, l, sizeof l);
                snprintf(err, errsize, "fd %d: cannot bind to %s again: %s", f->d.fd, l, strerror(-r));
        }
        return r;
}

/* The same address with port 0. */
static struct sk_addr any_port(const struct sk_addr *a) {
        struct sk_addr t = *a;
        if (t.u.sa.sa_family == AF_INET)
                t.u.in.sin_port = 0;
        else
                t.u.in6.sin6_port = 0;
        return t;
}

int sk_inet_restore(struct rt_fd *f, char *err, size_t errsize) {
        struct sk_state *s = sk_of(f);
        int r;
        if (s->role == SK_CLOSED) {
                sk_warn_external(f);
                return sk_make_closed(f, err, errsize);
        }
        if (is_tcp(s) && (s->role == SK_CONNECTED || s->role == SK_PENDING))
                return 1;       /* RST_CONNECT */
        int fd = sk_new(s, 0);
        if (fd < 0) {
                snprintf(err, errsize, "fd %d: cannot create a socket: %s", f->d.fd, strerror(-fd));
                return fd;
        }
        if (port_bound(&s->local) && (r = bind_again(f, fd, &s->local, err, errsize)) < 0) {
                if (is_tcp(s))
                        goto fail;
                rt_warn("%s; it gets another port", err);       /* UDP: often an automatic port */
                err[0] = 0;
        }
        if (s->role == SK_LISTENING && listen(fd, s->backlog > 0 ? s->backlog : 128) < 0) {
                r = -errno;
                snprintf(err, errsize, "fd %d: cannot listen again: %s", f->d.fd, strerror(errno));
                goto fail;
        }
        if (!is_tcp(s) && s->role == SK_CONNECTED && connect(fd, &s->peer.u.sa, s->peer.len) < 0) {
                char p[80];
                endpoint(&s->peer, p, sizeof p);
                rt_warn("fd %d: cannot connect the UDP socket to %s again (%s): restored unconnected", f->d.fd, p,
                        strerror(errno));
        }
        return sk_place(f, fd, err, errsize);
fail:
        raw_syscall1(SYS_close, fd);
        return r;
}

struct token {
        uint64_t a, b;
};

static struct token token_of(const char *key) {
        uint64_t h = 0xcbf29ce484222325ULL, g = 0x84222325cbf29ce4ULL;
        for (const char *p = rt.cfg.comp_id; *p; p++)
                h = (h ^ (uint8_t) *p) * 0x100000001b3ULL;
        for (const char *p = key; *p; p++) {
                h = (h ^ (uint8_t) *p) * 0x100000001b3ULL;
                g = (g ^ (uint8_t) *p) * 0x100000001b3ULL;
        }
        return (struct token) { h, g };
}

static void rst_key(char *key, size_t size, const struct sk_state *s) {
        bool lower = local_is_lower(s);
        conn_key(key, size, "sktr", lower ? &s->local : &s->peer, lower ? &s->peer : &s->local);
}

/* The listening end: a temporary listener on its original address. */
static int listen_for_peer(struct rt_fd *f, int *lfd, char *err, size_t errsize) {
        struct sk_state *s = sk_of(f);
        struct sk_state tmp = *s;
        tmp.n_opts = 0;                 /* only the buffer sizes: the accepted socket inherits them */
        int fd = sk_new(&tmp, SOCK_NONBLOCK);
        if (fd < 0) {
                snprintf(err, errsize, "fd %d: cannot create a socket: %s", f->d.fd, strerror(-fd));
                return fd;
        }
        struct sk_addr a = any_port(&s->local);
        socklen_t len = sizeof a.u;
        int r;
        if (bind(fd, &a.u.sa, a.len) < 0 || listen(fd, 4) < 0 || getsockname(fd, &a.u.sa, &len) < 0) {
                r = -errno;
                char l[80];
                endpoint(&s->local, l, sizeof l);
                snprintf(err, errsize, "fd %d: cannot listen on %s to reconnect its TCP peer: %s", f->d.fd, l,
                         strerror(errno));
                raw_syscall1(SYS_close, fd);
                return r;
        }
        a.len = len;
        char key[PROTO_KEY_MAX + 1];
        rst_key(key, sizeof key, s);
        if ((r = rt_kv_put(key, &a, sizeof a)) < 0) {
                snprintf(err, errsize, "fd %d: cannot publish where its TCP peer reconnects: %s", f->d.fd, strerror(-r));
                raw_syscall1(SYS_close, fd);
                return r;
        }
        *lfd = rt_fd_move_private(fd);
        rt_fd_set_private(*lfd, true);
        return 0;
}

static int connect_to_peer(struct rt_fd *f, char *err, size_t errsize) {
        struct sk_state *s = sk_of(f);
        char key[PROTO_KEY_MAX + 1], p[80];
        rst_key(key, sizeof key, s);
        endpoint(&s->peer, p, sizeof p);
        struct sk_addr to;
        size_t len = 0;
        uint64_t t0 = now_usec(CLOCK_MONOTONIC);
        int r;
        for (;;) {
                r = rt_kv_get(key, &to, sizeof to, &len);
                if (r == 0 && len == sizeof to && to.len <= sizeof to.u)
                        break;
                if (r < 0 && r != -ENOENT) {
                        snprintf(err, errsize, "fd %d: cannot look up where to reconnect to %s: %s", f->d.fd, p,
                                 strerror(-r));
                        return r;
                }
                if (now_usec(CLOCK_MONOTONIC) - t0 > WAIT_PEER_MS * 1000ULL) {
                        snprintf(err, errsize, "fd %d: its TCP peer %s did not say where to reconnect within %d s",
                                 f->d.fd, p, WAIT_PEER_MS / 1000);
                        return -ETIMEDOUT;
                }
                struct timespec ts = { 0, 5 * 1000 * 1000 };
                nanosleep(&ts, NULL);
        }
        struct sk_state tmp = *s;
        tmp.n_opts = 0;
        int fd = sk_new(&tmp, SOCK_NONBLOCK);
        if (fd < 0) {
                snprintf(err, errsize, "fd %d: cannot create a socket: %s", f->d.fd, strerror(-fd));
                return fd;
        }
        struct sk_addr from = any_port(&s->local);
        bind(fd, &from.u.sa, from.len);         /* the same interface if it is still there */
        if (connect(fd, &to.u.sa, to.len) < 0 && errno != EINPROGRESS) {
                r = -errno;
                goto fail;
        }
        if ((r = sk_wait(fd, POLLOUT, WAIT_PEER_MS)) <= 0) {
                r = r ? r : -ETIMEDOUT;
                goto fail;
        }
        int e = 0;
        socklen_t el = sizeof e;
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &el);
        if (e) {
                r = -e;
                goto fail;
        }
        struct token t = token_of(key);
        if (send(fd, &t, sizeof t, MSG_NOSIGNAL) != (ssize_t) sizeof t) {
                r = -EIO;
                goto fail;
        }
        return sk_place(f, fd, err, errsize);
fail:
        snprintf(err, errsize, "fd %d: cannot reconnect to its TCP peer %s: %s", f->d.fd, p, strerror(-r));
        raw_syscall1(SYS_close, fd);
        return r;
}

static int accept_peer(struct rt_fd *f, int lfd, char *err, size_t errsize) {
        struct sk_state *s = sk_of(f);
        char key[PROTO_KEY_MAX + 1], p[80];
        rst_key(key, sizeof key, s);
        endpoint(&s->peer, p, sizeof p);
        struct token want = token_of(key);
        uint64_t t0 = now_usec(CLOCK_MONOTONIC);
        for (;;) {
                int left = WAIT_PEER_MS - (int) ((now_usec(CLOCK_MONOTONIC) - t0) / 1000);
                if (left <= 0 || sk_wait(lfd, POLLIN, left) <= 0)
                        break;
                int a = accept4(lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
                if (a < 0)
                        continue;
                struct token t;
                size_t got = 0;
                while (got < sizeof t && sk_wait(a, POLLIN, 10000) > 0) {
                        ssize_t k = recv(a, (uint8_t *) &t + got, sizeof t - got, MSG_DONTWAIT);
                        if (k <= 0 && !(k < 0 && (errno == EAGAIN || errno == EINTR)))
                                break;
                        if (k > 0)
                                got += (size_t) k;
                }
                if (got == sizeof t && !memcmp(&t, &want, sizeof t)) {
                        rt_fd_set_private(lfd, false);
                        raw_syscall1(SYS_close, lfd);
                        raw_syscall3(SYS_fcntl, a, F_SETFL, 0);
                        return sk_place(f, a, err, errsize);
                }
                raw_syscall1(SYS_close, a);     /* not our peer */
        }
        rt_fd_set_private(lfd, false);
        raw_syscall1(SYS_close, lfd);
        snprintf(err, errsize, "fd %d: its TCP peer %s did not reconnect within %d s", f->d.fd, p, WAIT_PEER_MS / 1000);
        return -ETIMEDOUT;
}

static bool rst_tcp(const struct rt_fd *f) {
        const struct sk_state *s = sk_of(f);
        return f->ops == &rt_fd_socket_ops && f->d.share != IMG_FD_FOLLOWER && s->family != AF_UNIX && is_tcp(s) &&
               (s->role == SK_CONNECTED || s->role == SK_PENDING);
}

int sk_inet_connect_all(char *err, size_t errsize) {
        int *lfds = rt_alloc(RT_ARENA_SCRATCH, (rt_cap->n_fds + 1) * sizeof *lfds);
        if (!lfds)
                return -ENOMEM;
        int r;
        /* Every listening end first, so no process waits before it has
         * published its own. */
        for (uint32_t i = 0; i < rt_cap->n_fds; i++) {
                struct rt_fd *f = &rt_cap->fds[i];
                lfds[i] = -1;
                if (rst_tcp(f) && sk_of(f)->role == SK_CONNECTED && (sk_of(f)->flags & SKF_LISTENS) &&
                    (r = listen_for_peer(f, &lfds[i], err, errsize)) < 0)
                        return r;
        }
        for (uint32_t i = 0; i < rt_cap->n_fds; i++) {
                struct rt_fd *f = &rt_cap->fds[i];
                struct sk_state *s = sk_of(f);
                if (!rst_tcp(f) || (s->flags & SKF_LISTENS))
                        continue;
                if (s->role == SK_PENDING) {
                        /* A connect() under way: start it again. */
                        int fd = sk_new(s, SOCK_NONBLOCK);
                        if (fd < 0)
                                return fd;
                        if (connect(fd, &s->peer.u.sa, s->peer.len) < 0 && errno != EINPROGRESS)
                                rt_warn("fd %d: connecting again failed: %s", f->d.fd, strerror(errno));
                        else if (s->flags & SKF_PEER_IN)
                                sk_wait(fd, POLLOUT, WAIT_PEER_MS);     /* it was connected: be so again */
                        if ((r = sk_place(f, fd, err, errsize)) < 0)
                                return r;
                        continue;
                }
                if ((r = connect_to_peer(f, err, errsize)) < 0)
                        return r;
        }
        for (uint32_t i = 0; i < rt_cap->n_fds; i++)
                if (lfds[i] >= 0 && (r = accept_peer(&rt_cap->fds[i], lfds[i], err, errsize)) < 0)
                        return r;
        return 0;
}

int sk_inet_rst_refill(struct rt_fd *f, char *err, size_t errsize) {
        struct sk_state *s = sk_of(f);
        if (!is_tcp(s) || s->role != SK_CONNECTED || !(s->flags & SKF_PEER_IN))
                return 0;
        int r = sk_exchange_add(f, f->data, f->data_len, false);
        if (r < 0)
                snprintf(err, errsize, "fd %d: out of memory", f->d.fd);
        return r;
}
