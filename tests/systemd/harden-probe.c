/* Run by the system tests in place of the coordinator, as
 * dmtcp-coordinator@probe.service (a drop-in replaces only ExecStart=), so
 * under exactly the coordinator unit's sandboxing: applies the coordinator's
 * own hardening (daemon/coord-harden.c), then shows that what the
 * coordinator needs still works and what it refuses is refused and logged:
 *
 *   - the sock_diag netlink lookup of a loopback TCP peer's uid;
 *   - a structured journal entry (sd_journal_send);
 *   - ptrace() fails with EPERM, and the SIGSYS handler logs it on stderr.
 *
 * One "probe: ..." line per check on stdout; exit 0 when all passed. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <systemd/sd-daemon.h>
#include <systemd/sd-journal.h>
#include <unistd.h>

#include "coord-auth.h"
#include "coord-harden.h"

static int failures;

static void result(int ok, const char *what, const char *detail) {
        printf("probe: %s %s%s%s\n", what, ok ? "ok" : "FAILED", detail ? ": " : "", detail ? detail : "");
        fflush(stdout);
        if (!ok)
                failures++;
}

int main(void) {
        char buf[256];
        int n = sd_listen_fds(0);
        for (int i = 0; i < n; i++)
                (void) sd_is_socket(SD_LISTEN_FDS_START + i, AF_UNSPEC, SOCK_STREAM, 1);
        snprintf(buf, sizeof buf, "%d", n);
        result(n >= 1, "socket activation", buf);

        int r = coord_harden();
        snprintf(buf, sizeof buf, "%d", r);
        result(r == 0, "coord_harden", buf);

        /* A loopback TCP connection to ourselves, then the owner of its
         * other end through NETLINK_SOCK_DIAG. */
        int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        socklen_t al = sizeof a;
        int c = -1, s = -1;
        if (l >= 0 && bind(l, (struct sockaddr *) &a, sizeof a) == 0 && listen(l, 1) == 0 &&
            getsockname(l, (struct sockaddr *) &a, &al) == 0) {
                c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
                if (c >= 0 && connect(c, (struct sockaddr *) &a, sizeof a) == 0)
                        s = accept(l, NULL, NULL);
        }
        struct sockaddr_storage local, peer;
        socklen_t ll = sizeof local, pl = sizeof peer;
        uint32_t uid = (uint32_t) -1;
        r = -EBADF;
        if (s >= 0 && getsockname(s, (struct sockaddr *) &local, &ll) == 0 &&
            getpeername(s, (struct sockaddr *) &peer, &pl) == 0)
                r = coord_sock_diag_uid((struct sockaddr *) &local, (struct sockaddr *) &peer, &uid);
        snprintf(buf, sizeof buf, "r=%d uid=%u (we are %u)", r, (unsigned) uid, (unsigned) getuid());
        result(r == 0 && uid == (uint32_t) getuid(), "netlink uid lookup", buf);

        r = sd_journal_send("MESSAGE=probe: journal entry", "DMTCP_PROBE=journal-works", "PRIORITY=6",
                            "SYSLOG_IDENTIFIER=harden-probe", NULL);
        snprintf(buf, sizeof buf, "%d", r);
        result(r == 0, "sd_journal_send", buf);

        errno = 0;
        long p = ptrace(PTRACE_TRACEME, 0, NULL, NULL);
        snprintf(buf, sizeof buf, "ptrace returned %ld, %s", p, strerror(errno));
        result(p == -1 && errno == EPERM, "refused call", buf);

        /* Connections queued on the activated socket would start us again. */
        for (int i = 0; i < n; i++) {
                int k, fd = SD_LISTEN_FDS_START + i;
                (void) fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
                while ((k = accept4(SD_LISTEN_FDS_START + i, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0)
                        close(k);
        }
        (void) sd_notify(0, "READY=1\nSTATUS=probe done");
        return failures ? 1 : 0;
}
