/* After the coordinator's hardening, ptrace (and the rest of the deny-list)
 * fails with EPERM and is logged, while what the coordinator needs keeps
 * working: the sock_diag uid lookup over NETLINK_SOCK_DIAG and datagrams
 * to a Unix socket (how sd_journal_send talks to journald). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <cmocka.h>
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/un.h>

#include "coord-auth.h"
#include "coord-harden.h"
#include "util.h"

/* A connected loopback TCP pair; returns the accepted (server) end. */
static int tcp_pair(int *client) {
        int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        assert_true(l >= 0);
        struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        assert_int_equal(bind(l, (struct sockaddr *) &a, sizeof a), 0);
        assert_int_equal(listen(l, 1), 0);
        socklen_t al = sizeof a;
        assert_int_equal(getsockname(l, (struct sockaddr *) &a, &al), 0);
        *client = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        assert_int_equal(connect(*client, (struct sockaddr *) &a, sizeof a), 0);
        int s = accept4(l, NULL, NULL, SOCK_CLOEXEC);
        assert_true(s >= 0);
        close(l);
        return s;
}

static void check_uid_lookup(void) {
        int client;
        int s = tcp_pair(&client);
        struct coord_peer p;
        bool tcp, loopback;
        assert_int_equal(coord_peer_identify(s, &p, &tcp, &loopback), 0);
        assert_true(tcp && loopback);
        assert_true(p.have_uid);
        assert_int_equal(p.uid, (uint32_t) getuid());
        close(s);
        close(client);
}

static void test_hardening(void **state) {
        check_uid_lookup();     /* works before ... */

        /* Capture stderr to see the SIGSYS handler's line. */
        char logpath[] = "/tmp/test-harden-XXXXXX";
        int logfd = mkstemp(logpath);
        assert_true(logfd >= 0);
        int saved = dup(STDERR_FILENO);
        assert_int_equal(coord_harden(), 0);

        dup2(logfd, STDERR_FILENO);
        errno = 0;
        long r = ptrace(PTRACE_TRACEME, 0, NULL, NULL);
        int e = errno;
        char buf[8];
        struct iovec local = { buf, sizeof buf }, remote = { buf, sizeof buf };
        errno = 0;
        ssize_t k = process_vm_readv(getpid(), &local, 1, &remote, 1, 0);
        int e2 = errno;
        errno = 0;
        long b = syscall(SYS_bpf, 0, NULL, 0);
        int e3 = errno;
        dup2(saved, STDERR_FILENO);
        close(saved);

        assert_int_equal(r, -1);
        assert_int_equal(e, EPERM);
        assert_int_equal(k, -1);
        assert_int_equal(e2, EPERM);
        assert_int_equal(b, -1);
        assert_int_equal(e3, EPERM);

        char text[1024];
        ssize_t n = read_small_file(logpath, text, sizeof text);
        assert_true(n > 0);
        char want[128];
        snprintf(want, sizeof want, "seccomp refused system call %d with EPERM", SYS_ptrace);
        assert_non_null(strstr(text, want));
        snprintf(want, sizeof want, "seccomp refused system call %d with EPERM", SYS_bpf);
        assert_non_null(strstr(text, want));
        close(logfd);
        unlink(logpath);

        check_uid_lookup();     /* ... and after the filter */

        /* A Unix datagram (the journal's transport) still goes through. */
        int sv[2];
        assert_int_equal(socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, sv), 0);
        assert_int_equal(send(sv[0], "MESSAGE=x", 9, 0), 9);
        assert_int_equal(recv(sv[1], text, sizeof text, 0), 9);
        close(sv[0]);
        close(sv[1]);

        /* No capabilities are left, and dropping again is a no-op. */
        assert_int_equal(coord_drop_capabilities(), 0);
        char status[8192];
        assert_true(read_small_file("/proc/self/status", status, sizeof status) > 0);
        assert_non_null(strstr(status, "CapEff:\t0000000000000000"));
        assert_non_null(strstr(status, "Seccomp:\t2"));
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_hardening),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
