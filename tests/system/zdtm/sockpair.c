/* sockpair: Unix socket pairs between a parent and its child, and within one
 * process.
 *
 *   ping-pong    over a stream, a seqpacket and a datagram pair: the parent
 *                sends request n (a message of a length that depends on n),
 *                the child answers n + 1 the same way, every step
 *   backlog      a stream and a datagram pair the parent fills faster than
 *                the child reads, so bytes and datagrams sit in the queues at
 *                every checkpoint; the stream end is O_NONBLOCK in the parent
 *   self         the parent's own seqpacket pair, always holding 10 messages
 *   half closed  a stream pair whose writer said "bye" and shut down its
 *                writing side: the reader gets "bye", then end of file
 *
 * Every byte is derived from its position and every message from its
 * number, so a byte or message lost, repeated, reordered, merged or split
 * fails. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "zdtmtst.h"

#define SELF_FILL 10
#define BACKLOG_MAX 60000
#define MAXMSG 3000

static int pp[3][2], bl_stream[2], bl_dgram[2], self_pair[2], ended[2];
static const int types[3] = { SOCK_STREAM, SOCK_SEQPACKET, SOCK_DGRAM };
static const char *const type_names[3] = { "stream", "seqpacket", "datagram" };

static unsigned char byte_at(uint64_t seed, uint64_t pos) {
        return (unsigned char) mix64(seed * 1000003 + pos);
}

/* Message n: 8 bytes of n, then bytes derived from n; its length too. */
static size_t msg_len(uint64_t n) {
        return 8 + mix64(n) % (MAXMSG - 8);
}

static size_t make_msg(uint64_t seed, uint64_t n, unsigned char *buf) {
        size_t len = msg_len(n ^ seed);
        memcpy(buf, &n, 8);
        for (size_t i = 8; i < len; i++)
                buf[i] = byte_at(seed + n, i);
        return len;
}

static void check_msg(const char *what, uint64_t seed, uint64_t want, const unsigned char *buf, size_t len) {
        uint64_t n;
        check(len >= 8, "%s: a message of %zu bytes", what, len);
        memcpy(&n, buf, 8);
        check(n == want, "%s: message %llu, expected %llu", what, (unsigned long long) n, (unsigned long long) want);
        check(len == msg_len(n ^ seed), "%s: message %llu has %zu bytes, expected %zu", what,
              (unsigned long long) n, len, msg_len(n ^ seed));
        for (size_t i = 8; i < len; i++)
                check(buf[i] == byte_at(seed + n, i), "%s: message %llu byte %zu is wrong", what,
                      (unsigned long long) n, i);
}

/* One message: a stream carries a 4-byte length before it. */
static void send_msg(int fd, int type, const unsigned char *buf, size_t len, const char *what) {
        if (type == SOCK_STREAM) {
                uint32_t l = (uint32_t) len;
                write_all(fd, &l, 4, what);
                write_all(fd, buf, len, what);
                return;
        }
        for (;;) {
                ssize_t k = send(fd, buf, len, 0);
                if (k < 0 && errno == EINTR)
                        continue;
                if (k != (ssize_t) len)
                        fail_errno("%s: send of %zu bytes gave %zd", what, len, k);
                return;
        }
}

static size_t recv_msg(int fd, int type, unsigned char *buf, const char *what) {
        if (type == SOCK_STREAM) {
                uint32_t l;
                read_all(fd, &l, 4, what);
                check(l <= MAXMSG, "%s: length %u", what, l);
                read_all(fd, buf, l, what);
                return l;
        }
        for (;;) {
                ssize_t k = recv(fd, buf, MAXMSG + 1, 0);
                if (k < 0 && errno == EINTR)
                        continue;
                if (k < 0)
                        fail_errno("%s: recv", what);
                if (k == 0 && type == SOCK_SEQPACKET)
                        fail("%s: end of file", what);
                return (size_t) k;
        }
}

static _Noreturn void child(void) {
        unsigned char buf[MAXMSG + 1];
        uint64_t expect_bl = 0, expect_dg = 0;
        for (int t = 0; t < 3; t++)
                close(pp[t][0]);
        close(bl_stream[0]);
        close(bl_dgram[0]);
        close(self_pair[0]);
        close(self_pair[1]);
        close(ended[0]);
        close(ended[1]);
        for (uint64_t n = 0;; n += 2) {
                for (int t = 0; t < 3; t++) {
                        char what[64];
                        snprintf(what, sizeof what, "child: %s request", type_names[t]);
                        size_t len = recv_msg(pp[t][1], types[t], buf, what);
                        if (len == 8 && !memcmp(buf, "exit now", 8))
                                exit(0);
                        check_msg(what, (uint64_t) t, n, buf, len);
                        len = make_msg((uint64_t) t + 10, n + 1, buf);
                        snprintf(what, sizeof what, "child: %s answer", type_names[t]);
                        send_msg(pp[t][1], types[t], buf, len, what);
                }
                /* The backlogs: a little at a time. */
                unsigned char b[700];
                ssize_t k = recv(bl_stream[1], b, sizeof b, MSG_DONTWAIT);
                for (ssize_t i = 0; i < k; i++, expect_bl++)
                        check(b[i] == byte_at(99, expect_bl), "child: backlog byte %llu is wrong",
                              (unsigned long long) expect_bl);
                if (k < 0 && errno != EAGAIN && errno != EINTR)
                        fail_errno("child: backlog recv");
                k = recv(bl_dgram[1], buf, sizeof buf, MSG_DONTWAIT);
                if (k >= 0)
                        check_msg("child: datagram backlog", 77, expect_dg++, buf, (size_t) k);
                else if (errno != EAGAIN && errno != EINTR)
                        fail_errno("child: datagram backlog recv");
        }
}

int main(int argc, char **argv) {
        test_init(argc, argv);
        for (int t = 0; t < 3; t++)
                if (socketpair(AF_UNIX, types[t], 0, pp[t]) < 0)
                        fail_errno("socketpair %s", type_names[t]);
        if (socketpair(AF_UNIX, SOCK_STREAM, 0, bl_stream) < 0 || socketpair(AF_UNIX, SOCK_DGRAM, 0, bl_dgram) < 0 ||
            socketpair(AF_UNIX, SOCK_SEQPACKET, 0, self_pair) < 0 || socketpair(AF_UNIX, SOCK_STREAM, 0, ended) < 0)
                fail_errno("socketpair");
        if (fcntl(bl_stream[0], F_SETFL, O_NONBLOCK) < 0)
                fail_errno("O_NONBLOCK");
        write_all(ended[1], "bye", 3, "the ended pair");
        if (shutdown(ended[1], SHUT_WR) < 0)
                fail_errno("shutdown");
        pid_t pid = fork();
        if (pid < 0)
                fail_errno("fork");
        if (pid == 0)
                child();
        for (int t = 0; t < 3; t++)
                close(pp[t][1]);
        close(bl_stream[1]);
        close(bl_dgram[1]);
        unsigned char buf[MAXMSG + 1];
        uint64_t self_w = 0, self_r = 0, bl_w = 0, dg_w = 0;
        for (; self_w < SELF_FILL; self_w++)
                send_msg(self_pair[1], SOCK_SEQPACKET, buf, make_msg(5, self_w, buf), "the self pair");
        test_ready();
        for (uint64_t n = 0; !test_verify_requested(); n += 2) {
                for (int t = 0; t < 3; t++) {
                        char what[64];
                        snprintf(what, sizeof what, "%s request", type_names[t]);
                        send_msg(pp[t][0], types[t], buf, make_msg((uint64_t) t, n, buf), what);
                        snprintf(what, sizeof what, "%s answer", type_names[t]);
                        size_t len = recv_msg(pp[t][0], types[t], buf, what);
                        check_msg(what, (uint64_t) t + 10, n + 1, buf, len);
                }
                /* The self pair: one in, one out, always SELF_FILL inside. */
                send_msg(self_pair[1], SOCK_SEQPACKET, buf, make_msg(5, self_w++, buf), "the self pair");
                size_t len = recv_msg(self_pair[0], SOCK_SEQPACKET, buf, "the self pair");
                check_msg("the self pair", 5, self_r++, buf, len);
                /* Backlogs: bursts while they are not too full. */
                unsigned char burst[4000];
                for (size_t i = 0; i < sizeof burst; i++)
                        burst[i] = byte_at(99, bl_w + i);
                ssize_t w = send(bl_stream[0], burst, sizeof burst, MSG_DONTWAIT);
                if (w < 0 && errno != EAGAIN && errno != EINTR)
                        fail_errno("send the backlog");
                if (w > 0)
                        bl_w += (uint64_t) w;
                for (int i = 0; i < 2; i++) {
                        len = make_msg(77, dg_w, buf);
                        if (send(bl_dgram[0], buf, len, MSG_DONTWAIT) == (ssize_t) len)
                                dg_w++;
                        else if (errno != EAGAIN && errno != EINTR)
                                fail_errno("send a backlog datagram");
                }
                test_heartbeat();
                test_msleep(2);
        }
        /* The half-closed pair: "bye", then end of file. */
        char bye[8];
        read_all(ended[0], bye, 3, "the ended pair");
        check(!memcmp(bye, "bye", 3), "the ended pair says %.3s", bye);
        check(recv(ended[0], bye, 1, 0) == 0, "the ended pair has no end of file");
        check(fcntl(bl_stream[0], F_GETFL) & O_NONBLOCK, "the backlog end lost O_NONBLOCK");
        int type = 0;
        socklen_t tl = sizeof type;
        check(getsockopt(pp[1][0], SOL_SOCKET, SO_TYPE, &type, &tl) == 0 && type == SOCK_SEQPACKET,
              "the seqpacket pair is of type %d", type);
        for (int t = 0; t < 3; t++)
                send_msg(pp[t][0], types[t], (const unsigned char *) "exit now", 8, "exit");
        int status;
        check(waitpid(pid, &status, 0) == pid, "waitpid: %s", strerror(errno));
        check(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the child ended with status %#x", status);
        pass();
}
