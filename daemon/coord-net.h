/* The coordinator's sockets: listeners (Unix, TCP, socket activation) and
 * connections with non-blocking, capped input and output buffers on
 * sd-event. A connection parses frames with proto_frame_length/proto_decode
 * and hands whole messages to its owner; it never interprets them. */
#pragma once

#include <systemd/sd-event.h>

#include "coord-state.h"

#define COORD_CONN_OUT_MAX   (8u * 1024u * 1024u)   /* queued output per connection */
#define COORD_LINGER_USEC    (1000u * 1000u)        /* after a REJECT: wait this long for the peer to close */
#define COORD_MAX_LISTENERS  8

struct coord_listener {
        int fd;
        bool tcp;
        bool loopback;          /* TCP bound to a loopback address */
        uint16_t port;
        sd_event_source *src;
};

/* Create the Unix listener at path: the directory is created 0700 and must
 * be ours and not group/world-writable; a stale socket is replaced; a live
 * coordinator on it is -EADDRINUSE. The socket is 0600. */
int coord_listen_unix(const char *path, int *ret_fd, char *err, size_t errsize);

/* TCP listener on bind_addr ("" = 127.0.0.1) and port (0 = any). Returns
 * -EADDRINUSE when the port is taken. */
int coord_listen_tcp(const char *bind_addr, int port, struct coord_listener *l, char *err, size_t errsize);

/* Listeners from systemd socket activation: names "coord" (Unix) and
 * "coord-tcp" (TCP), others probed. Returns the number found (0 = not
 * socket-activated) or -errno. */
int coord_listen_activated(struct coord_listener *ls, size_t max, char *err, size_t errsize);

struct coord_conn;

struct coord_conn_ops {
        /* One whole, valid message. */
        void (*message)(struct coord_conn *c, const struct proto_msg *m);
        /* Input that is not a valid message (err from the decoder, what
         * describes it); the connection reads nothing more until closed. */
        void (*bad_input)(struct coord_conn *c, int err, const char *what);
        /* The connection is gone (EOF, error, output overflow) and is about to be freed. */
        void (*closed)(struct coord_conn *c, const char *why);
};

struct coord_conn {
        int fd;
        uint64_t token;
        void *userdata;
        const struct coord_conn_ops *ops;
        sd_event *event;
        sd_event_source *io, *linger, *reap, *hello_timer;
        bool closing;           /* a final message is queued: discard input, close after flush */
        bool shut;              /* SHUT_WR done */
        bool dead;              /* reaping scheduled */
        char dead_why[128];
        uint8_t *in;
        size_t in_len, in_cap;
        uint8_t *out;
        size_t out_off, out_len, out_cap;
        /* Owner's data. */
        int kind;
        bool tcp, loopback;
        struct coord_peer peer;
};

int coord_conn_new(sd_event *e, int fd, const struct coord_conn_ops *ops, void *userdata, struct coord_conn **ret);
/* Free now (no callback). */
void coord_conn_free(struct coord_conn *c);

/* Queue a message. -ENOBUFS when the peer does not read (the connection is
 * then being reaped: closed() follows from the event loop). */
int coord_conn_send(struct coord_conn *c, const struct proto_msg *m);
/* Stop reading messages, send what is queued, then close. */
void coord_conn_close_soon(struct coord_conn *c);
/* Drop the connection from the event loop soon: closed(why) follows. */
void coord_conn_abort(struct coord_conn *c, const char *why);
/* Best-effort immediate write of queued output (before exit). */
void coord_conn_flush_now(struct coord_conn *c);
