/* Sockets: what fd-sock.c (common parts, the ops table, the exchange of
 * drained data between the two ends of a connection), fd-sock-unix.c and
 * fd-sock-inet.c share. Only these three files include it. */
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "fd.h"

struct sk_addr {
        uint32_t len;                   /* 0: none */
        union {
                struct sockaddr sa;
                struct sockaddr_un un;
                struct sockaddr_in in;
                struct sockaddr_in6 in6;
                struct sockaddr_storage ss;
        } u;
};

enum sk_role {
        SK_UNCONNECTED = 1,             /* maybe bound; a datagram socket without a default peer */
        SK_LISTENING,
        SK_CONNECTED,                   /* a connection, or a datagram socket's default peer */
        SK_PENDING,                     /* connected to a listener of the computation, not accepted yet */
        SK_CLOSED,                      /* restored closed: its queued data, then end of file */
};

enum sk_flag {
        SKF_NAMED = 1u << 0,            /* bound to a name of its own: bound again */
        SKF_PEER_NAMED = 1u << 1,       /* its peer has a name: reconnect by name */
        SKF_PEER_IN = 1u << 2,          /* the peer is held in the computation */
        SKF_PAIR = 1u << 3,             /* Unix: recreated with socketpair(), one end handed over */
        SKF_CREATOR = 1u << 4,          /* ... by us */
        SKF_SHUT_RD = 1u << 5,          /* shutdown(SHUT_RD) by us */
        SKF_SHUT_WR = 1u << 6,          /* shutdown(SHUT_WR) by us */
        SKF_RECORDS = 1u << 7,          /* f->data holds records (datagrams, seqpackets) */
        SKF_CONSUMED = 1u << 8,         /* TCP: the drain read its bytes out */
        SKF_EXCHANGE = 1u << 9,         /* TCP: the ends exchange drained bytes after a checkpoint */
        SKF_LISTENS = 1u << 10,         /* TCP restart: we listen, the peer connects */
        SKF_PEER_SHUT_WR = 1u << 11,    /* the peer will send no more (we saw its FIN) */
        SKF_EXTERNAL = 1u << 12,        /* the peer is outside the computation */
};

#define SK_MAX_OPTS 32

struct sk_opt {
        int32_t level, name;
        uint32_t len;
        uint8_t val[16];
};

/* Saved with the image (state arena), one per socket description. */
struct sk_state {
        int32_t family, type, protocol;
        uint32_t role, flags;
        struct sk_addr local, peer;
        uint64_t ino, peer_ino;         /* Unix: inodes (sock_diag) */
        int32_t backlog;
        int32_t sndbuf, rcvbuf;         /* as getsockopt reports them (doubled) */
        uint32_t n_opts;
        struct sk_opt opts[SK_MAX_OPTS];
        /* This checkpoint only. */
        uint64_t need;                  /* TCP: bytes the peer wrote that we have not read */
        uint64_t drained;               /* TCP: of which the drain has read */
        void *ck;                       /* the family's scratch for this checkpoint */
        bool drain_started, refilled;
};

static inline struct sk_state *sk_of(const struct rt_fd *f) {
        return f->priv;
}

/* fd-sock.c */
const char *sk_family_name(int family, int type, int protocol, char *buf, size_t size);
void sk_addr_format(const struct sk_addr *a, char *buf, size_t size);
int sk_new(const struct sk_state *s, int extra_flags);     /* socket() + options, CLOEXEC; -errno */
void sk_apply_opts(const struct sk_state *s, int fd);
void sk_set_buffers(int fd, int sndbuf, int rcvbuf);
int sk_place(struct rt_fd *f, int newfd, char *err, size_t errsize);    /* options, then at f->d.fd */
int sk_wait(int fd, short events, int timeout_ms);               /* poll one fd: >0, 0 timeout, -errno */
/* Read the receive queue without taking it (SO_PEEK_OFF). Stream: bytes;
 * records: [u32 length][bytes]... Into f->data. -EOPNOTSUPP when peeking
 * at an offset is not supported. SCM_RIGHTS in the queue: -EBADMSG. */
int sk_peek_queue(struct rt_fd *f, bool records, char *err, size_t errsize);
/* Write records/bytes of f->data into fd (a socket whose peer is ours). */
int sk_push_data(int fd, const uint8_t *data, size_t len, bool records, const struct sk_addr *to);
/* A closed socket of the kind of s: data readable, then end of file. */
int sk_make_closed(struct rt_fd *f, char *err, size_t errsize);
void sk_warn_external(const struct rt_fd *f);

/* The exchange of drained bytes between the two ends of connections
 * (fd-sock.c): each end sends what it holds for itself, receives the
 * peer's and writes it back, so it lands in the peer's receive queue. */
struct sk_xfer;
int sk_exchange_add(struct rt_fd *f, const uint8_t *mine, size_t mine_len, bool records);
int sk_exchange_run(const char *when, char *err, size_t errsize);

/* fd-sock-unix.c */
int sk_unix_announce(struct rt_fd *f, char *err, size_t errsize);
int sk_unix_publish(struct rt_fd *f, char *err, size_t errsize);
int sk_unix_drain(struct rt_fd *f, char *err, size_t errsize);
int sk_unix_save(struct rt_fd *f, char *err, size_t errsize);
int sk_unix_restore(struct rt_fd *f, char *err, size_t errsize);
int sk_unix_connect(struct rt_fd *f, char *err, size_t errsize);
int sk_unix_rst_refill(struct rt_fd *f, char *err, size_t errsize);

/* fd-sock-inet.c */
int sk_inet_announce(struct rt_fd *f, char *err, size_t errsize);
int sk_inet_drain_all(char *err, size_t errsize);
int sk_inet_save(struct rt_fd *f, char *err, size_t errsize);
int sk_inet_refill_all(char *err, size_t errsize);
void sk_inet_abandon_all(void);
int sk_inet_restore(struct rt_fd *f, char *err, size_t errsize);
int sk_inet_connect_all(char *err, size_t errsize);
int sk_inet_rst_refill(struct rt_fd *f, char *err, size_t errsize);
