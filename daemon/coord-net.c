#include "coord-net.h"

#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <systemd/sd-daemon.h>

#include "coord-auth.h"
#include "coord-text.h"
#include "log.h"
#include "util.h"

static int fd_nonblock(int fd) {
        int fl = fcntl(fd, F_GETFL);
        if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
                return -errno;
        return 0;
}

/* ---- listeners -------------------------------------------------------- */

static int socket_dir_ensure(const char *dir, char *err, size_t errsize) {
        int r = mkdir_p(dir, 0700);
        if (r < 0)
                return errorf(err, errsize, r, "cannot create socket directory %s: %m", dir);
        struct stat st;
        if (lstat(dir, &st) < 0)
                return errorf(err, errsize, -errno, "cannot stat socket directory %s: %m", dir);
        if (!S_ISDIR(st.st_mode) || st.st_uid != geteuid() || (st.st_mode & 022))
                return errorf(err, errsize, -EPERM,
                             "socket directory %s is not a private directory of ours (owner %u, mode %04o); remove it or run chmod 700 on it",
                             dir, (unsigned) st.st_uid, (unsigned) (st.st_mode & 07777));
        return 0;
}

int coord_listen_unix(const char *path, int *ret_fd, char *err, size_t errsize) {
        struct sockaddr_un sun = { .sun_family = AF_UNIX };
        if (strscpy(sun.sun_path, path, sizeof sun.sun_path) >= sizeof sun.sun_path)
                return errorf(err, errsize, -ENAMETOOLONG, "socket path %s is too long; use a shorter XDG_RUNTIME_DIR or TMPDIR", path);
        char dir[PATH_MAX];
        strscpy(dir, path, sizeof dir);
        char *slash = strrchr(dir, '/');
        if (!slash || slash == dir)
                return errorf(err, errsize, -EINVAL, "socket path %s has no directory", path);
        *slash = 0;
        int r = socket_dir_ensure(dir, err, errsize);
        if (r < 0)
                return r;

        struct stat st;
        if (lstat(path, &st) == 0) {
                if (!S_ISSOCK(st.st_mode))
                        return errorf(err, errsize, -EEXIST, "%s exists and is not a socket; remove it", path);
                _cleanup_close_ int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
                if (probe < 0)
                        return errorf(err, errsize, -errno, "socket: %m");
                if (connect(probe, (struct sockaddr *) &sun, sizeof sun) == 0)
                        return errorf(err, errsize, -EADDRINUSE,
                                     "a coordinator is already listening on %s; stop it with dmtcp_command -q or use another --job", path);
                if (unlink(path) < 0 && errno != ENOENT)
                        return errorf(err, errsize, -errno, "cannot remove stale socket %s: %m", path);
                log_info("replaced stale socket %s", path);
        }

        _cleanup_close_ int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return errorf(err, errsize, -errno, "socket: %m");
        mode_t old = umask(0177);
        r = bind(fd, (struct sockaddr *) &sun, sizeof sun) < 0 ? -errno : 0;
        umask(old);
        if (r == -EADDRINUSE)
                return errorf(err, errsize, r, "%s is in use by another coordinator; use another --job", path);
        if (r < 0)
                return errorf(err, errsize, r, "cannot bind %s: %m", path);
        if (chmod(path, 0600) < 0)
                return errorf(err, errsize, -errno, "cannot chmod %s: %m", path);
        if (listen(fd, SOMAXCONN) < 0)
                return errorf(err, errsize, -errno, "cannot listen on %s: %m", path);
        *ret_fd = TAKE_FD(fd);
        return 0;
}

int coord_listen_tcp(const char *bind_addr, int port, struct coord_listener *l, char *err, size_t errsize) {
        const char *host = bind_addr && *bind_addr ? bind_addr : "127.0.0.1";
        char ps[8];
        snprintf(ps, sizeof ps, "%d", port);
        struct addrinfo hints = {
                .ai_family = AF_UNSPEC,
                .ai_socktype = SOCK_STREAM,
                .ai_flags = AI_PASSIVE | AI_NUMERICSERV,
        }, *res = NULL;
        int g = getaddrinfo(host, ps, &hints, &res);
        if (g != 0)
                return errorf(err, errsize, -EADDRNOTAVAIL, "cannot resolve --bind address %s: %s", host, gai_strerror(g));
        int r;
        _cleanup_close_ int fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0) {
                r = -errno;
                freeaddrinfo(res);
                return errorf(err, errsize, r, "socket: %m");
        }
        int one = 1, zero = 0;
        (void) setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (res->ai_family == AF_INET6)
                (void) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero);
        r = bind(fd, res->ai_addr, res->ai_addrlen) < 0 ? -errno : 0;
        freeaddrinfo(res);
        if (r == -EADDRINUSE)
                return errorf(err, errsize, r, "port %d on %s is in use (another coordinator?); use --port 0 or another port",
                             port, host);
        if (r < 0)
                return errorf(err, errsize, r, "cannot bind %s port %d: %m", host, port);
        if (listen(fd, SOMAXCONN) < 0)
                return errorf(err, errsize, -errno, "cannot listen on %s port %d: %m", host, port);
        struct sockaddr_storage ss;
        socklen_t sl = sizeof ss;
        if (getsockname(fd, (struct sockaddr *) &ss, &sl) < 0)
                return errorf(err, errsize, -errno, "getsockname: %m");
        l->fd = TAKE_FD(fd);
        l->tcp = true;
        l->loopback = coord_sockaddr_is_loopback((struct sockaddr *) &ss);
        l->port = ntohs(ss.ss_family == AF_INET ? ((struct sockaddr_in *) &ss)->sin_port :
                                                  ((struct sockaddr_in6 *) &ss)->sin6_port);
        return 0;
}

int coord_listen_activated(struct coord_listener *ls, size_t max, char *err, size_t errsize) {
        char **names = NULL;
        int n = sd_listen_fds_with_names(1, &names);
        if (n < 0)
                return errorf(err, errsize, n, "cannot get sockets from systemd: %m");
        int r = 0;
        size_t k = 0;
        for (int i = 0; i < n; i++) {
                int fd = SD_LISTEN_FDS_START + i;
                const char *name = names && names[i] ? names[i] : "";
                bool is_unix = !strcmp(name, "coord"), is_tcp = !strcmp(name, "coord-tcp");
                if (!is_unix && !is_tcp) {
                        if (sd_is_socket_unix(fd, SOCK_STREAM, 1, NULL, 0) > 0)
                                is_unix = true;
                        else if (sd_is_socket_inet(fd, AF_UNSPEC, SOCK_STREAM, 1, 0) > 0)
                                is_tcp = true;
                }
                if ((!is_unix && !is_tcp) || k >= max) {
                        r = errorf(err, errsize, -EINVAL,
                                  "socket-activated fd %d (%s) is not a listening Unix or TCP stream socket; fix the socket unit",
                                  fd, name[0] ? name : "unnamed");
                        break;
                }
                struct coord_listener *l = &ls[k++];
                *l = (struct coord_listener) { .fd = fd, .tcp = is_tcp };
                (void) fd_nonblock(fd);
                (void) fcntl(fd, F_SETFD, FD_CLOEXEC);
                if (is_tcp) {
                        struct sockaddr_storage ss;
                        socklen_t sl = sizeof ss;
                        if (getsockname(fd, (struct sockaddr *) &ss, &sl) == 0) {
                                l->loopback = coord_sockaddr_is_loopback((struct sockaddr *) &ss);
                                l->port = ntohs(ss.ss_family == AF_INET ? ((struct sockaddr_in *) &ss)->sin_port :
                                                                          ((struct sockaddr_in6 *) &ss)->sin6_port);
                        }
                }
        }
        for (int i = 0; names && i < n; i++)
                free(names[i]);
        free(names);
        return r < 0 ? r : (int) k;
}

/* ---- connections ------------------------------------------------------ */

static void conn_update_events(struct coord_conn *c) {
        if (!c->io)
                return;
        uint32_t ev = EPOLLIN;
        if (c->out_len > c->out_off)
                ev |= EPOLLOUT;
        (void) sd_event_source_set_io_events(c->io, ev);
}

static void conn_finish(struct coord_conn *c, const char *why) {
        if (c->ops && c->ops->closed)
                c->ops->closed(c, why);
        coord_conn_free(c);
}

static int on_reap(sd_event_source *s, void *userdata) {
        struct coord_conn *c = userdata;
        conn_finish(c, c->dead_why);
        return 0;
}

void coord_conn_abort(struct coord_conn *c, const char *why) {
        if (c->dead)
                return;
        c->dead = true;
        strscpy(c->dead_why, why, sizeof c->dead_why);
        c->io = sd_event_source_disable_unref(c->io);
        if (sd_event_add_defer(c->event, &c->reap, on_reap, c) < 0) {
                /* Cannot schedule: the owner still learns it through the
                 * next event-loop iteration never coming; free at exit. */
                log_error("cannot schedule closing of a connection; it stays until exit");
        }
}

static int on_linger(sd_event_source *s, uint64_t usec, void *userdata) {
        conn_finish(userdata, "closed after refusal");
        return 0;
}

static int conn_flush(struct coord_conn *c) {
        while (c->out_off < c->out_len) {
                ssize_t n = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL | MSG_DONTWAIT);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        if (errno == EAGAIN)
                                break;
                        return -errno;
                }
                c->out_off += (size_t) n;
        }
        if (c->out_off == c->out_len)
                c->out_off = c->out_len = 0;
        if (c->closing && c->out_len == 0 && !c->shut) {
                c->shut = true;
                (void) shutdown(c->fd, SHUT_WR);
                if (!c->linger)
                        (void) sd_event_add_time_relative(c->event, &c->linger, CLOCK_MONOTONIC,
                                                          COORD_LINGER_USEC, 0, on_linger, c);
        }
        conn_update_events(c);
        return 0;
}

void coord_conn_flush_now(struct coord_conn *c) {
        if (!c->dead)
                (void) conn_flush(c);
}

int coord_conn_send(struct coord_conn *c, const struct proto_msg *m) {
        if (c->dead || c->shut)
                return -ESHUTDOWN;
        uint8_t buf[PROTO_MAX_MESSAGE];
        int n = proto_encode(m, buf, sizeof buf);
        if (n < 0)
                return n;
        if (c->out_off > 0 && c->out_len + (size_t) n > c->out_cap) {
                memmove(c->out, c->out + c->out_off, c->out_len - c->out_off);
                c->out_len -= c->out_off;
                c->out_off = 0;
        }
        if (c->out_len + (size_t) n > COORD_CONN_OUT_MAX) {
                coord_conn_abort(c, "does not read its messages (output buffer full)");
                return -ENOBUFS;
        }
        if (c->out_len + (size_t) n > c->out_cap) {
                size_t cap = MAX(c->out_cap * 2, c->out_len + (size_t) n);
                cap = MIN(MAX(cap, (size_t) 4096), (size_t) COORD_CONN_OUT_MAX);
                uint8_t *p = realloc(c->out, cap);
                if (!p) {
                        coord_conn_abort(c, "out of memory for its output");
                        return -ENOMEM;
                }
                c->out = p;
                c->out_cap = cap;
        }
        memcpy(c->out + c->out_len, buf, (size_t) n);
        c->out_len += (size_t) n;
        conn_update_events(c);
        return 0;
}

void coord_conn_close_soon(struct coord_conn *c) {
        if (c->closing || c->dead)
                return;
        c->closing = true;
        c->in_len = 0;
        (void) conn_flush(c);
}

static void describe_error(int err, char *buf, size_t size) {
        switch (err) {
        case -EPROTO:
                snprintf(buf, size, "bad magic (not the dmtcp protocol)");
                break;
        case -EPROTONOSUPPORT:
                snprintf(buf, size, "unsupported protocol version");
                break;
        case -EMSGSIZE:
                snprintf(buf, size, "message length over the %u byte limit", PROTO_MAX_PAYLOAD);
                break;
        case -EOPNOTSUPP:
                snprintf(buf, size, "unknown message type");
                break;
        default:
                snprintf(buf, size, "malformed message (%s)", strerror(-err));
                break;
        }
}

/* Parse and deliver the complete frames in the input buffer. Returns false
 * when the connection must not be read any more. */
static bool conn_parse(struct coord_conn *c) {
        size_t off = 0;
        bool ok = true;
        while (!c->closing && !c->dead && off < c->in_len) {
                int len = proto_frame_length(c->in + off, c->in_len - off);
                if (len == 0)
                        break;
                char what[96];
                if (len < 0) {
                        describe_error(len, what, sizeof what);
                        c->ops->bad_input(c, len, what);
                        ok = false;
                        break;
                }
                if ((size_t) len > c->in_len - off) {
                        if ((size_t) len > c->in_cap) {
                                uint8_t *p = realloc(c->in, (size_t) len);
                                if (!p) {
                                        coord_conn_abort(c, "out of memory for its input");
                                        return false;
                                }
                                c->in = p;
                                c->in_cap = (size_t) len;
                        }
                        break;
                }
                struct proto_msg m;
                int r = proto_decode(c->in + off, (size_t) len, &m);
                off += (size_t) len;
                if (r < 0) {
                        describe_error(r, what, sizeof what);
                        c->ops->bad_input(c, r, what);
                        ok = false;
                        break;
                }
                c->ops->message(c, &m);
        }
        if (c->closing || c->dead)
                return false;
        memmove(c->in, c->in + off, c->in_len - off);
        c->in_len -= off;
        return ok;
}

static int on_io(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        struct coord_conn *c = userdata;

        if (revents & EPOLLOUT) {
                int r = conn_flush(c);
                if (r < 0) {
                        conn_finish(c, c->closing ? "closed after refusal" : "connection reset");
                        return 0;
                }
        }
        if (!(revents & (EPOLLIN | EPOLLHUP | EPOLLERR)))
                return 0;

        if (c->closing) {
                /* Drain and discard until the peer closes, so our REJECT is
                 * not destroyed by a reset. */
                uint8_t junk[4096];
                ssize_t n = recv(fd, junk, sizeof junk, MSG_DONTWAIT);
                if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR))
                        conn_finish(c, "closed after refusal");
                return 0;
        }

        if (c->in_cap - c->in_len < 1024) {
                size_t cap = MIN(MAX(c->in_cap * 2, (size_t) 4096), (size_t) PROTO_MAX_MESSAGE);
                if (cap > c->in_cap) {
                        uint8_t *p = realloc(c->in, cap);
                        if (!p) {
                                conn_finish(c, "out of memory");
                                return 0;
                        }
                        c->in = p;
                        c->in_cap = cap;
                }
        }
        ssize_t n = recv(fd, c->in + c->in_len, c->in_cap - c->in_len, MSG_DONTWAIT);
        if (n < 0) {
                if (errno == EAGAIN || errno == EINTR)
                        return 0;
                char why[96];
                snprintf(why, sizeof why, "connection error (%s)", strerror(errno));
                conn_finish(c, why);
                return 0;
        }
        if (n == 0) {
                if (c->in_len > 0) {
                        /* A frame started but never finished. */
                        int len = proto_frame_length(c->in, c->in_len);
                        if (len >= 0) {
                                char what[96];
                                snprintf(what, sizeof what, "truncated message (%zu bytes, then end of stream)", c->in_len);
                                c->ops->bad_input(c, -EBADMSG, what);
                                if (c->closing && !c->dead) {
                                        coord_conn_flush_now(c);
                                        conn_finish(c, "closed in the middle of a message");
                                        return 0;
                                }
                        }
                }
                if (!c->dead)
                        conn_finish(c, "connection closed");
                return 0;
        }
        c->in_len += (size_t) n;
        conn_parse(c);
        return 0;
}

int coord_conn_new(sd_event *e, int fd, const struct coord_conn_ops *ops, void *userdata, struct coord_conn **ret) {
        struct coord_conn *c = calloc(1, sizeof *c);
        if (!c)
                return -ENOMEM;
        c->fd = fd;
        c->ops = ops;
        c->userdata = userdata;
        c->event = sd_event_ref(e);
        int r = fd_nonblock(fd);
        if (r == 0)
                r = sd_event_add_io(e, &c->io, fd, EPOLLIN, on_io, c);
        if (r < 0) {
                c->fd = -1;
                coord_conn_free(c);
                return r;
        }
        *ret = c;
        return 0;
}

void coord_conn_free(struct coord_conn *c) {
        if (!c)
                return;
        sd_event_source_disable_unref(c->io);
        sd_event_source_disable_unref(c->linger);
        sd_event_source_disable_unref(c->reap);
        sd_event_source_disable_unref(c->hello_timer);
        safe_close(c->fd);
        sd_event_unref(c->event);
        free(c->in);
        free(c->out);
        free(c);
}
