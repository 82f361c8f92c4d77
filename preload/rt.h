/* The runtime injected into checkpointed programs (libdmtcp.so).
 *
 * Rules for all code in preload/:
 *  - Between checkpoints the runtime costs nothing: no wrappers on hot paths.
 *  - While user threads are suspended, any of them may hold a libc lock
 *    (malloc, stdio, the dynamic loader). The checkpoint thread then uses only
 *    raw system calls, the runtime's own arenas (alloc.c) and code that takes
 *    no lock. Functions that may run there say "suspended-safe".
 *  - The snapshot child (COW checkpoint) is a raw clone of that moment:
 *    same rules, forever.
 *  - Memory the runtime must find again after a restart lives in its static
 *    data or the state arena; scratch buffers are never saved. */
#pragma once

#include <signal.h>
#include <stdatomic.h>
#include <sys/stat.h>
#include <limits.h>
#include <sys/types.h>

#include "env.h"
#include "img.h"
#include "log.h"
#include "macro.h"
#include "proto.h"
#include "rst-abi.h"

#define RT_MAX_THREADS 4096
#define RT_MAX_EXTERNAL_FDS 256
#define RT_FD_BASE 900             /* runtime's own descriptors live at or above this */

enum rt_thread_state {
        RT_TS_FREE = 0,
        RT_TS_RUNNING,             /* known, not asked to stop */
        RT_TS_SIGNALED,            /* checkpoint signal sent */
        RT_TS_STOPPING,            /* in the handler, saving its state */
        RT_TS_SUSPENDED,           /* parked in the handler, context saved */
};

/* A pending signal with its siginfo: dequeued at a checkpoint and queued
 * again at once, and again after a restart. */
struct rt_pending {
        int32_t sig;
        siginfo_t info;
};
#define RT_MAX_THREAD_PENDING 32
#define RT_MAX_PROCESS_PENDING 256

struct rt_thread {
        _Atomic uint32_t state;
        uint32_t tid;
        uint32_t scan;             /* last scan that saw it */
        uint32_t restored;         /* resumed in a restored process */
        struct rt_ctx ctx;
        struct img_thread info;
        struct rt_pending pending[RT_MAX_THREAD_PENDING];   /* thread-private */
        uint32_t n_pending;
};

struct rt_external_fd {
        int fd;
        uint64_t dev, ino;
};

struct rt_config {
        struct coord_addr coord;
        char ckptdir[PATH_MAX];
        char job[PROTO_JOB_MAX + 1];
        char program[PROTO_NAME_MAX + 1];
        char upid[PROTO_ID_MAX + 1];
        char comp_id[PROTO_ID_MAX + 1];
        char secret[PROTO_ID_MAX + 1];
        uint32_t interval;
        int sigckpt;
        int fail_rc;
        bool gzip;
        bool cow;
        bool ckpt_libraries;
        bool quiet;
};

/* The application's view of the checkpoint signal (it is hidden from it). */
struct rt_virt_signal {
        struct sigaction act;      /* what the program installed for sigckpt */
        bool installed;
};

struct rt_state {
        struct rt_config cfg;
        int coord_fd;
        pid_t pid;
        pid_t ckpt_tid;
        _Atomic uint32_t release_seq;   /* parked threads wait for this to change */
        _Atomic uint32_t n_suspended;   /* futex: threads that reached the park */
        _Atomic uint32_t rst_arrived;   /* futex: restored threads back in our code */
        _Atomic uint32_t ckpt_active;   /* futex: a checkpoint of this process is under way */
        _Atomic uint32_t crit;          /* futex: threads in the exec critical section */
        _Atomic uint32_t app_crit;      /* futex: threads between dmtcp_disable_ckpt and _enable_ckpt */
        _Atomic uint32_t exec_pending;  /* an exec is announced: do not join the coordinator now */
        uint32_t n_threads;             /* high-water mark in rt_threads[] */
        uint32_t scan_seq;
        struct rt_external_fd external[RT_MAX_EXTERNAL_FDS];
        uint32_t n_external;
        uint64_t generation;            /* of the checkpoint in progress / last done */
        uint32_t members;               /* processes in that checkpoint */
        uint64_t ckpt_count, restart_count;
        struct rt_thread ckpt_thread;   /* the checkpoint thread's own record */
        struct rt_virt_signal virt;
        int seccomp_filters_at_launch;
        /* Lazy restore: the image file mapped over anonymous memory
         * (rst_incoming.image_dev, image_ino). */
        uint64_t image_dev, image_ino;
        bool initialized;
};

/* What a checkpoint captured while threads were suspended. Lives in the
 * state arena, so the restored runtime finds fds, handlers, timers and
 * process settings in its own memory; regions and files are only for the
 * writer. */
struct rt_fd {
        struct img_fd d;
        const char *path;
        /* The runtime's own, through a checkpoint or restart: */
        const void *ops;                /* its kind (const struct rt_fd_ops *) */
        struct stat st;
        int owner_type, owner_pid;      /* F_GETOWN_EX before the election */
        bool shareable;
        bool leader;                    /* we save (and restore) the description */
        pid_t leader_pid;
        uint8_t *data;                  /* drained bytes (state arena) */
        size_t data_len;
        void *priv;                     /* the kind's own saved state (state arena) */
        bool restored;                  /* restart: in place */
};

struct rt_file {
        struct img_file f;
        const char *path;
        void *content;                  /* snapshot of a deleted file's bytes */
};

struct rt_region {
        struct img_region r;
        const char *name;
        uint64_t dev, ino;              /* from /proc/self/maps */
        void *copy;                     /* contents copied during the pause (COW) */
        bool image_backed;              /* mapped from an image by a lazy restart */
};

/* A shared memory object this process maps or holds (shm.c). Its content
 * is saved in extents: pieces of the object copied during the pause. */
struct rt_shm_extent {
        uint64_t off, len;              /* bytes of the object */
        const uint8_t *data;            /* their copy (scratch) */
};

struct rt_shm {
        struct img_shm s;
        const char *name;
        struct rt_shm_extent *ext;      /* what this process saves of it (scratch) */
        uint32_t n_ext;
        bool leader;
};

/* A System V semaphore set or message queue saved by this process. */
struct rt_sysv {
        struct img_sysv s;
        const uint8_t *data;            /* s.data_len bytes (scratch) */
};

struct rt_capture {
        struct img_process proc;
        char exe[PATH_MAX];
        char cwd[PATH_MAX];
        uint8_t auxv[2048];
        size_t auxv_len;
        struct img_sigaction sigactions[64];
        struct img_timer *timers;
        uint32_t n_timers;
        struct rt_fd *fds;
        uint32_t n_fds;
        struct rt_region *regions;
        uint32_t n_regions;
        struct rt_file *files;
        uint32_t n_files;
        struct img_child *children;     /* exited, not yet reaped */
        uint32_t n_children;
        struct rt_pending *pending;     /* process-wide pending signals */
        uint32_t n_pending;
        struct rt_shm *shms;            /* shared memory objects (state arena) */
        uint32_t n_shms;
        struct rt_sysv *sysv;           /* System V objects this process saves */
        uint32_t n_sysv;
};

extern struct rt_state rt;

/* The checkpoint signal in a kernel signal mask (rt_sigprocmask, status). */
static inline uint64_t rt_sigckpt_bit(void) {
        return 1ULL << (rt.cfg.sigckpt - 1);
}
/* Out of rt, which has an initialiser: in rt, its 18 MiB of zeros were in
 * the library's file (.data). */
extern struct rt_thread rt_threads[RT_MAX_THREADS];
extern struct rt_capture *rt_cap;
extern struct rst_incoming *volatile rt_incoming;

/* ctx.S */
int rt_ctx_save(struct rt_ctx *ctx) __attribute__((returns_twice));

/* alloc.c: two bump arenas. The state arena is saved with the image; the
 * scratch arena and anything from rt_map_scratch never are. Both are reset
 * at the start of each checkpoint. Suspended-safe. */
enum rt_arena { RT_ARENA_STATE, RT_ARENA_SCRATCH };
void *rt_alloc(enum rt_arena a, size_t size);
void rt_arena_reset(enum rt_arena a);
void *rt_map_scratch(size_t size);              /* page-aligned, zeroed, never saved */
void rt_unmap_scratch(void *p, size_t size);
bool rt_next_saved_piece(uint64_t *pos, uint64_t end, uint64_t *piece_start, uint64_t *piece_end);
void rt_alloc_after_restart(void);               /* scratch mappings are gone */

/* threads.c */
int rt_threads_install_handler(void);
int rt_threads_suspend(char *err, size_t errsize);
void rt_threads_resume(void);
void rt_thread_capture_self(struct rt_thread *t);  /* per-thread kernel state into t->info */
void rt_thread_restore_self(struct rt_thread *t);  /* after restart, in that thread */
struct rt_thread *rt_thread_slot(pid_t tid, bool create);
void rt_threads_forget_all(void);
/* Dequeue the pending signals of set (with their siginfo) into out, and
 * queue them again for tid (0 = the process, every queued instance; a
 * thread takes one of each). Returns how many. */
uint32_t rt_take_pending(uint64_t set, pid_t tid, struct rt_pending *out, uint32_t max);
void rt_requeue(pid_t tid, const struct rt_pending *p, uint32_t n);

/* signals.c: virtualization of the checkpoint signal and save/restore of
 * handlers, timers and pending signals. */
void rt_signals_init(void);
void rt_deliver_app_signal(int sig, siginfo_t *si, void *uc);
/* The checkpoint's own signal to a thread, tagged so that the handler tells
 * it from the program's signal of the same number; and the runtime's wake-up
 * of a thread in sigwait() (signals.c), tagged too. */
enum rt_sig_tag { RT_SIG_PROGRAM, RT_SIG_CKPT, RT_SIG_WAKE };
/* The program's view of the checkpoint signal in this thread (blocked or
 * not), which a new thread inherits as it would the mask. */
int rt_sig_app_blocked(void);
void rt_sig_set_app_blocked(int blocked);
/* A fork's child starts with no pending signal and no thread in sigwait. */
void rt_signals_atfork_child(void);
/* The kernel keeps the mask across an exec, and pending signals too: the
 * program's view of the checkpoint signal is made real for the exec (its
 * pending ones queued for real if requeue), and virtual again by the new
 * image's runtime at start (rt_signals_adopt_mask). Returns the real mask
 * to put back when the exec failed or, for posix_spawn, is done. */
uint64_t rt_signals_before_exec(bool requeue);
void rt_signals_after_exec(uint64_t mask);
void rt_signals_adopt_mask(void);
long rt_send_ckpt_signal(pid_t tid);
enum rt_sig_tag rt_sig_tag(const siginfo_t *si);
/* threads.c: the checkpoint signal's handler, also called by a sigwait()
 * that took the checkpoint's signal instead of its handler. */
void rt_sigckpt_handler(int sig, siginfo_t *si, void *uc);
/* Has the checkpoint signalled this thread and not yet seen it stop? */
bool rt_thread_ckpt_requested(void);
int rt_signals_capture(char *err, size_t errsize);
int rt_signals_restore(void);
void rt_signals_rearm_timers(void);

/* procstate.c */
int rt_proc_capture(struct img_process *p, char *exe, size_t exesize, char *cwd, size_t cwdsize,
                    uint8_t *auxv, size_t *auxv_len, char *err, size_t errsize);
int rt_proc_restore(void);

/* fd.c: descriptors through a checkpoint (phase by phase) and a restart */
int rt_fds_record_external(void);
int rt_fds_scan(char *err, size_t errsize);        /* SUSPEND: list, classify */
int rt_fds_elect(char *err, size_t errsize);       /* after GO(SUSPEND) */
int rt_fds_resolve(char *err, size_t errsize);     /* after GO(ELECT): leaders, drain */
void rt_fds_after_drain(void);                     /* after GO(DRAIN) */
void rt_fds_abandon(void);                         /* checkpoint given up: undo drains */
int rt_fds_capture(char *err, size_t errsize);     /* CAPTURE */
int rt_fds_refill(char *err, size_t errsize);      /* REFILL */
int rt_fds_restore(char *err, size_t errsize);     /* restart: RST_RESTORE */
int rt_fds_connect(char *err, size_t errsize);     /* restart: RST_CONNECT (waits for GO) */
int rt_fds_rst_refill(char *err, size_t errsize);  /* restart: RST_REFILL */
/* fd-pty.c: the ptys dmtcp_restart made for sessions' controlling terminals
 * (rst-abi.h): kept from the hand-off until the descriptors are back. */
struct rst_pty_fd;
void rt_premade_ptys_keep(const struct rst_pty_fd *ptys, uint32_t n);
int rt_premade_pty(uint32_t index);                /* its master, or -1 */
void rt_premade_ptys_close(void);

/* ckpt.c: the checkpoint thread's messages, with one message of pushback
 * for request/reply exchanges (KV_GET, WHO_IS) that must not swallow an
 * abort arriving meanwhile. */
int rt_recv(struct proto_msg *m, int timeout_ms);
void rt_rst_done(int phase);                       /* restart.c: PHASE_DONE of a restart phase */
void rt_unrecv(const struct proto_msg *m);
/* Send a request and wait for its reply (reply_type, match); an abort or
 * kill arriving first is handed back to rt_recv and gives -ECANCELED. */
int rt_exchange(struct proto_msg *m, uint16_t reply_type, bool (*match)(const struct proto_msg *reply, const void *arg),
                const void *arg);
/* The coordinator's key-value store of the computation, from the checkpoint
 * thread. rt_kv_get: 0, -ENOENT, -ECANCELED (an abort or kill came and is
 * handed back to rt_recv), -errno. */
int rt_kv_put(const char *key, const void *value, size_t len);
int rt_kv_get(const char *key, void *value, size_t size, size_t *len);
bool rt_fd_is_private(int fd);
int rt_fd_move_private(int fd);                    /* dup to >= RT_FD_BASE, CLOEXEC */
void rt_fd_set_private(int fd, bool on);           /* hide one of our descriptors */
void rt_fds_close_private(void);
int rt_open_quietly(const char *path, int flags);  /* open, the descriptor at once >= RT_FD_BASE */
void rt_crit_enter(_Atomic uint32_t *count);   /* ckpt.c: rt.crit or rt.app_crit */
void rt_crit_leave(_Atomic uint32_t *count);
void rt_fork_lock(void);      /* init.c: no fork while the runtime opens descriptors as the program runs */
void rt_fork_unlock(void);
ssize_t rt_read_proc(const char *path, char *buf, size_t size);   /* read_small_file under the fork lock */                   /* a forked child: close the parent runtime's */

/* mem.c */
int rt_mem_presuspend(void);
void rt_mem_share_ahead(void);                   /* under the fork lock, after rt_mem_presuspend */
int rt_mem_capture(bool cow, char *err, size_t errsize);
void rt_mem_note_madvise(int advice);
bool rt_mem_fork_advice(int advice);             /* MADV_[DONT|DO]FORK, MADV_[WIPE|KEEP]ONFORK */

/* restart.c: called in the checkpoint thread of a restored process */
void rt_restart_main(const struct proto_ckpt_begin *begin);

/* init.c */
int rt_coord_reconnect(void);
int rt_coord_addr_parse(const char *s, struct coord_addr *a);
void rt_coord_addr_format(const struct coord_addr *a, char *buf, size_t size);
void rt_new_upid(void);

/* fork.c: children join by themselves; a checkpoint waits for them. */
void rt_atfork_child(void);
int rt_wait_children(char *err, size_t errsize);          /* SUSPEND: children joined or recorded */
int rt_children_after_suspend(char *err, size_t errsize); /* after GO(SUSPEND): late zombies */

/* exec.c */
void rt_env_before_resume(void);                          /* restart, threads parked: no allocation */
void rt_env_after_restart(void);                          /* restart, threads running: malloc'd copies */
extern int (*rt_real_sigaction)(int, const struct sigaction *, struct sigaction *);

/* ckpt.c: the checkpoint thread */
int rt_ckpt_thread_start(void);
void rt_ckpt_thread_block_signals(void);

/* Logging from the runtime: "[dmtcp pid] message" on stderr, one write. */
void rt_log(int level, const char *fmt, ...) _printf_(2, 3);
#define rt_error(...) rt_log(LOG_ERR, __VA_ARGS__)
#define rt_warn(...) rt_log(LOG_WARNING, __VA_ARGS__)
#define rt_info(...) rt_log(LOG_INFO, __VA_ARGS__)
#define rt_debug(...) rt_log(LOG_DEBUG, __VA_ARGS__)

/* DMTCP_TRACE=1: timings of a checkpoint's steps on stderr. */
extern uint64_t rt_trace_t0;
#define rt_trace(what) \
        rt_debug("trace %8llu us  %s", (unsigned long long) (now_usec(CLOCK_MONOTONIC) - rt_trace_t0), (what))
