/* sysv_ipc: a System V semaphore set, message queue and shared memory
 * segments between two processes.
 *
 *   semaphores  0: a lock both take and release with SEM_UNDO around every
 *                  update of the shared counter (checkpoints find it held)
 *               1: counts the messages the parent sent and the child did not
 *                  take yet (the parent adds one per message, the child takes
 *                  one per message)
 *               2: a token the child takes with SEM_UNDO at start and keeps:
 *                  when it exits, the kernel must give it back, which it does
 *                  only if its SEM_UNDO adjustment came back with it
 *   queue       the parent sends numbered messages of types 1..3 faster than
 *               the child takes them, so some are queued at every checkpoint;
 *               the child checks their order and types
 *   segment     a counter both increment under the lock, each also counting
 *               its own increments in private memory; a ping/pong; the child
 *               attaches it a second time elsewhere and checks both views
 *   removed     a segment marked IPC_RMID while both have it attached: the
 *               child writes a pattern, the parent checks it
 *   parked      a segment the parent fills and detaches: nobody has it
 *               attached at any checkpoint, it must still be there after
 *               the restarts, with its contents
 *
 * At verification, after the child exits: the keys still give the same ids,
 * the modes are kept, both semaphores the child's exit adjusted are back to
 * 1, and the removed segment is still marked for removal. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ipc.h>
#include <sys/msg.h>
#include <sys/sem.h>
#include <sys/shm.h>
#include <sys/wait.h>
#include <unistd.h>

#include "zdtmtst.h"

#define SEG_SIZE (64 * 1024)
#define RM_SIZE (16 * 1024)
#define BACKLOG 40

enum { S_LOCK, S_ITEMS, S_TOKEN };

struct seg {
        struct test_counter c;
        struct test_pingpong pp;
        volatile uint64_t seed;
        volatile uint64_t received;
        volatile int stop;
};

struct msg {
        long mtype;
        uint64_t n;
};

#define PARKED_SIZE (3 * 4096 + 100)

static int semid, msqid, shmid, rmid, parked;
static struct seg *seg;
static volatile uint64_t *rm;

static void semop1(unsigned short num, short op, short flg, const char *what) {
        struct sembuf b = { num, op, flg };
        while (semop(semid, &b, 1) < 0)
                check(errno == EINTR, "semop (%s): %s", what, strerror(errno));
}

static void lock(void) {
        semop1(S_LOCK, -1, SEM_UNDO, "lock");
}

static void unlock(void) {
        semop1(S_LOCK, 1, SEM_UNDO, "unlock");
}

static void check_rm(uint64_t seed, const char *who) {
        for (size_t i = 0; i < RM_SIZE / 8; i += 512)
                check(rm[i] == mix64(seed * 31 + i), "%s: the removed segment's word %zu is wrong", who, i);
}

static void child(void) {
        semop1(S_TOKEN, -1, SEM_UNDO | IPC_NOWAIT, "take the token");
        struct seg *view2 = shmat(shmid, NULL, 0);
        if (view2 == (void *) -1)
                fail_errno("child: shmat again");
        uint64_t mine = 0, next = 0;
        while (!seg->stop) {
                lock();
                test_count(&seg->c, 1, &mine, "child");
                check(view2->c.counter == seg->c.counter, "child: its two views of the segment differ");
                check_rm(seg->seed, "child");
                seg->seed++;
                for (size_t i = 0; i < RM_SIZE / 8; i += 512)
                        rm[i] = mix64(seg->seed * 31 + i);
                unlock();
                /* Two messages a step, if there are. */
                for (int k = 0; k < 2; k++) {
                        struct msg m;
                        ssize_t n = msgrcv(msqid, &m, sizeof m.n, 0, IPC_NOWAIT);
                        if (n < 0) {
                                check(errno == ENOMSG || errno == EINTR, "child: msgrcv: %s", strerror(errno));
                                break;
                        }
                        check(n == sizeof m.n && m.n == next && m.mtype == (long) (1 + next % 3),
                              "child: message %llu of type %ld, expected %llu of type %llu", (unsigned long long) m.n,
                              m.mtype, (unsigned long long) next, (unsigned long long) (1 + next % 3));
                        semop1(S_ITEMS, -1, IPC_NOWAIT, "take an item");
                        seg->received = ++next;
                }
                test_pong(&seg->pp);
                test_msleep(1);
        }
        exit(0);
}

static void check_mode(int id, int cmd_kind, unsigned mode, const char *what) {
        unsigned got;
        if (cmd_kind == 0) {
                struct semid_ds ds;
                union { int val; struct semid_ds *buf; } a = { .buf = &ds };
                if (semctl(id, 0, IPC_STAT, a) < 0)
                        fail_errno("IPC_STAT %s", what);
                got = ds.sem_perm.mode & 0777;
        } else if (cmd_kind == 1) {
                struct msqid_ds ds;
                if (msgctl(id, IPC_STAT, &ds) < 0)
                        fail_errno("IPC_STAT %s", what);
                got = ds.msg_perm.mode & 0777;
        } else {
                struct shmid_ds ds;
                if (shmctl(id, IPC_STAT, &ds) < 0)
                        fail_errno("IPC_STAT %s", what);
                got = ds.shm_perm.mode & 0777;
        }
        check(got == mode, "%s has mode %o, not %o", what, got, mode);
}

int main(int argc, char **argv) {
        test_init(argc, argv);
        key_t skey = ftok(".", 'S'), qkey = ftok(".", 'Q'), hkey = ftok(".", 'H');
        check(skey != -1 && qkey != -1 && hkey != -1, "ftok: %s", strerror(errno));
        semid = semget(skey, 3, IPC_CREAT | IPC_EXCL | 0640);
        msqid = msgget(qkey, IPC_CREAT | IPC_EXCL | 0620);
        shmid = shmget(hkey, SEG_SIZE, IPC_CREAT | IPC_EXCL | 0600);
        rmid = shmget(IPC_PRIVATE, RM_SIZE, IPC_CREAT | 0600);
        parked = shmget(IPC_PRIVATE, PARKED_SIZE, IPC_CREAT | 0604);
        check(semid >= 0 && msqid >= 0 && shmid >= 0 && rmid >= 0 && parked >= 0, "creating the objects: %s",
              strerror(errno));
        test_cleanup_note("sem %d", semid);
        test_cleanup_note("msg %d", msqid);
        test_cleanup_note("shmid %d", shmid);
        test_cleanup_note("shmid %d", rmid);
        test_cleanup_note("shmid %d", parked);
        uint64_t *pk = shmat(parked, NULL, 0);
        if (pk == (void *) -1)
                fail_errno("shmat the parked segment");
        for (size_t i = 0; i < PARKED_SIZE / 8; i++)
                pk[i] = mix64(i + 77);
        shmdt(pk);
        unsigned short init[3] = { 1, 0, 1 };
        union { int val; unsigned short *array; } a = { .array = init };
        if (semctl(semid, 0, SETALL, a) < 0)
                fail_errno("SETALL");
        seg = shmat(shmid, NULL, 0);
        rm = shmat(rmid, NULL, 0);
        if (seg == (void *) -1 || rm == (void *) -1)
                fail_errno("shmat");
        if (shmctl(rmid, IPC_RMID, NULL) < 0)
                fail_errno("IPC_RMID");
        for (size_t i = 0; i < RM_SIZE / 8; i += 512)
                rm[i] = mix64(i);
        pid_t pid = test_fork(child);
        test_ready();
        uint64_t mine = 0, sent = 0;
        while (!test_verify_requested()) {
                lock();
                test_count(&seg->c, 0, &mine, "parent");
                check_rm(seg->seed, "parent");
                unlock();
                /* Keep a backlog in the queue. */
                for (int k = 0; k < 3 && sent - seg->received < BACKLOG; k++) {
                        /* Counted first: the child takes one per message. */
                        semop1(S_ITEMS, 1, 0, "count an item");
                        struct msg m = { (long) (1 + sent % 3), sent };
                        if (msgsnd(msqid, &m, sizeof m.n, IPC_NOWAIT) < 0) {
                                check(errno == EAGAIN || errno == EINTR, "msgsnd: %s", strerror(errno));
                                semop1(S_ITEMS, -1, 0, "uncount an item");
                                break;
                        }
                        sent++;
                }
                /* The child counts a message taken (semop) before it says
                 * so (received): read what it said first, so the count
                 * cannot be from before a message we then learn of. */
                uint64_t received = seg->received;
                int items = semctl(semid, S_ITEMS, GETVAL);
                check(items >= 0 && (uint64_t) items <= sent - received, "%d items counted, %llu messages in flight",
                      items, (unsigned long long) (sent - received));
                test_ping(&seg->pp, pid, "the child does not see the parent's writes (no pong)");
                test_heartbeat();
                test_msleep(2);
        }
        seg->stop = 1;
        test_reap(pid);
        check(semget(skey, 0, 0) == semid && msgget(qkey, 0) == msqid && shmget(hkey, 0, 0) == shmid,
              "a key no longer gives its object's id (%d %d %d, now %d %d %d)", semid, msqid, shmid, semget(skey, 0, 0),
              msgget(qkey, 0), shmget(hkey, 0, 0));
        check_mode(semid, 0, 0640, "the semaphore set");
        check_mode(msqid, 1, 0620, "the message queue");
        check_mode(shmid, 2, 0600, "the segment");
        int lockval = semctl(semid, S_LOCK, GETVAL), tokval = semctl(semid, S_TOKEN, GETVAL);
        check(lockval == 1 && tokval == 1, "after the child's exit the lock is %d and the token %d, both should be 1 "
              "(its SEM_UNDO adjustments were lost)", lockval, tokval);
        struct msqid_ds qs;
        if (msgctl(msqid, IPC_STAT, &qs) < 0)
                fail_errno("IPC_STAT the queue");
        check(qs.msg_qnum == sent - seg->received, "%lu messages queued, %llu sent and not taken", (unsigned long) qs.msg_qnum,
              (unsigned long long) (sent - seg->received));
        int items = semctl(semid, S_ITEMS, GETVAL);
        check(items == (int) qs.msg_qnum, "%d items counted, %lu queued", items, (unsigned long) qs.msg_qnum);
        struct shmid_ds ds;
        if (shmctl(rmid, IPC_STAT, &ds) < 0)
                fail_errno("IPC_STAT the removed segment");
        check((ds.shm_perm.mode & SHM_DEST) && ds.shm_nattch == 1, "the removed segment: mode %#o, %lu attached",
              ds.shm_perm.mode, (unsigned long) ds.shm_nattch);
        test_count(&seg->c, 0, &mine, "parent");
        check(seg->c.count[1] > 0, "the child never incremented");
        check_rm(seg->seed, "parent");
        check_mode(parked, 2, 0604, "the parked segment");
        pk = shmat(parked, NULL, SHM_RDONLY);
        if (pk == (void *) -1)
                fail_errno("shmat the parked segment");
        struct shmid_ds pds;
        check(shmctl(parked, IPC_STAT, &pds) == 0 && pds.shm_segsz == PARKED_SIZE, "the parked segment has %zu bytes",
              (size_t) pds.shm_segsz);
        for (size_t i = 0; i < PARKED_SIZE / 8; i++)
                check(pk[i] == mix64(i + 77), "the parked segment's word %zu is wrong", i);
        shmctl(parked, IPC_RMID, NULL);
        semctl(semid, 0, IPC_RMID);
        msgctl(msqid, IPC_RMID, NULL);
        shmctl(shmid, IPC_RMID, NULL);
        pass();
}
