/* unsupported_sock: sockets the runtime cannot save. First a netlink
 * socket at fd 40: a checkpoint must fail naming fd 40 and "netlink", and
 * the program must go on. When the driver asks (file "close-fd") the program
 * closes it and says so ("fd-closed"); then a Unix socket pair whose queue
 * holds a descriptor in flight (SCM_RIGHTS) at fds 41/42: a checkpoint must
 * fail naming fd 42 and SCM_RIGHTS. When the driver asks ("take-fd") the
 * program receives the descriptor ("fd-taken") and checkpoints work again;
 * the pair stays, and must carry a message after the restarts.
 *
 * Checked on every step: a counter in memory agrees with a copy. */
#include <errno.h>
#include <fcntl.h>
#include <linux/netlink.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "zdtmtst.h"

#define FD_NL 40
#define FD_A 41
#define FD_B 42

static void to_fd(int fd, int want) {
        if (dup2(fd, want) < 0)
                fail_errno("dup2");
        close(fd);
}

int main(int argc, char **argv) {
        test_init(argc, argv);
        int nl = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
        if (nl < 0)
                fail_errno("netlink socket");
        to_fd(nl, FD_NL);
        int stage = 0;
        uint64_t n = 0, copy = 0;
        test_ready();
        while (!test_verify_requested()) {
                check(n == copy, "counter %llu, copy %llu", (unsigned long long) n, (unsigned long long) copy);
                if (stage == 0 && access("close-fd", F_OK) == 0) {
                        close(FD_NL);
                        int p[2];
                        if (socketpair(AF_UNIX, SOCK_STREAM, 0, p) < 0)
                                fail_errno("socketpair");
                        to_fd(p[0], FD_A);
                        to_fd(p[1], FD_B);
                        send_fd(FD_A, 0);
                        stage = 1;
                        test_write_file("fd-closed", "1\n");
                }
                if (stage == 1 && access("take-fd", F_OK) == 0) {
                        int fd = recv_fd(FD_B);
                        check(fcntl(fd, F_GETFD) >= 0, "the descriptor received is not open");
                        close(fd);
                        stage = 2;
                        test_write_file("fd-taken", "1\n");
                }
                n++;
                copy++;
                test_heartbeat();
                test_msleep(2);
        }
        check(stage == 2, "stage %d at verification", stage);
        check(fcntl(FD_NL, F_GETFD) < 0, "the netlink socket is open again");
        write_all(FD_A, "ok", 2, "the pair");
        char buf[2];
        read_all(FD_B, buf, 2, "the pair");
        check(!memcmp(buf, "ok", 2), "the pair carried %.2s", buf);
        pass();
}
