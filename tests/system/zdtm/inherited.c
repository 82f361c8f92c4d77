/* inherited: descriptors the computation inherited at launch belong to the
 * outside world; after a restart they are the restarting command's. The
 * driver gives the program a pipe at fd 20 (and files as stdout/stderr);
 * the program writes a line to fd 20 and to stdout every 10 steps, and
 * "verified" at the end. The driver checks that each restart's pipe and
 * stdout received the lines written after that restart.
 *
 * It also holds a shared flock on stdout, which the runtime must name in a
 * warning at the checkpoint (a restart does not take it again).
 *
 * Checked on every step: fds 0, 1, 2 and 20 are open, fd 20 is a FIFO
 * opened for writing, and writes to it and to stdout succeed. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "zdtmtst.h"

#define FD_PIPE 20

static void check_fds(void) {
        for (int fd = 0; fd <= 2; fd++)
                check(fcntl(fd, F_GETFD) >= 0, "fd %d is closed", fd);
        struct stat st;
        if (fstat(FD_PIPE, &st) < 0)
                fail_errno("fd %d (inherited pipe)", FD_PIPE);
        check(S_ISFIFO(st.st_mode), "fd %d is no longer a pipe (mode %o)", FD_PIPE, (unsigned) st.st_mode);
        int fl = fcntl(FD_PIPE, F_GETFL);
        check(fl >= 0 && (fl & O_ACCMODE) == O_WRONLY, "fd %d is not open for writing (flags %#x)", FD_PIPE, fl);
}

static void say(const char *what, uint64_t n) {
        char line[64];
        int k = snprintf(line, sizeof line, "%s %llu\n", what, (unsigned long long) n);
        write_all(FD_PIPE, line, (size_t) k, "the inherited pipe (fd 20)");
        write_all(STDOUT_FILENO, line, (size_t) k, "stdout");
}

int main(int argc, char **argv) {
        test_init(argc, argv);
        signal(SIGPIPE, SIG_IGN);       /* a closed pipe is an error message, not a death */
        check_fds();
        /* A lock on an inherited file: the runtime says a restart will not
         * take it again (the driver looks for the warning). */
        check(flock(1, LOCK_SH | LOCK_NB) == 0, "flock on stdout: %s", strerror(errno));
        uint64_t step = 0;
        say("start", 0);
        test_ready();
        while (!test_verify_requested()) {
                check_fds();
                if (++step % 10 == 0)
                        say("step", step);
                test_heartbeat();
                test_msleep(2);
        }
        check_fds();
        say("verified", step);
        pass();
}
