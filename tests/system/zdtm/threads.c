/* threads: 8 threads pass a token around a ring under one mutex and one
 * condition variable; each keeps its own state in __thread variables.
 *
 * Checked by each thread on every turn: the token came from its left
 * neighbour, its thread-local count equals its slot in the shared table,
 * its thread-local pattern is intact, its thread id and pthread_self() are
 * those it started with, and the shared total equals the sum of all
 * counts. At verification (after joining every thread): the same, plus
 * no count differs from another by more than one (a ring never skips) and
 * every thread made progress after the program became ready. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "zdtmtst.h"

#define NTHREADS 8
#define PATTERN_WORDS 64

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
static int turn;                                /* index of the thread holding the token */
static int last_holder = NTHREADS - 1;
static uint64_t counts[NTHREADS];
static uint64_t ready_counts[NTHREADS];
static uint64_t total;
static bool stop;
static pid_t tids[NTHREADS];
static pthread_t selves[NTHREADS];

static __thread int my_index = -1;
static __thread uint64_t my_count;
static __thread uint64_t my_pattern[PATTERN_WORDS];
static __thread pid_t my_tid;

static void check_pattern(void) {
        for (int i = 0; i < PATTERN_WORDS; i++)
                check(my_pattern[i] == mix64(((uint64_t) my_index << 32) ^ (uint64_t) i ^ my_count),
                      "thread %d: __thread pattern word %d corrupted (count %llu)", my_index, i,
                      (unsigned long long) my_count);
}

static void set_pattern(void) {
        for (int i = 0; i < PATTERN_WORDS; i++)
                my_pattern[i] = mix64(((uint64_t) my_index << 32) ^ (uint64_t) i ^ my_count);
}

static void check_shared_locked(void) {
        uint64_t sum = 0;
        for (int i = 0; i < NTHREADS; i++)
                sum += counts[i];
        check(sum == total, "total %llu != sum of counts %llu", (unsigned long long) total, (unsigned long long) sum);
        for (int i = 0; i < NTHREADS; i++) {
                int64_t d = (int64_t) (counts[i] - counts[0]);
                check(d == 0 || d == -1,
                      "ring broken: thread %d has %llu turns, thread 0 has %llu", i,
                      (unsigned long long) counts[i], (unsigned long long) counts[0]);
        }
}

static void *worker(void *arg) {
        my_index = (int) (intptr_t) arg;
        my_tid = (pid_t) syscall(SYS_gettid);
        set_pattern();
        pthread_mutex_lock(&lock);
        tids[my_index] = my_tid;
        selves[my_index] = pthread_self();
        pthread_mutex_unlock(&lock);
        for (;;) {
                int r = pthread_mutex_lock(&lock);
                check(r == 0, "thread %d: pthread_mutex_lock: %s", my_index, strerror(r));
                while (turn != my_index && !stop) {
                        r = pthread_cond_wait(&cond, &lock);
                        check(r == 0, "thread %d: pthread_cond_wait: %s", my_index, strerror(r));
                }
                if (stop) {
                        pthread_mutex_unlock(&lock);
                        break;
                }
                /* My turn: everything about me must be as I left it. */
                check(last_holder == (my_index + NTHREADS - 1) % NTHREADS,
                      "thread %d got the token from %d, not its left neighbour", my_index, last_holder);
                check(counts[my_index] == my_count, "thread %d: shared count %llu, __thread count %llu", my_index,
                      (unsigned long long) counts[my_index], (unsigned long long) my_count);
                pid_t tid = (pid_t) syscall(SYS_gettid);
                check(tid == my_tid && tids[my_index] == my_tid,
                      "thread %d: gettid() is %d, it started as %d", my_index, (int) tid, (int) my_tid);
                check(pthread_equal(pthread_self(), selves[my_index]), "thread %d: pthread_self() changed", my_index);
                check(getpid() == test_pid, "thread %d: getpid() is %d, not %d", my_index, (int) getpid(),
                      (int) test_pid);
                check_pattern();
                my_count++;
                counts[my_index] = my_count;
                total++;
                set_pattern();
                check_shared_locked();
                last_holder = my_index;
                turn = (my_index + 1) % NTHREADS;
                if (my_index == 0)
                        test_heartbeat();
                pthread_cond_broadcast(&cond);
                pthread_mutex_unlock(&lock);
                /* Some work outside the lock, so checkpoints also find threads
                 * running, not only waiting. */
                volatile uint64_t x = 0;
                for (int i = 0; i < 20000; i++)
                        x += mix64((uint64_t) i);
                if (my_count % 16 == 0)
                        test_msleep(1);
        }
        check_pattern();
        return (void *) (intptr_t) (my_index + 1000);
}

int main(int argc, char **argv) {
        test_init(argc, argv);
        pthread_t th[NTHREADS];
        for (int i = 0; i < NTHREADS; i++) {
                int r = pthread_create(&th[i], NULL, worker, (void *) (intptr_t) i);
                check(r == 0, "pthread_create: %s", strerror(r));
        }
        /* Ready once every thread has had a turn. */
        for (;;) {
                pthread_mutex_lock(&lock);
                bool all = counts[NTHREADS - 1] > 0;
                if (all)
                        memcpy(ready_counts, counts, sizeof counts);
                pthread_mutex_unlock(&lock);
                if (all)
                        break;
                test_msleep(1);
        }
        test_ready();
        while (!test_verify_requested())
                test_msleep(10);

        pthread_mutex_lock(&lock);
        stop = true;
        pthread_cond_broadcast(&cond);
        pthread_mutex_unlock(&lock);
        for (int i = 0; i < NTHREADS; i++) {
                void *ret;
                int r = pthread_join(th[i], &ret);
                check(r == 0, "pthread_join(%d): %s", i, strerror(r));
                check(ret == (void *) (intptr_t) (i + 1000), "thread %d returned %p", i, ret);
        }
        pthread_mutex_lock(&lock);
        check_shared_locked();
        for (int i = 0; i < NTHREADS; i++)
                check(counts[i] > ready_counts[i], "thread %d made no progress after start", i);
        pthread_mutex_unlock(&lock);
        pass();
}
