/* pty: a program in a pty it opened itself.
 *
 *   parent       holds the master: types "line N\n" into it three bytes a
 *                step (so a partial line often waits in the slave at a
 *                checkpoint) and reads what comes out, which must be
 *                exactly "line N\r\nok N\r\n" for N = 0, 1, ... (the echo of
 *                the line, then the answer), the next line typed only once
 *                the answer came
 *   child        a session leader with the slave as its controlling
 *                terminal, its own terminal modes (VERASE ^H, VKILL ^U,
 *                IUTF8, ...) and the window size the parent set (33x101);
 *                every step it checks that the slave is still its
 *                controlling terminal (TIOCGSID), and so is the /dev/tty it
 *                keeps open, that the foreground group is the
 *                grandchild's, and the modes and window size
 *   grandchild   in its own process group, the terminal's foreground:
 *                reads each line (canonical mode) and answers "ok N";
 *                the slave is its controlling terminal too (inherited
 *                from the session leader), and so is its /dev/tty
 *
 * The child execs itself (--leader) before it forks: a process just forked
 * may still be joining dmtcp's coordinator, and a child forked at that
 * moment would inherit the connection (a known runtime issue); an exec'd
 * program has joined before main.
 *
 * The parent reads the master and the grandchild the slave when an epoll
 * instance watching it says there is something.
 *
 * A restart must give back the pair, its modes and size, the controlling
 * terminal of every process of the session and its foreground group, and every byte on its way in either
 * direction, a partial line included. The pty's name stays the same when
 * that number is free (a note on stderr otherwise). */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include "zdtmtst.h"

#define ROWS 33
#define COLS 101

static struct termios want_tio;

static bool same_modes(const struct termios *a, const struct termios *b) {
        return a->c_iflag == b->c_iflag && a->c_oflag == b->c_oflag && a->c_cflag == b->c_cflag &&
               a->c_lflag == b->c_lflag && !memcmp(a->c_cc, b->c_cc, NCCS);
}

static _Noreturn void grandchild(int s) {
        char line[128];
        size_t len = 0;
        int tty = open("/dev/tty", O_RDWR | O_CLOEXEC);
        if (tty < 0)
                fail_errno("grandchild: open /dev/tty");
        /* Lines are waited for through an epoll instance watching the slave. */
        int ep = epoll_create1(EPOLL_CLOEXEC);
        struct epoll_event ev = { .events = EPOLLIN, .data.u64 = 5 };
        if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, s, &ev) < 0)
                fail_errno("grandchild: epoll");
        for (;;) {
                /* The session's terminal is ours too (inherited at fork). */
                pid_t sid = -1, fg = tcgetpgrp(tty);
                check(ioctl(s, TIOCGSID, &sid) == 0 && sid == getsid(0) && sid == getppid(),
                      "grandchild: the slave is not our controlling terminal (TIOCGSID %d: %s)", (int) sid,
                      strerror(errno));
                check(fg == getpid(), "grandchild: /dev/tty's foreground group is %d, not ours (%s)", (int) fg,
                      strerror(errno));
                int ready = epoll_wait(ep, &ev, 1, -1);
                if (ready < 0 && errno == EINTR)
                        continue;
                check(ready == 1 && ev.data.u64 == 5 && ev.events == EPOLLIN,
                      "grandchild: the slave's epoll watch gave %d events (%#x)", ready, ready == 1 ? ev.events : 0);
                ssize_t k = read(s, line + len, sizeof line - 1 - len);
                if (k < 0 && errno == EINTR)
                        continue;
                if (k <= 0)
                        fail_errno("grandchild: read the slave (%zd)", k);
                len += (size_t) k;
                line[len] = 0;
                if (len == 0 || line[len - 1] != '\n')
                        continue;       /* canonical mode gives a line at a time */
                unsigned long long n;
                if (!strcmp(line, "quit\n"))
                        exit(0);
                check(sscanf(line, "line %llu\n", &n) == 1, "grandchild: read \"%s\"", line);
                test_msleep(5);
                char ok[64];
                int m = snprintf(ok, sizeof ok, "ok %llu\n", n);
                write_all(s, ok, (size_t) m, "the slave (grandchild)");
                len = 0;
        }
}

static _Noreturn void child(const char *name) {
        if (setsid() < 0)
                fail_errno("child: setsid");
        /* A session leader opening a terminal without O_NOCTTY takes it. */
        int s = open(name, O_RDWR);
        if (s < 0)
                fail_errno("child: open %s", name);
        struct termios t;
        if (tcgetattr(s, &t) < 0)
                fail_errno("tcgetattr");
        t.c_iflag |= ICRNL | IUTF8;
        t.c_oflag |= OPOST | ONLCR;
        t.c_lflag |= ECHO | ICANON | ECHOE | ECHOK | ISIG;
        t.c_cc[VERASE] = 0x08;
        t.c_cc[VKILL] = 0x15;
        t.c_cc[VEOL2] = 0x07;
        if (tcsetattr(s, TCSANOW, &t) < 0 || tcgetattr(s, &want_tio) < 0)
                fail_errno("tcsetattr");
        pid_t g = fork();
        if (g < 0)
                fail_errno("child: fork");
        if (g == 0) {
                setpgid(0, 0);
                while (tcgetpgrp(s) != getpid())
                        test_msleep(1);
                grandchild(s);
        }
        setpgid(g, g);
        if (tcsetpgrp(s, g) < 0)
                fail_errno("child: tcsetpgrp");
        int tty = open("/dev/tty", O_RDWR | O_CLOEXEC);
        if (tty < 0)
                fail_errno("child: open /dev/tty");
        for (;;) {
                pid_t sid = -1;
                struct winsize ws;
                int status;
                pid_t w = waitpid(g, &status, WNOHANG);
                if (w == g)
                        exit(WIFEXITED(status) ? WEXITSTATUS(status) : 128);
                check(ioctl(s, TIOCGSID, &sid) == 0 && sid == getpid(),
                      "child: the slave is not our controlling terminal (TIOCGSID %d: %s)", (int) sid, strerror(errno));
                sid = -1;
                check(ioctl(tty, TIOCGSID, &sid) == 0 && sid == getpid() && tcgetattr(tty, &t) == 0 &&
                              same_modes(&t, &want_tio),
                      "child: /dev/tty is not our terminal any more (TIOCGSID %d: %s)", (int) sid, strerror(errno));
                pid_t fg = tcgetpgrp(s);
                check(fg == g, "child: the foreground group is %d, expected %d", (int) fg, (int) g);
                check(tcgetattr(s, &t) == 0 && same_modes(&t, &want_tio),
                      "child: the modes changed (iflag %#x oflag %#x lflag %#x VERASE %#x)", t.c_iflag, t.c_oflag,
                      t.c_lflag, t.c_cc[VERASE]);
                check(ioctl(s, TIOCGWINSZ, &ws) == 0 && ws.ws_row == ROWS && ws.ws_col == COLS,
                      "child: the window is %ux%u", ws.ws_row, ws.ws_col);
                test_msleep(10);
        }
}

int main(int argc, char **argv) {
        if (argc == 3 && !strcmp(argv[1], "--leader")) {
                test_name = "pty (session leader)";
                child(argv[2]);
        }
        test_init(argc, argv);
        int m = posix_openpt(O_RDWR | O_NOCTTY);
        if (m < 0 || grantpt(m) < 0 || unlockpt(m) < 0)
                fail_errno("posix_openpt");
        char name[64];
        if (ptsname_r(m, name, sizeof name) != 0)
                fail_errno("ptsname");
        struct winsize ws = { .ws_row = ROWS, .ws_col = COLS };
        if (ioctl(m, TIOCSWINSZ, &ws) < 0)
                fail_errno("TIOCSWINSZ");
        pid_t pid = fork();
        if (pid < 0)
                fail_errno("fork");
        if (pid == 0) {
                close(m);
                execl("/proc/self/exe", argv[0], "--leader", name, (char *) NULL);
                fail_errno("exec /proc/self/exe");
        }
        if (fcntl(m, F_SETFL, O_NONBLOCK) < 0)
                fail_errno("F_SETFL");
        /* What comes out is read when an epoll instance watching the master
         * says so. */
        int ep = epoll_create1(EPOLL_CLOEXEC);
        struct epoll_event ev = { .events = EPOLLIN, .data.u64 = 9 };
        if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, m, &ev) < 0)
                fail_errno("epoll");
        /* What goes in, and what must come out. */
        char in[64] = "", out[64] = "";
        size_t in_len = 0, in_sent = 0, out_len = 0, out_got = 0;
        uint64_t n = 0;
        bool waiting = false;           /* typed a whole line, the answer has not come */
        test_ready();
        for (uint64_t step = 0;; step++) {
                if (!waiting && in_sent == in_len) {
                        if (test_verify_requested())
                                break;
                        in_len = (size_t) snprintf(in, sizeof in, "line %llu\n", (unsigned long long) n);
                        out_len = (size_t) snprintf(out, sizeof out, "line %llu\r\nok %llu\r\n",
                                                    (unsigned long long) n, (unsigned long long) n);
                        in_sent = out_got = 0;
                }
                if (in_sent < in_len) {
                        size_t k = in_len - in_sent < 3 ? in_len - in_sent : 3;
                        write_all(m, in + in_sent, k, "the master");
                        in_sent += k;
                        waiting = in_sent == in_len;
                }
                int ready = epoll_wait(ep, &ev, 1, 0);
                if (ready < 0 && errno != EINTR)
                        fail_errno("epoll_wait");
                check(ready <= 0 || (ev.data.u64 == 9 && ev.events == EPOLLIN),
                      "the master's epoll watch reported events %#x", ev.events);
                if (step % 2 == 0 && ready > 0) {
                        char buf[256];
                        ssize_t k = read(m, buf, sizeof buf);
                        if (k < 0 && errno != EAGAIN && errno != EINTR)
                                fail_errno("read the master");
                        for (ssize_t i = 0; i < k; i++) {
                                check(out_got < out_len && buf[i] == out[out_got],
                                      "line %llu: byte %zu out of the master is %#x, expected \"%s\"",
                                      (unsigned long long) n, out_got, (unsigned char) buf[i], out);
                                if (++out_got == out_len) {
                                        check(in_sent == in_len, "the answer came before the line was typed");
                                        waiting = false;
                                        n++;
                                        test_heartbeat();
                                }
                        }
                }
                int status;
                check(waitpid(pid, &status, WNOHANG) == 0, "the child ended (status %#x)", status);
                test_msleep(2);
        }
        char now[64];
        if (ptsname_r(m, now, sizeof now) != 0)
                fail_errno("ptsname");
        if (strcmp(now, name))
                fprintf(stderr, "pty: note: the pty was %s, it is %s now (that number was taken)\n", name, now);
        check(ioctl(m, TIOCGWINSZ, &ws) == 0 && ws.ws_row == ROWS && ws.ws_col == COLS, "the window is %ux%u",
              ws.ws_row, ws.ws_col);
        write_all(m, "quit\n", 5, "the master");
        int status;
        check(waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0,
              "the child ended with status %#x", status);
        pass();
}
