/* System V IPC at restart: segments, semaphore sets and message queues come
 * back with their keys, modes and ids. An id is given back by writing it to
 * /proc/sys/kernel/{shm,sem,msg}_next_id just before creating the object,
 * which needs the IPC namespace to be ours: dmtcp_restart makes a fresh one
 * (unshare(CLONE_NEWIPC), inside the restart's user namespace when it has
 * one), where no other object holds the ids. The computation's System V
 * objects are then private to it, as they were in effect.
 *
 * A segment marked for removal is created without its key and unmarked, so
 * that every process can attach it; its leader marks it again once all have
 * (preload/ipc-sysv.c). Not restored: the times and the pids of last
 * operations (IPC_STAT), the owner when it is not the restarting user. */
#include <fcntl.h>
#include <string.h>
#include <sys/ipc.h>
#include <sys/msg.h>
#include <sys/sem.h>
#include <sys/shm.h>

#include "shared.h"
#include "util.h"

static int set_next_id(const char *what, int id, char *err, size_t errsize) {
        char path[64], val[32];
        snprintf(path, sizeof path, "/proc/sys/kernel/%s_next_id", what);
        snprintf(val, sizeof val, "%d", id);
        int fd = open(path, O_WRONLY | O_CLOEXEC);
        int r = fd < 0 ? -errno : write_full(fd, val, strlen(val));
        if (fd >= 0)
                close(fd);
        if (r < 0)
                snprintf(err, errsize, "cannot give System V objects their ids back (%s: %s)", path, strerror(-r));
        return r;
}

/* Raise a limit of our IPC namespace (kernel.msgmax, kernel.msgmnb) to at
 * least v: the computation's host may have had higher ones. */
static void raise_limit(const char *name, uint64_t v) {
        char path[64], buf[32];
        snprintf(path, sizeof path, "/proc/sys/kernel/%s", name);
        if (read_small_file(path, buf, sizeof buf) > 0 && strtoull(buf, NULL, 10) >= v)
                return;
        int fd = open(path, O_WRONLY | O_CLOEXEC);
        if (fd < 0)
                return;
        snprintf(buf, sizeof buf, "%llu", (unsigned long long) v);
        (void) write_full(fd, buf, strlen(buf));
        close(fd);
}

static int check_id(const char *what, int want, int got, char *err, size_t errsize) {
        if (got == want)
                return 0;
        if (got >= 0)
                snprintf(err, errsize, "System V %s %d came back as %d (its id is taken)", what, want, got);
        else
                snprintf(err, errsize, "cannot recreate System V %s %d: %m", what, want);
        return got >= 0 ? -EEXIST : -errno;
}

static void set_owner(int id, int (*ctl)(int, int, void *), void *ds, struct ipc_perm *perm, uint32_t uid, uint32_t gid) {
        if (perm->uid == uid && perm->gid == gid)
                return;
        perm->uid = uid;
        perm->gid = gid;
        (void) ctl(id, IPC_SET, ds);    /* only when we may: the owner stays the restarting user */
}

static int shm_ctl(int id, int cmd, void *ds) {
        return shmctl(id, cmd, ds);
}

static int sem_ctl(int id, int cmd, void *ds) {
        return semctl(id, 0, cmd, ds);
}

static int msg_ctl(int id, int cmd, void *ds) {
        return msgctl(id, cmd, ds);
}

int rst_sysv_create_segment(struct rst_shm *o, char *err, size_t errsize) {
        int want = (int) o->s.ino;
        int r = set_next_id("shm", want, err, errsize);
        if (r < 0)
                return r;
        bool rmid = o->s.flags & IMG_SHMF_RMID;
        int id = shmget(rmid ? IPC_PRIVATE : (key_t) o->s.key, o->s.size ? o->s.size : 1,
                        IPC_CREAT | IPC_EXCL | (int) (o->s.mode & 0777));
        if ((r = check_id("shared memory segment", want, id, err, errsize)) < 0)
                return r;
        o->shmid = id;
        struct shmid_ds ds;
        if (shmctl(id, IPC_STAT, &ds) == 0)
                set_owner(id, shm_ctl, &ds, &ds.shm_perm, o->s.uid, o->s.gid);
        return 0;
}

static int create_sem(const struct img_parsed_sysv *v, char *err, size_t errsize) {
        int r = set_next_id("sem", v->s.id, err, errsize);
        if (r < 0)
                return r;
        int id = semget((key_t) v->s.key, (int) v->s.count, IPC_CREAT | IPC_EXCL | (int) (v->s.mode & 0777));
        if ((r = check_id("semaphore set", v->s.id, id, err, errsize)) < 0)
                return r;
        unsigned short *vals = calloc(v->s.count, sizeof *vals);
        if (!vals)
                return -ENOMEM;
        memcpy(vals, v->data, v->s.count * sizeof *vals);
        r = semctl(id, 0, SETALL, vals);
        free(vals);
        if (r < 0) {
                snprintf(err, errsize, "cannot give System V semaphore set %d its values back: %m", id);
                return -errno;
        }
        struct semid_ds ds;
        if (semctl(id, 0, IPC_STAT, &ds) == 0)
                set_owner(id, sem_ctl, &ds, &ds.sem_perm, v->s.uid, v->s.gid);
        return 0;
}

static int create_msg(const struct img_parsed_sysv *v, char *err, size_t errsize) {
        int r = set_next_id("msg", v->s.id, err, errsize);
        if (r < 0)
                return r;
        int id = msgget((key_t) v->s.key, IPC_CREAT | IPC_EXCL | (int) (v->s.mode & 0777));
        if ((r = check_id("message queue", v->s.id, id, err, errsize)) < 0)
                return r;
        raise_limit("msgmnb", v->s.qbytes);
        struct msqid_ds ds;
        if (msgctl(id, IPC_STAT, &ds) == 0 && ds.msg_qbytes != v->s.qbytes) {
                ds.msg_qbytes = v->s.qbytes;
                if (msgctl(id, IPC_SET, &ds) < 0) {
                        snprintf(err, errsize, "cannot give System V message queue %d its size of %llu bytes: %m", id,
                                 (unsigned long long) v->s.qbytes);
                        return -errno;
                }
        }
        /* The messages, in order, with their types. */
        uint64_t o = 0, longest = 0;
        for (uint32_t k = 0; k < v->s.count; k++) {
                struct img_sysv_msg m;
                memcpy(&m, v->data + o, sizeof m);
                longest = MAX(longest, (uint64_t) m.len);
                o += sizeof m + ALIGN_UP((uint64_t) m.len, 8);
        }
        raise_limit("msgmax", longest);
        uint8_t *buf = malloc(sizeof(long) + longest + 1);
        if (!buf)
                return -ENOMEM;
        o = 0;
        for (uint32_t k = 0; k < v->s.count && r == 0; k++) {
                struct img_sysv_msg m;
                memcpy(&m, v->data + o, sizeof m);
                long type = (long) m.mtype;
                memcpy(buf, &type, sizeof type);
                memcpy(buf + sizeof type, v->data + o + sizeof m, m.len);
                if (msgsnd(id, buf, m.len, IPC_NOWAIT) < 0) {
                        snprintf(err, errsize, "cannot put message %u of %u back into System V message queue %d: %m",
                                 k + 1, v->s.count, id);
                        r = -errno;
                }
                o += sizeof m + ALIGN_UP((uint64_t) m.len, 8);
        }
        free(buf);
        if (r == 0 && msgctl(id, IPC_STAT, &ds) == 0)
                set_owner(id, msg_ctl, &ds, &ds.msg_perm, v->s.uid, v->s.gid);
        return r;
}

int rst_sysv_create_set(const char *host, const struct img_parsed_sysv *v, char *err, size_t errsize) {
        return v->s.kind == IMG_SYSV_SEM ? create_sem(v, err, errsize) : create_msg(v, err, errsize);
}
