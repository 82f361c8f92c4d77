/* The checkpoint thread: talks to the coordinator and walks a checkpoint
 * through its phases (docs/protocol.md):
 *
 *   CKPT_BEGIN -> suspend threads -> SUSPEND done -> GO
 *              -> drain in-flight data -> DRAIN done -> GO
 *              -> capture state, save resume point, fork snapshot -> CAPTURE done -> GO
 *              -> (copy-on-write: resume the program now)
 *              -> image durable -> WRITE done -> COMMITTED or ABORT
 *              -> (otherwise resume now; --kcheckpoint: end the process) -> RESUME done
 *
 * Any failure is reported with a message naming this process and what went
 * wrong; the coordinator then aborts the checkpoint everywhere and the
 * program keeps running. */
#include <dlfcn.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>

#include "client.h"
#include "raw-syscall.h"
#include "rt.h"
#include "shm.h"
#include "util.h"
#include "write.h"


struct rt_capture *rt_cap;
static int (*real_pthread_create)(pthread_t *, const pthread_attr_t *, void *(*)(void *), void *);

enum ckpt_outcome { CK_COMMITTED, CK_ABORTED };

struct ckpt_run {
        struct proto_ckpt_begin begin;
        bool suspended;         /* user threads are parked */
        bool resumed_early;     /* copy-on-write: released after CAPTURE */
        pid_t writer;           /* snapshot child */
        int writer_pipe;        /* its result */
        int release_fd;         /* write a byte: it may report WRITE */
        char image_name[PATH_MAX];
};

static int send_done(uint64_t gen, int phase, int status, const char *detail, uint64_t bytes, uint32_t crc,
                     uint64_t usec) {
        if (rt.coord_fd < 0)
                return -ENOTCONN;
        struct proto_msg m;
        proto_init(&m, PROTO_PHASE_DONE);
        m.u.phase_done.generation = gen;
        m.u.phase_done.phase = (uint8_t) phase;
        m.u.phase_done.status = status;
        m.u.phase_done.bytes = bytes;
        m.u.phase_done.crc = crc;
        m.u.phase_done.duration_usec = usec;
        if (detail) {
                strscpy(m.u.phase_done.detail, detail, sizeof m.u.phase_done.detail);
                /* The protocol refuses control characters in strings. */
                for (char *p = m.u.phase_done.detail; *p; p++)
                        if ((unsigned char) *p < 0x20 || *p == 0x7f)
                                *p = ' ';
        }
        return proto_send(rt.coord_fd, &m);
}

/* One message of pushback: an exchange (KV_GET, WHO_IS) that meets an abort
 * or a kill hands it back, so the phase loop sees it. */
static struct proto_msg pushed;
static bool have_pushed;

int rt_recv(struct proto_msg *m, int timeout_ms) {
        if (have_pushed) {
                *m = pushed;
                have_pushed = false;
                return 0;
        }
        if (rt.coord_fd < 0)
                return -ENOTCONN;
        return proto_recv(rt.coord_fd, m, timeout_ms);
}

void rt_unrecv(const struct proto_msg *m) {
        pushed = *m;
        have_pushed = true;
}

int rt_kv_put(const char *key, const void *value, size_t len) {
        if (rt.coord_fd < 0)
                return -ENOTCONN;
        if (len > PROTO_VALUE_MAX || strlen(key) > PROTO_KEY_MAX)
                return -E2BIG;
        struct proto_msg m;
        proto_init(&m, PROTO_KV_PUT);
        strscpy(m.u.kv.key, key, sizeof m.u.kv.key);
        m.u.kv.value_len = (uint32_t) len;
        memcpy(m.u.kv.value, value, len);
        return proto_send(rt.coord_fd, &m);
}

int rt_exchange(struct proto_msg *m, uint16_t reply_type, bool (*match)(const struct proto_msg *reply, const void *arg),
                const void *arg) {
        if (rt.coord_fd < 0)
                return -ENOTCONN;
        int r = proto_send(rt.coord_fd, m);
        if (r < 0)
                return r;
        for (;;) {
                r = rt_recv(m, 30000);
                if (r < 0)
                        return r;
                if (m->type == reply_type && match(m, arg))
                        return 0;
                if ((m->type == PROTO_CKPT_ABORT && m->u.ckpt_abort.generation == rt.generation) ||
                    m->type == PROTO_KILL || (m->type == PROTO_PHASE_GO && m->u.phase_go.phase >= PROTO_PH_RST_JOIN)) {
                        rt_unrecv(m);
                        return -ECANCELED;
                }
        }
}

static bool kv_match(const struct proto_msg *reply, const void *key) {
        return !strcmp(reply->u.kv.key, key);
}

int rt_kv_get(const char *key, void *value, size_t size, size_t *len) {
        struct proto_msg m;
        proto_init(&m, PROTO_KV_GET);
        strscpy(m.u.kv.key, key, sizeof m.u.kv.key);
        int r = rt_exchange(&m, PROTO_KV_VALUE, kv_match, key);
        if (r < 0)
                return r;
        if (!m.u.kv.found)
                return -ENOENT;
        *len = MIN((size_t) m.u.kv.value_len, size);
        memcpy(value, m.u.kv.value, *len);
        return 0;
}

/* Wait for PHASE_GO(phase) of this generation. Returns 0, or -ECANCELED on
 * CKPT_ABORT, or -ECONNRESET when the coordinator is gone. */
static int wait_go(const struct ckpt_run *c, int phase) {
        for (;;) {
                struct proto_msg m;
                int r = rt_recv(&m, -1);
                if (r < 0)
                        return -ECONNRESET;
                if (m.type == PROTO_PHASE_GO && m.u.phase_go.generation == c->begin.generation &&
                    m.u.phase_go.phase == phase)
                        return 0;
                if (m.type == PROTO_CKPT_ABORT && m.u.ckpt_abort.generation == c->begin.generation) {
                        rt_info("checkpoint %llu aborted: %s", (unsigned long long) c->begin.generation,
                                m.u.ckpt_abort.reason);
                        return -ECANCELED;
                }
                if (m.type == PROTO_KILL)
                        return -EINTR;
        }
}

/* Program name for messages: "process 123 (prog)". */
static void fail_detail(char *buf, size_t size, const char *what) {
        snprintf(buf, size, "process %d (%s) on %s: %s", (int) rt.pid, rt.cfg.program, host_name(), what);
}

static void resume_program(struct ckpt_run *c) {
        rt_fds_abandon();       /* an abort after the drain: data back first */
        rt_fds_after_drain();   /* owners back, if an abort came before */
        if (c->suspended) {
                rt_threads_resume();
                c->suspended = false;
        }
}

static void stop_writer(struct ckpt_run *c) {
        if (c->writer > 0) {
                raw_syscall2(SYS_kill, c->writer, SIGKILL);
                int st;
                while (waitpid(c->writer, &st, __WCLONE) < 0 && errno == EINTR)
                        ;
                c->writer = 0;
        }
        rt_fd_set_private(c->writer_pipe, false);
        c->writer_pipe = safe_close(c->writer_pipe);
        rt_fd_set_private(c->release_fd, false);
        c->release_fd = safe_close(c->release_fd);
}

/* End the process now, without letting any program code run: the stop
 * checkpoint (--kcheckpoint) is the last thing it does. SIGTERM, which a
 * service manager counts as a clean stop. */
static _Noreturn void die_after_checkpoint(void) {
        struct sigaction dfl = { .sa_handler = SIG_DFL };
        rt_real_sigaction(SIGTERM, &dfl, NULL);
        uint64_t unblock = 1ULL << (SIGTERM - 1);
        raw_syscall4(SYS_rt_sigprocmask, SIG_UNBLOCK, (long) &unblock, 0, 8);
        raw_syscall3(SYS_tgkill, rt.pid, raw_gettid(), SIGTERM);
        for (;;)
                raw_syscall0(SYS_pause);
}

/* Abandon the checkpoint: the program goes on. */
static void abandon(struct ckpt_run *c, int phase, int r, const char *what) {
        char detail[PROTO_PATH_MAX];
        fail_detail(detail, sizeof detail, what);
        rt_error("checkpoint %llu failed: %s", (unsigned long long) c->begin.generation, what);
        stop_writer(c);
        /* Tell the coordinator first: putting drained data back may need the
         * other processes, which learn of the abort from it. */
        send_done(c->begin.generation, phase, r < 0 ? r : -EIO, detail, 0, 0, 0);
        resume_program(c);
        /* Wait for the coordinator's ABORT so the next message we read belongs
         * to the next checkpoint, then say we run. */
        for (;;) {
                struct proto_msg m;
                if (rt_recv(&m, 30000) < 0)
                        break;
                if (m.type == PROTO_CKPT_ABORT || m.type == PROTO_CKPT_COMMITTED)
                        break;
        }
        send_done(c->begin.generation, PROTO_PH_RESUME, 0, NULL, 0, 0, 0);
}

static void collect_threads(struct img_thread **out, uint32_t *n_out) {
        uint32_t n = 1;
        for (uint32_t i = 0; i < rt.n_threads; i++)
                if (atomic_load(&rt_threads[i].state) == RT_TS_SUSPENDED)
                        n++;
        struct img_thread *t = rt_alloc(RT_ARENA_SCRATCH, n * sizeof *t);
        uint32_t k = 0;
        if (!t) {
                *out = NULL;
                *n_out = 0;
                return;
        }
        for (uint32_t i = 0; i < rt.n_threads; i++) {
                struct rt_thread *th = &rt_threads[i];
                if (atomic_load(&th->state) != RT_TS_SUSPENDED)
                        continue;
                th->info.ctx_addr = (uint64_t) &th->ctx;
                t[k++] = th->info;
        }
        rt.ckpt_thread.info.ctx_addr = (uint64_t) &rt.ckpt_thread.ctx;
        t[k++] = rt.ckpt_thread.info;
        *out = t;
        *n_out = k;
}

static int open_image(struct ckpt_run *c, char *err, size_t errsize) {
        char prog[PROTO_NAME_MAX + 1];
        strscpy(prog, rt.cfg.program, sizeof prog);
        sanitize_filename(prog);
        snprintf(c->image_name, sizeof c->image_name, "ckpt_%s_%s.dmtcp", prog, rt.cfg.upid);
        char path[PATH_MAX * 2];
        snprintf(path, sizeof path, "%s/%s", c->begin.dir, c->image_name);
        int fd = (int) raw_syscall4(SYS_openat, AT_FDCWD, (long) path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (fd < 0)
                snprintf(err, errsize, "cannot create image %s: %s", path, strerror(-fd));
        return fd;
}

/* The snapshot child: a raw clone (not fork(3), whose atfork handlers take
 * malloc's locks that a frozen thread may hold) with no exit signal, so the
 * program gets no SIGCHLD and its wait(-1) never sees it. It keeps only the
 * image, the result and release pipes and the coordinator connection open.
 *
 * Once the image is written and the parent has passed the last barrier
 * before the program resumes (a byte on the release pipe), the writer
 * reports PHASE_DONE(WRITE) itself, on the parent's connection: a short
 * process the copy-on-write checkpoint let go may have ended meanwhile, and
 * its image is whole all the same. The writer outlives its parent for
 * that; it ends without reporting if the parent is gone before the
 * release. */
struct writer_args {
        int img_fd, res_fd, release_fd;
        const struct wr_request *req;
        const char *image_name;
        uint64_t t_start;
};

static _Noreturn void writer_main(const struct writer_args *a) {
        if (raw_syscall0(SYS_getppid) != rt.pid)
                raw_syscall1(SYS_exit_group, 1);
        /* stderr stays only for DMTCP_TRACE: a reader waiting for EOF on the
         * program's stderr must not wait for us. */
        int keep[4] = { a->img_fd, a->res_fd, a->release_fd, rt.coord_fd };
        for (int i = 1; i < 4; i++)
                for (int k = i; k > 0 && keep[k] < keep[k - 1]; k--) {
                        int t = keep[k];
                        keep[k] = keep[k - 1];
                        keep[k - 1] = t;
                }
        int from = log_get_max_level() >= LOG_DEBUG ? 3 : 0;
        for (int i = 0; i < 4; i++) {
                if (keep[i] < 0)
                        continue;
                if (keep[i] > from)
                        raw_syscall3(SYS_close_range, from, (long) keep[i] - 1, 0);
                from = MAX(from, keep[i] + 1);
        }
        raw_syscall3(SYS_close_range, from, ~0U, 0);
        struct sigaction ign = { .sa_handler = SIG_IGN };
        rt_real_sigaction(SIGPIPE, &ign, NULL);

        struct wr_result res;
        int r = rt_write_image(a->req, &res);
        if (r < 0 && !res.err[0])
                snprintf(res.err, sizeof res.err, "%s", strerror(-r));
        char b;
        long k;
        while ((k = raw_syscall3(SYS_read, a->release_fd, (long) &b, 1)) == -EINTR)
                ;
        res.reported = false;
        if (k == 1) {
                char detail[PROTO_PATH_MAX];
                if (r < 0)
                        fail_detail(detail, sizeof detail, res.err);
                res.reported = send_done(a->req->generation, PROTO_PH_WRITE, r < 0 ? r : 0,
                                         r < 0 ? detail : a->image_name, res.size, res.crc,
                                         now_usec(CLOCK_MONOTONIC) - a->t_start) == 0;
        }
        raw_syscall3(SYS_write, a->res_fd, (long) &res, sizeof res);
        raw_syscall1(SYS_exit_group, r < 0 ? 1 : 0);
        __builtin_unreachable();
}

static pid_t spawn_writer(const struct writer_args *a) {
        long pid = raw_syscall5(SYS_clone, 0 /* no exit signal */, 0, 0, 0, 0);
        if (pid != 0)
                return (pid_t) pid;
        writer_main(a);
}

/* Let the writer report: the program may run (and end) from now on. */
static void release_writer(struct ckpt_run *c) {
        if (c->release_fd >= 0) {
                char b = 1;
                raw_syscall3(SYS_write, c->release_fd, (long) &b, 1);
                rt_fd_set_private(c->release_fd, false);
                c->release_fd = safe_close(c->release_fd);
        }
}

/* Wait for the snapshot child's result, watching for an abort. The writer
 * reports WRITE itself, so the verdict may come before its result does:
 * it is kept for the loop that waits for it. */
static int wait_writer(struct ckpt_run *c, struct wr_result *res) {
        bool verdict_held = false;
        for (;;) {
                struct pollfd p[2] = { { c->writer_pipe, POLLIN, 0 }, { rt.coord_fd, POLLIN, 0 } };
                bool pushed_msg = have_pushed && !verdict_held;
                int n = pushed_msg ? 0 : poll(p, verdict_held ? 1 : 2, -1);
                if (pushed_msg)
                        p[0].revents = 0, p[1].revents = POLLIN;
                if (n < 0 && errno == EINTR)
                        continue;
                if (p[0].revents) {
                        ssize_t k = read(c->writer_pipe, res, sizeof *res);
                        int st;
                        while (waitpid(c->writer, &st, __WCLONE) < 0 && errno == EINTR)
                                ;
                        c->writer = 0;
                        rt_fd_set_private(c->writer_pipe, false);
                        c->writer_pipe = safe_close(c->writer_pipe);
                        if (k != (ssize_t) sizeof *res) {
                                snprintf(res->err, sizeof res->err, "the snapshot writer died (%s)",
                                         WIFSIGNALED(st) ? strsignal(WTERMSIG(st)) : "no result");
                                return -EIO;
                        }
                        return res->err[0] ? -EIO : 0;
                }
                if (p[1].revents) {
                        struct proto_msg m;
                        if (rt_recv(&m, 1000) < 0)
                                return -ECONNRESET;
                        if (m.type == PROTO_CKPT_COMMITTED && m.u.ckpt_committed.generation == c->begin.generation) {
                                rt_unrecv(&m);
                                verdict_held = true;
                                continue;
                        }
                        if (m.type == PROTO_CKPT_ABORT && m.u.ckpt_abort.generation == c->begin.generation)
                                return -ECANCELED;
                        if (m.type == PROTO_KILL)
                                return -EINTR;
                }
        }
}

static void do_checkpoint_inner(const struct proto_ckpt_begin *begin) {
        struct ckpt_run c = { .begin = *begin, .writer_pipe = -1, .release_fd = -1 };
        char err[PROTO_TEXT_MAX];
        const uint64_t gen = begin->generation;
        const bool kill_after = begin->flags & PROTO_CKPT_KILL_AFTER;
        const bool cow = rt.cfg.cow;
        uint64_t t0 = now_usec(CLOCK_MONOTONIC);
        rt_trace_t0 = t0;
        int r;
        err[0] = 0;
        rt.generation = gen;
        rt.members = begin->members;

        rt_arena_reset(RT_ARENA_STATE);
        rt_arena_reset(RT_ARENA_SCRATCH);
        rt_cap = rt_alloc(RT_ARENA_STATE, sizeof *rt_cap);
        struct rt_file *files = rt_alloc(RT_ARENA_SCRATCH, 65536 * sizeof(struct rt_file));
        if (!rt_cap || !files)
                return abandon(&c, PROTO_PH_SUSPEND, -ENOMEM, "out of memory");
        memset(rt_cap, 0, sizeof *rt_cap);
        rt_cap->files = files;
        rt_cap->pending = rt_alloc(RT_ARENA_STATE, RT_MAX_PROCESS_PENDING * sizeof(struct rt_pending));
        if (!rt_cap->pending)
                return abandon(&c, PROTO_PH_SUSPEND, -ENOMEM, "out of memory");

        /* While the program still runs: smaps flags and library checksums. */
        rt_fork_lock();
        r = rt_mem_presuspend();
        if (r == 0 && cow)
                rt_mem_share_ahead();
        rt_fork_unlock();
        if (r < 0)
                return abandon(&c, PROTO_PH_SUSPEND, r, "cannot read the memory map");

        rt_trace("presuspend done");
        r = rt_threads_suspend(err, sizeof err);
        c.suspended = true;
        if (r < 0)
                return abandon(&c, PROTO_PH_SUSPEND, r, err);
        r = rt_wait_children(err, sizeof err);
        if (r == -ECANCELED)
                goto aborted_pushed;
        if (r == -ECONNRESET)
                goto aborted;
        if (r < 0)
                return abandon(&c, PROTO_PH_SUSPEND, r, err);
        if ((r = rt_fds_scan(err, sizeof err)) < 0)
                return abandon(&c, PROTO_PH_SUSPEND, r, err);
        uint64_t t_suspended = now_usec(CLOCK_MONOTONIC);
        rt_trace("threads suspended");
        send_done(gen, PROTO_PH_SUSPEND, 0, NULL, 0, 0, t_suspended - t0);
        if ((r = wait_go(&c, PROTO_PH_SUSPEND)) < 0)
                goto aborted;
        r = rt_children_after_suspend(err, sizeof err);
        if (r == -ECANCELED)
                goto aborted_pushed;
        if (r < 0)
                return abandon(&c, PROTO_PH_ELECT, r, err);

        /* Descriptors shared between processes: elect who saves each. */
        if ((r = rt_fds_elect(err, sizeof err)) < 0 || (r = rt_shared_elect(err, sizeof err)) < 0)
                return abandon(&c, PROTO_PH_ELECT, r, err);
        send_done(gen, PROTO_PH_ELECT, 0, NULL, 0, 0, 0);
        if ((r = wait_go(&c, PROTO_PH_ELECT)) < 0)
                goto aborted;
        r = rt_fds_resolve(err, sizeof err);
        if (r == 0)
                r = rt_shared_resolve(err, sizeof err);
        if (r == -ECANCELED)
                goto aborted_pushed;
        if (r < 0)
                return abandon(&c, PROTO_PH_DRAIN, r, err);
        send_done(gen, PROTO_PH_DRAIN, 0, NULL, 0, 0, 0);
        if ((r = wait_go(&c, PROTO_PH_DRAIN)) < 0)
                goto aborted;
        rt_fds_after_drain();

        rt_trace("drain released");
        /* Capture. */
        r = rt_fds_capture(err, sizeof err);
        if (r == 0)
                r = rt_shared_capture(err, sizeof err);
        if (r == -ECANCELED)
                goto aborted_pushed;
        if (r < 0 || (r = rt_signals_capture(err, sizeof err)) < 0 ||
            (r = rt_proc_capture(&rt_cap->proc, rt_cap->exe, sizeof rt_cap->exe, rt_cap->cwd, sizeof rt_cap->cwd,
                                 rt_cap->auxv, &rt_cap->auxv_len, err, sizeof err)) < 0 ||
            (r = rt_mem_capture(cow, err, sizeof err)) < 0)
                return abandon(&c, PROTO_PH_CAPTURE, r, err[0] ? err : "cannot capture process state");

        rt_trace("state captured");
        struct rt_thread *self = &rt.ckpt_thread;
        self->tid = (uint32_t) rt.ckpt_tid;
        rt_thread_capture_self(self);
        self->info.sigmask = ~0ULL & ~(1ULL << 31) & ~(1ULL << 32);
        struct img_thread *threads;
        uint32_t n_threads;
        collect_threads(&threads, &n_threads);
        if (!threads)
                return abandon(&c, PROTO_PH_CAPTURE, -ENOMEM, "out of memory");

        int img_fd = open_image(&c, err, sizeof err);
        if (img_fd < 0)
                return abandon(&c, PROTO_PH_CAPTURE, img_fd, err);
        struct wr_request req = {
                .fd = img_fd, .cap = rt_cap, .threads = threads, .n_threads = n_threads,
                .gzip = rt.cfg.gzip, .generation = gen, .ckpt_time_usec = now_usec(CLOCK_REALTIME),
                .members = begin->members, .pid = rt.pid, .ppid = getppid(), .pgid = getpgrp(), .sid = getsid(0),
                .comp_id = begin->comp_id,
        };

        /* The resume point of this thread in a restored process. */
        atomic_store(&rt.rst_arrived, 0);
        if (rt_ctx_save(&self->ctx) != 0) {
                rt_restart_main(&c.begin);
                return;
        }

        if (cow) {
                int p[2], rel[2];
                if (pipe2(p, O_CLOEXEC) < 0) {
                        raw_syscall1(SYS_close, img_fd);
                        return abandon(&c, PROTO_PH_CAPTURE, -errno, "cannot create a pipe");
                }
                if (pipe2(rel, O_CLOEXEC) < 0) {
                        raw_syscall1(SYS_close, img_fd);
                        raw_syscall1(SYS_close, p[0]);
                        raw_syscall1(SYS_close, p[1]);
                        return abandon(&c, PROTO_PH_CAPTURE, -errno, "cannot create a pipe");
                }
                struct writer_args wa = { img_fd, p[1], rel[0], &req, c.image_name, now_usec(CLOCK_MONOTONIC) };
                c.writer = spawn_writer(&wa);
                raw_syscall1(SYS_close, p[1]);
                raw_syscall1(SYS_close, rel[0]);
                raw_syscall1(SYS_close, img_fd);
                /* Out of the program's way: it runs while we wait on these,
                 * and bash, for one, closes low descriptors it believes are
                 * its own. */
                c.writer_pipe = rt_fd_move_private(p[0]);
                c.release_fd = rt_fd_move_private(rel[1]);
                rt_fd_set_private(c.writer_pipe, true);
                rt_fd_set_private(c.release_fd, true);
                if (c.writer < 0) {
                        r = c.writer;
                        c.writer = 0;
                        return abandon(&c, PROTO_PH_CAPTURE, r, "cannot start the snapshot writer");
                }
        }
        uint64_t t_captured = now_usec(CLOCK_MONOTONIC);
        rt_trace("snapshot forked");
        send_done(gen, PROTO_PH_CAPTURE, 0, NULL, 0, 0, t_captured - t_suspended);
        if ((r = wait_go(&c, PROTO_PH_CAPTURE)) < 0)
                goto aborted;
        if ((r = rt_fds_refill(err, sizeof err)) < 0)
                return abandon(&c, PROTO_PH_REFILL, r, err);
        send_done(gen, PROTO_PH_REFILL, 0, NULL, 0, 0, 0);
        if ((r = wait_go(&c, PROTO_PH_REFILL)) < 0)
                goto aborted;

        struct wr_result res = { 0 };
        if (cow) {
                release_writer(&c);
                if (!kill_after) {
                        resume_program(&c);
                        c.resumed_early = true;
                        rt_trace("program resumed");
                }
                r = wait_writer(&c, &res);
                if (r == -ECANCELED || r == -ECONNRESET || r == -EINTR)
                        goto aborted;
        } else {
                r = rt_write_image(&req, &res);
                raw_syscall1(SYS_close, img_fd);
        }
        rt_copies_release();
        if (r < 0 && res.reported) {
                /* The writer said so already: wait for the abort. */
                rt_error("checkpoint %llu failed: %s", (unsigned long long) gen, res.err);
                r = wait_go(&c, -1);
                goto aborted;
        }
        if (r < 0)
                return abandon(&c, PROTO_PH_WRITE, r, res.err);
        rt_trace("image written");
        if (!res.reported)
                send_done(gen, PROTO_PH_WRITE, 0, c.image_name, res.size, res.crc,
                          now_usec(CLOCK_MONOTONIC) - t_captured);

        /* Wait for the verdict. */
        for (;;) {
                struct proto_msg m;
                r = rt_recv(&m, -1);
                if (r < 0) {
                        r = -ECONNRESET;
                        goto aborted;
                }
                if (m.type == PROTO_CKPT_COMMITTED && m.u.ckpt_committed.generation == gen)
                        break;
                if (m.type == PROTO_CKPT_ABORT && m.u.ckpt_abort.generation == gen) {
                        r = -ECANCELED;
                        goto aborted;
                }
                if (m.type == PROTO_KILL) {
                        r = -EINTR;
                        goto aborted;
                }
        }
        rt.ckpt_count++;
        rt_trace("committed");
        if (kill_after)
                die_after_checkpoint();
        resume_program(&c);
        send_done(gen, PROTO_PH_RESUME, 0, NULL, 0, 0, 0);
        return;

aborted_pushed:
        /* An exchange met the abort (or the kill) and handed it back. */
        r = wait_go(&c, -1);
aborted:
        stop_writer(&c);
        resume_program(&c);
        if (r == -ECONNRESET) {
                rt_warn("lost the coordinator during checkpoint %llu; the program continues",
                        (unsigned long long) gen);
                rt.coord_fd = safe_close(rt.coord_fd);
                have_pushed = false;
                return;
        }
        if (r == -EINTR) {
                /* Killed by the coordinator: let the main loop handle it. */
                raw_syscall2(SYS_kill, rt.pid, SIGTERM);
                return;
        }
        send_done(gen, PROTO_PH_RESUME, 0, NULL, 0, 0, 0);
}

/* The checkpoint thread takes no signal but glibc's SIGCANCEL and SIGSETXID
 * (32, 33): blocking SIGSETXID would hang a setuid() in another thread. */
void rt_ckpt_thread_block_signals(void) {
        uint64_t mask = ~0ULL & ~(1ULL << 31) & ~(1ULL << 32);
        raw_syscall4(SYS_rt_sigprocmask, SIG_SETMASK, (long) &mask, 0, 8);
}

/* Critical sections no checkpoint of this process may cut: an exec being
 * announced (rt.crit, exec.c), a section of the program between
 * dmtcp_disable_ckpt and dmtcp_enable_ckpt (rt.app_crit, api.c). Entering
 * waits for a checkpoint under way to end; a checkpoint waits for the
 * sections to be left. */
void rt_crit_enter(_Atomic uint32_t *count) {
        for (;;) {
                uint32_t a = atomic_load(&rt.ckpt_active);
                if (a) {
                        struct timespec ts = { 0, 50 * 1000 * 1000 };
                        raw_futex_wait((uint32_t *) &rt.ckpt_active, a, &ts);
                        continue;
                }
                atomic_fetch_add(count, 1);
                if (!atomic_load(&rt.ckpt_active))
                        return;
                atomic_fetch_sub(count, 1);
                raw_futex_wake((uint32_t *) count, 1);
        }
}

void rt_crit_leave(_Atomic uint32_t *count) {
        atomic_fetch_sub(count, 1);
        raw_futex_wake((uint32_t *) count, 1);
}

/* Wait for threads to leave the critical sections. An exec is given 10 s;
 * the program's own sections as long as they last (it asked for that). */
static void wait_critical_sections(void) {
        uint64_t t0 = now_usec(CLOCK_MONOTONIC);
        bool warned_exec = false, warned_app = false;
        for (;;) {
                uint32_t c = atomic_load(&rt.crit), a = atomic_load(&rt.app_crit);
                uint64_t waited = now_usec(CLOCK_MONOTONIC) - t0;
                if (c && waited > 10000000 && !warned_exec) {
                        rt_warn("checkpoint: %u thread(s) still starting a program after 10 s; going on", c);
                        warned_exec = true;
                }
                if (a && waited > 10000000 && !warned_app) {
                        rt_warn("checkpoint: waiting for the program, which disabled checkpoints "
                                "(dmtcp_disable_ckpt) in %u thread(s)", a);
                        warned_app = true;
                }
                if ((c == 0 || warned_exec) && a == 0)
                        return;
                struct timespec ts = { 0, 10 * 1000 * 1000 };
                raw_futex_wait((uint32_t *) (a ? &rt.app_crit : &rt.crit), a ? a : c, &ts);
        }
}

/* While a checkpoint of this process runs, no exec starts (exec.c), and a
 * checkpoint waits for an exec being announced. */
static void do_checkpoint(const struct proto_ckpt_begin *begin) {
        atomic_store(&rt.ckpt_active, 1);
        wait_critical_sections();
        do_checkpoint_inner(begin);
        atomic_store(&rt.ckpt_active, 0);
        raw_futex_wake((uint32_t *) &rt.ckpt_active, INT32_MAX);
}

static void do_kill(uint32_t grace_ms) {
        raw_syscall2(SYS_kill, rt.pid, SIGTERM);
        struct timespec ts = { grace_ms / 1000, (long) (grace_ms % 1000) * 1000000L };
        while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
                ;
        raw_syscall2(SYS_kill, rt.pid, SIGKILL);
}

static void *ckpt_thread_main(void *arg) {
        rt_ckpt_thread_block_signals();
        rt.ckpt_tid = (pid_t) raw_gettid();
        raw_syscall2(SYS_prctl, PR_SET_NAME, (long) "dmtcp:ckpt");
        raw_futex_wake((uint32_t *) &rt.ckpt_tid, 1);
        /* A forked child starts here without a connection: it joins at once;
         * after a lost connection, retries back off. */
        uint64_t backoff_ms = 0;
        for (;;) {
                if (rt.coord_fd < 0) {
                        if (backoff_ms) {
                                struct timespec ts = { (time_t) (backoff_ms / 1000), (long) (backoff_ms % 1000) * 1000000L };
                                nanosleep(&ts, NULL);
                        }
                        if (rt_coord_reconnect() < 0) {
                                backoff_ms = MIN(MAX(backoff_ms * 2, (uint64_t) 500), (uint64_t) 10000);
                                continue;
                        }
                        if (backoff_ms)
                                rt_info("rejoined the coordinator");
                        backoff_ms = 0;
                }
                struct proto_msg m;
                int r = rt_recv(&m, -1);
                if (r < 0) {
                        rt_warn("lost the coordinator (%s); the program continues and will rejoin one",
                                strerror(-r));
                        rt.coord_fd = safe_close(rt.coord_fd);
                        have_pushed = false;
                        backoff_ms = 500;
                        continue;
                }
                switch (m.type) {
                case PROTO_CKPT_BEGIN:
                        do_checkpoint(&m.u.ckpt_begin);
                        break;
                case PROTO_KILL:
                        do_kill(m.u.kill.grace_ms);
                        break;
                default:
                        break;  /* stale phase messages of an abandoned checkpoint */
                }
        }
        return NULL;
}

int rt_ckpt_thread_start(void) {
        real_pthread_create = dlsym(RTLD_NEXT, "pthread_create");
        if (!real_pthread_create)
                return -ENOSYS;
        pthread_t th;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        pthread_attr_setstacksize(&attr, 1 << 20);
        int r = real_pthread_create(&th, &attr, ckpt_thread_main, NULL);
        pthread_attr_destroy(&attr);
        if (r != 0)
                return -r;
        while (atomic_load((_Atomic pid_t *) &rt.ckpt_tid) == 0)
                raw_futex_wait((uint32_t *) &rt.ckpt_tid, 0, NULL);
        return 0;
}
