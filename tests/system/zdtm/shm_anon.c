/* shm_anon: parent and child sharing MAP_SHARED anonymous memory.
 *
 *   counter    a process-shared mutex guards a counter both processes
 *              increment; each also counts its own increments, in shared
 *              memory and in its private memory: the counter must always be
 *              the sum of the two shared counts, and each shared count the
 *              owner's private one (a lost or private copy of the page shows)
 *   ping/pong  the parent writes a token, the child copies it back, the
 *              parent waits for it: after a restart, a write by one must
 *              be seen by the other
 *   pattern    a 1 MiB area of a shared map of /dev/zero that the child
 *              rewrites (a sparse pattern, a new seed each step) and the
 *              parent checks, under the mutex; its last pages are
 *              read-only in the child (another view, other protections)
 *   holder     the child sometimes keeps the mutex across a few steps, so
 *              checkpoints find it held
 *
 * At verification the parent stops the child, which checks its own state
 * and exits 0, and checks the counter once more. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "zdtmtst.h"

#define PATTERN_BYTES (1 << 20)
#define PAGE 4096
#define RO_PAGES 4                      /* read-only for the child at the end of the pattern */

struct shared {
        pthread_mutex_t lock;
        struct test_counter c;
        struct test_pingpong pp;
        volatile uint64_t seed;         /* of the pattern, written by the child */
        volatile int stop;
        volatile int child_ok;
};

static struct shared *sh;
static uint8_t *pattern;

static uint64_t pattern_word(uint64_t seed, size_t i) {
        return mix64(seed * 7919 + i);
}

/* Words at page starts only: sparse, so pages stay few and cheap. */
static void write_pattern(uint64_t seed) {
        for (size_t p = 0; p < PATTERN_BYTES / PAGE - RO_PAGES; p++)
                ((volatile uint64_t *) (pattern + p * PAGE))[p % 64] = pattern_word(seed, p);
}

static void check_pattern(uint64_t seed, const char *who) {
        for (size_t p = 0; p < PATTERN_BYTES / PAGE - RO_PAGES; p++) {
                uint64_t w = ((volatile uint64_t *) (pattern + p * PAGE))[p % 64];
                check(w == pattern_word(seed, p), "%s: pattern page %zu is %#llx, expected %#llx (seed %llu)", who, p,
                      (unsigned long long) w, (unsigned long long) pattern_word(seed, p), (unsigned long long) seed);
        }
        for (size_t p = PATTERN_BYTES / PAGE - RO_PAGES; p < PATTERN_BYTES / PAGE; p++) {
                uint64_t w = ((volatile uint64_t *) (pattern + p * PAGE))[0];
                check(w == mix64(p), "%s: read-only page %zu is %#llx", who, p, (unsigned long long) w);
        }
}

static void lock(void) {
        int r = pthread_mutex_lock(&sh->lock);
        check(r == 0, "pthread_mutex_lock: %s", strerror(r));
}

static void unlock(void) {
        int r = pthread_mutex_unlock(&sh->lock);
        check(r == 0, "pthread_mutex_unlock: %s", strerror(r));
}

static void child(void) {
        uint64_t mine = 0, seed = 1;
        unsigned hold = 0;
        /* The last pages of the pattern: read-only here (another view). */
        if (mprotect(pattern + PATTERN_BYTES - RO_PAGES * PAGE, RO_PAGES * PAGE, PROT_READ) < 0)
                fail_errno("child: mprotect");
        for (unsigned n = 0; !sh->stop; n++) {
                lock();
                test_count(&sh->c, 1, &mine, "child");
                check_pattern(sh->seed, "child");
                sh->seed = ++seed;
                write_pattern(seed);
                /* Now and then keep the lock over a few steps. */
                if (n % 50 == 0)
                        hold = 5;
                if (hold) {
                        hold--;
                        test_msleep(2);
                }
                unlock();
                test_pong(&sh->pp);
                test_msleep(1);
        }
        lock();
        check(sh->c.count[1] == mine, "child: its shared count is %llu at the end, it made %llu",
              (unsigned long long) sh->c.count[1], (unsigned long long) mine);
        check_pattern(sh->seed, "child");
        sh->child_ok = 1;
        unlock();
        exit(0);
}

int main(int argc, char **argv) {
        test_init(argc, argv);
        sh = mmap(NULL, sizeof *sh, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        if (sh == MAP_FAILED)
                fail_errno("mmap shared");
        int zero = open("/dev/zero", O_RDWR | O_CLOEXEC);
        if (zero < 0)
                fail_errno("open /dev/zero");
        pattern = mmap(NULL, PATTERN_BYTES, PROT_READ | PROT_WRITE, MAP_SHARED, zero, 0);
        if (pattern == MAP_FAILED)
                fail_errno("mmap /dev/zero");
        close(zero);
        for (size_t p = PATTERN_BYTES / PAGE - RO_PAGES; p < PATTERN_BYTES / PAGE; p++)
                ((uint64_t *) (pattern + p * PAGE))[0] = mix64(p);
        pthread_mutexattr_t a;
        pthread_mutexattr_init(&a);
        pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
        pthread_mutex_init(&sh->lock, &a);
        sh->seed = 1;
        write_pattern(1);
        pid_t pid = test_fork(child);
        test_ready();
        uint64_t mine = 0;
        while (!test_verify_requested()) {
                lock();
                test_count(&sh->c, 0, &mine, "parent");
                check_pattern(sh->seed, "parent");
                unlock();
                /* The child must see our token and answer. */
                test_ping(&sh->pp, pid, "the child does not see the parent's writes (no pong)");
                test_heartbeat();
                test_msleep(2);
        }
        sh->stop = 1;
        test_reap(pid);
        check(sh->child_ok, "the child's last write is not seen by the parent");
        lock();
        test_count(&sh->c, 0, &mine, "parent");
        check(sh->c.count[1] > 0, "the child never incremented");
        check_pattern(sh->seed, "parent");
        unlock();
        pass();
}
