/* signals: handlers, timers and pending signals across checkpoints.
 *
 *   - SIGALRM handler (SA_SIGINFO | SA_RESTART, sa_mask {SIGRTMIN}); with
 *     "itimer" (the default) an ITIMER_REAL interval timer of 20 ms drives
 *     it, with "alarm" a one-shot alarm(1) re-armed after each expiry;
 *   - two POSIX timers (timer_create, SIGEV_SIGNAL): CLOCK_MONOTONIC every
 *     15 ms on SIGRTMIN and CLOCK_REALTIME every 25 ms on SIGRTMIN+1, each
 *     with its own sigev_value; and a SIGEV_NONE one on CLOCK_BOOTTIME
 *     (1 s); no other POSIX timer may appear;
 *   - SIGHUP (kill) and SIGRTMIN+2 (sigqueue, with a value) sent to the
 *     process and SIGRTMIN+3 (raise) to the main thread while blocked, left
 *     pending for the whole run: once unblocked at verification, each must
 *     arrive exactly once, with the siginfo it was sent with (si_code, and
 *     the sigqueue value);
 *   - the program's own use of SIGUSR2 (dmtcp's checkpoint signal, hidden
 *     from the program): a handler, raise(), a raise() while the program
 *     blocks SIGUSR2, delivered when it unblocks, and a raise() from the
 *     handler itself, delivered as the handler returns;
 *   - SIGPIPE ignored, SIGTERM default.
 *
 * With "itimer-blocked", SIGALRM is blocked but for a moment every 40
 * steps, so a checkpoint almost always finds it pending (the kernel then
 * reports the interval timer's value as 0 until the signal is taken).
 *
 * With "pending", no timer at all: only the pending signals and SIGUSR2
 * (a process without POSIX timers goes through other code at restore).
 *
 * A signal that arrives with the wrong siginfo is recorded and reported at
 * verification, so one such problem does not hide the others.
 *
 * Checked on every step: the handlers and flags are the installed ones,
 * the interval timers still have their intervals, the one-shot alarm is
 * armed unless it just fired, the pending signals are still pending and
 * not delivered, and no timer went silent for more than STALL steps (steps
 * count running time only, so the time a process spends dead between a
 * kill and its restart does not count). */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "zdtmtst.h"

#define STEP_MS 5
#define STALL 200                       /* steps (>= 1 s of running) without a tick */
#define COOKIE1 ((void *) 0x5eed0001)
#define COOKIE2 ((void *) 0x5eed0002)

static bool alarm_mode, timers = true, alrm_blocked;
static volatile uint64_t step;

static volatile uint64_t alrm_ticks, alrm_last, alrm_bad;
static volatile sig_atomic_t alrm_fired;
static volatile uint64_t t1_ticks, t1_last, t2_ticks, t2_last, timer_bad;
static volatile uint64_t usr2_count, usr2_bad;
static volatile bool usr2_reraise;
static volatile uint64_t hup_count, rt2_count, rt3_count;
static volatile int hup_code, rt2_code, rt3_code, rt2_value;
#define QUEUE_VALUE 0x2a2a2a
static char bad_what[256];

/* Problems that do not stop the run, reported together at verification
 * (each distinct one once). */
static char problems[4096];

__attribute__((format(printf, 1, 2))) static void problem(const char *fmt, ...) {
        char msg[512];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof msg, fmt, ap);
        va_end(ap);
        if (strstr(problems, msg))
                return;
        size_t l = strlen(problems);
        snprintf(problems + l, sizeof problems - l, "%s%s", l ? "; " : "", msg);
}

#define PROBLEM(cond, ...)                 \
        do {                               \
                if (!(cond))               \
                        problem(__VA_ARGS__); \
        } while (0)

static void note_bad(const char *what) {
        if (!bad_what[0])
                strncpy(bad_what, what, sizeof bad_what - 1);
}

static void on_alrm(int sig, siginfo_t *si, void *uc) {
        (void) uc;
        sigset_t cur;
        pthread_sigmask(SIG_BLOCK, NULL, &cur);
        if (sig != SIGALRM || si->si_signo != SIGALRM || si->si_code != SI_KERNEL) {
                alrm_bad++;
                note_bad("SIGALRM with a wrong siginfo");
        }
        if (!sigismember(&cur, SIGRTMIN)) {
                alrm_bad++;
                note_bad("SIGALRM handler runs without its sa_mask (SIGRTMIN not blocked)");
        }
        alrm_ticks++;
        alrm_last = step;
        alrm_fired = 1;
}

static void on_timer(int sig, siginfo_t *si, void *uc) {
        (void) uc;
        if (si->si_code != SI_TIMER) {
                timer_bad++;
                note_bad("POSIX timer signal without SI_TIMER");
                return;
        }
        if (sig == SIGRTMIN && si->si_value.sival_ptr == COOKIE1) {
                t1_ticks++;
                t1_last = step;
        } else if (sig == SIGRTMIN + 1 && si->si_value.sival_ptr == COOKIE2) {
                t2_ticks++;
                t2_last = step;
        } else {
                timer_bad++;
                note_bad("POSIX timer signal with a wrong sigev_value");
        }
}

static void on_usr2(int sig, siginfo_t *si, void *uc) {
        (void) uc;
        if (sig != SIGUSR2 || si->si_code != SI_TKILL || si->si_pid != getpid()) {
                usr2_bad++;
                note_bad("SIGUSR2 with a wrong siginfo");
        }
        usr2_count++;
        if (usr2_reraise) {
                /* Blocked while its handler runs: pending until it returns. */
                usr2_reraise = false;
                uint64_t c = usr2_count;
                raise(SIGUSR2);
                if (usr2_count != c) {
                        usr2_bad++;
                        note_bad("SIGUSR2 raised in its handler ran the handler inside itself");
                }
        }
}

static void on_pending(int sig, siginfo_t *si, void *uc) {
        (void) uc;
        if (sig == SIGHUP) {
                hup_count++;
                hup_code = si->si_code;
        } else if (sig == SIGRTMIN + 2) {
                rt2_count++;
                rt2_code = si->si_code;
                rt2_value = si->si_value.sival_int;
        } else if (sig == SIGRTMIN + 3) {
                rt3_count++;
                rt3_code = si->si_code;
        }
}

static void install(int sig, void (*act)(int, siginfo_t *, void *), void (*handler)(int), int flags, int mask_sig) {
        struct sigaction sa = { 0 };
        if (act)
                sa.sa_sigaction = act;
        else
                sa.sa_handler = handler;
        sa.sa_flags = flags;
        sigemptyset(&sa.sa_mask);
        if (mask_sig)
                sigaddset(&sa.sa_mask, mask_sig);
        if (sigaction(sig, &sa, NULL) < 0)
                fail_errno("sigaction(%d)", sig);
}

static void check_action(int sig, void *want, int flags, int mask_sig, const char *name) {
        struct sigaction sa;
        if (sigaction(sig, NULL, &sa) < 0)
                fail_errno("sigaction(%s) query", name);
        void *h = (flags & SA_SIGINFO) ? (void *) sa.sa_sigaction : (void *) sa.sa_handler;
        check(h == want, "%s: handler is %p, installed %p", name, h, want);
        int mine = SA_SIGINFO | SA_RESTART | SA_NODEFER | SA_RESETHAND | SA_ONSTACK;
        check((sa.sa_flags & mine) == flags, "%s: sa_flags %#x, installed %#x", name, sa.sa_flags & mine, flags);
        for (int s = 1; s < SIGRTMIN + 4; s++) {
                if (s == SIGKILL || s == SIGSTOP)
                        continue;
                bool in = sigismember(&sa.sa_mask, s);
                check(in == (s == mask_sig), "%s: sa_mask %s signal %d", name, in ? "has" : "lacks", s);
        }
}

/* The kernel's list of our POSIX timers holds exactly the three we made. */
static void check_timer_set(int a, int b, int c) {
        FILE *f = fopen("/proc/self/timers", "re");
        if (!f) {
                problem("cannot read /proc/self/timers: %s", strerror(errno));
                return;
        }
        char line[256];
        int n = 0;
        while (fgets(line, sizeof line, f)) {
                if (strncmp(line, "ID: ", 4))
                        continue;
                int id = atoi(line + 4);
                n++;
                PROBLEM(id == a || id == b || id == c, "POSIX timer %d exists, the program made only %d, %d and %d", id,
                        a, b, c);
        }
        fclose(f);
        PROBLEM(n == 3, "%d POSIX timers exist, the program made 3", n);
}

static int64_t tv_us(struct timeval tv) {
        return (int64_t) tv.tv_sec * 1000000 + tv.tv_usec;
}

static int64_t ts_ns(struct timespec ts) {
        return (int64_t) ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int main(int argc, char **argv) {
        test_init(argc, argv);
        alarm_mode = argc > 1 && !strcmp(argv[1], "alarm");
        timers = !(argc > 1 && !strcmp(argv[1], "pending"));
        alrm_blocked = argc > 1 && !strcmp(argv[1], "itimer-blocked");

        install(SIGALRM, on_alrm, NULL, SA_SIGINFO | SA_RESTART, SIGRTMIN);
        install(SIGRTMIN, on_timer, NULL, SA_SIGINFO, 0);
        install(SIGRTMIN + 1, on_timer, NULL, SA_SIGINFO, 0);
        install(SIGUSR2, on_usr2, NULL, SA_SIGINFO | SA_RESTART, 0);
        install(SIGHUP, on_pending, NULL, SA_SIGINFO, 0);
        install(SIGRTMIN + 2, on_pending, NULL, SA_SIGINFO, 0);
        install(SIGRTMIN + 3, on_pending, NULL, SA_SIGINFO | SA_RESTART, 0);
        signal(SIGPIPE, SIG_IGN);
        signal(SIGTERM, SIG_DFL);

        /* The pending ones. */
        sigset_t pend;
        sigemptyset(&pend);
        sigaddset(&pend, SIGHUP);
        sigaddset(&pend, SIGRTMIN + 2);
        sigaddset(&pend, SIGRTMIN + 3);
        if (sigprocmask(SIG_BLOCK, &pend, NULL) < 0)
                fail_errno("sigprocmask");
        kill(getpid(), SIGHUP);
        if (sigqueue(getpid(), SIGRTMIN + 2, (union sigval) { .sival_int = QUEUE_VALUE }) < 0)
                fail_errno("sigqueue");
        raise(SIGRTMIN + 3);            /* thread-directed */

        /* The timers. */
        timer_t t1 = 0, t2 = 0, t3 = 0;
        if (timers) {
                struct sigevent ev = { .sigev_notify = SIGEV_SIGNAL, .sigev_signo = SIGRTMIN };
                ev.sigev_value.sival_ptr = COOKIE1;
                if (timer_create(CLOCK_MONOTONIC, &ev, &t1) < 0)
                        fail_errno("timer_create 1");
                ev.sigev_signo = SIGRTMIN + 1;
                ev.sigev_value.sival_ptr = COOKIE2;
                if (timer_create(CLOCK_REALTIME, &ev, &t2) < 0)
                        fail_errno("timer_create 2");
                struct itimerspec its1 = { { 0, 15000000 }, { 0, 15000000 } },
                                  its2 = { { 0, 25000000 }, { 0, 25000000 } };
                /* A third one that signals nothing, on a clock of its own. */
                struct sigevent none = { .sigev_notify = SIGEV_NONE };
                if (timer_create(CLOCK_BOOTTIME, &none, &t3) < 0)
                        fail_errno("timer_create 3");
                struct itimerspec its3 = { { 1, 0 }, { 1, 0 } };
                if (timer_settime(t1, 0, &its1, NULL) < 0 || timer_settime(t2, 0, &its2, NULL) < 0 ||
                    timer_settime(t3, 0, &its3, NULL) < 0)
                        fail_errno("timer_settime");
                if (alarm_mode)
                        alarm(1);
                else {
                        struct itimerval it = { { 0, 20000 }, { 0, 20000 } };
                        if (setitimer(ITIMER_REAL, &it, NULL) < 0)
                                fail_errno("setitimer");
                }
        }

        sigset_t alrm;
        sigemptyset(&alrm);
        sigaddset(&alrm, SIGALRM);
        if (alrm_blocked)
                sigprocmask(SIG_BLOCK, &alrm, NULL);
        uint64_t alrm0 = 0, t10 = 0, t20 = 0, usr20 = 0;
        bool ready = false;
        sigset_t usr2;
        sigemptyset(&usr2);
        sigaddset(&usr2, SIGUSR2);
        while (!test_verify_requested()) {
                step++;
                /* Handlers and flags. */
                if (step % 16 == 0) {
                        check_action(SIGALRM, (void *) on_alrm, SA_SIGINFO | SA_RESTART, SIGRTMIN, "SIGALRM");
                        check_action(SIGRTMIN, (void *) on_timer, SA_SIGINFO, 0, "SIGRTMIN");
                        check_action(SIGUSR2, (void *) on_usr2, SA_SIGINFO | SA_RESTART, 0, "SIGUSR2");
                        check_action(SIGHUP, (void *) on_pending, SA_SIGINFO, 0, "SIGHUP");
                        check_action(SIGRTMIN + 3, (void *) on_pending, SA_SIGINFO | SA_RESTART, 0, "SIGRTMIN+3");
                        struct sigaction sa;
                        sigaction(SIGPIPE, NULL, &sa);
                        check(sa.sa_handler == SIG_IGN, "SIGPIPE is no longer ignored");
                        sigaction(SIGTERM, NULL, &sa);
                        check(sa.sa_handler == SIG_DFL, "SIGTERM is no longer SIG_DFL");
                }
                /* Pending: still pending, not delivered. */
                sigset_t now;
                sigpending(&now);
                check(sigismember(&now, SIGHUP), "SIGHUP is no longer pending");
                check(sigismember(&now, SIGRTMIN + 2), "SIGRTMIN+2 (sent to the process) is no longer pending");
                check(sigismember(&now, SIGRTMIN + 3), "SIGRTMIN+3 (sent to the thread) is no longer pending");
                check(!hup_count && !rt2_count && !rt3_count, "a blocked signal was delivered");
                sigprocmask(SIG_BLOCK, NULL, &now);
                check(sigismember(&now, SIGHUP) && sigismember(&now, SIGRTMIN + 2) && sigismember(&now, SIGRTMIN + 3),
                      "the signal mask lost the blocked signals");

                /* Timers. */
                if (timers) {
                        struct itimerval it;
                        getitimer(ITIMER_REAL, &it);
                        if (alarm_mode) {
                                check(it.it_interval.tv_sec == 0 && it.it_interval.tv_usec == 0,
                                      "alarm() timer has an interval of %lld us", (long long) tv_us(it.it_interval));
                                if (alrm_fired) {
                                        alrm_fired = 0;
                                        alarm(1);
                                } else
                                        check(tv_us(it.it_value) > 0, "the alarm() timer is disarmed and never fired");
                        } else
                                check(tv_us(it.it_interval) == 20000, "ITIMER_REAL interval is %lld us, set 20000",
                                      (long long) tv_us(it.it_interval));
                        struct itimerspec ts;
                        if (timer_gettime(t1, &ts) < 0)
                                fail_errno("timer_gettime(CLOCK_MONOTONIC timer)");
                        check(ts_ns(ts.it_interval) == 15000000, "POSIX timer 1 interval is %lld ns, set 15 ms",
                              (long long) ts_ns(ts.it_interval));
                        if (timer_gettime(t2, &ts) < 0)
                                fail_errno("timer_gettime(CLOCK_REALTIME timer)");
                        check(ts_ns(ts.it_interval) == 25000000, "POSIX timer 2 interval is %lld ns, set 25 ms",
                              (long long) ts_ns(ts.it_interval));
                        if (timer_gettime(t3, &ts) < 0)
                                fail_errno("timer_gettime(CLOCK_BOOTTIME timer)");
                        check(ts_ns(ts.it_interval) == 1000000000, "POSIX timer 3 interval is %lld ns, set 1 s",
                              (long long) ts_ns(ts.it_interval));
                        if (step % 16 == 0)
                                check_timer_set((int) (intptr_t) t1, (int) (intptr_t) t2, (int) (intptr_t) t3);
                        uint64_t s = step;
                        check(s - alrm_last < (alarm_mode ? 2 * STALL : STALL), "no SIGALRM for %llu steps (%s)",
                              (unsigned long long) (s - alrm_last), alarm_mode ? "alarm" : "ITIMER_REAL");
                        check(s - t1_last < STALL, "no signal of POSIX timer 1 for %llu steps",
                              (unsigned long long) (s - t1_last));
                        check(s - t2_last < STALL, "no signal of POSIX timer 2 for %llu steps",
                              (unsigned long long) (s - t2_last));
                }

                if (alrm_blocked && step % 40 == 0) {
                        sigprocmask(SIG_UNBLOCK, &alrm, NULL);
                        sigprocmask(SIG_BLOCK, &alrm, NULL);
                }

                /* SIGUSR2, the program's own. */
                if (step % 4 == 0) {
                        uint64_t c = usr2_count;
                        raise(SIGUSR2);
                        check(usr2_count == c + 1, "raise(SIGUSR2) did not run the program's handler");
                        sigprocmask(SIG_BLOCK, &usr2, NULL);
                        raise(SIGUSR2);
                        test_msleep(1);
                        check(usr2_count == c + 1, "SIGUSR2 delivered while the program blocks it");
                        sigprocmask(SIG_UNBLOCK, &usr2, NULL);
                        check(usr2_count == c + 2, "SIGUSR2 raised while blocked not delivered on unblock");
                        usr2_reraise = true;
                        raise(SIGUSR2);
                        check(usr2_count == c + 4, "SIGUSR2 raised in its handler not delivered as it returned");
                }
                if (!ready && (!timers || (alrm_ticks && t1_ticks && t2_ticks))) {
                        ready = true;
                        alrm0 = alrm_ticks;
                        t10 = t1_ticks;
                        t20 = t2_ticks;
                        usr20 = usr2_count;
                        test_ready();
                }
                test_heartbeat();
                test_msleep(STEP_MS);
        }
        /* Report every problem, not only the first. */
        PROBLEM(ready, "verification before the program was ready");
        PROBLEM(!bad_what[0], "during the run: %s (SIGALRM %llu, timers %llu, SIGUSR2 %llu bad deliveries)", bad_what,
                (unsigned long long) alrm_bad, (unsigned long long) timer_bad, (unsigned long long) usr2_bad);
        PROBLEM((!timers || (alrm_ticks > alrm0 && t1_ticks > t10 && t2_ticks > t20)) && usr20 < usr2_count,
                "signals stopped: SIGALRM %llu->%llu, timer1 %llu->%llu, timer2 %llu->%llu, SIGUSR2 %llu->%llu",
                (unsigned long long) alrm0, (unsigned long long) alrm_ticks, (unsigned long long) t10,
                (unsigned long long) t1_ticks, (unsigned long long) t20, (unsigned long long) t2_ticks,
                (unsigned long long) usr20, (unsigned long long) usr2_count);
        /* Stop the timers, then let the pending signals in. */
        struct itimerval off = { 0 };
        setitimer(ITIMER_REAL, &off, NULL);
        if (timers) {
                timer_delete(t1);
                timer_delete(t2);
                timer_delete(t3);
        }
        sigprocmask(SIG_UNBLOCK, &pend, NULL);
        PROBLEM(hup_count == 1, "SIGHUP delivered %llu times after unblocking, expected once",
                (unsigned long long) hup_count);
        PROBLEM(rt2_count == 1, "SIGRTMIN+2 (sent to the process) delivered %llu times, expected once",
                (unsigned long long) rt2_count);
        PROBLEM(rt3_count == 1, "SIGRTMIN+3 (sent to the thread) delivered %llu times, expected once",
                (unsigned long long) rt3_count);
        PROBLEM(hup_code == SI_USER, "pending SIGHUP (kill) arrived with si_code %d, sent with SI_USER", hup_code);
        PROBLEM(rt3_code == SI_TKILL, "pending SIGRTMIN+3 (raise) arrived with si_code %d, sent with SI_TKILL",
                rt3_code);
        PROBLEM(rt2_code == SI_QUEUE && rt2_value == QUEUE_VALUE,
                "pending SIGRTMIN+2 (sigqueue) arrived with si_code %d and value %#x, sent with SI_QUEUE (%d) and %#x",
                rt2_code, rt2_value, SI_QUEUE, QUEUE_VALUE);
        sigset_t now;
        sigpending(&now);
        for (int s = 1; s < SIGRTMIN + 4; s++)
                PROBLEM(!sigismember(&now, s) || s == SIGRTMIN || s == SIGRTMIN + 1 || s == SIGALRM,
                        "signal %d still pending after unblocking", s);
        check(!problems[0], "%s", problems);
        pass();
}
