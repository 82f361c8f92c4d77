/* Descriptor kinds. Each kind lives in its own file and fills one ops table;
 * fd.c walks the descriptors through a checkpoint's phases and dispatches.
 * Adding a kind = a new file and a line in fd.c's table.
 *
 * An open file description may be shared by several processes (fork,
 * SCM_RIGHTS). One of them, its leader, saves and restores it; the others
 * (followers) receive it from the leader after a restart (fd.c, mailbox.c).
 * Hooks run in the leader only, unless said otherwise. */
#pragma once

#include <fcntl.h>
#include <sys/stat.h>

#include "rt.h"

struct rt_fd_probe {
        int fd;
        struct stat st;
        char path[PATH_MAX];            /* readlink of /proc/self/fd/N */
        int flags, fdflags;
};

struct rt_fd_ops {
        uint32_t kind;                  /* enum img_fd_kind */
        const char *name;
        bool shareable;                 /* may be shared between processes: elected */
        /* Is this descriptor of our kind? (every process) */
        bool (*match)(const struct rt_fd_probe *p);
        /* ELECT, every process holding it, before the barrier: announce what
         * peers must know before they drain (KV_PUT). */
        int (*announce)(struct rt_fd *f, char *err, size_t errsize);
        /* After the election: publish what peers must know (KV_PUT). */
        int (*publish)(struct rt_fd *f, char *err, size_t errsize);
        /* DRAIN: take in-flight data out of kernel buffers, into f->data. */
        int (*drain)(struct rt_fd *f, char *err, size_t errsize);
        /* CAPTURE: record it (threads suspended). Every process. */
        int (*save)(const struct rt_fd_probe *p, struct rt_fd *out, char *err, size_t errsize);
        /* REFILL (after a checkpoint): put drained data back. */
        int (*refill)(struct rt_fd *f, char *err, size_t errsize);
        /* The checkpoint was abandoned after GO(ELECT), before REFILL was
         * done: put back whatever the drain took (or would have taken: a
         * peer may have drained). */
        void (*abandon)(struct rt_fd *f);
        /* Restart, RST_RESTORE: recreate it at f->d.fd. Returns 0 when in
         * place, 1 when it comes from another process (connect). */
        int (*restore)(struct rt_fd *f, char *err, size_t errsize);
        /* Restart, RST_CONNECT, when restore returned 1: ask for it
         * (rt_mailbox_request); the mailbox puts it in place. */
        int (*connect)(struct rt_fd *f, char *err, size_t errsize);
        /* Restart, RST_REFILL. */
        int (*rst_refill)(struct rt_fd *f, char *err, size_t errsize);
        /* CAPTURE and RST_REFILL in a process that shares a description
         * another saves (a follower): what only this process can do
         * (fd-epoll.c: a signalfd's watch counts for the process that
         * added it). */
        int (*follower_save)(const struct rt_fd_probe *p, struct rt_fd *f, char *err, size_t errsize);
        int (*follower_rst_refill)(struct rt_fd *f, char *err, size_t errsize);
};

extern const struct rt_fd_ops rt_fd_external_ops, rt_fd_regular_ops, rt_fd_directory_ops,
        rt_fd_chardev_ops, rt_fd_tty_ops, rt_fd_pipe_ops, rt_fd_shm_ops, rt_fd_mq_ops, rt_fd_socket_ops,
        rt_fd_eventfd_ops, rt_fd_signalfd_ops, rt_fd_timerfd_ops, rt_fd_inotify_ops, rt_fd_epoll_ops, rt_fd_fifo_ops,
        rt_fd_ptmx_ops, rt_fd_pts_ops;

/* Helpers shared by kinds. */
char *rt_strdup_state(const char *s);
int rt_fd_install(int newfd, int target, int fdflags);   /* dup newfd onto target, close newfd */
int rt_file_add(uint64_t dev, uint64_t ino, const char *path, uint32_t flags, const struct stat *st);
bool rt_fd_is_external(int fd, const struct stat *st);

/* The upid of process pid (of this host) if it is a member of the
 * computation (it published its descriptors at ELECT), else -ENOENT. */
int rt_fds_upid_of(pid_t pid, char *upid, size_t size);

/* mailbox.c: passing descriptors between restored processes. */
int rt_mailbox_open(void);
void rt_mailbox_close(void);
/* Ask process upid for its descriptor `what` (a leader_fd, or a kind's own
 * key), to be installed as our `want` with fdflags. */
int rt_mailbox_request(const char *upid, uint32_t type, uint64_t what, int want, int fdflags);
/* Offer a descriptor under a kind's own key (type, key): handed to whoever asks. */
int rt_mailbox_offer(uint32_t type, uint64_t key, int fd);
/* Serve and receive until every request of ours is answered (then report
 * PHASE_DONE(RST_CONNECT)) and the coordinator sent GO(RST_CONNECT). */
int rt_mailbox_run(char *err, size_t errsize);

enum rt_mailbox_type {
        RT_MB_DESC = 1,                 /* what = the leader's descriptor number */
        RT_MB_PIPE_WRITE,               /* what = the pipe's inode: its write end */
        RT_MB_SOCK_PEER,                /* what = a Unix socket's saved inode: the new socket */
        RT_MB_PTY_SLAVE,                /* what = the pty's number at the checkpoint: its slave */
};
