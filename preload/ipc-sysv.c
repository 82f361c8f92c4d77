/* System V IPC: semaphore sets, message queues (and the ids of shared memory
 * segments, whose memory is shm.c's).
 *
 * Which objects a process uses cannot be read from the kernel (a semaphore
 * set is neither mapped nor a descriptor), so the wrappers below record
 * every id the program gets (shmget, semget, msgget) or uses (shmat, semop,
 * msgsnd, ...). At a checkpoint each process stands for the objects it
 * recorded that still exist; each one's leader saves it: IPC_STAT, the
 * semaphore values (GETALL), the messages in order with their types
 * (msgrcv MSG_COPY: read without removing). The restart tool recreates them
 * with their keys, modes and ids (restart/sysv.c): ids are not virtualized
 * but restored, in a fresh IPC namespace where nothing else holds them, so
 * the program's ids, and any it passed to another process, stay valid.
 *
 * SEM_UNDO: the kernel keeps, per process, the adjustment it will apply to
 * each semaphore at exit, and offers no way to read it. The semop wrappers
 * keep the same sums (each SEM_UNDO op adds -sem_op; SETVAL/SETALL by this
 * process clear its sums for the set, as the kernel does); after a restart
 * each process makes its adjustments again with a semop that changes no
 * value (+a then -a with SEM_UNDO). To keep the sums exact, a semop with
 * SEM_UNDO runs with the checkpoint signal blocked, in slices of at most
 * 50 ms of waiting, so a checkpoint never sees the kernel's answer without
 * our record of it. Not seen: a SETVAL/SETALL by another process (the
 * kernel clears every process's adjustments of that semaphore; ours are
 * kept), adjustments made before an exec (the record is lost with the old
 * image), and calls that bypass libc (syscall(SYS_semop, ...)).
 *
 * Suspended-safe except the wrappers, which run in the program's threads. */
#include <dlfcn.h>
#include <pthread.h>
#include <stdarg.h>
#include <string.h>
#include <sys/ipc.h>
#include <sys/msg.h>
#include <sys/sem.h>
#include <sys/shm.h>
#include <sys/stat.h>
#include <time.h>

#include "raw-syscall.h"
#include "shm.h"
#include "util.h"

#ifndef MSG_COPY
#define MSG_COPY 040000
#endif

#define MAX_IDS 4096
#define MAX_UNDO 4096
#define UNDO_SLICE_NS (50 * 1000 * 1000L)

enum { ID_SHM = 1, ID_SEM, ID_MSG };

/* Ids the program got or used: (type << 32) | id; 0 = free. */
static _Atomic uint64_t ids[MAX_IDS];
static _Atomic uint32_t n_ids;

struct undo {
        int32_t semid;
        uint32_t num;
        int32_t adj;
};
static struct undo undos[MAX_UNDO];
static uint32_t n_undo;
static _Atomic uint32_t undo_lock;
static bool undo_overflow;

/* Per checkpoint (scratch): the objects we stand for and whether we lead. */
struct sysv_obj {
        int type, id;
        bool leader;
        char key[PROTO_KEY_MAX + 1];
};
static struct sysv_obj *objs;
static uint32_t n_objs;

#define REAL(var, name) \
        do { if (!var) var = (__typeof__(var)) dlsym(RTLD_NEXT, name); } while (0)

uint64_t rt_ipc_ns(void) {
        struct stat st;
        return stat("/proc/self/ns/ipc", &st) == 0 ? (uint64_t) st.st_ino : 0;
}

static void note(int type, int id) {
        if (id < 0)
                return;
        uint64_t e = ((uint64_t) type << 32) | (uint32_t) id;
        uint32_t n = MIN(atomic_load(&n_ids), (uint32_t) MAX_IDS);
        for (uint32_t i = 0; i < n; i++)
                if (atomic_load(&ids[i]) == e)
                        return;
        uint32_t i = atomic_fetch_add(&n_ids, 1);
        if (i < MAX_IDS)
                atomic_store(&ids[i], e);
}

/* The checkpoint signal stays pending while a call and our record of it
 * happen: the checkpoint sees both or neither. */
static uint64_t block_ckpt(void) {
        uint64_t set = rt_sigckpt_bit(), old = 0;
        if (rt.initialized)
                raw_syscall4(SYS_rt_sigprocmask, SIG_BLOCK, (long) &set, (long) &old, 8);
        return old;
}

static void unblock_ckpt(uint64_t old) {
        uint64_t set = rt_sigckpt_bit();
        if (rt.initialized && !(old & set))
                raw_syscall4(SYS_rt_sigprocmask, SIG_UNBLOCK, (long) &set, 0, 8);
}

static void undo_lock_take(void) {
        uint32_t z = 0;
        while (!atomic_compare_exchange_weak(&undo_lock, &z, 1))
                z = 0;
}

static void undo_lock_drop(void) {
        atomic_store(&undo_lock, 0);
}

static void undo_add(int semid, unsigned num, int delta) {
        for (uint32_t i = 0; i < n_undo; i++)
                if (undos[i].semid == semid && undos[i].num == num) {
                        undos[i].adj += delta;
                        return;
                }
        if (n_undo == MAX_UNDO) {
                undo_overflow = true;
                return;
        }
        undos[n_undo++] = (struct undo) { semid, num, delta };
}

/* A SETVAL/SETALL clears the adjustments (num < 0: of the whole set). */
static void undo_clear(int semid, int num) {
        for (uint32_t i = 0; i < n_undo; i++)
                if (undos[i].semid == semid && (num < 0 || undos[i].num == (uint32_t) num))
                        undos[i].adj = 0;
}

void rt_sysv_atfork_child(void) {
        /* A child starts without adjustments (the kernel does not copy them). */
        undo_lock_drop();
        n_undo = 0;
        undo_overflow = false;
}

__attribute__((constructor)) static void sysv_init(void) {
        pthread_atfork(NULL, NULL, rt_sysv_atfork_child);
}

/* --- wrappers ------------------------------------------------------------ */

static int (*real_shmget)(key_t, size_t, int);
static void *(*real_shmat)(int, const void *, int);
static int (*real_shmctl)(int, int, struct shmid_ds *);
static int (*real_semget)(key_t, int, int);
static int (*real_semtimedop)(int, struct sembuf *, size_t, const struct timespec *);
static int (*real_semop)(int, struct sembuf *, size_t);
static int (*real_semctl)(int, int, int, ...);
static int (*real_msgget)(key_t, int);
static int (*real_msgsnd)(int, const void *, size_t, int);
static ssize_t (*real_msgrcv)(int, void *, size_t, long, int);
static int (*real_msgctl)(int, int, struct msqid_ds *);

/* The end of a *get call made with the checkpoint signal blocked (mask m):
 * the id it returned, recorded. */
static int got(int type, int r, uint64_t m) {
        int e = errno;
        note(type, r);
        unblock_ckpt(m);
        errno = e;
        return r;
}

_public_ int shmget(key_t key, size_t size, int flg) {
        REAL(real_shmget, "shmget");
        uint64_t m = block_ckpt();
        return got(ID_SHM, real_shmget(key, size, flg), m);
}

_public_ void *shmat(int id, const void *addr, int flg) {
        REAL(real_shmat, "shmat");
        note(ID_SHM, id);
        return real_shmat(id, addr, flg);
}

_public_ int shmctl(int id, int cmd, struct shmid_ds *buf) {
        REAL(real_shmctl, "shmctl");
        if (cmd != IPC_INFO && cmd != SHM_INFO && cmd != SHM_STAT && cmd != SHM_STAT_ANY)
                note(ID_SHM, id);
        return real_shmctl(id, cmd, buf);
}

_public_ int semget(key_t key, int nsems, int flg) {
        REAL(real_semget, "semget");
        uint64_t m = block_ckpt();
        return got(ID_SEM, real_semget(key, nsems, flg), m);
}

static bool has_undo(const struct sembuf *sops, size_t n) {
        for (size_t i = 0; i < n; i++)
                if (sops[i].sem_flg & SEM_UNDO)
                        return true;
        return false;
}

static bool all_nowait(const struct sembuf *sops, size_t n) {
        for (size_t i = 0; i < n; i++)
                if (!(sops[i].sem_flg & IPC_NOWAIT))
                        return false;
        return true;
}

static int64_t mono_ns(void) {
        struct timespec t;
        clock_gettime(CLOCK_MONOTONIC, &t);
        return (int64_t) t.tv_sec * 1000000000 + t.tv_nsec;
}

/* A semop with SEM_UNDO: see the top of the file. */
static int semop_undo(int id, struct sembuf *sops, size_t n, const struct timespec *timeout) {
        bool nowait = all_nowait(sops, n);
        int64_t deadline = timeout ? mono_ns() + (int64_t) timeout->tv_sec * 1000000000 + timeout->tv_nsec : 0;
        for (;;) {
                int64_t slice = UNDO_SLICE_NS;
                if (timeout)
                        slice = MAX((int64_t) 0, MIN(slice, deadline - mono_ns()));
                struct timespec ts = { slice / 1000000000, slice % 1000000000 };
                int64_t t0 = mono_ns();
                uint64_t m = block_ckpt();
                int r = real_semtimedop(id, sops, n, nowait ? NULL : &ts);
                int e = errno;
                if (r == 0) {
                        undo_lock_take();
                        for (size_t i = 0; i < n; i++)
                                if (sops[i].sem_flg & SEM_UNDO)
                                        undo_add(id, sops[i].sem_num, -sops[i].sem_op);
                        undo_lock_drop();
                }
                unblock_ckpt(m);        /* a checkpoint waiting for us happens here */
                if (r == 0)
                        return 0;
                /* EAGAIN is our slice ending, unless it came at once (an
                 * IPC_NOWAIT op) or the caller's own time is up. */
                if (e != EAGAIN || nowait || (timeout && mono_ns() >= deadline) || mono_ns() - t0 < slice / 2) {
                        errno = e;
                        return -1;
                }
        }
}

_public_ int semtimedop(int id, struct sembuf *sops, size_t n, const struct timespec *timeout) {
        REAL(real_semtimedop, "semtimedop");
        note(ID_SEM, id);
        if (!rt.initialized || !has_undo(sops, n))
                return real_semtimedop(id, sops, n, timeout);
        return semop_undo(id, sops, n, timeout);
}

_public_ int semop(int id, struct sembuf *sops, size_t n) {
        REAL(real_semop, "semop");
        REAL(real_semtimedop, "semtimedop");
        note(ID_SEM, id);
        if (!rt.initialized || !has_undo(sops, n))
                return real_semop(id, sops, n);
        return semop_undo(id, sops, n, NULL);
}

union rt_semun {
        int val;
        struct semid_ds *buf;
        unsigned short *array;
        struct seminfo *info;
};

_public_ int semctl(int id, int num, int cmd, ...) {
        REAL(real_semctl, "semctl");
        va_list ap;
        va_start(ap, cmd);
        union rt_semun arg = va_arg(ap, union rt_semun);
        va_end(ap);
        if (cmd == IPC_INFO || cmd == SEM_INFO || cmd == SEM_STAT || cmd == SEM_STAT_ANY)
                return real_semctl(id, num, cmd, arg);
        note(ID_SEM, id);
        if (cmd != SETVAL && cmd != SETALL && cmd != IPC_RMID)
                return real_semctl(id, num, cmd, arg);
        uint64_t m = block_ckpt();
        int r = real_semctl(id, num, cmd, arg);
        int e = errno;
        if (r == 0) {
                undo_lock_take();
                undo_clear(id, cmd == SETVAL ? num : -1);
                undo_lock_drop();
        }
        unblock_ckpt(m);
        errno = e;
        return r;
}

_public_ int msgget(key_t key, int flg) {
        REAL(real_msgget, "msgget");
        uint64_t m = block_ckpt();
        return got(ID_MSG, real_msgget(key, flg), m);
}

_public_ int msgsnd(int id, const void *p, size_t size, int flg) {
        REAL(real_msgsnd, "msgsnd");
        note(ID_MSG, id);
        return real_msgsnd(id, p, size, flg);
}

_public_ ssize_t msgrcv(int id, void *p, size_t size, long type, int flg) {
        REAL(real_msgrcv, "msgrcv");
        note(ID_MSG, id);
        return real_msgrcv(id, p, size, type, flg);
}

_public_ int msgctl(int id, int cmd, struct msqid_ds *buf) {
        REAL(real_msgctl, "msgctl");
        if (cmd != IPC_INFO && cmd != MSG_INFO && cmd != MSG_STAT && cmd != MSG_STAT_ANY)
                note(ID_MSG, id);
        return real_msgctl(id, cmd, buf);
}

/* --- checkpoint ------------------------------------------------------------ */

static long stat_sem(int id, struct semid_ds *ds) {
        return raw_syscall4(SYS_semctl, id, 0, IPC_STAT, (long) ds);
}

static long stat_msg(int id, struct msqid_ds *ds) {
        return raw_syscall3(SYS_msgctl, id, IPC_STAT, (long) ds);
}

int rt_sysv_elect(char *err, size_t errsize) {
        if (undo_overflow) {
                snprintf(err, errsize, "more than %d semaphores were operated on with SEM_UNDO", MAX_UNDO);
                return -E2BIG;
        }
        if (atomic_load(&n_ids) > MAX_IDS) {
                snprintf(err, errsize, "more than %d System V objects were used", MAX_IDS);
                return -E2BIG;
        }
        /* Forget what no longer exists; stand for the rest. */
        uint32_t n = atomic_load(&n_ids), kept = 0;
        objs = rt_alloc(RT_ARENA_SCRATCH, (n + 1) * sizeof *objs);
        n_objs = 0;
        if (!objs)
                return -ENOMEM;
        uint64_t ns = rt_ipc_ns();
        for (uint32_t i = 0; i < n; i++) {
                uint64_t e = atomic_load(&ids[i]);
                int type = (int) (e >> 32), id = (int) (uint32_t) e;
                long r = -EINVAL;
                struct semid_ds sds;
                struct msqid_ds mds;
                struct shmid_ds hds;
                if (type == ID_SEM)
                        r = stat_sem(id, &sds);
                else if (type == ID_MSG)
                        r = stat_msg(id, &mds);
                else if (type == ID_SHM)
                        r = raw_syscall3(SYS_shmctl, id, IPC_STAT, (long) &hds);
                if (r < 0 && r != -EACCES)
                        continue;
                atomic_store(&ids[kept++], e);
                if (type == ID_SHM)
                        continue;       /* saved with its memory, if mapped (shm.c) */
                struct sysv_obj *o = &objs[n_objs++];
                memset(o, 0, sizeof *o);
                o->type = type;
                o->id = id;
                snprintf(o->key, sizeof o->key, "sysv/%s/%llu/%d/%d", host_name(), (unsigned long long) ns, type, id);
                int k = rt_obj_stand(o->key);
                if (k < 0)
                        return k;
        }
        for (uint32_t i = kept; i < n; i++)
                atomic_store(&ids[i], 0);
        atomic_store(&n_ids, kept);
        return 0;
}

uint32_t rt_sysv_segments(int32_t *out, uint32_t max) {
        uint32_t n = 0, k = MIN(atomic_load(&n_ids), (uint32_t) MAX_IDS);
        for (uint32_t i = 0; i < k && n < max; i++) {
                uint64_t e = atomic_load(&ids[i]);
                if ((int) (e >> 32) == ID_SHM)
                        out[n++] = (int32_t) (uint32_t) e;
        }
        return n;
}

int rt_sysv_resolve(char *err, size_t errsize) {
        for (uint32_t i = 0; i < n_objs; i++) {
                int r = rt_obj_leader(objs[i].key, NULL, 0);
                if (r < 0) {
                        if (r != -ECANCELED)
                                snprintf(err, errsize, "cannot elect who saves System V %s %d: %s",
                                         objs[i].type == ID_SEM ? "semaphore set" : "message queue", objs[i].id,
                                         strerror(-r));
                        return r;
                }
                objs[i].leader = r == 1;
        }
        return 0;
}

static void fill_perm(struct img_sysv *v, const struct ipc_perm *p) {
        v->key = p->__key;
        v->mode = p->mode & 0777;
        v->uid = p->uid;
        v->gid = p->gid;
}

static int capture_sem(struct rt_sysv *out, int id, char *err, size_t errsize) {
        struct semid_ds ds;
        long r = stat_sem(id, &ds);
        if (r < 0) {
                snprintf(err, errsize, "cannot read System V semaphore set %d: %s", id, strerror((int) -r));
                return (int) r;
        }
        out->s.kind = IMG_SYSV_SEM;
        out->s.count = (uint32_t) ds.sem_nsems;
        fill_perm(&out->s, &ds.sem_perm);
        out->s.data_len = (uint64_t) ds.sem_nsems * sizeof(uint16_t);
        unsigned short *vals = rt_alloc(RT_ARENA_SCRATCH, out->s.data_len + 2);
        if (!vals)
                return -ENOMEM;
        if ((r = raw_syscall4(SYS_semctl, id, 0, GETALL, (long) vals)) < 0) {
                snprintf(err, errsize, "cannot read the values of System V semaphore set %d: %s", id,
                         strerror((int) -r));
                return (int) r;
        }
        out->data = (const uint8_t *) vals;
        return 0;
}

static int capture_msg(struct rt_sysv *out, int id, char *err, size_t errsize) {
        struct msqid_ds ds;
        long r = stat_msg(id, &ds);
        if (r < 0) {
                snprintf(err, errsize, "cannot read System V message queue %d: %s", id, strerror((int) -r));
                return (int) r;
        }
        out->s.kind = IMG_SYSV_MSG;
        out->s.qbytes = ds.msg_qbytes;
        fill_perm(&out->s, &ds.msg_perm);
        /* Every message, in order, without taking it out of the queue. */
        size_t max = (size_t) ds.__msg_cbytes + (size_t) ds.msg_qnum * (sizeof(struct img_sysv_msg) + 8) + 8;
        size_t msgmax = (size_t) MAX(ds.msg_qbytes, (msglen_t) 1) + sizeof(long);
        uint8_t *data = rt_alloc(RT_ARENA_SCRATCH, max);
        uint8_t *buf = rt_alloc(RT_ARENA_SCRATCH, msgmax);
        if (!data || !buf)
                return -ENOMEM;
        size_t o = 0;
        for (msgqnum_t k = 0; k < ds.msg_qnum; k++) {
                long n = raw_syscall5(SYS_msgrcv, id, (long) buf, (long) (msgmax - sizeof(long)), (long) k,
                                      IPC_NOWAIT | MSG_COPY | MSG_NOERROR);
                if (n < 0) {
                        snprintf(err, errsize, "cannot read message %lu of System V message queue %d%s: %s",
                                 (unsigned long) k, id, n == -ENOSYS ? " (this kernel lacks MSG_COPY)" : "",
                                 strerror((int) -n));
                        return (int) n;
                }
                struct img_sysv_msg m = { .mtype = *(long *) buf, .len = (uint32_t) n };
                if (o + sizeof m + ALIGN_UP((size_t) n, 8) > max) {
                        snprintf(err, errsize, "System V message queue %d changed while it was read", id);
                        return -EAGAIN;
                }
                memcpy(data + o, &m, sizeof m);
                o += sizeof m;
                memcpy(data + o, buf + sizeof(long), (size_t) n);
                memset(data + o + n, 0, ALIGN_UP((size_t) n, 8) - (size_t) n);
                o += ALIGN_UP((size_t) n, 8);
                out->s.count++;
        }
        out->data = data;
        out->s.data_len = o;
        return 0;
}

int rt_sysv_capture(char *err, size_t errsize) {
        rt_cap->sysv = rt_alloc(RT_ARENA_SCRATCH, (n_objs + 1) * sizeof *rt_cap->sysv);
        rt_cap->n_sysv = 0;
        if (!rt_cap->sysv)
                return -ENOMEM;
        uint64_t ns = rt_ipc_ns();
        for (uint32_t i = 0; i < n_objs; i++) {
                if (!objs[i].leader)
                        continue;
                struct rt_sysv *v = &rt_cap->sysv[rt_cap->n_sysv];
                memset(v, 0, sizeof *v);
                v->s.ns = ns;
                v->s.id = objs[i].id;
                int r = objs[i].type == ID_SEM ? capture_sem(v, objs[i].id, err, errsize)
                                               : capture_msg(v, objs[i].id, err, errsize);
                if (r < 0)
                        return r;
                rt_cap->n_sysv++;
        }
        return 0;
}

/* --- restart ---------------------------------------------------------------- */

int rt_sysv_rst_refill(char *err, size_t errsize) {
        /* Segments marked for removal were recreated unmarked, so every
         * process could attach them; all have, by now. */
        for (uint32_t i = 0; rt_cap && i < rt_cap->n_shms; i++) {
                const struct rt_shm *o = &rt_cap->shms[i];
                if (o->leader && o->s.kind == IMG_SHM_SYSV && (o->s.flags & IMG_SHMF_RMID)) {
                        long r = raw_syscall3(SYS_shmctl, (long) o->s.ino, IPC_RMID, 0);
                        if (r < 0) {
                                snprintf(err, errsize, "cannot mark System V shared memory %llu for removal again: %s",
                                         (unsigned long long) o->s.ino, strerror((int) -r));
                                return (int) r;
                        }
                }
        }
        /* Our SEM_UNDO adjustments, made again without changing any value. */
        for (uint32_t i = 0; i < n_undo; i++) {
                const struct undo *u = &undos[i];
                if (u->adj == 0)
                        continue;
                short a = (short) (u->adj > 0 ? u->adj : -u->adj);
                struct sembuf ops[2];
                if (u->adj > 0) {
                        ops[0] = (struct sembuf) { (unsigned short) u->num, a, IPC_NOWAIT };
                        ops[1] = (struct sembuf) { (unsigned short) u->num, (short) -a, IPC_NOWAIT | SEM_UNDO };
                } else {
                        ops[0] = (struct sembuf) { (unsigned short) u->num, a, IPC_NOWAIT | SEM_UNDO };
                        ops[1] = (struct sembuf) { (unsigned short) u->num, (short) -a, IPC_NOWAIT };
                }
                long r = raw_syscall4(SYS_semtimedop, u->semid, (long) ops, 2, 0);
                if (r < 0) {
                        snprintf(err, errsize, "cannot make the SEM_UNDO adjustment %d of semaphore %u of set %d again: %s",
                                 u->adj, u->num, u->semid, strerror((int) -r));
                        return (int) r;
                }
        }
        return 0;
}
