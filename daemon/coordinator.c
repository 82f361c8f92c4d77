/* dmtcp_coordinator: options, daemonizing, listeners, hardening, the loop. */
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <syslog.h>
#include <systemd/sd-daemon.h>
#include <systemd/sd-event.h>

#include "config.h"
#include "coord-commit.h"
#include "coord-harden.h"
#include "coord-log.h"
#include "coord-server.h"
#include "coord-text.h"
#include "env.h"
#include "journal.h"
#include "log.h"
#include "util.h"

#if defined(__SANITIZE_ADDRESS__)
#  define COORD_ASAN 1
#elif defined(__has_feature)
#  if __has_feature(address_sanitizer)
#    define COORD_ASAN 1
#  endif
#endif
#ifdef COORD_ASAN
/* LeakSanitizer's exit-time check stops the world with ptrace, which our
 * seccomp filter refuses by design; it would then spin forever. A sanitized
 * coordinator therefore runs without leak detection (ASan and UBSan stay on;
 * the state machine's leaks are checked by the unit tests). */
const char *__asan_default_options(void);
const char *__asan_default_options(void) {
        return "detect_leaks=0";
}
#endif

/* Exit statuses (docs in daemon/README.md). */
#define EXIT_USAGE      64
#define EXIT_ADDRINUSE  2

static int exit_code_for(int r) {
        return r == -EADDRINUSE ? EXIT_ADDRINUSE : EXIT_FAILURE;
}

/* Fork; the parent waits until the child reports readiness (a zero byte
 * on the pipe) and exits 0, or exits with the child's failure status. */
static int daemonize(int *ret_fd) {
        int p[2];
        if (pipe2(p, O_CLOEXEC) < 0)
                return -errno;
        pid_t pid = fork();
        if (pid < 0)
                return -errno;
        if (pid > 0) {
                close(p[1]);
                uint8_t code;
                ssize_t n;
                do
                        n = read(p[0], &code, 1);
                while (n < 0 && errno == EINTR);
                if (n == 1)
                        _exit(code);
                int st;
                if (waitpid(pid, &st, 0) == pid && WIFEXITED(st))
                        _exit(WEXITSTATUS(st) ?: EXIT_FAILURE);
                _exit(EXIT_FAILURE);
        }
        close(p[0]);
        if (setsid() < 0)
                return -errno;
        *ret_fd = p[1];
        return 0;
}

/* Ready: detach from the starter's stdio, so that a caller reading our
 * output (out=$(dmtcp_launch ...)) is not kept waiting by the daemon. stderr
 * stays only when it is the journal stream. */
static void daemon_ready(int fd, bool keep_stderr) {
        int null = open("/dev/null", O_RDWR | O_CLOEXEC);
        if (null >= 0) {
                dup2(null, STDIN_FILENO);
                dup2(null, STDOUT_FILENO);
                if (!keep_stderr)
                        dup2(null, STDERR_FILENO);
                if (null > STDERR_FILENO)
                        close(null);
        }
        uint8_t zero = 0;
        ssize_t n = write(fd, &zero, 1);
        (void) n;
        close(fd);
}

static void raise_nofile(void) {
        struct rlimit rl;
        if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
                rl.rlim_cur = MIN(rl.rlim_max, (rlim_t) 65536);
                (void) setrlimit(RLIMIT_NOFILE, &rl);
        }
}

static int write_port_file(const char *path, uint16_t port) {
        char buf[16];
        int n = snprintf(buf, sizeof buf, "%u\n", (unsigned) port);
        return write_file_atomic(path, buf, (size_t) n, 0644);
}

static int setup_listeners(struct coord_server *srv, const struct coord_options *o, bool *own_socket) {
        char err[512];
        struct coord_listener ls[COORD_MAX_LISTENERS];
        int r;
        int n = coord_listen_activated(ls, ARRAY_SIZE(ls), err, sizeof err);
        if (n < 0) {
                log_error("%s", err);
                return n;
        }
        if (n > 0) {
                for (int i = 0; i < n; i++) {
                        r = coord_server_add_listener(srv, &ls[i]);
                        if (r < 0)
                                return log_error_errno(r, "Failed to watch socket-activated fd %d: %m", ls[i].fd);
                        if (!ls[i].tcp) {
                                struct sockaddr_un sun;
                                socklen_t sl = sizeof sun;
                                if (getsockname(ls[i].fd, (struct sockaddr *) &sun, &sl) == 0 && sun.sun_path[0])
                                        strscpy(srv->socket_path, sun.sun_path, sizeof srv->socket_path);
                        }
                }
                log_info("using %d socket-activated listener(s)", n);
                return 0;
        }

        char path[108];
        r = coord_socket_path(o->job, path, sizeof path);
        if (r < 0)
                return log_error_errno(r, "Cannot place the coordinator socket of job %s: %m; use a shorter XDG_RUNTIME_DIR",
                                       o->job[0] ? o->job : "default");
        struct coord_listener u = { .fd = -1 };
        r = coord_listen_unix(path, &u.fd, err, sizeof err);
        if (r < 0) {
                log_error("%s", err);
                return r;
        }
        *own_socket = true;
        strscpy(srv->socket_path, path, sizeof srv->socket_path);
        r = coord_server_add_listener(srv, &u);
        if (r < 0) {
                safe_close(u.fd);
                return log_error_errno(r, "Failed to watch %s: %m", path);
        }

        struct coord_listener t = { .fd = -1 };
        r = coord_listen_tcp(o->bind, o->port, &t, err, sizeof err);
        if (r < 0) {
                log_error("%s", err);
                return r;
        }
        r = coord_server_add_listener(srv, &t);
        if (r < 0) {
                safe_close(t.fd);
                return log_error_errno(r, "Failed to watch the TCP listener: %m");
        }
        return 0;
}

static bool needs_secret(const struct coord_server *srv) {
        for (size_t i = 0; i < srv->n_listeners; i++)
                if (srv->listeners[i].tcp && !srv->listeners[i].loopback)
                        return true;
        return false;
}

static int on_signal(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata) {
        struct coord_server *srv = userdata;
        log_info("received %s, exiting", strsignal((int) si->ssi_signo));
        (void) sd_notify(0, "STOPPING=1");
        srv->exit_status = 0;
        return sd_event_exit(sd_event_source_get_event(s), 0);
}

int main(int argc, char *argv[]) {
        struct coord_options o;
        char err[512];
        int r;

        log_set_ident("dmtcp_coordinator");
        if (coord_parse_options(argc, argv, &o, err, sizeof err) < 0) {
                fprintf(stderr, "dmtcp_coordinator: %s\n", err);
                return EXIT_USAGE;
        }
        if (o.help) {
                coord_print_help(stdout);
                return 0;
        }
        if (o.version) {
                printf("dmtcp_coordinator %s\n", DMTCP_VERSION);
                return 0;
        }
        /* -q quiets stderr; the journal keeps every event (the job's history). */
        if (journal_stream_is_stderr())
                journal_install();
        else if (o.quiet)
                log_set_max_level(LOG_WARNING);

        struct coord_config cfg = {
                .pid = 0,
                .ckptdir_option = o.ckptdir_option,
                .interval = o.interval,
                .interval_fixed = o.interval_set,
                .exit_on_last = o.exit_on_last,
                .restart_timeout_usec = (uint64_t) o.restart_timeout * 1000000u,
                .stop_timeout_usec = (uint64_t) o.stop_timeout * 1000000u,
                .kill_grace_ms = COORD_KILL_GRACE_MS,
        };
        strscpy(cfg.host, host_name(), sizeof cfg.host);
        strscpy(cfg.ckptdir, o.ckptdir, sizeof cfg.ckptdir);
        if (!getcwd(cfg.cwd, sizeof cfg.cwd)) {
                log_error_errno(errno, "Cannot determine the current directory: %m");
                return EXIT_FAILURE;
        }

        int ready_fd = -1;
        if (o.daemonize) {
                r = daemonize(&ready_fd);
                if (r < 0) {
                        log_error_errno(r, "Cannot start in the background: %m");
                        return EXIT_FAILURE;
                }
        }
        cfg.pid = (uint32_t) getpid();

        signal(SIGPIPE, SIG_IGN);
        sigset_t ss;
        sigemptyset(&ss);
        sigaddset(&ss, SIGTERM);
        sigaddset(&ss, SIGINT);
        sigaddset(&ss, SIGHUP);
        sigprocmask(SIG_BLOCK, &ss, NULL);
        raise_nofile();

        sd_event *e = NULL;
        struct coord_server *srv = NULL;
        bool own_socket = false;
        int status = EXIT_FAILURE;

        r = sd_event_new(&e);
        if (r < 0) {
                log_error_errno(r, "Cannot create the event loop: %m");
                goto out;
        }
        r = coord_server_new(e, &o, &cfg, &srv);
        if (r < 0) {
                log_error_errno(r, "Cannot set up the coordinator: %m");
                goto out;
        }
        r = setup_listeners(srv, &o, &own_socket);
        if (r < 0) {
                status = exit_code_for(r);
                goto out;
        }
        if (needs_secret(srv)) {
                const char *dir = o.ckptdir[0] ? o.ckptdir : cfg.cwd;
                r = coord_secret_load_or_create(dir, srv->secret, err, sizeof err);
                if (r < 0) {
                        log_error("listening beyond loopback needs a secret: %s", err);
                        goto out;
                }
                srv->have_secret = true;
                log_info("peers beyond loopback must present the secret in %s/%s", dir, COORD_SECRET_FILE);
        }
        (void) sd_event_add_signal(e, NULL, SIGTERM, on_signal, srv);
        (void) sd_event_add_signal(e, NULL, SIGINT, on_signal, srv);
        (void) sd_event_add_signal(e, NULL, SIGHUP, on_signal, srv);

        r = coord_harden();
        if (r < 0)
                goto out;
        /* Last: whoever waits for the port file finds a coordinator ready
         * in every respect (listening, secret in place, confined). */
        if (o.port_file[0] && srv->tcp_port) {
                r = write_port_file(o.port_file, srv->tcp_port);
                if (r < 0) {
                        log_error_errno(r, "Cannot write port file %s: %m", o.port_file);
                        goto out;
                }
        }
        if (!o.daemonize && coord_server_enable_console(srv) < 0)
                log_debug("standard input is not pollable: no console commands");

        struct coord_log started = {
                .level = LOG_INFO,
                .event = COORD_EV_STARTED,
        };
        text_printf(started.text, sizeof started.text,
                 "coordinator %s started (pid %u): port %u, socket %s, job %s, checkpoint directory %s",
                 DMTCP_VERSION, (unsigned) getpid(), srv->tcp_port, srv->socket_path[0] ? srv->socket_path : "-",
                 o.job[0] ? o.job : "default", o.ckptdir[0] ? o.ckptdir : "(from the first process)");
        coord_log_emit(&started, o.job);

        coord_server_start(srv);
        if (ready_fd >= 0) {
                daemon_ready(ready_fd, journal_stream_is_stderr());
                ready_fd = -1;
        }
        r = sd_event_loop(e);
        status = r < 0 ? EXIT_FAILURE : srv->exit_status;

out:
        if (own_socket && srv && srv->socket_path[0])
                (void) unlink(srv->socket_path);
        if (o.port_file[0] && srv && srv->tcp_port && status == 0)
                (void) unlink(o.port_file);
        coord_server_free(srv);
        sd_event_unref(e);
        if (ready_fd >= 0) {
                /* Tell the waiting parent we failed: it exits with our status. */
                close(ready_fd);
        }
        return status;
}
