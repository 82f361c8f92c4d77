/* tcp: a TCP connection over loopback between a parent and its child, with
 * megabytes in flight both ways at every checkpoint.
 *
 *   tcp [-6]
 *   tcp server ADDR            the parent's part alone, listening on ADDR
 *                              (its port goes to the file "port")
 *   tcp client ADDR PORT       the child's part alone (it passes at the end)
 *   tcp --abort                as the first, with a Unix socket pair holding
 *                              a descriptor in flight at fds 60/61 until the
 *                              driver asks (file "take-fd"): a checkpoint
 *                              fails after the TCP bytes were drained, and
 *                              must give them all back (zdtm.py tcp_abort)
 *
 * The last two put the ends on two hosts (network namespaces) of a
 * computation (zdtm.py tcp_hosts).
 *
 * The parent listens on 127.0.0.1 (or ::1) and keeps the listener open;
 * the child connects. Their buffers are set (1 MiB to send, 2 MiB to
 * receive), so a few megabytes are in flight, not tens. Each writes a stream of bytes derived from their
 * position as fast as the connection takes them (non-blocking), and reads
 * the other's slowly, so both send queues and both receive queues are full
 * when a checkpoint comes. Every byte read is checked. The parent's end has
 * TCP_NODELAY, SO_KEEPALIVE, a keepalive interval and O_NONBLOCK: all
 * must survive, and the buffer sizes.
 *
 * At verification the parent stops writing and shuts down its writing side;
 * the child reads everything up to that end of file, shuts down its own and
 * exits; the parent reads everything up to the child's end of file. A new
 * connection to the listener must still work.
 *
 * The parent also keeps a connection of its own to its listener that it
 * accepts only at verification (it waits in the backlog at every
 * checkpoint): it must be there, and carry a byte. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "zdtmtst.h"

#define READ_PER_STEP (48 * 1024)
#define CHILD_RCVBUF (2 * 1024 * 1024)
#define SNDBUF (1024 * 1024)

static unsigned char byte_at(uint64_t seed, uint64_t pos) {
        return (unsigned char) (mix64(seed * 1000003 + pos / 8) >> (8 * (pos % 8)));
}

struct stream {
        int fd;
        uint64_t seed_out, seed_in;
        uint64_t written, read;
        const char *who;
};

static void fill(unsigned char *buf, size_t len, uint64_t seed, uint64_t pos) {
        for (size_t i = 0; i < len; i++)
                buf[i] = byte_at(seed, pos + i);
}

/* Write as much as the connection takes now. */
static void write_some(struct stream *s) {
        static unsigned char buf[256 * 1024];
        for (int i = 0; i < 64; i++) {
                fill(buf, sizeof buf, s->seed_out, s->written);
                ssize_t k = send(s->fd, buf, sizeof buf, MSG_DONTWAIT | MSG_NOSIGNAL);
                if (k < 0 && (errno == EAGAIN || errno == EINTR))
                        return;
                if (k < 0)
                        fail_errno("%s: send", s->who);
                s->written += (uint64_t) k;
        }
}

/* Read up to max bytes (blocking until some come if wait). 0 at end of file. */
static ssize_t read_some(struct stream *s, size_t max, bool wait) {
        static unsigned char buf[256 * 1024];
        for (;;) {
                ssize_t k = recv(s->fd, buf, max < sizeof buf ? max : sizeof buf, wait ? 0 : MSG_DONTWAIT);
                if (k < 0 && errno == EINTR)
                        continue;
                if (k < 0 && errno == EAGAIN) {
                        if (!wait)
                                return -1;
                        struct pollfd p = { s->fd, POLLIN, 0 };
                        poll(&p, 1, 1000);
                        continue;
                }
                if (k < 0)
                        fail_errno("%s: recv", s->who);
                for (ssize_t i = 0; i < k; i++, s->read++)
                        check(buf[i] == byte_at(s->seed_in, s->read), "%s: byte %llu is %u, expected %u", s->who,
                              (unsigned long long) s->read, buf[i], byte_at(s->seed_in, s->read));
                return k;
        }
}

static int getint(int fd, int level, int name) {
        int v = -1;
        socklen_t len = sizeof v;
        if (getsockopt(fd, level, name, &v, &len) < 0)
                fail_errno("getsockopt %d/%d", level, name);
        return v;
}

static bool client_mode;

static _Noreturn void child(int family, const struct sockaddr *addr, socklen_t len) {
        int fd = socket(family, SOCK_STREAM, 0);
        int rcv = CHILD_RCVBUF / 2, snd = SNDBUF / 2;
        if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcv, sizeof rcv) < 0 ||
            setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &snd, sizeof snd) < 0 || connect(fd, addr, len) < 0)
                fail_errno("child: connect");
        struct stream s = { fd, 2, 1, 0, 0, "child" };
        if (client_mode)
                test_ready();
        for (;;) {
                write_some(&s);
                ssize_t k = read_some(&s, READ_PER_STEP, false);
                if (k == 0)
                        break;  /* the parent is verifying */
                if (client_mode)
                        test_heartbeat();
                test_msleep(2);
        }
        check(getint(fd, SOL_SOCKET, SO_RCVBUF) == CHILD_RCVBUF, "child: SO_RCVBUF is %d",
              getint(fd, SOL_SOCKET, SO_RCVBUF));
        check(getint(fd, SOL_SOCKET, SO_SNDBUF) == SNDBUF, "child: SO_SNDBUF is %d", getint(fd, SOL_SOCKET, SO_SNDBUF));
        if (shutdown(fd, SHUT_WR) < 0)
                fail_errno("child: shutdown");
        if (client_mode)
                pass();
        exit(0);
}

int main(int argc, char **argv) {
        test_init(argc, argv);
        bool v6 = argc > 1 && !strcmp(argv[1], "-6");
        bool abort_mode = argc > 1 && !strcmp(argv[1], "--abort");
        bool server = argc == 3 && !strcmp(argv[1], "server");
        client_mode = argc == 4 && !strcmp(argv[1], "client");
        int family = v6 ? AF_INET6 : AF_INET;
        struct sockaddr_storage ss;
        memset(&ss, 0, sizeof ss);
        socklen_t len;
        if (server || client_mode) {
                struct sockaddr_in *a = (struct sockaddr_in *) &ss;
                a->sin_family = AF_INET;
                if (inet_pton(AF_INET, argv[2], &a->sin_addr) != 1)
                        fail("bad address %s", argv[2]);
                a->sin_port = htons(client_mode ? (uint16_t) atoi(argv[3]) : 0);
                len = sizeof *a;
                if (client_mode)
                        child(AF_INET, (struct sockaddr *) &ss, len);
        } else if (v6) {
                struct sockaddr_in6 *a = (struct sockaddr_in6 *) &ss;
                a->sin6_family = AF_INET6;
                a->sin6_addr = in6addr_loopback;
                len = sizeof *a;
        } else {
                struct sockaddr_in *a = (struct sockaddr_in *) &ss;
                a->sin_family = AF_INET;
                a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
                len = sizeof *a;
        }
        int l = socket(family, SOCK_STREAM, 0);
        int one = 1;
        if (l < 0 || setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
            bind(l, (struct sockaddr *) &ss, len) < 0 || listen(l, 8) < 0 || getsockname(l, (struct sockaddr *) &ss, &len) < 0)
                fail_errno("listen");
        pid_t pid = 0;
        if (server) {
                char port[16];
                snprintf(port, sizeof port, "%u\n", ntohs(((struct sockaddr_in *) &ss)->sin_port));
                test_write_file("port", port);
        } else if ((pid = fork()) == 0) {
                close(l);
                child(family, (struct sockaddr *) &ss, len);
        }
        if (pid < 0)
                fail_errno("fork");
        int fd = accept(l, NULL, NULL);
        if (fd < 0)
                fail_errno("accept");
        int idle = 77, snd = SNDBUF / 2, rcv = CHILD_RCVBUF / 2;
        if (setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &snd, sizeof snd) < 0 ||
            setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcv, sizeof rcv) < 0 ||
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) < 0 ||
            setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one) < 0 ||
            setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle) < 0 || fcntl(fd, F_SETFL, O_NONBLOCK) < 0)
                fail_errno("options");
        struct stream s = { fd, 1, 2, 0, 0, "parent" };
        int waiting = -1;
        if (!server) {
                waiting = socket(family, SOCK_STREAM, 0);
                if (waiting < 0 || connect(waiting, (struct sockaddr *) &ss, len) < 0)
                        fail_errno("connect a second time");
        }
        if (abort_mode) {
                int p[2];
                if (socketpair(AF_UNIX, SOCK_STREAM, 0, p) < 0 || dup2(p[0], 60) < 0 || dup2(p[1], 61) < 0)
                        fail_errno("socketpair");
                close(p[0]);
                close(p[1]);
                send_fd(60, 0);
        }
        test_ready();
        while (!test_verify_requested()) {
                if (abort_mode && access("take-fd", F_OK) == 0) {
                        close(recv_fd(61));
                        abort_mode = false;
                        test_write_file("fd-taken", "1\n");
                }
                write_some(&s);
                check(read_some(&s, READ_PER_STEP, false) != 0, "parent: end of file");
                test_heartbeat();
                test_msleep(2);
        }
        check(getint(fd, IPPROTO_TCP, TCP_NODELAY) == 1, "TCP_NODELAY is off");
        check(getint(fd, SOL_SOCKET, SO_KEEPALIVE) == 1, "SO_KEEPALIVE is off");
        check(getint(fd, IPPROTO_TCP, TCP_KEEPIDLE) == idle, "TCP_KEEPIDLE is %d", getint(fd, IPPROTO_TCP, TCP_KEEPIDLE));
        check(fcntl(fd, F_GETFL) & O_NONBLOCK, "O_NONBLOCK is off");
        check(getint(fd, SOL_SOCKET, SO_SNDBUF) == SNDBUF, "SO_SNDBUF is %d", getint(fd, SOL_SOCKET, SO_SNDBUF));
        if (shutdown(fd, SHUT_WR) < 0)
                fail_errno("shutdown");
        while (read_some(&s, 1 << 20, true) > 0)
                ;
        check(s.read > 0 && s.written > 0, "nothing went through");
        if (waiting >= 0) {
                int w = accept(l, NULL, NULL);
                char c = 0;
                check(w >= 0, "accept the connection that waited: %s", strerror(errno));
                write_all(waiting, "w", 1, "the connection that waited");
                read_all(w, &c, 1, "the connection that waited");
                check(c == 'w', "the connection that waited carried %c", c);
        }
        /* The listener still takes connections. */
        int c = socket(family, SOCK_STREAM, 0);
        if (c < 0 || connect(c, (struct sockaddr *) &ss, len) < 0)
                fail_errno("connect to the listener after the restarts");
        int a = accept(l, NULL, NULL);
        check(a >= 0, "accept after the restarts: %s", strerror(errno));
        close(fd);
        if (pid > 0) {
                int status;
                check(waitpid(pid, &status, 0) == pid, "waitpid: %s", strerror(errno));
                check(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the child ended with status %#x", status);
        }
        pass();
}
