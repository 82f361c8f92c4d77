#include "env.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include "config.h"
#include "util.h"

int dmtcp_fail_rc(void) {
        const char *e = getenv("DMTCP_FAIL_RC");
        int v;
        if (e && parse_int_range(e, 1, 200, &v) == 0)
                return v;
        return DMTCP_DEFAULT_FAIL_RC;
}

int dmtcp_keep(void) {
        const char *e = getenv("DMTCP_KEEP");
        int v;
        if (e && parse_int_range(e, 1, 1000, &v) == 0)
                return v;
        return DMTCP_DEFAULT_KEEP;
}

int coord_socket_dir(char *buf, size_t size) {
        const char *rt = getenv("XDG_RUNTIME_DIR");
        int n;
        if (rt && rt[0] == '/')
                n = snprintf(buf, size, "%s/dmtcp", rt);
        else {
                const char *tmp = getenv("TMPDIR");
                if (!tmp || tmp[0] != '/')
                        tmp = "/tmp";
                n = snprintf(buf, size, "%s/dmtcp-%u", tmp, (unsigned) getuid());
        }
        return n < 0 || (size_t) n >= size ? -ENAMETOOLONG : 0;
}

int coord_socket_path(const char *job, char *buf, size_t size) {
        char dir[PATH_MAX];
        int r = coord_socket_dir(dir, sizeof dir);
        if (r < 0)
                return r;
        int n = snprintf(buf, size, "%s/%s.sock", dir, job && *job ? job : "default");
        return n < 0 || (size_t) n >= size ? -ENAMETOOLONG : 0;
}

static int parse_port(const char *s, uint16_t *port) {
        int v;
        if (parse_int_range(s, 0, 65535, &v) < 0)
                return -EINVAL;
        *port = (uint16_t) v;
        return 0;
}

int coord_addr_resolve(struct coord_addr *a, const char *host_opt, int port_opt, const char *job) {
        memset(a, 0, sizeof *a);
        a->kind = COORD_TCP;
        strscpy(a->host, "127.0.0.1", sizeof a->host);
        a->port = DMTCP_DEFAULT_PORT;

        bool tcp_opt = host_opt || port_opt >= 0;
        const char *sock = getenv("DMTCP_COORD_SOCKET");
        if (!tcp_opt && sock && *sock) {
                if (strlen(sock) >= sizeof a->path)
                        return -ENAMETOOLONG;
                a->kind = COORD_UNIX;
                strscpy(a->path, sock, sizeof a->path);
                return 0;
        }
        const char *eh = getenv("DMTCP_COORD_HOST");
        if (!eh)
                eh = getenv("DMTCP_HOST");
        const char *ep = getenv("DMTCP_COORD_PORT");
        if (!ep)
                ep = getenv("DMTCP_PORT");
        if (!tcp_opt && !eh && !ep && job && *job) {
                a->kind = COORD_UNIX;
                return coord_socket_path(job, a->path, sizeof a->path);
        }
        const char *h = host_opt ? host_opt : eh;
        if (h && *h) {
                if (strlen(h) >= sizeof a->host)
                        return -ENAMETOOLONG;
                strscpy(a->host, h, sizeof a->host);
        }
        if (port_opt >= 0)
                a->port = (uint16_t) port_opt;
        else if (ep && parse_port(ep, &a->port) < 0)
                return -EINVAL;
        return 0;
}

void coord_addr_describe(const struct coord_addr *a, char *buf, size_t size) {
        if (a->kind == COORD_UNIX)
                snprintf(buf, size, "%s", a->path);
        else
                snprintf(buf, size, "%s:%u", a->host, (unsigned) a->port);
}

static int connect_timeout(int fd, const struct sockaddr *sa, socklen_t len, int timeout_ms) {
        int fl = fcntl(fd, F_GETFL);
        if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
                return -errno;
        if (connect(fd, sa, len) < 0) {
                if (errno != EINPROGRESS && errno != EAGAIN)
                        return -errno;
                struct pollfd pfd = { .fd = fd, .events = POLLOUT };
                int r;
                do
                        r = poll(&pfd, 1, timeout_ms);
                while (r < 0 && errno == EINTR);
                if (r < 0)
                        return -errno;
                if (r == 0)
                        return -ETIMEDOUT;
                int err = 0;
                socklen_t el = sizeof err;
                if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el) < 0)
                        return -errno;
                if (err)
                        return -err;
        }
        if (fcntl(fd, F_SETFL, fl) < 0)
                return -errno;
        return 0;
}

int coord_fd_floor;

/* The socket leaves the descriptors below coord_fd_floor at once. */
static int floor_fd(int fd) {
        if (fd < 0 || coord_fd_floor <= 0 || fd >= coord_fd_floor)
                return fd;
        int high = fcntl(fd, F_DUPFD_CLOEXEC, coord_fd_floor);
        if (high < 0)
                return fd;              /* low RLIMIT_NOFILE: stay */
        close(fd);
        return high;
}

int coord_connect(const struct coord_addr *a, int timeout_ms) {
        if (a->kind == COORD_UNIX) {
                struct sockaddr_un sun = { .sun_family = AF_UNIX };
                if (strlen(a->path) >= sizeof sun.sun_path)
                        return -ENAMETOOLONG;
                strscpy(sun.sun_path, a->path, sizeof sun.sun_path);
                int fd = floor_fd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
                if (fd < 0)
                        return -errno;
                int r = connect_timeout(fd, (struct sockaddr *) &sun, sizeof sun, timeout_ms);
                if (r < 0) {
                        close(fd);
                        return r;
                }
                return fd;
        }
        char port[8];
        snprintf(port, sizeof port, "%u", (unsigned) a->port);
        struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM }, *res = NULL;
        int g = getaddrinfo(a->host, port, &hints, &res);
        if (g != 0)
                return g == EAI_SYSTEM ? -errno : -EHOSTUNREACH;
        int r = -ECONNREFUSED;
        for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
                int fd = floor_fd(socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, 0));
                if (fd < 0) {
                        r = -errno;
                        continue;
                }
                r = connect_timeout(fd, ai->ai_addr, ai->ai_addrlen, timeout_ms);
                if (r == 0) {
                        int one = 1;
                        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                        freeaddrinfo(res);
                        return fd;
                }
                close(fd);
        }
        freeaddrinfo(res);
        return r;
}

int dmtcp_ckpt_signal(void) {
        const char *e = getenv("DMTCP_SIGCKPT");
        if (!e || !*e)
                return SIGUSR2;
        int v;
        if (parse_int_range(e, 1, SIGRTMAX, &v) == 0 && v != SIGKILL && v != SIGSTOP)
                return v;
        const char *n = strncmp(e, "SIG", 3) == 0 ? e + 3 : e;
        static const struct { const char *name; int sig; } names[] = {
                { "USR1", SIGUSR1 }, { "USR2", SIGUSR2 }, { "PWR", SIGPWR },
                { "XCPU", SIGXCPU }, { "URG", SIGURG }, { "WINCH", SIGWINCH },
        };
        for (size_t i = 0; i < ARRAY_SIZE(names); i++)
                if (!strcmp(n, names[i].name))
                        return names[i].sig;
        return SIGUSR2;
}

int self_exe_dir(char *buf, size_t size) {
        ssize_t n = readlink("/proc/self/exe", buf, size - 1);
        if (n < 0)
                return -errno;
        if ((size_t) n >= size - 1)
                return -ENAMETOOLONG;
        buf[n] = 0;
        char *slash = strrchr(buf, '/');
        if (!slash)
                return -EINVAL;
        *slash = 0;
        return 0;
}

int find_sibling(const char *installed_rel, const char *build_rel, char *buf, size_t size) {
        char dir[PATH_MAX], cand[PATH_MAX];
        int r = self_exe_dir(dir, sizeof dir);
        if (r < 0)
                return r;
        if (installed_rel) {
                if ((size_t) snprintf(cand, sizeof cand, "%s/%s", dir, installed_rel) < sizeof cand &&
                    access(cand, F_OK) == 0 && realpath(cand, buf) && strlen(buf) < size)
                        return 0;
        }
        /* Running from the build tree: binaries sit in <build>/<folder>/. */
        if (build_rel) {
                if ((size_t) snprintf(cand, sizeof cand, "%s/../%s", dir, build_rel) < sizeof cand &&
                    access(cand, F_OK) == 0 && realpath(cand, buf) && strlen(buf) < size)
                        return 0;
        }
        return -ENOENT;
}

int ckpt_dir_resolve(const char *opt, char *buf, size_t size) {
        const char *d = opt && *opt ? opt : getenv("DMTCP_CHECKPOINT_DIR");
        char cwd[PATH_MAX];
        if (!d || !*d) {
                if (!getcwd(cwd, sizeof cwd))
                        return -errno;
                d = cwd;
        }
        if (d[0] == '/') {
                if (strscpy(buf, d, size) >= size)
                        return -ENAMETOOLONG;
                return 0;
        }
        if (!getcwd(cwd, sizeof cwd))
                return -errno;
        int n = snprintf(buf, size, "%s/%s", cwd, d);
        return n < 0 || (size_t) n >= size ? -ENAMETOOLONG : 0;
}
