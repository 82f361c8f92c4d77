/* POSIX message queues (mq_open).
 *
 * A queue may be open in several processes, through several descriptions.
 * Descriptions are shared as any other (fd.c); the queue itself is saved by
 * one process, its owner, elected among the leaders of its descriptions
 * (publish: stand; save: the winner). There is no way to read a message
 * without taking it, so the owner takes them all at CAPTURE, in the order
 * they would be received (highest priority first, in arrival order within
 * a priority), and at once puts them back with their priorities, which
 * restores that order; every process of the computation is stopped then.
 * Not later (at REFILL): a checkpoint abandoned in between would resume
 * the others while the messages are out, and they would send after them
 * or find the queue empty. With the messages go the queue's attributes
 * (mq_maxmsg, mq_msgsize), its mode and its name.
 *
 * Restart: in RST_RESTORE the owner recreates the queue under its name (a
 * queue left under that name with the same attributes is emptied and used;
 * one with others is replaced), or, if the program had unlinked it, under a
 * name derived from the owner and the queue, which the owner removes in
 * RST_REFILL, once every process has opened it again (RST_CONNECT). Each
 * description is opened again by that name with its own flags; the owner
 * puts the messages back in RST_REFILL.
 *
 * Not kept: a notification registered with mq_notify (the process must
 * register again; taking and putting back the messages of a queue with a
 * registration may notify it early). */
#include <fcntl.h>
#include <mqueue.h>
#include <string.h>
#include <sys/statfs.h>

#include "fd.h"
#include "raw-syscall.h"
#include "shm.h"
#include "util.h"

#define MQUEUE_MAGIC 0x19800202
#define MQ_OWNER 1u                     /* aux: we saved the queue (f->data) */
#define MQ_HEAD_MAGIC 0x7175656du       /* "mque" */
#define DELETED " (deleted)"

/* f->data of the owner: a head, then per message struct mq_saved + text,
 * padded to 8. */
struct mq_head {
        uint32_t magic;
        uint32_t n;
        int64_t maxmsg, msgsize;
        uint32_t mode;
        uint32_t unlinked;
};

struct mq_saved {
        uint32_t prio;
        uint32_t len;
};

/* The owner's read-write descriptor of the recreated queue, by inode at
 * checkpoint, until RST_REFILL. */
#define MAX_OWNED 256
static struct {
        uint64_t ino;
        int fd;
} owned[MAX_OWNED];
static uint32_t n_owned;

static bool mq_match(const struct rt_fd_probe *p) {
        if (!S_ISREG(p->st.st_mode) || p->path[0] != '/' || strchr(p->path + 1, '/'))
                return false;
        struct statfs sf;
        return raw_syscall2(SYS_fstatfs, p->fd, (long) &sf) == 0 && sf.f_type == MQUEUE_MAGIC;
}

static void queue_key(char *key, size_t size, uint64_t ino) {
        snprintf(key, size, "mq/%s/%llu/%llu", host_name(), (unsigned long long) rt_ipc_ns(), (unsigned long long) ino);
}

/* The queue's name without the leading '/' (as the system calls want it). */
static void queue_name(const struct rt_fd *f, char *buf, size_t size, bool *unlinked) {
        strscpy(buf, f->path + 1, size);
        size_t n = strlen(buf), s = strlen(DELETED);
        *unlinked = n > s && !strcmp(buf + n - s, DELETED);
        if (*unlinked)
                buf[n - s] = 0;
}

/* The name of a queue the program had unlinked, while it is recreated. */
static void restart_name(const struct rt_fd *f, const char *owner, char *buf, size_t size) {
        uint64_t h = 0xcbf29ce484222325ULL;
        for (const char *p = owner; *p; p++)
                h = (h ^ (uint8_t) *p) * 0x100000001b3ULL;
        snprintf(buf, size, "dmtcp-mq-%016llx-%llu", (unsigned long long) h, (unsigned long long) f->d.ino);
}

static int reopen(int fd, int flags) {
        char link[64];
        snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
        return (int) raw_syscall4(SYS_openat, AT_FDCWD, (long) link, flags | O_CLOEXEC, 0);
}

static int mq_publish(struct rt_fd *f, char *err, size_t errsize) {
        char key[PROTO_KEY_MAX + 1];
        queue_key(key, sizeof key, f->d.ino);
        int r = rt_obj_stand(key);
        if (r < 0)
                snprintf(err, errsize, "fd %d (message queue %s): cannot publish it: %s", f->d.fd, f->path,
                         strerror(-r));
        return r;
}

static bool drained_here(const struct rt_fd *f) {
        for (uint32_t i = 0; i < rt_cap->n_fds; i++) {
                const struct rt_fd *g = &rt_cap->fds[i];
                if (g != f && g->d.kind == IMG_FD_MQUEUE && g->d.ino == f->d.ino && (g->d.aux & MQ_OWNER))
                        return true;
        }
        return false;
}

/* Put the saved messages (data: a head, then the messages) back into the
 * queue open on fd. */
static int put_back(const struct rt_fd *f, const uint8_t *data, int fd, char *err, size_t errsize) {
        struct mq_head h;
        memcpy(&h, data, sizeof h);
        size_t o = sizeof h;
        for (uint32_t k = 0; k < h.n; k++) {
                struct mq_saved m;
                memcpy(&m, data + o, sizeof m);
                long r = raw_syscall5(SYS_mq_timedsend, fd, (long) (data + o + sizeof m), m.len, m.prio, 0);
                if (r < 0) {
                        snprintf(err, errsize, "fd %d (message queue %s): cannot put message %u of %u back: %s",
                                 f->d.fd, f->path, k + 1, h.n, strerror((int) -r));
                        return (int) r;
                }
                o += sizeof m + ALIGN_UP((size_t) m.len, 8);
        }
        return 0;
}

/* Copy every message, in receiving order: take them all out, then put
 * them back. */
static int drain(struct rt_fd *f, char *err, size_t errsize) {
        int rd = reopen(f->d.fd, O_RDONLY | O_NONBLOCK);
        int wr = rd < 0 ? rd : reopen(f->d.fd, O_WRONLY | O_NONBLOCK);
        if (rd < 0 || wr < 0) {
                snprintf(err, errsize, "fd %d (message queue %s): cannot open it to read and write its messages: %s",
                         f->d.fd, f->path, strerror(rd < 0 ? -rd : -wr));
                if (rd >= 0)
                        raw_syscall1(SYS_close, rd);
                return rd < 0 ? rd : wr;
        }
        struct mq_attr a = { 0 };
        long r = raw_syscall3(SYS_mq_getsetattr, rd, 0, (long) &a);
        uint8_t *buf = NULL;
        if (r == 0) {
                size_t cap = sizeof(struct mq_head) + (size_t) a.mq_curmsgs * (sizeof(struct mq_saved) + 8 +
                                                                               (size_t) a.mq_msgsize);
                buf = rt_alloc(RT_ARENA_STATE, cap);
                if (!buf)
                        r = -ENOMEM;
        }
        bool unlinked;
        char name[NAME_MAX + 1];
        queue_name(f, name, sizeof name, &unlinked);
        struct mq_head h = { .magic = MQ_HEAD_MAGIC, .maxmsg = a.mq_maxmsg, .msgsize = a.mq_msgsize,
                             .mode = f->st.st_mode & 07777, .unlinked = unlinked };
        size_t o = sizeof h;
        for (long k = 0; r == 0 && k < a.mq_curmsgs; k++) {
                struct mq_saved m;
                unsigned prio = 0;
                long n = raw_syscall5(SYS_mq_timedreceive, rd, (long) (buf + o + sizeof m), (long) a.mq_msgsize,
                                      (long) &prio, 0);
                if (n < 0) {
                        r = n;
                        break;
                }
                m.prio = prio;
                m.len = (uint32_t) n;
                memcpy(buf + o, &m, sizeof m);
                o += sizeof m + ALIGN_UP((size_t) n, 8);
                h.n++;
        }
        raw_syscall1(SYS_close, rd);
        if (r < 0)
                snprintf(err, errsize, "fd %d (message queue %s): cannot read its messages: %s", f->d.fd, f->path,
                         strerror((int) -r));
        if (buf) {
                memcpy(buf, &h, sizeof h);
                /* Also what was taken before an error; failing that is the
                 * error to report. */
                int b = put_back(f, buf, wr, err, errsize);
                if (b < 0)
                        r = b;
        }
        raw_syscall1(SYS_close, wr);
        if (r < 0)
                return (int) r;
        f->data = buf;
        f->data_len = o;
        f->d.size = h.n;
        f->d.aux |= MQ_OWNER;
        return 0;
}

static int mq_save(const struct rt_fd_probe *p, struct rt_fd *f, char *err, size_t errsize) {
        char key[PROTO_KEY_MAX + 1];
        queue_key(key, sizeof key, f->d.ino);
        int r = rt_obj_leader(key, f->d.leader, sizeof f->d.leader);
        if (r < 0) {
                if (r != -ECANCELED)
                        snprintf(err, errsize, "fd %d (message queue %s): cannot learn who saves it: %s", f->d.fd,
                                 f->path, strerror(-r));
                return r;
        }
        if (r == 1 && !drained_here(f))
                return drain(f, err, errsize);
        return 0;
}

static bool valid_data(const struct rt_fd *f) {
        struct mq_head h;
        if (!f->data || f->data_len < sizeof h)
                return false;
        memcpy(&h, f->data, sizeof h);
        return h.magic == MQ_HEAD_MAGIC && h.maxmsg > 0 && h.msgsize > 0;
}

/* The queue as it was, under its name or none; a read-write descriptor. */
static int recreate(const struct rt_fd *f, char *err, size_t errsize) {
        struct mq_head h;
        memcpy(&h, f->data, sizeof h);
        bool unlinked;
        char name[NAME_MAX + 1];
        queue_name(f, name, sizeof name, &unlinked);
        if (h.unlinked)
                restart_name(f, rt.cfg.upid, name, sizeof name);
        struct mq_attr want = { .mq_maxmsg = h.maxmsg, .mq_msgsize = h.msgsize };
        long fd = h.unlinked ? -ENOENT : raw_syscall4(SYS_mq_open, (long) name, O_RDWR | O_NONBLOCK | O_CLOEXEC, 0, 0);
        if (fd >= 0) {
                struct mq_attr a;
                if (raw_syscall3(SYS_mq_getsetattr, fd, 0, (long) &a) == 0 && a.mq_maxmsg == h.maxmsg &&
                    a.mq_msgsize == h.msgsize) {
                        /* Left from before: empty it. */
                        uint8_t *buf = rt_alloc(RT_ARENA_SCRATCH, (size_t) a.mq_msgsize);
                        unsigned prio;
                        while (buf && raw_syscall5(SYS_mq_timedreceive, fd, (long) buf, a.mq_msgsize, (long) &prio, 0) >= 0)
                                ;
                } else {
                        raw_syscall1(SYS_close, fd);
                        raw_syscall1(SYS_mq_unlink, (long) name);
                        fd = -ENOENT;
                }
        }
        if (fd == -ENOENT)
                fd = raw_syscall4(SYS_mq_open, (long) name, O_RDWR | O_NONBLOCK | O_CREAT | O_EXCL | O_CLOEXEC,
                                  h.mode & 0777, (long) &want);
        if (fd < 0) {
                snprintf(err, errsize, "fd %d: cannot recreate message queue /%s (%ld messages of %ld bytes): %s",
                         f->d.fd, name, (long) h.maxmsg, (long) h.msgsize, strerror((int) -fd));
                return (int) fd;
        }
        raw_syscall2(SYS_fchmod, fd, h.mode & 07777);
        return (int) fd;
}

static int place(struct rt_fd *f, int from, char *err, size_t errsize) {
        int fd = reopen(from, (int) (f->d.flags & (O_ACCMODE | O_NONBLOCK)));
        if (fd < 0) {
                snprintf(err, errsize, "fd %d: cannot open message queue %s again: %s", f->d.fd, f->path,
                         strerror(-fd));
                return fd;
        }
        int r = rt_fd_install(fd, f->d.fd, (int) f->d.fdflags);
        if (r < 0)
                snprintf(err, errsize, "fd %d: cannot place message queue %s: %s", f->d.fd, f->path, strerror(-r));
        return r;
}

static int mq_restore(struct rt_fd *f, char *err, size_t errsize) {
        if (!(f->d.aux & MQ_OWNER))
                return 1;       /* the owner recreates it: RST_CONNECT */
        if (!valid_data(f)) {
                snprintf(err, errsize, "fd %d: the saved state of message queue %s is missing", f->d.fd, f->path);
                return -EBADMSG;
        }
        if (n_owned == MAX_OWNED) {
                snprintf(err, errsize, "fd %d: too many message queues", f->d.fd);
                return -E2BIG;
        }
        int fd = recreate(f, err, errsize);
        if (fd < 0)
                return fd;
        fd = rt_fd_move_private(fd);
        rt_fd_set_private(fd, true);
        owned[n_owned].ino = f->d.ino;
        owned[n_owned++].fd = fd;
        return place(f, fd, err, errsize);
}

/* RST_CONNECT: the owner has recreated the queue; open it by name. The
 * descriptions shared with other processes are handed out from here on. */
static int mq_connect(struct rt_fd *f, char *err, size_t errsize) {
        bool unlinked;
        char name[NAME_MAX + 1];
        queue_name(f, name, sizeof name, &unlinked);
        if (unlinked)
                restart_name(f, f->d.leader, name, sizeof name);
        long fd = raw_syscall4(SYS_mq_open, (long) name, (long) ((f->d.flags & (O_ACCMODE | O_NONBLOCK)) | O_CLOEXEC), 0, 0);
        if (fd < 0) {
                snprintf(err, errsize, "fd %d: cannot open message queue %s again (process %s recreates it): %s",
                         f->d.fd, f->path, f->d.leader, strerror((int) -fd));
                return (int) fd;
        }
        int r = rt_fd_install((int) fd, f->d.fd, (int) f->d.fdflags);
        if (r < 0) {
                snprintf(err, errsize, "fd %d: cannot place message queue %s: %s", f->d.fd, f->path, strerror(-r));
                return r;
        }
        f->restored = true;
        return 0;
}

static int mq_rst_refill(struct rt_fd *f, char *err, size_t errsize) {
        if (!(f->d.aux & MQ_OWNER))
                return 0;
        for (uint32_t i = 0; i < n_owned; i++)
                if (owned[i].ino == f->d.ino) {
                        int r = put_back(f, f->data, owned[i].fd, err, errsize);
                        rt_fd_set_private(owned[i].fd, false);
                        raw_syscall1(SYS_close, owned[i].fd);
                        owned[i] = owned[--n_owned];
                        struct mq_head h;
                        memcpy(&h, f->data, sizeof h);
                        if (h.unlinked) {
                                /* Every process has it open again. */
                                char name[NAME_MAX + 1];
                                restart_name(f, rt.cfg.upid, name, sizeof name);
                                raw_syscall1(SYS_mq_unlink, (long) name);
                        }
                        return r;
                }
        snprintf(err, errsize, "fd %d: message queue %s was not recreated", f->d.fd, f->path);
        return -ENOENT;
}

const struct rt_fd_ops rt_fd_mq_ops = {
        .kind = IMG_FD_MQUEUE,
        .name = "message queue",
        .shareable = true,
        .match = mq_match,
        .publish = mq_publish,
        .save = mq_save,
        .restore = mq_restore,
        .connect = mq_connect,
        .rst_refill = mq_rst_refill,
};
