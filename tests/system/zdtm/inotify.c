/* inotify: watches on a directory the program writes to.
 *
 *   w       IN_CREATE | IN_MODIFY | IN_MOVED_FROM               watch 1
 *   w/gone  added and removed at once: its number (2) is a gap
 *   w/sub   IN_MOVED_TO | IN_DELETE, added by a relative path    watch 3
 *   w/once  IN_OPEN | IN_ONESHOT, never opened until the end     watch 4
 *
 * Each step creates w/fN and sets its size (by name, no descriptor),
 * renames it to w/sub/gN and deletes that: five events, which must come in
 * order with the right watch, mask, name and rename cookie. A restart may lose events queued at
 * the checkpoint (they cannot be saved; dmtcp documents it): then the
 * events of that step must be the last ones of the list, and only a step
 * during which the process was restarted may lose any. A restart is seen
 * by a one-hour CLOCK_MONOTONIC timerfd: the time it has left plus the
 * time now stays the same, except over a restart, which does not count
 * the time the program was not running. Any other event (an IN_IGNORED left by restoring the watch
 * numbers, a duplicate) fails. At the end, opening w/once gives IN_OPEN
 * and IN_IGNORED on watch 4. Events are waited for through an epoll
 * instance watching the inotify descriptor. */
#include <errno.h>
#include <fcntl.h>
#include <sys/epoll.h>
#include <stdio.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include "zdtmtst.h"

struct want {
        int wd;
        uint32_t mask;
        char name[32];
};

static int ifd, tfd, iep;      /* iep: an epoll instance watching ifd */

static int64_t now_ns(void) {
        struct timespec t;
        clock_gettime(CLOCK_MONOTONIC, &t);
        return (int64_t) t.tv_sec * 1000000000LL + t.tv_nsec;
}

/* When the one-hour timer will expire, by the clock now. */
static int64_t deadline(void) {
        struct itimerspec its;
        int64_t a = now_ns();
        if (timerfd_gettime(tfd, &its) < 0)
                fail_errno("timerfd_gettime");
        int64_t b = now_ns();
        return (a + b) / 2 + (int64_t) its.it_value.tv_sec * 1000000000LL + its.it_value.tv_nsec;
}

static bool restarted_since(int64_t d) {
        int64_t diff = deadline() - d;
        return diff > 5000000 || diff < -5000000;
}

/* The next event, waiting up to ms; false when none came. */
static bool next_event(struct inotify_event *ev, char *name, size_t size, int ms) {
        static char buf[8192] __attribute__((aligned(8)));
        static size_t len, off;
        if (off == len) {
                struct epoll_event e;
                int n = epoll_wait(iep, &e, 1, ms);
                if (n < 0 && errno == EINTR)
                        n = epoll_wait(iep, &e, 1, ms);
                if (n <= 0)
                        return false;
                check(e.events == EPOLLIN && e.data.u64 == 42, "the epoll watching the inotify descriptor reported "
                      "events %#x, data %#llx", e.events, (unsigned long long) e.data.u64);
                ssize_t k = read(ifd, buf, sizeof buf);
                if (k < 0 && (errno == EAGAIN || errno == EINTR))
                        return false;
                if (k <= 0)
                        fail_errno("read the inotify descriptor (%zd)", k);
                len = (size_t) k;
                off = 0;
        }
        memcpy(ev, buf + off, sizeof *ev);
        snprintf(name, size, "%.*s", (int) ev->len, buf + off + sizeof *ev);
        off += sizeof *ev + ev->len;
        return true;
}

static void expect_events(const struct want *w, int n, int64_t d) {
        struct inotify_event ev;
        char name[64];
        uint32_t cookie = 0;
        int i = 0;
        while (i < n) {
                if (!next_event(&ev, name, sizeof name, 2000)) {
                        /* Lost by a restart: only the first ones of a step. */
                        bool r = restarted_since(d);
                        check(i == 0 && r, "step events: %d of %d came, then none (%s)", i, n,
                              r ? "restarted midway" : "no restart");
                        return;
                }
                int k = i;
                /* After a restart, events of the step before it may be gone. */
                while (k < n && i == 0 && restarted_since(d) &&
                       !(ev.wd == w[k].wd && ev.mask == w[k].mask && !strcmp(name, w[k].name)))
                        k++;
                check(k < n && ev.wd == w[k].wd && ev.mask == w[k].mask && !strcmp(name, w[k].name),
                      "event wd %d mask %#x name \"%s\" came, expected wd %d mask %#x name \"%s\"", ev.wd, ev.mask, name,
                      w[i].wd, w[i].mask, w[i].name);
                if (w[k].mask & (IN_MOVED_FROM | IN_MOVED_TO)) {
                        check(ev.cookie && (!cookie || ev.cookie == cookie), "rename cookies %u and %u differ", cookie,
                              ev.cookie);
                        cookie = ev.cookie;
                }
                i = k + 1;
        }
}

static int add(const char *path, uint32_t mask, int want) {
        int wd = inotify_add_watch(ifd, path, mask);
        if (wd < 0)
                fail_errno("inotify_add_watch %s", path);
        check(want < 0 || wd == want, "the watch on %s is %d, expected %d", path, wd, want);
        return wd;
}

int main(int argc, char **argv) {
        test_init(argc, argv);
        if (mkdir("w", 0700) < 0 || mkdir("w/sub", 0700) < 0 || mkdir("w/gone", 0700) < 0)
                fail_errno("mkdir");
        int fd = open("w/once", O_WRONLY | O_CREAT, 0600);
        if (fd < 0)
                fail_errno("create w/once");
        close(fd);
        ifd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
        iep = epoll_create1(EPOLL_CLOEXEC);
        struct epoll_event e = { .events = EPOLLIN, .data.u64 = 42 };
        if (ifd < 0 || iep < 0 || epoll_ctl(iep, EPOLL_CTL_ADD, ifd, &e) < 0)
                fail_errno("inotify_init1, epoll");
        add("w", IN_CREATE | IN_MODIFY | IN_MOVED_FROM, 1);
        int gone = add("w/gone", IN_ALL_EVENTS, 2);
        if (inotify_rm_watch(ifd, gone) < 0)
                fail_errno("inotify_rm_watch");
        struct inotify_event ev;
        char name[64];
        check(next_event(&ev, name, sizeof name, 1000) && ev.wd == 2 && ev.mask == IN_IGNORED,
              "no IN_IGNORED for the removed watch");
        if (chdir("w") < 0)
                fail_errno("chdir");
        add("sub", IN_MOVED_TO | IN_DELETE, 3);
        if (chdir("..") < 0)
                fail_errno("chdir");
        add("w/once", IN_OPEN | IN_ONESHOT, 4);
        tfd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC);
        struct itimerspec hour = { .it_value = { 3600, 0 } };
        if (tfd < 0 || timerfd_settime(tfd, 0, &hour, NULL) < 0)
                fail_errno("timerfd");
        test_ready();
        for (uint64_t n = 0; !test_verify_requested(); n++) {
                int64_t d = deadline();
                char f[64], g[64];
                /* A name of this step and this run: a process killed after a
                 * checkpoint may have left this step's files behind. */
                uint32_t nonce;
                if (getrandom(&nonce, sizeof nonce, 0) != sizeof nonce)
                        fail_errno("getrandom");
                snprintf(f, sizeof f, "w/f%llu-%08x", (unsigned long long) n, nonce);
                snprintf(g, sizeof g, "w/sub/g%llu-%08x", (unsigned long long) n, nonce);
                struct want w[5] = {
                        { 1, IN_CREATE, "" }, { 1, IN_MODIFY, "" }, { 1, IN_MOVED_FROM, "" },
                        { 3, IN_MOVED_TO, "" }, { 3, IN_DELETE, "" },
                };
                for (int i = 0; i < 5; i++)
                        snprintf(w[i].name, sizeof w[i].name, "%s", strrchr(i < 3 ? f : g, '/') + 1);
                /* By name only: a descriptor of a file that is renamed and
                 * deleted after a checkpoint could not be opened again by a
                 * restart from it. */
                if (mknod(f, S_IFREG | 0600, 0) < 0 || truncate(f, (off_t) strlen(f)) < 0 || rename(f, g) < 0 ||
                    unlink(g) < 0) {
                        /* Restarted from a checkpoint taken in this step:
                         * the process killed after it may have done the rest
                         * of the step (files are not rolled back). */
                        int why = errno;
                        check((why == ENOENT || why == EEXIST) && restarted_since(d), "step %llu on %s: %s",
                              (unsigned long long) n, f, strerror(why));
                        unlink(f);
                        unlink(g);
                        while (next_event(&ev, name, sizeof name, 100))
                                check(!strcmp(name, w[0].name) || !strcmp(name, w[3].name),
                                      "an unexpected event: wd %d mask %#x name \"%s\"", ev.wd, ev.mask, name);
                        continue;
                }
                expect_events(w, 5, d);
                test_heartbeat();
                test_msleep(5);
        }
        check(!next_event(&ev, name, sizeof name, 100), "an unexpected event: wd %d mask %#x name \"%s\"", ev.wd,
              ev.mask, name);
        fd = open("w/once", O_RDONLY);
        if (fd < 0)
                fail_errno("open w/once");
        close(fd);
        struct want once[2] = { { 4, IN_OPEN, "" }, { 4, IN_IGNORED, "" } };
        expect_events(once, 2, deadline());
        pass();
}
