#include "coord-auth.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdarg.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/un.h>

#include "coord-commit.h"
#include "coord-text.h"
#include "log.h"
#include "util.h"

bool coord_sockaddr_is_loopback(const struct sockaddr *sa) {
        if (sa->sa_family == AF_INET) {
                const struct sockaddr_in *in = (const struct sockaddr_in *) sa;
                return (ntohl(in->sin_addr.s_addr) >> 24) == 127;
        }
        if (sa->sa_family == AF_INET6) {
                const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *) sa;
                if (IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr))
                        return true;
                if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr))
                        return in6->sin6_addr.s6_addr[12] == 127;
        }
        return false;
}

void coord_sockaddr_format(const struct sockaddr *sa, char *buf, size_t size) {
        char host[INET6_ADDRSTRLEN] = "?";
        if (sa->sa_family == AF_INET) {
                const struct sockaddr_in *in = (const struct sockaddr_in *) sa;
                inet_ntop(AF_INET, &in->sin_addr, host, sizeof host);
                snprintf(buf, size, "%s:%u", host, ntohs(in->sin_port));
        } else if (sa->sa_family == AF_INET6) {
                const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *) sa;
                inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof host);
                snprintf(buf, size, "[%s]:%u", host, ntohs(in6->sin6_port));
        } else if (sa->sa_family == AF_UNIX)
                snprintf(buf, size, "unix");
        else
                snprintf(buf, size, "family %d", sa->sa_family);
}

/* An IPv4-mapped IPv6 address as the IPv4 socket address it stands for:
 * the other end of a dual-stack connection is an AF_INET socket. */
static void unmap_v4(const struct sockaddr *sa, struct sockaddr_storage *out) {
        memset(out, 0, sizeof *out);
        if (sa->sa_family == AF_INET6) {
                const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *) sa;
                if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr)) {
                        struct sockaddr_in *in = (struct sockaddr_in *) out;
                        in->sin_family = AF_INET;
                        in->sin_port = in6->sin6_port;
                        memcpy(&in->sin_addr, &in6->sin6_addr.s6_addr[12], 4);
                        return;
                }
                memcpy(out, sa, sizeof(struct sockaddr_in6));
                return;
        }
        memcpy(out, sa, sizeof(struct sockaddr_in));
}

static void fill_diag_addr(const struct sockaddr *sa, __be16 *port, __be32 addr[4]) {
        if (sa->sa_family == AF_INET) {
                const struct sockaddr_in *in = (const struct sockaddr_in *) sa;
                *port = in->sin_port;
                addr[0] = in->sin_addr.s_addr;
        } else {
                const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *) sa;
                *port = in6->sin6_port;
                memcpy(addr, &in6->sin6_addr, 16);
        }
}

static int diag_query(int family, const struct sockaddr *local, const struct sockaddr *peer, uint32_t *ret) {
        _cleanup_close_ int fd = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
        if (fd < 0)
                return -errno;
        struct {
                struct nlmsghdr nlh;
                struct inet_diag_req_v2 req;
        } q = {
                .nlh = {
                        .nlmsg_len = sizeof q,
                        .nlmsg_type = SOCK_DIAG_BY_FAMILY,
                        .nlmsg_flags = NLM_F_REQUEST,
                        .nlmsg_seq = 1,
                },
                .req = {
                        .sdiag_family = (uint8_t) family,
                        .sdiag_protocol = IPPROTO_TCP,
                        .idiag_states = ~0u,
                        .id = {
                                .idiag_cookie = { INET_DIAG_NOCOOKIE, INET_DIAG_NOCOOKIE },
                        },
                },
        };
        /* The socket we look for is the peer's: its source is the peer
         * address, its destination is our local address. */
        fill_diag_addr(peer, &q.req.id.idiag_sport, q.req.id.idiag_src);
        fill_diag_addr(local, &q.req.id.idiag_dport, q.req.id.idiag_dst);
        struct sockaddr_nl nl = { .nl_family = AF_NETLINK };
        if (sendto(fd, &q, sizeof q, 0, (struct sockaddr *) &nl, sizeof nl) < 0)
                return -errno;

        union {
                struct nlmsghdr h;
                uint8_t buf[8192];
        } resp;
        struct pollfd pfd = { .fd = fd, .events = POLLIN };
        int k = poll(&pfd, 1, 1000);
        if (k < 0)
                return -errno;
        if (k == 0)
                return -ETIMEDOUT;
        ssize_t n = recv(fd, resp.buf, sizeof resp.buf, 0);
        if (n < 0)
                return -errno;
        for (struct nlmsghdr *h = &resp.h; NLMSG_OK(h, (size_t) n); h = NLMSG_NEXT(h, n)) {
                if (h->nlmsg_type == NLMSG_ERROR) {
                        const struct nlmsgerr *e = NLMSG_DATA(h);
                        if (h->nlmsg_len < NLMSG_LENGTH(sizeof *e))
                                return -EBADMSG;
                        return e->error < 0 ? e->error : -ENOENT;
                }
                if (h->nlmsg_type != SOCK_DIAG_BY_FAMILY)
                        continue;
                if (h->nlmsg_len < NLMSG_LENGTH(sizeof(struct inet_diag_msg)))
                        return -EBADMSG;
                const struct inet_diag_msg *m = NLMSG_DATA(h);
                *ret = m->idiag_uid;
                return 0;
        }
        return -ENOENT;
}

int coord_sock_diag_uid(const struct sockaddr *local, const struct sockaddr *peer, uint32_t *ret) {
        struct sockaddr_storage l, p;
        unmap_v4(local, &l);
        unmap_v4(peer, &p);
        if (l.ss_family != p.ss_family)
                return -EAFNOSUPPORT;
        int r = diag_query(l.ss_family, (struct sockaddr *) &l, (struct sockaddr *) &p, ret);
        if (r == -ENOENT && local->sa_family == AF_INET6 && l.ss_family == AF_INET)
                /* A v4-mapped peer that is itself an AF_INET6 socket. */
                r = diag_query(AF_INET6, local, peer, ret);
        return r;
}

int coord_peer_identify(int fd, struct coord_peer *p, bool *is_tcp, bool *loopback) {
        struct sockaddr_storage local, peer;
        socklen_t ll = sizeof local, pl = sizeof peer;
        memset(p, 0, sizeof *p);
        *is_tcp = *loopback = false;
        if (getsockname(fd, (struct sockaddr *) &local, &ll) < 0 ||
            getpeername(fd, (struct sockaddr *) &peer, &pl) < 0)
                return -errno;
        if (local.ss_family == AF_UNIX) {
                struct ucred cred;
                socklen_t cl = sizeof cred;
                strscpy(p->addr, "unix", sizeof p->addr);
                if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &cl) < 0)
                        return -errno;
                p->have_uid = p->have_pid = true;
                p->uid = cred.uid;
                p->pid = (uint32_t) cred.pid;
                return 0;
        }
        if (local.ss_family != AF_INET && local.ss_family != AF_INET6)
                return -EAFNOSUPPORT;
        *is_tcp = true;
        coord_sockaddr_format((struct sockaddr *) &peer, p->addr, sizeof p->addr);
        *loopback = coord_sockaddr_is_loopback((struct sockaddr *) &peer);
        if (*loopback) {
                int r = coord_sock_diag_uid((struct sockaddr *) &local, (struct sockaddr *) &peer, &p->uid);
                if (r < 0)
                        log_debug_errno(r, "sock_diag lookup of %s failed: %m", p->addr);
                else
                        p->have_uid = true;
        }
        return 0;
}

static bool hex_ok(const char *s, size_t n) {
        for (size_t i = 0; i < n; i++)
                if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
                        return false;
        return true;
}

int coord_secret_load_or_create(const char *dir, char secret[COORD_SECRET_LEN + 1], char *err, size_t errsize) {
        char path[PATH_MAX];
        int n = snprintf(path, sizeof path, "%s/%s", dir, COORD_SECRET_FILE);
        if (n < 0 || (size_t) n >= sizeof path)
                return errorf(err, errsize, -ENAMETOOLONG, "%s: path too long", dir);
        int r = mkdir_p(dir, 0700);
        if (r < 0)
                return errorf(err, errsize, r, "cannot create %s for the secret: %m", dir);

        _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        if (fd >= 0) {
                struct stat st;
                char buf[COORD_SECRET_LEN + 2];
                if (fstat(fd, &st) < 0)
                        return errorf(err, errsize, -errno, "cannot stat %s: %m", path);
                if (!S_ISREG(st.st_mode) || st.st_uid != geteuid() || (st.st_mode & 077))
                        return errorf(err, errsize, -EPERM,
                                     "secret %s is not a private file of ours (want owner uid %u, mode 0600); remove it",
                                     path, (unsigned) geteuid());
                ssize_t k = read(fd, buf, sizeof buf);
                if (k < 0)
                        return errorf(err, errsize, -errno, "cannot read %s: %m", path);
                if (k >= COORD_SECRET_LEN && (k == COORD_SECRET_LEN || (k == COORD_SECRET_LEN + 1 && buf[COORD_SECRET_LEN] == '\n')) &&
                    hex_ok(buf, COORD_SECRET_LEN)) {
                        memcpy(secret, buf, COORD_SECRET_LEN);
                        secret[COORD_SECRET_LEN] = 0;
                        return 0;
                }
                return errorf(err, errsize, -EBADMSG, "secret %s is not 64 hex digits; remove it to make a new one", path);
        }
        if (errno != ENOENT)
                return errorf(err, errsize, -errno, "cannot open %s: %m", path);

        uint8_t raw[COORD_SECRET_LEN / 2];
        if (getrandom(raw, sizeof raw, 0) != (ssize_t) sizeof raw)
                return errorf(err, errsize, -EIO, "cannot get random bytes for the secret");
        for (size_t i = 0; i < sizeof raw; i++)
                snprintf(secret + 2 * i, 3, "%02x", raw[i]);
        char line[COORD_SECRET_LEN + 2];
        memcpy(line, secret, COORD_SECRET_LEN);
        line[COORD_SECRET_LEN] = '\n';
        r = write_file_atomic(path, line, COORD_SECRET_LEN + 1, 0600);
        if (r < 0)
                return errorf(err, errsize, r, "cannot write %s: %m", path);
        return 0;
}

bool coord_secret_equal(const char *ours, const char *given) {
        size_t gl = strnlen(given, PROTO_ID_MAX + 1);
        unsigned diff = gl != COORD_SECRET_LEN;
        for (size_t i = 0; i < COORD_SECRET_LEN; i++)
                diff |= (unsigned) (uint8_t) ours[i] ^ (unsigned) (uint8_t) (i < gl ? given[i] : 0);
        return diff == 0;
}
