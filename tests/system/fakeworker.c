/* fakeworker: speaks the coordinator protocol as one or more workers (or
 * restarted processes), for tests/system/test_coordinator.py.
 *
 * It joins, follows the checkpoint phases (writing a fake image file of N
 * bytes into the temporary generation directory at WRITE), resumes after
 * COMMITTED or ABORT, follows the restart phases, and exits 0 on KILL.
 * Options make it die (SIGKILL), fail (status < 0) or stall at a phase, lie
 * about its image size, send malformed input, or expect a REJECT.
 * Progress goes to stdout, one line per event, for the driver to wait on. */
#include <getopt.h>
#include <inttypes.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <string.h>
#include <sys/socket.h>
#include "img.h"

#include "client.h"
#include "env.h"
#include "proto.h"
#include "util.h"

enum bad_mode { BAD_NONE, BAD_GARBAGE, BAD_OVERSIZE, BAD_TRUNCATED, BAD_VERSION, BAD_RESERVED,
                BAD_STRING, BAD_UNEXPECTED, BAD_NOHELLO };

static struct {
        struct coord_addr addr;
        int count;
        const char *program;
        const char *upid;
        uint64_t image_bytes;
        int die_at, fail_at, stall_at;
        bool lie_size;
        const char *comp;
        const char *ckptdir;
        uint32_t interval;
        const char *secret;
        bool restart;
        uint64_t gen;
        uint32_t members;
        int expect_reject;
        enum bad_mode bad;
        bool have_addr;
} opt = {
        .count = 1,
        .program = "fake",
        .image_bytes = 4096,
        .die_at = -1, .fail_at = -1, .stall_at = -1,
        .expect_reject = -1,
};

struct worker {
        int fd;
        int idx;
        char upid[PROTO_ID_MAX + 1];
        bool welcomed;
        uint64_t gen;
        uint32_t flags;
        char dir[PROTO_PATH_MAX + 1];
};

static int phase_parse(const char *s) {
        for (int p = 1; p < _PROTO_PH_MAX; p++)
                if (!strcmp(proto_phase_name(p), s))
                        return p;
        return -1;
}

static int reject_parse(const char *s) {
        static const char *const names[] = {
                [PROTO_REJ_BAD_MESSAGE] = "bad_message", [PROTO_REJ_VERSION] = "version",
                [PROTO_REJ_UID] = "uid", [PROTO_REJ_SECRET] = "secret",
                [PROTO_REJ_NOT_RUNNING] = "not_running", [PROTO_REJ_WRONG_COMP] = "wrong_comp",
                [PROTO_REJ_PEER_MISMATCH] = "peer_mismatch", [PROTO_REJ_SHUTTING_DOWN] = "shutting_down",
                [PROTO_REJ_FULL] = "full",
        };
        for (size_t i = 1; i < ARRAY_SIZE(names); i++)
                if (names[i] && !strcmp(names[i], s))
                        return (int) i;
        return -1;
}

static void say(const char *fmt, ...) _printf_(1, 2);
static void say(const char *fmt, ...) {
        va_list ap;
        va_start(ap, fmt);
        vprintf(fmt, ap);
        va_end(ap);
        putchar('\n');
        fflush(stdout);
}

static _noreturn_ void die(const char *fmt, ...) _printf_(1, 2);
static void die(const char *fmt, ...) {
        va_list ap;
        va_start(ap, fmt);
        fputs("fakeworker: ", stderr);
        vfprintf(stderr, fmt, ap);
        fputc('\n', stderr);
        va_end(ap);
        exit(1);
}

static void send_msg(struct worker *w, const struct proto_msg *m) {
        int r = proto_send(w->fd, m);
        if (r < 0)
                die("worker %d: send %s: %s", w->idx, proto_type_name(m->type), strerror(-r));
}

static void send_done(struct worker *w, int phase, int status, uint64_t bytes, uint32_t crc, const char *detail) {
        struct proto_msg m;
        proto_init(&m, PROTO_PHASE_DONE);
        m.u.phase_done.generation = w->gen;
        m.u.phase_done.phase = (uint8_t) phase;
        m.u.phase_done.status = status;
        m.u.phase_done.bytes = bytes;
        m.u.phase_done.crc = crc;
        if (detail)
                strscpy(m.u.phase_done.detail, detail, sizeof m.u.phase_done.detail);
        send_msg(w, &m);
}

static void write_image(struct worker *w) {
        char name[PROTO_PATH_MAX + 1], path[PROTO_PATH_MAX * 2 + 2];
        snprintf(name, sizeof name, "ckpt_%s_%s.dmtcp", opt.program, w->upid);
        sanitize_filename(name);
        snprintf(path, sizeof path, "%s/%s", w->dir, name);
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (fd < 0) {
                /* E.g. the checkpoint was aborted meanwhile and its directory
                 * removed: report it, as the runtime would. */
                int err = errno;
                char why[PROTO_TEXT_MAX + 1];
                if (snprintf(why, sizeof why, "cannot create image %s: %s", name, strerror(err)) < 0)
                        why[0] = 0;
                errno = err;
                send_done(w, PROTO_PH_WRITE, -errno, 0, 0, why);
                return;
        }
        uint8_t block[4096];
        uint32_t crc = 0;
        for (uint64_t off = 0; off < opt.image_bytes;) {
                size_t n = (size_t) MIN((uint64_t) sizeof block, opt.image_bytes - off);
                for (size_t i = 0; i < n; i++)
                        block[i] = (uint8_t) (off + i + (uint64_t) w->idx);
                if (write_full(fd, block, n) < 0)
                        die("cannot write %s: %m", path);
                crc = img_crc32(crc, block, n);
                off += n;
        }
        fsync(fd);
        close(fd);
        send_done(w, PROTO_PH_WRITE, 0, opt.image_bytes + (opt.lie_size ? 1 : 0), crc, name);
}

/* Reach phase p of a checkpoint or restart: die, fail, stall or report. */
static void do_phase(struct worker *w, int p) {
        say("phase %d %s", w->idx, proto_phase_name(p));
        if (p == opt.die_at) {
                say("dying %d %s", w->idx, proto_phase_name(p));
                raise(SIGKILL);
        }
        if (p == opt.stall_at) {
                say("stalling %d %s", w->idx, proto_phase_name(p));
                return;
        }
        if (p == opt.fail_at) {
                char why[128];
                snprintf(why, sizeof why, "simulated failure in %s", proto_phase_name(p));
                send_done(w, p, -EIO, 0, 0, why);
                return;
        }
        if (p == PROTO_PH_WRITE)
                write_image(w);
        else
                send_done(w, p, 0, 0, 0, NULL);
}

static void send_hello(struct worker *w) {
        struct proto_msg m;
        proto_init(&m, PROTO_HELLO);
        struct proto_hello *h = &m.u.hello;
        hello_fill_self(h, opt.restart ? PROTO_ROLE_RESTART : PROTO_ROLE_WORKER, opt.program);
        strscpy(h->upid, w->upid, sizeof h->upid);
        if (opt.comp)
                strscpy(h->comp_id, opt.comp, sizeof h->comp_id);
        if (opt.ckptdir)
                strscpy(h->ckptdir, opt.ckptdir, sizeof h->ckptdir);
        if (opt.secret)
                strscpy(h->secret, opt.secret, sizeof h->secret);
        h->interval = opt.interval;
        h->generation = opt.gen;
        h->members = opt.members;
        send_msg(w, &m);
}

static bool handle(struct worker *w, const struct proto_msg *m, int *welcomed) {
        switch (m->type) {
        case PROTO_WELCOME:
                if (opt.expect_reject >= 0) {
                        say("welcomed-unexpectedly %d", w->idx);
                        exit(1);
                }
                w->welcomed = true;
                say("welcome %d %" PRIu32 " %s gen %" PRIu64 " interval %" PRIu32 " dir %s", w->idx,
                    m->u.welcome.member_id, m->u.welcome.comp_id, m->u.welcome.generation,
                    m->u.welcome.interval, m->u.welcome.ckptdir);
                if (++*welcomed == opt.count)
                        say("ready %d", opt.count);
                return true;
        case PROTO_REJECT:
                say("rejected %d %u %s", w->idx, m->u.reject.code, m->u.reject.reason);
                if (opt.expect_reject >= 0)
                        exit(m->u.reject.code == opt.expect_reject ? 0 : 1);
                exit(4);
        case PROTO_CKPT_BEGIN:
                w->gen = m->u.ckpt_begin.generation;
                w->flags = m->u.ckpt_begin.flags;
                strscpy(w->dir, m->u.ckpt_begin.dir, sizeof w->dir);
                say("begin %d %" PRIu64 " members %" PRIu32 " flags %" PRIu32, w->idx, w->gen,
                    m->u.ckpt_begin.members, w->flags);
                do_phase(w, PROTO_PH_SUSPEND);
                return true;
        case PROTO_PHASE_GO: {
                int p = m->u.phase_go.phase;
                say("go %d %s", w->idx, proto_phase_name(p));
                if (p >= PROTO_PH_SUSPEND && p < PROTO_PH_WRITE)
                        do_phase(w, p + 1);
                else if (p == PROTO_PH_RST_JOIN) {
                        w->gen = m->u.phase_go.generation;
                        do_phase(w, PROTO_PH_RST_RESTORE);
                } else if (p > PROTO_PH_RST_JOIN && p < PROTO_PH_RST_REFILL)
                        do_phase(w, p + 1);
                else if (p == PROTO_PH_RST_REFILL) {
                        do_phase(w, PROTO_PH_RST_RESUME);
                        say("restarted %d %" PRIu64, w->idx, w->gen);
                }
                return true;
        }
        case PROTO_CKPT_COMMITTED:
                say("committed %d %" PRIu64 " %s", w->idx, m->u.ckpt_committed.generation, m->u.ckpt_committed.dir);
                if (w->flags & PROTO_CKPT_KILL_AFTER) {
                        say("exiting-after-checkpoint %d", w->idx);
                        return false;
                }
                if (opt.die_at == PROTO_PH_RESUME)
                        raise(SIGKILL);
                if (opt.stall_at == PROTO_PH_RESUME) {
                        say("stalling %d %s", w->idx, proto_phase_name(PROTO_PH_RESUME));
                        return true;
                }
                send_done(w, PROTO_PH_RESUME, 0, 0, 0, NULL);
                return true;
        case PROTO_CKPT_ABORT:
                say("aborted %d %" PRIu64 " %s", w->idx, m->u.ckpt_abort.generation, m->u.ckpt_abort.reason);
                send_done(w, PROTO_PH_RESUME, 0, 0, 0, NULL);
                return true;
        case PROTO_KILL:
                say("killed %d grace %" PRIu32, w->idx, m->u.kill.grace_ms);
                exit(0);
        case PROTO_KV_VALUE:
                say("kv %d %s %u %.*s", w->idx, m->u.kv.key, m->u.kv.found, (int) m->u.kv.value_len,
                    (const char *) m->u.kv.value);
                return true;
        default:
                die("worker %d: unexpected %s", w->idx, proto_type_name(m->type));
        }
}

/* Send something invalid and check that the coordinator answers with a
 * REJECT and/or closes the connection. */
static int run_bad(void) {
        int fd = coord_connect(&opt.addr, 5000);
        if (fd < 0)
                die("connect: %s", strerror(-fd));
        uint8_t buf[PROTO_MAX_MESSAGE];
        size_t len = 0;
        struct proto_msg m;
        proto_init(&m, PROTO_HELLO);
        hello_fill_self(&m.u.hello, PROTO_ROLE_WORKER, opt.program);
        int n = proto_encode(&m, buf, sizeof buf);
        if (n < 0)
                die("encode: %s", strerror(-n));
        switch (opt.bad) {
        case BAD_GARBAGE:
                len = (size_t) snprintf((char *) buf, sizeof buf, "GET / HTTP/1.0\r\nHost: x\r\n\r\n");
                break;
        case BAD_OVERSIZE:
                buf[8] = 0xff, buf[9] = 0xff, buf[10] = 0xff, buf[11] = 0x7f;
                len = PROTO_HEADER_SIZE;
                break;
        case BAD_TRUNCATED:
                len = (size_t) n / 2;
                break;
        case BAD_VERSION:
                buf[4] = 99;
                len = (size_t) n;
                break;
        case BAD_RESERVED:
                buf[12] = 1;
                len = (size_t) n;
                break;
        case BAD_STRING:
                /* The first string after the fixed fields is host: poison it. */
                buf[PROTO_HEADER_SIZE + 1 + 4 + 4 + 8 + 4 + 4 + 2] = 0x01;
                len = (size_t) n;
                break;
        case BAD_UNEXPECTED:
                proto_init(&m, PROTO_PHASE_DONE);
                m.u.phase_done.phase = PROTO_PH_SUSPEND;
                n = proto_encode(&m, buf, sizeof buf);
                len = (size_t) n;
                break;
        case BAD_NOHELLO:
        case BAD_NONE:
                break;
        }
        if (len > 0 && write_full(fd, buf, len) < 0)
                die("send: %m");
        if (opt.bad == BAD_TRUNCATED)
                shutdown(fd, SHUT_WR);
        int r = proto_recv(fd, &m, 10000);
        if (r == 0 && m.type == PROTO_REJECT) {
                say("rejected %u %s", m.u.reject.code, m.u.reject.reason);
                /* Then the coordinator must close. */
                r = proto_recv(fd, &m, 5000);
                if (r != -ECONNRESET) {
                        say("not-closed %s", strerror(-r));
                        return 1;
                }
                say("closed");
                return 0;
        }
        if (r == -ECONNRESET) {
                say("closed-without-reject");
                return 0;
        }
        say("unexpected %s", r < 0 ? strerror(-r) : proto_type_name(m.type));
        return 1;
}

static void usage(void) {
        fputs("usage: fakeworker (--port P [--host H] | --socket PATH) [--count N] [--program NAME] [--upid U]\n"
              "  [--image-bytes N] [--die-at PHASE] [--fail-at PHASE] [--stall-at PHASE] [--lie-size]\n"
              "  [--comp ID] [--ckptdir DIR] [--interval S] [--secret S]\n"
              "  [--restart --gen G --members N --upid U --ckptdir GENDIR]\n"
              "  [--expect-reject uid|secret|wrong_comp|peer_mismatch|not_running|shutting_down|full|bad_message]\n"
              "  [--bad garbage|oversize|truncated|version|reserved|string|unexpected|nohello]\n", stderr);
        exit(64);
}

int main(int argc, char *argv[]) {
        static const struct option lo[] = {
                { "port", required_argument, NULL, 'p' },
                { "host", required_argument, NULL, 'H' },
                { "socket", required_argument, NULL, 's' },
                { "count", required_argument, NULL, 'n' },
                { "program", required_argument, NULL, 'P' },
                { "upid", required_argument, NULL, 'u' },
                { "image-bytes", required_argument, NULL, 'b' },
                { "die-at", required_argument, NULL, 'd' },
                { "fail-at", required_argument, NULL, 'f' },
                { "stall-at", required_argument, NULL, 'S' },
                { "lie-size", no_argument, NULL, 'L' },
                { "comp", required_argument, NULL, 'c' },
                { "ckptdir", required_argument, NULL, 'D' },
                { "interval", required_argument, NULL, 'i' },
                { "secret", required_argument, NULL, 'x' },
                { "restart", no_argument, NULL, 'r' },
                { "gen", required_argument, NULL, 'g' },
                { "members", required_argument, NULL, 'm' },
                { "expect-reject", required_argument, NULL, 'e' },
                { "bad", required_argument, NULL, 'B' },
                {}
        };
        static const char *const bad_names[] = {
                [BAD_GARBAGE] = "garbage", [BAD_OVERSIZE] = "oversize", [BAD_TRUNCATED] = "truncated",
                [BAD_VERSION] = "version", [BAD_RESERVED] = "reserved", [BAD_STRING] = "string",
                [BAD_UNEXPECTED] = "unexpected", [BAD_NOHELLO] = "nohello",
        };
        const char *host = "127.0.0.1";
        int c, port = -1;
        uint32_t u32;
        while ((c = getopt_long(argc, argv, "", lo, NULL)) >= 0) {
                switch (c) {
                case 'p':
                        if (parse_int_range(optarg, 1, 65535, &port) < 0)
                                usage();
                        break;
                case 'H':
                        host = optarg;
                        break;
                case 's':
                        opt.addr.kind = COORD_UNIX;
                        strscpy(opt.addr.path, optarg, sizeof opt.addr.path);
                        opt.have_addr = true;
                        break;
                case 'n':
                        if (parse_int_range(optarg, 1, 4096, &opt.count) < 0)
                                usage();
                        break;
                case 'P':
                        opt.program = optarg;
                        break;
                case 'u':
                        opt.upid = optarg;
                        break;
                case 'b':
                        if (parse_u64(optarg, &opt.image_bytes) < 0)
                                usage();
                        break;
                case 'd':
                case 'f':
                case 'S': {
                        int p = phase_parse(optarg);
                        if (p < 0)
                                usage();
                        *(c == 'd' ? &opt.die_at : c == 'f' ? &opt.fail_at : &opt.stall_at) = p;
                        break;
                }
                case 'L':
                        opt.lie_size = true;
                        break;
                case 'c':
                        opt.comp = optarg;
                        break;
                case 'D':
                        opt.ckptdir = optarg;
                        break;
                case 'i':
                        if (parse_u32(optarg, &opt.interval) < 0)
                                usage();
                        break;
                case 'x':
                        opt.secret = optarg;
                        break;
                case 'r':
                        opt.restart = true;
                        break;
                case 'g':
                        if (parse_u64(optarg, &opt.gen) < 0)
                                usage();
                        break;
                case 'm':
                        if (parse_u32(optarg, &u32) < 0)
                                usage();
                        opt.members = u32;
                        break;
                case 'e':
                        if ((opt.expect_reject = reject_parse(optarg)) < 0)
                                usage();
                        break;
                case 'B':
                        for (size_t i = 1; i < ARRAY_SIZE(bad_names); i++)
                                if (!strcmp(bad_names[i], optarg))
                                        opt.bad = (enum bad_mode) i;
                        if (opt.bad == BAD_NONE)
                                usage();
                        break;
                default:
                        usage();
                }
        }
        if (!opt.have_addr) {
                if (port < 0)
                        usage();
                opt.addr.kind = COORD_TCP;
                strscpy(opt.addr.host, host, sizeof opt.addr.host);
                opt.addr.port = (uint16_t) port;
        }
        signal(SIGPIPE, SIG_IGN);
        if (opt.bad != BAD_NONE)
                return run_bad();

        struct worker *ws = calloc((size_t) opt.count, sizeof *ws);
        struct pollfd *pfds = calloc((size_t) opt.count, sizeof *pfds);
        if (!ws || !pfds)
                die("out of memory");
        for (int i = 0; i < opt.count; i++) {
                struct worker *w = &ws[i];
                w->idx = i;
                if (opt.upid && opt.count == 1)
                        strscpy(w->upid, opt.upid, sizeof w->upid);
                else
                        snprintf(w->upid, sizeof w->upid, "%s%d-%d", opt.upid ? opt.upid : "u", (int) getpid(), i);
                w->fd = coord_connect(&opt.addr, 5000);
                if (w->fd < 0)
                        die("worker %d: connect: %s", i, strerror(-w->fd));
                send_hello(w);
                pfds[i] = (struct pollfd) { .fd = w->fd, .events = POLLIN };
        }
        int welcomed = 0, alive = opt.count;
        while (alive > 0) {
                if (poll(pfds, (nfds_t) opt.count, -1) < 0) {
                        if (errno == EINTR)
                                continue;
                        die("poll: %m");
                }
                for (int i = 0; i < opt.count; i++) {
                        if (pfds[i].fd < 0 || !(pfds[i].revents & (POLLIN | POLLHUP | POLLERR)))
                                continue;
                        struct proto_msg m;
                        int r = proto_recv(ws[i].fd, &m, 10000);
                        if (r < 0) {
                                say("coordinator-closed %d %s", i, strerror(-r));
                                exit(3);
                        }
                        if (!handle(&ws[i], &m, &welcomed)) {
                                close(ws[i].fd);
                                pfds[i].fd = -1;
                                alive--;
                        }
                }
        }
        return 0;
}
