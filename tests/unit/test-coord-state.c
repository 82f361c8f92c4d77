/* The coordinator state machine, driven event by event with a fake clock;
 * every test checks the actions that come out. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <inttypes.h>
#include <string.h>
#include <syslog.h>
#include <cmocka.h>

#include "coord-state.h"
#include "util.h"

static uint64_t fake_mono = 1000000000ull, fake_real = 1700000000000000ull;

static uint64_t fake_clock(clockid_t c) {
        return c == CLOCK_MONOTONIC ? fake_mono : fake_real;
}

/* ---- recording actions -------------------------------------------------- */

#define MAX_ACTS 8192
static struct coord_action *acts[MAX_ACTS];
static size_t n_acts;

static void acts_clear(void) {
        for (size_t i = 0; i < n_acts; i++)
                coord_action_free(acts[i]);
        n_acts = 0;
}

/* Take every queued action (freeing the previous batch). */
static void take(struct coord_state *s) {
        acts_clear();
        struct coord_action *a;
        while ((a = coord_state_next_action(s))) {
                assert_true(n_acts < MAX_ACTS);
                acts[n_acts++] = a;
        }
}

static bool sends_to(const struct coord_action *a, uint64_t conn) {
        for (size_t i = 0; i < a->n_conns; i++)
                if (a->conns[i] == conn)
                        return true;
        return false;
}

/* The message of type t sent to conn in the current batch, or NULL. */
static const struct proto_msg *sent(int t, uint64_t conn) {
        for (size_t i = 0; i < n_acts; i++)
                if (acts[i]->type == COORD_ACT_SEND && acts[i]->msg.type == t && sends_to(acts[i], conn))
                        return &acts[i]->msg;
        return NULL;
}

/* How many recipients got a message of type t. */
static size_t n_sent(int t) {
        size_t n = 0;
        for (size_t i = 0; i < n_acts; i++)
                if (acts[i]->type == COORD_ACT_SEND && acts[i]->msg.type == t)
                        n += acts[i]->n_conns;
        return n;
}

static const struct coord_action *find(enum coord_action_type t) {
        for (size_t i = 0; i < n_acts; i++)
                if (acts[i]->type == t)
                        return acts[i];
        return NULL;
}

static const struct coord_log *event(enum coord_event ev) {
        for (size_t i = 0; i < n_acts; i++)
                if (acts[i]->type == COORD_ACT_LOG && acts[i]->log.event == ev)
                        return &acts[i]->log;
        return NULL;
}

static const struct coord_log *log_matching(const char *needle) {
        for (size_t i = 0; i < n_acts; i++)
                if (acts[i]->type == COORD_ACT_LOG && strstr(acts[i]->log.text, needle))
                        return &acts[i]->log;
        return NULL;
}

static const struct proto_result *reply_to(uint64_t requester) {
        for (size_t i = 0; i < n_acts; i++)
                if (acts[i]->type == COORD_ACT_REPLY && acts[i]->requester == requester)
                        return &acts[i]->msg.u.result;
        return NULL;
}

static bool closed(uint64_t conn) {
        for (size_t i = 0; i < n_acts; i++)
                if (acts[i]->type == COORD_ACT_CLOSE && acts[i]->conn == conn)
                        return true;
        return false;
}

static int rejected(uint64_t conn) {
        const struct proto_msg *m = sent(PROTO_REJECT, conn);
        if (!m)
                return 0;
        assert_true(closed(conn));
        return m->u.reject.code;
}

/* ---- fixtures ----------------------------------------------------------- */

static struct coord_config base_cfg(void) {
        struct coord_config cfg = {
                .pid = 4242,
                .restart_timeout_usec = 60 * 1000000ull,
                .kill_grace_ms = 10000,
        };
        strscpy(cfg.host, "hostA", sizeof cfg.host);
        strscpy(cfg.cwd, "/cwd", sizeof cfg.cwd);
        return cfg;
}

static struct coord_state *new_state(const struct coord_config *cfg) {
        struct coord_state *s;
        assert_int_equal(coord_state_new(&s, cfg), 0);
        s->now = fake_clock;
        return s;
}

static int teardown(void **state) {
        acts_clear();
        coord_state_free(*state);
        return 0;
}

static int setup(void **state) {
        struct coord_config cfg = base_cfg();
        *state = new_state(&cfg);
        return 0;
}

static struct proto_hello worker_hello(const char *program, const char *comp) {
        struct proto_hello h = { .role = PROTO_ROLE_WORKER, .pid = 100 };
        strscpy(h.program, program, sizeof h.program);
        strscpy(h.host, "hostA", sizeof h.host);
        snprintf(h.upid, sizeof h.upid, "upid-%s", program);
        if (comp)
                strscpy(h.comp_id, comp, sizeof h.comp_id);
        return h;
}

static int join(struct coord_state *s, uint64_t conn, const char *program) {
        struct proto_hello h = worker_hello(program, NULL);
        return coord_state_hello(s, conn, &h, NULL, NULL);
}

static void done(struct coord_state *s, uint64_t conn, uint64_t gen, int phase, int status, const char *detail,
                 uint64_t bytes) {
        struct proto_phase_done pd = { .generation = gen, .phase = (uint8_t) phase, .status = status, .bytes = bytes,
                                       .crc = 0x1234 };
        if (detail)
                strscpy(pd.detail, detail, sizeof pd.detail);
        coord_state_phase_done(s, conn, &pd);
}

static void all_done(struct coord_state *s, const uint64_t *conns, size_t n, uint64_t gen, int phase) {
        for (size_t i = 0; i < n; i++) {
                char img[64];
                snprintf(img, sizeof img, "ckpt_%" PRIu64 ".dmtcp", conns[i]);
                done(s, conns[i], gen, phase, 0, phase == PROTO_PH_WRITE ? img : NULL, 1000 + conns[i]);
        }
}

/* Start a blocking checkpoint of generation gen for requester 7777. */
static void start(struct coord_state *s, uint64_t gen, uint32_t flags) {
        char why[256];
        assert_int_equal(coord_state_ckpt_check(s, why, sizeof why), 0);
        char tmp[64];
        snprintf(tmp, sizeof tmp, "/ck/.gen-%06" PRIu64 ".tmp", gen);
        coord_state_ckpt_start(s, gen, tmp, flags, 7777, true);
}

/* Run the checkpoint up to (not including) the DONE of phase upto. */
static void advance(struct coord_state *s, const uint64_t *conns, size_t n, uint64_t gen, int upto) {
        for (int p = PROTO_PH_SUSPEND; p < upto; p++)
                all_done(s, conns, n, gen, p);
        take(s);
}

/* ---- joining ------------------------------------------------------------ */

static void test_join_creates_computation(void **state) {
        struct coord_state *s = *state;
        struct proto_hello h = worker_hello("a", NULL);
        strscpy(h.ckptdir, "/from/worker", sizeof h.ckptdir);
        h.interval = 30;
        assert_int_equal(coord_state_hello(s, 10, &h, NULL, NULL), 1);
        take(s);
        const struct proto_msg *w = sent(PROTO_WELCOME, 10);
        assert_non_null(w);
        assert_int_equal(w->u.welcome.member_id, 1);
        assert_true(!strncmp(w->u.welcome.comp_id, "hostA-4242-", 11));
        assert_string_equal(w->u.welcome.ckptdir, "/from/worker");
        assert_int_equal(w->u.welcome.interval, 30);
        assert_non_null(event(COORD_EV_MEMBER_JOINED));
        assert_int_equal(event(COORD_EV_MEMBER_JOINED)->processes, 1);
        assert_true(coord_state_running(s));
        assert_int_equal(s->interval_deadline, fake_mono + 30 * 1000000ull);

        /* An empty comp_id joins the existing computation. */
        assert_int_equal(join(s, 11, "b"), 1);
        take(s);
        assert_string_equal(sent(PROTO_WELCOME, 11)->u.welcome.comp_id, s->comp_id);
        assert_int_equal(sent(PROTO_WELCOME, 11)->u.welcome.member_id, 2);

        /* Another computation's worker is refused, and the refusal logged. */
        h = worker_hello("c", "other-comp");
        assert_int_equal(coord_state_hello(s, 12, &h, NULL, NULL), 0);
        take(s);
        assert_int_equal(rejected(12), PROTO_REJ_WRONG_COMP);
        assert_non_null(event(COORD_EV_PEER_REFUSED));
        assert_int_equal(coord_state_n_members(s), 2);
        assert_false(coord_state_is_member(s, 12));
}

static void test_adopt_and_ckptdir_precedence(void **state) {
        struct coord_config cfg = base_cfg();
        strscpy(cfg.ckptdir, "/opt/ck", sizeof cfg.ckptdir);
        cfg.interval = 5;
        cfg.interval_fixed = true;
        struct coord_state *s = new_state(&cfg);
        struct proto_hello h = worker_hello("a", "comp-X");
        h.generation = 9;
        h.interval = 99;
        strscpy(h.ckptdir, "/from/worker", sizeof h.ckptdir);
        assert_int_equal(coord_state_hello(s, 10, &h, NULL, NULL), 1);
        take(s);
        const struct proto_msg *w = sent(PROTO_WELCOME, 10);
        assert_string_equal(w->u.welcome.comp_id, "comp-X");
        assert_int_equal(w->u.welcome.generation, 9);
        assert_string_equal(w->u.welcome.ckptdir, "/opt/ck");
        assert_int_equal(w->u.welcome.interval, 5);
        assert_int_equal(coord_state_next_generation(s, 3), 10);
        assert_int_equal(coord_state_next_generation(s, 12), 13);
        /* Leaving ends the computation. */
        coord_state_disconnect(s, 10, NULL);
        take(s);
        assert_non_null(event(COORD_EV_MEMBER_LEFT));
        assert_string_equal(s->comp_id, "");
        assert_null(find(COORD_ACT_EXIT));
        acts_clear();
        coord_state_free(s);

        /* Without --ckptdir and with a relative worker ckptdir: the cwd. */
        cfg = base_cfg();
        s = new_state(&cfg);
        h = worker_hello("a", NULL);
        strscpy(h.ckptdir, "relative/dir", sizeof h.ckptdir);
        coord_state_hello(s, 10, &h, NULL, NULL);
        take(s);
        assert_string_equal(sent(PROTO_WELCOME, 10)->u.welcome.ckptdir, "/cwd");
        acts_clear();
        coord_state_free(s);
}

/* ---- checkpoints -------------------------------------------------------- */

static void test_commit_path(void **state) {
        struct coord_state *s = *state;
        join(s, 10, "a");
        join(s, 11, "b");
        take(s);
        start(s, 4, 0);
        take(s);
        assert_int_equal(n_sent(PROTO_CKPT_BEGIN), 2);
        const struct proto_msg *b = sent(PROTO_CKPT_BEGIN, 11);
        assert_int_equal(b->u.ckpt_begin.generation, 4);
        assert_int_equal(b->u.ckpt_begin.members, 2);
        assert_string_equal(b->u.ckpt_begin.dir, "/ck/.gen-000004.tmp");
        assert_string_equal(b->u.ckpt_begin.comp_id, s->comp_id);
        assert_non_null(event(COORD_EV_CKPT_STARTED));
        assert_false(coord_state_running(s));
        assert_null(reply_to(7777));            /* blocking: no answer yet */

        for (int p = PROTO_PH_SUSPEND; p < PROTO_PH_WRITE; p++) {
                done(s, 10, 4, p, 0, NULL, 0);
                take(s);
                assert_int_equal(n_sent(PROTO_PHASE_GO), 0);    /* not everyone yet */
                done(s, 11, 4, p, 0, NULL, 0);
                take(s);
                assert_int_equal(n_sent(PROTO_PHASE_GO), 2);
                assert_int_equal(sent(PROTO_PHASE_GO, 10)->u.phase_go.phase, p);
        }
        done(s, 10, 4, PROTO_PH_WRITE, 0, "img-a", 100);
        take(s);
        assert_null(find(COORD_ACT_COMMIT));
        done(s, 11, 4, PROTO_PH_WRITE, 0, "img-b", 250);
        take(s);
        const struct coord_action *a = find(COORD_ACT_COMMIT);
        assert_non_null(a);
        assert_int_equal(a->commit.generation, 4);
        assert_int_equal(a->commit.n_images, 2);
        assert_string_equal(a->commit.images[0].name, "img-a");
        assert_int_equal(a->commit.images[1].bytes, 250);
        assert_string_equal(a->commit.images[1].program, "b");
        assert_string_equal(a->commit.images[1].upid, "upid-b");
        assert_string_equal(a->commit.tmpdir, "/ck/.gen-000004.tmp");
        assert_string_equal(a->commit.ckptdir, "/cwd");

        fake_mono += 1500000;
        coord_state_commit_done(s, 0, NULL);
        take(s);
        assert_int_equal(n_sent(PROTO_CKPT_COMMITTED), 2);
        assert_string_equal(sent(PROTO_CKPT_COMMITTED, 10)->u.ckpt_committed.dir, "/cwd/gen-000004");
        const struct proto_result *r = reply_to(7777);
        assert_non_null(r);
        assert_int_equal(r->status, 0);
        assert_int_equal(r->generation, 4);
        assert_int_equal(r->bytes, 350);
        assert_int_equal(r->processes, 2);
        assert_true(r->duration_usec >= 1500000);
        assert_string_equal(r->dir, "/cwd/gen-000004");
        const struct coord_log *l = event(COORD_EV_CKPT_COMMITTED);
        assert_non_null(l);
        assert_int_equal(l->bytes, 350);
        assert_int_equal(s->last_gen, 4);
        assert_true(s->last_ckpt_usec > 0);

        /* Busy until everyone resumed. */
        char why[256];
        assert_int_equal(coord_state_ckpt_check(s, why, sizeof why), -EBUSY);
        done(s, 10, 4, PROTO_PH_RESUME, 0, NULL, 0);
        take(s);
        assert_false(coord_state_running(s));
        done(s, 11, 4, PROTO_PH_RESUME, 0, NULL, 0);
        take(s);
        assert_true(coord_state_running(s));
        assert_int_equal(coord_state_ckpt_check(s, why, sizeof why), 0);
}

static void test_busy_and_empty(void **state) {
        struct coord_state *s = *state;
        char why[256];
        assert_int_equal(coord_state_ckpt_check(s, why, sizeof why), -ENOENT);
        assert_non_null(strstr(why, "no processes"));
        join(s, 10, "a");
        start(s, 1, 0);
        take(s);
        assert_int_equal(coord_state_ckpt_check(s, why, sizeof why), -EBUSY);
        /* A second start while busy is answered with the error. */
        coord_state_ckpt_start(s, 2, "/x", 0, 555, true);
        take(s);
        assert_int_equal(reply_to(555)->status, -EBUSY);
        assert_int_equal(n_sent(PROTO_CKPT_BEGIN), 0);
}

static void test_plain_checkpoint_answers_at_once(void **state) {
        struct coord_state *s = *state;
        join(s, 10, "a");
        take(s);
        coord_state_ckpt_start(s, 1, "/ck/.gen-000001.tmp", 0, 555, false);
        take(s);
        const struct proto_result *r = reply_to(555);
        assert_non_null(r);
        assert_int_equal(r->status, 0);
        assert_int_equal(r->generation, 1);
        /* Nobody waits for the commit. */
        const uint64_t c[] = { 10 };
        advance(s, c, 1, 1, PROTO_PH_WRITE + 1);
        assert_non_null(find(COORD_ACT_COMMIT));
        coord_state_commit_done(s, 0, NULL);
        take(s);
        assert_null(reply_to(555));
}

/* A member reports failure at phase p: the checkpoint is aborted. */
static void test_failure_in_each_phase(void **state) {
        for (int p = PROTO_PH_SUSPEND; p <= PROTO_PH_WRITE; p++) {
                struct coord_config cfg = base_cfg();
                struct coord_state *s = new_state(&cfg);
                const uint64_t c[] = { 10, 11 };
                join(s, 10, "good");
                join(s, 11, "bad");
                start(s, 3, 0);
                advance(s, c, 2, 3, p);
                done(s, 11, 3, p, -ENOSPC, "disk full", 0);
                take(s);
                const struct coord_action *d = find(COORD_ACT_DISCARD);
                assert_non_null(d);
                assert_string_equal(d->path, "/ck/.gen-000003.tmp");
                assert_int_equal(n_sent(PROTO_CKPT_ABORT), 2);  /* the failing one must resume too */
                const struct proto_msg *ab = sent(PROTO_CKPT_ABORT, 10);
                assert_non_null(strstr(ab->u.ckpt_abort.reason, "disk full"));
                assert_non_null(strstr(ab->u.ckpt_abort.reason, "bad"));
                assert_non_null(strstr(ab->u.ckpt_abort.reason, proto_phase_name(p)));
                const struct proto_result *r = reply_to(7777);
                assert_int_equal(r->status, -ENOSPC);
                assert_non_null(strstr(r->message, "aborted"));
                const struct coord_log *l = event(COORD_EV_CKPT_ABORTED);
                assert_non_null(l);
                assert_int_equal(l->generation, 3);
                assert_true(l->fields & COORD_LOG_REASON);
                assert_null(find(COORD_ACT_COMMIT));
                /* A DONE that crossed the ABORT is harmless. */
                done(s, 10, 3, p, 0, p == PROTO_PH_WRITE ? "img" : NULL, 0);
                take(s);
                assert_null(sent(PROTO_REJECT, 10));
                done(s, 10, 3, PROTO_PH_RESUME, 0, NULL, 0);
                done(s, 11, 3, PROTO_PH_RESUME, 0, NULL, 0);
                take(s);
                assert_true(coord_state_running(s));
                assert_int_equal(s->last_gen, 0);
                acts_clear();
                coord_state_free(s);
        }
}

/* A member vanishes at phase p (once suspended): the others are told, the
 * checkpoint aborted. */
static void test_vanish_in_each_phase(void **state) {
        for (int p = PROTO_PH_DRAIN; p <= PROTO_PH_WRITE; p++) {
                struct coord_config cfg = base_cfg();
                struct coord_state *s = new_state(&cfg);
                const uint64_t c[] = { 10, 11, 12 };
                join(s, 10, "a");
                join(s, 11, "b");
                join(s, 12, "victim");
                start(s, 1, 0);
                /* Some have already reported p, the victim not. */
                advance(s, c, 3, 1, p);
                done(s, 10, 1, p, 0, p == PROTO_PH_WRITE ? "img-a" : NULL, 1);
                coord_state_disconnect(s, 12, "connection closed");
                take(s);
                assert_int_equal(n_sent(PROTO_CKPT_ABORT), 2);
                assert_null(sent(PROTO_CKPT_ABORT, 12));
                assert_non_null(strstr(sent(PROTO_CKPT_ABORT, 11)->u.ckpt_abort.reason, "victim"));
                assert_non_null(find(COORD_ACT_DISCARD));
                assert_int_equal(reply_to(7777)->status, -ECONNRESET);
                assert_non_null(event(COORD_EV_MEMBER_LEFT));
                assert_int_equal(event(COORD_EV_CKPT_ABORTED)->member, 3);
                done(s, 10, 1, PROTO_PH_RESUME, 0, NULL, 0);
                take(s);
                assert_false(coord_state_running(s));
                done(s, 11, 1, PROTO_PH_RESUME, 0, NULL, 0);
                take(s);
                assert_true(coord_state_running(s));
                assert_int_equal(coord_state_n_members(s), 2);
                acts_clear();
                coord_state_free(s);
        }
}

/* A member that ends before it is suspended is left out of the checkpoint,
 * which commits with the others; one that ends after reporting SUSPEND
 * aborts it. */
static void test_vanish_before_suspended(void **state) {
        struct coord_config cfg = base_cfg();
        struct coord_state *s = new_state(&cfg);
        const uint64_t c[] = { 10, 11 };
        join(s, 10, "a");
        join(s, 11, "b");
        join(s, 12, "shortlived");
        start(s, 1, 0);
        done(s, 10, 1, PROTO_PH_SUSPEND, 0, NULL, 0);
        coord_state_disconnect(s, 12, "connection closed");
        take(s);
        assert_int_equal(n_sent(PROTO_CKPT_ABORT), 0);
        assert_null(sent(PROTO_PHASE_GO, 10));
        done(s, 11, 1, PROTO_PH_SUSPEND, 0, NULL, 0);
        take(s);
        assert_non_null(sent(PROTO_PHASE_GO, 10));
        assert_non_null(sent(PROTO_PHASE_GO, 11));
        acts_clear();
        for (int p = PROTO_PH_SUSPEND + 1; p < PROTO_PH_WRITE; p++)
                all_done(s, c, 2, 1, p);
        take(s);
        done(s, 10, 1, PROTO_PH_WRITE, 0, "img-a", 1);
        done(s, 11, 1, PROTO_PH_WRITE, 0, "img-b", 1);
        take(s);
        assert_int_equal(n_sent(PROTO_CKPT_ABORT), 0);
        assert_non_null(find(COORD_ACT_COMMIT));
        coord_state_commit_done(s, 0, NULL);
        take(s);
        assert_int_equal(n_sent(PROTO_CKPT_COMMITTED), 2);
        acts_clear();
        coord_state_free(s);

        /* Suspended, then gone: abort. */
        s = new_state(&cfg);
        join(s, 10, "a");
        join(s, 11, "b");
        join(s, 12, "victim");
        start(s, 1, 0);
        done(s, 12, 1, PROTO_PH_SUSPEND, 0, NULL, 0);
        coord_state_disconnect(s, 12, "connection closed");
        take(s);
        assert_int_equal(n_sent(PROTO_CKPT_ABORT), 2);
        assert_non_null(strstr(sent(PROTO_CKPT_ABORT, 10)->u.ckpt_abort.reason, "victim"));
        acts_clear();
        coord_state_free(s);
}

static int join_pid(struct coord_state *s, uint64_t conn, const char *program, uint32_t pid) {
        struct proto_hello h = worker_hello(program, NULL);
        h.pid = pid;
        return coord_state_hello(s, conn, &h, NULL, NULL);
}

static uint8_t who(struct coord_state *s, uint64_t asker, uint32_t pid) {
        struct proto_who_is q = { .pid = pid };
        strscpy(q.host, "hostA", sizeof q.host);
        acts_clear();
        coord_state_who_is(s, asker, &q);
        take(s);
        const struct proto_msg *r = sent(PROTO_WHO, asker);
        assert_non_null(r);
        assert_int_equal(r->u.who.pid, pid);
        return r->u.who.status;
}

/* WHO_IS tells a parent whether its child is a member, in the round, or
 * between an exec and its new image joining. */
static void test_who_is(void **state) {
        struct coord_state *s = *state;
        join_pid(s, 10, "parent", 500);
        join_pid(s, 11, "child", 501);
        take(s);
        assert_int_equal(who(s, 10, 501), PROTO_WHO_MEMBER);
        assert_int_equal(who(s, 10, 999), PROTO_WHO_UNKNOWN);
        start(s, 1, 0);
        assert_int_equal(who(s, 10, 501), PROTO_WHO_IN_ROUND);
        coord_state_exec(s, 11);
        assert_int_equal(who(s, 10, 501), PROTO_WHO_EXEC);
        /* The exec failed: in the round as before, and its leaving is a
         * leaving, not an exec whose new image is awaited. */
        coord_state_exec_failed(s, 11);
        assert_int_equal(who(s, 10, 501), PROTO_WHO_IN_ROUND);
}

/* A member's NOTICE is one line of the log at its level, naming the
 * member. */
static void test_notice(void **state) {
        struct coord_state *s = *state;
        join_pid(s, 10, "server", 500);
        take(s);
        acts_clear();
        struct proto_notice n = { .level = LOG_WARNING };
        strscpy(n.text, "fd 7: TCP connection to 192.0.2.1:80 is outside the computation", sizeof n.text);
        coord_state_notice(s, 10, &n);
        take(s);
        const struct coord_log *l = log_matching("outside the computation");
        assert_non_null(l);
        assert_int_equal(l->level, LOG_WARNING);
        assert_non_null(strstr(l->text, "server"));
        assert_non_null(strstr(l->text, "pid 500"));
        assert_true(l->fields & COORD_LOG_MEMBER);
        assert_false(closed(10));
        /* From a connection that is no member: nothing. */
        acts_clear();
        coord_state_notice(s, 99, &n);
        take(s);
        assert_null(log_matching("outside the computation"));
}

/* A member that announced an exec keeps its place in the round until its
 * new image joins; that image takes part in the checkpoint. */
static void test_exec_keeps_place(void **state) {
        struct coord_state *s = *state;
        const uint64_t c[] = { 10, 12 };
        join_pid(s, 10, "parent", 500);
        join_pid(s, 11, "child", 501);
        take(s);
        start(s, 1, 0);
        done(s, 10, 1, PROTO_PH_SUSPEND, 0, NULL, 0);
        coord_state_exec(s, 11);
        coord_state_disconnect(s, 11, "connection closed");
        take(s);
        assert_int_equal(n_sent(PROTO_CKPT_ABORT), 0);
        assert_null(event(COORD_EV_MEMBER_LEFT));
        assert_null(sent(PROTO_PHASE_GO, 10));          /* the round waits for the new image */
        assert_int_equal(who(s, 10, 501), PROTO_WHO_EXEC);
        /* The new image of pid 501 joins and is sent the checkpoint. */
        acts_clear();
        join_pid(s, 12, "newprog", 501);
        take(s);
        assert_non_null(sent(PROTO_WELCOME, 12));
        assert_non_null(sent(PROTO_CKPT_BEGIN, 12));
        assert_int_equal(coord_state_n_members(s), 2);
        done(s, 12, 1, PROTO_PH_SUSPEND, 0, NULL, 0);
        take(s);
        assert_non_null(sent(PROTO_PHASE_GO, 10));
        assert_non_null(sent(PROTO_PHASE_GO, 12));
        for (int p = PROTO_PH_SUSPEND + 1; p < PROTO_PH_WRITE; p++)
                all_done(s, c, 2, 1, p);
        done(s, 10, 1, PROTO_PH_WRITE, 0, "img-a", 1);
        done(s, 12, 1, PROTO_PH_WRITE, 0, "img-b", 1);
        take(s);
        assert_non_null(find(COORD_ACT_COMMIT));
}

/* An exec'd member whose new image never comes is dropped after the grace. */
static void test_exec_grace_expires(void **state) {
        struct coord_state *s = *state;
        join_pid(s, 10, "a", 500);
        join_pid(s, 11, "b", 501);
        take(s);
        coord_state_exec(s, 11);
        coord_state_disconnect(s, 11, "connection closed");
        take(s);
        assert_int_equal(coord_state_n_members(s), 2);
        assert_true(coord_state_next_deadline(s) > 0);
        fake_mono += COORD_EXEC_GRACE_USEC + 1;
        coord_state_tick(s);
        take(s);
        assert_non_null(event(COORD_EV_MEMBER_LEFT));
        assert_int_equal(coord_state_n_members(s), 1);
}

static void test_vanish_after_commit_is_no_abort(void **state) {
        struct coord_state *s = *state;
        const uint64_t c[] = { 10, 11 };
        join(s, 10, "a");
        join(s, 11, "b");
        start(s, 1, 0);
        advance(s, c, 2, 1, PROTO_PH_WRITE + 1);
        coord_state_commit_done(s, 0, NULL);
        take(s);
        coord_state_disconnect(s, 11, NULL);
        take(s);
        assert_null(find(COORD_ACT_DISCARD));
        done(s, 10, 1, PROTO_PH_RESUME, 0, NULL, 0);
        take(s);
        assert_true(coord_state_running(s));
        assert_int_equal(s->last_gen, 1);
}

/* A member that ends after it reported WRITE (a short process a
 * copy-on-write checkpoint let go) keeps its image in the generation; one
 * that ends before it reported WRITE aborts it; when all end after WRITE
 * the generation still commits, and the computation ends afterwards. */
static void test_vanish_after_write(void **state) {
        struct coord_state *s = *state;
        const uint64_t c[] = { 10, 11 };
        join(s, 10, "a");
        join(s, 11, "short");
        start(s, 2, 0);
        advance(s, c, 2, 2, PROTO_PH_WRITE);
        done(s, 11, 2, PROTO_PH_WRITE, 0, "img-short", 40);
        coord_state_disconnect(s, 11, "connection closed");
        take(s);
        assert_null(find(COORD_ACT_DISCARD));
        assert_null(find(COORD_ACT_COMMIT));
        assert_int_equal(n_sent(PROTO_CKPT_ABORT), 0);
        done(s, 10, 2, PROTO_PH_WRITE, 0, "img-a", 60);
        take(s);
        const struct coord_action *a = find(COORD_ACT_COMMIT);
        assert_non_null(a);
        assert_int_equal(a->commit.n_images, 2);
        assert_string_equal(a->commit.images[1].name, "img-short");
        assert_string_equal(a->commit.images[1].program, "short");
        coord_state_commit_done(s, 0, NULL);
        take(s);
        assert_int_equal(reply_to(7777)->processes, 2);
        assert_int_equal(reply_to(7777)->bytes, 100);
        done(s, 10, 2, PROTO_PH_RESUME, 0, NULL, 0);
        take(s);
        assert_true(coord_state_running(s));

        /* Everyone ends after WRITE: it commits all the same. */
        start(s, 3, 0);
        const uint64_t one[] = { 10 };
        advance(s, one, 1, 3, PROTO_PH_WRITE);
        done(s, 10, 3, PROTO_PH_WRITE, 0, "img-a3", 70);
        acts_clear();
        /* The COMMIT is queued with the image: ending now changes nothing. */
        coord_state_disconnect(s, 10, "connection closed");
        take(s);
        assert_int_equal(n_sent(PROTO_CKPT_ABORT), 0);
        coord_state_commit_done(s, 0, NULL);
        take(s);
        assert_non_null(event(COORD_EV_CKPT_COMMITTED));
        assert_int_equal(event(COORD_EV_CKPT_COMMITTED)->generation, 3);
        assert_int_equal(coord_state_n_members(s), 0);
        assert_string_equal(s->comp_id, "");            /* then it ended */
}

static void test_protocol_violations(void **state) {
        static const struct {
                uint64_t gen;
                int phase;
                const char *detail;
                int at;                         /* phase the checkpoint is in */
        } cases[] = {
                { 9, PROTO_PH_SUSPEND, NULL, PROTO_PH_SUSPEND },        /* wrong generation */
                { 1, PROTO_PH_DRAIN, NULL, PROTO_PH_SUSPEND },          /* phase ahead */
                { 1, PROTO_PH_SUSPEND, NULL, PROTO_PH_DRAIN },          /* phase repeated */
                { 1, PROTO_PH_RESUME, NULL, PROTO_PH_CAPTURE },         /* resume too early */
                { 1, PROTO_PH_WRITE, "../escape", PROTO_PH_WRITE },     /* not a plain file name */
                { 1, PROTO_PH_WRITE, "", PROTO_PH_WRITE },
                { 1, PROTO_PH_WRITE, "img-a", PROTO_PH_WRITE },         /* name already taken by a */
                { 1, PROTO_PH_RST_RESTORE, NULL, PROTO_PH_SUSPEND },    /* a restart phase */
        };
        for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
                struct coord_config cfg = base_cfg();
                struct coord_state *s = new_state(&cfg);
                const uint64_t c[] = { 10, 11 };
                join(s, 10, "a");
                join(s, 11, "b");
                start(s, 1, 0);
                advance(s, c, 2, 1, cases[i].at);
                if (cases[i].at == PROTO_PH_WRITE)
                        done(s, 10, 1, PROTO_PH_WRITE, 0, "img-a", 1);
                take(s);
                done(s, 11, cases[i].gen, cases[i].phase, 0, cases[i].detail, 1);
                take(s);
                assert_int_equal(rejected(11), PROTO_REJ_BAD_MESSAGE);
                assert_false(coord_state_is_member(s, 11));
                assert_non_null(sent(PROTO_CKPT_ABORT, 10));
                assert_null(sent(PROTO_CKPT_ABORT, 11));
                assert_int_equal(reply_to(7777)->status, -EPROTO);
                acts_clear();
                coord_state_free(s);
        }
}

static void test_phase_done_when_idle(void **state) {
        struct coord_state *s = *state;
        join(s, 10, "a");
        take(s);
        done(s, 10, 1, PROTO_PH_SUSPEND, 0, NULL, 0);
        take(s);
        assert_int_equal(rejected(10), PROTO_REJ_BAD_MESSAGE);
        assert_int_equal(coord_state_n_members(s), 0);
}

static void test_commit_failure_aborts(void **state) {
        struct coord_state *s = *state;
        const uint64_t c[] = { 10 };
        join(s, 10, "a");
        start(s, 1, 0);
        advance(s, c, 1, 1, PROTO_PH_WRITE + 1);
        coord_state_commit_done(s, -ENOSPC, "cannot write MANIFEST: No space left on device");
        take(s);
        assert_non_null(strstr(sent(PROTO_CKPT_ABORT, 10)->u.ckpt_abort.reason, "No space left"));
        assert_int_equal(reply_to(7777)->status, -ENOSPC);
        assert_non_null(find(COORD_ACT_DISCARD));
        assert_int_equal(s->last_gen, 0);
        assert_int_equal(s->last_ckpt_usec, 0);
}

/* A process that does not stop (SIGSTOP, ^Z) holds no one hostage: after
 * --stop-timeout the checkpoint is aborted, the others resume, and the late
 * one's reports about that generation are dropped when it wakes. */
static void test_stop_timeout(void **state) {
        (void) state;
        struct coord_config cfg = base_cfg();
        cfg.stop_timeout_usec = 30 * 1000000ull;
        struct coord_state *s = new_state(&cfg);
        const uint64_t c[] = { 10, 11, 12 };
        join(s, 10, "a");
        join(s, 11, "b");
        join(s, 12, "stopped");
        take(s);
        start(s, 1, 0);
        take(s);
        assert_int_equal(coord_state_next_deadline(s), fake_mono + 30 * 1000000ull);
        done(s, 10, 1, PROTO_PH_SUSPEND, 0, NULL, 0);
        done(s, 11, 1, PROTO_PH_SUSPEND, 0, NULL, 0);
        fake_mono += 29 * 1000000ull;
        coord_state_tick(s);
        take(s);
        assert_int_equal(n_sent(PROTO_CKPT_ABORT), 0);
        fake_mono += 1000000ull;
        coord_state_tick(s);
        take(s);
        assert_int_equal(n_sent(PROTO_CKPT_ABORT), 3);         /* the stopped one finds it when it wakes */
        assert_int_equal(reply_to(7777)->status, -ETIMEDOUT);
        assert_string_equal(reply_to(7777)->message,
                            "checkpoint generation 1 aborted: not stopped within 30 s (phase suspend): "
                            "1 of 3 processes not done: member 3 (stopped, pid 100 on hostA)");
        assert_non_null(find(COORD_ACT_DISCARD));
        assert_int_equal(s->mode, COORD_MODE_RESUME);
        done(s, 10, 1, PROTO_PH_RESUME, 0, NULL, 0);
        done(s, 11, 1, PROTO_PH_RESUME, 0, NULL, 0);
        take(s);
        assert_int_equal(s->mode, COORD_MODE_IDLE);
        assert_int_equal(coord_state_next_deadline(s), 0);

        /* It wakes: what it says about generation 1 is dropped, not a
         * protocol violation. */
        done(s, 12, 1, PROTO_PH_SUSPEND, 0, NULL, 0);
        done(s, 12, 1, PROTO_PH_RESUME, 0, NULL, 0);
        take(s);
        assert_false(closed(12));
        assert_int_equal(coord_state_n_members(s), 3);

        /* The next checkpoint includes it again, under a new number. */
        assert_int_equal(coord_state_next_generation(s, 0), 2);
        start(s, 2, 0);
        advance(s, c, 3, 2, PROTO_PH_WRITE + 1);
        assert_true(s->committing);
        coord_state_commit_done(s, 0, NULL);
        take(s);
        assert_int_equal(reply_to(7777)->status, 0);
        assert_int_equal(s->last_gen, 2);
        acts_clear();
        coord_state_free(s);
}

/* No limit unless configured: a checkpoint may wait as long as it takes. */
static void test_stop_timeout_off(void **state) {
        struct coord_state *s = *state;
        join(s, 10, "a");
        start(s, 1, 0);
        take(s);
        assert_int_equal(coord_state_next_deadline(s), 0);
        fake_mono += 3600 * 1000000ull;
        coord_state_tick(s);
        take(s);
        assert_int_equal(n_sent(PROTO_CKPT_ABORT), 0);
        assert_int_equal(s->mode, COORD_MODE_CKPT);
}

static void test_join_during_suspend_vs_later(void **state) {
        struct coord_state *s = *state;
        join(s, 10, "parent");
        start(s, 2, 0);
        take(s);
        /* A forked child joins while SUSPEND is open: it takes part. */
        assert_int_equal(join(s, 11, "child"), 1);
        take(s);
        assert_non_null(sent(PROTO_WELCOME, 11));
        const struct proto_msg *b = sent(PROTO_CKPT_BEGIN, 11);
        assert_non_null(b);
        assert_int_equal(b->u.ckpt_begin.members, 2);
        assert_int_equal(b->u.ckpt_begin.generation, 2);
        done(s, 10, 2, PROTO_PH_SUSPEND, 0, NULL, 0);
        take(s);
        assert_int_equal(n_sent(PROTO_PHASE_GO), 0);   /* the child counts */
        done(s, 11, 2, PROTO_PH_SUSPEND, 0, NULL, 0);
        take(s);
        assert_int_equal(n_sent(PROTO_PHASE_GO), 2);

        /* After SUSPEND was released, a newcomer joins at once, outside the
         * round: every member waited for its own children before SUSPEND. */
        assert_int_equal(join(s, 12, "late"), 1);
        take(s);
        const struct proto_msg *w = sent(PROTO_WELCOME, 12);
        assert_non_null(w);
        assert_string_equal(w->u.welcome.comp_id, s->comp_id);
        assert_null(sent(PROTO_CKPT_BEGIN, 12));
        assert_int_equal(coord_state_n_members(s), 3);
        assert_int_equal(coord_state_n_pending(s), 0);
        const uint64_t c[] = { 10, 11 };
        for (int p = PROTO_PH_SUSPEND + 1; p <= PROTO_PH_WRITE; p++)
                all_done(s, c, 2, 2, p);
        take(s);
        assert_null(sent(PROTO_CKPT_ABORT, 12));
        coord_state_commit_done(s, 0, NULL);
        take(s);
        assert_non_null(sent(PROTO_CKPT_COMMITTED, 10));
        assert_null(sent(PROTO_CKPT_COMMITTED, 12));
        all_done(s, c, 2, 2, PROTO_PH_RESUME);
        take(s);
        assert_int_equal(coord_state_n_members(s), 3);
        assert_true(coord_state_running(s));
}

/* Newcomers after SUSPEND: one that breaks the protocol is refused, one that
 * leaves just leaves; neither touches the checkpoint in flight. */
static void test_pending_violation_and_leave(void **state) {
        struct coord_state *s = *state;
        join(s, 10, "a");
        start(s, 1, 0);
        done(s, 10, 1, PROTO_PH_SUSPEND, 0, NULL, 0);
        join(s, 11, "waiting");
        join(s, 12, "waiting2");
        take(s);
        done(s, 11, 1, PROTO_PH_DRAIN, 0, NULL, 0);
        take(s);
        assert_int_equal(rejected(11), PROTO_REJ_BAD_MESSAGE);
        assert_null(sent(PROTO_CKPT_ABORT, 10));        /* a late newcomer is no participant */
        coord_state_disconnect(s, 12, NULL);
        take(s);
        assert_non_null(event(COORD_EV_MEMBER_LEFT));   /* it had joined the computation */
        assert_null(sent(PROTO_CKPT_ABORT, 10));
        assert_int_equal(coord_state_n_pending(s), 0);
        assert_int_equal(s->mode, COORD_MODE_CKPT);
}

static void test_kill_after(void **state) {
        struct coord_config cfg = base_cfg();
        cfg.exit_on_last = true;
        struct coord_state *s = new_state(&cfg);
        const uint64_t c[] = { 10, 11 };
        join(s, 10, "a");
        join(s, 11, "b");
        start(s, 1, PROTO_CKPT_KILL_AFTER);
        take(s);
        assert_int_equal(sent(PROTO_CKPT_BEGIN, 10)->u.ckpt_begin.flags, PROTO_CKPT_KILL_AFTER);
        advance(s, c, 2, 1, PROTO_PH_WRITE + 1);
        coord_state_commit_done(s, 0, NULL);
        take(s);
        assert_int_equal(reply_to(7777)->status, 0);
        coord_state_disconnect(s, 10, NULL);
        take(s);
        assert_null(find(COORD_ACT_EXIT));
        coord_state_disconnect(s, 11, NULL);
        take(s);
        assert_non_null(find(COORD_ACT_EXIT));
        assert_int_equal(find(COORD_ACT_EXIT)->exit_status, 0);
        assert_int_equal(s->mode, COORD_MODE_IDLE);
        acts_clear();
        coord_state_free(s);
}

/* ---- restart ------------------------------------------------------------ */

static struct manifest make_manifest(const char *comp, uint64_t gen, size_t n) {
        struct manifest mf = { .generation = gen, .time_usec = 123, .n_images = n };
        strscpy(mf.computation, comp, sizeof mf.computation);
        mf.images = calloc(n, sizeof *mf.images);
        assert_non_null(mf.images);
        for (size_t i = 0; i < n; i++) {
                snprintf(mf.images[i].name, sizeof mf.images[i].name, "img%zu", i + 1);
                snprintf(mf.images[i].upid, sizeof mf.images[i].upid, "u%zu", i + 1);
                snprintf(mf.images[i].program, sizeof mf.images[i].program, "prog%zu", i + 1);
                snprintf(mf.images[i].host, sizeof mf.images[i].host, "h%zu", i + 1);
        }
        return mf;
}

static struct proto_hello rst_hello(const char *comp, uint64_t gen, uint32_t members, const char *upid) {
        struct proto_hello h = { .role = PROTO_ROLE_RESTART, .pid = 7, .generation = gen, .members = members };
        strscpy(h.comp_id, comp, sizeof h.comp_id);
        strscpy(h.upid, upid, sizeof h.upid);
        strscpy(h.program, "prog", sizeof h.program);
        snprintf(h.ckptdir, sizeof h.ckptdir, "/data/ck/gen-%06" PRIu64, gen);
        return h;
}

static int rst_join(struct coord_state *s, uint64_t conn, const char *comp, uint64_t gen, uint32_t n,
                    const char *upid, const struct manifest *mf) {
        struct proto_hello h = rst_hello(comp, gen, n, upid);
        if (!coord_state_wants_manifest(s, &h))
                mf = NULL;
        return coord_state_hello(s, conn, &h, NULL, mf);
}

static void test_restart_rendezvous(void **state) {
        struct coord_state *s = *state;
        struct manifest mf = make_manifest("C", 5, 3);
        assert_int_equal(rst_join(s, 20, "C", 5, 3, "u1", &mf), 1);
        take(s);
        assert_non_null(sent(PROTO_WELCOME, 20));
        assert_int_equal(sent(PROTO_WELCOME, 20)->u.welcome.generation, 5);
        assert_string_equal(sent(PROTO_WELCOME, 20)->u.welcome.ckptdir, "/data/ck");
        assert_int_equal(s->mode, COORD_MODE_RESTART);
        assert_int_equal(rst_join(s, 21, "C", 5, 3, "u2", &mf), 1);
        take(s);
        assert_int_equal(n_sent(PROTO_PHASE_GO), 0);

        /* Mismatches. */
        assert_int_equal(rst_join(s, 30, "D", 5, 3, "u3", &mf), 0);
        take(s);
        assert_int_equal(rejected(30), PROTO_REJ_WRONG_COMP);
        assert_int_equal(rst_join(s, 31, "C", 6, 3, "u3", &mf), 0);
        take(s);
        assert_int_equal(rejected(31), PROTO_REJ_WRONG_COMP);
        assert_int_equal(rst_join(s, 32, "C", 5, 4, "u3", &mf), 0);
        take(s);
        assert_int_equal(rejected(32), PROTO_REJ_PEER_MISMATCH);
        assert_int_equal(rst_join(s, 33, "C", 5, 3, "u1", &mf), 0);
        take(s);
        assert_int_equal(rejected(33), PROTO_REJ_PEER_MISMATCH);
        assert_int_equal(rst_join(s, 34, "C", 5, 3, "u9", &mf), 0);
        take(s);
        assert_int_equal(rejected(34), PROTO_REJ_PEER_MISMATCH);
        assert_non_null(event(COORD_EV_PEER_REFUSED));

        /* A worker arriving during the restart waits for its end. */
        struct proto_hello wh = worker_hello("forked", "C");
        assert_int_equal(coord_state_hello(s, 40, &wh, NULL, NULL), 1);
        take(s);
        assert_null(sent(PROTO_WELCOME, 40));
        char why[256];
        assert_int_equal(coord_state_ckpt_check(s, why, sizeof why), -EBUSY);

        assert_int_equal(rst_join(s, 22, "C", 5, 3, "u3", &mf), 1);
        take(s);
        assert_int_equal(n_sent(PROTO_PHASE_GO), 3);
        assert_int_equal(sent(PROTO_PHASE_GO, 22)->u.phase_go.phase, PROTO_PH_RST_JOIN);
        /* Too late to join now. */
        assert_int_equal(rst_join(s, 35, "C", 5, 3, "u4", &mf), 0);
        take(s);
        assert_int_equal(rejected(35), PROTO_REJ_NOT_RUNNING);

        const uint64_t c[] = { 20, 21, 22 };
        for (int p = PROTO_PH_RST_RESTORE; p <= PROTO_PH_RST_REFILL; p++) {
                all_done(s, c, 2, 5, p);
                take(s);
                assert_int_equal(n_sent(PROTO_PHASE_GO), 0);
                done(s, 22, 5, p, 0, NULL, 0);
                take(s);
                assert_int_equal(n_sent(PROTO_PHASE_GO), 3);
                assert_int_equal(sent(PROTO_PHASE_GO, 20)->u.phase_go.phase, p);
        }
        fake_mono += 2000000;
        all_done(s, c, 3, 5, PROTO_PH_RST_RESUME);
        take(s);
        const struct coord_log *l = event(COORD_EV_RESTART_COMPLETED);
        assert_non_null(l);
        assert_int_equal(l->generation, 5);
        assert_int_equal(l->processes, 3);
        assert_true(l->duration_usec >= 2000000);
        assert_true(coord_state_running(s));
        assert_int_equal(s->last_gen, 5);
        assert_string_equal(coord_state_ckptdir(s), "/data/ck");
        /* The waiting worker joins the restarted computation. */
        assert_string_equal(sent(PROTO_WELCOME, 40)->u.welcome.comp_id, "C");
        assert_int_equal(coord_state_n_members(s), 4);
        assert_int_equal(coord_state_next_generation(s, 5), 6);
        manifest_done(&mf);
}

static void test_restart_refused_when_running(void **state) {
        struct coord_state *s = *state;
        join(s, 10, "a");
        take(s);
        assert_int_equal(rst_join(s, 20, "C", 5, 1, "u1", NULL), 0);
        take(s);
        assert_int_equal(rejected(20), PROTO_REJ_NOT_RUNNING);
        /* And a malformed restart HELLO. */
        struct proto_hello h = rst_hello("", 5, 1, "u1");
        assert_int_equal(coord_state_hello(s, 21, &h, NULL, NULL), 0);
        take(s);
        assert_int_equal(rejected(21), PROTO_REJ_BAD_MESSAGE);
}

static void test_restart_timeout_names_missing(void **state) {
        struct coord_config cfg = base_cfg();
        cfg.exit_on_last = true;
        struct coord_state *s = new_state(&cfg);
        struct manifest mf = make_manifest("C", 5, 3);
        rst_join(s, 20, "C", 5, 3, "u1", &mf);
        rst_join(s, 21, "C", 5, 3, "u3", &mf);
        take(s);
        assert_int_equal(coord_state_next_deadline(s), fake_mono + 60 * 1000000ull);
        fake_mono += 59 * 1000000ull;
        coord_state_tick(s);
        take(s);
        assert_int_equal(n_sent(PROTO_KILL), 0);
        fake_mono += 1000000ull;
        coord_state_tick(s);
        take(s);
        const struct coord_log *l = log_matching("timed out");
        assert_non_null(l);
        assert_int_equal(l->level, LOG_ERR);
        assert_string_equal(l->text, "restart of generation 5 timed out after 60 s: 1 of 3 processes missing: img2 (prog2 on host h2)");
        assert_int_equal(n_sent(PROTO_KILL), 2);
        assert_int_equal(sent(PROTO_KILL, 20)->u.kill.grace_ms, 10000);
        assert_int_equal(s->mode, COORD_MODE_KILL);
        coord_state_disconnect(s, 20, NULL);
        coord_state_disconnect(s, 21, NULL);
        take(s);
        assert_int_equal(s->mode, COORD_MODE_IDLE);
        assert_string_equal(s->comp_id, "");
        assert_non_null(find(COORD_ACT_EXIT));
        manifest_done(&mf);
        acts_clear();
        coord_state_free(s);
}

static void test_restart_timeout_counts_without_manifest(void **state) {
        struct coord_state *s = *state;
        rst_join(s, 20, "C", 2, 2, "u1", NULL);
        take(s);
        fake_mono += 61 * 1000000ull;
        coord_state_tick(s);
        take(s);
        assert_non_null(log_matching("timed out after 60 s: 1 of 2 processes missing"));
        assert_int_equal(n_sent(PROTO_KILL), 1);
        /* The kill grace runs out: the member is dropped. */
        fake_mono += 13 * 1000000ull;
        coord_state_tick(s);
        take(s);
        assert_true(closed(20));
        assert_int_equal(s->n_members, 0);
        assert_int_equal(s->mode, COORD_MODE_IDLE);
}

static void test_restart_force(void **state) {
        struct coord_state *s = *state;
        char msg[512];
        assert_int_equal(coord_state_force_restart(s, msg, sizeof msg), -ENOENT);
        struct manifest mf = make_manifest("C", 5, 3);
        rst_join(s, 20, "C", 5, 3, "u1", &mf);
        rst_join(s, 21, "C", 5, 3, "u2", &mf);
        take(s);
        assert_int_equal(coord_state_force_restart(s, msg, sizeof msg), 0);
        assert_non_null(strstr(msg, "2 of 3"));
        assert_non_null(strstr(msg, "img3 (prog3 on host h3)"));
        take(s);
        assert_int_equal(n_sent(PROTO_PHASE_GO), 2);
        const uint64_t c[] = { 20, 21 };
        for (int p = PROTO_PH_RST_RESTORE; p <= PROTO_PH_RST_RESUME; p++)
                all_done(s, c, 2, 5, p);
        take(s);
        assert_non_null(event(COORD_EV_RESTART_COMPLETED));
        assert_int_equal(coord_state_n_members(s), 2);
        manifest_done(&mf);
}

static void test_restart_member_failure_and_vanish(void **state) {
        struct coord_state *s = *state;
        rst_join(s, 20, "C", 5, 2, "u1", NULL);
        take(s);
        /* Before the rendezvous, leaving just un-joins. */
        coord_state_disconnect(s, 20, NULL);
        take(s);
        assert_int_equal(s->mode, COORD_MODE_RESTART);
        assert_int_equal(n_sent(PROTO_KILL), 0);
        rst_join(s, 21, "C", 5, 2, "u1", NULL);
        rst_join(s, 22, "C", 5, 2, "u2", NULL);
        take(s);
        assert_int_equal(n_sent(PROTO_PHASE_GO), 2);
        /* A failure in a restart phase kills the restart. */
        done(s, 21, 5, PROTO_PH_RST_RESTORE, -EIO, "cannot map memory", 0);
        take(s);
        assert_non_null(log_matching("cannot map memory"));
        assert_int_equal(n_sent(PROTO_KILL), 2);
        assert_int_equal(s->mode, COORD_MODE_KILL);
}

/* ---- interval, kill, KV, exit ------------------------------------------- */

static void test_interval(void **state) {
        struct coord_config cfg = base_cfg();
        cfg.interval = 10;
        cfg.interval_fixed = true;
        struct coord_state *s = new_state(&cfg);
        assert_int_equal(coord_state_next_deadline(s), 0);     /* nobody to checkpoint */
        join(s, 10, "a");
        take(s);
        uint64_t d = coord_state_next_deadline(s);
        assert_int_equal(d, fake_mono + 10 * 1000000ull);
        fake_mono = d - 1;
        coord_state_tick(s);
        take(s);
        assert_null(find(COORD_ACT_CHECKPOINT));
        fake_mono = d;
        coord_state_tick(s);
        take(s);
        assert_non_null(find(COORD_ACT_CHECKPOINT));
        /* While busy, a due interval is skipped. */
        start(s, 1, 0);
        take(s);
        assert_int_equal(coord_state_next_deadline(s), 0);
        const uint64_t c[] = { 10 };
        advance(s, c, 1, 1, PROTO_PH_WRITE + 1);
        coord_state_commit_done(s, 0, NULL);
        fake_mono += 5 * 1000000ull;
        all_done(s, c, 1, 1, PROTO_PH_RESUME);
        take(s);
        assert_int_equal(coord_state_next_deadline(s), fake_mono + 10 * 1000000ull);  /* from the end */
        coord_state_set_interval(s, 0);
        take(s);
        assert_int_equal(coord_state_next_deadline(s), 0);
        coord_state_set_interval(s, 3);
        take(s);
        assert_int_equal(coord_state_next_deadline(s), fake_mono + 3 * 1000000ull);
        acts_clear();
        coord_state_free(s);
}

static void test_kill_and_quit(void **state) {
        struct coord_state *s = *state;
        join(s, 10, "a");
        join(s, 11, "b");
        start(s, 1, 0);
        take(s);
        coord_state_kill(s, 500, false);
        take(s);
        assert_int_equal(n_sent(PROTO_KILL), 2);
        assert_int_equal(reply_to(7777)->status, -ECANCELED);   /* the checkpoint was cancelled */
        assert_non_null(find(COORD_ACT_DISCARD));
        assert_null(reply_to(500));
        struct proto_hello h = worker_hello("new", NULL);
        assert_int_equal(coord_state_hello(s, 12, &h, NULL, NULL), 0);
        take(s);
        assert_int_equal(rejected(12), PROTO_REJ_SHUTTING_DOWN);
        coord_state_kill(s, 501, true);          /* a second requester waits too */
        coord_state_disconnect(s, 10, NULL);
        take(s);
        assert_null(reply_to(500));
        coord_state_disconnect(s, 11, NULL);
        take(s);
        assert_int_equal(reply_to(500)->status, 0);
        assert_int_equal(reply_to(501)->status, 0);
        assert_non_null(find(COORD_ACT_EXIT));
        assert_int_equal(s->mode, COORD_MODE_IDLE);
}

static void test_kill_without_members(void **state) {
        struct coord_state *s = *state;
        coord_state_kill(s, 500, false);
        take(s);
        assert_int_equal(reply_to(500)->status, 0);
        assert_null(find(COORD_ACT_EXIT));
        coord_state_kill(s, 501, true);
        take(s);
        assert_non_null(find(COORD_ACT_EXIT));
}

static void test_kv(void **state) {
        struct coord_state *s = *state;
        join(s, 10, "a");
        take(s);
        struct proto_kv kv = { .value_len = 3 };
        strscpy(kv.key, "/sock/1", sizeof kv.key);
        memcpy(kv.value, "abc", 3);
        coord_state_kv_put(s, 10, &kv);
        strscpy(kv.key, "/sock/0", sizeof kv.key);
        memcpy(kv.value, "xyz", 3);
        coord_state_kv_put(s, 10, &kv);
        memcpy(kv.value, "XY", 2);
        kv.value_len = 2;
        coord_state_kv_put(s, 10, &kv);          /* overwrite */
        take(s);
        struct proto_kv q = {};
        strscpy(q.key, "/sock/0", sizeof q.key);
        coord_state_kv_get(s, 10, &q);
        take(s);
        const struct proto_msg *v = sent(PROTO_KV_VALUE, 10);
        assert_int_equal(v->u.kv.found, 1);
        assert_int_equal(v->u.kv.value_len, 2);
        assert_memory_equal(v->u.kv.value, "XY", 2);
        strscpy(q.key, "/sock/9", sizeof q.key);
        coord_state_kv_get(s, 10, &q);
        take(s);
        assert_int_equal(sent(PROTO_KV_VALUE, 10)->u.kv.found, 0);
        assert_int_equal(s->n_kv, 2);
        /* The store belongs to the computation. */
        coord_state_disconnect(s, 10, NULL);
        take(s);
        assert_int_equal(s->n_kv, 0);
}

static void test_exit_on_last(void **state) {
        struct coord_config cfg = base_cfg();
        cfg.exit_on_last = true;
        struct coord_state *s = new_state(&cfg);
        join(s, 10, "a");
        join(s, 11, "b");
        coord_state_disconnect(s, 10, NULL);
        take(s);
        assert_null(find(COORD_ACT_EXIT));
        coord_state_disconnect(s, 11, NULL);
        take(s);
        assert_non_null(find(COORD_ACT_EXIT));
        acts_clear();
        coord_state_free(s);
}

static void test_status(void **state) {
        struct coord_state *s = *state;
        struct proto_status st = {};
        coord_state_fill_status(s, &st);
        assert_int_equal(st.num_peers, 0);
        assert_int_equal(st.running, 0);
        assert_string_equal(st.state, "idle, no computation");
        assert_string_equal(st.ckptdir, "/cwd");
        join(s, 10, "a");
        start(s, 1, 0);
        take(s);
        coord_state_fill_status(s, &st);
        assert_int_equal(st.num_peers, 1);
        assert_int_equal(st.running, 0);
        assert_int_equal(st.phase, PROTO_PH_SUSPEND);
        assert_non_null(strstr(st.state, "checkpoint generation 1: phase suspend, 0 of 1"));
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_join_creates_computation, setup, teardown),
                cmocka_unit_test(test_adopt_and_ckptdir_precedence),
                cmocka_unit_test_setup_teardown(test_commit_path, setup, teardown),
                cmocka_unit_test_setup_teardown(test_busy_and_empty, setup, teardown),
                cmocka_unit_test_setup_teardown(test_plain_checkpoint_answers_at_once, setup, teardown),
                cmocka_unit_test(test_failure_in_each_phase),
                cmocka_unit_test(test_vanish_in_each_phase),
                cmocka_unit_test(test_vanish_before_suspended),
                cmocka_unit_test_setup_teardown(test_who_is, setup, teardown),
                cmocka_unit_test_setup_teardown(test_notice, setup, teardown),
                cmocka_unit_test_setup_teardown(test_exec_keeps_place, setup, teardown),
                cmocka_unit_test_setup_teardown(test_exec_grace_expires, setup, teardown),
                cmocka_unit_test_setup_teardown(test_vanish_after_commit_is_no_abort, setup, teardown),
                cmocka_unit_test_setup_teardown(test_vanish_after_write, setup, teardown),
                cmocka_unit_test(test_protocol_violations),
                cmocka_unit_test_setup_teardown(test_phase_done_when_idle, setup, teardown),
                cmocka_unit_test_setup_teardown(test_commit_failure_aborts, setup, teardown),
                cmocka_unit_test(test_stop_timeout),
                cmocka_unit_test_setup_teardown(test_stop_timeout_off, setup, teardown),
                cmocka_unit_test_setup_teardown(test_join_during_suspend_vs_later, setup, teardown),
                cmocka_unit_test_setup_teardown(test_pending_violation_and_leave, setup, teardown),
                cmocka_unit_test(test_kill_after),
                cmocka_unit_test_setup_teardown(test_restart_rendezvous, setup, teardown),
                cmocka_unit_test_setup_teardown(test_restart_refused_when_running, setup, teardown),
                cmocka_unit_test(test_restart_timeout_names_missing),
                cmocka_unit_test_setup_teardown(test_restart_timeout_counts_without_manifest, setup, teardown),
                cmocka_unit_test_setup_teardown(test_restart_force, setup, teardown),
                cmocka_unit_test_setup_teardown(test_restart_member_failure_and_vanish, setup, teardown),
                cmocka_unit_test(test_interval),
                cmocka_unit_test_setup_teardown(test_kill_and_quit, setup, teardown),
                cmocka_unit_test_setup_teardown(test_kill_without_members, setup, teardown),
                cmocka_unit_test_setup_teardown(test_kv, setup, teardown),
                cmocka_unit_test(test_exit_on_last),
                cmocka_unit_test_setup_teardown(test_status, setup, teardown),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
