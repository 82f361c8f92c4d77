#include "coord-server.h"

#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <syslog.h>
#include <systemd/sd-daemon.h>
#include <time.h>

#include "coord-commit.h"
#include "coord-log.h"
#include "env.h"
#include "log.h"
#include "manifest.h"
#include "coord-text.h"
#include "util.h"

#define SLOT_BITS 12
#define SLOT_MASK ((UINT64_C(1) << SLOT_BITS) - 1)

enum conn_kind {
        CONN_NEW,               /* no HELLO yet, or refused */
        CONN_COMMAND,           /* a tool */
        CONN_MEMBER,            /* a worker or restarted process */
};

static void server_drain(struct coord_server *srv);

/* ---- connection table ------------------------------------------------- */

static struct coord_conn *conn_lookup(const struct coord_server *srv, uint64_t token) {
        if (token <= COORD_REQ_CONSOLE)
                return NULL;
        size_t slot = (size_t) (token & SLOT_MASK);
        if (slot >= srv->max_conns)
                return NULL;
        struct coord_conn *c = srv->slots[slot];
        return c && c->token == token ? c : NULL;
}

static void conn_describe(const struct coord_conn *c, char *buf, size_t size) {
        coord_peer_describe(&c->peer, buf, size);
}

static void send_or_drop(struct coord_conn *c, const struct proto_msg *m) {
        int r = coord_conn_send(c, m);
        if (r < 0 && r != -ESHUTDOWN && r != -ENOBUFS && r != -ENOMEM)
                log_error_errno(r, "Failed to encode %s: %m", proto_type_name(m->type));
}

/* Refuse a peer before it became anything: REJECT, log, close. */
static _printf_(3, 4) void refuse(struct coord_conn *c, int code, const char *fmt, ...) {
        struct coord_server *srv = c->userdata;
        struct proto_msg m;
        proto_init(&m, PROTO_REJECT);
        m.u.reject.code = (uint16_t) code;
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(m.u.reject.reason, sizeof m.u.reject.reason, fmt, ap);
        va_end(ap);
        send_or_drop(c, &m);
        coord_conn_close_soon(c);

        char who[160];
        conn_describe(c, who, sizeof who);
        struct coord_log l = {
                .level = LOG_WARNING,
                .event = COORD_EV_PEER_REFUSED,
                .fields = COORD_LOG_PEER | COORD_LOG_REASON,
                .peer = c->peer,
        };
        strscpy(l.computation, srv->state->comp_id, sizeof l.computation);
        text_printf(l.text, sizeof l.text, "refused %s: %s", who, m.u.reject.reason);
        strscpy(l.reason, m.u.reject.reason, sizeof l.reason);
        coord_log_emit(&l, srv->opts->job);
}

/* ---- replies ---------------------------------------------------------- */

static void server_reply(struct coord_server *srv, uint64_t requester, const struct proto_msg *m) {
        if (requester == COORD_REQ_NONE) {
                if (m->u.result.status < 0)
                        log_warning("%s", m->u.result.message);
                return;
        }
        if (requester == COORD_REQ_CONSOLE) {
                printf("%s%s\n", m->u.result.status < 0 ? "error: " : "", m->u.result.message);
                fflush(stdout);
                return;
        }
        struct coord_conn *c = conn_lookup(srv, requester);
        if (c)
                send_or_drop(c, m);
}

static _printf_(4, 5) void reply_now(struct coord_server *srv, uint64_t requester, int status, const char *fmt, ...) {
        struct proto_msg m;
        proto_init(&m, PROTO_RESULT);
        m.u.result.status = status;
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(m.u.result.message, sizeof m.u.result.message, fmt, ap);
        va_end(ap);
        server_reply(srv, requester, &m);
}

/* ---- checkpoint requests ---------------------------------------------- */

static void server_checkpoint(struct coord_server *srv, uint64_t requester, int op) {
        char why[PROTO_TEXT_MAX + 1];
        int r = coord_state_ckpt_check(srv->state, why, sizeof why);
        /* Waited for rather than refused: a checkpoint-and-kill (a job's
         * stop: refused, the job would end without its last checkpoint, or
         * lose the one in flight) whatever the phase of the checkpoint in
         * flight; any request once that one has committed or aborted and
         * only waits for its processes to resume (milliseconds: a script's
         * second -bc right after the first). One waits at a time. */
        if (r == -EBUSY && !srv->ckpt_queued && requester != COORD_REQ_NONE &&
            (srv->state->mode == COORD_MODE_RESUME ||
             (srv->state->mode == COORD_MODE_CKPT && op == PROTO_CMD_KCHECKPOINT))) {
                srv->ckpt_queued = true;
                srv->queued_requester = requester;
                srv->queued_op = op;
                log_info("checkpoint%s requested during checkpoint generation %" PRIu64
                         ": it starts when that one is over", op == PROTO_CMD_KCHECKPOINT ? " and kill" : "",
                         srv->state->gen);
                return;
        }
        if (r < 0) {
                reply_now(srv, requester, r, "%s", why);
                return;
        }
        const char *dir = coord_state_ckptdir(srv->state);
        uint64_t newest = 0;
        r = coord_newest_generation(dir, &newest);
        if (r < 0)
                log_warning_errno(r, "Failed to scan checkpoint directory %s: %m", dir);
        uint64_t gen = coord_state_next_generation(srv->state, newest);
        if (gen > COORD_MAX_GENERATION) {
                reply_now(srv, requester, -EOVERFLOW, "generation numbers are exhausted in %s", dir);
                return;
        }
        char tmpdir[PATH_MAX];
        r = coord_prepare_generation(dir, gen, tmpdir, sizeof tmpdir, why, sizeof why);
        if (r < 0) {
                log_error("checkpoint not started: %s", why);
                reply_now(srv, requester, r, "%s", why);
                return;
        }
        coord_state_ckpt_start(srv->state, gen, tmpdir,
                               op == PROTO_CMD_KCHECKPOINT ? PROTO_CKPT_KILL_AFTER : 0,
                               requester, op != PROTO_CMD_CHECKPOINT);
}

/* ---- STATUS and LIST -------------------------------------------------- */

static void fill_status(const struct coord_server *srv, struct proto_status *st) {
        memset(st, 0, sizeof *st);
        coord_state_fill_status(srv->state, st);
        st->port = srv->tcp_port;
        st->keep = (uint32_t) srv->opts->keep;
        strscpy(st->host, host_name(), sizeof st->host);
        strscpy(st->socket, srv->socket_path, sizeof st->socket);
        strscpy(st->job, srv->opts->job[0] ? srv->opts->job : "default", sizeof st->job);
}

static void fill_member(const struct coord_member *mb, struct proto_member *pm) {
        memset(pm, 0, sizeof *pm);
        pm->id = mb->id;
        pm->pid = mb->pid;
        pm->role = mb->role;
        pm->state = mb->state;
        pm->phase = mb->done;
        strscpy(pm->host, mb->host, sizeof pm->host);
        strscpy(pm->program, mb->program, sizeof pm->program);
        strscpy(pm->upid, mb->upid, sizeof pm->upid);
}

static void handle_command(struct coord_conn *c, const struct proto_command_msg *cmd) {
        struct coord_server *srv = c->userdata;
        struct proto_msg m;
        switch (cmd->op) {
        case PROTO_CMD_STATUS:
                proto_init(&m, PROTO_STATUS);
                fill_status(srv, &m.u.status);
                send_or_drop(c, &m);
                break;
        case PROTO_CMD_LIST: {
                size_t n = 0;
                for (size_t i = 0; i < srv->state->n_members && !c->dead; i++) {
                        const struct coord_member *mb = srv->state->members[i];
                        if (mb->pending)
                                continue;
                        proto_init(&m, PROTO_MEMBER);
                        fill_member(mb, &m.u.member);
                        send_or_drop(c, &m);
                        n++;
                }
                proto_init(&m, PROTO_RESULT);
                m.u.result.processes = (uint32_t) n;
                m.u.result.generation = srv->state->last_gen;
                text_printf(m.u.result.message, sizeof m.u.result.message, "%zu processes, %zu waiting to join",
                         n, coord_state_n_pending(srv->state));
                send_or_drop(c, &m);
                break;
        }
        case PROTO_CMD_CHECKPOINT:
        case PROTO_CMD_BCHECKPOINT:
        case PROTO_CMD_KCHECKPOINT:
                server_checkpoint(srv, c->token, cmd->op);
                break;
        case PROTO_CMD_INTERVAL:
                coord_state_set_interval(srv->state, cmd->arg);
                reply_now(srv, c->token, 0, "checkpoint interval set to %" PRIu32 " s%s", cmd->arg,
                          cmd->arg ? "" : " (off)");
                break;
        case PROTO_CMD_KILL:
                coord_state_kill(srv->state, c->token, false);
                break;
        case PROTO_CMD_QUIT:
                coord_state_kill(srv->state, c->token, true);
                break;
        }
}

/* ---- HELLO ------------------------------------------------------------ */

static void handle_hello(struct coord_conn *c, const struct proto_hello *h) {
        struct coord_server *srv = c->userdata;
        c->hello_timer = sd_event_source_disable_unref(c->hello_timer);

        if (c->tcp && !c->loopback) {
                if (!srv->have_secret || !coord_secret_equal(srv->secret, h->secret))
                        return refuse(c, PROTO_REJ_SECRET,
                                      "peers beyond loopback must present this computation's secret (%s in the checkpoint directory)",
                                      COORD_SECRET_FILE);
        } else if (srv->opts->strict_uid) {
                if (!c->peer.have_uid)
                        return refuse(c, PROTO_REJ_UID, "cannot determine the user of %s; refusing it",
                                      c->peer.addr);
                if (c->peer.uid != (uint32_t) geteuid())
                        return refuse(c, PROTO_REJ_UID,
                                      "this coordinator serves uid %u only, not uid %" PRIu32 " (see --no-strict-uid-checking)",
                                      (unsigned) geteuid(), c->peer.uid);
        }

        if (h->role == PROTO_ROLE_COMMAND) {
                struct proto_msg w;
                proto_init(&w, PROTO_WELCOME);
                w.u.welcome.generation = srv->state->last_gen;
                w.u.welcome.interval = srv->state->interval;
                strscpy(w.u.welcome.comp_id, srv->state->comp_id, sizeof w.u.welcome.comp_id);
                strscpy(w.u.welcome.ckptdir, coord_state_ckptdir(srv->state), sizeof w.u.welcome.ckptdir);
                c->kind = CONN_COMMAND;
                send_or_drop(c, &w);
                return;
        }

        struct manifest mf = {};
        bool have_mf = false;
        if (coord_state_wants_manifest(srv->state, h)) {
                char path[PATH_MAX];
                if ((size_t) snprintf(path, sizeof path, "%s/%s", h->ckptdir, MANIFEST_NAME) < sizeof path) {
                        int r = manifest_read(path, &mf);
                        if (r < 0)
                                log_info_errno(r, "no usable %s (%m): the restart counts processes only", path);
                        else
                                have_mf = true;
                }
        }
        c->kind = CONN_MEMBER;
        if (coord_state_hello(srv->state, c->token, h, &c->peer, have_mf ? &mf : NULL) == 0)
                c->kind = CONN_NEW;
        manifest_done(&mf);
}

/* ---- connection callbacks --------------------------------------------- */

static void on_message(struct coord_conn *c, const struct proto_msg *m) {
        struct coord_server *srv = c->userdata;

        switch (c->kind) {
        case CONN_NEW:
                if (m->type != PROTO_HELLO)
                        goto unexpected;
                handle_hello(c, &m->u.hello);
                break;
        case CONN_COMMAND:
                if (m->type != PROTO_COMMAND)
                        goto unexpected;
                handle_command(c, &m->u.command);
                break;
        case CONN_MEMBER:
                switch (m->type) {
                case PROTO_PHASE_DONE:
                        coord_state_phase_done(srv->state, c->token, &m->u.phase_done);
                        break;
                case PROTO_KV_PUT:
                        coord_state_kv_put(srv->state, c->token, &m->u.kv);
                        break;
                case PROTO_KV_GET:
                        coord_state_kv_get(srv->state, c->token, &m->u.kv);
                        break;
                case PROTO_EXEC:
                        coord_state_exec(srv->state, c->token);
                        break;
                case PROTO_EXEC_FAILED:
                        coord_state_exec_failed(srv->state, c->token);
                        break;
                case PROTO_WHO_IS:
                        coord_state_who_is(srv->state, c->token, &m->u.who_is);
                        break;
                case PROTO_NOTICE:
                        coord_state_notice(srv->state, c->token, &m->u.notice);
                        break;
                default:
                        goto unexpected;
                }
                break;
        }
        server_drain(srv);
        return;

unexpected:;
        char what[96];
        text_printf(what, sizeof what, "unexpected %s message", proto_type_name(m->type));
        c->ops->bad_input(c, -EBADMSG, what);
}

static void on_bad_input(struct coord_conn *c, int err, const char *what) {
        struct coord_server *srv = c->userdata;
        char who[160];
        conn_describe(c, who, sizeof who);
        log_warning("%s sent %s; closing its connection", who, what);

        struct proto_msg m;
        proto_init(&m, PROTO_REJECT);
        m.u.reject.code = err == -EPROTONOSUPPORT ? PROTO_REJ_VERSION : PROTO_REJ_BAD_MESSAGE;
        text_printf(m.u.reject.reason, sizeof m.u.reject.reason, "%s", what);
        send_or_drop(c, &m);
        coord_conn_close_soon(c);
        if (c->kind == CONN_MEMBER && coord_state_is_member(srv->state, c->token)) {
                char why[160];
                text_printf(why, sizeof why, "sent %s", what);
                coord_state_disconnect(srv->state, c->token, why);
        }
        c->kind = CONN_NEW;
        server_drain(srv);
}

static void server_update_idle(struct coord_server *srv);

static void on_closed(struct coord_conn *c, const char *why) {
        struct coord_server *srv = c->userdata;
        if (c->kind == CONN_MEMBER && coord_state_is_member(srv->state, c->token))
                coord_state_disconnect(srv->state, c->token, why);
        size_t slot = (size_t) (c->token & SLOT_MASK);
        if (srv->slots[slot] == c) {
                srv->slots[slot] = NULL;
                srv->n_conns--;
        }
        server_drain(srv);
        server_update_idle(srv);
}

static const struct coord_conn_ops conn_ops = {
        .message = on_message,
        .bad_input = on_bad_input,
        .closed = on_closed,
};

static int on_hello_timeout(sd_event_source *s, uint64_t usec, void *userdata) {
        struct coord_conn *c = userdata;
        char who[160];
        conn_describe(c, who, sizeof who);
        c->hello_timer = sd_event_source_disable_unref(c->hello_timer);
        log_warning("%s sent no HELLO within %u s; closing its connection", who,
                    COORD_HELLO_TIMEOUT_USEC / 1000000);
        struct proto_msg m;
        proto_init(&m, PROTO_REJECT);
        m.u.reject.code = PROTO_REJ_BAD_MESSAGE;
        text_printf(m.u.reject.reason, sizeof m.u.reject.reason, "no HELLO within %u s", COORD_HELLO_TIMEOUT_USEC / 1000000);
        send_or_drop(c, &m);
        coord_conn_close_soon(c);
        return 0;
}

/* ---- accepting -------------------------------------------------------- */

static void reject_full(int fd, const char *addr, struct coord_server *srv) {
        struct proto_msg m;
        uint8_t buf[PROTO_MAX_MESSAGE];
        proto_init(&m, PROTO_REJECT);
        m.u.reject.code = PROTO_REJ_FULL;
        text_printf(m.u.reject.reason, sizeof m.u.reject.reason, "the coordinator has %zu connections, its maximum",
                 srv->max_conns);
        int n = proto_encode(&m, buf, sizeof buf);
        if (n > 0)
                (void) send(fd, buf, (size_t) n, MSG_NOSIGNAL | MSG_DONTWAIT);
        (void) shutdown(fd, SHUT_WR);
        struct coord_log l = {
                .level = LOG_WARNING,
                .event = COORD_EV_PEER_REFUSED,
                .fields = COORD_LOG_PEER | COORD_LOG_REASON,
        };
        strscpy(l.peer.addr, addr, sizeof l.peer.addr);
        text_printf(l.text, sizeof l.text, "refused peer %s: %s", addr, m.u.reject.reason);
        strscpy(l.reason, m.u.reject.reason, sizeof l.reason);
        coord_log_emit(&l, srv->opts->job);
}

static int on_listen_retry(sd_event_source *s, uint64_t usec, void *userdata) {
        struct coord_server *srv = userdata;
        srv->listen_retry = sd_event_source_disable_unref(srv->listen_retry);
        for (size_t i = 0; i < srv->n_listeners; i++)
                (void) sd_event_source_set_enabled(srv->listeners[i].src, SD_EVENT_ON);
        return 0;
}

static void accept_one(struct coord_server *srv, int fd) {
        struct coord_peer peer;
        bool tcp, loopback;
        int r = coord_peer_identify(fd, &peer, &tcp, &loopback);
        if (r < 0) {
                log_debug_errno(r, "Dropping a connection that went away at once: %m");
                close(fd);
                return;
        }
        if (srv->n_conns >= srv->max_conns) {
                reject_full(fd, peer.addr, srv);
                close(fd);
                return;
        }
        size_t slot = 0;
        while (srv->slots[slot])
                slot++;
        struct coord_conn *c;
        r = coord_conn_new(srv->event, fd, &conn_ops, srv, &c);
        if (r < 0) {
                log_warning_errno(r, "Failed to set up a connection: %m");
                close(fd);
                return;
        }
        c->token = (++srv->serial << SLOT_BITS) | slot;
        c->kind = CONN_NEW;
        c->tcp = tcp;
        c->loopback = loopback;
        c->peer = peer;
        r = sd_event_add_time_relative(srv->event, &c->hello_timer, CLOCK_MONOTONIC, COORD_HELLO_TIMEOUT_USEC, 0,
                                       on_hello_timeout, c);
        if (r < 0) {
                log_warning_errno(r, "Failed to arm the HELLO timer: %m");
                coord_conn_free(c);
                return;
        }
        srv->slots[slot] = c;
        srv->n_conns++;
}

static int on_accept(sd_event_source *s, int lfd, uint32_t revents, void *userdata) {
        struct coord_server *srv = userdata;
        for (int i = 0; i < 64; i++) {
                int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                if (fd < 0) {
                        if (errno == EAGAIN || errno == EINTR)
                                break;
                        if (errno == ECONNABORTED)
                                continue;
                        if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                                log_warning_errno(errno, "Cannot accept connections (%m); pausing for 100 ms");
                                for (size_t k = 0; k < srv->n_listeners; k++)
                                        (void) sd_event_source_set_enabled(srv->listeners[k].src, SD_EVENT_OFF);
                                if (!srv->listen_retry)
                                        (void) sd_event_add_time_relative(srv->event, &srv->listen_retry, CLOCK_MONOTONIC,
                                                                          100 * 1000, 0, on_listen_retry, srv);
                                break;
                        }
                        log_warning_errno(errno, "accept failed: %m");
                        break;
                }
                accept_one(srv, fd);
        }
        server_update_idle(srv);
        return 0;
}

/* ---- timers ----------------------------------------------------------- */

static int on_state_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        struct coord_server *srv = userdata;
        coord_state_tick(srv->state);
        server_drain(srv);
        return 0;
}

static void server_update_timer(struct coord_server *srv) {
        uint64_t d = coord_state_next_deadline(srv->state);
        if (!d) {
                if (srv->timer)
                        (void) sd_event_source_set_enabled(srv->timer, SD_EVENT_OFF);
                return;
        }
        if (!srv->timer) {
                int r = sd_event_add_time(srv->event, &srv->timer, CLOCK_MONOTONIC, d, 10 * 1000, on_state_timer, srv);
                if (r < 0)
                        log_error_errno(r, "Failed to arm the coordinator timer: %m");
                return;
        }
        (void) sd_event_source_set_time(srv->timer, d);
        (void) sd_event_source_set_enabled(srv->timer, SD_EVENT_ONESHOT);
}

static int on_idle_timeout(sd_event_source *s, uint64_t usec, void *userdata) {
        struct coord_server *srv = userdata;
        log_info("no processes and no clients for %" PRIu32 " s: exiting", srv->opts->idle_timeout);
        (void) sd_notify(0, "STOPPING=1\nSTATUS=idle, exiting");
        srv->exit_status = 0;
        return sd_event_exit(srv->event, 0);
}

static void server_update_idle(struct coord_server *srv) {
        if (!srv->opts->idle_timeout)
                return;
        bool idle = srv->n_conns == 0 && srv->state->n_members == 0 && srv->state->mode == COORD_MODE_IDLE;
        if (idle && !srv->idle_timer) {
                int r = sd_event_add_time_relative(srv->event, &srv->idle_timer, CLOCK_MONOTONIC,
                                                   (uint64_t) srv->opts->idle_timeout * 1000000u, 0, on_idle_timeout, srv);
                if (r < 0)
                        log_warning_errno(r, "Failed to arm the idle timer: %m");
        } else if (!idle && srv->idle_timer)
                srv->idle_timer = sd_event_source_disable_unref(srv->idle_timer);
}

static void format_time(uint64_t usec, char *buf, size_t size) {
        time_t t = (time_t) (usec / 1000000);
        struct tm tm;
        if (!usec || !localtime_r(&t, &tm) || !strftime(buf, size, "%Y-%m-%d %H:%M:%S", &tm))
                text_printf(buf, size, "never");
}

static void server_notify_status(struct coord_server *srv) {
        char state[256], when[64], status[256];
        coord_state_describe(srv->state, state, sizeof state);
        if (srv->state->last_gen) {
                format_time(srv->state->last_ckpt_usec, when, sizeof when);
                text_printf(status, sizeof status, "%s; last checkpoint: generation %" PRIu64 " at %s",
                         state, srv->state->last_gen, when);
        } else
                text_printf(status, sizeof status, "%s; no checkpoint yet", state);
        if (strcmp(status, srv->notify_status)) {
                strscpy(srv->notify_status, status, sizeof srv->notify_status);
                (void) sd_notifyf(0, "STATUS=%s", status);
        }
}

/* ---- executing the state machine's actions ---------------------------- */

static void flush_all(struct coord_server *srv) {
        for (size_t i = 0; i < srv->max_conns; i++)
                if (srv->slots[i])
                        coord_conn_flush_now(srv->slots[i]);
}

static void execute(struct coord_server *srv, struct coord_action *a) {
        char err[PROTO_TEXT_MAX + 1];
        struct coord_conn *c;
        int r;

        switch (a->type) {
        case COORD_ACT_SEND:
                for (size_t i = 0; i < a->n_conns; i++)
                        if ((c = conn_lookup(srv, a->conns[i])) && !c->closing)
                                send_or_drop(c, &a->msg);
                break;
        case COORD_ACT_CLOSE:
                if ((c = conn_lookup(srv, a->conn))) {
                        c->kind = CONN_NEW;
                        coord_conn_close_soon(c);
                }
                break;
        case COORD_ACT_REPLY:
                server_reply(srv, a->requester, &a->msg);
                break;
        case COORD_ACT_COMMIT:
                err[0] = 0;
                r = coord_commit_generation(&a->commit, srv->restart_bin, err, sizeof err);
                if (r < 0)
                        log_error("commit of generation %" PRIu64 " failed: %s", a->commit.generation, err);
                else
                        srv->prune_after = a->commit.generation;
                coord_state_commit_done(srv->state, r, err);
                break;
        case COORD_ACT_DISCARD:
                if (a->path[0]) {
                        /* A member may still be creating its image in it
                         * (it has not seen the abort yet): a file created
                         * while we remove leaves the directory non-empty,
                         * so go again. What is left is swept by the next
                         * checkpoint. */
                        r = rm_rf(a->path);
                        for (int tries = 0; r == -ENOTEMPTY && tries < 5; tries++)
                                r = rm_rf(a->path);
                        if (r < 0)
                                log_warning_errno(r, "Failed to remove abandoned generation %s: %m", a->path);
                }
                break;
        case COORD_ACT_LOG:
                coord_log_emit(&a->log, srv->opts->job);
                break;
        case COORD_ACT_CHECKPOINT:
                server_checkpoint(srv, COORD_REQ_NONE, PROTO_CMD_CHECKPOINT);
                break;
        case COORD_ACT_EXIT:
                flush_all(srv);
                (void) sd_notify(0, "STOPPING=1");
                srv->exit_status = a->exit_status;
                (void) sd_event_exit(srv->event, a->exit_status);
                break;
        }
}

static void server_drain(struct coord_server *srv) {
        if (srv->draining)
                return;
        srv->draining = true;
        for (;;) {
                struct coord_action *a;
                while ((a = coord_state_next_action(srv->state))) {
                        execute(srv, a);
                        coord_action_free(a);
                }
                if (srv->prune_after) {
                        /* Removing old generations of gigabytes takes a while:
                         * the members' verdict and the requester's answer go
                         * first. */
                        flush_all(srv);
                        (void) coord_prune_generations(coord_state_ckptdir(srv->state), srv->prune_after,
                                                       srv->opts->keep);
                        srv->prune_after = 0;
                }
                if (!srv->ckpt_queued || srv->state->mode == COORD_MODE_CKPT ||
                    srv->state->mode == COORD_MODE_RESUME)
                        break;
                /* The checkpoint in flight is over: the queued request now
                 * starts, or gets the reason it cannot (killed, no one left),
                 * unless its requester is gone. */
                srv->ckpt_queued = false;
                if (srv->queued_requester == COORD_REQ_CONSOLE || conn_lookup(srv, srv->queued_requester))
                        server_checkpoint(srv, srv->queued_requester, srv->queued_op);
        }
        srv->draining = false;
        server_update_timer(srv);
        server_update_idle(srv);
        server_notify_status(srv);
}

/* ---- console ---------------------------------------------------------- */

static void console_help(void) {
        puts("Commands: l list, s status, c checkpoint, f force a waiting restart,\n"
             "          k kill all processes, q kill all and quit, ? this help");
}

static const char *member_state_name(int s) {
        switch (s) {
        case PROTO_MS_RUNNING: return "running";
        case PROTO_MS_CHECKPOINTING: return "checkpointing";
        case PROTO_MS_RESTARTING: return "restarting";
        default: return "unknown";
        }
}

static void console_list(struct coord_server *srv) {
        const struct coord_state *s = srv->state;
        printf("%-5s %-24s %-8s %-20s %-24s %-14s %s\n", "ID", "PROGRAM", "PID", "HOST", "UPID", "STATE", "PHASE");
        for (size_t i = 0; i < s->n_members; i++) {
                const struct coord_member *m = s->members[i];
                if (m->pending)
                        continue;
                printf("%-5" PRIu32 " %-24s %-8" PRIu32 " %-20s %-24s %-14s %s\n", m->id, m->program, m->pid, m->host,
                       m->upid, member_state_name(m->state), proto_phase_name(m->done));
        }
        printf("%zu processes, %zu waiting to join\n", coord_state_n_members(s), coord_state_n_pending(s));
}

static void console_status(struct coord_server *srv) {
        struct proto_status st;
        char when[64];
        fill_status(srv, &st);
        format_time(st.last_ckpt_usec, when, sizeof when);
        printf("Status:\n"
               "  Host: %s\n  Port: %u\n  Socket: %s\n  Job: %s\n  PID: %" PRIu32 "\n"
               "  Computation: %s\n  Checkpoint dir: %s\n  Checkpoint interval: %" PRIu32 "%s\n"
               "  Exit on last: %s\n  Keep: %" PRIu32 "\n  Last checkpoint: generation %" PRIu64 " at %s\n"
               "  State: %s\nNUM_PEERS=%" PRIu32 "\nRUNNING=%s\n",
               st.host, st.port, st.socket, st.job, st.coord_pid,
               st.comp_id[0] ? st.comp_id : "(none)", st.ckptdir, st.interval, st.interval ? " s" : " (off)",
               st.exit_on_last ? "yes" : "no", st.keep, st.generation, when,
               st.state, st.num_peers, st.running ? "yes" : "no");
}

static void console_command(struct coord_server *srv, const char *line) {
        char msg[PROTO_TEXT_MAX + 1];
        if (strlen(line) != 1) {
                printf("unknown command '%s'; type ? for help\n", line);
                return;
        }
        switch (line[0]) {
        case 'l':
                console_list(srv);
                break;
        case 's':
                console_status(srv);
                break;
        case 'c':
                server_checkpoint(srv, COORD_REQ_CONSOLE, PROTO_CMD_CHECKPOINT);
                break;
        case 'f':
                coord_state_force_restart(srv->state, msg, sizeof msg);
                puts(msg);
                break;
        case 'k':
                coord_state_kill(srv->state, COORD_REQ_CONSOLE, false);
                break;
        case 'q':
                coord_state_kill(srv->state, COORD_REQ_CONSOLE, true);
                break;
        case '?':
        case 'h':
                console_help();
                break;
        default:
                printf("unknown command '%s'; type ? for help\n", line);
                break;
        }
}

static int on_console(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        struct coord_server *srv = userdata;
        ssize_t n = read(fd, srv->console_buf + srv->console_len, sizeof srv->console_buf - 1 - srv->console_len);
        if (n < 0) {
                if (errno == EAGAIN || errno == EINTR)
                        return 0;
                n = 0;
        }
        if (n == 0) {
                srv->console = sd_event_source_disable_unref(srv->console);
                return 0;
        }
        srv->console_len += (size_t) n;
        srv->console_buf[srv->console_len] = 0;
        char *nl;
        while ((nl = memchr(srv->console_buf, '\n', srv->console_len))) {
                *nl = 0;
                char *line = srv->console_buf;
                while (*line == ' ' || *line == '\t')
                        line++;
                size_t l = strlen(line);
                while (l > 0 && (line[l - 1] == ' ' || line[l - 1] == '\t' || line[l - 1] == '\r'))
                        line[--l] = 0;
                if (*line)
                        console_command(srv, line);
                size_t used = (size_t) (nl - srv->console_buf) + 1;
                memmove(srv->console_buf, nl + 1, srv->console_len - used);
                srv->console_len -= used;
        }
        if (srv->console_len == sizeof srv->console_buf - 1) {
                puts("command line too long; type ? for help");
                srv->console_len = 0;
        }
        fflush(stdout);
        server_drain(srv);
        return 0;
}

int coord_server_enable_console(struct coord_server *srv) {
        int r = sd_event_add_io(srv->event, &srv->console, STDIN_FILENO, EPOLLIN, on_console, srv);
        if (r < 0)
                return r;       /* e.g. a regular file: no console */
        return 0;
}

/* ---- setup ------------------------------------------------------------ */

int coord_server_add_listener(struct coord_server *srv, const struct coord_listener *l) {
        if (srv->n_listeners >= COORD_MAX_LISTENERS)
                return -E2BIG;
        struct coord_listener *d = &srv->listeners[srv->n_listeners];
        *d = *l;
        int r = sd_event_add_io(srv->event, &d->src, d->fd, EPOLLIN, on_accept, srv);
        if (r < 0)
                return r;
        srv->n_listeners++;
        if (d->tcp && !srv->tcp_port)
                srv->tcp_port = d->port;
        return 0;
}

int coord_server_new(sd_event *e, const struct coord_options *o, const struct coord_config *cfg,
                     struct coord_server **ret) {
        struct coord_server *srv = calloc(1, sizeof *srv);
        if (!srv)
                return -ENOMEM;
        srv->event = sd_event_ref(e);
        srv->opts = o;
        int r = coord_state_new(&srv->state, cfg);
        if (r < 0) {
                coord_server_free(srv);
                return r;
        }
        struct rlimit rl;
        size_t max = COORD_MAX_CONNS;
        if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY)
                max = MIN(max, rl.rlim_cur > 128 ? (size_t) rl.rlim_cur - 64 : (size_t) rl.rlim_cur / 2);
        srv->max_conns = MAX(max, (size_t) 1);
        srv->slots = calloc(srv->max_conns, sizeof *srv->slots);
        if (!srv->slots) {
                coord_server_free(srv);
                return -ENOMEM;
        }
        if (find_sibling("dmtcp_restart", "restart/dmtcp_restart", srv->restart_bin, sizeof srv->restart_bin) < 0)
                strscpy(srv->restart_bin, "dmtcp_restart", sizeof srv->restart_bin);
        *ret = srv;
        return 0;
}

int coord_server_start(struct coord_server *srv) {
        server_drain(srv);
        (void) sd_notifyf(0, "READY=1\nSTATUS=%s", srv->notify_status);
        return 0;
}

struct coord_server *coord_server_free(struct coord_server *srv) {
        if (!srv)
                return NULL;
        for (size_t i = 0; srv->slots && i < srv->max_conns; i++)
                coord_conn_free(srv->slots[i]);
        free(srv->slots);
        for (size_t i = 0; i < srv->n_listeners; i++) {
                sd_event_source_disable_unref(srv->listeners[i].src);
                safe_close(srv->listeners[i].fd);
        }
        sd_event_source_disable_unref(srv->listen_retry);
        sd_event_source_disable_unref(srv->timer);
        sd_event_source_disable_unref(srv->idle_timer);
        sd_event_source_disable_unref(srv->console);
        coord_state_free(srv->state);
        sd_event_unref(srv->event);
        free(srv);
        return NULL;
}
