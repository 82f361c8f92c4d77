/* fifo: a FIFO between two processes, each opening it by name, with bytes
 * in flight at every checkpoint.
 *
 *   parent   opens "ff" O_RDWR (held, never used: a third description of
 *            the FIFO) and O_WRONLY | O_NONBLOCK; writes bursts of
 *            sequenced bytes while fewer than 40000 are inside
 *   child    opens "ff" O_RDONLY (blocking), reads at most 700 bytes a step,
 *            once an epoll instance watching it says there is something
 *
 * Three descriptions of one FIFO in two processes: after a restart the
 * bytes must be there once, in order, whichever description saved them.
 * At verification the parent checks the name is still the FIFO it has
 * open and the flags of its end, then closes its ends: the child reads to
 * the end of file, checking every byte, and says how many it got, which
 * must be all the parent wrote. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "zdtmtst.h"

#define INSIDE_MAX 40000

static unsigned char byte_at(uint64_t pos) {
        return (unsigned char) mix64(pos * 31 + 7);
}

static _Noreturn void child(void) {
        int r = open("ff", O_RDONLY);
        if (r < 0)
                fail_errno("child: open ff");
        /* Waits through an epoll instance: its watch must report what is
         * in the FIFO (and the end of file) after a restart too. */
        int ep = epoll_create1(EPOLL_CLOEXEC);
        struct epoll_event ev = { .events = EPOLLIN, .data.u64 = 7 };
        if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, r, &ev) < 0)
                fail_errno("child: epoll");
        test_write_file("child-open", "1\n");
        uint64_t got = 0;
        for (;;) {
                int n = epoll_wait(ep, &ev, 1, 5000), inside = 0;
                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0) {
                        check(n == 0 && ioctl(r, FIONREAD, &inside) == 0 && inside == 0,
                              "child: the FIFO holds %d bytes, its epoll watch says nothing (%d)", inside, n);
                        continue;
                }
                check(ev.data.u64 == 7 && ev.events && !(ev.events & ~(uint32_t) (EPOLLIN | EPOLLHUP)),
                      "child: the FIFO's epoll watch reported events %#x, data %#llx", ev.events,
                      (unsigned long long) ev.data.u64);
                unsigned char buf[700];
                ssize_t k = read(r, buf, sizeof buf);
                if (k < 0 && errno == EINTR)
                        continue;
                if (k < 0)
                        fail_errno("child: read ff");
                if (k == 0)
                        break;
                for (ssize_t i = 0; i < k; i++, got++)
                        check(buf[i] == byte_at(got), "child: byte %llu is %u, expected %u", (unsigned long long) got,
                              buf[i], byte_at(got));
                test_msleep(2);
        }
        char text[64];
        snprintf(text, sizeof text, "%llu\n", (unsigned long long) got);
        test_write_file("child-total", text);
        exit(0);
}

int main(int argc, char **argv) {
        test_init(argc, argv);
        if (mkfifo("ff", 0600) < 0)
                fail_errno("mkfifo");
        int rw = open("ff", O_RDWR);
        if (rw < 0)
                fail_errno("open ff O_RDWR");
        pid_t pid = fork();
        if (pid < 0)
                fail_errno("fork");
        if (pid == 0) {
                close(rw);
                child();
        }
        for (int i = 0; i < 1000 && access("child-open", F_OK) < 0; i++)
                test_msleep(5);
        int w = open("ff", O_WRONLY | O_NONBLOCK);
        if (w < 0)
                fail_errno("open ff O_WRONLY");
        test_ready();
        uint64_t written = 0;
        while (!test_verify_requested()) {
                int inside = 0;
                if (ioctl(w, FIONREAD, &inside) < 0)
                        fail_errno("FIONREAD");
                if (inside < INSIDE_MAX) {
                        unsigned char burst[3000];
                        for (size_t i = 0; i < sizeof burst; i++)
                                burst[i] = byte_at(written + i);
                        ssize_t k = write(w, burst, sizeof burst);
                        if (k < 0 && errno != EAGAIN && errno != EINTR)
                                fail_errno("write ff");
                        if (k > 0)
                                written += (uint64_t) k;
                }
                int status;
                check(waitpid(pid, &status, WNOHANG) == 0, "the child ended (status %#x)", status);
                test_heartbeat();
                test_msleep(3);
        }
        struct stat st;
        check(stat("ff", &st) == 0 && S_ISFIFO(st.st_mode), "ff is not a FIFO any more");
        struct stat sw;
        if (fstat(w, &sw) < 0)
                fail_errno("fstat");
        check(sw.st_ino == st.st_ino && sw.st_dev == st.st_dev && S_ISFIFO(sw.st_mode),
              "the write end is not the FIFO named ff");
        int fl = fcntl(w, F_GETFL), flr = fcntl(rw, F_GETFL);
        check((fl & O_ACCMODE) == O_WRONLY && (fl & O_NONBLOCK), "the write end has flags %#x", fl);
        check((flr & O_ACCMODE) == O_RDWR && !(flr & O_NONBLOCK), "the O_RDWR end has flags %#x", flr);
        close(w);
        close(rw);
        int status;
        check(waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0,
              "the child ended with status %#x", status);
        FILE *f = fopen("child-total", "r");
        unsigned long long got = 0;
        check(f && fscanf(f, "%llu", &got) == 1, "no child-total");
        fclose(f);
        check(got == written, "the child read %llu bytes, the parent wrote %llu", got, (unsigned long long) written);
        pass();
}
