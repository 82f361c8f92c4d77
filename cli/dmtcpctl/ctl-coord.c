#include "ctl-coord.h"

#include <limits.h>
#include <poll.h>
#include <string.h>
#include <time.h>

#include "client.h"
#include "env.h"
#include "util.h"

#define CONNECT_TIMEOUT_MS (10 * 1000)

static int open_job(const char *job, char *err, size_t errsize) {
        struct coord_addr a = { .kind = COORD_UNIX };
        int r = coord_socket_path(job, a.path, sizeof a.path);
        if (r < 0) {
                snprintf(err, errsize, "the socket path of job %s is too long; use a shorter XDG_RUNTIME_DIR", job);
                return r;
        }
        struct proto_hello h = {};
        hello_fill_self(&h, PROTO_ROLE_COMMAND, "dmtcpctl");
        char reason[PROTO_TEXT_MAX + 1] = "";
        int fd = coord_join(&a, &h, CONNECT_TIMEOUT_MS, NULL, reason, sizeof reason);
        if (fd < 0) {
                if (reason[0])
                        snprintf(err, errsize, "the coordinator of job %s refused us: %s", job, reason);
                else if (fd == -ENOENT || fd == -ECONNREFUSED)
                        snprintf(err, errsize, "no coordinator listens on %s", a.path);
                else if (fd == -ETIMEDOUT)
                        snprintf(err, errsize, "the coordinator on %s did not answer within %d s", a.path,
                                 CONNECT_TIMEOUT_MS / 1000);
                else
                        snprintf(err, errsize, "cannot talk to the coordinator on %s: %s", a.path, strerror(-fd));
        }
        return fd;
}

static int send_command(int fd, int op, uint32_t arg) {
        struct proto_msg m;
        proto_init(&m, PROTO_COMMAND);
        m.u.command.op = (uint8_t) op;
        m.u.command.arg = arg;
        return proto_send(fd, &m);
}

int ctl_coord_status(const char *job, struct proto_status *st, char *err, size_t errsize) {
        _cleanup_close_ int fd = open_job(job, err, errsize);
        if (fd < 0)
                return fd;
        int r = send_command(fd, PROTO_CMD_STATUS, 0);
        struct proto_msg m;
        if (r >= 0)
                r = proto_recv(fd, &m, 30 * 1000);
        if (r >= 0 && m.type != PROTO_STATUS)
                r = -EPROTO;
        if (r < 0) {
                snprintf(err, errsize, "no status from the coordinator of job %s: %s", job, strerror(-r));
                return r;
        }
        *st = m.u.status;
        return 0;
}

int ctl_coord_list(const char *job, struct proto_member **ret, size_t *n, char *err, size_t errsize) {
        *ret = NULL;
        *n = 0;
        _cleanup_close_ int fd = open_job(job, err, errsize);
        if (fd < 0)
                return fd;
        int r = send_command(fd, PROTO_CMD_LIST, 0);
        struct proto_member *v = NULL;
        size_t k = 0;
        struct proto_msg m;
        while (r >= 0) {
                r = proto_recv(fd, &m, 30 * 1000);
                if (r < 0)
                        break;
                if (m.type == PROTO_RESULT)
                        break;
                if (m.type != PROTO_MEMBER) {
                        r = -EPROTO;
                        break;
                }
                struct proto_member *nv = realloc(v, (k + 1) * sizeof *v);
                if (!nv) {
                        r = -ENOMEM;
                        break;
                }
                v = nv;
                v[k++] = m.u.member;
        }
        if (r < 0) {
                free(v);
                snprintf(err, errsize, "no process list from the coordinator of job %s: %s", job, strerror(-r));
                return r;
        }
        *ret = v;
        *n = k;
        return 0;
}

static void show_progress(const char *job, uint64_t start) {
        struct proto_status st;
        char err[256];
        if (ctl_coord_status(job, &st, err, sizeof err) < 0)
                return;
        double s = (double) (now_usec(CLOCK_MONOTONIC) - start) / 1e6;
        fprintf(stderr, "\r\033[K%s: %s (%.1f s)", job, st.state, s);
        fflush(stderr);
}

int ctl_coord_command(const char *job, int op, uint32_t arg, bool progress, struct proto_result *res, char *err,
                      size_t errsize) {
        memset(res, 0, sizeof *res);
        _cleanup_close_ int fd = open_job(job, err, errsize);
        if (fd < 0)
                return fd;
        int r = send_command(fd, op, arg);
        if (r < 0) {
                snprintf(err, errsize, "lost the coordinator of job %s: %s", job, strerror(-r));
                return r;
        }
        bool waits = op == PROTO_CMD_BCHECKPOINT || op == PROTO_CMD_KCHECKPOINT;
        bool shown = false;
        uint64_t start = now_usec(CLOCK_MONOTONIC);
        struct proto_msg m;
        for (;;) {
                if (waits && progress) {
                        struct pollfd p = { .fd = fd, .events = POLLIN };
                        int k = poll(&p, 1, 250);
                        if (k < 0 && errno != EINTR) {
                                r = -errno;
                                break;
                        }
                        if (k <= 0) {
                                show_progress(job, start);
                                shown = true;
                                continue;
                        }
                }
                r = proto_recv(fd, &m, waits ? -1 : 60 * 1000);
                if (r < 0 || m.type == PROTO_RESULT || m.type == PROTO_REJECT)
                        break;
        }
        if (shown) {
                fputs("\r\033[K", stderr);
                fflush(stderr);
        }
        if (r < 0) {
                snprintf(err, errsize, "no answer from the coordinator of job %s: %s", job,
                         r == -ECONNRESET ? "it closed the connection" : strerror(-r));
                return r;
        }
        if (m.type == PROTO_REJECT) {
                snprintf(err, errsize, "the coordinator of job %s refused: %s", job,
                         m.u.reject.reason[0] ? m.u.reject.reason : proto_reject_name(m.u.reject.code));
                return proto_reject_to_errno(m.u.reject.code);
        }
        *res = m.u.result;
        if (res->status < 0) {
                snprintf(err, errsize, "%s", res->message[0] ? res->message : strerror(-res->status));
                return -EIO;
        }
        return 0;
}
