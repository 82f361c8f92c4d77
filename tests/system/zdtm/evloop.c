/* evloop: an epoll loop over a timerfd, eventfds, a signalfd and a pipe,
 * shared with a child process.
 *
 *   child -> parent   a pipe of sequenced bytes, and an eventfd it adds 1
 *                     to every 4th step, watched by an inner epoll instance
 *                     that the outer one watches (nested); a Unix seqpacket
 *                     socket pair, a numbered message every 4th step
 *   signals           SIGRTMIN+1 the parent queues to itself with a number
 *                     every 4th step, read in order through a signalfd whose
 *                     mask also holds SIGUSR2, dmtcp's checkpoint signal (a
 *                     signalfd's watch reports the signals of the process
 *                     that added it: the parent, not the child that shares
 *                     the epoll instance)
 *   timer             CLOCK_MONOTONIC, every 20 ms: the expirations read
 *                     must match the time that passed (counted anew after
 *                     any pause of the loop: a checkpoint, a restart)
 *   semaphore         an EFD_SEMAPHORE eventfd, edge-triggered, that always
 *                     holds 3 more than what was written and not yet read
 *   one-shot          an eventfd watched EPOLLONESHOT that fired once and
 *                     was never re-armed: it must stay silent
 *   moved             an eventfd watched under a number since closed (the
 *                     file lives on under another): still watched
 *   deadlines         a CLOCK_REALTIME absolute timer an hour ahead keeps its
 *                     wall-clock deadline; a relative one, an absolute one on
 *                     CLOCK_MONOTONIC (which stays absolute) and a relative
 *                     one on CLOCK_BOOTTIME never gain time; a 1 ms
 *                     one-shot never read keeps its expiration
 *   dups              the semaphore, the 1 ms timer and the epoll instance
 *                     have a second descriptor each (dup): still one
 *
 * The heartbeat advances with the timer's expirations.
 *
 * Every event must come with the data of its watch and EPOLLIN alone. At
 * verification the child adds a watch to the epoll instance they share
 * and the parent must see it (one description), the one-shot is re-armed
 * and fires, the interest list in fdinfo is the one set up, and after the
 * child stops, every byte and count it sent has been received, and every
 * signal queued. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "zdtmtst.h"

#define PERIOD_NS 20000000LL
#define CHUNK 64
#define GAP_NS 50000000LL

enum { W_DATA = 1, W_EFD, W_TIMER, W_SIG, W_SEM, W_ONESHOT, W_MOVED, W_SHARED, W_INNER, W_SOCK };

struct report {
        uint64_t bytes, efd, msgs;
};

static int data[2], cmd[2], rep[2], sk[2], ep, inner, efd, tfd, sfd, sem, oneshot, moved_at, moved, shared, rt_tfd,
        mono_tfd, abs_tfd, boot_tfd, short_tfd, sem_dup, short_dup, ep_dup;
static int sig;

static unsigned char byte_at(uint64_t pos) {
        return (unsigned char) mix64(pos * 7919 + 11);
}

static int64_t now_ns(clockid_t c) {
        struct timespec t;
        clock_gettime(c, &t);
        return (int64_t) t.tv_sec * 1000000000LL + t.tv_nsec;
}

static void watch_in(int epfd, int fd, uint32_t events, uint64_t cookie) {
        struct epoll_event ev = { .events = events, .data.u64 = cookie };
        if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) < 0)
                fail_errno("epoll_ctl ADD %d", fd);
}

static void watch(int fd, uint32_t events, uint64_t cookie) {
        watch_in(ep, fd, events, cookie);
}

static uint64_t read_u64(int fd, const char *what) {
        uint64_t v;
        ssize_t k;
        while ((k = read(fd, &v, sizeof v)) < 0 && errno == EINTR)
                ;
        if (k != (ssize_t) sizeof v)
                fail_errno("read %s (%zd)", what, k);
        return v;
}

static void write_u64(int fd, uint64_t v, const char *what) {
        write_all(fd, &v, sizeof v, what);
}

static _Noreturn void child(void) {
        close(data[0]);
        close(cmd[1]);
        close(rep[0]);
        close(sk[0]);
        struct report r = { 0, 0, 0 };
        unsigned char buf[CHUNK];
        for (uint64_t step = 1;; step++) {
                for (int i = 0; i < CHUNK; i++)
                        buf[i] = byte_at(r.bytes + (uint64_t) i);
                write_all(data[1], buf, CHUNK, "the data pipe (child)");
                r.bytes += CHUNK;
                if (step % 4 == 0) {
                        write_u64(efd, 1, "the eventfd (child)");
                        r.efd++;
                        write_u64(sk[1], ++r.msgs, "the socket (child)");
                }
                struct pollfd p = { cmd[0], POLLIN, 0 };
                if (poll(&p, 1, 3) <= 0)
                        continue;
                char c;
                if (read(cmd[0], &c, 1) != 1)
                        fail("child: the command pipe ended");
                if (c == 'a') {
                        /* A watch added here must show in the parent: one instance. */
                        struct epoll_event ev = { .events = EPOLLIN, .data.u64 = W_SHARED };
                        if (epoll_ctl(ep, EPOLL_CTL_ADD, shared, &ev) < 0)
                                fail_errno("child: epoll_ctl ADD on the shared epoll");
                        write_u64(shared, 1, "the shared eventfd (child)");
                } else if (c == 's') {
                        write_all(rep[1], &r, sizeof r, "the report pipe");
                        exit(0);
                }
        }
}


/* What the loop has received and what it expects. */
static struct {
        uint64_t bytes, efd, msgs, sigs, sigs_sent, sem_out, moved_out, moved_in;
        bool shared_seen, oneshot_seen, verifying, stopping;
        /* timer: expirations since a reference read, bounded by the clock */
        bool have_ref;
        int64_t last;                   /* monotonic time the loop last looked */
        int64_t ref_a, ref_b;           /* monotonic time before and after the reference read */
        uint64_t ticks;
        int64_t mono_left, abs_left, boot_left;   /* the one-hour timers' time left, last seen */
} st;

/* Time passed since the loop last looked (a pause: the program was stopped
 * for a checkpoint, or not scheduled, or restarted). */
static bool paused(int64_t t) {
        bool gap = t < st.last || t - st.last > GAP_NS;
        st.last = t;
        return gap;
}

static void check_timer_read(uint64_t v, int64_t t_a, int64_t t_b) {
        /* Over a pause the count starts anew: a restart does not count the
         * time the computation was not running (no such pause is missed:
         * the monotonic clock goes on while the program is gone). */
        if (paused(t_a))
                st.have_ref = false;
        if (!st.have_ref) {
                st.have_ref = true;
                st.ref_a = t_a;
                st.ref_b = t_b;
                st.ticks = 0;
                return;
        }
        st.ticks += v;
        int64_t lo = (t_a - st.ref_b) / PERIOD_NS - 1, hi = (t_b - st.ref_a) / PERIOD_NS + 2;
        check((int64_t) st.ticks >= lo && (int64_t) st.ticks <= hi,
              "the 20 ms timer expired %llu times in %.3f..%.3f s (expected %lld..%lld): its period is wrong",
              (unsigned long long) st.ticks, (t_a - st.ref_b) / 1e9, (t_b - st.ref_a) / 1e9, (long long) lo,
              (long long) hi);
}

/* A one-hour timer: time left only goes down, clock and flags stay. */
static void check_hour(int fd, const char *what, clockid_t clock, int flags, int64_t *last) {
        struct itimerspec its;
        if (timerfd_gettime(fd, &its) < 0)
                fail_errno("timerfd_gettime (%s)", what);
        int64_t left = (int64_t) its.it_value.tv_sec * 1000000000LL + its.it_value.tv_nsec;
        check(left > 0 && left <= *last, "the %s one-hour timer went from %.6f to %.6f s left", what, *last / 1e9,
              left / 1e9);
        *last = left;
        if (!st.verifying)
                return;         /* the file below must not be open at a checkpoint */
        char path[64], buf[512], want[64];
        snprintf(path, sizeof path, "/proc/self/fdinfo/%d", fd);
        int f = open(path, O_RDONLY | O_CLOEXEC);
        ssize_t k = f >= 0 ? read(f, buf, sizeof buf - 1) : -1;
        if (k <= 0)
                fail_errno("read %s", path);
        close(f);
        buf[k] = 0;
        snprintf(want, sizeof want, "clockid: %d\nticks: 0\nsettime flags: 0%o\n", (int) clock, flags);
        check(strstr(buf, want), "the %s one-hour timer's fdinfo lacks \"%s\":\n%s", what, want, buf);
}

static void check_deadlines(int64_t rt_deadline) {
        struct itimerspec its;
        int64_t t1 = now_ns(CLOCK_REALTIME);
        if (timerfd_gettime(rt_tfd, &its) < 0)
                fail_errno("timerfd_gettime (realtime)");
        int64_t t2 = now_ns(CLOCK_REALTIME);
        int64_t left = (int64_t) its.it_value.tv_sec * 1000000000LL + its.it_value.tv_nsec;
        check(left >= rt_deadline - t2 - 1000000 && left <= rt_deadline - t1 + 1000000,
              "the absolute CLOCK_REALTIME timer has %.6f s left, its deadline is %.6f s away", left / 1e9,
              (rt_deadline - t1) / 1e9);
        check_hour(mono_tfd, "relative CLOCK_MONOTONIC", CLOCK_MONOTONIC, 0, &st.mono_left);
        check_hour(abs_tfd, "absolute CLOCK_MONOTONIC", CLOCK_MONOTONIC, TFD_TIMER_ABSTIME, &st.abs_left);
        check_hour(boot_tfd, "relative CLOCK_BOOTTIME", CLOCK_BOOTTIME, 0, &st.boot_left);
        if (timerfd_gettime(tfd, &its) < 0)
                fail_errno("timerfd_gettime (periodic)");
        check(its.it_interval.tv_sec == 0 && its.it_interval.tv_nsec == PERIOD_NS,
              "the periodic timer's interval is %lld.%09ld s", (long long) its.it_interval.tv_sec,
              its.it_interval.tv_nsec);
        check(its.it_value.tv_sec == 0 && its.it_value.tv_nsec <= PERIOD_NS,
              "the periodic timer's next expiry is %lld.%09ld s away", (long long) its.it_value.tv_sec,
              its.it_value.tv_nsec);
}

static void handle(const struct epoll_event *ev) {
        /* Once the child is told to stop, its end of the pipe may close. */
        bool hup_ok = st.stopping && (ev->data.u64 == W_DATA || ev->data.u64 == W_SOCK);
        check(ev->events == EPOLLIN || (hup_ok && (ev->events & ~(uint32_t) (EPOLLIN | EPOLLRDHUP)) == EPOLLHUP),
              "watch %llu reported events %#x, expected EPOLLIN alone",
              (unsigned long long) ev->data.u64, ev->events);
        switch (ev->data.u64) {
        case W_DATA: {
                unsigned char buf[4096];
                ssize_t k = read(data[0], buf, sizeof buf);
                if (k < 0 && (errno == EINTR || errno == EAGAIN))
                        return;
                if (k == 0 && hup_ok) {
                        if (epoll_ctl(ep, EPOLL_CTL_DEL, data[0], NULL) < 0)
                                fail_errno("epoll_ctl DEL");
                        return;
                }
                if (k <= 0)
                        fail_errno("read the data pipe (%zd)", k);
                for (ssize_t i = 0; i < k; i++, st.bytes++)
                        check(buf[i] == byte_at(st.bytes), "data byte %llu is %u, expected %u",
                              (unsigned long long) st.bytes, buf[i], byte_at(st.bytes));
                return;
        }
        case W_SOCK: {
                uint64_t v;
                ssize_t k = recv(sk[0], &v, sizeof v, MSG_DONTWAIT);
                if (k < 0 && (errno == EINTR || errno == EAGAIN))
                        return;
                if (k == 0 && hup_ok) {
                        if (epoll_ctl(ep, EPOLL_CTL_DEL, sk[0], NULL) < 0)
                                fail_errno("epoll_ctl DEL");
                        return;
                }
                check(k == (ssize_t) sizeof v && v == st.msgs + 1, "socket message %llu is %llu (%zd bytes)",
                      (unsigned long long) st.msgs + 1, (unsigned long long) v, k);
                st.msgs++;
                return;
        }
        case W_INNER: {
                /* The inner instance has the child's eventfd. */
                struct epoll_event in;
                int n = epoll_wait(inner, &in, 1, 0);
                if (n < 0 && errno == EINTR)
                        return;
                check(n == 1 && in.data.u64 == W_EFD && in.events == EPOLLIN,
                      "the inner epoll reported %d events (data %#llx, events %#x) to the outer's EPOLLIN", n,
                      n > 0 ? (unsigned long long) in.data.u64 : 0ULL, n > 0 ? in.events : 0);
                st.efd += read_u64(efd, "the eventfd");
                return;
        }
        case W_TIMER: {
                int64_t t_a = now_ns(CLOCK_MONOTONIC);
                uint64_t v = read_u64(tfd, "the timerfd");
                check_timer_read(v, t_a, now_ns(CLOCK_MONOTONIC));
                test_heartbeat();       /* one a tick: progress is time */
                return;
        }
        case W_SIG: {
                struct signalfd_siginfo si;
                ssize_t k = read(sfd, &si, sizeof si);
                if (k < 0 && (errno == EINTR || errno == EAGAIN))
                        return;
                check(k == (ssize_t) sizeof si, "read the signalfd: %zd", k);
                check((int) si.ssi_signo == sig, "the signalfd gave signal %u, expected %d", si.ssi_signo, sig);
                check(si.ssi_int == (int) st.sigs + 1 && (int) si.ssi_pid == getpid(),
                      "signal number %d came from %u, expected %llu from us", si.ssi_int, si.ssi_pid,
                      (unsigned long long) st.sigs + 1);
                st.sigs++;
                return;
        }
        case W_SEM:
                /* Edge-triggered: an edge seen again after a restart finds
                 * the standing 3 (a semaphore read takes 1). */
                check(read_u64(sem, "the semaphore") == 1, "a semaphore read gave more than 1");
                st.sem_out--;
                return;
        case W_ONESHOT:
                check(st.verifying, "the one-shot watch, fired and never re-armed, fired again");
                st.oneshot_seen = true;
                return;
        case W_MOVED:
                st.moved_in += read_u64(moved, "the moved eventfd");
                return;
        case W_SHARED:
                check(st.verifying, "the watch added by the child showed up early");
                read_u64(shared, "the shared eventfd");
                st.shared_seen = true;
                return;
        default:
                fail("an event came with data %#llx, which no watch has", (unsigned long long) ev->data.u64);
        }
}

static int loop_once(int timeout) {
        struct epoll_event evs[16];
        int n = epoll_wait(ep, evs, 16, timeout);
        if (n < 0 && errno != EINTR)
                fail_errno("epoll_wait");
        for (int i = 0; i < n; i++)
                handle(&evs[i]);
        return n;
}

struct want_watch {
        int fd;
        unsigned events;
        unsigned long long cookie;
};

/* An interest list as the kernel shows it. */
static void check_fdinfo(int epfd, const struct want_watch *want, size_t n) {
        char path[64], buf[8192];
        snprintf(path, sizeof path, "/proc/self/fdinfo/%d", epfd);
        int fd = open(path, O_RDONLY);
        ssize_t k = fd >= 0 ? read(fd, buf, sizeof buf - 1) : -1;
        if (k <= 0)
                fail_errno("read %s", path);
        close(fd);
        buf[k] = 0;
        for (size_t i = 0; i < n; i++) {
                char line[128];
                snprintf(line, sizeof line, "tfd: %8d events: %8x data: %16llx", want[i].fd, want[i].events,
                         want[i].cookie);
                check(strstr(buf, line), "the epoll's fdinfo lacks \"%s\":\n%s", line, buf);
        }
}

static void check_interest(void) {
        const struct want_watch outer[] = {
                { data[0], EPOLLIN | EPOLLERR | EPOLLHUP, W_DATA },
                { inner, EPOLLIN | EPOLLERR | EPOLLHUP, W_INNER },
                { tfd, EPOLLIN | EPOLLERR | EPOLLHUP, W_TIMER },
                { sfd, EPOLLIN | EPOLLERR | EPOLLHUP, W_SIG },
                { sem, EPOLLIN | EPOLLET | EPOLLERR | EPOLLHUP, W_SEM },
                { moved_at, EPOLLIN | EPOLLERR | EPOLLHUP, W_MOVED },
                { shared, EPOLLIN | EPOLLERR | EPOLLHUP, W_SHARED },
                { sk[0], EPOLLIN | EPOLLRDHUP | EPOLLERR | EPOLLHUP, W_SOCK },
        }, in[] = {
                { efd, EPOLLIN | EPOLLERR | EPOLLHUP, W_EFD },
        };
        check_fdinfo(ep, outer, sizeof outer / sizeof outer[0]);
        check_fdinfo(inner, in, 1);
}

int main(int argc, char **argv) {
        test_init(argc, argv);
        sig = SIGRTMIN + 1;
        sigset_t mask;
        sigemptyset(&mask);
        sigaddset(&mask, sig);
        sigaddset(&mask, SIGUSR2);      /* dmtcp's: a signalfd must not take it */
        if (sigprocmask(SIG_BLOCK, &mask, NULL) < 0)
                fail_errno("sigprocmask");
        if (pipe(data) < 0 || pipe(cmd) < 0 || pipe(rep) < 0 ||
            socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sk) < 0)
                fail_errno("pipe, socketpair");
        ep = epoll_create1(EPOLL_CLOEXEC);
        inner = epoll_create1(EPOLL_CLOEXEC);
        efd = eventfd(0, EFD_CLOEXEC);
        tfd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC);
        sfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
        sem = eventfd(3, EFD_SEMAPHORE | EFD_NONBLOCK);
        oneshot = eventfd(0, EFD_NONBLOCK);
        moved_at = eventfd(0, EFD_NONBLOCK);
        shared = eventfd(0, EFD_NONBLOCK);
        rt_tfd = timerfd_create(CLOCK_REALTIME, 0);
        mono_tfd = timerfd_create(CLOCK_MONOTONIC, 0);
        abs_tfd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC);
        boot_tfd = timerfd_create(CLOCK_BOOTTIME, TFD_CLOEXEC);
        short_tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK);
        if (ep < 0 || inner < 0 || abs_tfd < 0 || boot_tfd < 0 || efd < 0 || tfd < 0 || sfd < 0 || sem < 0 || oneshot < 0 || moved_at < 0 || shared < 0 ||
            rt_tfd < 0 || mono_tfd < 0 || short_tfd < 0)
                fail_errno("creating the descriptors");
        /* The one-shot fires first, alone. */
        watch(oneshot, EPOLLIN | EPOLLONESHOT, W_ONESHOT);
        write_u64(oneshot, 1, "the one-shot eventfd");
        struct epoll_event ev;
        check(epoll_wait(ep, &ev, 1, 1000) == 1 && ev.data.u64 == W_ONESHOT, "the one-shot watch did not fire");
        watch(data[0], EPOLLIN, W_DATA);
        watch(sk[0], EPOLLIN | EPOLLRDHUP, W_SOCK);
        watch_in(inner, efd, EPOLLIN, W_EFD);
        watch(inner, EPOLLIN, W_INNER);
        watch(tfd, EPOLLIN, W_TIMER);
        watch(sfd, EPOLLIN, W_SIG);
        watch(sem, EPOLLIN | EPOLLET, W_SEM);
        /* Watched as moved_at, then kept only as moved. */
        watch(moved_at, EPOLLIN, W_MOVED);
        moved = dup(moved_at);
        if (moved < 0 || close(moved_at) < 0)
                fail_errno("dup/close");
        struct itimerspec its = { .it_interval = { 0, PERIOD_NS }, .it_value = { 0, PERIOD_NS } };
        if (timerfd_settime(tfd, 0, &its, NULL) < 0)
                fail_errno("timerfd_settime");
        int64_t rt_deadline = (now_ns(CLOCK_REALTIME) / 1000000000LL + 3600) * 1000000000LL;
        struct itimerspec abs = { .it_value = { rt_deadline / 1000000000LL, 0 } };
        struct itimerspec hour = { .it_value = { 3600, 0 } };
        struct itimerspec ms = { .it_value = { 0, 1000000 } };
        struct itimerspec mono_abs = { .it_value = { now_ns(CLOCK_MONOTONIC) / 1000000000LL + 3600, 0 } };
        if (timerfd_settime(rt_tfd, TFD_TIMER_ABSTIME, &abs, NULL) < 0 || timerfd_settime(mono_tfd, 0, &hour, NULL) < 0 ||
            timerfd_settime(abs_tfd, TFD_TIMER_ABSTIME, &mono_abs, NULL) < 0 ||
            timerfd_settime(boot_tfd, 0, &hour, NULL) < 0 || timerfd_settime(short_tfd, 0, &ms, NULL) < 0)
                fail_errno("timerfd_settime");
        st.mono_left = st.abs_left = st.boot_left = 3600 * 1000000000LL;
        sem_dup = dup(sem);
        short_dup = dup(short_tfd);
        ep_dup = dup(ep);
        if (sem_dup < 0 || short_dup < 0 || ep_dup < 0)
                fail_errno("dup");
        st.sem_out = 0;
        pid_t pid = fork();
        if (pid < 0)
                fail_errno("fork");
        if (pid == 0)
                child();
        close(data[1]);
        close(cmd[0]);
        close(rep[1]);
        close(sk[1]);
        test_ready();
        for (uint64_t step = 0; !test_verify_requested(); step++) {
                if (paused(now_ns(CLOCK_MONOTONIC)))
                        st.have_ref = false;
                write_u64(sem, 1, "the semaphore");
                st.sem_out++;
                if (step % 4 == 0) {
                        union sigval v = { .sival_int = (int) ++st.sigs_sent };
                        if (sigqueue(getpid(), sig, v) < 0)
                                fail_errno("sigqueue");
                }
                if (step % 10 == 0) {
                        write_u64(moved, 1, "the moved eventfd");
                        st.moved_out++;
                }
                loop_once(100);
                check_deadlines(rt_deadline);
                if (paused(now_ns(CLOCK_MONOTONIC)))
                        st.have_ref = false;
        }

        st.verifying = true;
        /* The child adds a watch: we must see its event. */
        write_all(cmd[1], "a", 1, "the command pipe");
        for (int i = 0; i < 200 && !st.shared_seen; i++)
                loop_once(50);
        check(st.shared_seen, "the watch the child added to the shared epoll never reported here");
        check_interest();
        check_deadlines(rt_deadline);
        /* The one-shot, re-armed, fires. */
        ev = (struct epoll_event) { .events = EPOLLIN | EPOLLONESHOT, .data.u64 = W_ONESHOT };
        if (epoll_ctl(ep, EPOLL_CTL_MOD, oneshot, &ev) < 0)
                fail_errno("epoll_ctl MOD (one-shot)");
        for (int i = 0; i < 200 && !st.oneshot_seen; i++)
                loop_once(50);
        check(st.oneshot_seen, "the re-armed one-shot watch did not fire");
        /* Everything the child sent arrives. */
        write_all(cmd[1], "s", 1, "the command pipe");
        st.stopping = true;
        struct report r;
        if (fcntl(rep[0], F_SETFL, O_NONBLOCK) < 0)
                fail_errno("F_SETFL");
        for (int i = 0;; i++) {
                loop_once(20);  /* the child may wait for room in the data pipe */
                ssize_t k = read(rep[0], &r, sizeof r);
                if (k == (ssize_t) sizeof r)
                        break;
                check(i < 1000 && (k < 0 && errno == EAGAIN), "the child's report did not come (%zd)", k);
        }
        for (int i = 0; i < 400 && (st.bytes != r.bytes || st.efd != r.efd || st.msgs != r.msgs ||
                                    st.sigs != st.sigs_sent); i++)
                loop_once(50);
        check(st.msgs == r.msgs, "received %llu socket messages, the child sent %llu", (unsigned long long) st.msgs,
              (unsigned long long) r.msgs);
        check(st.bytes == r.bytes && st.efd == r.efd,
              "received %llu bytes and %llu from the eventfd; the child sent %llu and %llu",
              (unsigned long long) st.bytes, (unsigned long long) st.efd, (unsigned long long) r.bytes,
              (unsigned long long) r.efd);
        check(st.sigs == st.sigs_sent, "%llu signals came of the %llu queued", (unsigned long long) st.sigs,
              (unsigned long long) st.sigs_sent);
        for (int i = 0; i < 200 && st.moved_in != st.moved_out; i++)
                loop_once(50);
        check(st.moved_in == st.moved_out, "the moved eventfd gave %llu of %llu", (unsigned long long) st.moved_in,
              (unsigned long long) st.moved_out);
        /* The semaphore holds 3 more than what is outstanding. */
        uint64_t left = 0, v;
        while (read(sem, &v, sizeof v) == (ssize_t) sizeof v)
                left += v;
        check(left == 3 + st.sem_out, "the semaphore held %llu, expected %llu", (unsigned long long) left,
              (unsigned long long) (3 + st.sem_out));
        /* Dups: still one description each. */
        write_u64(sem_dup, 2, "the semaphore's dup");
        check(read(sem, &v, sizeof v) == (ssize_t) sizeof v && read(sem, &v, sizeof v) == (ssize_t) sizeof v &&
              read(sem, &v, sizeof v) < 0 && errno == EAGAIN, "the semaphore and its dup are two eventfds");
        check(read(short_dup, &v, sizeof v) == (ssize_t) sizeof v && v == 1,
              "the 1 ms timer, never read, does not give its one expiration through its dup");
        check(read(short_tfd, &v, sizeof v) < 0 && errno == EAGAIN, "the 1 ms timer and its dup are two timerfds");
        ev = (struct epoll_event) { .events = EPOLLIN, .data.u64 = W_ONESHOT };
        check(epoll_ctl(ep_dup, EPOLL_CTL_MOD, oneshot, &ev) == 0, "the epoll's dup does not have its watches");
        int status;
        check(waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0,
              "the child ended with status %#x", status);
        pass();
}
