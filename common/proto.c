#include "proto.h"

#include <poll.h>
#include <string.h>
#include <sys/socket.h>

#include "util.h"

enum field_kind { F_U8, F_U16, F_U32, F_U64, F_I32, F_STR, F_BYTES };

struct field {
        uint8_t kind;
        uint32_t off;       /* offset in struct proto_msg */
        uint32_t lo, hi;    /* F_U8/F_U16 range (hi == 0: any); F_STR/F_BYTES: hi = max length */
        uint32_t len_off;   /* F_BYTES: offset of the uint32_t length */
};

#define OFF(s, f) ((uint32_t) offsetof(struct proto_msg, u.s.f))
#define U8(s, f)          { F_U8, OFF(s, f), 0, 0, 0 }
#define U8R(s, f, a, b)   { F_U8, OFF(s, f), (a), (b), 0 }
#define U16(s, f)         { F_U16, OFF(s, f), 0, 0, 0 }
#define U16R(s, f, a, b)  { F_U16, OFF(s, f), (a), (b), 0 }
#define U32(s, f)         { F_U32, OFF(s, f), 0, 0, 0 }
#define U64(s, f)         { F_U64, OFF(s, f), 0, 0, 0 }
#define I32(s, f)         { F_I32, OFF(s, f), 0, 0, 0 }
#define STR(s, f)         { F_STR, OFF(s, f), 0, sizeof(((struct proto_msg *) 0)->u.s.f) - 1, 0 }
#define BYTES(s, f, l)    { F_BYTES, OFF(s, f), 0, sizeof(((struct proto_msg *) 0)->u.s.f), OFF(s, l) }

static const struct field f_hello[] = {
        U8R(hello, role, 1, _PROTO_ROLE_MAX - 1), U32(hello, pid), U32(hello, flags),
        U64(hello, generation), U32(hello, members), U32(hello, interval),
        STR(hello, host), STR(hello, program), STR(hello, upid), STR(hello, comp_id),
        STR(hello, ckptdir), STR(hello, secret), STR(hello, job),
};
static const struct field f_welcome[] = {
        U32(welcome, member_id), U64(welcome, generation), U32(welcome, interval),
        U32(welcome, flags), STR(welcome, comp_id), STR(welcome, ckptdir),
};
static const struct field f_reject[] = {
        U16R(reject, code, 1, _PROTO_REJ_MAX - 1), STR(reject, reason),
};
static const struct field f_command[] = {
        U8R(command, op, 1, _PROTO_CMD_MAX - 1), U32(command, arg),
};
static const struct field f_result[] = {
        I32(result, status), U64(result, generation), U64(result, bytes),
        U64(result, duration_usec), U32(result, processes), STR(result, message), STR(result, dir),
};
static const struct field f_status[] = {
        U32(status, num_peers), U8R(status, running, 0, 1), U8R(status, exit_on_last, 0, 1),
        U8R(status, phase, 0, _PROTO_PH_MAX - 1), U16(status, port), U32(status, interval),
        U32(status, coord_pid), U32(status, keep), U64(status, generation), U64(status, last_ckpt_usec),
        STR(status, host), STR(status, socket), STR(status, comp_id), STR(status, ckptdir),
        STR(status, job), STR(status, state),
};
static const struct field f_member[] = {
        U32(member, id), U32(member, pid), U8R(member, role, 1, _PROTO_ROLE_MAX - 1),
        U8R(member, state, 1, _PROTO_MS_MAX - 1), U8R(member, phase, 0, _PROTO_PH_MAX - 1),
        STR(member, host), STR(member, program), STR(member, upid),
};
static const struct field f_ckpt_begin[] = {
        U64(ckpt_begin, generation), U32(ckpt_begin, flags), U32(ckpt_begin, members),
        STR(ckpt_begin, dir), STR(ckpt_begin, comp_id),
};
static const struct field f_phase_done[] = {
        U64(phase_done, generation), U8R(phase_done, phase, 1, _PROTO_PH_MAX - 1),
        I32(phase_done, status), U64(phase_done, bytes), U32(phase_done, crc),
        U64(phase_done, duration_usec), STR(phase_done, detail),
};
static const struct field f_phase_go[] = {
        U64(phase_go, generation), U8R(phase_go, phase, 1, _PROTO_PH_MAX - 1),
};
static const struct field f_ckpt_abort[] = {
        U64(ckpt_abort, generation), STR(ckpt_abort, reason),
};
static const struct field f_ckpt_committed[] = {
        U64(ckpt_committed, generation), STR(ckpt_committed, dir),
};
static const struct field f_kill[] = {
        U32(kill, grace_ms),
};
static const struct field f_kv_put[] = {
        STR(kv, key), BYTES(kv, value, value_len),
};
static const struct field f_kv_get[] = {
        STR(kv, key),
};
static const struct field f_kv_value[] = {
        STR(kv, key), U8R(kv, found, 0, 1), BYTES(kv, value, value_len),
};

static const struct field f_who_is[] = {
        U32(who_is, pid), STR(who_is, host),
};
static const struct field f_who[] = {
        U32(who, pid), U8R(who, status, 0, _PROTO_WHO_MAX - 1), STR(who, host), STR(who, upid),
};

static const struct field f_notice[] = {
        U8R(notice, level, 3, 6), STR(notice, text),
};

struct schema {
        const char *name;
        const struct field *fields;
        size_t n;
};

#define SCHEMA(t, name, f) [t] = { name, f, ARRAY_SIZE(f) }
static const struct schema schemas[_PROTO_TYPE_MAX] = {
        SCHEMA(PROTO_HELLO, "HELLO", f_hello),
        SCHEMA(PROTO_WELCOME, "WELCOME", f_welcome),
        SCHEMA(PROTO_REJECT, "REJECT", f_reject),
        SCHEMA(PROTO_COMMAND, "COMMAND", f_command),
        SCHEMA(PROTO_RESULT, "RESULT", f_result),
        SCHEMA(PROTO_STATUS, "STATUS", f_status),
        SCHEMA(PROTO_MEMBER, "MEMBER", f_member),
        SCHEMA(PROTO_CKPT_BEGIN, "CKPT_BEGIN", f_ckpt_begin),
        SCHEMA(PROTO_PHASE_DONE, "PHASE_DONE", f_phase_done),
        SCHEMA(PROTO_PHASE_GO, "PHASE_GO", f_phase_go),
        SCHEMA(PROTO_CKPT_ABORT, "CKPT_ABORT", f_ckpt_abort),
        SCHEMA(PROTO_CKPT_COMMITTED, "CKPT_COMMITTED", f_ckpt_committed),
        SCHEMA(PROTO_KILL, "KILL", f_kill),
        SCHEMA(PROTO_KV_PUT, "KV_PUT", f_kv_put),
        SCHEMA(PROTO_KV_GET, "KV_GET", f_kv_get),
        SCHEMA(PROTO_KV_VALUE, "KV_VALUE", f_kv_value),
        [PROTO_EXEC] = { "EXEC", NULL, 0 },        /* no payload */
        SCHEMA(PROTO_WHO_IS, "WHO_IS", f_who_is),
        SCHEMA(PROTO_WHO, "WHO", f_who),
        SCHEMA(PROTO_NOTICE, "NOTICE", f_notice),
        [PROTO_EXEC_FAILED] = { "EXEC_FAILED", NULL, 0 },  /* no payload */
};

static const struct schema *schema_of(int type) {
        if (type <= 0 || type >= _PROTO_TYPE_MAX)
                return NULL;
        return &schemas[type];
}

static void put_le(uint8_t *p, uint64_t v, int n) {
        for (int i = 0; i < n; i++)
                p[i] = (uint8_t) (v >> (8 * i));
}

static uint64_t get_le(const uint8_t *p, int n) {
        uint64_t v = 0;
        for (int i = 0; i < n; i++)
                v |= (uint64_t) p[i] << (8 * i);
        return v;
}

/* Strings carry no NUL and no control characters: they end up in logs,
 * journal fields and file names, where those would be an injection. */
static bool string_ok(const char *s, size_t len) {
        for (size_t i = 0; i < len; i++) {
                unsigned char c = (unsigned char) s[i];
                if (c < 0x20 || c == 0x7f)
                        return false;
        }
        return true;
}

static bool range_ok(const struct field *f, uint64_t v) {
        if (f->hi == 0)
                return true;
        return v >= f->lo && v <= f->hi;
}

int proto_encode(const struct proto_msg *m, uint8_t *buf, size_t size) {
        const struct schema *s = schema_of(m->type);
        if (!s)
                return -EINVAL;
        if (size < PROTO_HEADER_SIZE)
                return -EMSGSIZE;
        const uint8_t *base = (const uint8_t *) m;
        size_t o = PROTO_HEADER_SIZE;
        for (size_t i = 0; i < s->n; i++) {
                const struct field *f = &s->fields[i];
                const uint8_t *p = base + f->off;
                size_t need;
                switch (f->kind) {
                case F_U8: case F_U16: case F_U32: case F_U64: case F_I32: {
                        int n = f->kind == F_U8 ? 1 : f->kind == F_U16 ? 2 : f->kind == F_U64 ? 8 : 4;
                        uint64_t v = n == 1 ? *p : n == 2 ? *(const uint16_t *) p :
                                     n == 4 ? *(const uint32_t *) p : *(const uint64_t *) p;
                        if (f->kind != F_I32 && !range_ok(f, v))
                                return -EINVAL;
                        if (o + (size_t) n > size)
                                return -EMSGSIZE;
                        put_le(buf + o, v, n);
                        o += (size_t) n;
                        break;
                }
                case F_STR: {
                        const char *str = (const char *) p;
                        size_t len = strnlen(str, f->hi + 1);
                        if (len > f->hi || !string_ok(str, len))
                                return -EINVAL;
                        need = 2 + len;
                        if (o + need > size)
                                return -EMSGSIZE;
                        put_le(buf + o, len, 2);
                        memcpy(buf + o + 2, str, len);
                        o += need;
                        break;
                }
                case F_BYTES: {
                        uint32_t len = *(const uint32_t *) (base + f->len_off);
                        if (len > f->hi)
                                return -EINVAL;
                        need = 4 + (size_t) len;
                        if (o + need > size)
                                return -EMSGSIZE;
                        put_le(buf + o, len, 4);
                        memcpy(buf + o + 4, p, len);
                        o += need;
                        break;
                }
                }
        }
        if (o - PROTO_HEADER_SIZE > PROTO_MAX_PAYLOAD)
                return -EMSGSIZE;
        put_le(buf, PROTO_MAGIC, 4);
        put_le(buf + 4, PROTO_VERSION, 2);
        put_le(buf + 6, m->type, 2);
        put_le(buf + 8, o - PROTO_HEADER_SIZE, 4);
        put_le(buf + 12, 0, 4);
        return (int) o;
}

int proto_frame_length(const uint8_t *buf, size_t len) {
        /* Check the magic as soon as its bytes arrive, so a peer speaking
         * another protocol is refused without waiting for 16 bytes. */
        for (size_t i = 0; i < MIN(len, (size_t) 4); i++)
                if (buf[i] != (uint8_t) (PROTO_MAGIC >> (8 * i)))
                        return -EPROTO;
        if (len < PROTO_HEADER_SIZE)
                return 0;
        if (get_le(buf + 4, 2) != PROTO_VERSION)
                return -EPROTONOSUPPORT;
        if (!schema_of((int) get_le(buf + 6, 2)))
                return -EOPNOTSUPP;
        uint64_t plen = get_le(buf + 8, 4);
        if (plen > PROTO_MAX_PAYLOAD)
                return -EMSGSIZE;
        if (get_le(buf + 12, 4) != 0)
                return -EBADMSG;
        return (int) (PROTO_HEADER_SIZE + plen);
}

int proto_decode(const uint8_t *buf, size_t len, struct proto_msg *m) {
        int total = proto_frame_length(buf, len);
        if (total < 0)
                return total;
        if (total == 0 || (size_t) total != len)
                return -EBADMSG;
        int type = (int) get_le(buf + 6, 2);
        const struct schema *s = schema_of(type);
        proto_init(m, type);
        uint8_t *base = (uint8_t *) m;
        size_t o = PROTO_HEADER_SIZE;
        for (size_t i = 0; i < s->n; i++) {
                const struct field *f = &s->fields[i];
                uint8_t *p = base + f->off;
                switch (f->kind) {
                case F_U8: case F_U16: case F_U32: case F_U64: case F_I32: {
                        int n = f->kind == F_U8 ? 1 : f->kind == F_U16 ? 2 : f->kind == F_U64 ? 8 : 4;
                        if (len - o < (size_t) n)
                                return -EBADMSG;
                        uint64_t v = get_le(buf + o, n);
                        if (f->kind != F_I32 && !range_ok(f, v))
                                return -EBADMSG;
                        switch (n) {
                        case 1: *p = (uint8_t) v; break;
                        case 2: *(uint16_t *) p = (uint16_t) v; break;
                        case 4: *(uint32_t *) p = (uint32_t) v; break;
                        default: *(uint64_t *) p = v; break;
                        }
                        o += (size_t) n;
                        break;
                }
                case F_STR: {
                        if (len - o < 2)
                                return -EBADMSG;
                        size_t slen = (size_t) get_le(buf + o, 2);
                        o += 2;
                        if (slen > f->hi || len - o < slen || !string_ok((const char *) buf + o, slen))
                                return -EBADMSG;
                        memcpy(p, buf + o, slen);
                        p[slen] = 0;
                        o += slen;
                        break;
                }
                case F_BYTES: {
                        if (len - o < 4)
                                return -EBADMSG;
                        uint64_t blen = get_le(buf + o, 4);
                        o += 4;
                        if (blen > f->hi || len - o < blen)
                                return -EBADMSG;
                        memcpy(p, buf + o, blen);
                        *(uint32_t *) (base + f->len_off) = (uint32_t) blen;
                        o += blen;
                        break;
                }
                }
        }
        if (o != len)
                return -EBADMSG;
        return 0;
}

const char *proto_type_name(int type) {
        const struct schema *s = schema_of(type);
        return s ? s->name : "UNKNOWN";
}

const char *proto_phase_name(int phase) {
        static const char *const names[_PROTO_PH_MAX] = {
                [PROTO_PH_NONE] = "idle",
                [PROTO_PH_SUSPEND] = "suspend",
                [PROTO_PH_ELECT] = "elect",
                [PROTO_PH_DRAIN] = "drain",
                [PROTO_PH_CAPTURE] = "capture",
                [PROTO_PH_REFILL] = "refill",
                [PROTO_PH_WRITE] = "write",
                [PROTO_PH_RESUME] = "resume",
                [PROTO_PH_RST_JOIN] = "restart-join",
                [PROTO_PH_RST_RESTORE] = "restart-restore",
                [PROTO_PH_RST_CONNECT] = "restart-connect",
                [PROTO_PH_RST_REFILL] = "restart-refill",
                [PROTO_PH_RST_RESUME] = "restart-resume",
        };
        if (phase < 0 || phase >= _PROTO_PH_MAX || !names[phase])
                return "unknown";
        return names[phase];
}

const char *proto_reject_name(int code) {
        static const char *const names[_PROTO_REJ_MAX] = {
                [PROTO_REJ_BAD_MESSAGE] = "malformed message",
                [PROTO_REJ_VERSION] = "protocol version mismatch",
                [PROTO_REJ_UID] = "peer of another user",
                [PROTO_REJ_SECRET] = "missing or wrong computation secret",
                [PROTO_REJ_NOT_RUNNING] = "a checkpoint or restart is in progress",
                [PROTO_REJ_WRONG_COMP] = "coordinator serves another computation",
                [PROTO_REJ_PEER_MISMATCH] = "restart members do not match",
                [PROTO_REJ_SHUTTING_DOWN] = "coordinator is shutting down",
                [PROTO_REJ_FULL] = "too many connections",
        };
        if (code <= 0 || code >= _PROTO_REJ_MAX)
                return "unknown reason";
        return names[code];
}

const char *proto_command_name(int op) {
        static const char *const names[_PROTO_CMD_MAX] = {
                [PROTO_CMD_STATUS] = "status",
                [PROTO_CMD_LIST] = "list",
                [PROTO_CMD_CHECKPOINT] = "checkpoint",
                [PROTO_CMD_BCHECKPOINT] = "bcheckpoint",
                [PROTO_CMD_KCHECKPOINT] = "kcheckpoint",
                [PROTO_CMD_INTERVAL] = "interval",
                [PROTO_CMD_KILL] = "kill",
                [PROTO_CMD_QUIT] = "quit",
        };
        if (op <= 0 || op >= _PROTO_CMD_MAX)
                return "unknown";
        return names[op];
}

int proto_send(int fd, const struct proto_msg *m) {
        uint8_t buf[PROTO_MAX_MESSAGE];
        int n = proto_encode(m, buf, sizeof buf);
        if (n < 0)
                return n;
        const uint8_t *p = buf;
        size_t left = (size_t) n;
        while (left > 0) {
                ssize_t w = send(fd, p, left, MSG_NOSIGNAL);
                if (w < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                p += w;
                left -= (size_t) w;
        }
        return 0;
}

static int recv_exact(int fd, uint8_t *buf, size_t len, uint64_t deadline) {
        size_t got = 0;
        while (got < len) {
                if (deadline) {
                        uint64_t now = now_usec(CLOCK_MONOTONIC);
                        if (now >= deadline)
                                return -ETIMEDOUT;
                        struct pollfd pfd = { .fd = fd, .events = POLLIN };
                        int r = poll(&pfd, 1, (int) ((deadline - now + 999) / 1000));
                        if (r < 0) {
                                if (errno == EINTR)
                                        continue;
                                return -errno;
                        }
                        if (r == 0)
                                return -ETIMEDOUT;
                }
                ssize_t n = recv(fd, buf + got, len - got, 0);
                if (n < 0) {
                        if (errno == EINTR || errno == EAGAIN)
                                continue;
                        return -errno;
                }
                if (n == 0)
                        return -ECONNRESET;
                got += (size_t) n;
        }
        return 0;
}

int proto_recv(int fd, struct proto_msg *m, int timeout_ms) {
        uint8_t buf[PROTO_MAX_MESSAGE];
        uint64_t deadline = timeout_ms >= 0 ? now_usec(CLOCK_MONOTONIC) + (uint64_t) timeout_ms * 1000 + 1 : 0;
        int r = recv_exact(fd, buf, PROTO_HEADER_SIZE, deadline);
        if (r < 0)
                return r;
        int total = proto_frame_length(buf, PROTO_HEADER_SIZE);
        if (total <= 0)
                return total < 0 ? total : -EBADMSG;
        r = recv_exact(fd, buf + PROTO_HEADER_SIZE, (size_t) total - PROTO_HEADER_SIZE, deadline);
        if (r < 0)
                return r;
        return proto_decode(buf, (size_t) total, m);
}
