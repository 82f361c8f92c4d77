/* The application interface (include/dmtcp.h): what a program that knows
 * about dmtcp may ask of its runtime.
 *
 * dmtcp_checkpoint() asks the coordinator for a blocking checkpoint over a
 * command connection of its own, like dmtcp_command -bc, and waits for the
 * answer. The calling thread is suspended with the others while the
 * checkpoint runs, so the same call may return in two processes: in this
 * one when the coordinator answers, and in every process restarted from
 * that checkpoint, where the connection no longer exists (its descriptor
 * number may even belong to someone else by then). The wait therefore
 * polls in short steps and, before it touches the descriptor, checks with
 * the checkpoint signal blocked (under the fork lock) that no restart
 * happened in between. */
#include <errno.h>
#include <poll.h>
#include <string.h>

#include "client.h"
#include "dmtcp.h"
#include "raw-syscall.h"
#include "rt.h"
#include "util.h"

#define POLL_STEP_MS 50
#define ANSWER_WAIT_MS 5000

static __thread unsigned disabled_depth;

static bool api_usable(void) {
        /* Not in a vfork child, which shares our memory but is not us. */
        return rt.initialized && (pid_t) raw_getpid() == rt.pid;
}

_public_ int __dmtcp_api_enabled(void) {
        return api_usable() ? 1 : 0;
}

_public_ int __dmtcp_api_disable_ckpt(void) {
        if (!api_usable())
                return DMTCP_NOT_PRESENT;
        if (disabled_depth++ == 0)
                rt_crit_enter(&rt.app_crit);
        return 1;
}

_public_ int __dmtcp_api_enable_ckpt(void) {
        if (!api_usable())
                return DMTCP_NOT_PRESENT;
        if (disabled_depth == 0)
                return -EINVAL;
        if (--disabled_depth == 0)
                rt_crit_leave(&rt.app_crit);
        return 1;
}

_public_ int __dmtcp_api_checkpoint(void) {
        if (!api_usable())
                return DMTCP_NOT_PRESENT;
        if (disabled_depth)
                return -EDEADLK;        /* the checkpoint would wait for us */

        struct proto_hello h;
        memset(&h, 0, sizeof h);
        hello_fill_self(&h, PROTO_ROLE_COMMAND, "dmtcp_checkpoint");
        strscpy(h.secret, rt.cfg.secret, sizeof h.secret);
        char reason[PROTO_TEXT_MAX + 1] = "";
        struct proto_msg m;
        proto_init(&m, PROTO_COMMAND);
        m.u.command.op = PROTO_CMD_BCHECKPOINT;

        /* A fork now must not hand our connection to a child unknowingly. */
        rt_fork_lock();
        int fd = coord_join(&rt.cfg.coord, &h, 10000, NULL, reason, sizeof reason);
        if (fd >= 0) {
                fd = rt_fd_move_private(fd);
                rt_fd_set_private(fd, true);
        }
        uint64_t restarts = rt.restart_count;
        int r = fd < 0 ? fd : proto_send(fd, &m);
        rt_fork_unlock();
        if (fd < 0) {
                rt_warn("dmtcp_checkpoint: no coordinator: %s", reason[0] ? reason : strerror(-fd));
                return -ENOTCONN;
        }

        for (;;) {
                if (r == 0) {
                        struct pollfd p = { .fd = fd, .events = POLLIN };
                        poll(&p, 1, POLL_STEP_MS);
                }
                rt_fork_lock();
                if (rt.restart_count != restarts) {
                        /* Restarted: fd is not ours any more; forget it. */
                        rt_fd_set_private(fd, false);
                        rt_fork_unlock();
                        return DMTCP_AFTER_RESTART;
                }
                if (r == 0) {
                        struct pollfd p = { .fd = fd, .events = POLLIN };
                        if (raw_syscall3(SYS_poll, (long) &p, 1, 0) <= 0) {
                                rt_fork_unlock();
                                continue;
                        }
                        r = proto_recv(fd, &m, ANSWER_WAIT_MS);
                        if (r == 0 && m.type != PROTO_RESULT)
                                r = -EPROTO;
                }
                rt_fd_set_private(fd, false);
                raw_syscall1(SYS_close, fd);
                rt_fork_unlock();
                if (r < 0) {
                        rt_warn("dmtcp_checkpoint: lost the coordinator: %s", strerror(-r));
                        return -ENOTCONN;
                }
                if (m.u.result.status < 0) {
                        rt_warn("dmtcp_checkpoint: %s", m.u.result.message);
                        return m.u.result.status;
                }
                return DMTCP_AFTER_CHECKPOINT;
        }
}
