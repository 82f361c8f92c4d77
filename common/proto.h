/* The coordinator wire protocol (docs/protocol.md).
 *
 * Every message: a 16-byte header (magic, version, type, payload length,
 * reserved=0), then the payload: the message's fields in a fixed order,
 * integers little-endian, strings as u16 length + bytes (no NUL, no control
 * characters), byte arrays as u32 length + bytes. Each message type has one
 * schema table that drives both the encoder and the decoder, so what is sent
 * and what is accepted cannot drift apart. The decoder rejects anything not
 * exactly as the schema says: bad magic or version, unknown type, payload
 * over PROTO_MAX_PAYLOAD, short or trailing bytes, over-long strings,
 * out-of-range enums.
 *
 * Decoding never allocates: strings are copied into fixed arrays of the
 * message structs. Safe for the runtime's checkpoint thread. */
#pragma once

#include "macro.h"

#define PROTO_MAGIC       0x504d5444u   /* bytes "DTMP" */
#define PROTO_VERSION     1
#define PROTO_HEADER_SIZE 16
#define PROTO_MAX_PAYLOAD (64u * 1024u)
#define PROTO_MAX_MESSAGE (PROTO_HEADER_SIZE + PROTO_MAX_PAYLOAD)

#define PROTO_HOST_MAX    255
#define PROTO_NAME_MAX    255
#define PROTO_ID_MAX      127
#define PROTO_PATH_MAX    4095
#define PROTO_TEXT_MAX    1023
#define PROTO_JOB_MAX     64
#define PROTO_KEY_MAX     255
#define PROTO_VALUE_MAX   4096

enum proto_type {
        PROTO_HELLO = 1,          /* client -> coordinator: who I am */
        PROTO_WELCOME,            /* coordinator -> client: accepted */
        PROTO_REJECT,             /* coordinator -> client: refused, then closed */
        PROTO_COMMAND,            /* tool -> coordinator */
        PROTO_RESULT,             /* coordinator -> tool: outcome of a command */
        PROTO_STATUS,             /* coordinator -> tool: answer to STATUS */
        PROTO_MEMBER,             /* coordinator -> tool: one line of LIST (then RESULT) */
        PROTO_CKPT_BEGIN,         /* coordinator -> worker: start checkpoint generation N */
        PROTO_PHASE_DONE,         /* worker -> coordinator: I finished phase P */
        PROTO_PHASE_GO,           /* coordinator -> worker: everyone finished phase P */
        PROTO_CKPT_ABORT,         /* coordinator -> worker: generation N is abandoned */
        PROTO_CKPT_COMMITTED,     /* coordinator -> worker: generation N is durable */
        PROTO_KILL,               /* coordinator -> worker: end the process */
        PROTO_KV_PUT,             /* worker -> coordinator: publish key=value */
        PROTO_KV_GET,             /* worker -> coordinator: look up key */
        PROTO_KV_VALUE,           /* coordinator -> worker: answer to KV_GET */
        PROTO_EXEC,               /* worker -> coordinator: this process is about to exec */
        PROTO_WHO_IS,             /* worker -> coordinator: is process (host, pid) a member? */
        PROTO_WHO,                /* coordinator -> worker: answer to WHO_IS */
        PROTO_NOTICE,             /* worker -> coordinator: a line for its log about this member */
        PROTO_EXEC_FAILED,        /* worker -> coordinator: the exec it announced failed; still itself */
        _PROTO_TYPE_MAX,
};

enum proto_role {
        PROTO_ROLE_WORKER = 1,    /* a process under the runtime */
        PROTO_ROLE_RESTART,       /* a restored process rejoining */
        PROTO_ROLE_COMMAND,       /* dmtcp_command, dmtcpctl, the application API */
        _PROTO_ROLE_MAX,
};

/* Checkpoint and restart phases. A worker reports PHASE_DONE(p); when every
 * member has, the coordinator sends PHASE_GO(p). See docs/protocol.md. */
enum proto_phase {
        PROTO_PH_NONE = 0,
        PROTO_PH_SUSPEND = 1,     /* all user threads stopped */
        PROTO_PH_ELECT,           /* descriptors published; owners of shared ones chosen */
        PROTO_PH_DRAIN,           /* in-flight data read out of kernel buffers */
        PROTO_PH_CAPTURE,         /* process state captured (and snapshot forked) */
        PROTO_PH_REFILL,          /* drained data put back into kernel buffers */
        PROTO_PH_WRITE,           /* image durable on disk (detail = file name) */
        PROTO_PH_RESUME,          /* running again after COMMITTED/ABORT */
        PROTO_PH_RST_JOIN = 10,   /* restart: all members joined (HELLO counts as done) */
        PROTO_PH_RST_RESTORE,     /* restart: descriptors and process state restored */
        PROTO_PH_RST_CONNECT,     /* restart: connections between members re-established */
        PROTO_PH_RST_REFILL,      /* restart: drained data put back */
        PROTO_PH_RST_RESUME,      /* restart: running */
        _PROTO_PH_MAX,
};

enum proto_command {
        PROTO_CMD_STATUS = 1,
        PROTO_CMD_LIST,
        PROTO_CMD_CHECKPOINT,     /* start a checkpoint, answer at once */
        PROTO_CMD_BCHECKPOINT,    /* answer when committed or aborted */
        PROTO_CMD_KCHECKPOINT,    /* checkpoint, then end every process; answer when committed */
        PROTO_CMD_INTERVAL,       /* arg = seconds, 0 = off */
        PROTO_CMD_KILL,
        PROTO_CMD_QUIT,
        _PROTO_CMD_MAX,
};

enum proto_reject_code {
        PROTO_REJ_BAD_MESSAGE = 1,
        PROTO_REJ_VERSION,
        PROTO_REJ_UID,            /* peer of another uid */
        PROTO_REJ_SECRET,         /* missing or wrong computation secret */
        PROTO_REJ_NOT_RUNNING,    /* busy: checkpoint or restart in progress */
        PROTO_REJ_WRONG_COMP,     /* belongs to another computation */
        PROTO_REJ_PEER_MISMATCH,  /* restart: member count or identity differs */
        PROTO_REJ_SHUTTING_DOWN,
        PROTO_REJ_FULL,           /* too many connections */
        _PROTO_REJ_MAX,
};

enum proto_member_state {
        PROTO_MS_RUNNING = 1,
        PROTO_MS_CHECKPOINTING,
        PROTO_MS_RESTARTING,
        _PROTO_MS_MAX,
};

/* Answer to WHO_IS. */
enum proto_who_status {
        PROTO_WHO_UNKNOWN = 0,    /* no member with that host and pid */
        PROTO_WHO_MEMBER,         /* a member, not part of the checkpoint in flight */
        PROTO_WHO_IN_ROUND,       /* a member taking part in the checkpoint in flight */
        PROTO_WHO_EXEC,           /* a member between exec and its new image joining */
        _PROTO_WHO_MAX,
};

/* Flags of CKPT_BEGIN. */
#define PROTO_CKPT_KILL_AFTER   (1u << 0)   /* --kcheckpoint: never resume */

struct proto_hello {
        uint8_t role;
        uint32_t pid;
        uint32_t flags;
        uint64_t generation;                /* restart: generation being restored */
        uint32_t members;                   /* restart: processes in that generation */
        uint32_t interval;                  /* worker: requested interval (s), 0 = none */
        char host[PROTO_HOST_MAX + 1];
        char program[PROTO_NAME_MAX + 1];
        char upid[PROTO_ID_MAX + 1];        /* unique process id */
        char comp_id[PROTO_ID_MAX + 1];     /* computation; empty = start a new one */
        char ckptdir[PROTO_PATH_MAX + 1];   /* worker: checkpoint dir; restart: the generation dir restored from */
        char secret[PROTO_ID_MAX + 1];
        char job[PROTO_JOB_MAX + 1];
};

struct proto_welcome {
        uint32_t member_id;
        uint64_t generation;                /* newest committed generation */
        uint32_t interval;
        uint32_t flags;
        char comp_id[PROTO_ID_MAX + 1];
        char ckptdir[PROTO_PATH_MAX + 1];
};

struct proto_reject {
        uint16_t code;
        char reason[PROTO_TEXT_MAX + 1];
};

struct proto_command_msg {
        uint8_t op;
        uint32_t arg;
};

struct proto_result {
        int32_t status;                     /* 0 or -errno */
        uint64_t generation;
        uint64_t bytes;
        uint64_t duration_usec;
        uint32_t processes;
        char message[PROTO_TEXT_MAX + 1];
        char dir[PROTO_PATH_MAX + 1];
};

struct proto_status {
        uint32_t num_peers;
        uint8_t running;                    /* every member running, no checkpoint in flight */
        uint8_t exit_on_last;
        uint8_t phase;                      /* current enum proto_phase, 0 = idle */
        uint16_t port;
        uint32_t interval;
        uint32_t coord_pid;
        uint32_t keep;
        uint64_t generation;                /* newest committed */
        uint64_t last_ckpt_usec;            /* CLOCK_REALTIME of that commit, 0 = never */
        char host[PROTO_HOST_MAX + 1];
        char socket[PROTO_PATH_MAX + 1];
        char comp_id[PROTO_ID_MAX + 1];
        char ckptdir[PROTO_PATH_MAX + 1];
        char job[PROTO_JOB_MAX + 1];
        char state[PROTO_NAME_MAX + 1];     /* human readable state */
};

struct proto_member {
        uint32_t id;
        uint32_t pid;
        uint8_t role;
        uint8_t state;
        uint8_t phase;                      /* last phase reported done */
        char host[PROTO_HOST_MAX + 1];
        char program[PROTO_NAME_MAX + 1];
        char upid[PROTO_ID_MAX + 1];
};

struct proto_ckpt_begin {
        uint64_t generation;
        uint32_t flags;
        uint32_t members;
        char dir[PROTO_PATH_MAX + 1];       /* temporary generation directory to write into */
        char comp_id[PROTO_ID_MAX + 1];
};

struct proto_phase_done {
        uint64_t generation;
        uint8_t phase;
        int32_t status;                     /* 0 or -errno */
        uint64_t bytes;                     /* WRITE: image size */
        uint32_t crc;                       /* WRITE: image checksum (header crc) */
        uint64_t duration_usec;
        char detail[PROTO_PATH_MAX + 1];    /* WRITE: image file name; failure: message */
};

struct proto_phase_go {
        uint64_t generation;
        uint8_t phase;
};

struct proto_ckpt_abort {
        uint64_t generation;
        char reason[PROTO_TEXT_MAX + 1];
};

struct proto_ckpt_committed {
        uint64_t generation;
        char dir[PROTO_PATH_MAX + 1];
};

struct proto_kill {
        uint32_t grace_ms;                  /* SIGTERM, then SIGKILL after this */
};

struct proto_kv {
        char key[PROTO_KEY_MAX + 1];
        uint8_t found;                      /* KV_VALUE only */
        uint32_t value_len;
        uint8_t value[PROTO_VALUE_MAX];
};

struct proto_who_is {
        uint32_t pid;
        char host[PROTO_HOST_MAX + 1];
};

struct proto_who {
        uint32_t pid;
        uint8_t status;                     /* enum proto_who_status */
        char host[PROTO_HOST_MAX + 1];
        char upid[PROTO_ID_MAX + 1];
};

struct proto_notice {
        uint8_t level;                      /* LOG_ERR .. LOG_INFO */
        char text[PROTO_TEXT_MAX + 1];
};

struct proto_msg {
        uint16_t type;
        union {
                struct proto_hello hello;
                struct proto_welcome welcome;
                struct proto_reject reject;
                struct proto_command_msg command;
                struct proto_result result;
                struct proto_status status;
                struct proto_member member;
                struct proto_ckpt_begin ckpt_begin;
                struct proto_phase_done phase_done;
                struct proto_phase_go phase_go;
                struct proto_ckpt_abort ckpt_abort;
                struct proto_ckpt_committed ckpt_committed;
                struct proto_kill kill;
                struct proto_kv kv;
                struct proto_who_is who_is;
                struct proto_who who;
                struct proto_notice notice;
        } u;
};

/* Encode m into buf. Returns the total length (header + payload) or -EINVAL
 * (a field violates the schema: a string too long or with a control
 * character, an enum out of range) or -EMSGSIZE. */
int proto_encode(const struct proto_msg *m, uint8_t *buf, size_t size);

/* Look at the first bytes of a stream. Returns the total length of the
 * message that starts there (> 0) once the header is complete, 0 if more
 * bytes are needed for the header, or a negative error: -EPROTO (bad magic),
 * -EPROTONOSUPPORT (other version), -EMSGSIZE (over the cap), -EBADMSG
 * (reserved bits set), -EOPNOTSUPP (unknown type). */
int proto_frame_length(const uint8_t *buf, size_t len);

/* Decode exactly one whole message of len bytes. Returns 0 or a negative
 * error as proto_frame_length, plus -EBADMSG for a payload that does not
 * match its schema (short, trailing bytes, bad string, enum out of range). */
int proto_decode(const uint8_t *buf, size_t len, struct proto_msg *m);

const char *proto_type_name(int type);
const char *proto_phase_name(int phase);
const char *proto_reject_name(int code);
const char *proto_command_name(int op);

/* Blocking helpers for clients (runtime, tools). proto_send returns 0 or
 * -errno. proto_recv waits at most timeout_ms (-1 = forever) and returns 0,
 * -ETIMEDOUT, -ECONNRESET on EOF, or a decode error; on a decode error the
 * stream is unusable and the caller must close it. */
int proto_send(int fd, const struct proto_msg *m);
int proto_recv(int fd, struct proto_msg *m, int timeout_ms);

/* Zero a message and set its type. */
static inline void proto_init(struct proto_msg *m, int type) {
        __builtin_memset(m, 0, sizeof *m);
        m->type = (uint16_t) type;
}
