/* Start-up of the runtime in a launched program: read the environment
 * contract (DESIGN.md), join the coordinator, install the checkpoint signal
 * handler and start the checkpoint thread. A restored process never runs
 * this: its runtime is in the restored memory and resumes in restart.c. */
#include <dlfcn.h>
#include <fcntl.h>
#include <pthread.h>
#include <string.h>
#include <sys/mman.h>

#include "client.h"
#include "raw-syscall.h"
#include "rt.h"
#include "util.h"

struct rt_state rt = { .coord_fd = -1 };
struct rt_thread rt_threads[RT_MAX_THREADS];
struct rst_incoming *volatile rt_incoming;
uint64_t rt_trace_t0;


static bool env_bool(const char *name, bool dflt) {
        const char *e = getenv(name);
        int b = e ? parse_bool(e) : -1;
        return b < 0 ? dflt : b;
}

static void read_secret(void) {
        const char *s = getenv("DMTCP_SECRET");
        if (s && *s) {
                strscpy(rt.cfg.secret, s, sizeof rt.cfg.secret);
                return;
        }
        char path[PATH_MAX + 32];
        const char *f = getenv("DMTCP_SECRET_FILE");
        if (f && *f)
                strscpy(path, f, sizeof path);
        else
                snprintf(path, sizeof path, "%s/.dmtcp-secret", rt.cfg.ckptdir);
        char buf[PROTO_ID_MAX + 2];
        if (read_small_file(path, buf, sizeof buf) > 0) {
                buf[strcspn(buf, "\r\n")] = 0;
                strscpy(rt.cfg.secret, buf, sizeof rt.cfg.secret);
        }
}

static int config_from_env(void) {
        struct rt_config *c = &rt.cfg;
        coord_fd_floor = RT_FD_BASE;
        const char *job = getenv("DMTCP_JOB");
        if (job && job_name_valid(job))
                strscpy(c->job, job, sizeof c->job);
        int r = coord_addr_resolve(&c->coord, NULL, -1, c->job);
        if (r < 0)
                return r;
        /* dmtcp_launch (and a restarted runtime, for its children) records
         * the exact address in DMTCP_COORD: "unix:PATH" or "tcp:HOST:PORT". */
        const char *ca = getenv("DMTCP_COORD");
        if (ca && rt_coord_addr_parse(ca, &c->coord) < 0)
                rt_warn("ignoring a malformed DMTCP_COORD=%s", ca);
        r = ckpt_dir_resolve(NULL, c->ckptdir, sizeof c->ckptdir);
        if (r < 0)
                return r;
        c->gzip = env_bool("DMTCP_GZIP", true);
        c->cow = env_bool("DMTCP_COW_CHECKPOINT", true);
        c->ckpt_libraries = env_bool("DMTCP_CKPT_LIBRARIES", false);
        c->quiet = env_bool("DMTCP_QUIET", false);
        c->sigckpt = dmtcp_ckpt_signal();
        c->fail_rc = dmtcp_fail_rc();
        const char *iv = getenv("DMTCP_CHECKPOINT_INTERVAL");
        if (iv)
                parse_u32(iv, &c->interval);
        const char *comp = getenv("DMTCP_COMPUTATION");
        if (comp)
                strscpy(c->comp_id, comp, sizeof c->comp_id);
        char exe[PATH_MAX];
        ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
        exe[n > 0 ? n : 0] = 0;
        strscpy(c->program, n > 0 ? path_basename(exe) : "unknown", sizeof c->program);
        rt_new_upid();
        read_secret();
        if (c->quiet)
                log_set_max_level(LOG_WARNING);
        if (env_bool("DMTCP_TRACE", false))
                log_set_max_level(LOG_DEBUG);
        return 0;
}

static void fill_hello(struct proto_hello *h, int role) {
        memset(h, 0, sizeof *h);
        hello_fill_self(h, role, rt.cfg.program);
        h->pid = (uint32_t) rt.pid;
        strscpy(h->upid, rt.cfg.upid, sizeof h->upid);
        strscpy(h->comp_id, rt.cfg.comp_id, sizeof h->comp_id);
        strscpy(h->ckptdir, rt.cfg.ckptdir, sizeof h->ckptdir);
        strscpy(h->secret, rt.cfg.secret, sizeof h->secret);
        strscpy(h->job, rt.cfg.job, sizeof h->job);
        h->interval = rt.cfg.interval;
}

int rt_coord_addr_parse(const char *s, struct coord_addr *a) {
        struct coord_addr n = { 0 };
        if (!strncmp(s, "unix:", 5)) {
                n.kind = COORD_UNIX;
                if (strscpy(n.path, s + 5, sizeof n.path) >= sizeof n.path || !n.path[0])
                        return -EINVAL;
        } else if (!strncmp(s, "tcp:", 4)) {
                const char *colon = strrchr(s + 4, ':');
                int port;
                if (!colon || colon == s + 4 || (size_t) (colon - (s + 4)) >= sizeof n.host ||
                    parse_int_range(colon + 1, 1, 65535, &port) < 0)
                        return -EINVAL;
                n.kind = COORD_TCP;
                memcpy(n.host, s + 4, (size_t) (colon - (s + 4)));
                n.port = (uint16_t) port;
        } else
                return -EINVAL;
        *a = n;
        return 0;
}

void rt_coord_addr_format(const struct coord_addr *a, char *buf, size_t size) {
        if (a->kind == COORD_UNIX)
                snprintf(buf, size, "unix:%s", a->path);
        else
                snprintf(buf, size, "tcp:%s:%u", a->host, (unsigned) a->port);
}

void rt_new_upid(void) {
        char host[64];
        strscpy(host, host_name(), sizeof host);
        for (char *p = host; *p; p++)
                if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '.'))
                        *p = '_';
        snprintf(rt.cfg.upid, sizeof rt.cfg.upid, "%s-%d-%llx", host, (int) raw_getpid(),
                 (unsigned long long) now_usec(CLOCK_REALTIME));
}

/* Join (or rejoin) as a worker. Returns 0 or -errno; reason filled on refusal. */
static int coord_join_worker(char *reason, size_t rsize) {
        struct proto_hello h;
        fill_hello(&h, PROTO_ROLE_WORKER);
        struct proto_welcome w;
        int fd = coord_join(&rt.cfg.coord, &h, 10000, &w, reason, rsize);
        if (fd < 0)
                return fd;
        rt.coord_fd = rt_fd_move_private(fd);
        strscpy(rt.cfg.comp_id, w.comp_id, sizeof rt.cfg.comp_id);
        return 0;
}

/* While the runtime has a descriptor of its own open and program threads
 * may run (connecting, reading /proc files before and during the
 * suspension, in the checkpoint signal handler), a fork would give the
 * child a descriptor no one knows of, which its next checkpoint would take
 * for the program's. Such opens hold this lock, and fork takes it too
 * (pthread_atfork). A raw futex lock, usable in the signal handler; the
 * forking thread blocks the checkpoint signal while it holds it, so no
 * thread is ever stopped holding it. */
static _Atomic uint32_t fork_lock;
static __thread uint64_t fork_saved_mask;

void rt_fork_lock(void) {
        uint64_t block = rt_sigckpt_bit();
        raw_syscall4(SYS_rt_sigprocmask, SIG_BLOCK, (long) &block, (long) &fork_saved_mask, 8);
        uint32_t z = 0;
        while (!atomic_compare_exchange_weak(&fork_lock, &z, 1)) {
                if (z)
                        raw_futex_wait((uint32_t *) &fork_lock, z, NULL);
                z = 0;
        }
}

void rt_fork_unlock(void) {
        atomic_store(&fork_lock, 0);
        raw_futex_wake((uint32_t *) &fork_lock, 1);
        raw_syscall4(SYS_rt_sigprocmask, SIG_SETMASK, (long) &fork_saved_mask, 0, 8);
}

static void atfork_child(void) {
        atomic_store(&fork_lock, 0);
        raw_syscall4(SYS_rt_sigprocmask, SIG_SETMASK, (long) &fork_saved_mask, 0, 8);
        rt_atfork_child();
}

ssize_t rt_read_proc(const char *path, char *buf, size_t size) {
        rt_fork_lock();
        int fd = rt_open_quietly(path, O_RDONLY);
        ssize_t n = fd;
        if (fd >= 0) {
                n = raw_syscall3(SYS_read, fd, (long) buf, size - 1);
                raw_syscall1(SYS_close, fd);
        }
        rt_fork_unlock();
        if (n < 0)
                return n;
        buf[n] = 0;
        return n;
}

int rt_coord_reconnect(void) {
        char reason[256] = "";
        rt_fork_lock();
        /* A process about to exec joins as its new image: a join now would
         * be cut short by the exec, unannounced. */
        int r = atomic_load(&rt.exec_pending) ? -EAGAIN : coord_join_worker(reason, sizeof reason);
        rt_fork_unlock();
        return r;
}

/* --- wrappers ------------------------------------------------------------ */

static int (*real_pthread_create)(pthread_t *, const pthread_attr_t *, void *(*)(void *), void *);
static int (*real_madvise)(void *, size_t, int);

struct start_args {
        void *(*fn)(void *);
        void *arg;
        int app_blocked;
};

/* New threads can always be stopped, even when created with a signal mask
 * (pthread_attr_setsigmask_np) that blocks the checkpoint signal; the
 * program's view of that signal is its creator's, as the mask would be. */
static void *thread_start(void *p) {
        struct start_args a = *(struct start_args *) p;
        free(p);
        rt_sig_set_app_blocked(a.app_blocked);
        uint64_t unblock = rt_sigckpt_bit();
        raw_syscall4(SYS_rt_sigprocmask, SIG_UNBLOCK, (long) &unblock, 0, 8);
        return a.fn(a.arg);
}

_public_ int pthread_create(pthread_t *th, const pthread_attr_t *attr, void *(*fn)(void *), void *arg) {
        if (!real_pthread_create)
                real_pthread_create = dlsym(RTLD_NEXT, "pthread_create");
        struct start_args *a = rt.initialized ? malloc(sizeof *a) : NULL;
        if (!a)
                return real_pthread_create(th, attr, fn, arg);
        a->fn = fn;
        a->arg = arg;
        a->app_blocked = rt_sig_app_blocked();
        sigset_t set;
        if (attr && pthread_attr_getsigmask_np(attr, &set) == 0)
                a->app_blocked = sigismember(&set, rt.cfg.sigckpt);
        /* The new thread starts with the signal blocked for real, so that
         * none arrives before it knows whether the program blocks it. */
        uint64_t block = rt_sigckpt_bit(), old;
        raw_syscall4(SYS_rt_sigprocmask, SIG_BLOCK, (long) &block, (long) &old, 8);
        int r = real_pthread_create(th, attr, thread_start, a);
        raw_syscall4(SYS_rt_sigprocmask, SIG_SETMASK, (long) &old, 0, 8);
        if (r != 0)
                free(a);
        return r;
}

_public_ int madvise(void *addr, size_t len, int advice) {
        if (!real_madvise)
                real_madvise = dlsym(RTLD_NEXT, "madvise");
        rt_mem_note_madvise(advice);
        if (!rt_mem_fork_advice(advice))
                return real_madvise(addr, len, advice);
        /* Not in the middle of rt_mem_share_ahead, which puts these back. */
        rt_fork_lock();
        int r = real_madvise(addr, len, advice);
        int e = errno;
        rt_fork_unlock();
        errno = e;
        return r;
}

/* Our own tools export this symbol; the runtime stays out of them. */
static bool in_dmtcp_tool(void) {
        return dlsym(RTLD_DEFAULT, "dmtcp_tool_marker") != NULL;
}

__attribute__((constructor(101))) static void rt_init(void) {
        if (in_dmtcp_tool())
                return;
        rt.pid = getpid();
        log_set_ident("dmtcp");
        int fail = dmtcp_fail_rc();
        int r = config_from_env();
        if (r < 0) {
                rt_error("bad DMTCP environment: %s", strerror(-r));
                _exit(fail);
        }
        rt_signals_init();
        if (!real_pthread_create)
                real_pthread_create = dlsym(RTLD_NEXT, "pthread_create");
        char status[8192];
        if (read_small_file("/proc/self/status", status, sizeof status) > 0) {
                const char *q = strstr(status, "\nSeccomp_filters:");
                rt.seccomp_filters_at_launch = q ? (int) strtol(q + 17, NULL, 10) : 0;
        }
        r = rt_fds_record_external();
        if (r < 0)
                rt_warn("cannot list inherited descriptors: %s", strerror(-r));
        char reason[256] = "", where[300];
        r = coord_join_worker(reason, sizeof reason);
        if (r < 0) {
                coord_addr_describe(&rt.cfg.coord, where, sizeof where);
                if (reason[0])
                        rt_error("the coordinator at %s refused %s: %s", where, rt.cfg.program, reason);
                else
                        rt_error("cannot reach the coordinator at %s: %s", where, strerror(-r));
                _exit(fail);
        }
        setenv("DMTCP_COMPUTATION", rt.cfg.comp_id, 1);
        r = rt_threads_install_handler();
        if (r < 0) {
                rt_error("cannot install the checkpoint signal handler: %s", strerror(-r));
                _exit(fail);
        }
        rt.initialized = true;
        /* Blocked by whoever exec'd us (or our own image before its exec):
         * the program's; the checkpoint must be able to stop this thread. */
        rt_signals_adopt_mask();
        pthread_atfork(rt_fork_lock, rt_fork_unlock, atfork_child);
        r = rt_ckpt_thread_start();
        if (r < 0) {
                rt_error("cannot start the checkpoint thread: %s", strerror(-r));
                _exit(fail);
        }
}
