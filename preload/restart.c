/* The runtime's side of a restart. The restorer has rebuilt the address
 * space and the threads; every user thread is parked in the checkpoint
 * signal handler and this (checkpoint) thread has returned a second time
 * from its rt_ctx_save. Here: take the hand-off from the restart tool,
 * restore what is not memory (signal handlers, descriptors, cwd, limits,
 * timers), rejoin a coordinator, pass the restart phases, and let the
 * program go. A failure before the program runs ends the process with
 * DMTCP_FAIL_RC and a message: the program never runs half restored. */
#include <fcntl.h>
#include <stdarg.h>
#include <string.h>
#include <sys/mman.h>

#include "client.h"
#include "raw-syscall.h"
#include "rt.h"
#include "shm.h"
#include "util.h"


static int status_fd = -1;

static _Noreturn void restart_fail(const char *fmt, ...) _printf_(1, 2);
static _Noreturn void restart_fail(const char *fmt, ...) {
        char msg[1024];
        va_list ap;
        va_start(ap, fmt);
        log_format(msg, sizeof msg, 0, fmt, ap);
        va_end(ap);
        rt_error("restart failed: %s", msg);
        if (status_fd >= 0) {
                char line[1100];
                int n = snprintf(line, sizeof line, "E%s\n", msg);
                raw_syscall3(SYS_write, status_fd, (long) line, n);
        }
        raw_syscall1(SYS_exit_group, rt.cfg.fail_rc ? rt.cfg.fail_rc : DMTCP_DEFAULT_FAIL_RC);
        __builtin_unreachable();
}

/* Wait for PHASE_GO(phase) during a restart. */
static void wait_rst_go(int phase) {
        for (;;) {
                struct proto_msg m;
                int r = rt_recv(&m, -1);
                if (r < 0)
                        restart_fail("lost the coordinator during the restart (%s)", strerror(-r));
                if (m.type == PROTO_PHASE_GO && m.u.phase_go.phase == phase)
                        return;
                if (m.type == PROTO_KILL)
                        restart_fail("the coordinator gave up on this restart (a process of the computation did not join)");
        }
}

void rt_rst_done(int phase) {
        struct proto_msg m;
        proto_init(&m, PROTO_PHASE_DONE);
        m.u.phase_done.generation = rt.generation;
        m.u.phase_done.phase = (uint8_t) phase;
        if (proto_send(rt.coord_fd, &m) < 0)
                restart_fail("lost the coordinator during the restart");
}

void rt_restart_main(const struct proto_ckpt_begin *begin) {
        rt_thread_restore_self(&rt.ckpt_thread);
        rt_ckpt_thread_block_signals();
        rt.pid = (pid_t) raw_getpid();
        rt.ckpt_tid = (pid_t) raw_gettid();
        rt_alloc_after_restart();

        /* Take what we need from the hand-off before its memory goes away. */
        struct rst_incoming *in = rt_incoming;
        if (!in || in->magic != RST_INCOMING_MAGIC || in->version != RST_INCOMING_VERSION)
                restart_fail("the restart tool's hand-off is missing or of another version");
        status_fd = in->status_fd;
        if (status_fd >= 0)
                rt_fd_set_private(status_fd, true);
        rt.cfg.fail_rc = in->fail_rc;
        rt.cfg.coord.kind = (enum coord_kind) in->coord_kind;
        strscpy(rt.cfg.coord.host, in->coord_host, sizeof rt.cfg.coord.host);
        rt.cfg.coord.port = in->coord_port;
        strscpy(rt.cfg.coord.path, in->coord_path, sizeof rt.cfg.coord.path);
        if (in->ckptdir[0])
                strscpy(rt.cfg.ckptdir, in->ckptdir, sizeof rt.cfg.ckptdir);
        if (in->flags & RST_F_INTERVAL_SET)
                rt.cfg.interval = in->interval;
        if (in->secret[0])
                strscpy(rt.cfg.secret, in->secret, sizeof rt.cfg.secret);
        rt.image_dev = in->image_dev;
        rt.image_ino = in->image_ino;
        char gen_dir[PATH_MAX];
        strscpy(gen_dir, in->gen_dir, sizeof gen_dir);
        uint64_t boot_addr = in->bootstrap_addr, boot_len = in->bootstrap_len;
        uint64_t t_start = in->restart_start_usec;
        /* The processes of the generation restored, as its MANIFEST lists
         * them: some may have ended before they were suspended. */
        uint32_t members = in->members ? in->members : begin->members;

        /* Process state that is not memory. */
        rt_signals_restore();
        rt_proc_restore();
        char err[1024] = "";
        rt.coord_fd = -1;
        /* The files recreated for descriptors of deleted files are ours
         * until those descriptors are back. */
        uint32_t n_file_fds = MIN(in->n_file_fds, (uint32_t) RST_MAX_FILE_FDS);
        for (uint32_t i = 0; i < n_file_fds; i++)
                rt_fd_set_private(in->file_fds[i].fd, true);
        rt_premade_ptys_keep(in->ptys, MIN(in->n_ptys, (uint32_t) RST_MAX_PTYS));
        if (rt_fds_restore(err, sizeof err) < 0)
                restart_fail("%s", err);
        for (uint32_t i = 0; i < n_file_fds; i++) {
                rt_fd_set_private(in->file_fds[i].fd, false);
                raw_syscall1(SYS_close, in->file_fds[i].fd);
        }

        /* Rejoin a coordinator as a member of this checkpoint. */
        struct proto_hello h;
        memset(&h, 0, sizeof h);
        hello_fill_self(&h, PROTO_ROLE_RESTART, rt.cfg.program);
        h.pid = (uint32_t) rt.pid;
        h.generation = begin->generation;
        h.members = members;
        strscpy(h.upid, rt.cfg.upid, sizeof h.upid);
        strscpy(h.comp_id, begin->comp_id, sizeof h.comp_id);
        strscpy(h.ckptdir, gen_dir, sizeof h.ckptdir);
        strscpy(h.secret, rt.cfg.secret, sizeof h.secret);
        strscpy(h.job, rt.cfg.job, sizeof h.job);
        h.interval = rt.cfg.interval;
        char reason[256] = "", where[300];
        int fd = coord_join(&rt.cfg.coord, &h, 30000, NULL, reason, sizeof reason);
        if (fd < 0) {
                coord_addr_describe(&rt.cfg.coord, where, sizeof where);
                if (reason[0])
                        restart_fail("the coordinator at %s refused the restart: %s", where, reason);
                restart_fail("cannot reach the coordinator at %s: %s", where, strerror(-fd));
        }
        rt.coord_fd = rt_fd_move_private(fd);
        strscpy(rt.cfg.comp_id, begin->comp_id, sizeof rt.cfg.comp_id);

        wait_rst_go(PROTO_PH_RST_JOIN);
        rt_rst_done(PROTO_PH_RST_RESTORE);
        wait_rst_go(PROTO_PH_RST_RESTORE);
        /* Descriptors shared with other processes; DONE(RST_CONNECT) is
         * sent from there when ours are all in, then it serves the others
         * until GO(RST_CONNECT). */
        if (rt_fds_connect(err, sizeof err) < 0)
                restart_fail("%s", err);
        if (rt_fds_rst_refill(err, sizeof err) < 0 || rt_shared_rst_refill(err, sizeof err) < 0)
                restart_fail("%s", err);
        rt_premade_ptys_close();
        rt_rst_done(PROTO_PH_RST_REFILL);
        wait_rst_go(PROTO_PH_RST_REFILL);

        /* Unmap the restorer only once every thread has left its code: a
         * thread counts itself when it is back in the checkpoint handler. */
        uint32_t expect = 0;
        for (uint32_t i = 0; i < rt.n_threads; i++)
                if (atomic_load(&rt_threads[i].state) == RT_TS_SUSPENDED)
                        expect++;
        uint64_t t_wait = now_usec(CLOCK_MONOTONIC);
        for (;;) {
                uint32_t got = atomic_load(&rt.rst_arrived);
                if (got >= expect)
                        break;
                if (now_usec(CLOCK_MONOTONIC) - t_wait > 30000000)
                        restart_fail("only %u of %u threads came back", got, expect);
                struct timespec ts = { 0, 10 * 1000 * 1000 };
                raw_futex_wait((uint32_t *) &rt.rst_arrived, got, &ts);
        }
        rt_incoming = NULL;
        if (boot_addr && boot_len)
                raw_syscall2(SYS_munmap, (long) boot_addr, (long) boot_len);

        rt_signals_rearm_timers();
        if (status_fd >= 0) {
                char line[64];
                int n = snprintf(line, sizeof line, "R%llu\n",
                                 (unsigned long long) (t_start ? now_usec(CLOCK_MONOTONIC) - t_start : 0));
                raw_syscall3(SYS_write, status_fd, (long) line, n);
                raw_syscall1(SYS_close, status_fd);
                rt_fd_set_private(status_fd, false);
                status_fd = -1;
        }
        rt.restart_count++;
        rt_env_before_resume();
        rt_threads_resume();
        rt_env_after_restart();
        rt_rst_done(PROTO_PH_RST_RESUME);
}
