/* sigwait: the program waits for SIGUSR2 (dmtcp's checkpoint signal, which
 * the runtime hides from the program) with sigwaitinfo() and sigtimedwait()
 * in a thread of its own, as a daemon's signal thread does.
 *
 * Every thread blocks SIGUSR2 (the waiter inherits the mask from main).
 * Each step main sends one SIGUSR2, in turn: pthread_kill() to the waiter;
 * sigqueue() to the process with the step as its value (the kernel may hand
 * it to main, which blocks it, or to the waiter); and raise(), which is
 * main's own, so main takes it with sigtimedwait() and the waiter must not.
 * After each, main waits until the signal was taken, with the siginfo it
 * was sent with; one lost (merged with a checkpoint's signal, or kept by a
 * thread that blocks it) fails the test after 10 s. The checkpoint's own
 * signal reaches the waiter while it waits: the wait must take it as a
 * checkpoint, never return it to the program.
 *
 * Every 50 steps, also: a SIGUSR2 raised while blocked runs the handler in
 * the sigsuspend() whose mask lets it through; and one pending in main is
 * not pending in a child forked meanwhile (a fork's child starts with none),
 * while main still takes it.
 *
 * First of all, the program blocks SIGUSR2, raises it and execs itself: the
 * new image must find SIGUSR2 blocked and pending (sigpending), and take it
 * with the siginfo it was raised with, as the kernel keeps both across an
 * exec. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <sys/wait.h>
#include <unistd.h>

#include "zdtmtst.h"

static _Atomic uint64_t taken;          /* signals the waiter took */
static _Atomic int64_t last_value;      /* the sigqueue value it saw last, or -1 */
static _Atomic int last_code;
static pthread_t waiter;
static volatile sig_atomic_t handled;

static void on_usr2(int sig) {
        (void) sig;
        handled++;
}

static void *waiter_main(void *arg) {
        (void) arg;
        sigset_t mine;
        check(pthread_sigmask(SIG_SETMASK, NULL, &mine) == 0, "pthread_sigmask");
        check(sigismember(&mine, SIGUSR2), "the waiter did not inherit main's blocked SIGUSR2");
        sigset_t set;
        sigemptyset(&set);
        sigaddset(&set, SIGUSR2);
        for (uint64_t n = 0;; n++) {
                siginfo_t si;
                int r;
                if (n % 2) {
                        struct timespec ts = { 0, 20 * 1000 * 1000 };
                        r = sigtimedwait(&set, &si, &ts);
                        if (r < 0 && errno == EAGAIN)
                                continue;
                } else
                        r = sigwaitinfo(&set, &si);
                if (r < 0 && errno == EINTR)
                        continue;
                check(r == SIGUSR2, "sigwaitinfo returned %d (%s)", r, r < 0 ? strerror(errno) : "another signal");
                check(si.si_signo == SIGUSR2, "siginfo of signal %d", si.si_signo);
                check(si.si_pid == getpid(), "SIGUSR2 from pid %d, not from us (a checkpoint's signal?)", si.si_pid);
                atomic_store(&last_code, si.si_code);
                atomic_store(&last_value, si.si_code == SI_QUEUE ? (int64_t) si.si_value.sival_int : -1);
                atomic_fetch_add(&taken, 1);
        }
        return NULL;
}

static void wait_taken(uint64_t want, const char *how) {
        for (int i = 0; i < 10000 && atomic_load(&taken) < want; i++)
                test_msleep(1);
        check(atomic_load(&taken) == want, "SIGUSR2 #%llu sent by %s was never taken by sigwaitinfo (taken %llu)",
              (unsigned long long) want, how, (unsigned long long) atomic_load(&taken));
}

static void exec_self(char **argv) {
        sigset_t usr2;
        sigemptyset(&usr2);
        sigaddset(&usr2, SIGUSR2);
        check(sigprocmask(SIG_BLOCK, &usr2, NULL) == 0, "sigprocmask");
        raise(SIGUSR2);
        char *args[] = { argv[0], (char *) "--execd", NULL };
        execv("/proc/self/exe", args);
        fail_errno("exec");
}

static void check_after_exec(void) {
        sigset_t cur, pend;
        check(sigprocmask(SIG_BLOCK, NULL, &cur) == 0 && sigismember(&cur, SIGUSR2),
              "SIGUSR2 is not blocked after an exec by a program that blocked it");
        check(sigpending(&pend) == 0 && sigismember(&pend, SIGUSR2), "the SIGUSR2 raised before an exec is not pending");
        struct timespec zero = { 0, 0 };
        siginfo_t si;
        check(sigtimedwait(&cur, &si, &zero) == SIGUSR2 && si.si_pid == getpid(),
              "the SIGUSR2 raised before an exec was not taken after it");
        check(sigpending(&pend) == 0 && !sigismember(&pend, SIGUSR2), "SIGUSR2 still pending once taken");
}

int main(int argc, char **argv) {
        if (argc < 2 || strcmp(argv[1], "--execd"))
                exec_self(argv);
        test_init(argc, argv);
        check_after_exec();
        struct sigaction sa = { .sa_handler = on_usr2 };
        sigemptyset(&sa.sa_mask);
        check(sigaction(SIGUSR2, &sa, NULL) == 0, "sigaction");
        sigset_t usr2, none;
        sigemptyset(&usr2);
        sigaddset(&usr2, SIGUSR2);
        sigemptyset(&none);
        check(sigprocmask(SIG_BLOCK, &usr2, NULL) == 0, "sigprocmask");
        check(pthread_create(&waiter, NULL, waiter_main, NULL) == 0, "pthread_create");
        test_ready();

        uint64_t sent = 0, own = 0;
        for (uint64_t step = 0; !test_verify_requested(); step++) {
                switch (step % 3) {
                case 0:
                        check(pthread_kill(waiter, SIGUSR2) == 0, "pthread_kill");
                        wait_taken(++sent, "pthread_kill");
                        /* SI_TKILL, which glibc's sigwaitinfo reports as SI_USER. */
                        check(atomic_load(&last_code) == SI_USER, "pthread_kill's SIGUSR2 arrived with si_code %d",
                              atomic_load(&last_code));
                        break;
                case 1: {
                        union sigval v = { .sival_int = (int) (step & 0xffffff) };
                        check(sigqueue(getpid(), SIGUSR2, v) == 0, "sigqueue");
                        wait_taken(++sent, "sigqueue");
                        check(atomic_load(&last_value) == (int64_t) (step & 0xffffff),
                              "sigqueue's SIGUSR2 arrived with value %lld, sent %llu",
                              (long long) atomic_load(&last_value), (unsigned long long) (step & 0xffffff));
                        break;
                }
                case 2: {
                        /* Thread-directed to main: main takes it itself. */
                        raise(SIGUSR2);
                        siginfo_t si;
                        struct timespec ts = { 10, 0 };
                        int r = sigtimedwait(&usr2, &si, &ts);
                        check(r == SIGUSR2, "main's sigtimedwait after raise: %d (%s)", r, r < 0 ? strerror(errno) : "");
                        check(si.si_code == SI_USER && si.si_pid == getpid(),
                              "main's sigtimedwait after raise: si_code %d, pid %d", si.si_code, si.si_pid);
                        own++;
                        break;
                }
                }
                if (step % 50 == 0) {
                        /* One pending, then a sigsuspend that lets it through. */
                        sig_atomic_t h = handled;
                        raise(SIGUSR2);
                        check(handled == h, "SIGUSR2 ran its handler while blocked");
                        int r = sigsuspend(&none);
                        check(r == -1 && errno == EINTR, "sigsuspend returned %d", r);
                        check(handled == h + 1, "sigsuspend did not run the handler of the pending SIGUSR2");

                        raise(SIGUSR2);
                        pid_t child = fork();
                        check(child >= 0, "fork");
                        if (child == 0) {
                                struct timespec zero = { 0, 0 };
                                siginfo_t si;
                                _exit(sigtimedwait(&usr2, &si, &zero) == -1 && errno == EAGAIN ? 0 : 1);
                        }
                        int st;
                        check(waitpid(child, &st, 0) == child, "waitpid");
                        check(WIFEXITED(st) && WEXITSTATUS(st) == 0, "a forked child inherited the pending SIGUSR2");
                        struct timespec ts = { 10, 0 };
                        siginfo_t si;
                        check(sigtimedwait(&usr2, &si, &ts) == SIGUSR2, "main lost its pending SIGUSR2 in a fork");
                }
                test_heartbeat();
                test_msleep(1);
        }
        check(sent > 0 && own > 0, "nothing was sent");
        check(atomic_load(&taken) == sent, "the waiter took %llu signals, %llu were sent",
              (unsigned long long) atomic_load(&taken), (unsigned long long) sent);
        pass();
}
