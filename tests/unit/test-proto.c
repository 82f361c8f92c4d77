/* The wire protocol codec: every message type round-trips, and every kind
 * of malformed input is refused with the documented error. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <syslog.h>
#include <cmocka.h>

#include "proto.h"
#include "util.h"

static uint8_t buf[PROTO_MAX_MESSAGE + 64];

static void fill_str(char *s, size_t size, const char *tag) {
        snprintf(s, size, "%s-\xc3\xa9-value", tag);   /* UTF-8 passes; only controls are refused */
}

/* A message of type t with every field set to something non-zero. */
static void make(struct proto_msg *m, int t) {
        proto_init(m, t);
        switch (t) {
        case PROTO_HELLO: {
                struct proto_hello *h = &m->u.hello;
                h->role = PROTO_ROLE_RESTART;
                h->pid = 0x01020304;
                h->flags = 0xdeadbeef;
                h->generation = 0x1122334455667788ull;
                h->members = 7;
                h->interval = 60;
                fill_str(h->host, sizeof h->host, "host");
                fill_str(h->program, sizeof h->program, "prog");
                fill_str(h->upid, sizeof h->upid, "upid");
                fill_str(h->comp_id, sizeof h->comp_id, "comp");
                fill_str(h->ckptdir, sizeof h->ckptdir, "/ckpt");
                fill_str(h->secret, sizeof h->secret, "secret");
                fill_str(h->job, sizeof h->job, "job");
                break;
        }
        case PROTO_WELCOME:
                m->u.welcome.member_id = 42;
                m->u.welcome.generation = 99;
                m->u.welcome.interval = 3;
                m->u.welcome.flags = 1;
                fill_str(m->u.welcome.comp_id, sizeof m->u.welcome.comp_id, "c");
                fill_str(m->u.welcome.ckptdir, sizeof m->u.welcome.ckptdir, "/d");
                break;
        case PROTO_REJECT:
                m->u.reject.code = PROTO_REJ_FULL;
                fill_str(m->u.reject.reason, sizeof m->u.reject.reason, "why");
                break;
        case PROTO_COMMAND:
                m->u.command.op = PROTO_CMD_QUIT;
                m->u.command.arg = 12345;
                break;
        case PROTO_RESULT:
                m->u.result.status = -EBUSY;
                m->u.result.generation = 5;
                m->u.result.bytes = 1ull << 40;
                m->u.result.duration_usec = 77;
                m->u.result.processes = 3;
                fill_str(m->u.result.message, sizeof m->u.result.message, "msg");
                fill_str(m->u.result.dir, sizeof m->u.result.dir, "/dir");
                break;
        case PROTO_STATUS: {
                struct proto_status *s = &m->u.status;
                s->num_peers = 200;
                s->running = 1;
                s->exit_on_last = 1;
                s->phase = PROTO_PH_RST_REFILL;
                s->port = 7779;
                s->interval = 10;
                s->coord_pid = 555;
                s->keep = 2;
                s->generation = 8;
                s->last_ckpt_usec = 1700000000000000ull;
                fill_str(s->host, sizeof s->host, "h");
                fill_str(s->socket, sizeof s->socket, "/s");
                fill_str(s->comp_id, sizeof s->comp_id, "c");
                fill_str(s->ckptdir, sizeof s->ckptdir, "/c");
                fill_str(s->job, sizeof s->job, "j");
                fill_str(s->state, sizeof s->state, "st");
                break;
        }
        case PROTO_MEMBER:
                m->u.member.id = 1;
                m->u.member.pid = 2;
                m->u.member.role = PROTO_ROLE_WORKER;
                m->u.member.state = PROTO_MS_RESTARTING;
                m->u.member.phase = PROTO_PH_WRITE;
                fill_str(m->u.member.host, sizeof m->u.member.host, "h");
                fill_str(m->u.member.program, sizeof m->u.member.program, "p");
                fill_str(m->u.member.upid, sizeof m->u.member.upid, "u");
                break;
        case PROTO_CKPT_BEGIN:
                m->u.ckpt_begin.generation = 4;
                m->u.ckpt_begin.flags = PROTO_CKPT_KILL_AFTER;
                m->u.ckpt_begin.members = 9;
                fill_str(m->u.ckpt_begin.dir, sizeof m->u.ckpt_begin.dir, "/tmp");
                fill_str(m->u.ckpt_begin.comp_id, sizeof m->u.ckpt_begin.comp_id, "c");
                break;
        case PROTO_PHASE_DONE:
                m->u.phase_done.generation = 4;
                m->u.phase_done.phase = PROTO_PH_WRITE;
                m->u.phase_done.status = -EIO;
                m->u.phase_done.bytes = 4096;
                m->u.phase_done.crc = 0xcafef00d;
                m->u.phase_done.duration_usec = 12;
                fill_str(m->u.phase_done.detail, sizeof m->u.phase_done.detail, "img");
                break;
        case PROTO_PHASE_GO:
                m->u.phase_go.generation = 4;
                m->u.phase_go.phase = PROTO_PH_CAPTURE;
                break;
        case PROTO_CKPT_ABORT:
                m->u.ckpt_abort.generation = 4;
                fill_str(m->u.ckpt_abort.reason, sizeof m->u.ckpt_abort.reason, "r");
                break;
        case PROTO_CKPT_COMMITTED:
                m->u.ckpt_committed.generation = 4;
                fill_str(m->u.ckpt_committed.dir, sizeof m->u.ckpt_committed.dir, "/g");
                break;
        case PROTO_KILL:
                m->u.kill.grace_ms = 10000;
                break;
        case PROTO_KV_PUT:
        case PROTO_KV_GET:
        case PROTO_KV_VALUE:
                fill_str(m->u.kv.key, sizeof m->u.kv.key, "key");
                if (t != PROTO_KV_GET) {
                        m->u.kv.value_len = 5;
                        memcpy(m->u.kv.value, "\0\1\2\3\4", 5);
                }
                if (t == PROTO_KV_VALUE)
                        m->u.kv.found = 1;
                break;
        case PROTO_NOTICE:
                m->u.notice.level = LOG_WARNING;
                fill_str(m->u.notice.text, sizeof m->u.notice.text, "notice");
                break;
        }
}

static int encode(const struct proto_msg *m) {
        int n = proto_encode(m, buf, sizeof buf);
        assert_true(n >= PROTO_HEADER_SIZE);
        return n;
}

static void test_roundtrip_all_types(void **state) {
        for (int t = 1; t < _PROTO_TYPE_MAX; t++) {
                struct proto_msg m, d;
                make(&m, t);
                int n = encode(&m);
                assert_int_equal(proto_frame_length(buf, (size_t) n), n);
                assert_int_equal(proto_decode(buf, (size_t) n, &d), 0);
                assert_int_equal(d.type, t);
                /* Re-encoding gives the same bytes, and the decoded struct
                 * equals the original (both zeroed by proto_init). */
                uint8_t again[PROTO_MAX_MESSAGE];
                assert_int_equal(proto_encode(&d, again, sizeof again), n);
                assert_memory_equal(buf, again, (size_t) n);
                assert_memory_equal(&m, &d, sizeof m);
                assert_string_not_equal(proto_type_name(t), "UNKNOWN");
        }
}

static void test_frame_needs_header(void **state) {
        struct proto_msg m;
        make(&m, PROTO_KILL);
        int n = encode(&m);
        for (size_t i = 0; i < PROTO_HEADER_SIZE; i++)
                assert_int_equal(proto_frame_length(buf, i), 0);
        assert_int_equal(proto_frame_length(buf, (size_t) n - 1), n);   /* length known from the header */
}

static void test_bad_magic(void **state) {
        struct proto_msg m;
        make(&m, PROTO_KILL);
        int n = encode(&m);
        buf[0] ^= 0xff;
        assert_int_equal(proto_frame_length(buf, 1), -EPROTO);      /* refused at the first byte */
        assert_int_equal(proto_decode(buf, (size_t) n, &m), -EPROTO);
        buf[0] ^= 0xff;
        buf[3] = 'x';
        assert_int_equal(proto_frame_length(buf, 4), -EPROTO);
}

static void test_other_version(void **state) {
        struct proto_msg m;
        make(&m, PROTO_KILL);
        int n = encode(&m);
        buf[4] = PROTO_VERSION + 1;
        assert_int_equal(proto_frame_length(buf, (size_t) n), -EPROTONOSUPPORT);
        assert_int_equal(proto_decode(buf, (size_t) n, &m), -EPROTONOSUPPORT);
}

static void test_unknown_type(void **state) {
        struct proto_msg m;
        make(&m, PROTO_KILL);
        int n = encode(&m);
        buf[6] = _PROTO_TYPE_MAX;
        assert_int_equal(proto_frame_length(buf, (size_t) n), -EOPNOTSUPP);
        buf[6] = 0;
        assert_int_equal(proto_decode(buf, (size_t) n, &m), -EOPNOTSUPP);
        /* And encoding an unknown type is refused. */
        proto_init(&m, 0);
        assert_int_equal(proto_encode(&m, buf, sizeof buf), -EINVAL);
}

static void test_oversized_length(void **state) {
        struct proto_msg m;
        make(&m, PROTO_KILL);
        encode(&m);
        uint32_t len = PROTO_MAX_PAYLOAD + 1;
        memcpy(buf + 8, &len, 4);
        assert_int_equal(proto_frame_length(buf, PROTO_HEADER_SIZE), -EMSGSIZE);
        len = 0xffffffffu;
        memcpy(buf + 8, &len, 4);
        assert_int_equal(proto_frame_length(buf, PROTO_HEADER_SIZE), -EMSGSIZE);
}

static void test_reserved_bits(void **state) {
        struct proto_msg m;
        make(&m, PROTO_KILL);
        int n = encode(&m);
        buf[15] = 0x80;
        assert_int_equal(proto_frame_length(buf, (size_t) n), -EBADMSG);
        assert_int_equal(proto_decode(buf, (size_t) n, &m), -EBADMSG);
}

static void set_len(uint32_t payload) {
        memcpy(buf + 8, &payload, 4);
}

static void test_truncated_payload(void **state) {
        for (int t = 1; t < _PROTO_TYPE_MAX; t++) {
                struct proto_msg m;
                make(&m, t);
                int n = encode(&m);
                /* Cut the payload short but keep the header consistent with
                 * the cut: the schema must notice the missing fields. */
                for (int cut = 1; cut <= n - PROTO_HEADER_SIZE; cut += (cut < 40 ? 1 : 97)) {
                        set_len((uint32_t) (n - PROTO_HEADER_SIZE - cut));
                        assert_int_equal(proto_decode(buf, (size_t) (n - cut), &m), -EBADMSG);
                }
                /* A buffer shorter than the header's length is refused too. */
                set_len((uint32_t) (n - PROTO_HEADER_SIZE));
                assert_int_equal(proto_decode(buf, (size_t) n - 1, &m), -EBADMSG);
        }
}

static void test_trailing_bytes(void **state) {
        struct proto_msg m;
        make(&m, PROTO_HELLO);
        int n = encode(&m);
        buf[n] = 0;
        set_len((uint32_t) (n + 1 - PROTO_HEADER_SIZE));
        assert_int_equal(proto_decode(buf, (size_t) n + 1, &m), -EBADMSG);
        /* And more bytes than the header says. */
        set_len((uint32_t) (n - PROTO_HEADER_SIZE));
        assert_int_equal(proto_decode(buf, (size_t) n + 1, &m), -EBADMSG);
}

/* A message without payload (EXEC, EXEC_FAILED) carries none. */
static void test_payload_on_empty_type(void **state) {
        static const int types[] = { PROTO_EXEC, PROTO_EXEC_FAILED };
        for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
                struct proto_msg m;
                make(&m, types[i]);
                int n = encode(&m);
                assert_int_equal(n, PROTO_HEADER_SIZE);
                assert_int_equal(proto_decode(buf, (size_t) n, &m), 0);
                buf[n] = 0;
                set_len(1);
                assert_int_equal(proto_decode(buf, (size_t) n + 1, &m), -EBADMSG);
        }
}

static void test_overlong_string(void **state) {
        struct proto_msg m;
        /* KV_GET: just the key string. Claim a length one over its cap. */
        proto_init(&m, PROTO_KV_GET);
        int n = encode(&m);
        assert_int_equal(n, PROTO_HEADER_SIZE + 2);
        uint16_t sl = PROTO_KEY_MAX + 1;
        memcpy(buf + PROTO_HEADER_SIZE, &sl, 2);
        memset(buf + PROTO_HEADER_SIZE + 2, 'a', sl);
        set_len(2u + sl);
        assert_int_equal(proto_decode(buf, PROTO_HEADER_SIZE + 2u + sl, &m), -EBADMSG);
        /* At the cap it is fine. */
        sl = PROTO_KEY_MAX;
        memcpy(buf + PROTO_HEADER_SIZE, &sl, 2);
        set_len(2u + sl);
        assert_int_equal(proto_decode(buf, PROTO_HEADER_SIZE + 2u + sl, &m), 0);
        assert_int_equal(strlen(m.u.kv.key), PROTO_KEY_MAX);
        /* The encoder refuses a string that fills its whole array (no NUL). */
        proto_init(&m, PROTO_KV_GET);
        memset(m.u.kv.key, 'b', sizeof m.u.kv.key);
        assert_int_equal(proto_encode(&m, buf, sizeof buf), -EINVAL);
}

static void test_control_char(void **state) {
        struct proto_msg m;
        make(&m, PROTO_REJECT);
        int n = encode(&m);
        /* reason starts after code (2) and its length (2). */
        buf[PROTO_HEADER_SIZE + 4] = '\n';
        assert_int_equal(proto_decode(buf, (size_t) n, &m), -EBADMSG);
        buf[PROTO_HEADER_SIZE + 4] = 0;
        assert_int_equal(proto_decode(buf, (size_t) n, &m), -EBADMSG);
        buf[PROTO_HEADER_SIZE + 4] = 0x7f;
        assert_int_equal(proto_decode(buf, (size_t) n, &m), -EBADMSG);
        make(&m, PROTO_REJECT);
        m.u.reject.reason[3] = '\t';
        assert_int_equal(proto_encode(&m, buf, sizeof buf), -EINVAL);
}

static void test_enum_out_of_range(void **state) {
        struct proto_msg m;
        make(&m, PROTO_HELLO);
        int n = encode(&m);
        buf[PROTO_HEADER_SIZE] = _PROTO_ROLE_MAX;       /* role */
        assert_int_equal(proto_decode(buf, (size_t) n, &m), -EBADMSG);
        buf[PROTO_HEADER_SIZE] = 0;
        assert_int_equal(proto_decode(buf, (size_t) n, &m), -EBADMSG);

        make(&m, PROTO_COMMAND);
        n = encode(&m);
        buf[PROTO_HEADER_SIZE] = _PROTO_CMD_MAX;
        assert_int_equal(proto_decode(buf, (size_t) n, &m), -EBADMSG);

        make(&m, PROTO_REJECT);
        n = encode(&m);
        buf[PROTO_HEADER_SIZE] = _PROTO_REJ_MAX;
        assert_int_equal(proto_decode(buf, (size_t) n, &m), -EBADMSG);

        make(&m, PROTO_PHASE_GO);
        n = encode(&m);
        buf[PROTO_HEADER_SIZE + 8] = _PROTO_PH_MAX;
        assert_int_equal(proto_decode(buf, (size_t) n, &m), -EBADMSG);

        make(&m, PROTO_STATUS);
        n = encode(&m);
        buf[PROTO_HEADER_SIZE + 4] = 2;                 /* running is a boolean */
        assert_int_equal(proto_decode(buf, (size_t) n, &m), -EBADMSG);

        /* A NOTICE's level is LOG_ERR .. LOG_INFO. */
        make(&m, PROTO_NOTICE);
        n = encode(&m);
        buf[PROTO_HEADER_SIZE] = LOG_DEBUG;
        assert_int_equal(proto_decode(buf, (size_t) n, &m), -EBADMSG);
        buf[PROTO_HEADER_SIZE] = LOG_CRIT;
        assert_int_equal(proto_decode(buf, (size_t) n, &m), -EBADMSG);
        make(&m, PROTO_NOTICE);
        m.u.notice.level = LOG_EMERG;
        assert_int_equal(proto_encode(&m, buf, sizeof buf), -EINVAL);

        make(&m, PROTO_MEMBER);
        m.u.member.state = 0;
        assert_int_equal(proto_encode(&m, buf, sizeof buf), -EINVAL);
}

static void test_bytes_over_cap(void **state) {
        struct proto_msg m;
        make(&m, PROTO_KV_PUT);
        int n = encode(&m);
        /* key: 2 + strlen, then the u32 value length. */
        size_t off = PROTO_HEADER_SIZE + 2 + strlen(m.u.kv.key);
        uint32_t bl = PROTO_VALUE_MAX + 1;
        memcpy(buf + off, &bl, 4);
        assert_int_equal(proto_decode(buf, (size_t) n, &m), -EBADMSG);
        /* A length beyond the remaining payload is refused as well. */
        bl = 6;
        memcpy(buf + off, &bl, 4);
        assert_int_equal(proto_decode(buf, (size_t) n, &m), -EBADMSG);
        make(&m, PROTO_KV_PUT);
        m.u.kv.value_len = PROTO_VALUE_MAX + 1;
        assert_int_equal(proto_encode(&m, buf, sizeof buf), -EINVAL);
}

static void test_encode_small_buffer(void **state) {
        struct proto_msg m;
        make(&m, PROTO_STATUS);
        uint8_t small[64];
        assert_int_equal(proto_encode(&m, small, sizeof small), -EMSGSIZE);
        assert_int_equal(proto_encode(&m, small, 8), -EMSGSIZE);
}

static void test_names(void **state) {
        assert_string_equal(proto_phase_name(PROTO_PH_SUSPEND), "suspend");
        assert_string_equal(proto_phase_name(PROTO_PH_RST_JOIN), "restart-join");
        assert_string_equal(proto_phase_name(PROTO_PH_REFILL), "refill");
        assert_string_equal(proto_phase_name(9), "unknown");
        assert_string_equal(proto_reject_name(PROTO_REJ_UID), "peer of another user");
        assert_string_equal(proto_reject_name(0), "unknown reason");
        assert_string_equal(proto_command_name(PROTO_CMD_BCHECKPOINT), "bcheckpoint");
        assert_string_equal(proto_type_name(999), "UNKNOWN");
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_roundtrip_all_types),
                cmocka_unit_test(test_frame_needs_header),
                cmocka_unit_test(test_bad_magic),
                cmocka_unit_test(test_other_version),
                cmocka_unit_test(test_unknown_type),
                cmocka_unit_test(test_oversized_length),
                cmocka_unit_test(test_reserved_bits),
                cmocka_unit_test(test_truncated_payload),
                cmocka_unit_test(test_trailing_bytes),
                cmocka_unit_test(test_payload_on_empty_type),
                cmocka_unit_test(test_overlong_string),
                cmocka_unit_test(test_control_char),
                cmocka_unit_test(test_enum_out_of_range),
                cmocka_unit_test(test_bytes_over_cap),
                cmocka_unit_test(test_encode_small_buffer),
                cmocka_unit_test(test_names),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
