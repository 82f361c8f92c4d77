#include "coord-start.h"

#include <fcntl.h>
#include <limits.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>

#include "client.h"
#include "config.h"
#include "util.h"

/* Exit status of dmtcp_coordinator when its address is taken (daemon/README.md). */
#define COORD_EXIT_ADDRINUSE 2
#define COORD_EXIT_USAGE     64

bool coord_answers(const struct coord_addr *a, int timeout_ms) {
        struct proto_hello h = {};
        hello_fill_self(&h, PROTO_ROLE_COMMAND, "coord-probe");
        int fd = coord_join(a, &h, timeout_ms, NULL, NULL, 0);
        if (fd >= 0) {
                close(fd);
                return true;
        }
        switch (fd) {
        case -ECONNREFUSED:
        case -ENOENT:
        case -ENOTDIR:
        case -ETIMEDOUT:
        case -EHOSTUNREACH:
        case -ENETUNREACH:
        case -ECONNRESET:
                return false;
        default:
                return true;    /* something answered and refused us (a REJECT, another protocol): it is there */
        }
}

static bool host_is_local(const char *h) {
        return !*h || !strcmp(h, "localhost") || !strncmp(h, "127.", 4) || !strcmp(h, "::1") ||
               !strcmp(h, host_name());
}

static int read_port_file(const char *path, uint16_t *port) {
        char buf[32];
        ssize_t n = read_small_file(path, buf, sizeof buf);
        if (n < 0)
                return (int) n;
        while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == ' '))
                buf[--n] = 0;
        int v;
        if (parse_int_range(buf, 1, 65535, &v) < 0)
                return -EBADMSG;
        *port = (uint16_t) v;
        return 0;
}

static int spawn_and_wait(char *const argv[]) {
        pid_t pid = fork();
        if (pid < 0)
                return -errno;
        if (pid == 0) {
                /* Nothing of the caller's but stdio reaches the coordinator. */
                (void) close_range(3, ~0U, 0);
                execv(argv[0], argv);
                _exit(127);
        }
        int st;
        pid_t w;
        do
                w = waitpid(pid, &st, 0);
        while (w < 0 && errno == EINTR);
        if (w < 0)
                return errno == ECHILD ? 0 : -errno;    /* SIGCHLD ignored: find out by probing */
        if (!WIFEXITED(st))
                return -EIO;
        switch (WEXITSTATUS(st)) {
        case 0:
                return 0;
        case COORD_EXIT_ADDRINUSE:
                return -EADDRINUSE;
        case COORD_EXIT_USAGE:
                return -EINVAL;
        case 127:
                return -ENOEXEC;
        default:
                return -EIO;
        }
}

/* Ask the user manager to start the job's coordinator socket, through the
 * dmtcp-activate helper (cli/dmtcpctl/dmtcp-activate.c): 1 when the socket
 * is there, 0 when that is not possible. */
static int activate_job_socket(const char *job, const char *path, int timeout_ms) {
        char bin[PATH_MAX], timeout[16];
        if (find_sibling(DMTCP_BIN_TO_LIBEXEC "/dmtcp/dmtcp-activate", "cli/dmtcpctl/dmtcp-activate", bin,
                         sizeof bin) < 0 || access(bin, X_OK) < 0)
                return 0;
        snprintf(timeout, sizeof timeout, "%d", timeout_ms);
        pid_t pid = fork();
        if (pid < 0)
                return 0;
        if (pid == 0) {
                execl(bin, bin, job, path, timeout, (char *) NULL);
                _exit(127);
        }
        int st;
        while (waitpid(pid, &st, 0) < 0)
                if (errno != EINTR)
                        return 0;
        return WIFEXITED(st) && WEXITSTATUS(st) == 0;
}

static int start_coordinator(const struct coord_start_opts *o, struct coord_addr *addr, int timeout_ms) {
        char bin[PATH_MAX];
        if (o->coordinator) {
                if (strscpy(bin, o->coordinator, sizeof bin) >= sizeof bin)
                        return -ENAMETOOLONG;
        } else if (find_sibling("dmtcp_coordinator", "daemon/dmtcp_coordinator", bin, sizeof bin) < 0)
                return -ENOENT;
        if (access(bin, X_OK) < 0)
                return -ENOENT;

        char port[16], interval[16], port_file[PATH_MAX] = "";
        bool tmp_port_file = false;
        snprintf(port, sizeof port, "%u", addr->kind == COORD_TCP ? (unsigned) addr->port : 0u);
        if (o->port_file && *o->port_file)
                strscpy(port_file, o->port_file, sizeof port_file);
        else if (addr->kind == COORD_TCP && addr->port == 0) {
                const char *tmp = getenv("TMPDIR");
                snprintf(port_file, sizeof port_file, "%s/dmtcp-port-XXXXXX", tmp && *tmp == '/' ? tmp : "/tmp");
                int fd = mkstemp(port_file);
                if (fd < 0)
                        return -errno;
                close(fd);
                tmp_port_file = true;
        }

        const char *argv[20];
        size_t n = 0;
        argv[n++] = bin;
        argv[n++] = "--daemon";
        argv[n++] = "--exit-on-last";
        /* One we started that nobody ever joins (the launch or restart
         * failed) must not linger. */
        argv[n++] = "--idle-timeout";
        argv[n++] = "60";
        argv[n++] = "-q";
        argv[n++] = "--port";
        argv[n++] = port;
        if (port_file[0]) {
                argv[n++] = "--port-file";
                argv[n++] = port_file;
        }
        if (o->ckptdir && *o->ckptdir) {
                argv[n++] = "--ckptdir";
                argv[n++] = o->ckptdir;
        }
        if (o->interval >= 0) {
                snprintf(interval, sizeof interval, "%d", o->interval);
                argv[n++] = "--interval";
                argv[n++] = interval;
        }
        if (o->job && *o->job) {
                argv[n++] = "--job";
                argv[n++] = o->job;
        }
        argv[n] = NULL;

        int r = spawn_and_wait((char *const *) argv);
        if (r == 0 && addr->kind == COORD_TCP && addr->port == 0)
                r = read_port_file(port_file, &addr->port);
        if (tmp_port_file)
                (void) unlink(port_file);
        if (r < 0)
                return r;

        /* The daemon's parent exits once the listeners are ready; check. */
        uint64_t deadline = now_usec(CLOCK_MONOTONIC) + (uint64_t) timeout_ms * 1000;
        while (!coord_answers(addr, timeout_ms)) {
                if (now_usec(CLOCK_MONOTONIC) >= deadline)
                        return -ETIMEDOUT;
                struct timespec ts = { 0, 20 * 1000 * 1000 };
                nanosleep(&ts, NULL);
        }
        return 1;
}

int coord_ensure(const struct coord_start_opts *o, struct coord_addr *addr) {
        int timeout = o->timeout_ms > 0 ? o->timeout_ms : 5000;
        int r = coord_addr_resolve(addr, o->host, o->port, o->job);
        if (r < 0)
                return r;

        if (addr->kind == COORD_TCP && addr->port == 0) {
                /* Port 0: only a port file says where an existing one is. */
                if (o->mode == COORD_START_JOIN) {
                        if (!o->port_file || read_port_file(o->port_file, &addr->port) < 0)
                                return -ECONNREFUSED;
                        return coord_answers(addr, timeout) ? 0 : -ECONNREFUSED;
                }
        } else {
                bool up = coord_answers(addr, timeout);
                switch (o->mode) {
                case COORD_START_JOIN:
                        return up ? 0 : -ECONNREFUSED;
                case COORD_START_NEW:
                        if (up)
                                return -EADDRINUSE;
                        break;
                case COORD_START_ANY:
                        if (up)
                                return 0;
                        break;
                }
        }

        /* Start one, where we can. */
        if (addr->kind == COORD_TCP && !host_is_local(addr->host))
                return -ECONNREFUSED;
        if (addr->kind == COORD_UNIX) {
                char own[sizeof addr->path];
                if (coord_socket_path(o->job, own, sizeof own) < 0 || strcmp(own, addr->path))
                        return -ECONNREFUSED;   /* a coordinator cannot be told to listen elsewhere */
                /* The user manager may own the job's socket (dmtcp-coordinator@JOB.socket). */
                if (o->mode == COORD_START_ANY && o->job && activate_job_socket(o->job, addr->path, timeout) > 0 &&
                    coord_answers(addr, timeout))
                        return 0;
        }
        return start_coordinator(o, addr, timeout);
}
