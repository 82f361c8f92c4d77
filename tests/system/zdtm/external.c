/* external: connections to servers outside the computation.
 *
 *   external TCP-PORT UNIX-PATH
 *
 * The driver runs two echo servers of its own (not under dmtcp): one on
 * 127.0.0.1:TCP-PORT, one on the Unix stream socket UNIX-PATH. Every step
 * the program sends line n on each connection and reads it back. A restart
 * cannot bring such a connection back: it must come back closed, as after
 * a network failure: the program reads what was queued for it (an echo
 * may be), then end of file or ECONNRESET, never anything else. It then
 * connects again and goes on, and counts the closings in the file
 * "closings" (one line per connection kind) for the driver to compare with
 * the number of restarts. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "zdtmtst.h"

struct conn {
        const char *what;
        int fd;
        uint64_t closings;
        char buf[256];
        size_t have;
};

static int port;
static const char *unix_path;

static int dial(const struct conn *c) {
        int fd;
        if (c->what[0] == 'T') {
                struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t) port) };
                a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
                fd = socket(AF_INET, SOCK_STREAM, 0);
                if (fd < 0 || connect(fd, (struct sockaddr *) &a, sizeof a) < 0)
                        fail_errno("connect to the TCP server on port %d", port);
        } else {
                struct sockaddr_un a = { .sun_family = AF_UNIX };
                snprintf(a.sun_path, sizeof a.sun_path, "%s", unix_path);
                fd = socket(AF_UNIX, SOCK_STREAM, 0);
                if (fd < 0 || connect(fd, (struct sockaddr *) &a, sizeof a) < 0)
                        fail_errno("connect to the Unix server at %s", unix_path);
        }
        return fd;
}

/* Read one line into line. 1: a line; 0: the connection closed (end of
 * file or reset) with nothing pending. */
static int read_line(struct conn *c, char *line, size_t size) {
        for (;;) {
                char *nl = memchr(c->buf, '\n', c->have);
                if (nl) {
                        size_t n = (size_t) (nl - c->buf) + 1;
                        check(n < size, "%s: a line of %zu bytes", c->what, n);
                        memcpy(line, c->buf, n);
                        line[n] = 0;
                        memmove(c->buf, c->buf + n, c->have - n);
                        c->have -= n;
                        return 1;
                }
                ssize_t k = recv(c->fd, c->buf + c->have, sizeof c->buf - c->have, 0);
                if (k < 0 && errno == EINTR)
                        continue;
                if (k == 0 || (k < 0 && errno == ECONNRESET)) {
                        check(c->have == 0, "%s: the connection closed in the middle of a line (%zu bytes)", c->what,
                              c->have);
                        return 0;
                }
                if (k < 0)
                        fail_errno("%s: recv", c->what);
                c->have += (size_t) k;
                check(c->have < sizeof c->buf, "%s: no end of line", c->what);
        }
}

static void exchange(struct conn *c, uint64_t n) {
        char out[64], line[256];
        int len = snprintf(out, sizeof out, "%s %llu\n", c->what, (unsigned long long) n);
        for (int attempt = 0;; attempt++) {
                check(attempt < 2, "%s: the new connection closed at once", c->what);
                ssize_t k = send(c->fd, out, (size_t) len, MSG_NOSIGNAL);
                if (k == len && read_line(c, line, sizeof line)) {
                        check(!strcmp(line, out), "%s: sent %.*s, got back %s", c->what, len - 1, out, line);
                        return;
                }
                check(k == len || errno == EPIPE || errno == ECONNRESET, "%s: send: %s", c->what, strerror(errno));
                /* Closed, as after a network failure: call again. */
                close(c->fd);
                c->closings++;
                c->have = 0;
                c->fd = dial(c);
        }
}

int main(int argc, char **argv) {
        test_init(argc, argv);
        if (argc != 3)
                fail("usage: external TCP-PORT UNIX-PATH");
        port = atoi(argv[1]);
        unix_path = argv[2];
        struct conn conns[2] = { { .what = "TCP" }, { .what = "Unix" } };
        for (int i = 0; i < 2; i++)
                conns[i].fd = dial(&conns[i]);
        test_ready();
        for (uint64_t n = 0; !test_verify_requested(); n++) {
                for (int i = 0; i < 2; i++)
                        exchange(&conns[i], n);
                test_heartbeat();
                test_msleep(2);
        }
        char text[128];
        snprintf(text, sizeof text, "TCP %llu\nUnix %llu\n", (unsigned long long) conns[0].closings,
                 (unsigned long long) conns[1].closings);
        test_write_file("closings", text);
        pass();
}
