/* pipes: two processes and the pipes between them.
 *
 *   ping/pong     the parent sends a number down one pipe, the child answers
 *                 with the next one up another, every step
 *   backlog       the parent writes bursts the child reads slowly, so bytes
 *                 sit in the pipe at the checkpoint; the write end is
 *                 O_NONBLOCK and also open in the child (one description,
 *                 two processes)
 *   self pipe     the parent's own pipe, always holding 1000 bytes: it writes
 *                 one and reads one each step
 *   ended         a pipe whose write end was closed after "bye": its reader
 *                 must get "bye" and then end of file
 *   log           a file opened before the fork without O_APPEND: parent and
 *                 child write records at the offset they share
 *
 * Every byte is derived from its position, so any lost, repeated or
 * reordered byte fails. At verification the parent toggles O_APPEND on the
 * shared backlog write end and the child must see it: the description is
 * still one. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "zdtmtst.h"

#define SELF_FILL 1000
#define BACKLOG_MAX 20000
#define REC 16

enum { CMD_PING = 1, CMD_VERIFY_FLAGS, CMD_EXIT };

struct msg {
        uint32_t cmd;
        uint32_t pad;
        uint64_t n;
};

static unsigned char byte_at(uint64_t seed, uint64_t pos) {
        return (unsigned char) mix64(seed * 1000003 + pos);
}

static int p2c[2], c2p[2], backlog[2], selfp[2], ended[2], logfd;

static void write_record(char who, uint64_t n) {
        char rec[REC + 1];
        snprintf(rec, sizeof rec, "%c%014llu\n", who, (unsigned long long) n);
        write_all(logfd, rec, REC, "the log");
}

static _Noreturn void child(void) {
        uint64_t expect_backlog = 0, step = 0;
        close(p2c[1]);
        close(c2p[0]);
        close(selfp[0]);
        close(selfp[1]);
        close(ended[0]);
        close(ended[1]);
        /* backlog[1] stays open here too: the same description as the parent's. */
        for (;;) {
                struct msg m;
                read_all(p2c[0], &m, sizeof m, "the ping pipe (child)");
                if (m.cmd == CMD_EXIT)
                        exit(0);
                if (m.cmd == CMD_VERIFY_FLAGS) {
                        int fl = fcntl(backlog[1], F_GETFL);
                        struct msg r = { CMD_VERIFY_FLAGS, 0, (uint64_t) fl };
                        write_all(c2p[1], &r, sizeof r, "the pong pipe (child)");
                        continue;
                }
                check(m.cmd == CMD_PING, "child: unknown command %u", m.cmd);
                /* Read some of the backlog: at most 700 bytes a step. */
                unsigned char buf[700];
                int avail = 0;
                if (ioctl(backlog[0], FIONREAD, &avail) < 0)
                        fail_errno("child: FIONREAD");
                size_t want = (size_t) (avail < 700 ? avail : 700);
                if (want) {
                        read_all(backlog[0], buf, want, "the backlog pipe");
                        for (size_t i = 0; i < want; i++, expect_backlog++)
                                check(buf[i] == byte_at(2, expect_backlog),
                                      "child: backlog byte %llu is %u, expected %u",
                                      (unsigned long long) expect_backlog, buf[i], byte_at(2, expect_backlog));
                }
                if (++step % 8 == 0)
                        write_record('c', m.n);
                struct msg r = { CMD_PING, 0, m.n + 1 };
                write_all(c2p[1], &r, sizeof r, "the pong pipe (child)");
        }
}

static void child_failed(const char *what) {
        int st;
        pid_t w = waitpid(-1, &st, WNOHANG);
        char buf[512] = "";
        int fd = open(TEST_RESULT_FILE, O_RDONLY);
        if (fd >= 0) {
                ssize_t k = read(fd, buf, sizeof buf - 1);
                buf[k > 0 ? k : 0] = 0;
                close(fd);
        }
        buf[strcspn(buf, "\n")] = 0;
        fail("%s (child %s; its result: %s)", what, w > 0 ? "ended" : "still there", buf[0] ? buf : "none");
}

int main(int argc, char **argv) {
        test_init(argc, argv);
        if (pipe(p2c) < 0 || pipe(c2p) < 0 || pipe(backlog) < 0 || pipe(selfp) < 0 || pipe(ended) < 0)
                fail_errno("pipe");
        logfd = open("log", O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (logfd < 0)
                fail_errno("open log");
        if (fcntl(backlog[1], F_SETFL, O_NONBLOCK) < 0)
                fail_errno("O_NONBLOCK");
        write_all(ended[1], "bye", 3, "the ended pipe");
        pid_t pid = fork();
        if (pid < 0)
                fail_errno("fork");
        if (pid == 0)
                child();
        close(p2c[0]);
        close(c2p[1]);
        close(backlog[0]);
        close(ended[1]);
        uint64_t self_w = 0, self_r = 0, backlog_w = 0;
        for (; self_w < SELF_FILL; self_w++) {
                unsigned char c = byte_at(1, self_w);
                write_all(selfp[1], &c, 1, "the self pipe");
        }
        test_ready();
        uint64_t n = 0;
        while (!test_verify_requested()) {
                struct msg m = { CMD_PING, 0, n };
                write_all(p2c[1], &m, sizeof m, "the ping pipe");
                struct msg r;
                ssize_t k = read(c2p[0], &r, sizeof r);
                if (k < 0 && errno == EINTR)
                        k = read(c2p[0], &r, sizeof r);
                if (k != (ssize_t) sizeof r)
                        child_failed("the child stopped answering");
                check(r.cmd == CMD_PING && r.n == n + 1, "pong %llu, expected %llu", (unsigned long long) r.n,
                      (unsigned long long) n + 1);
                n++;
                /* The self pipe: one in, one out, always SELF_FILL inside. */
                unsigned char c = byte_at(1, self_w++), back;
                write_all(selfp[1], &c, 1, "the self pipe");
                read_all(selfp[0], &back, 1, "the self pipe");
                check(back == byte_at(1, self_r), "self pipe byte %llu is %u, expected %u",
                      (unsigned long long) self_r, back, byte_at(1, self_r));
                self_r++;
                /* Backlog: a burst every few steps while it is not too full. */
                int inside = 0;
                if (n % 4 == 0 && ioctl(backlog[1], FIONREAD, &inside) == 0 && inside < BACKLOG_MAX) {
                        unsigned char burst[3000];
                        for (size_t i = 0; i < sizeof burst; i++)
                                burst[i] = byte_at(2, backlog_w + i);
                        ssize_t w = write(backlog[1], burst, sizeof burst);
                        if (w < 0 && errno != EAGAIN && errno != EINTR)
                                fail_errno("write the backlog");
                        if (w > 0)
                                backlog_w += (uint64_t) w;
                }
                if (n % 8 == 0)
                        write_record('p', n);
                test_heartbeat();
                test_msleep(2);
        }
        /* The ended pipe: "bye", then end of file. */
        char bye[8];
        read_all(ended[0], bye, 3, "the ended pipe");
        check(!memcmp(bye, "bye", 3), "the ended pipe says %.3s", bye);
        check(read(ended[0], bye, 1) == 0, "the ended pipe has no end of file");
        /* The backlog write end is one description in both processes. */
        int fl = fcntl(backlog[1], F_GETFL);
        check(fl >= 0 && (fl & O_NONBLOCK), "the backlog write end lost O_NONBLOCK");
        if (fcntl(backlog[1], F_SETFL, fl | O_APPEND) < 0)
                fail_errno("F_SETFL");
        struct msg m = { CMD_VERIFY_FLAGS, 0, 0 };
        write_all(p2c[1], &m, sizeof m, "the ping pipe");
        struct msg r;
        if (read(c2p[0], &r, sizeof r) != (ssize_t) sizeof r)
                child_failed("the child did not answer the flags question");
        check(r.cmd == CMD_VERIFY_FLAGS && (r.n & O_APPEND) && (r.n & O_NONBLOCK),
              "the child's backlog write end has flags %#llx: not the parent's description",
              (unsigned long long) r.n);
        /* The log: whole records, none overwritten (the offset is shared). */
        struct stat st;
        if (fstat(logfd, &st) < 0)
                fail_errno("fstat log");
        off_t off = lseek(logfd, 0, SEEK_CUR);
        check(st.st_size % REC == 0 && off == st.st_size, "log: size %lld, offset %lld",
              (long long) st.st_size, (long long) off);
        m.cmd = CMD_EXIT;
        write_all(p2c[1], &m, sizeof m, "the ping pipe");
        int status;
        check(waitpid(pid, &status, 0) == pid, "waitpid: %s", strerror(errno));
        check(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the child ended with status %#x", status);
        int fd = open("log", O_RDONLY);
        char rec[REC];
        uint64_t last_p = 0, last_c = 0;
        for (off_t o = 0; o < st.st_size; o += REC) {
                pread_all(fd, rec, REC, o, "the log");
                check((rec[0] == 'p' || rec[0] == 'c') && rec[REC - 1] == '\n', "log record at %lld is damaged",
                      (long long) o);
                uint64_t v = strtoull(rec + 1, NULL, 10);
                uint64_t *last = rec[0] == 'p' ? &last_p : &last_c;
                check(v > *last || (v == 0 && *last == 0), "log record at %lld goes back: %c %llu after %llu",
                      (long long) o, rec[0], (unsigned long long) v, (unsigned long long) *last);
                *last = v;
        }
        pass();
}
