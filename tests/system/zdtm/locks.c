/* locks: file locks held across checkpoints, checked by another process.
 *
 *   fcntl   the parent holds a write lock on bytes 0-99 of "a" and a read
 *           lock from byte 500 to its end; the child holds a write lock on
 *           bytes 200-299 of the same file
 *   flock   the parent holds an exclusive flock on "b" through a
 *           description the child inherited (so the child may flock it
 *           too); the child holds a shared flock on "d" through a
 *           description of its own
 *   OFD     the parent holds an OFD write lock on bytes 10-19 of "c"
 *   waiting a second child waits, from before the first checkpoint, for
 *           the parent's exclusive flock on "e", then for its fcntl lock
 *           on bytes 0-99 of "a"
 *
 * Every step the child opens the files itself and checks that it cannot
 * take what the parent holds (F_GETLK names the parent; flock through its
 * own description fails; F_OFD_GETLK finds the OFD lock) and that what
 * nobody holds is free; the parent checks the child's locks the same way.
 * At verification the child exits and its locks must be gone; the parent's
 * must still be there. The waiting child must still be waiting (a lock of
 * the parent's not taken again at a restart would have let it in); once
 * the parent lets go of "e", then of "a", it must get each in turn. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "zdtmtst.h"


struct ctl {
        struct test_pingpong pp;
        volatile uint64_t checks;
        volatile int stop;
        volatile uint64_t waiter_got;   /* 1: the flock on e, 2: also a 0-99 */
};

static struct ctl *ctl;

static int open_file(const char *name) {
        int fd = open(name, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
        if (fd < 0)
                fail_errno("open %s", name);
        return fd;
}

static void set_lock(int fd, int cmd, short type, off_t start, off_t len, const char *what) {
        struct flock fl = { .l_type = type, .l_whence = SEEK_SET, .l_start = start, .l_len = len };
        while (fcntl(fd, cmd, &fl) < 0)
                check(errno == EINTR, "lock %s: %s", what, strerror(errno));
}

/* Who holds what would conflict with a lock of type on [start, start+len):
 * F_UNLCK if free. */
static struct flock probe(int fd, int cmd, short type, off_t start, off_t len) {
        struct flock fl = { .l_type = type, .l_whence = SEEK_SET, .l_start = start, .l_len = len };
        if (fcntl(fd, cmd, &fl) < 0)
                fail_errno("probing a lock");
        return fl;
}

static void expect_held(int fd, int cmd, short type, off_t start, off_t len, pid_t by, const char *what) {
        struct flock fl = probe(fd, cmd, type, start, len);
        check(fl.l_type != F_UNLCK && (by == 0 || fl.l_pid == by), "%s is not held (%s)", what,
              fl.l_type == F_UNLCK ? "free" : "held by another process");
}

static void expect_free(int fd, int cmd, off_t start, off_t len, const char *what) {
        struct flock fl = probe(fd, cmd, F_WRLCK, start, len);
        check(fl.l_type == F_UNLCK, "%s is taken by process %d", what, (int) fl.l_pid);
}

static _Noreturn void child(pid_t parent, int inherited_b) {
        int a = open_file("a");
        set_lock(a, F_SETLK, F_WRLCK, 200, 100, "a 200-299 (child)");
        int d = open_file("d");
        check(flock(d, LOCK_SH | LOCK_NB) == 0, "child: flock d: %s", strerror(errno));
        /* flock through the inherited description: it already holds it. */
        check(flock(inherited_b, LOCK_EX | LOCK_NB) == 0, "child: flock through the parent's description: %s",
              strerror(errno));
        /* Closing any descriptor of "a" would drop our own fcntl lock on it:
         * the second one stays open. */
        int a2 = open_file("a");
        while (!ctl->stop) {
                int b = open_file("b"), c = open_file("c");
                expect_held(a2, F_GETLK, F_WRLCK, 0, 100, parent, "the parent's write lock on a 0-99");
                expect_held(a2, F_GETLK, F_WRLCK, 600, 100, parent, "the parent's read lock on a 500-");
                expect_free(a2, F_GETLK, 100, 100, "a 100-199");
                check(flock(b, LOCK_EX | LOCK_NB) < 0 && errno == EWOULDBLOCK, "the child could flock b: %s",
                      strerror(errno));
                check(flock(b, LOCK_SH | LOCK_NB) < 0 && errno == EWOULDBLOCK, "the child could share a flock of b");
                expect_held(c, F_OFD_GETLK, F_RDLCK, 15, 1, 0, "the parent's OFD lock on c 10-19");
                expect_free(c, F_OFD_GETLK, 20, 10, "c 20-29");
                close(b);
                close(c);
                ctl->checks++;
                test_pong(&ctl->pp);
                test_msleep(2);
        }
        exit(0);
}

/* Blocks in flock(2), then in F_SETLKW, across the checkpoints: the
 * checkpoint signal interrupts each and they are asked again. */
static void waiter(void) {
        int e = open_file("e"), a = open_file("a");
        while (flock(e, LOCK_EX) < 0)
                check(errno == EINTR, "waiter: flock e: %s", strerror(errno));
        ctl->waiter_got = 1;
        set_lock(a, F_SETLKW, F_WRLCK, 0, 100, "a 0-99 (waiter)");
        ctl->waiter_got = 2;
        exit(0);
}

/* Until /proc/locks shows process pid waiting for a lock of kind ("FLOCK"). */
static void await_blocked(pid_t pid, const char *kind) {
        char want[64];
        snprintf(want, sizeof want, "-> %s ", kind);
        for (int tries = 0; tries < 20000; tries++) {
                FILE *f = fopen("/proc/locks", "re");
                if (!f)
                        fail_errno("/proc/locks");
                char line[256];
                bool found = false;
                while (!found && fgets(line, sizeof line, f)) {
                        char *w = strstr(line, want);
                        int p;
                        found = w && sscanf(w + strlen(want), "%*s %*s %d", &p) == 1 && p == pid;
                }
                fclose(f);
                if (found)
                        return;
                if (waitpid(pid, NULL, WNOHANG) == pid)
                        test_child_failed(pid, "the waiting child ended");
                test_msleep(1);
        }
        test_child_failed(pid, "the waiting child does not wait for the lock");
}

static void expect_flock_taken(int fd, const char *what) {
        if (flock(fd, LOCK_EX | LOCK_NB) == 0)
                fail("%s is not held: another description could take it", what);
        check(errno == EWOULDBLOCK, "probing %s: %s", what, strerror(errno));
}

int main(int argc, char **argv) {
        test_init(argc, argv);
        ctl = mmap(NULL, sizeof *ctl, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        if (ctl == MAP_FAILED)
                fail_errno("mmap");
        int a = open_file("a"), b = open_file("b"), c = open_file("c");
        if (ftruncate(a, 1000) < 0)
                fail_errno("ftruncate");
        set_lock(a, F_SETLK, F_WRLCK, 0, 100, "a 0-99");
        set_lock(a, F_SETLK, F_RDLCK, 500, 0, "a 500-");
        if (flock(b, LOCK_EX | LOCK_NB) < 0)
                fail_errno("flock b");
        set_lock(c, F_OFD_SETLK, F_WRLCK, 10, 10, "c 10-19");
        int e = open_file("e");
        if (flock(e, LOCK_EX | LOCK_NB) < 0)
                fail_errno("flock e");
        pid_t wpid = test_fork(waiter);
        await_blocked(wpid, "FLOCK");
        pid_t pid = fork();
        if (pid < 0)
                fail_errno("fork");
        if (pid == 0)
                child(getppid(), b);
        /* Second descriptions, to see our own locks from outside them (our
         * fcntl locks stay: this process closes none of these). */
        int a2 = open_file("a"), c2 = open_file("c"), d2 = open_file("d");
        test_ready();
        while (!test_verify_requested()) {
                test_ping(&ctl->pp, pid, "the child does not answer (no pong)");
                if (ctl->checks > 0) {
                        expect_held(a2, F_GETLK, F_RDLCK, 250, 1, pid, "the child's write lock on a 200-299");
                        expect_flock_taken(d2, "the child's shared flock on d");
                }
                check(ctl->waiter_got == 0, "the waiting child got the flock on e the parent holds");
                test_heartbeat();
                test_msleep(2);
        }
        ctl->stop = 1;
        test_reap(pid);
        check(ctl->checks > 0, "the child never checked the locks");
        expect_free(a2, F_GETLK, 200, 100, "a 200-299 after the child's exit");
        check(flock(d2, LOCK_EX | LOCK_NB) == 0, "d is still locked after the child's exit: %s", strerror(errno));
        /* Ours are still held: another description of c conflicts. */
        expect_held(c2, F_OFD_GETLK, F_RDLCK, 15, 1, 0, "the OFD lock on c 10-19");
        /* The waiter still waits; it gets each lock once we let go. */
        check(ctl->waiter_got == 0, "the waiting child got the flock on e the parent holds");
        if (flock(e, LOCK_UN) < 0)
                fail_errno("unlock e");
        test_await(&ctl->waiter_got, 1, wpid, 20000, "the waiting child did not get e once it was free");
        set_lock(a, F_SETLK, F_UNLCK, 0, 100, "unlock a 0-99");
        test_reap(wpid);
        check(ctl->waiter_got == 2, "the waiting child ended without a 0-99");
        pass();
}
