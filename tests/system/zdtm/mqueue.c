/* mqueue: POSIX message queues between two processes.
 *
 *   stream    the parent sends numbered messages with priorities 0..3 into a
 *             named queue (8 messages of 128 bytes, mode 0640), keeping it
 *             nearly full; the child opened it again by name, non-blocking
 *             (another description), and takes them: within a priority the
 *             numbers must come in order, and every message sent must come
 *             exactly once
 *   frozen    another named queue filled once with messages of mixed
 *             priorities and left alone until verification, when it must
 *             give them back in priority order, first in first out within
 *             a priority, with their texts
 *   unlinked  a queue removed at once that both keep through the inherited
 *             description: the child sends, the parent takes
 *
 * At verification: attributes, mode, the child's description still
 * non-blocking and the parent's not, the unlinked queue still unlinked.
 *
 *   mqueue --abort   as above, the parent also holding a lease, which makes
 *                    the first checkpoint fail after the queues' messages
 *                    were taken out to be saved: every one must be back, in
 *                    order (zdtm.py mqueue_abort). The lease goes when the
 *                    file "drop-lease" appears. */
#include <errno.h>
#include <fcntl.h>
#include <mqueue.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "zdtmtst.h"

#define MAXMSG 8
#define MSGSIZE 128
#define PRIOS 4
#define FROZEN 10

struct ctl {
        volatile uint64_t received[PRIOS];      /* by the child, per priority */
        volatile uint64_t loose_sent;           /* by the child into the unlinked queue */
        volatile uint64_t loose_got;            /* by the parent from it */
        struct test_pingpong pp;
        volatile int child_nonblock;
        volatile int stop;
};

struct payload {
        uint64_t n;                     /* number within its priority */
        uint32_t prio;
        char text[MSGSIZE - 12];
};

static char name[64], frozen_name[64];
static mqd_t stream, loose;
static struct ctl *ctl;

static void fill(struct payload *p, uint64_t n, unsigned prio) {
        memset(p, 0, sizeof *p);
        p->n = n;
        p->prio = prio;
        snprintf(p->text, sizeof p->text, "message %llu of priority %u", (unsigned long long) n, prio);
}

static void child(void) {
        mqd_t own = mq_open(name, O_RDONLY | O_NONBLOCK);
        if (own == (mqd_t) -1)
                fail_errno("child: mq_open %s", name);
        uint64_t next[PRIOS] = { 0 }, loose_n = 0;
        while (!ctl->stop) {
                for (int k = 0; k < 3; k++) {
                        struct payload p;
                        unsigned prio;
                        ssize_t n = mq_receive(own, (char *) &p, sizeof p, &prio);
                        if (n < 0) {
                                check(errno == EAGAIN || errno == EINTR, "child: mq_receive: %s", strerror(errno));
                                break;
                        }
                        check(n == sizeof p && prio < PRIOS && p.prio == prio, "child: a message of %zd bytes, priority %u",
                              n, prio);
                        struct payload want;
                        fill(&want, next[prio], prio);
                        check(!memcmp(&p, &want, sizeof p), "child: message %llu of priority %u, expected %llu",
                              (unsigned long long) p.n, prio, (unsigned long long) next[prio]);
                        ctl->received[prio] = ++next[prio];
                }
                struct timespec now = { 0, 0 };
                if (loose_n - ctl->loose_got < 4 &&
                    mq_timedsend(loose, (const char *) &loose_n, sizeof loose_n, 1, &now) == 0)
                        ctl->loose_sent = ++loose_n;
                test_pong(&ctl->pp);
                test_msleep(1);
        }
        ctl->child_nonblock = (fcntl(own, F_GETFL) & O_NONBLOCK) != 0;
        exit(0);
}

static mqd_t open_queue(const char *n, int flags, long maxmsg) {
        struct mq_attr a = { .mq_maxmsg = maxmsg, .mq_msgsize = MSGSIZE };
        mqd_t q = mq_open(n, flags | O_CREAT | O_EXCL, 0640, &a);
        if (q == (mqd_t) -1)
                fail_errno("mq_open %s", n);
        return q;
}

/* A read lease on a file of ours: the checkpoint refuses leases. */
static int take_lease(void) {
        int fd = open("lease", O_RDONLY | O_CREAT | O_CLOEXEC, 0600);
        if (fd < 0)
                fail_errno("open lease");
        if (fcntl(fd, F_SETLEASE, F_RDLCK) < 0)
                fail_errno("F_SETLEASE");
        return fd;
}

int main(int argc, char **argv) {
        test_init(argc, argv);
        bool abort_mode = argc > 1 && !strcmp(argv[1], "--abort");
        umask(022);
        snprintf(name, sizeof name, "/zdtm-mq-%d", (int) getpid());
        snprintf(frozen_name, sizeof frozen_name, "/zdtm-mq-frozen-%d", (int) getpid());
        test_cleanup_note("mq %s", name);
        test_cleanup_note("mq %s", frozen_name);
        ctl = mmap(NULL, sizeof *ctl, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        if (ctl == MAP_FAILED)
                fail_errno("mmap");
        stream = open_queue(name, O_WRONLY, MAXMSG);
        mqd_t frozen = open_queue(frozen_name, O_RDWR, FROZEN);
        char loose_name[64];
        snprintf(loose_name, sizeof loose_name, "/zdtm-mq-loose-%d", (int) getpid());
        loose = open_queue(loose_name, O_RDWR, MAXMSG);
        mq_unlink(loose_name);
        /* The frozen queue: priorities 2,0,3,1,2,... with numbers per priority. */
        uint64_t fcount[PRIOS] = { 0 };
        for (int i = 0; i < FROZEN; i++) {
                unsigned prio = (unsigned) (i * 7 + 2) % PRIOS;
                struct payload p;
                fill(&p, fcount[prio]++, prio);
                if (mq_send(frozen, (const char *) &p, sizeof p, prio) < 0)
                        fail_errno("mq_send (frozen)");
        }
        pid_t pid = test_fork(child);
        int lease = abort_mode ? take_lease() : -1;
        test_ready();
        uint64_t sent[PRIOS] = { 0 }, loose_got = 0;
        unsigned n = 0;
        while (!test_verify_requested()) {
                if (lease >= 0 && access("drop-lease", F_OK) == 0) {
                        if (fcntl(lease, F_SETLEASE, F_UNLCK) < 0)
                                fail_errno("drop the lease");
                        close(lease);
                        lease = -1;
                        test_write_file("lease-dropped", "1\n");
                }
                /* Top the stream up, without ever blocking. */
                struct mq_attr a;
                if (mq_getattr(stream, &a) < 0)
                        fail_errno("mq_getattr");
                for (long k = a.mq_curmsgs; k < MAXMSG; k++) {
                        unsigned prio = (n++ * 5) % PRIOS;
                        struct payload p;
                        fill(&p, sent[prio], prio);
                        struct timespec now = { 0, 0 };
                        if (mq_timedsend(stream, (const char *) &p, sizeof p, prio, &now) < 0) {
                                check(errno == ETIMEDOUT || errno == EINTR, "mq_send: %s", strerror(errno));
                                break;
                        }
                        sent[prio]++;
                }
                for (int p = 0; p < PRIOS; p++)
                        check(ctl->received[p] <= sent[p], "the child got %llu messages of priority %d, %llu were sent",
                              (unsigned long long) ctl->received[p], p, (unsigned long long) sent[p]);
                /* The unlinked queue: what the child sent, in order. */
                uint64_t v;
                struct timespec now = { 0, 0 };
                ssize_t k = mq_timedreceive(loose, (char *) &v, MSGSIZE, NULL, &now);
                if (k >= 0) {
                        check(k == sizeof v && v == loose_got, "the unlinked queue gave %llu, expected %llu",
                              (unsigned long long) v, (unsigned long long) loose_got);
                        ctl->loose_got = ++loose_got;
                }
                test_ping(&ctl->pp, pid, "the child does not answer (no pong)");
                test_heartbeat();
                test_msleep(2);
        }
        ctl->stop = 1;
        test_reap(pid);
        check(ctl->child_nonblock, "the child's description of the queue lost O_NONBLOCK");
        check(!(fcntl(stream, F_GETFL) & O_NONBLOCK), "the parent's description of the queue became non-blocking");
        /* Every message sent is taken or still queued. */
        struct mq_attr a;
        if (mq_getattr(stream, &a) < 0)
                fail_errno("mq_getattr");
        uint64_t left = 0;
        for (int p = 0; p < PRIOS; p++)
                left += sent[p] - ctl->received[p];
        check(a.mq_maxmsg == MAXMSG && a.mq_msgsize == MSGSIZE && (uint64_t) a.mq_curmsgs == left,
              "the queue: %ld of %ld messages of %ld bytes, expected %llu of %d of %d", a.mq_curmsgs, a.mq_maxmsg,
              a.mq_msgsize, (unsigned long long) left, MAXMSG, MSGSIZE);
        struct stat st;
        if (fstat(stream, &st) < 0)
                fail_errno("fstat the queue");
        check((st.st_mode & 0777) == 0640, "the queue has mode %o", st.st_mode & 0777);
        /* The frozen queue, in receiving order. */
        uint64_t want[PRIOS] = { 0 };
        for (int i = 0; i < FROZEN; i++) {
                struct payload p, w;
                unsigned prio;
                struct timespec now = { 0, 0 };
                ssize_t k = mq_timedreceive(frozen, (char *) &p, sizeof p, &prio, &now);
                if (k < 0)
                        fail_errno("the frozen queue after %d messages", i);
                /* Highest priority first. */
                unsigned top = PRIOS;
                while (top > 0 && want[top - 1] == fcount[top - 1])
                        top--;
                check(prio == top - 1, "the frozen queue gave priority %u, expected %u", prio, top - 1);
                fill(&w, want[prio]++, prio);
                check(!memcmp(&p, &w, sizeof p), "the frozen queue's message %d is wrong", i);
        }
        char link[64], target[256];
        snprintf(link, sizeof link, "/proc/self/fd/%d", loose);
        ssize_t k = readlink(link, target, sizeof target - 1);
        target[k > 0 ? k : 0] = 0;
        check(strstr(target, " (deleted)") != NULL, "the unlinked queue is %s", target);
        mq_unlink(name);
        mq_unlink(frozen_name);
        pass();
}
