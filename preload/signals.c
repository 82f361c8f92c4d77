/* Signals: the checkpoint signal is hidden from the program, which may still
 * use that signal number itself (its handler and blocked state for it are
 * kept here, virtually); and the process's signal state (handlers, interval
 * timers, POSIX timers, pending signals) is captured and restored.
 *
 * Wrapped: sigaction, signal, sigset, sigprocmask, pthread_sigmask, raise,
 * sigpending, sigsuspend, sigwait*, pselect, ppoll, epoll_pwait*; and exec
 * (exec.c) carries the program's view across. None is on a hot path.
 * glibc's own internal calls bypass these wrappers; they never touch the
 * checkpoint signal. */
#include <dlfcn.h>
#include <poll.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/select.h>
#include <sys/time.h>
#include <time.h>
#include <ucontext.h>

#include "raw-syscall.h"
#include "rt.h"
#include "util.h"

int (*rt_real_sigaction)(int, const struct sigaction *, struct sigaction *);
static int (*real_sigprocmask)(int, const sigset_t *, sigset_t *);
static int (*real_pthread_sigmask)(int, const sigset_t *, sigset_t *);
static int (*real_sigsuspend)(const sigset_t *);
static int (*real_sigtimedwait)(const sigset_t *, siginfo_t *, const struct timespec *);
static int (*real_pselect)(int, fd_set *, fd_set *, fd_set *, const struct timespec *, const sigset_t *);
static int (*real_ppoll)(struct pollfd *, nfds_t, const struct timespec *, const sigset_t *);
static int (*real_epoll_pwait)(int, struct epoll_event *, int, int, const sigset_t *);
static int (*real_epoll_pwait2)(int, struct epoll_event *, int, const struct timespec *, const sigset_t *);

/* The program's view of the checkpoint signal in this thread: blocked or not.
 * initial-exec TLS: the runtime is loaded at start-up, so its TLS is static. */
static __thread int app_blocked __attribute__((tls_model("initial-exec")));
/* A signal of that number that arrived while the program blocked it,
 * delivered, siginfo and all, when the program unblocks it or waits for it.
 * One at most, as the kernel keeps one of a standard signal; like the
 * kernel's, one sent to a thread is that thread's, any other the process's,
 * for whichever thread comes first. Sent to a thread means SI_TKILL here
 * (raise, tgkill, pthread_kill); pthread_sigqueue and SIGEV_THREAD_ID timers
 * of that number count as the process's. */
enum { AP_NONE, AP_FILLING, AP_FULL, AP_TAKING };
struct app_pending {
        _Atomic int state;
        siginfo_t info;
};
static struct app_pending proc_pending;
static __thread struct app_pending thread_pending __attribute__((tls_model("initial-exec")));

int rt_sig_app_blocked(void) {
        return app_blocked;
}

void rt_sig_set_app_blocked(int blocked) {
        app_blocked = blocked;
}

#define RESOLVE(var, name) \
        do { var = (__typeof__(var)) dlsym(RTLD_NEXT, name); } while (0)

void rt_signals_init(void) {
        RESOLVE(rt_real_sigaction, "sigaction");
        RESOLVE(real_sigprocmask, "sigprocmask");
        RESOLVE(real_pthread_sigmask, "pthread_sigmask");
        RESOLVE(real_sigsuspend, "sigsuspend");
        RESOLVE(real_sigtimedwait, "sigtimedwait");
        RESOLVE(real_pselect, "pselect");
        RESOLVE(real_ppoll, "ppoll");
        RESOLVE(real_epoll_pwait, "epoll_pwait");
        RESOLVE(real_epoll_pwait2, "epoll_pwait2");
}

static bool is_ckpt(int sig) {
        return rt.initialized && sig == rt.cfg.sigckpt;
}

/* A copy of set without the checkpoint signal, so it is never really blocked
 * or waited for. Returns set itself when there is nothing to strip. */
static const sigset_t *strip(const sigset_t *set, sigset_t *buf) {
        if (!set || !rt.initialized || !sigismember(set, rt.cfg.sigckpt))
                return set;
        *buf = *set;
        sigdelset(buf, rt.cfg.sigckpt);
        return buf;
}

/* The tags of the runtime's own signals of that number: SI_QUEUE with the
 * address of one of these objects as its value, sent by this process. The
 * program's signals (raise, kill, sigqueue from elsewhere) never carry them. */
static const char ckpt_tag, wake_tag;

static void fill_tagged(siginfo_t *si, const char *tag) {
        memset(si, 0, sizeof *si);
        si->si_signo = rt.cfg.sigckpt;
        si->si_code = SI_QUEUE;
        si->si_pid = rt.pid;
        si->si_uid = (uid_t) raw_syscall0(SYS_getuid);
        si->si_value.sival_ptr = (void *) tag;
}

static long send_tagged(pid_t tid, const char *tag) {
        siginfo_t si;
        fill_tagged(&si, tag);
        return raw_syscall4(SYS_rt_tgsigqueueinfo, rt.pid, tid, rt.cfg.sigckpt, (long) &si);
}

long rt_send_ckpt_signal(pid_t tid) {
        return send_tagged(tid, &ckpt_tag);
}

enum rt_sig_tag rt_sig_tag(const siginfo_t *si) {
        if (!si || si->si_code != SI_QUEUE || si->si_pid != rt.pid)
                return RT_SIG_PROGRAM;
        if (si->si_value.sival_ptr == (void *) &ckpt_tag)
                return RT_SIG_CKPT;
        return si->si_value.sival_ptr == (void *) &wake_tag ? RT_SIG_WAKE : RT_SIG_PROGRAM;
}

/* Threads of the program in sigwait() and the like for the checkpoint
 * signal's number. A signal of that number that another thread's handler
 * keeps pending wakes them (they take it from there). */
#define MAX_SIGWAITERS 32
static _Atomic pid_t sigwaiters[MAX_SIGWAITERS];

void rt_signals_atfork_child(void) {
        atomic_store(&proc_pending.state, AP_NONE);
        atomic_store(&thread_pending.state, AP_NONE);
        for (size_t i = 0; i < MAX_SIGWAITERS; i++)
                atomic_store(&sigwaiters[i], 0);
}

static void wake_sigwaiters(void) {
        const pid_t self = (pid_t) raw_gettid();
        for (size_t i = 0; i < MAX_SIGWAITERS; i++) {
                pid_t t = atomic_load(&sigwaiters[i]);
                if (t && t != self)
                        send_tagged(t, &wake_tag);
        }
}

/* Default action of a signal: does it terminate the process? */
static bool default_terminates(int sig) {
        return sig != SIGCHLD && sig != SIGCONT && sig != SIGURG && sig != SIGWINCH;
}

static bool take_from(struct app_pending *p, siginfo_t *out) {
        int e = AP_FULL;
        if (!atomic_compare_exchange_strong(&p->state, &e, AP_TAKING))
                return false;
        *out = p->info;
        atomic_store(&p->state, AP_NONE);
        return true;
}

/* Take a pending signal's siginfo, this thread's first, as the kernel does. */
static bool take_pending(siginfo_t *out) {
        return take_from(&thread_pending, out) || take_from(&proc_pending, out);
}

uint64_t rt_signals_before_exec(bool requeue) {
        uint64_t bit = rt_sigckpt_bit(), old = 0;
        /* Not blocked: only the mask to put back is read. */
        raw_syscall4(SYS_rt_sigprocmask, SIG_BLOCK, app_blocked ? (long) &bit : 0, (long) &old, 8);
        if (app_blocked && requeue) {
                siginfo_t si;
                if (take_from(&thread_pending, &si))
                        raw_syscall4(SYS_rt_tgsigqueueinfo, rt.pid, raw_gettid(), rt.cfg.sigckpt, (long) &si);
                if (take_from(&proc_pending, &si))
                        raw_syscall3(SYS_rt_sigqueueinfo, rt.pid, rt.cfg.sigckpt, (long) &si);
        }
        return old;
}

/* Pending ones queued for real come back through the handler as the mask
 * is put back, and are kept virtually again. */
void rt_signals_after_exec(uint64_t mask) {
        raw_syscall4(SYS_rt_sigprocmask, SIG_SETMASK, (long) &mask, 0, 8);
}

void rt_signals_adopt_mask(void) {
        uint64_t bit = rt_sigckpt_bit(), cur = 0;
        raw_syscall4(SYS_rt_sigprocmask, SIG_BLOCK, 0, (long) &cur, 8);
        if (cur & bit) {
                app_blocked = 1;
                raw_syscall4(SYS_rt_sigprocmask, SIG_UNBLOCK, (long) &bit, 0, 8);
        }
}

void rt_deliver_app_signal(int sig, siginfo_t *si, void *uc) {
        siginfo_t next;
        for (;;) {
                if (app_blocked) {
                        const bool own = si->si_code == SI_TKILL;
                        struct app_pending *p = own ? &thread_pending : &proc_pending;
                        int e = AP_NONE;
                        if (atomic_compare_exchange_strong(&p->state, &e, AP_FILLING)) {
                                p->info = *si;
                                atomic_store(&p->state, AP_FULL);
                                if (!own)
                                        wake_sigwaiters();
                        }
                        return;
                }
                struct sigaction act = rt.virt.act;
                if (!rt.virt.installed || act.sa_handler == SIG_DFL) {
                        if (!default_terminates(sig))
                                return;
                        /* Die of this signal as the program would have. */
                        struct sigaction dfl = { .sa_handler = SIG_DFL };
                        rt_real_sigaction(sig, &dfl, NULL);
                        sigset_t one;
                        sigemptyset(&one);
                        sigaddset(&one, sig);
                        real_pthread_sigmask(SIG_UNBLOCK, &one, NULL);
                        raw_syscall3(SYS_tgkill, raw_getpid(), raw_gettid(), sig);
                        return;
                }
                if (act.sa_handler == SIG_IGN)
                        return;
                if (act.sa_flags & SA_RESETHAND) {
                        memset(&rt.virt.act, 0, sizeof rt.virt.act);
                        rt.virt.act.sa_handler = SIG_DFL;
                }
                /* Run the program's handler with the mask it asked for. */
                sigset_t mask = ((ucontext_t *) uc)->uc_sigmask, old;
                for (int s = 1; s < NSIG; s++)
                        if (sigismember(&act.sa_mask, s))
                                sigaddset(&mask, s);
                if (!(act.sa_flags & SA_NODEFER))
                        app_blocked = 1;
                sigdelset(&mask, sig);
                real_pthread_sigmask(SIG_SETMASK, &mask, &old);
                if (act.sa_flags & SA_SIGINFO)
                        act.sa_sigaction(sig, si, uc);
                else
                        act.sa_handler(sig);
                real_pthread_sigmask(SIG_SETMASK, &old, NULL);
                app_blocked = 0;
                /* One raised while the handler ran: the kernel delivers it
                 * as soon as the handler returns. */
                if (!take_pending(&next))
                        return;
                si = &next;
        }
}

/* Deliver the pending signal here and now, as the kernel would on the
 * return from the call that unblocked it. Not re-sent through the kernel:
 * there it could merge with a checkpoint's signal of the same number and be
 * lost. */
static bool deliver_pending_if_unblocked(void) {
        siginfo_t si;
        if (app_blocked || !take_pending(&si))
                return false;
        ucontext_t uc;
        getcontext(&uc);
        rt_deliver_app_signal(rt.cfg.sigckpt, &si, &uc);
        return true;
}

_public_ int sigaction(int sig, const struct sigaction *act, struct sigaction *old) {
        if (!is_ckpt(sig))
                return rt_real_sigaction(sig, act, old);
        if (old) {
                if (rt.virt.installed)
                        *old = rt.virt.act;
                else {
                        memset(old, 0, sizeof *old);
                        old->sa_handler = SIG_DFL;
                }
        }
        if (act) {
                rt.virt.act = *act;
                rt.virt.installed = true;
        }
        return 0;
}

static sighandler_t set_handler(int sig, sighandler_t h, int flags) {
        struct sigaction sa = { 0 }, old;
        sa.sa_handler = h;
        sa.sa_flags = flags;
        if (sigaction(sig, &sa, &old) < 0)
                return SIG_ERR;
        return old.sa_handler;
}

_public_ sighandler_t signal(int sig, sighandler_t h) {
        if (!is_ckpt(sig)) {
                static sighandler_t (*real_signal)(int, sighandler_t);
                if (!real_signal)
                        RESOLVE(real_signal, "signal");
                return real_signal(sig, h);
        }
        return set_handler(sig, h, SA_RESTART);
}

_public_ sighandler_t sigset(int sig, sighandler_t h) {
        if (!is_ckpt(sig)) {
                static sighandler_t (*real_sigset)(int, sighandler_t);
                if (!real_sigset)
                        RESOLVE(real_sigset, "sigset");
                return real_sigset(sig, h);
        }
        return set_handler(sig, h, 0);
}

static int mask_common(int (*real)(int, const sigset_t *, sigset_t *), int how, const sigset_t *set,
                       sigset_t *old) {
        int was_blocked = app_blocked;
        sigset_t buf;
        const sigset_t *s = strip(set, &buf);
        int r = real(how, s, old);
        if (r != 0)
                return r;
        if (rt.initialized) {
                int sig = rt.cfg.sigckpt;
                if (old) {
                        if (was_blocked)
                                sigaddset(old, sig);
                        else
                                sigdelset(old, sig);
                }
                if (set) {
                        bool in = sigismember(set, sig);
                        if (how == SIG_BLOCK && in)
                                app_blocked = 1;
                        else if (how == SIG_UNBLOCK && in)
                                app_blocked = 0;
                        else if (how == SIG_SETMASK)
                                app_blocked = in;
                }
                deliver_pending_if_unblocked();
        }
        return 0;
}

_public_ int sigprocmask(int how, const sigset_t *set, sigset_t *old) {
        return mask_common(real_sigprocmask, how, set, old);
}

_public_ int pthread_sigmask(int how, const sigset_t *set, sigset_t *old) {
        return mask_common(real_pthread_sigmask, how, set, old);
}

/* raise() of the checkpoint signal's number never goes through the kernel,
 * where it could merge with the checkpoint's own signal: it is delivered (or
 * left pending) here, as the kernel would before raise() returned. */
_public_ int raise(int sig) {
        if (!is_ckpt(sig)) {
                static int (*real_raise)(int);
                if (!real_raise)
                        RESOLVE(real_raise, "raise");
                return real_raise(sig);
        }
        siginfo_t si;
        memset(&si, 0, sizeof si);
        si.si_signo = sig;
        si.si_code = SI_TKILL;
        si.si_pid = getpid();
        si.si_uid = getuid();
        ucontext_t uc;
        getcontext(&uc);
        rt_deliver_app_signal(sig, &si, &uc);
        return 0;
}

/* A call that replaces the signal mask while it waits (sigsuspend, pselect,
 * ppoll, epoll_pwait*): the program's view of the checkpoint signal follows
 * that mask meanwhile. One pending that the mask unblocks is delivered at
 * once, and the call fails with EINTR, as the kernel's would. */
static bool mask_call_begin(const sigset_t *mask, int *was) {
        *was = app_blocked;
        if (!mask || !rt.initialized)
                return false;
        app_blocked = sigismember(mask, rt.cfg.sigckpt);
        if (!deliver_pending_if_unblocked())
                return false;
        app_blocked = *was;
        errno = EINTR;
        return true;
}

static void mask_call_end(int was) {
        int e = errno;
        app_blocked = was;
        errno = e;
}

/* The program's pending signals, with the one of the checkpoint signal's
 * number kept here. */
_public_ int sigpending(sigset_t *set) {
        static int (*real_sigpending)(sigset_t *);
        if (!real_sigpending)
                RESOLVE(real_sigpending, "sigpending");
        int r = real_sigpending(set);
        if (r == 0 && rt.initialized) {
                sigdelset(set, rt.cfg.sigckpt);
                if (atomic_load(&thread_pending.state) == AP_FULL || atomic_load(&proc_pending.state) == AP_FULL)
                        sigaddset(set, rt.cfg.sigckpt);
        }
        return r;
}

_public_ int sigsuspend(const sigset_t *mask) {
        sigset_t buf;
        int was;
        if (mask_call_begin(mask, &was))
                return -1;
        int r = real_sigsuspend(strip(mask, &buf));
        mask_call_end(was);
        return r;
}

static int64_t mono_ns(void) {
        struct timespec t;
        clock_gettime(CLOCK_MONOTONIC, &t);
        return (int64_t) t.tv_sec * 1000000000LL + t.tv_nsec;
}

/* The checkpoint's signal, dequeued by a wait (or merged into another of
 * its number that the wait dequeued): stop as the handler would have,
 * every signal blocked. */
static __attribute__((noinline)) void ckpt_signal_taken(int sig) {
        siginfo_t si;
        fill_tagged(&si, &ckpt_tag);
        sigset_t all, cur;
        sigfillset(&all);
        real_pthread_sigmask(SIG_SETMASK, &all, &cur);
        ucontext_t uc;
        getcontext(&uc);
        uc.uc_sigmask = cur;
        rt_sigckpt_handler(sig, &si, &uc);
        real_pthread_sigmask(SIG_SETMASK, &cur, NULL);
}

/* sigwaitinfo/sigtimedwait (ts NULL: no limit) for a set. A set with the
 * checkpoint signal's number waits for it for real, that signal blocked in
 * this thread meanwhile so that nothing of that number is lost between the
 * look at the pending one and the wait: the program's own signal is
 * returned; a checkpoint's signal, taken by the wait instead of the
 * handler, stops the thread here as the handler would (so does any signal
 * of that number while the checkpoint waits for this thread: the
 * checkpoint's may have merged into it); a wake-up means another thread's
 * handler kept the program's signal pending: take it. */
static int wait_common(const sigset_t *set, siginfo_t *info, const struct timespec *ts) {
        sigset_t buf;
        if (!rt.initialized || !set || !sigismember(set, rt.cfg.sigckpt))
                return real_sigtimedwait(strip(set, &buf), info, ts);
        const int ck = rt.cfg.sigckpt;
        sigset_t one, old;
        sigemptyset(&one);
        sigaddset(&one, ck);
        real_pthread_sigmask(SIG_BLOCK, &one, &old);
        const pid_t self = (pid_t) raw_gettid();
        size_t slot = MAX_SIGWAITERS;
        for (size_t i = 0; i < MAX_SIGWAITERS && slot == MAX_SIGWAITERS; i++) {
                pid_t z = 0;
                if (atomic_compare_exchange_strong(&sigwaiters[i], &z, self))
                        slot = i;
        }
        const int64_t end = ts ? mono_ns() + (int64_t) ts->tv_sec * 1000000000LL + ts->tv_nsec : 0;
        siginfo_t si;
        int r;
        for (;;) {
                if (take_pending(&si)) {
                        r = ck;
                        break;
                }
                struct timespec left, *lp = NULL;
                if (ts) {
                        int64_t d = end - mono_ns();
                        if (d < 0)
                                d = 0;
                        left = (struct timespec) { .tv_sec = d / 1000000000LL, .tv_nsec = d % 1000000000LL };
                        lp = &left;
                }
                r = real_sigtimedwait(set, &si, lp);
                if (r != ck)
                        break;
                enum rt_sig_tag tag = rt_sig_tag(&si);
                if (tag == RT_SIG_CKPT || rt_thread_ckpt_requested())
                        ckpt_signal_taken(ck);
                if (tag == RT_SIG_PROGRAM)
                        break;
        }
        int e = errno;
        if (slot < MAX_SIGWAITERS)
                atomic_store(&sigwaiters[slot], 0);
        real_pthread_sigmask(SIG_SETMASK, &old, NULL);
        if (r > 0 && info) {
                /* As glibc's sigtimedwait reports tgkill's signals. */
                if (si.si_code == SI_TKILL)
                        si.si_code = SI_USER;
                *info = si;
        }
        errno = e;
        return r;
}

_public_ int sigwait(const sigset_t *set, int *sig) {
        int r;
        while ((r = wait_common(set, NULL, NULL)) < 0 && errno == EINTR)
                ;
        if (r < 0)
                return errno;
        *sig = r;
        return 0;
}

_public_ int sigwaitinfo(const sigset_t *set, siginfo_t *info) {
        return wait_common(set, info, NULL);
}

_public_ int sigtimedwait(const sigset_t *set, siginfo_t *info, const struct timespec *ts) {
        return wait_common(set, info, ts);
}

_public_ int pselect(int n, fd_set *r, fd_set *w, fd_set *e, const struct timespec *ts, const sigset_t *mask) {
        sigset_t buf;
        int was;
        if (mask_call_begin(mask, &was))
                return -1;
        int k = real_pselect(n, r, w, e, ts, strip(mask, &buf));
        mask_call_end(was);
        return k;
}

_public_ int ppoll(struct pollfd *fds, nfds_t n, const struct timespec *ts, const sigset_t *mask) {
        sigset_t buf;
        int was;
        if (mask_call_begin(mask, &was))
                return -1;
        int k = real_ppoll(fds, n, ts, strip(mask, &buf));
        mask_call_end(was);
        return k;
}

_public_ int epoll_pwait(int epfd, struct epoll_event *ev, int max, int timeout, const sigset_t *mask) {
        sigset_t buf;
        int was;
        if (mask_call_begin(mask, &was))
                return -1;
        int k = real_epoll_pwait(epfd, ev, max, timeout, strip(mask, &buf));
        mask_call_end(was);
        return k;
}

_public_ int epoll_pwait2(int epfd, struct epoll_event *ev, int max, const struct timespec *ts, const sigset_t *mask) {
        sigset_t buf;
        int was;
        if (mask_call_begin(mask, &was))
                return -1;
        int k = real_epoll_pwait2(epfd, ev, max, ts, strip(mask, &buf));
        mask_call_end(was);
        return k;
}

/* --- capture and restore ------------------------------------------------ */

static uint64_t ts_ns(const struct timespec *t) {
        return (uint64_t) t->tv_sec * 1000000000ULL + (uint64_t) t->tv_nsec;
}

static struct timespec ns_ts(int64_t ns) {
        return (struct timespec) { .tv_sec = ns / 1000000000LL, .tv_nsec = ns % 1000000000LL };
}

static const char *next_timer(const char *p) {
        for (const char *q = p; (q = strstr(q, "ID: ")); q++)
                if (q == p || q[-1] == '\n')
                        return q;
        return NULL;
}

/* /proc/self/timers: "ID: n", "signal: sig/sival", "notify: signal/pid.N |
 * thread/tid.N | none/...", "ClockID: c". */
static int capture_posix_timers(char *err, size_t errsize) {
        static char buf[256 * 1024];
        ssize_t n = read_small_file("/proc/self/timers", buf, sizeof buf);
        if (n == -ENOENT) {
                rt_cap->n_timers = 0;
                return 0;
        }
        if (n < 0) {
                snprintf(err, errsize, "cannot read /proc/self/timers: %s", strerror((int) -n));
                return (int) n;
        }
        /* Records start with a line "ID: n" (not "ClockID: n"). */
        uint32_t count = 0;
        for (const char *p = buf; (p = next_timer(p)); p++)
                count++;
        rt_cap->timers = rt_alloc(RT_ARENA_STATE, (count + 1) * sizeof(struct img_timer));
        if (!rt_cap->timers)
                return -ENOMEM;
        rt_cap->n_timers = 0;
        const char *p = buf;
        while ((p = next_timer(p))) {
                struct img_timer *t = &rt_cap->timers[rt_cap->n_timers];
                memset(t, 0, sizeof *t);
                t->id = (int32_t) strtol(p + 4, NULL, 10);
                const char *q = strstr(p, "signal: ");
                if (q) {
                        char *end;
                        t->signo = (int32_t) strtol(q + 8, &end, 10);
                        if (*end == '/')
                                t->sigval = strtoull(end + 1, NULL, 16);
                }
                q = strstr(p, "notify: ");
                if (q) {
                        q += 8;
                        if (!strncmp(q, "thread/tid.", 11)) {
                                t->notify = SIGEV_THREAD_ID;
                                t->notify_tid = (int32_t) strtol(q + 11, NULL, 10);
                        } else if (!strncmp(q, "signal/", 7))
                                t->notify = SIGEV_SIGNAL;
                        else
                                t->notify = SIGEV_NONE;
                }
                q = strstr(p, "ClockID: ");
                if (q)
                        t->clock = (int32_t) strtol(q + 9, NULL, 10);
                struct itimerspec its;
                if (raw_syscall2(SYS_timer_gettime, t->id, (long) &its) == 0) {
                        t->interval_ns = (int64_t) ts_ns(&its.it_interval);
                        t->value_ns = (int64_t) ts_ns(&its.it_value);
                }
                long ov = raw_syscall1(SYS_timer_getoverrun, t->id);
                t->overrun = ov > 0 ? (int32_t) ov : 0;
                rt_cap->n_timers++;
                p += 4;
        }
        return 0;
}

int rt_signals_capture(char *err, size_t errsize) {
        for (int sig = 1; sig <= 64; sig++) {
                struct img_sigaction *k = &rt_cap->sigactions[sig - 1];
                memset(k, 0, sizeof *k);
                if (sig == SIGKILL || sig == SIGSTOP)
                        continue;
                long r = raw_syscall4(SYS_rt_sigaction, sig, 0, (long) k, 8);
                if (r < 0 && r != -EINVAL) {
                        snprintf(err, errsize, "cannot read the handler of signal %d: %s", sig, strerror((int) -r));
                        return (int) r;
                }
        }
        for (int w = 0; w < 3; w++) {
                struct itimerval it;
                raw_syscall2(SYS_getitimer, w, (long) &it);
                rt_cap->proc.itimer[w][0] = (uint64_t) it.it_interval.tv_sec;
                rt_cap->proc.itimer[w][1] = (uint64_t) it.it_interval.tv_usec;
                rt_cap->proc.itimer[w][2] = (uint64_t) it.it_value.tv_sec;
                rt_cap->proc.itimer[w][3] = (uint64_t) it.it_value.tv_usec;
        }
        /* The process-wide pending signals were taken by the main thread
         * in its handler (threads.c); record which for the image. */
        rt_cap->proc.shared_pending = 0;
        for (uint32_t i = 0; i < rt_cap->n_pending; i++)
                rt_cap->proc.shared_pending |= 1ULL << (rt_cap->pending[i].sig - 1);
        return capture_posix_timers(err, errsize);
}

/* Handlers first (a restored timer may fire at once), then timers. */
int rt_signals_restore(void) {
        for (int sig = 1; sig <= 64; sig++) {
                if (sig == SIGKILL || sig == SIGSTOP)
                        continue;
                const struct img_sigaction *k = &rt_cap->sigactions[sig - 1];
                long r = raw_syscall4(SYS_rt_sigaction, sig, (long) k, 0, 8);
                if (r < 0 && r != -EINVAL)
                        rt_warn("cannot restore the handler of signal %d: %s", sig, strerror((int) -r));
        }
        return 0;
}

#ifndef PR_TIMER_CREATE_RESTORE_IDS
#define PR_TIMER_CREATE_RESTORE_IDS 77
#define PR_TIMER_CREATE_RESTORE_IDS_OFF 0
#define PR_TIMER_CREATE_RESTORE_IDS_ON 1
#endif

struct k_sigevent {
        uint64_t sival;
        int32_t signo;
        int32_t notify;
        int32_t tid;
        int32_t pad[11];
};

static long create_timer(const struct img_timer *t) {
        struct k_sigevent sev = { .sival = t->sigval, .signo = t->signo, .notify = t->notify, .tid = t->notify_tid };
        int id = t->id;
        long r = raw_syscall3(SYS_timer_create, t->clock, (long) &sev, (long) &id);
        return r < 0 ? r : id;
}

void rt_signals_rearm_timers(void) {
        for (int w = 0; w < 3; w++) {
                struct itimerval it = {
                        .it_interval = { (time_t) rt_cap->proc.itimer[w][0], (suseconds_t) rt_cap->proc.itimer[w][1] },
                        .it_value = { (time_t) rt_cap->proc.itimer[w][2], (suseconds_t) rt_cap->proc.itimer[w][3] },
                };
                /* An interval timer whose signal is pending reads as value 0:
                 * it fires again one interval after the restart. */
                if (!it.it_value.tv_sec && !it.it_value.tv_usec)
                        it.it_value = it.it_interval;
                if (it.it_value.tv_sec || it.it_value.tv_usec)
                        raw_syscall3(SYS_setitimer, w, (long) &it, 0);
        }
        /* Recreate each POSIX timer under its old id: with the kernel's
         * restore mode when it has one, else by creating timers until the
         * kernel hands out the wanted id. */
        if (rt_cap->n_timers == 0)
                return;
        bool restore_ids = raw_syscall5(SYS_prctl, PR_TIMER_CREATE_RESTORE_IDS, PR_TIMER_CREATE_RESTORE_IDS_ON, 0, 0, 0) == 0;
        for (uint32_t i = 0; i < rt_cap->n_timers; i++) {
                const struct img_timer *t = &rt_cap->timers[i];
                long id = create_timer(t);
                if (!restore_ids) {
                        int extra[64], n_extra = 0;
                        while (id >= 0 && id != t->id && n_extra < 64) {
                                extra[n_extra++] = (int) id;
                                id = create_timer(t);
                        }
                        for (int k = 0; k < n_extra; k++)
                                raw_syscall1(SYS_timer_delete, extra[k]);
                }
                if (id != t->id) {
                        rt_warn("cannot recreate POSIX timer %d (got %ld)", t->id, id);
                        if (id >= 0)
                                raw_syscall1(SYS_timer_delete, id);
                        continue;
                }
                struct itimerspec its = { .it_interval = ns_ts(t->interval_ns), .it_value = ns_ts(t->value_ns) };
                if (t->value_ns)
                        raw_syscall4(SYS_timer_settime, t->id, 0, (long) &its, 0);
        }
        if (restore_ids)
                raw_syscall5(SYS_prctl, PR_TIMER_CREATE_RESTORE_IDS, PR_TIMER_CREATE_RESTORE_IDS_OFF, 0, 0, 0);
}
