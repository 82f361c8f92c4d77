/* unixserver: a server on Unix sockets and several clients, forked.
 *
 * The server (the parent) listens on a stream socket bound to a path
 * (srv.sock in the working directory) and on a seqpacket socket bound to an
 * abstract name, and receives on a datagram socket bound to dg.sock. Each
 * of the NCLIENTS clients connects to the stream listener, one of them also
 * to the seqpacket one, and each has a datagram socket bound to a path of
 * its own and connected to dg.sock (its default peer). Every step a client
 * sends request n on each of its sockets and checks the answer n + 1; the
 * server answers datagrams with sendto() to the client's path (known from
 * the request, not from the sender's address, which a restart does not
 * keep for datagrams still queued). Every 40 steps client 0 closes its
 * stream connection and connects again: the listener must still be there
 * after a restart, at the same path (the stale socket file replaced).
 *
 * At verification the server tells every client to stop and checks they
 * all ended well. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "zdtmtst.h"

#define NCLIENTS 3
#define MAXCONN 16
#define PAYLOAD 200

struct msg {
        uint32_t client;
        uint32_t kind;                  /* 0 request, 1 answer, 2 stop */
        uint64_t n;
        unsigned char payload[PAYLOAD];
};

static socklen_t unix_addr(struct sockaddr_un *a, const char *name, bool abstract) {
        memset(a, 0, sizeof *a);
        a->sun_family = AF_UNIX;
        size_t n = strlen(name);
        if (abstract) {
                memcpy(a->sun_path + 1, name, n);
                return (socklen_t) (offsetof(struct sockaddr_un, sun_path) + 1 + n);
        }
        memcpy(a->sun_path, name, n + 1);
        return (socklen_t) (offsetof(struct sockaddr_un, sun_path) + n + 1);
}

static char abstract_name[64];

static void fill(struct msg *m, uint32_t client, uint32_t kind, uint64_t n) {
        memset(m, 0, sizeof *m);
        m->client = client;
        m->kind = kind;
        m->n = n;
        for (size_t i = 0; i < PAYLOAD; i++)
                m->payload[i] = (unsigned char) mix64(n * 131 + client * 7 + kind + i);
}

static void check_msg(const struct msg *m, uint32_t client, uint32_t kind, uint64_t n, const char *what) {
        check(m->client == client && m->kind == kind && m->n == n, "%s: got client %u kind %u n %llu, expected %u %u %llu",
              what, m->client, m->kind, (unsigned long long) m->n, client, kind, (unsigned long long) n);
        struct msg want;
        fill(&want, client, kind, n);
        check(!memcmp(m->payload, want.payload, PAYLOAD), "%s: message %llu damaged", what, (unsigned long long) n);
}

static void xsend(int fd, const struct msg *m, const char *what) {
        for (;;) {
                ssize_t k = send(fd, m, sizeof *m, MSG_NOSIGNAL);
                if (k < 0 && errno == EINTR)
                        continue;
                if (k != (ssize_t) sizeof *m)
                        fail_errno("%s: send", what);
                return;
        }
}

/* One whole message (a stream may split it). 0 at end of file. */
static int xrecv(int fd, struct msg *m, const char *what) {
        size_t got = 0;
        while (got < sizeof *m) {
                ssize_t k = recv(fd, (char *) m + got, sizeof *m - got, 0);
                if (k < 0 && errno == EINTR)
                        continue;
                if (k < 0)
                        fail_errno("%s: recv on fd %d", what, fd);
                if (k == 0) {
                        check(got == 0, "%s: end of file inside a message", what);
                        return 0;
                }
                got += (size_t) k;
        }
        return 1;
}

static int connect_to(int type, const char *name, bool abstract) {
        struct sockaddr_un a;
        socklen_t len = unix_addr(&a, name, abstract);
        int fd = socket(AF_UNIX, type, 0);
        if (fd < 0 || connect(fd, (struct sockaddr *) &a, len) < 0)
                fail_errno("connect to %s%s", abstract ? "@" : "", name);
        return fd;
}

static _Noreturn void client(uint32_t id) {
        char path[32];
        snprintf(path, sizeof path, "dgc%u.sock", id);
        struct sockaddr_un a;
        socklen_t len = unix_addr(&a, path, false);
        unlink(path);
        int dg = socket(AF_UNIX, SOCK_DGRAM, 0);
        if (dg < 0 || bind(dg, (struct sockaddr *) &a, len) < 0)
                fail_errno("client %u: bind %s", id, path);
        len = unix_addr(&a, "dg.sock", false);
        if (connect(dg, (struct sockaddr *) &a, len) < 0)
                fail_errno("client %u: connect the datagram socket", id);
        int st = connect_to(SOCK_STREAM, "srv.sock", false);
        int sq = id == 1 ? connect_to(SOCK_SEQPACKET, abstract_name, true) : -1;
        struct msg m;
        for (uint64_t n = 0;; n += 2) {
                int fds[3] = { st, dg, sq };
                for (int k = 0; k < 3; k++) {
                        if (fds[k] < 0)
                                continue;
                        fill(&m, id, 0, n);
                        xsend(fds[k], &m, "client request");
                        if (!xrecv(fds[k], &m, "client answer"))
                                fail("client %u: the server closed socket %d", id, k);
                        if (m.kind == 2)
                                exit(0);
                        check_msg(&m, id, 1, n + 1, "client answer");
                }
                if (id == 0 && n % 80 == 78) {
                        /* Hang up and call again. */
                        close(st);
                        st = connect_to(SOCK_STREAM, "srv.sock", false);
                }
                test_msleep(1);
        }
}

static int listen_on(int type, const char *name, bool abstract) {
        struct sockaddr_un a;
        socklen_t len = unix_addr(&a, name, abstract);
        int fd = socket(AF_UNIX, type, 0);
        if (fd < 0 || bind(fd, (struct sockaddr *) &a, len) < 0 || (type != SOCK_DGRAM && listen(fd, 8) < 0))
                fail_errno("listen on %s%s", abstract ? "@" : "", name);
        return fd;
}

int main(int argc, char **argv) {
        test_init(argc, argv);
        snprintf(abstract_name, sizeof abstract_name, "zdtm-unixserver-%d", (int) getpid());
        unlink("srv.sock");
        unlink("dg.sock");
        int ls = listen_on(SOCK_STREAM, "srv.sock", false);
        int lq = listen_on(SOCK_SEQPACKET, abstract_name, true);
        int dg = listen_on(SOCK_DGRAM, "dg.sock", false);
        pid_t pids[NCLIENTS];
        for (uint32_t i = 0; i < NCLIENTS; i++) {
                pids[i] = fork();
                if (pids[i] < 0)
                        fail_errno("fork");
                if (pids[i] == 0) {
                        close(ls);
                        close(lq);
                        close(dg);
                        client(i);
                }
        }
        int conns[MAXCONN];
        int nconn = 0;
        uint64_t accepted = 0, answered = 0;
        test_ready();
        while (!test_verify_requested() || nconn < NCLIENTS + 1) {
                struct pollfd p[MAXCONN + 3];
                p[0] = (struct pollfd) { ls, POLLIN, 0 };
                p[1] = (struct pollfd) { lq, POLLIN, 0 };
                p[2] = (struct pollfd) { dg, POLLIN, 0 };
                for (int i = 0; i < nconn; i++)
                        p[3 + i] = (struct pollfd) { conns[i], POLLIN, 0 };
                int polled = nconn;
                int n = poll(p, (nfds_t) (3 + polled), 100);
                if (n < 0 && errno != EINTR)
                        fail_errno("poll");
                for (int i = 0; i < 2 && n > 0; i++)
                        if (p[i].revents & POLLIN) {
                                int c = accept(p[i].fd, NULL, NULL);
                                if (c < 0 && errno != EINTR)
                                        fail_errno("accept");
                                check(nconn < MAXCONN, "too many connections");
                                if (c >= 0) {
                                        conns[nconn++] = c;
                                        accepted++;
                                }
                        }
                struct msg m;
                if (n > 0 && (p[2].revents & POLLIN)) {
                        ssize_t k = recv(dg, &m, sizeof m, 0);
                        if (k < 0 && errno != EINTR)
                                fail_errno("recv datagram");
                        if (k >= 0) {
                                check(k == sizeof m && m.kind == 0 && m.client < NCLIENTS, "a datagram of %zd bytes", k);
                                check_msg(&m, m.client, 0, m.n, "server datagram");
                                uint32_t id = m.client;
                                fill(&m, id, 1, m.n + 1);
                                char path[32];
                                snprintf(path, sizeof path, "dgc%u.sock", id);
                                struct sockaddr_un a;
                                socklen_t len = unix_addr(&a, path, false);
                                if (sendto(dg, &m, sizeof m, 0, (struct sockaddr *) &a, len) != sizeof m)
                                        fail_errno("sendto %s", path);
                                answered++;
                        }
                }
                for (int i = 0; i < polled && n > 0; i++) {
                        if (!(p[3 + i].revents & (POLLIN | POLLHUP)))
                                continue;
                        int fd = p[3 + i].fd;
                        if (!xrecv(fd, &m, "server request")) {
                                /* A client hung up (to call again). */
                                close(fd);
                                conns[i] = -1;
                                continue;
                        }
                        check(m.kind == 0 && m.client < NCLIENTS, "a request of kind %u from client %u", m.kind,
                              m.client);
                        check_msg(&m, m.client, 0, m.n, "server request");
                        fill(&m, m.client, 1, m.n + 1);
                        xsend(fd, &m, "server answer");
                        answered++;
                }
                int k = 0;
                for (int i = 0; i < nconn; i++)
                        if (conns[i] >= 0)
                                conns[k++] = conns[i];
                nconn = k;
                test_heartbeat();
        }
        struct stat st;
        check(stat("srv.sock", &st) == 0 && S_ISSOCK(st.st_mode), "srv.sock is not a socket any more");
        check(accepted > NCLIENTS + 1, "client 0 never connected again (%llu connections)",
              (unsigned long long) accepted);
        /* Stop: each client's next answer on any socket says so. */
        struct msg stop;
        int stopped = 0;
        while (stopped < NCLIENTS) {
                struct pollfd p[MAXCONN + 1];
                for (int i = 0; i < nconn; i++)
                        p[i] = (struct pollfd) { conns[i], POLLIN, 0 };
                p[nconn] = (struct pollfd) { dg, POLLIN, 0 };
                if (poll(p, (nfds_t) nconn + 1, 5000) <= 0)
                        fail("the clients stopped talking before they were told to stop");
                for (int i = 0; i <= nconn; i++) {
                        if (!(p[i].revents & POLLIN))
                                continue;
                        struct msg m;
                        if (i == nconn) {
                                if (recv(dg, &m, sizeof m, 0) != sizeof m)
                                        continue;
                                fill(&stop, m.client, 2, 0);
                                char path[32];
                                snprintf(path, sizeof path, "dgc%u.sock", m.client);
                                struct sockaddr_un a;
                                socklen_t len = unix_addr(&a, path, false);
                                sendto(dg, &stop, sizeof stop, 0, (struct sockaddr *) &a, len);
                        } else {
                                if (!xrecv(p[i].fd, &m, "server request"))
                                        continue;
                                fill(&stop, m.client, 2, 0);
                                xsend(p[i].fd, &stop, "stop");
                        }
                        stopped++;
                }
        }
        for (int i = 0; i < NCLIENTS; i++) {
                int status;
                check(waitpid(pids[i], &status, 0) == pids[i], "waitpid: %s", strerror(errno));
                check(WIFEXITED(status) && WEXITSTATUS(status) == 0, "client %d ended with status %#x", i, status);
        }
        check(answered > 0, "nothing answered");
        pass();
}
