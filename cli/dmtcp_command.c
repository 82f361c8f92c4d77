/* dmtcp_command: ask a coordinator for its status, its members, a
 * checkpoint, a new interval, a kill or a quit (DESIGN.md contracts).
 * Exit: 0 success, 1 refused or failed, 2 no coordinator answered, 64 usage.
 * docs/dmtcp_command-json.md describes the --json output. */
#include <inttypes.h>
#include <stdarg.h>
#include <string.h>
#include <time.h>

#include "client.h"
#include "config.h"
#include "env.h"
#include "proto.h"
#include "util.h"

#define EXIT_REFUSED  1
#define EXIT_NO_COORD 2
#define EXIT_USAGE    64

static const char *prog = "dmtcp_command";

struct args {
        const char *host;
        int port;
        const char *job;
        bool json;
        int op;                 /* enum proto_command, 0 = none */
        uint32_t arg;
};

static void help(void) {
        printf("Usage: %s [OPTIONS] COMMAND\n"
               "Send a command to a dmtcp coordinator.\n"
               "\n"
               "Options:\n"
               "  -h, --coord-host H     coordinator host (default $DMTCP_COORD_HOST or 127.0.0.1)\n"
               "  -p, --coord-port P     coordinator port (default $DMTCP_COORD_PORT or 7779)\n"
               "      --job NAME         the coordinator of job NAME (its Unix socket)\n"
               "      --json             machine-readable output (docs/dmtcp_command-json.md)\n"
               "      --help, --version\n"
               "Commands:\n"
               "  -s, --status           show the coordinator's status (NUM_PEERS=, RUNNING=)\n"
               "  -l, --list             list the processes of the computation\n"
               "  -c, --checkpoint       start a checkpoint and return\n"
               "  -bc, --bcheckpoint     checkpoint and wait until it is committed (or failed)\n"
               "  -kc, --kcheckpoint     checkpoint, then end every process\n"
               "  -i, --interval S       checkpoint every S seconds (0 = off)\n"
               "  -k, --kill             end every process of the computation\n"
               "  -q, --quit             end every process, then the coordinator\n"
               "\n"
               "Exit status: 0 success, 1 refused or failed, 2 no coordinator answered, 64 usage error.\n",
               prog);
}

static _printf_(1, 2) int usage_error(const char *fmt, ...) {
        va_list ap;
        va_start(ap, fmt);
        fprintf(stderr, "%s: ", prog);
        vfprintf(stderr, fmt, ap);
        fputs("; see --help\n", stderr);
        va_end(ap);
        return -EINVAL;
}

/* "--name=value" or "--name value" / "-x value". */
static int option_value(int argc, char *argv[], int *i, const char *shrt, const char *lng, const char **ret) {
        const char *a = argv[*i];
        size_t ll = strlen(lng);
        if (!strncmp(a, lng, ll) && a[ll] == '=') {
                *ret = a + ll + 1;
                return 1;
        }
        if (strcmp(a, lng) && (!shrt || strcmp(a, shrt)))
                return 0;
        if (*i + 1 >= argc)
                return usage_error("option %s needs a value", a);
        *ret = argv[++*i];
        return 1;
}

static int set_op(struct args *a, int op, const char *opt) {
        if (a->op)
                return usage_error("only one command at a time (%s)", opt);
        a->op = op;
        return 0;
}

static int parse_args(int argc, char *argv[], struct args *a) {
        static const struct { const char *s, *l; int op; } cmds[] = {
                { "-s", "--status", PROTO_CMD_STATUS },
                { "-l", "--list", PROTO_CMD_LIST },
                { "-c", "--checkpoint", PROTO_CMD_CHECKPOINT },
                { "-bc", "--bcheckpoint", PROTO_CMD_BCHECKPOINT },
                { "-kc", "--kcheckpoint", PROTO_CMD_KCHECKPOINT },
                { "-k", "--kill", PROTO_CMD_KILL },
                { "-q", "--quit", PROTO_CMD_QUIT },
        };
        *a = (struct args) { .port = -1 };
        for (int i = 1; i < argc; i++) {
                const char *arg = argv[i], *v;
                int r;
                if (!strcmp(arg, "--help"))
                        return 1;
                if (!strcmp(arg, "--version"))
                        return 2;
                if (!strcmp(arg, "--json")) {
                        a->json = true;
                        continue;
                }
                if ((r = option_value(argc, argv, &i, "-h", "--coord-host", &v)) != 0) {
                        if (r < 0)
                                return r;
                        if (!*v)
                                return usage_error("--coord-host needs a host name");
                        a->host = v;
                        continue;
                }
                if ((r = option_value(argc, argv, &i, "-p", "--coord-port", &v)) != 0) {
                        if (r < 0)
                                return r;
                        if (parse_int_range(v, 1, 65535, &a->port) < 0)
                                return usage_error("--coord-port '%s' is not a port number 1..65535", v);
                        continue;
                }
                if ((r = option_value(argc, argv, &i, NULL, "--job", &v)) != 0) {
                        if (r < 0)
                                return r;
                        if (!job_name_valid(v))
                                return usage_error("invalid job name '%s': use 1 to 64 of A-Z a-z 0-9 _ .", v);
                        a->job = v;
                        continue;
                }
                if ((r = option_value(argc, argv, &i, "-i", "--interval", &v)) != 0) {
                        if (r < 0)
                                return r;
                        if (parse_u32(v, &a->arg) < 0)
                                return usage_error("--interval '%s' is not a number of seconds", v);
                        if ((r = set_op(a, PROTO_CMD_INTERVAL, arg)) < 0)
                                return r;
                        continue;
                }
                bool found = false;
                for (size_t k = 0; k < ARRAY_SIZE(cmds); k++)
                        if (!strcmp(arg, cmds[k].s) || !strcmp(arg, cmds[k].l)) {
                                if ((r = set_op(a, cmds[k].op, arg)) < 0)
                                        return r;
                                found = true;
                                break;
                        }
                if (!found)
                        return usage_error("unknown option or command '%s'", arg);
        }
        if (!a->op)
                return usage_error("no command given (e.g. --status, --bcheckpoint)");
        return 0;
}

/* ---- JSON ------------------------------------------------------------- */

/* A JSON string: escape quotes, backslashes and controls; invalid UTF-8
 * bytes become U+FFFD so the output always parses. */
static void json_str(const char *s) {
        putchar('"');
        const unsigned char *p = (const unsigned char *) s;
        while (*p) {
                unsigned char c = *p;
                if (c == '"' || c == '\\') {
                        printf("\\%c", c);
                        p++;
                } else if (c < 0x20) {
                        printf("\\u%04x", c);
                        p++;
                } else if (c < 0x80) {
                        putchar(c);
                        p++;
                } else {
                        int n = c >= 0xf0 && c < 0xf5 ? 4 : c >= 0xe0 ? 3 : c >= 0xc2 && c < 0xe0 ? 2 : 0;
                        bool ok = n > 0;
                        for (int k = 1; ok && k < n; k++)
                                ok = (p[k] & 0xc0) == 0x80;
                        if (ok) {
                                fwrite(p, 1, (size_t) n, stdout);
                                p += n;
                        } else {
                                fputs("\\ufffd", stdout);
                                p++;
                        }
                }
        }
        putchar('"');
}

static void json_key(const char *k, bool *first) {
        if (!*first)
                putchar(',');
        *first = false;
        json_str(k);
        putchar(':');
}

static void json_kv_str(const char *k, const char *v, bool *first) {
        json_key(k, first);
        json_str(v);
}

static void json_kv_u64(const char *k, uint64_t v, bool *first) {
        json_key(k, first);
        printf("%" PRIu64, v);
}

static void json_kv_bool(const char *k, bool v, bool *first) {
        json_key(k, first);
        fputs(v ? "true" : "false", stdout);
}

/* ---- output ----------------------------------------------------------- */

static const char *role_name(int r) {
        return r == PROTO_ROLE_WORKER ? "worker" : r == PROTO_ROLE_RESTART ? "restart" : r == PROTO_ROLE_COMMAND ? "command" : "unknown";
}

static const char *state_name(int s) {
        return s == PROTO_MS_RUNNING ? "running" : s == PROTO_MS_CHECKPOINTING ? "checkpointing" :
               s == PROTO_MS_RESTARTING ? "restarting" : "unknown";
}

static void format_time(uint64_t usec, char *buf, size_t size) {
        time_t t = (time_t) (usec / 1000000);
        struct tm tm;
        if (!usec || !localtime_r(&t, &tm) || !strftime(buf, size, "%Y-%m-%d %H:%M:%S", &tm))
                snprintf(buf, size, "never");
}

static void print_status(const struct proto_status *st, const char *where, bool json) {
        if (json) {
                bool f = true, g = true;
                putchar('{');
                json_key("coordinator", &f);
                putchar('{');
                json_kv_str("address", where, &g);
                json_kv_str("host", st->host, &g);
                json_kv_u64("port", st->port, &g);
                json_kv_str("socket", st->socket, &g);
                json_kv_u64("pid", st->coord_pid, &g);
                json_kv_str("job", st->job, &g);
                putchar('}');
                json_key("computation", &f);
                if (st->comp_id[0])
                        json_str(st->comp_id);
                else
                        fputs("null", stdout);
                json_kv_u64("num_peers", st->num_peers, &f);
                json_kv_bool("running", st->running, &f);
                json_kv_u64("ckpt_interval", st->interval, &f);
                json_kv_str("ckptdir", st->ckptdir, &f);
                json_kv_bool("exit_on_last", st->exit_on_last, &f);
                json_kv_u64("keep", st->keep, &f);
                json_kv_u64("generation", st->generation, &f);
                json_kv_u64("last_checkpoint_usec", st->last_ckpt_usec, &f);
                json_kv_str("phase", proto_phase_name(st->phase), &f);
                json_kv_str("state", st->state, &f);
                puts("}");
                return;
        }
        char when[64];
        format_time(st->last_ckpt_usec, when, sizeof when);
        printf("Coordinator:\n"
               "  Address: %s\n  Host: %s\n  Port: %u\n  Socket: %s\n  PID: %" PRIu32 "\n  Job: %s\n"
               "Status...\n"
               "  Computation: %s\n  Checkpoint dir: %s\n  Checkpoint interval: %" PRIu32 "%s\n"
               "  Exit on last: %s\n  Keep: %" PRIu32 "\n",
               where, st->host, st->port, st->socket[0] ? st->socket : "-", st->coord_pid, st->job,
               st->comp_id[0] ? st->comp_id : "(none)", st->ckptdir, st->interval, st->interval ? " s" : " (off)",
               st->exit_on_last ? "yes" : "no", st->keep);
        if (st->generation)
                printf("  Last checkpoint: generation %" PRIu64 " at %s\n", st->generation, when);
        else
                printf("  Last checkpoint: none\n");
        printf("  State: %s\n"
               "NUM_PEERS=%" PRIu32 "\nRUNNING=%s\nCKPT_INTERVAL=%" PRIu32 "\n",
               st->state, st->num_peers, st->running ? "yes" : "no", st->interval);
}

static void print_member(const struct proto_member *m, bool json, bool *first) {
        if (json) {
                bool f = true;
                if (!*first)
                        putchar(',');
                *first = false;
                putchar('{');
                json_kv_u64("id", m->id, &f);
                json_kv_u64("pid", m->pid, &f);
                json_kv_str("host", m->host, &f);
                json_kv_str("program", m->program, &f);
                json_kv_str("upid", m->upid, &f);
                json_kv_str("role", role_name(m->role), &f);
                json_kv_str("state", state_name(m->state), &f);
                json_kv_str("phase", proto_phase_name(m->phase), &f);
                putchar('}');
                return;
        }
        if (*first)
                printf("%-5s %-24s %-8s %-20s %-28s %-8s %-14s %s\n",
                       "ID", "PROGRAM", "PID", "HOST", "UPID", "ROLE", "STATE", "PHASE");
        *first = false;
        printf("%-5" PRIu32 " %-24s %-8" PRIu32 " %-20s %-28s %-8s %-14s %s\n", m->id, m->program, m->pid, m->host,
               m->upid, role_name(m->role), state_name(m->state), proto_phase_name(m->phase));
}

static void print_result(const struct proto_result *r, int op, bool json) {
        if (json) {
                bool f = true;
                putchar('{');
                json_kv_str("command", proto_command_name(op), &f);
                json_kv_bool("ok", r->status >= 0, &f);
                json_key("status", &f);
                printf("%" PRId32, r->status);
                json_kv_str("message", r->message, &f);
                json_kv_u64("generation", r->generation, &f);
                json_kv_u64("bytes", r->bytes, &f);
                json_kv_u64("duration_usec", r->duration_usec, &f);
                json_kv_u64("processes", r->processes, &f);
                json_kv_str("dir", r->dir, &f);
                puts("}");
                return;
        }
        if (r->status < 0) {
                fprintf(stderr, "%s: %s\n", prog, r->message[0] ? r->message : strerror(-r->status));
                return;
        }
        if ((op == PROTO_CMD_BCHECKPOINT || op == PROTO_CMD_KCHECKPOINT) && r->generation) {
                printf("checkpoint generation %" PRIu64 " committed: %" PRIu32 " processes, %.1f MiB in %.3f s, %s%s\n",
                       r->generation, r->processes, (double) r->bytes / (1024.0 * 1024.0),
                       (double) r->duration_usec / 1e6, r->dir,
                       op == PROTO_CMD_KCHECKPOINT ? "; the processes end now" : "");
                return;
        }
        printf("%s\n", r->message);
}

/* ---- main ------------------------------------------------------------- */

static int timeout_for(int op) {
        switch (op) {
        case PROTO_CMD_BCHECKPOINT:
        case PROTO_CMD_KCHECKPOINT:
                return -1;              /* as long as the checkpoint takes */
        case PROTO_CMD_KILL:
        case PROTO_CMD_QUIT:
                return 60 * 1000;       /* the coordinator answers after at most grace + 2 s */
        default:
                return 30 * 1000;
        }
}

static int run(const struct args *a, const struct coord_addr *addr, const char *where) {
        struct proto_hello h = {};
        hello_fill_self(&h, PROTO_ROLE_COMMAND, "dmtcp_command");
        char reason[PROTO_TEXT_MAX + 1] = "";
        int fd = coord_join(addr, &h, 10 * 1000, NULL, reason, sizeof reason);
        if (fd < 0) {
                switch (fd) {
                case -EACCES:
                case -EBUSY:
                case -EXDEV:
                case -ESHUTDOWN:
                case -EPROTO:
                        if (reason[0]) {
                                fprintf(stderr, "%s: the coordinator at %s refused us: %s\n", prog, where, reason);
                                return EXIT_REFUSED;
                        }
                        fprintf(stderr, "%s: something at %s does not speak the dmtcp protocol; check --coord-host/--coord-port\n",
                                prog, where);
                        return EXIT_NO_COORD;
                case -ETIMEDOUT:
                        fprintf(stderr, "%s: no coordinator answered at %s within 10 s; check that it runs (dmtcp_coordinator) and --coord-host/--coord-port\n",
                                prog, where);
                        return EXIT_NO_COORD;
                default:
                        fprintf(stderr, "%s: no coordinator at %s; start one with dmtcp_coordinator or dmtcp_launch\n",
                                prog, where);
                        return EXIT_NO_COORD;
                }
        }

        struct proto_msg m;
        proto_init(&m, PROTO_COMMAND);
        m.u.command.op = (uint8_t) a->op;
        m.u.command.arg = a->arg;
        int r = proto_send(fd, &m);
        if (r < 0) {
                close(fd);
                fprintf(stderr, "%s: lost the coordinator at %s: %s\n", prog, where, strerror(-r));
                return EXIT_REFUSED;
        }

        bool first = true;
        int ret = EXIT_REFUSED;
        if (a->op == PROTO_CMD_LIST && a->json)
                printf("{\"coordinator\":"), json_str(where), printf(",\"members\":[");
        for (;;) {
                r = proto_recv(fd, &m, timeout_for(a->op));
                if (r < 0) {
                        if (a->op == PROTO_CMD_LIST && a->json)
                                puts("]}");
                        fprintf(stderr, "%s: no answer from the coordinator at %s: %s\n", prog, where,
                                r == -ECONNRESET ? "it closed the connection" : strerror(-r));
                        break;
                }
                if (m.type == PROTO_STATUS && a->op == PROTO_CMD_STATUS) {
                        print_status(&m.u.status, where, a->json);
                        ret = 0;
                        break;
                }
                if (m.type == PROTO_MEMBER && a->op == PROTO_CMD_LIST) {
                        print_member(&m.u.member, a->json, &first);
                        continue;
                }
                if (m.type == PROTO_RESULT) {
                        if (a->op == PROTO_CMD_LIST) {
                                if (a->json)
                                        printf("],\"processes\":%" PRIu32 ",\"generation\":%" PRIu64 "}\n",
                                               m.u.result.processes, m.u.result.generation);
                                else
                                        printf("%s\n", m.u.result.message);
                        } else
                                print_result(&m.u.result, a->op, a->json);
                        ret = m.u.result.status < 0 ? EXIT_REFUSED : 0;
                        break;
                }
                if (m.type == PROTO_REJECT) {
                        if (a->op == PROTO_CMD_LIST && a->json)
                                puts("]}");
                        fprintf(stderr, "%s: the coordinator at %s refused the command: %s\n", prog, where,
                                m.u.reject.reason[0] ? m.u.reject.reason : proto_reject_name(m.u.reject.code));
                        break;
                }
                fprintf(stderr, "%s: unexpected %s from the coordinator at %s\n", prog, proto_type_name(m.type), where);
                break;
        }
        close(fd);
        fflush(stdout);
        return ret;
}

int main(int argc, char *argv[]) {
        struct args a;
        int r = parse_args(argc, argv, &a);
        if (r < 0)
                return EXIT_USAGE;
        if (r == 1) {
                help();
                return 0;
        }
        if (r == 2) {
                printf("%s %s\n", prog, DMTCP_VERSION);
                return 0;
        }
        struct coord_addr addr;
        r = coord_addr_resolve(&addr, a.host, a.port, a.job);
        if (r < 0) {
                fprintf(stderr, "%s: cannot tell where the coordinator is (%s); check DMTCP_COORD_HOST, DMTCP_COORD_PORT and DMTCP_COORD_SOCKET\n",
                        prog, strerror(-r));
                return EXIT_USAGE;
        }
        char where[512];
        coord_addr_describe(&addr, where, sizeof where);
        return run(&a, &addr, where);
}
