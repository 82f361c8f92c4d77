/* The coordinator state machine: see coord-state.h and docs/protocol.md.
 *
 * Out of memory is fatal here (abort): the state must never be half
 * updated, and the members see their connection close and report it. */
#include "coord-state.h"

#include <assert.h>
#include <inttypes.h>
#include <stdarg.h>
#include <string.h>
#include <syslog.h>

#include "coord-text.h"
#include "util.h"

struct coord_kv_entry {
        char *key;
        uint8_t *value;
        uint32_t len;
};

static void *xcalloc(size_t n, size_t size) {
        void *p = calloc(n ?: 1, size ?: 1);
        if (!p)
                abort();
        return p;
}

static void *xrealloc(void *p, size_t n, size_t size) {
        if (size && n > SIZE_MAX / size)
                abort();
        p = realloc(p, n * size ?: 1);
        if (!p)
                abort();
        return p;
}

/* ---- actions ---------------------------------------------------------- */

static struct coord_action *act_new(struct coord_state *s, enum coord_action_type type) {
        struct coord_action *a = xcalloc(1, sizeof *a);
        a->type = type;
        if (s->tail)
                s->tail->next = a;
        else
                s->head = a;
        s->tail = a;
        return a;
}

struct coord_action *coord_state_next_action(struct coord_state *s) {
        struct coord_action *a = s->head;
        if (!a)
                return NULL;
        s->head = a->next;
        if (!s->head)
                s->tail = NULL;
        a->next = NULL;
        return a;
}

void coord_action_free(struct coord_action *a) {
        if (!a)
                return;
        free(a->conns);
        if (a->type == COORD_ACT_COMMIT)
                free(a->commit.images);
        free(a);
}

static _printf_(4, 5) struct coord_log *log_add(struct coord_state *s, int level, enum coord_event ev,
                                                const char *fmt, ...) {
        struct coord_action *a = act_new(s, COORD_ACT_LOG);
        a->log.level = level;
        a->log.event = ev;
        strscpy(a->log.computation, s->comp_id, sizeof a->log.computation);
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(a->log.text, sizeof a->log.text, fmt, ap);
        va_end(ap);
        return &a->log;
}

static void log_set_member(struct coord_log *l, const struct coord_member *m) {
        l->fields |= COORD_LOG_MEMBER | COORD_LOG_PROGRAM | COORD_LOG_PEER;
        l->member = m->id;
        strscpy(l->program, m->program, sizeof l->program);
        l->peer = m->peer;
}

static void log_set_reason(struct coord_log *l, const char *reason) {
        l->fields |= COORD_LOG_REASON;
        strscpy(l->reason, reason, sizeof l->reason);
}

static void send_to(struct coord_state *s, uint64_t conn, const struct proto_msg *m) {
        struct coord_action *a = act_new(s, COORD_ACT_SEND);
        a->msg = *m;
        a->conns = xcalloc(1, sizeof *a->conns);
        a->conns[0] = conn;
        a->n_conns = 1;
}

/* Send to every welcomed member, or only to those in the current round. */
static void send_members(struct coord_state *s, const struct proto_msg *m, bool round_only) {
        struct coord_action *a = act_new(s, COORD_ACT_SEND);
        a->msg = *m;
        a->conns = xcalloc(s->n_members, sizeof *a->conns);
        for (size_t i = 0; i < s->n_members; i++) {
                const struct coord_member *mb = s->members[i];
                if (mb->pending || (round_only && !mb->in_round))
                        continue;
                a->conns[a->n_conns++] = mb->conn;
        }
}

static void reply(struct coord_state *s, uint64_t requester, int status, const char *message) {
        if (requester == COORD_REQ_NONE)
                return;
        struct coord_action *a = act_new(s, COORD_ACT_REPLY);
        a->requester = requester;
        proto_init(&a->msg, PROTO_RESULT);
        a->msg.u.result.status = status;
        strscpy(a->msg.u.result.message, message, sizeof a->msg.u.result.message);
}

static void exit_loop(struct coord_state *s, int status) {
        struct coord_action *a = act_new(s, COORD_ACT_EXIT);
        a->exit_status = status;
}

/* ---- members ---------------------------------------------------------- */

static size_t member_pos(const struct coord_state *s, uint64_t conn) {
        size_t lo = 0, hi = s->n_members;
        while (lo < hi) {
                size_t mid = lo + (hi - lo) / 2;
                if (s->members[mid]->conn < conn)
                        lo = mid + 1;
                else
                        hi = mid;
        }
        return lo;
}

static struct coord_member *member_find(const struct coord_state *s, uint64_t conn) {
        size_t i = member_pos(s, conn);
        return i < s->n_members && s->members[i]->conn == conn ? s->members[i] : NULL;
}

bool coord_state_is_member(const struct coord_state *s, uint64_t conn) {
        return member_find(s, conn) != NULL;
}

static struct coord_member *member_add(struct coord_state *s, uint64_t conn, const struct proto_hello *h,
                                       const struct coord_peer *peer) {
        if (s->n_members == s->n_alloc) {
                s->n_alloc = MAX(s->n_alloc * 2, (size_t) 16);
                s->members = xrealloc(s->members, s->n_alloc, sizeof *s->members);
        }
        struct coord_member *m = xcalloc(1, sizeof *m);
        m->conn = conn;
        m->role = h->role;
        m->pid = h->pid;
        strscpy(m->host, h->host, sizeof m->host);
        strscpy(m->program, h->program, sizeof m->program);
        strscpy(m->upid, h->upid, sizeof m->upid);
        if (peer)
                m->peer = *peer;
        size_t i = member_pos(s, conn);
        memmove(s->members + i + 1, s->members + i, (s->n_members - i) * sizeof *s->members);
        s->members[i] = m;
        s->n_members++;
        return m;
}

/* Unlink m from the table (the caller frees it). */
static void member_unlink(struct coord_state *s, struct coord_member *m) {
        size_t i = member_pos(s, m->conn);
        assert(i < s->n_members && s->members[i] == m);
        memmove(s->members + i, s->members + i + 1, (s->n_members - i - 1) * sizeof *s->members);
        s->n_members--;
}

static void member_free(struct coord_member *m) {
        if (!m)
                return;
        free(m->hello);
        free(m);
}

static void member_describe(const struct coord_member *m, char *buf, size_t size) {
        text_printf(buf, size, "member %" PRIu32 " (%s, pid %" PRIu32 " on %s)", m->id,
                 m->program[0] ? m->program : "?", m->pid, m->host[0] ? m->host : "?");
}

void coord_peer_describe(const struct coord_peer *p, char *buf, size_t size) {
        int n = snprintf(buf, size, "peer %s", p->addr[0] ? p->addr : "?");
        if (n < 0 || (size_t) n >= size)
                return;
        if (p->have_uid)
                n += snprintf(buf + n, size - (size_t) n, " uid %" PRIu32, p->uid);
        if (n >= 0 && (size_t) n < size && p->have_pid)
                text_printf(buf + n, size - (size_t) n, " pid %" PRIu32, p->pid);
}

size_t coord_state_n_members(const struct coord_state *s) {
        size_t n = 0;
        for (size_t i = 0; i < s->n_members; i++)
                n += !s->members[i]->pending;
        return n;
}

size_t coord_state_n_pending(const struct coord_state *s) {
        return s->n_members - coord_state_n_members(s);
}

static size_t n_in_round(const struct coord_state *s) {
        size_t n = 0;
        for (size_t i = 0; i < s->n_members; i++)
                n += s->members[i]->in_round;
        return n;
}

static size_t n_done(const struct coord_state *s, uint8_t phase) {
        size_t n = 0;
        for (size_t i = 0; i < s->n_members; i++)
                n += s->members[i]->in_round && s->members[i]->done >= phase;
        return n;
}

/* ---- KV store --------------------------------------------------------- */

static size_t kv_pos(const struct coord_state *s, const char *key, bool *found) {
        size_t lo = 0, hi = s->n_kv;
        while (lo < hi) {
                size_t mid = lo + (hi - lo) / 2;
                int c = strcmp(s->kv[mid].key, key);
                if (c == 0) {
                        *found = true;
                        return mid;
                }
                if (c < 0)
                        lo = mid + 1;
                else
                        hi = mid;
        }
        *found = false;
        return lo;
}

static void kv_reset(struct coord_state *s) {
        for (size_t i = 0; i < s->n_kv; i++) {
                free(s->kv[i].key);
                free(s->kv[i].value);
        }
        free(s->kv);
        s->kv = NULL;
        s->n_kv = s->kv_alloc = s->kv_bytes = 0;
}

/* ---- computation ------------------------------------------------------ */

static uint64_t now_mono(const struct coord_state *s) {
        return s->now(CLOCK_MONOTONIC);
}

static void arm_interval(struct coord_state *s) {
        s->interval_deadline = s->interval > 0 && coord_state_n_members(s) > 0 ?
                now_mono(s) + (uint64_t) s->interval * 1000000u : 0;
}

static void computation_begin(struct coord_state *s, const struct proto_hello *h) {
        if (h->comp_id[0]) {
                /* A member of a computation this coordinator does not know
                 * (e.g. the coordinator was restarted): adopt it. */
                strscpy(s->comp_id, h->comp_id, sizeof s->comp_id);
                s->last_gen = h->generation;
        } else {
                char host[65];
                strscpy(host, s->cfg.host, sizeof host);
                text_printf(s->comp_id, sizeof s->comp_id, "%s-%" PRIu32 "-%" PRIx64, host, s->cfg.pid,
                         s->now(CLOCK_REALTIME));
                s->last_gen = 0;
        }
        if (s->cfg.ckptdir[0])
                strscpy(s->ckptdir, s->cfg.ckptdir, sizeof s->ckptdir);
        else if (h->ckptdir[0] == '/')
                strscpy(s->ckptdir, h->ckptdir, sizeof s->ckptdir);
        else
                strscpy(s->ckptdir, s->cfg.cwd, sizeof s->ckptdir);
        s->interval = s->cfg.interval_fixed ? s->cfg.interval : h->interval;
        s->last_ckpt_usec = 0;
        kv_reset(s);
        log_add(s, LOG_INFO, COORD_EV_NONE, "computation %s %s, checkpoint directory %s, interval %" PRIu32 " s",
                s->comp_id, h->comp_id[0] ? "adopted" : "started", s->ckptdir, s->interval);
}

static void computation_end(struct coord_state *s) {
        if (!s->comp_id[0])
                return;
        log_add(s, LOG_INFO, COORD_EV_NONE, "computation %s ended: no processes left", s->comp_id);
        s->comp_id[0] = 0;
        s->ckptdir[0] = 0;
        s->last_gen = 0;
        s->last_ckpt_usec = 0;
        s->interval_deadline = 0;
        kv_reset(s);
}

/* After members left: end the computation when none is left, and exit
 * with --exit-on-last. */
static void maybe_end(struct coord_state *s) {
        if (s->n_members > 0 || s->mode == COORD_MODE_RESTART || s->mode == COORD_MODE_KILL ||
            (s->mode == COORD_MODE_CKPT && s->n_departed))
                return;
        computation_end(s);
        if (s->cfg.exit_on_last && s->ever_joined && !s->exiting) {
                s->exiting = true;
                log_add(s, LOG_INFO, COORD_EV_NONE, "last process left, exiting (--exit-on-last)");
                exit_loop(s, 0);
        }
}

static void member_remove(struct coord_state *s, struct coord_member *m, int err, const char *why);

static int reject(struct coord_state *s, uint64_t conn, const struct coord_peer *peer, int code,
                  const char *fmt, ...) _printf_(5, 6);
static int reject(struct coord_state *s, uint64_t conn, const struct coord_peer *peer, int code,
                  const char *fmt, ...) {
        struct proto_msg m;
        proto_init(&m, PROTO_REJECT);
        m.u.reject.code = (uint16_t) code;
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(m.u.reject.reason, sizeof m.u.reject.reason, fmt, ap);
        va_end(ap);
        send_to(s, conn, &m);
        struct coord_action *a = act_new(s, COORD_ACT_CLOSE);
        a->conn = conn;

        char who[160] = "peer";
        struct coord_peer none = {};
        if (!peer)
                peer = &none;
        coord_peer_describe(peer, who, sizeof who);
        struct coord_log *l = log_add(s, LOG_WARNING, COORD_EV_PEER_REFUSED, "refused %s: %s",
                                      who, m.u.reject.reason);
        l->fields |= COORD_LOG_PEER;
        l->peer = *peer;
        log_set_reason(l, m.u.reject.reason);
        return 0;
}

static void send_welcome(struct coord_state *s, struct coord_member *m) {
        struct proto_msg w;
        proto_init(&w, PROTO_WELCOME);
        w.u.welcome.member_id = m->id;
        w.u.welcome.generation = s->last_gen;
        w.u.welcome.interval = s->interval;
        strscpy(w.u.welcome.comp_id, s->comp_id, sizeof w.u.welcome.comp_id);
        strscpy(w.u.welcome.ckptdir, s->ckptdir, sizeof w.u.welcome.ckptdir);
        send_to(s, m->conn, &w);
}

static void log_joined(struct coord_state *s, const struct coord_member *m) {
        char who[PROTO_NAME_MAX + PROTO_HOST_MAX + 64];
        member_describe(m, who, sizeof who);
        struct coord_log *l = log_add(s, LOG_INFO, COORD_EV_MEMBER_JOINED, "%s joined computation %s%s, %zu processes",
                                      who, s->comp_id, m->role == PROTO_ROLE_RESTART ? " to restart" : "",
                                      coord_state_n_members(s));
        log_set_member(l, m);
        l->fields |= COORD_LOG_PROCESSES;
        l->processes = (uint32_t) coord_state_n_members(s);
}

static void send_ckpt_begin(struct coord_state *s, uint64_t conn_or_all) {
        struct proto_msg b;
        proto_init(&b, PROTO_CKPT_BEGIN);
        b.u.ckpt_begin.generation = s->gen;
        b.u.ckpt_begin.flags = s->flags;
        b.u.ckpt_begin.members = (uint32_t) n_in_round(s);
        strscpy(b.u.ckpt_begin.dir, s->tmpdir, sizeof b.u.ckpt_begin.dir);
        strscpy(b.u.ckpt_begin.comp_id, s->comp_id, sizeof b.u.ckpt_begin.comp_id);
        if (conn_or_all)
                send_to(s, conn_or_all, &b);
        else
                send_members(s, &b, true);
}

/* Make m a running member of the computation (creating or adopting the
 * computation when there is none) and welcome it. */
static void welcome_worker(struct coord_state *s, struct coord_member *m, const struct proto_hello *h) {
        if (!s->comp_id[0])
                computation_begin(s, h);
        m->pending = false;
        m->id = ++s->next_member_id;
        m->state = PROTO_MS_RUNNING;
        s->ever_joined = true;
        send_welcome(s, m);
        log_joined(s, m);
        if (s->mode == COORD_MODE_CKPT) {
                /* Joining while SUSPEND is not yet released (a child forked
                 * just before the checkpoint): it takes part. */
                m->in_round = true;
                m->done = PROTO_PH_NONE;
                m->state = PROTO_MS_CHECKPOINTING;
                send_ckpt_begin(s, m->conn);
        }
        if (s->mode == COORD_MODE_IDLE && !s->interval_deadline)
                arm_interval(s);
}

static void release_pending(struct coord_state *s) {
        /* Collect first: welcoming or refusing changes the table. */
        size_t n = 0;
        uint64_t *conns = xcalloc(s->n_members, sizeof *conns);
        for (size_t i = 0; i < s->n_members; i++)
                if (s->members[i]->pending)
                        conns[n++] = s->members[i]->conn;
        for (size_t i = 0; i < n && s->mode == COORD_MODE_IDLE; i++) {
                struct coord_member *m = member_find(s, conns[i]);
                if (!m)
                        continue;
                struct proto_hello *h = TAKE_PTR(m->hello);
                if (h->comp_id[0] && s->comp_id[0] && strcmp(h->comp_id, s->comp_id)) {
                        member_unlink(s, m);
                        reject(s, m->conn, &m->peer, PROTO_REJ_WRONG_COMP,
                               "this coordinator serves computation %s, not %s", s->comp_id, h->comp_id);
                        member_free(m);
                } else
                        welcome_worker(s, m, h);
                free(h);
        }
        free(conns);
}

/* ---- checkpoint ------------------------------------------------------- */

static void gen_dir(const struct coord_state *s, uint64_t gen, char *buf, size_t size) {
        text_printf(buf, size, "%s/gen-%06" PRIu64, s->ckptdir, gen);
}

static void round_end(struct coord_state *s) {
        for (size_t i = 0; i < s->n_members; i++) {
                struct coord_member *m = s->members[i];
                if (m->pending)
                        continue;
                m->in_round = false;
                m->done = PROTO_PH_NONE;
                m->state = PROTO_MS_RUNNING;
                m->image[0] = 0;
        }
        s->mode = COORD_MODE_IDLE;
        s->phase = PROTO_PH_NONE;
        s->requester = COORD_REQ_NONE;
        s->tmpdir[0] = 0;
        s->committing = false;
        s->n_departed = 0;
        arm_interval(s);
        release_pending(s);
        maybe_end(s);   /* every process ended during the checkpoint */
}

static void resume_check(struct coord_state *s) {
        if (s->mode != COORD_MODE_RESUME)
                return;
        if (n_done(s, PROTO_PH_RESUME) == n_in_round(s))
                round_end(s);
}

static void ckpt_abort(struct coord_state *s, int err, const char *reason,
                       const struct coord_member *culprit) {
        assert(s->mode == COORD_MODE_CKPT);
        struct coord_action *a = act_new(s, COORD_ACT_DISCARD);
        strscpy(a->path, s->tmpdir, sizeof a->path);

        struct proto_msg m;
        proto_init(&m, PROTO_CKPT_ABORT);
        m.u.ckpt_abort.generation = s->gen;
        strscpy(m.u.ckpt_abort.reason, reason, sizeof m.u.ckpt_abort.reason);
        send_members(s, &m, true);

        struct coord_log *l = log_add(s, LOG_WARNING, COORD_EV_CKPT_ABORTED,
                                      "checkpoint generation %" PRIu64 " aborted: %s", s->gen, reason);
        l->fields |= COORD_LOG_GENERATION | COORD_LOG_DURATION;
        l->generation = s->gen;
        l->duration_usec = now_mono(s) - s->ckpt_start;
        log_set_reason(l, reason);
        if (culprit)
                log_set_member(l, culprit);

        char msg[PROTO_TEXT_MAX + 1];
        text_printf(msg, sizeof msg, "checkpoint generation %" PRIu64 " aborted: %s", s->gen, reason);
        reply(s, s->requester, err < 0 ? err : -ECANCELED, msg);
        s->requester = COORD_REQ_NONE;
        s->mode = COORD_MODE_RESUME;
        s->phase = PROTO_PH_RESUME;
        s->aborted = true;
        resume_check(s);
}

static void image_fill(struct manifest_image *im, const struct coord_member *m) {
        strscpy(im->name, m->image, sizeof im->name);
        im->bytes = m->image_bytes;
        im->crc = m->image_crc;
        strscpy(im->upid, m->upid, sizeof im->upid);
        strscpy(im->program, m->program, sizeof im->program);
        strscpy(im->host, m->host, sizeof im->host);
}

static void departed_add(struct coord_state *s, const struct coord_member *m) {
        if (s->n_departed == s->departed_alloc) {
                s->departed_alloc = MAX(s->departed_alloc * 2, (size_t) 16);
                s->departed = xrealloc(s->departed, s->departed_alloc, sizeof *s->departed);
        }
        image_fill(&s->departed[s->n_departed++], m);
}

static void ckpt_commit(struct coord_state *s) {
        struct coord_action *a = act_new(s, COORD_ACT_COMMIT);
        struct coord_commit *c = &a->commit;
        c->generation = s->gen;
        c->time_usec = s->now(CLOCK_REALTIME);
        strscpy(c->comp_id, s->comp_id, sizeof c->comp_id);
        strscpy(c->tmpdir, s->tmpdir, sizeof c->tmpdir);
        strscpy(c->ckptdir, s->ckptdir, sizeof c->ckptdir);
        c->images = xcalloc(s->n_members + s->n_departed + 1, sizeof *c->images);
        for (size_t i = 0; i < s->n_members; i++)
                if (s->members[i]->in_round)
                        image_fill(&c->images[c->n_images++], s->members[i]);
        for (size_t i = 0; i < s->n_departed; i++)
                c->images[c->n_images++] = s->departed[i];
        s->commit_procs = (uint32_t) c->n_images;
        s->commit_bytes = 0;
        for (size_t i = 0; i < c->n_images; i++)
                s->commit_bytes += c->images[i].bytes;
        s->commit_usec = c->time_usec;
        s->committing = true;
}

void coord_state_commit_done(struct coord_state *s, int r, const char *reason) {
        if (s->mode != COORD_MODE_CKPT || s->phase != PROTO_PH_WRITE)
                return;
        if (r < 0) {
                char why[PROTO_TEXT_MAX + 1];
                text_printf(why, sizeof why, "commit failed: %s", reason ?: "unknown error");
                ckpt_abort(s, r, why, NULL);
                return;
        }
        uint64_t bytes = s->commit_bytes;
        uint32_t procs = s->commit_procs;
        uint64_t duration = now_mono(s) - s->ckpt_start;
        s->last_gen = s->gen;
        s->last_ckpt_usec = s->commit_usec;
        char dir[PATH_MAX];
        gen_dir(s, s->gen, dir, sizeof dir);

        struct proto_msg m;
        proto_init(&m, PROTO_CKPT_COMMITTED);
        m.u.ckpt_committed.generation = s->gen;
        strscpy(m.u.ckpt_committed.dir, dir, sizeof m.u.ckpt_committed.dir);
        send_members(s, &m, true);

        struct coord_log *l = log_add(s, LOG_INFO, COORD_EV_CKPT_COMMITTED,
                                      "checkpoint generation %" PRIu64 " committed: %" PRIu32 " processes, %"
                                      PRIu64 " bytes in %" PRIu64 ".%03" PRIu64 " s, %s",
                                      s->gen, procs, bytes, duration / 1000000, duration / 1000 % 1000, dir);
        l->fields |= COORD_LOG_GENERATION | COORD_LOG_PROCESSES | COORD_LOG_BYTES | COORD_LOG_DURATION | COORD_LOG_DIR;
        l->generation = s->gen;
        l->processes = procs;
        l->bytes = bytes;
        l->duration_usec = duration;
        strscpy(l->dir, dir, sizeof l->dir);

        if (s->requester != COORD_REQ_NONE) {
                struct coord_action *a = act_new(s, COORD_ACT_REPLY);
                a->requester = s->requester;
                proto_init(&a->msg, PROTO_RESULT);
                struct proto_result *res = &a->msg.u.result;
                res->generation = s->gen;
                res->bytes = bytes;
                res->duration_usec = duration;
                res->processes = procs;
                text_printf(res->message, sizeof res->message, "checkpoint generation %" PRIu64 " committed", s->gen);
                strscpy(res->dir, dir, sizeof res->dir);
                s->requester = COORD_REQ_NONE;
        }
        s->mode = COORD_MODE_RESUME;
        s->phase = PROTO_PH_RESUME;
        s->aborted = false;
        resume_check(s);
}

static void send_go(struct coord_state *s, uint64_t gen, uint8_t phase) {
        struct proto_msg g;
        proto_init(&g, PROTO_PHASE_GO);
        g.u.phase_go.generation = gen;
        g.u.phase_go.phase = phase;
        send_members(s, &g, true);
}

static void restart_complete(struct coord_state *s);

/* Release the barrier s->phase when every participant reported it. */
static void barrier_check(struct coord_state *s) {
        for (;;) {
                size_t n = n_in_round(s);
                bool all_departed = s->mode == COORD_MODE_CKPT && s->phase == PROTO_PH_WRITE && s->n_departed;
                if ((n == 0 && !all_departed) || n_done(s, s->phase) < n)
                        return;
                if (s->mode == COORD_MODE_CKPT) {
                        if (s->phase == PROTO_PH_WRITE) {
                                if (!s->committing)
                                        ckpt_commit(s);
                                return;
                        }
                        send_go(s, s->gen, s->phase);
                        s->phase++;
                } else if (s->mode == COORD_MODE_RESTART) {
                        if (s->phase == PROTO_PH_RST_JOIN)
                                return;         /* released by the rendezvous count, not here */
                        if (s->phase == PROTO_PH_RST_RESUME) {
                                restart_complete(s);
                                return;
                        }
                        send_go(s, s->rst_gen, s->phase);
                        s->phase++;
                } else
                        return;
        }
}

int coord_state_ckpt_check(const struct coord_state *s, char *why, size_t size) {
        if (coord_state_n_members(s) == 0) {
                text_printf(why, size, "no processes are connected to this coordinator");
                return -ENOENT;
        }
        switch (s->mode) {
        case COORD_MODE_IDLE:
                break;
        case COORD_MODE_CKPT:
        case COORD_MODE_RESUME:
                text_printf(why, size, "checkpoint generation %" PRIu64 " is in progress (phase %s); try again later",
                         s->gen, proto_phase_name(s->phase));
                return -EBUSY;
        case COORD_MODE_RESTART:
                text_printf(why, size, "restart of generation %" PRIu64 " is in progress; try again later", s->rst_gen);
                return -EBUSY;
        case COORD_MODE_KILL:
                text_printf(why, size, "the computation is being killed");
                return -EBUSY;
        }
        for (size_t i = 0; i < s->n_members; i++)
                if (!s->members[i]->pending && s->members[i]->state != PROTO_MS_RUNNING) {
                        text_printf(why, size, "not every process is running yet; try again later");
                        return -EBUSY;
                }
        if (s->last_gen >= COORD_MAX_GENERATION) {
                text_printf(why, size, "generation numbers are exhausted in %s", s->ckptdir);
                return -EOVERFLOW;
        }
        return 0;
}

uint64_t coord_state_next_generation(const struct coord_state *s, uint64_t newest_on_disk) {
        return MAX(MAX(newest_on_disk, s->last_gen), s->left_out_gen) + 1;
}

void coord_state_ckpt_start(struct coord_state *s, uint64_t gen, const char *tmpdir, uint32_t flags,
                            uint64_t requester, bool blocking) {
        char why[256];
        int r = coord_state_ckpt_check(s, why, sizeof why);
        if (r == 0 && gen > COORD_MAX_GENERATION) {
                text_printf(why, sizeof why, "generation numbers are exhausted in %s", s->ckptdir);
                r = -EOVERFLOW;
        }
        if (r < 0) {
                reply(s, requester, r, why);
                return;
        }
        s->gen = gen;
        s->flags = flags;
        strscpy(s->tmpdir, tmpdir, sizeof s->tmpdir);
        s->ckpt_start = now_mono(s);
        s->stop_deadline = s->cfg.stop_timeout_usec ? s->ckpt_start + s->cfg.stop_timeout_usec : 0;
        s->mode = COORD_MODE_CKPT;
        s->phase = PROTO_PH_SUSPEND;
        s->aborted = false;
        s->interval_deadline = 0;
        s->requester = blocking ? requester : COORD_REQ_NONE;
        kv_reset(s);    /* what members publish is about this checkpoint */
        s->committing = false;
        s->n_departed = 0;
        for (size_t i = 0; i < s->n_members; i++) {
                struct coord_member *m = s->members[i];
                m->in_round = true;
                m->done = PROTO_PH_NONE;
                m->state = PROTO_MS_CHECKPOINTING;
                m->image[0] = 0;
        }
        uint32_t n = (uint32_t) n_in_round(s);
        send_ckpt_begin(s, 0);
        struct coord_log *l = log_add(s, LOG_INFO, COORD_EV_CKPT_STARTED,
                                      "checkpoint generation %" PRIu64 " started: %" PRIu32 " processes%s, writing to %s",
                                      gen, n, flags & PROTO_CKPT_KILL_AFTER ? ", killed after" : "", tmpdir);
        l->fields |= COORD_LOG_GENERATION | COORD_LOG_PROCESSES | COORD_LOG_DIR;
        l->generation = gen;
        l->processes = n;
        strscpy(l->dir, tmpdir, sizeof l->dir);
        if (!blocking && requester != COORD_REQ_NONE) {
                struct coord_action *a = act_new(s, COORD_ACT_REPLY);
                a->requester = requester;
                proto_init(&a->msg, PROTO_RESULT);
                a->msg.u.result.generation = gen;
                a->msg.u.result.processes = n;
                text_printf(a->msg.u.result.message, sizeof a->msg.u.result.message,
                         "checkpoint generation %" PRIu64 " started", gen);
                strscpy(a->msg.u.result.dir, tmpdir, sizeof a->msg.u.result.dir);
        }
}

/* ---- restart ---------------------------------------------------------- */

static bool upid_joined(const struct coord_state *s, const char *upid) {
        for (size_t i = 0; i < s->n_members; i++)
                if (s->members[i]->in_round && !strcmp(s->members[i]->upid, upid))
                        return true;
        return false;
}

static const struct manifest_image *manifest_find(const struct manifest *mf, const char *upid) {
        for (size_t i = 0; i < mf->n_images; i++)
                if (!strcmp(mf->images[i].upid, upid))
                        return &mf->images[i];
        return NULL;
}

/* "1 of 3 processes missing: NAME (PROG on host HOST), ..." */
static void describe_missing(const struct coord_state *s, char *buf, size_t size) {
        size_t joined = n_in_round(s);
        size_t missing = s->rst_expected > joined ? s->rst_expected - joined : 0;
        int n = snprintf(buf, size, "%zu of %" PRIu32 " processes missing", missing, s->rst_expected);
        if (s->rst_manifest.n_images == 0 || n < 0)
                return;
        const char *sep = ": ";
        for (size_t i = 0; i < s->rst_manifest.n_images && (size_t) n < size; i++) {
                const struct manifest_image *im = &s->rst_manifest.images[i];
                if (upid_joined(s, im->upid))
                        continue;
                int k = snprintf(buf + n, size - (size_t) n, "%s%s (%s on host %s)", sep, im->name,
                                 im->program[0] ? im->program : "?", im->host[0] ? im->host : "?");
                if (k < 0)
                        return;
                n += k;
                sep = ", ";
        }
}

/* "1 of 3 processes not done: member 2 (a, pid 4 on h), ..." */
static void describe_not_done(const struct coord_state *s, char *buf, size_t size) {
        size_t n_round = n_in_round(s);
        int n = snprintf(buf, size, "%zu of %zu processes not done", n_round - n_done(s, s->phase), n_round);
        const char *sep = ": ";
        for (size_t i = 0; i < s->n_members && n >= 0 && (size_t) n < size; i++) {
                const struct coord_member *m = s->members[i];
                if (!m->in_round || m->done >= s->phase)
                        continue;
                char who[PROTO_NAME_MAX + PROTO_HOST_MAX + 64];
                member_describe(m, who, sizeof who);
                int k = snprintf(buf + n, size - (size_t) n, "%s%s", sep, who);
                if (k < 0)
                        return;
                n += k;
                sep = ", ";
        }
}

static void restart_reset(struct coord_state *s) {
        manifest_done(&s->rst_manifest);
        s->rst_deadline = 0;
        s->rst_expected = 0;
        s->rst_dir[0] = 0;
}

static void kill_start(struct coord_state *s, uint64_t requester, bool quit);

static void restart_fail(struct coord_state *s, const char *reason) {
        log_add(s, LOG_ERR, COORD_EV_NONE, "%s", reason);
        kill_start(s, COORD_REQ_NONE, false);
}

static void restart_go_join(struct coord_state *s) {
        send_go(s, s->rst_gen, PROTO_PH_RST_JOIN);
        s->phase = PROTO_PH_RST_RESTORE;
        log_add(s, LOG_INFO, COORD_EV_NONE, "restart of generation %" PRIu64 ": all %zu processes joined",
                s->rst_gen, n_in_round(s));
}

static void restart_complete(struct coord_state *s) {
        uint64_t duration = now_mono(s) - s->rst_start;
        uint32_t procs = (uint32_t) n_in_round(s);
        struct coord_log *l = log_add(s, LOG_INFO, COORD_EV_RESTART_COMPLETED,
                                      "restart of generation %" PRIu64 " completed: %" PRIu32 " processes in %"
                                      PRIu64 ".%03" PRIu64 " s, from %s",
                                      s->rst_gen, procs, duration / 1000000, duration / 1000 % 1000, s->rst_dir);
        l->fields |= COORD_LOG_GENERATION | COORD_LOG_PROCESSES | COORD_LOG_DURATION | COORD_LOG_DIR;
        l->generation = s->rst_gen;
        l->processes = procs;
        l->duration_usec = duration;
        strscpy(l->dir, s->rst_dir, sizeof l->dir);
        s->last_gen = s->rst_gen;
        restart_reset(s);
        round_end(s);
}

static void parent_dir(const char *path, char *buf, size_t size) {
        strscpy(buf, path, size);
        size_t n = strlen(buf);
        while (n > 1 && buf[n - 1] == '/')
                buf[--n] = 0;
        char *slash = strrchr(buf, '/');
        if (!slash)
                return;
        if (slash == buf)
                buf[1] = 0;
        else
                *slash = 0;
}

static void restart_begin(struct coord_state *s, const struct proto_hello *h, const struct manifest *mf) {
        s->mode = COORD_MODE_RESTART;
        s->phase = PROTO_PH_RST_JOIN;
        strscpy(s->comp_id, h->comp_id, sizeof s->comp_id);
        s->rst_gen = h->generation;
        s->rst_expected = h->members;
        s->rst_start = now_mono(s);
        s->rst_deadline = s->rst_start + s->cfg.restart_timeout_usec;
        strscpy(s->rst_dir, h->ckptdir, sizeof s->rst_dir);
        manifest_done(&s->rst_manifest);
        if (mf && mf->n_images > 0) {
                s->rst_manifest = *mf;
                s->rst_manifest.images = xcalloc(mf->n_images, sizeof *mf->images);
                memcpy(s->rst_manifest.images, mf->images, mf->n_images * sizeof *mf->images);
        }
        if (s->cfg.ckptdir_option)
                strscpy(s->ckptdir, s->cfg.ckptdir, sizeof s->ckptdir);
        else
                parent_dir(h->ckptdir, s->ckptdir, sizeof s->ckptdir);
        s->interval = s->cfg.interval_fixed ? s->cfg.interval : h->interval;
        s->interval_deadline = 0;
        s->last_gen = h->generation;
        s->last_ckpt_usec = mf ? mf->time_usec : 0;
        kv_reset(s);
        log_add(s, LOG_INFO, COORD_EV_NONE,
                "restart of generation %" PRIu64 " of computation %s from %s: waiting for %" PRIu32 " processes%s",
                s->rst_gen, s->comp_id, s->rst_dir, s->rst_expected,
                s->rst_manifest.n_images ? "" : " (no readable MANIFEST: counting only)");
}

static int hello_restart(struct coord_state *s, uint64_t conn, const struct proto_hello *h,
                         const struct coord_peer *peer, const struct manifest *mf) {
        if (!h->comp_id[0] || h->generation == 0 || h->members == 0 || !h->upid[0] || h->ckptdir[0] != '/')
                return reject(s, conn, peer, PROTO_REJ_BAD_MESSAGE,
                              "a restart HELLO needs comp_id, generation, members, upid and the absolute generation directory");
        if (s->mode == COORD_MODE_KILL)
                return reject(s, conn, peer, PROTO_REJ_SHUTTING_DOWN, "the coordinator is killing its computation");
        if (s->mode == COORD_MODE_RESTART) {
                if (strcmp(h->comp_id, s->comp_id) || h->generation != s->rst_gen)
                        return reject(s, conn, peer, PROTO_REJ_WRONG_COMP,
                                      "this coordinator restarts generation %" PRIu64 " of computation %s, not generation %"
                                      PRIu64 " of %s", s->rst_gen, s->comp_id, h->generation, h->comp_id);
                if (s->phase != PROTO_PH_RST_JOIN)
                        return reject(s, conn, peer, PROTO_REJ_NOT_RUNNING,
                                      "the restart of generation %" PRIu64 " is already past its rendezvous", s->rst_gen);
                if (h->members != s->rst_expected)
                        return reject(s, conn, peer, PROTO_REJ_PEER_MISMATCH,
                                      "generation %" PRIu64 " is being restarted with %" PRIu32 " processes, this one says %" PRIu32,
                                      s->rst_gen, s->rst_expected, h->members);
                if (upid_joined(s, h->upid))
                        return reject(s, conn, peer, PROTO_REJ_PEER_MISMATCH,
                                      "process %s of generation %" PRIu64 " has already joined the restart", h->upid, s->rst_gen);
                if (s->rst_manifest.n_images && !manifest_find(&s->rst_manifest, h->upid))
                        return reject(s, conn, peer, PROTO_REJ_PEER_MISMATCH,
                                      "process %s is not part of generation %" PRIu64 " (see its MANIFEST)", h->upid, s->rst_gen);
        } else if (s->n_members > 0 || s->mode != COORD_MODE_IDLE) {
                return reject(s, conn, peer, PROTO_REJ_NOT_RUNNING,
                              "this coordinator runs computation %s with %zu processes; use another coordinator (--coord-port, --job) to restart",
                              s->comp_id, coord_state_n_members(s));
        } else {
                if (mf && (strcmp(mf->computation, h->comp_id) || mf->generation != h->generation)) {
                        log_add(s, LOG_WARNING, COORD_EV_NONE,
                                "ignoring %s/MANIFEST: it describes generation %" PRIu64 " of %s, not generation %" PRIu64 " of %s",
                                h->ckptdir, mf->generation, mf->computation, h->generation, h->comp_id);
                        mf = NULL;
                }
                if (mf && mf->n_images != h->members)
                        return reject(s, conn, peer, PROTO_REJ_PEER_MISMATCH,
                                      "generation %" PRIu64 " has %zu processes (MANIFEST), this one says %" PRIu32,
                                      h->generation, mf->n_images, h->members);
                if (mf && !manifest_find(mf, h->upid))
                        return reject(s, conn, peer, PROTO_REJ_PEER_MISMATCH,
                                      "process %s is not part of generation %" PRIu64 " (see its MANIFEST)", h->upid, h->generation);
                restart_begin(s, h, mf);
        }

        struct coord_member *m = member_add(s, conn, h, peer);
        m->id = ++s->next_member_id;
        m->state = PROTO_MS_RESTARTING;
        m->in_round = true;
        m->done = PROTO_PH_RST_JOIN;
        s->ever_joined = true;
        send_welcome(s, m);
        log_joined(s, m);
        if (n_in_round(s) == s->rst_expected)
                restart_go_join(s);
        return 1;
}

bool coord_state_wants_manifest(const struct coord_state *s, const struct proto_hello *h) {
        return h->role == PROTO_ROLE_RESTART && s->mode == COORD_MODE_IDLE && s->n_members == 0 &&
               h->ckptdir[0] == '/';
}

int coord_state_force_restart(struct coord_state *s, char *msg, size_t size) {
        if (s->mode != COORD_MODE_RESTART || s->phase != PROTO_PH_RST_JOIN) {
                text_printf(msg, size, "no restart is waiting for processes");
                return -ENOENT;
        }
        size_t joined = n_in_round(s);
        if (joined == 0) {
                text_printf(msg, size, "no process of generation %" PRIu64 " has joined yet", s->rst_gen);
                return -ENOENT;
        }
        char missing[PROTO_TEXT_MAX + 1];
        describe_missing(s, missing, sizeof missing);
        text_printf(msg, size, "forcing restart of generation %" PRIu64 " with %zu of %" PRIu32 " processes (%s)",
                 s->rst_gen, joined, s->rst_expected, missing);
        log_add(s, LOG_WARNING, COORD_EV_NONE, "%s", msg);
        s->rst_expected = (uint32_t) joined;
        restart_go_join(s);
        return 0;
}

/* ---- HELLO ------------------------------------------------------------ */

int coord_state_hello(struct coord_state *s, uint64_t conn, const struct proto_hello *h,
                      const struct coord_peer *peer, const struct manifest *mf) {
        assert(!member_find(s, conn));
        if (h->role == PROTO_ROLE_RESTART)
                return hello_restart(s, conn, h, peer, mf);
        if (h->role != PROTO_ROLE_WORKER)
                return reject(s, conn, peer, PROTO_REJ_BAD_MESSAGE, "HELLO role %u is not a member role", h->role);
        if (s->mode == COORD_MODE_KILL)
                return reject(s, conn, peer, PROTO_REJ_SHUTTING_DOWN, "the coordinator is killing its computation");
        if (h->comp_id[0] && s->comp_id[0] && strcmp(h->comp_id, s->comp_id))
                return reject(s, conn, peer, PROTO_REJ_WRONG_COMP,
                              "this coordinator serves computation %s, not %s", s->comp_id, h->comp_id);

        /* The new image of a process that announced an exec. */
        for (size_t i = 0; i < s->n_members; i++) {
                struct coord_member *old = s->members[i];
                if (!(old->execing || old->placeholder) || old->pid != h->pid || strcmp(old->host, h->host))
                        continue;
                if (!old->placeholder) {
                        /* Its old connection has not closed yet: it will. */
                        member_unlink(s, old);
                        member_free(old);
                        break;
                }
                member_unlink(s, old);
                old->conn = conn;
                old->placeholder = old->execing = false;
                strscpy(old->program, h->program, sizeof old->program);
                strscpy(old->upid, h->upid, sizeof old->upid);
                if (peer)
                        old->peer = *peer;
                size_t pos = member_pos(s, conn);
                memmove(s->members + pos + 1, s->members + pos, (s->n_members - pos) * sizeof *s->members);
                s->members[pos] = old;
                s->n_members++;
                send_welcome(s, old);
                log_add(s, LOG_DEBUG, COORD_EV_NONE, "%s (pid %" PRIu32 ") is back after exec", old->program, old->pid);
                if (s->mode == COORD_MODE_CKPT && old->in_round && old->done < PROTO_PH_SUSPEND)
                        send_ckpt_begin(s, conn);
                return 1;
        }

        struct coord_member *m = member_add(s, conn, h, peer);
        if (s->mode == COORD_MODE_IDLE || (s->mode == COORD_MODE_CKPT && s->phase == PROTO_PH_SUSPEND)) {
                welcome_worker(s, m, h);
                return 1;
        }
        if (s->mode == COORD_MODE_CKPT || s->mode == COORD_MODE_RESUME) {
                /* After SUSPEND: every member's children are in the round
                 * already (each waits for its own before it reports SUSPEND),
                 * so a newcomer now is unrelated to this checkpoint. It joins
                 * the computation at once, outside the round. */
                if (!s->comp_id[0])
                        computation_begin(s, h);
                m->id = ++s->next_member_id;
                m->state = PROTO_MS_RUNNING;
                s->ever_joined = true;
                send_welcome(s, m);
                log_joined(s, m);
                return 1;
        }
        /* A restart: the newcomer waits until it is over. */
        m->pending = true;
        m->hello = xcalloc(1, sizeof *m->hello);
        *m->hello = *h;
        char who[160];
        coord_peer_describe(&m->peer, who, sizeof who);
        log_add(s, LOG_INFO, COORD_EV_NONE, "%s (%s, pid %" PRIu32 ") waits to join until the %s in progress is over",
                who, h->program, h->pid, s->mode == COORD_MODE_RESTART ? "restart" : "checkpoint");
        return 1;
}

/* ---- leaving ---------------------------------------------------------- */

static void kill_finish(struct coord_state *s);

static void member_remove(struct coord_state *s, struct coord_member *m, int err, const char *why) {
        if (m->execing && !m->placeholder && err == -ECONNRESET) {
                /* It announced an exec: its new image will join as the same
                 * process. Keep its place (in a checkpoint round too). */
                m->placeholder = true;
                m->placeholder_deadline = now_mono(s) + COORD_EXEC_GRACE_USEC;
                log_add(s, LOG_DEBUG, COORD_EV_NONE, "%s (pid %" PRIu32 ") exec'd; waiting for its new image",
                        m->program, m->pid);
                return;
        }
        m->placeholder = false;
        member_unlink(s, m);
        char who[PROTO_NAME_MAX + PROTO_HOST_MAX + 64];
        member_describe(m, who, sizeof who);
        if (m->pending) {
                log_add(s, LOG_DEBUG, COORD_EV_NONE, "a waiting process (%s, pid %" PRIu32 ") left: %s",
                        m->program, m->pid, why);
                member_free(m);
                maybe_end(s);
                return;
        }
        struct coord_log *l = log_add(s, LOG_INFO, COORD_EV_MEMBER_LEFT, "%s left: %s, %zu processes remain",
                                      who, why, coord_state_n_members(s));
        log_set_member(l, m);
        log_set_reason(l, why);
        l->fields |= COORD_LOG_PROCESSES;
        l->processes = (uint32_t) coord_state_n_members(s);

        if (m->in_round) {
                char reason[PROTO_TEXT_MAX + 1];
                switch (s->mode) {
                case COORD_MODE_CKPT:
                        /* A process that ended before it was suspended holds no
                         * state of this checkpoint (a short-lived child, say):
                         * the checkpoint goes on without it. Once suspended, its
                         * loss is a failure. */
                        if (err == -ECONNRESET && s->phase == PROTO_PH_SUSPEND && m->done < PROTO_PH_SUSPEND &&
                            n_in_round(s) > 0) {
                                log_add(s, LOG_INFO, COORD_EV_NONE,
                                        "%s ended before it was suspended; checkpoint generation %" PRIu64 " goes on without it",
                                        who, s->gen);
                                barrier_check(s);
                                break;
                        }
                        /* One whose image is written and reported (a short
                         * process resumed by a copy-on-write checkpoint, which
                         * ended meanwhile) was whole at the checkpoint: its
                         * image stays in the generation. */
                        if (err == -ECONNRESET && m->done >= PROTO_PH_WRITE && m->image[0]) {
                                departed_add(s, m);
                                log_add(s, LOG_INFO, COORD_EV_NONE,
                                        "%s ended after its image was written; it stays in checkpoint generation %" PRIu64,
                                        who, s->gen);
                                barrier_check(s);
                                break;
                        }
                        text_printf(reason, sizeof reason, "%s %s in phase %s", who, why, proto_phase_name(s->phase));
                        ckpt_abort(s, err, reason, m);
                        break;
                case COORD_MODE_RESUME:
                        resume_check(s);
                        break;
                case COORD_MODE_RESTART:
                        if (s->phase == PROTO_PH_RST_JOIN) {
                                log_add(s, LOG_WARNING, COORD_EV_NONE, "restart of generation %" PRIu64 ": %s left before the rendezvous; %zu of %" PRIu32 " processes joined",
                                        s->rst_gen, who, n_in_round(s), s->rst_expected);
                        } else if (s->phase == PROTO_PH_RST_RESUME) {
                                barrier_check(s);   /* it runs again and may end on its own */
                        } else {
                                text_printf(reason, sizeof reason, "restart of generation %" PRIu64 " failed: %s %s in phase %s",
                                         s->rst_gen, who, why, proto_phase_name(s->phase));
                                restart_fail(s, reason);
                        }
                        break;
                case COORD_MODE_KILL:
                case COORD_MODE_IDLE:
                        break;
                }
        }
        member_free(m);
        if (s->mode == COORD_MODE_KILL && s->n_members == 0)
                kill_finish(s);
        maybe_end(s);
}

void coord_state_disconnect(struct coord_state *s, uint64_t conn, const char *why) {
        struct coord_member *m = member_find(s, conn);
        if (m)
                member_remove(s, m, -ECONNRESET, why ?: "connection closed");
}

/* A member broke the protocol: refuse it and treat it as gone. */
static _printf_(3, 4) void violation(struct coord_state *s, struct coord_member *m, const char *fmt, ...) {
        char what[PROTO_TEXT_MAX + 1], why[PROTO_TEXT_MAX + 1];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(what, sizeof what, fmt, ap);
        va_end(ap);
        struct proto_msg r;
        proto_init(&r, PROTO_REJECT);
        r.u.reject.code = PROTO_REJ_BAD_MESSAGE;
        strscpy(r.u.reject.reason, what, sizeof r.u.reject.reason);
        send_to(s, m->conn, &r);
        struct coord_action *a = act_new(s, COORD_ACT_CLOSE);
        a->conn = m->conn;
        text_printf(why, sizeof why, "violated the protocol (%s)", what);
        log_add(s, LOG_WARNING, COORD_EV_NONE, "member %" PRIu32 " (%s, pid %" PRIu32 ") %s", m->id, m->program, m->pid, why);
        member_remove(s, m, -EPROTO, why);
}

/* ---- PHASE_DONE ------------------------------------------------------- */

static bool image_name_taken(const struct coord_state *s, const struct coord_member *self, const char *name) {
        for (size_t i = 0; i < s->n_members; i++) {
                const struct coord_member *m = s->members[i];
                if (m != self && m->in_round && m->image[0] && !strcmp(m->image, name))
                        return true;
        }
        return false;
}

static void phase_done_ckpt(struct coord_state *s, struct coord_member *m, const struct proto_phase_done *pd) {
        if (pd->generation != s->gen)
                return violation(s, m, "PHASE_DONE for generation %" PRIu64 " during checkpoint generation %" PRIu64,
                                 pd->generation, s->gen);
        if (pd->phase != s->phase || m->done >= pd->phase)
                return violation(s, m, "PHASE_DONE(%s) out of order: the checkpoint waits for %s",
                                 proto_phase_name(pd->phase), proto_phase_name(s->phase));
        if (pd->status < 0) {
                char who[PROTO_NAME_MAX + PROTO_HOST_MAX + 64], reason[PROTO_TEXT_MAX + 1];
                member_describe(m, who, sizeof who);
                text_printf(reason, sizeof reason, "%s failed in phase %s: %s", who, proto_phase_name(pd->phase),
                         pd->detail[0] ? pd->detail : "no reason given");
                m->done = pd->phase;
                return ckpt_abort(s, pd->status, reason, m);
        }
        if (pd->phase == PROTO_PH_WRITE) {
                if (!manifest_image_name_ok(pd->detail))
                        return violation(s, m, "PHASE_DONE(write) names image \"%s\", which is not a plain file name",
                                         pd->detail);
                if (image_name_taken(s, m, pd->detail))
                        return violation(s, m, "image name %s is already used by another process", pd->detail);
                strscpy(m->image, pd->detail, sizeof m->image);
                m->image_bytes = pd->bytes;
                m->image_crc = pd->crc;
        }
        m->done = pd->phase;
        barrier_check(s);
}

static void phase_done_resume(struct coord_state *s, struct coord_member *m, const struct proto_phase_done *pd) {
        if (pd->generation != s->gen)
                return violation(s, m, "PHASE_DONE for generation %" PRIu64 " after checkpoint generation %" PRIu64,
                                 pd->generation, s->gen);
        if (pd->phase < PROTO_PH_RESUME && s->aborted)
                return;         /* crossed our CKPT_ABORT: harmless */
        if (pd->phase != PROTO_PH_RESUME || m->done == PROTO_PH_RESUME)
                return violation(s, m, "PHASE_DONE(%s) out of order: waiting for resume", proto_phase_name(pd->phase));
        m->done = PROTO_PH_RESUME;
        m->state = PROTO_MS_RUNNING;
        resume_check(s);
}

static void phase_done_restart(struct coord_state *s, struct coord_member *m, const struct proto_phase_done *pd) {
        if (pd->generation != s->rst_gen)
                return violation(s, m, "PHASE_DONE for generation %" PRIu64 " during restart of generation %" PRIu64,
                                 pd->generation, s->rst_gen);
        if (pd->phase != s->phase || m->done >= pd->phase || s->phase == PROTO_PH_RST_JOIN)
                return violation(s, m, "PHASE_DONE(%s) out of order: the restart is in %s",
                                 proto_phase_name(pd->phase), proto_phase_name(s->phase));
        if (pd->status < 0) {
                char who[PROTO_NAME_MAX + PROTO_HOST_MAX + 64], reason[PROTO_TEXT_MAX + 1];
                member_describe(m, who, sizeof who);
                text_printf(reason, sizeof reason, "restart of generation %" PRIu64 " failed: %s failed in phase %s: %s",
                         s->rst_gen, who, proto_phase_name(pd->phase), pd->detail[0] ? pd->detail : "no reason given");
                return restart_fail(s, reason);
        }
        m->done = pd->phase;
        barrier_check(s);
}

void coord_state_phase_done(struct coord_state *s, uint64_t conn, const struct proto_phase_done *pd) {
        struct coord_member *m = member_find(s, conn);
        if (!m)
                return;
        if (m->pending)
                return violation(s, m, "PHASE_DONE before being welcomed");
        if (m->stale_gen && pd->generation <= m->stale_gen)
                return;         /* about a checkpoint it was left out of: it resumes on its own */
        if (s->mode != COORD_MODE_KILL && !m->in_round)
                return violation(s, m, "PHASE_DONE(%s) with no checkpoint or restart in progress",
                                 proto_phase_name(pd->phase));
        switch (s->mode) {
        case COORD_MODE_CKPT:
                return phase_done_ckpt(s, m, pd);
        case COORD_MODE_RESUME:
                return phase_done_resume(s, m, pd);
        case COORD_MODE_RESTART:
                return phase_done_restart(s, m, pd);
        case COORD_MODE_KILL:
                return;         /* it is being killed: whatever it was doing no longer matters */
        case COORD_MODE_IDLE:
                return violation(s, m, "PHASE_DONE(%s) with no checkpoint or restart in progress",
                                 proto_phase_name(pd->phase));
        }
}

/* ---- KV --------------------------------------------------------------- */

void coord_state_kv_put(struct coord_state *s, uint64_t conn, const struct proto_kv *kv) {
        struct coord_member *m = member_find(s, conn);
        if (!m)
                return;
        if (m->pending)
                return violation(s, m, "KV_PUT before being welcomed");
        bool found;
        size_t i = kv_pos(s, kv->key, &found);
        size_t old = found ? s->kv[i].len : 0;
        size_t add = found ? 0 : strlen(kv->key) + 1;
        if ((!found && s->n_kv >= COORD_KV_MAX_ENTRIES) ||
            s->kv_bytes - old + kv->value_len + add > COORD_KV_MAX_BYTES) {
                log_add(s, LOG_WARNING, COORD_EV_NONE, "KV store of computation %s is full; dropping key %s from member %" PRIu32,
                        s->comp_id, kv->key, m->id);
                return;
        }
        uint8_t *v = xcalloc(1, kv->value_len);
        memcpy(v, kv->value, kv->value_len);
        if (found) {
                free(s->kv[i].value);
        } else {
                if (s->n_kv == s->kv_alloc) {
                        s->kv_alloc = MAX(s->kv_alloc * 2, (size_t) 64);
                        s->kv = xrealloc(s->kv, s->kv_alloc, sizeof *s->kv);
                }
                memmove(s->kv + i + 1, s->kv + i, (s->n_kv - i) * sizeof *s->kv);
                s->kv[i].key = strdup(kv->key);
                if (!s->kv[i].key)
                        abort();
                s->n_kv++;
        }
        s->kv[i].value = v;
        s->kv[i].len = kv->value_len;
        s->kv_bytes = s->kv_bytes - old + kv->value_len + add;
}

void coord_state_exec(struct coord_state *s, uint64_t conn) {
        struct coord_member *m = member_find(s, conn);
        if (m && !m->pending)
                m->execing = true;
}

void coord_state_exec_failed(struct coord_state *s, uint64_t conn) {
        struct coord_member *m = member_find(s, conn);
        if (m && !m->pending && !m->placeholder)
                m->execing = false;
}

void coord_state_who_is(struct coord_state *s, uint64_t conn, const struct proto_who_is *q) {
        struct coord_member *asker = member_find(s, conn);
        if (!asker)
                return;
        if (asker->pending)
                return violation(s, asker, "WHO_IS before being welcomed");
        struct proto_msg r;
        proto_init(&r, PROTO_WHO);
        r.u.who.pid = q->pid;
        strscpy(r.u.who.host, q->host, sizeof r.u.who.host);
        r.u.who.status = PROTO_WHO_UNKNOWN;
        for (size_t i = 0; i < s->n_members; i++) {
                const struct coord_member *m = s->members[i];
                if (m->pending || m->pid != q->pid || strcmp(m->host, q->host))
                        continue;
                strscpy(r.u.who.upid, m->upid, sizeof r.u.who.upid);
                if (m->placeholder || m->execing)
                        r.u.who.status = PROTO_WHO_EXEC;
                else if (m->in_round && s->mode == COORD_MODE_CKPT)
                        r.u.who.status = PROTO_WHO_IN_ROUND;
                else
                        r.u.who.status = PROTO_WHO_MEMBER;
                break;
        }
        send_to(s, conn, &r);
}

void coord_state_notice(struct coord_state *s, uint64_t conn, const struct proto_notice *n) {
        struct coord_member *m = member_find(s, conn);
        if (!m)
                return;
        if (m->pending)
                return violation(s, m, "NOTICE before being welcomed");
        char who[PROTO_NAME_MAX + PROTO_HOST_MAX + 64];
        member_describe(m, who, sizeof who);
        struct coord_log *l = log_add(s, n->level, COORD_EV_NONE, "%s: %s", who, n->text);
        log_set_member(l, m);
}

void coord_state_kv_get(struct coord_state *s, uint64_t conn, const struct proto_kv *kv) {
        struct coord_member *m = member_find(s, conn);
        if (!m)
                return;
        if (m->pending)
                return violation(s, m, "KV_GET before being welcomed");
        struct proto_msg r;
        proto_init(&r, PROTO_KV_VALUE);
        strscpy(r.u.kv.key, kv->key, sizeof r.u.kv.key);
        bool found;
        size_t i = kv_pos(s, kv->key, &found);
        if (found) {
                r.u.kv.found = 1;
                r.u.kv.value_len = s->kv[i].len;
                memcpy(r.u.kv.value, s->kv[i].value, s->kv[i].len);
        }
        send_to(s, conn, &r);
}

/* ---- commands and timers ---------------------------------------------- */

void coord_state_set_interval(struct coord_state *s, uint32_t seconds) {
        s->interval = seconds;
        if (s->mode == COORD_MODE_IDLE)
                arm_interval(s);
        log_add(s, LOG_INFO, COORD_EV_NONE, "checkpoint interval set to %" PRIu32 " s%s", seconds,
                seconds ? "" : " (off)");
}

static void kill_finish(struct coord_state *s) {
        size_t n = s->n_kill_waiters;
        uint64_t *w = TAKE_PTR(s->kill_waiters);
        s->n_kill_waiters = 0;
        s->mode = COORD_MODE_IDLE;
        s->phase = PROTO_PH_NONE;
        s->kill_deadline = 0;
        restart_reset(s);
        for (size_t i = 0; i < n; i++)
                reply(s, w[i], 0, "all processes are gone");
        free(w);
        if (s->quit && !s->exiting) {
                s->exiting = true;
                log_add(s, LOG_INFO, COORD_EV_NONE, "quitting");
                exit_loop(s, 0);
        }
        maybe_end(s);
}

static void kill_add_waiter(struct coord_state *s, uint64_t requester) {
        if (requester == COORD_REQ_NONE)
                return;
        s->kill_waiters = xrealloc(s->kill_waiters, s->n_kill_waiters + 1, sizeof *s->kill_waiters);
        s->kill_waiters[s->n_kill_waiters++] = requester;
}

static void kill_start(struct coord_state *s, uint64_t requester, bool quit) {
        s->quit |= quit;
        if (s->mode == COORD_MODE_KILL) {
                kill_add_waiter(s, requester);
                return;
        }
        if (s->mode == COORD_MODE_CKPT) {
                struct coord_action *a = act_new(s, COORD_ACT_DISCARD);
                strscpy(a->path, s->tmpdir, sizeof a->path);
                struct coord_log *l = log_add(s, LOG_WARNING, COORD_EV_CKPT_ABORTED,
                                              "checkpoint generation %" PRIu64 " aborted: the computation is being killed", s->gen);
                l->fields |= COORD_LOG_GENERATION;
                l->generation = s->gen;
                log_set_reason(l, "the computation is being killed");
                reply(s, s->requester, -ECANCELED, "checkpoint aborted: the computation is being killed");
                s->requester = COORD_REQ_NONE;
        }
        /* Waiting newcomers are told to go away. */
        for (size_t i = s->n_members; i-- > 0;) {
                struct coord_member *m = s->members[i];
                if (!m->pending)
                        continue;
                member_unlink(s, m);
                reject(s, m->conn, &m->peer, PROTO_REJ_SHUTTING_DOWN, "the coordinator is killing its computation");
                member_free(m);
        }
        s->mode = COORD_MODE_KILL;
        s->phase = PROTO_PH_NONE;
        s->interval_deadline = 0;
        s->rst_deadline = 0;
        kill_add_waiter(s, requester);
        if (s->n_members == 0) {
                kill_finish(s);
                return;
        }
        s->kill_deadline = now_mono(s) + (uint64_t) s->cfg.kill_grace_ms * 1000 + COORD_KILL_SLACK_USEC;
        struct proto_msg k;
        proto_init(&k, PROTO_KILL);
        k.u.kill.grace_ms = s->cfg.kill_grace_ms;
        send_members(s, &k, false);
        for (size_t i = 0; i < s->n_members; i++)
                s->members[i]->in_round = false;
        log_add(s, LOG_INFO, COORD_EV_NONE, "killing %zu processes of computation %s", s->n_members, s->comp_id);
}

void coord_state_kill(struct coord_state *s, uint64_t requester, bool quit) {
        if (s->mode == COORD_MODE_RESTART)
                log_add(s, LOG_WARNING, COORD_EV_NONE, "restart of generation %" PRIu64 " cancelled: killed", s->rst_gen);
        kill_start(s, requester, quit);
}

/* Processes that did not stop (or capture) in time: stopped by the user
 * (SIGSTOP, ^Z), stuck in the kernel, or in a long dmtcp_disable_ckpt
 * section. The checkpoint is aborted for all; the late ones leave the round,
 * so the others resume now, and what they report about this generation when
 * they wake is dropped (they find the abort waiting and resume too). */
static void stop_timed_out(struct coord_state *s) {
        char what[PROTO_TEXT_MAX + 1], reason[PROTO_TEXT_MAX + 1];
        const struct coord_member *culprit = NULL;
        for (size_t i = 0; i < s->n_members && !culprit; i++)
                if (s->members[i]->in_round && s->members[i]->done < s->phase)
                        culprit = s->members[i];
        describe_not_done(s, what, sizeof what);
        text_printf(reason, sizeof reason, "not stopped within %" PRIu64 " s (phase %s): %s",
                    s->cfg.stop_timeout_usec / 1000000, proto_phase_name(s->phase), what);
        const uint8_t phase = s->phase;
        const uint64_t gen = s->gen;
        ckpt_abort(s, -ETIMEDOUT, reason, culprit);
        for (size_t i = 0; i < s->n_members; i++) {
                struct coord_member *m = s->members[i];
                if (m->in_round && m->done < phase) {
                        m->in_round = false;
                        m->stale_gen = gen;
                }
        }
        s->left_out_gen = gen;
        resume_check(s);
}

void coord_state_tick(struct coord_state *s) {
        uint64_t now = now_mono(s);
        if (s->mode == COORD_MODE_RESTART && s->rst_deadline && now >= s->rst_deadline) {
                char what[PROTO_TEXT_MAX + 1], msg[PROTO_TEXT_MAX + 64];
                uint64_t secs = s->cfg.restart_timeout_usec / 1000000;
                if (s->phase == PROTO_PH_RST_JOIN) {
                        describe_missing(s, what, sizeof what);
                        text_printf(msg, sizeof msg, "restart of generation %" PRIu64 " timed out after %" PRIu64 " s: %s",
                                 s->rst_gen, secs, what);
                } else {
                        describe_not_done(s, what, sizeof what);
                        text_printf(msg, sizeof msg, "restart of generation %" PRIu64 " timed out after %" PRIu64 " s in phase %s: %s",
                                 s->rst_gen, secs, proto_phase_name(s->phase), what);
                }
                restart_fail(s, msg);
        }
        if (s->mode == COORD_MODE_CKPT && s->phase < PROTO_PH_WRITE && s->stop_deadline && now >= s->stop_deadline)
                stop_timed_out(s);
        if (s->mode == COORD_MODE_KILL && s->kill_deadline && now >= s->kill_deadline) {
                while (s->n_members > 0) {
                        struct coord_member *m = s->members[s->n_members - 1];
                        struct coord_action *a = act_new(s, COORD_ACT_CLOSE);
                        a->conn = m->conn;
                        member_remove(s, m, -ETIMEDOUT, "did not exit within the grace period after KILL; dropped");
                }
        }
        for (size_t i = 0; i < s->n_members;) {
                struct coord_member *m = s->members[i];
                if (m->placeholder && now >= m->placeholder_deadline) {
                        m->execing = false;
                        member_remove(s, m, -ECONNRESET, "exec'd and its new image did not join");
                        continue;
                }
                i++;
        }
        if (s->interval_deadline && now >= s->interval_deadline) {
                char why[256];
                s->interval_deadline = now + (uint64_t) s->interval * 1000000u;
                if (s->interval == 0)
                        s->interval_deadline = 0;
                if (coord_state_ckpt_check(s, why, sizeof why) == 0)
                        act_new(s, COORD_ACT_CHECKPOINT);
                else
                        log_add(s, LOG_INFO, COORD_EV_NONE, "interval checkpoint skipped: %s", why);
        }
}

uint64_t coord_state_next_deadline(const struct coord_state *s) {
        uint64_t d = 0;
        const uint64_t c[] = {
                s->mode == COORD_MODE_RESTART ? s->rst_deadline : 0,
                s->mode == COORD_MODE_KILL ? s->kill_deadline : 0,
                s->mode == COORD_MODE_CKPT && s->phase < PROTO_PH_WRITE ? s->stop_deadline : 0,
                s->interval_deadline,
        };
        for (size_t i = 0; i < ARRAY_SIZE(c); i++)
                if (c[i] && (!d || c[i] < d))
                        d = c[i];
        for (size_t i = 0; i < s->n_members; i++)
                if (s->members[i]->placeholder && (!d || s->members[i]->placeholder_deadline < d))
                        d = s->members[i]->placeholder_deadline;
        return d;
}

/* ---- queries ---------------------------------------------------------- */

bool coord_state_running(const struct coord_state *s) {
        if (s->mode != COORD_MODE_IDLE || coord_state_n_members(s) == 0)
                return false;
        for (size_t i = 0; i < s->n_members; i++)
                if (!s->members[i]->pending && s->members[i]->state != PROTO_MS_RUNNING)
                        return false;
        return true;
}

const char *coord_state_ckptdir(const struct coord_state *s) {
        if (s->ckptdir[0])
                return s->ckptdir;
        return s->cfg.ckptdir[0] ? s->cfg.ckptdir : s->cfg.cwd;
}

void coord_state_describe(const struct coord_state *s, char *buf, size_t size) {
        size_t n = coord_state_n_members(s);
        switch (s->mode) {
        case COORD_MODE_IDLE:
                if (n == 0)
                        text_printf(buf, size, "idle, no computation");
                else
                        text_printf(buf, size, "running, %zu processes", n);
                break;
        case COORD_MODE_CKPT:
                text_printf(buf, size, "checkpoint generation %" PRIu64 ": phase %s, %zu of %zu processes done",
                         s->gen, proto_phase_name(s->phase), n_done(s, s->phase), n_in_round(s));
                break;
        case COORD_MODE_RESUME:
                text_printf(buf, size, "checkpoint generation %" PRIu64 " %s: %zu of %zu processes resumed",
                         s->gen, s->aborted ? "aborted" : "committed", n_done(s, PROTO_PH_RESUME), n_in_round(s));
                break;
        case COORD_MODE_RESTART:
                if (s->phase == PROTO_PH_RST_JOIN)
                        text_printf(buf, size, "restart of generation %" PRIu64 ": %zu of %" PRIu32 " processes joined",
                                 s->rst_gen, n_in_round(s), s->rst_expected);
                else
                        text_printf(buf, size, "restart of generation %" PRIu64 ": phase %s, %zu of %zu processes done",
                                 s->rst_gen, proto_phase_name(s->phase), n_done(s, s->phase), n_in_round(s));
                break;
        case COORD_MODE_KILL:
                text_printf(buf, size, "killing: %zu processes left", s->n_members);
                break;
        }
}

void coord_state_fill_status(const struct coord_state *s, struct proto_status *st) {
        st->num_peers = (uint32_t) coord_state_n_members(s);
        st->running = coord_state_running(s);
        st->exit_on_last = s->cfg.exit_on_last;
        st->phase = s->mode == COORD_MODE_CKPT || s->mode == COORD_MODE_RESTART ? s->phase :
                    s->mode == COORD_MODE_RESUME ? PROTO_PH_RESUME : PROTO_PH_NONE;
        st->interval = s->comp_id[0] ? s->interval : (s->cfg.interval_fixed ? s->cfg.interval : 0);
        st->coord_pid = s->cfg.pid;
        st->generation = s->last_gen;
        st->last_ckpt_usec = s->last_ckpt_usec;
        strscpy(st->comp_id, s->comp_id, sizeof st->comp_id);
        strscpy(st->ckptdir, coord_state_ckptdir(s), sizeof st->ckptdir);
        coord_state_describe(s, st->state, sizeof st->state);
}

/* ---- life ------------------------------------------------------------- */

int coord_state_new(struct coord_state **ret, const struct coord_config *cfg) {
        struct coord_state *s = calloc(1, sizeof *s);
        if (!s)
                return -ENOMEM;
        s->cfg = *cfg;
        if (!s->cfg.kill_grace_ms)
                s->cfg.kill_grace_ms = COORD_KILL_GRACE_MS;
        if (!s->cfg.restart_timeout_usec)
                s->cfg.restart_timeout_usec = 60 * UINT64_C(1000000);
        s->now = now_usec;
        s->interval = cfg->interval_fixed ? cfg->interval : 0;
        *ret = s;
        return 0;
}

struct coord_state *coord_state_free(struct coord_state *s) {
        if (!s)
                return NULL;
        for (size_t i = 0; i < s->n_members; i++)
                member_free(s->members[i]);
        free(s->members);
        free(s->kill_waiters);
        free(s->departed);
        kv_reset(s);
        manifest_done(&s->rst_manifest);
        struct coord_action *a;
        while ((a = coord_state_next_action(s)))
                coord_action_free(a);
        free(s);
        return NULL;
}
