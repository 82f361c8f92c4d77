/* The coordinator's membership, checkpoint and restart state machine.
 *
 * Pure: no sockets, no files, no clock reads except through the injectable
 * s->now hook. Events go in (a HELLO, a PHASE_DONE, a disconnect, a command,
 * a timer tick, the outcome of a commit); actions come out of a FIFO queue
 * (send this message to these connections, commit this generation, log this
 * event, ...) which the server (coord-server.c) executes in order. Actions
 * that need I/O and have an outcome (COORD_ACT_COMMIT) are answered by
 * another event (coord_state_commit_done). docs/protocol.md describes the
 * behaviour; tests/unit/test-coord-state.c drives it. */
#pragma once

#include <limits.h>
#include <time.h>

#include "manifest.h"
#include "proto.h"

/* Requester tokens for replies: 0 = nobody (timer), 1 = the stdin console;
 * connection tokens of the server are larger. */
#define COORD_REQ_NONE    UINT64_C(0)
#define COORD_REQ_CONSOLE UINT64_C(1)

#define COORD_KILL_GRACE_MS   10000u
#define COORD_KILL_SLACK_USEC (2u * 1000000u)
#define COORD_KV_MAX_ENTRIES  65536u
#define COORD_KV_MAX_BYTES    (64u * 1024u * 1024u)
#define COORD_MAX_GENERATION  UINT64_C(999999)

enum coord_mode {
        COORD_MODE_IDLE,        /* nothing in flight */
        COORD_MODE_CKPT,        /* checkpoint: waiting for PHASE_DONE(s->phase) from every participant */
        COORD_MODE_RESUME,      /* committed or aborted: waiting for PHASE_DONE(RESUME) (or exit under KILL_AFTER) */
        COORD_MODE_RESTART,     /* restart: rendezvous (phase RST_JOIN), then the RST phases */
        COORD_MODE_KILL,        /* KILL sent: waiting for the members to leave */
};

/* Who is at the other end of a connection, for logs and refusals. */
struct coord_peer {
        bool have_uid, have_pid;
        uint32_t uid, pid;
        char addr[80];          /* "unix" or "address:port" */
};

/* "peer ADDR uid U pid P" (the parts that are known). */
void coord_peer_describe(const struct coord_peer *p, char *buf, size_t size);

struct coord_member {
        uint64_t conn;          /* server's connection token */
        uint32_t id;            /* member id sent in WELCOME */
        uint8_t role;           /* PROTO_ROLE_WORKER or PROTO_ROLE_RESTART */
        uint8_t state;          /* enum proto_member_state */
        uint8_t done;           /* last phase reported done in the current round */
        uint64_t stale_gen;     /* left out of this checkpoint generation (and older) when it did
                                 * not stop in time: its late reports for them are dropped */
        bool pending;           /* WELCOME deferred until idle */
        bool in_round;          /* takes part in the checkpoint/restart in flight */
        bool execing;           /* announced an exec (EXEC) */
        bool placeholder;       /* exec'd: its connection closed, its new image not here yet */
        uint64_t placeholder_deadline;  /* CLOCK_MONOTONIC */
        uint32_t pid;
        char host[PROTO_HOST_MAX + 1];
        char program[PROTO_NAME_MAX + 1];
        char upid[PROTO_ID_MAX + 1];
        struct coord_peer peer;
        struct proto_hello *hello;      /* pending only: the HELLO to act on when released */
        /* This member's PHASE_DONE(WRITE) of the checkpoint in flight. */
        char image[MANIFEST_IMAGE_NAME_MAX + 1];
        uint64_t image_bytes;
        uint32_t image_crc;
};

enum coord_event {
        COORD_EV_NONE,          /* a plain log line */
        COORD_EV_STARTED,
        COORD_EV_MEMBER_JOINED,
        COORD_EV_MEMBER_LEFT,
        COORD_EV_CKPT_STARTED,
        COORD_EV_CKPT_COMMITTED,
        COORD_EV_CKPT_ABORTED,
        COORD_EV_RESTART_COMPLETED,
        COORD_EV_PEER_REFUSED,
        _COORD_EV_MAX,
};

/* Which optional fields of a coord_log are set. */
enum {
        COORD_LOG_GENERATION = 1 << 0,
        COORD_LOG_PROCESSES  = 1 << 1,
        COORD_LOG_BYTES      = 1 << 2,
        COORD_LOG_DURATION   = 1 << 3,
        COORD_LOG_DIR        = 1 << 4,
        COORD_LOG_MEMBER     = 1 << 5,
        COORD_LOG_PROGRAM    = 1 << 6,
        COORD_LOG_REASON     = 1 << 7,
        COORD_LOG_PEER       = 1 << 8,
};

struct coord_log {
        int level;              /* LOG_ERR .. LOG_DEBUG */
        enum coord_event event;
        unsigned fields;
        char text[1024];
        char computation[PROTO_ID_MAX + 1];
        uint64_t generation;
        uint32_t processes;
        uint64_t bytes;
        uint64_t duration_usec;
        char dir[PATH_MAX];
        uint32_t member;
        char program[PROTO_NAME_MAX + 1];
        char reason[PROTO_TEXT_MAX + 1];
        struct coord_peer peer;
};

/* What the server must do to commit a generation. */
struct coord_commit {
        uint64_t generation;
        uint64_t time_usec;                     /* CLOCK_REALTIME of the commit */
        char comp_id[PROTO_ID_MAX + 1];
        char tmpdir[PATH_MAX];                  /* CKPTDIR/.gen-NNNNNN.tmp */
        char ckptdir[PATH_MAX];
        struct manifest_image *images;
        size_t n_images;
};

enum coord_action_type {
        COORD_ACT_SEND,         /* msg to every connection in conns[] */
        COORD_ACT_CLOSE,        /* close conn once its queued output is sent; it is no member any more */
        COORD_ACT_REPLY,        /* msg (a RESULT) to a requester token */
        COORD_ACT_COMMIT,       /* commit; answer with coord_state_commit_done() */
        COORD_ACT_DISCARD,      /* rm -rf path (an abandoned temporary generation) */
        COORD_ACT_LOG,          /* log a line or a structured event */
        COORD_ACT_CHECKPOINT,   /* the interval is due: start a checkpoint (no requester) */
        COORD_ACT_EXIT,         /* leave the event loop with exit_status */
};

struct coord_action {
        struct coord_action *next;
        enum coord_action_type type;
        uint64_t requester;             /* REPLY */
        uint64_t *conns;                /* SEND: recipients */
        size_t n_conns;
        uint64_t conn;                  /* CLOSE */
        int exit_status;                /* EXIT */
        union {
                struct proto_msg msg;           /* SEND, REPLY */
                struct coord_commit commit;     /* COMMIT (images owned by the action) */
                char path[PATH_MAX];            /* DISCARD */
                struct coord_log log;           /* LOG */
        };
};

struct coord_config {
        char host[PROTO_HOST_MAX + 1];  /* for computation ids */
        uint32_t pid;
        char ckptdir[PATH_MAX];         /* --ckptdir or DMTCP_CHECKPOINT_DIR; "" = from the first worker */
        bool ckptdir_option;            /* ckptdir came from --ckptdir: a restart does not change it */
        char cwd[PATH_MAX];             /* last resort checkpoint directory */
        uint32_t interval;              /* seconds, 0 = off */
        bool interval_fixed;            /* -i or DMTCP_CHECKPOINT_INTERVAL given */
        bool exit_on_last;
        uint64_t restart_timeout_usec;
        uint64_t stop_timeout_usec;     /* checkpoint phases before WRITE; 0 = no limit */
        uint32_t kill_grace_ms;
};

struct coord_kv_entry;

struct coord_state {
        struct coord_config cfg;
        uint64_t (*now)(clockid_t clock);       /* injectable clock, default now_usec */

        enum coord_mode mode;
        uint8_t phase;                  /* CKPT/RESTART: the barrier being waited for */

        /* Members, sorted by connection token. */
        struct coord_member **members;
        size_t n_members, n_alloc;
        uint32_t next_member_id;
        bool ever_joined;

        /* The computation. */
        char comp_id[PROTO_ID_MAX + 1];
        char ckptdir[PATH_MAX];
        uint32_t interval;
        uint64_t last_gen;
        uint64_t last_ckpt_usec;        /* CLOCK_REALTIME of the newest commit */
        uint64_t interval_deadline;     /* CLOCK_MONOTONIC, 0 = off */

        /* The checkpoint in flight. */
        uint64_t gen;
        uint32_t flags;
        char tmpdir[PATH_MAX];
        uint64_t requester;             /* waiting BCHECKPOINT/KCHECKPOINT, else COORD_REQ_NONE */
        uint64_t ckpt_start;            /* CLOCK_MONOTONIC */
        uint64_t stop_deadline;         /* every process stopped and captured by then (0: no limit) */
        uint64_t left_out_gen;          /* last generation aborted with processes left out of it: never
                                         * reused, or their late reports would count for the new one */
        bool aborted;                   /* the RESUME wait follows an abort */
        uint64_t commit_usec;           /* CLOCK_REALTIME of the commit being made */
        bool committing;                /* the COMMIT action is queued */
        uint32_t commit_procs;
        uint64_t commit_bytes;
        /* Members that ended after their image was written (a short-lived
         * process of a copy-on-write checkpoint): their images belong to
         * the generation. */
        struct manifest_image *departed;
        size_t n_departed, departed_alloc;

        /* The restart in flight. */
        uint64_t rst_gen;
        uint32_t rst_expected;
        uint64_t rst_start;
        uint64_t rst_deadline;
        char rst_dir[PATH_MAX];         /* the generation directory restored from */
        struct manifest rst_manifest;   /* n_images == 0: unknown, count only */

        /* KILL in flight. */
        uint64_t kill_deadline;
        uint64_t *kill_waiters;
        size_t n_kill_waiters;
        bool quit;
        bool exiting;                   /* an EXIT action was queued */

        /* KV store of the computation (socket rewiring at restart, ...). */
        struct coord_kv_entry *kv;
        size_t n_kv, kv_alloc, kv_bytes;

        struct coord_action *head, *tail;
};

int coord_state_new(struct coord_state **ret, const struct coord_config *cfg);
struct coord_state *coord_state_free(struct coord_state *s);

/* The next action to execute (caller frees it with coord_action_free), or NULL. */
struct coord_action *coord_state_next_action(struct coord_state *s);
void coord_action_free(struct coord_action *a);

/* A HELLO of role WORKER or RESTART on connection conn. mf: the MANIFEST of
 * the generation a RESTART HELLO restores (only looked at when the HELLO
 * would start a restart, see coord_state_wants_manifest), or NULL.
 * Returns 1 if conn is now a member (welcomed or deferred), 0 if refused
 * (a REJECT and CLOSE are queued). */
int coord_state_hello(struct coord_state *s, uint64_t conn, const struct proto_hello *h,
                      const struct coord_peer *peer, const struct manifest *mf);
bool coord_state_wants_manifest(const struct coord_state *s, const struct proto_hello *h);

/* Messages from a member. */
void coord_state_phase_done(struct coord_state *s, uint64_t conn, const struct proto_phase_done *pd);
void coord_state_kv_put(struct coord_state *s, uint64_t conn, const struct proto_kv *kv);
void coord_state_kv_get(struct coord_state *s, uint64_t conn, const struct proto_kv *kv);

/* conn is gone (closed, error, or a malformed message: why says which). */
void coord_state_disconnect(struct coord_state *s, uint64_t conn, const char *why);
bool coord_state_is_member(const struct coord_state *s, uint64_t conn);

/* Checkpoint. check: 0, -ENOENT (no members) or -EBUSY, with a message.
 * next_generation: the generation a checkpoint would get, given the newest
 * gen-NNNNNN found in the checkpoint directory. start: after the server
 * created tmpdir. blocking: answer requester at commit/abort, else at once. */
int coord_state_ckpt_check(const struct coord_state *s, char *why, size_t size);
uint64_t coord_state_next_generation(const struct coord_state *s, uint64_t newest_on_disk);
void coord_state_ckpt_start(struct coord_state *s, uint64_t gen, const char *tmpdir, uint32_t flags,
                            uint64_t requester, bool blocking);
/* The outcome of COORD_ACT_COMMIT: r = 0 (bytes = total image size) or
 * -errno with a reason. */
void coord_state_commit_done(struct coord_state *s, int r, const char *reason);

void coord_state_set_interval(struct coord_state *s, uint32_t seconds);
/* KILL (quit = false) or QUIT: requester gets RESULT(0) when all members are
 * gone or the grace period is over. */
void coord_state_kill(struct coord_state *s, uint64_t requester, bool quit);
/* 'f': let a waiting restart proceed with the members present. Returns 0 or
 * -ENOENT with a message. */
int coord_state_force_restart(struct coord_state *s, char *msg, size_t size);

/* Timers: call tick when CLOCK_MONOTONIC reaches next_deadline (0 = none). */
void coord_state_tick(struct coord_state *s);

/* A member is about to exec (EXEC); who is (host, pid) (WHO_IS). */
void coord_state_exec(struct coord_state *s, uint64_t conn);
/* The exec it announced failed: a member like before. */
void coord_state_exec_failed(struct coord_state *s, uint64_t conn);
void coord_state_who_is(struct coord_state *s, uint64_t conn, const struct proto_who_is *q);
/* A member's NOTICE: one line of the log, naming the member. */
void coord_state_notice(struct coord_state *s, uint64_t conn, const struct proto_notice *n);

/* How long an exec'ing member keeps its place for its new image. */
#define COORD_EXEC_GRACE_USEC (10ULL * 1000000ULL)
uint64_t coord_state_next_deadline(const struct coord_state *s);

/* Queries for STATUS, LIST and the console. */
void coord_state_fill_status(const struct coord_state *s, struct proto_status *st);
size_t coord_state_n_members(const struct coord_state *s);     /* welcomed, not pending */
size_t coord_state_n_pending(const struct coord_state *s);
bool coord_state_running(const struct coord_state *s);
const char *coord_state_ckptdir(const struct coord_state *s);
void coord_state_describe(const struct coord_state *s, char *buf, size_t size);
