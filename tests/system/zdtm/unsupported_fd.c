/* unsupported_fd: a descriptor of a kind the runtime cannot save (a
 * userfaultfd). While it is open a checkpoint must fail, naming the
 * descriptor, and the program must go on unharmed; once the driver asks
 * (file "close-fd") the program closes it, says so ("fd-closed"), and
 * checkpoints work again. Exit 77 (skip) where no userfaultfd can be made.
 *
 * Checked on every step: a counter in memory agrees with a copy. */
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "zdtmtst.h"

#define FD_U 40

int main(int argc, char **argv) {
        test_init(argc, argv);
        int u = (int) syscall(SYS_userfaultfd, O_CLOEXEC | UFFD_USER_MODE_ONLY);
        if (u < 0) {
                fprintf(stderr, "unsupported_fd: no userfaultfd: %m\n");
                exit(77);
        }
        if (dup2(u, FD_U) < 0)
                fail_errno("dup2");
        close(u);
        bool open_ = true;
        uint64_t n = 0, copy = 0;
        test_ready();
        while (!test_verify_requested()) {
                check(n == copy, "counter %llu, copy %llu", (unsigned long long) n, (unsigned long long) copy);
                if (open_ && access("close-fd", F_OK) == 0) {
                        close(FD_U);
                        open_ = false;
                        test_write_file("fd-closed", "1\n");
                }
                n++;
                copy++;
                test_heartbeat();
                test_msleep(2);
        }
        check(!open_, "the userfaultfd was never closed");
        check(fcntl(FD_U, F_GETFD) < 0, "the closed descriptor is open again");
        pass();
}
