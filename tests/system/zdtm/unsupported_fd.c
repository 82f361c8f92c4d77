/* pipe_fd: a pipe, which the runtime cannot checkpoint yet. While it is
 * open a checkpoint must fail (naming the descriptor) and the program must
 * go on unharmed; once the driver asks (file "close-pipe") the program
 * closes it, says so ("pipe-closed"), and checkpoints work again.
 *
 * Checked on every step: a byte written to the pipe comes back, and a
 * counter in memory agrees with a copy. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>

#include "zdtmtst.h"

#define FD_R 40
#define FD_W 41

int main(int argc, char **argv) {
        test_init(argc, argv);
        int p[2];
        if (pipe(p) < 0)
                fail_errno("pipe");
        if (dup2(p[0], FD_R) < 0 || dup2(p[1], FD_W) < 0)
                fail_errno("dup2");
        close(p[0]);
        close(p[1]);
        bool open_ = true;
        uint64_t n = 0, copy = 0, through_pipe = 0;
        test_ready();
        while (!test_verify_requested()) {
                check(n == copy, "counter %llu, copy %llu", (unsigned long long) n, (unsigned long long) copy);
                if (open_) {
                        unsigned char c = (unsigned char) n, back = 0;
                        write_all(FD_W, &c, 1, "the pipe");
                        read_all(FD_R, &back, 1, "the pipe");
                        check(back == c, "the pipe returned %u, not %u", back, c);
                        through_pipe++;
                        if (access("close-pipe", F_OK) == 0) {
                                close(FD_R);
                                close(FD_W);
                                open_ = false;
                                test_write_file("pipe-closed", "1\n");
                        }
                }
                n++;
                copy++;
                test_heartbeat();
                test_msleep(2);
        }
        check(!open_, "the pipe was never closed");
        check(through_pipe > 0, "nothing went through the pipe");
        check(fcntl(FD_R, F_GETFD) < 0 && fcntl(FD_W, F_GETFD) < 0, "a closed pipe end is open again");
        pass();
}
