#include "coord-options.h"

#include <getopt.h>
#include <stdarg.h>
#include <string.h>

#include "env.h"
#include "util.h"

#define MAX_INTERVAL (10u * 365u * 24u * 3600u)   /* ten years: anything above is a typo */

enum {
        ARG_PORT_FILE = 0x100,
        ARG_BIND,
        ARG_DAEMON,
        ARG_EXIT_ON_LAST,
        ARG_CKPTDIR,
        ARG_KEEP,
        ARG_NO_STRICT,
        ARG_JOB,
        ARG_RESTART_TIMEOUT,
        ARG_STOP_TIMEOUT,
        ARG_IDLE_TIMEOUT,
        ARG_HELP,
        ARG_VERSION,
};

static const struct option long_options[] = {
        { "port",                   required_argument, NULL, 'p' },
        { "port-file",              required_argument, NULL, ARG_PORT_FILE },
        { "bind",                   required_argument, NULL, ARG_BIND },
        { "daemon",                 no_argument,       NULL, ARG_DAEMON },
        { "exit-on-last",           no_argument,       NULL, ARG_EXIT_ON_LAST },
        { "interval",               required_argument, NULL, 'i' },
        { "ckptdir",                required_argument, NULL, ARG_CKPTDIR },
        { "keep",                   required_argument, NULL, ARG_KEEP },
        { "no-strict-uid-checking", no_argument,       NULL, ARG_NO_STRICT },
        { "job",                    required_argument, NULL, ARG_JOB },
        { "restart-timeout",        required_argument, NULL, ARG_RESTART_TIMEOUT },
        { "stop-timeout",           required_argument, NULL, ARG_STOP_TIMEOUT },
        { "idle-timeout",           required_argument, NULL, ARG_IDLE_TIMEOUT },
        { "quiet",                  no_argument,       NULL, 'q' },
        { "help",                   no_argument,       NULL, ARG_HELP },
        { "version",                no_argument,       NULL, ARG_VERSION },
        {}
};

void coord_print_help(FILE *f) {
        fputs("Usage: dmtcp_coordinator [OPTIONS]\n"
              "Coordinate checkpoints and restarts of one computation.\n"
              "\n"
              "  -p, --port N               TCP port on 127.0.0.1 (default $DMTCP_COORD_PORT, $DMTCP_PORT or 7779; 0 = any)\n"
              "      --port-file F          write the port actually used to F\n"
              "      --bind ADDR            listen on ADDR instead of 127.0.0.1 (non-loopback needs the secret)\n"
              "      --daemon               run in the background; exit 0 once listening\n"
              "      --exit-on-last         exit when the last process leaves\n"
              "  -i, --interval S           checkpoint every S seconds (default $DMTCP_CHECKPOINT_INTERVAL; 0 = off)\n"
              "      --ckptdir DIR          checkpoint directory (default $DMTCP_CHECKPOINT_DIR, the first process's, or cwd)\n"
              "      --keep N               complete checkpoints to keep (default $DMTCP_KEEP or 2)\n"
              "      --no-strict-uid-checking  accept local peers of other users\n"
              "      --job NAME             job name: Unix socket $XDG_RUNTIME_DIR/dmtcp/NAME.sock\n"
              "      --restart-timeout S    give up a restart whose processes do not all arrive (default $DMTCP_RESTART_TIMEOUT or 60)\n"
              "      --stop-timeout S       abort a checkpoint whose processes do not all stop within S seconds\n"
              "                             (default $DMTCP_STOP_TIMEOUT or 60; 0 = wait as long as it takes)\n"
              "      --idle-timeout S       exit after S seconds without processes or clients\n"
              "  -q, --quiet                print only warnings and errors\n"
              "      --help                 show this help\n"
              "      --version              show the version\n"
              "\n"
              "Commands on standard input (one per line): l list, s status, c checkpoint,\n"
              "f force a waiting restart, k kill all, q kill all and quit, ? help.\n", f);
}

static _printf_(3, 4) int fail(char *err, size_t size, const char *fmt, ...) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, size, fmt, ap);
        va_end(ap);
        return -EINVAL;
}

static int parse_seconds(const char *s, uint32_t max, uint32_t *ret) {
        uint32_t v;
        if (parse_u32(s, &v) < 0 || v > max)
                return -EINVAL;
        *ret = v;
        return 0;
}

static int absolute_path(const char *in, char *out, size_t size) {
        if (in[0] == '/')
                return strscpy(out, in, size) < size ? 0 : -ENAMETOOLONG;
        char cwd[PATH_MAX];
        if (!getcwd(cwd, sizeof cwd))
                return -errno;
        int n = snprintf(out, size, "%s/%s", cwd, in);
        return n < 0 || (size_t) n >= size ? -ENAMETOOLONG : 0;
}

int coord_parse_options(int argc, char *argv[], struct coord_options *o, char *err, size_t errsize) {
        const char *port_arg = NULL, *interval_arg = NULL, *keep_arg = NULL, *rt_arg = NULL, *st_arg = NULL,
                   *ckptdir_arg = NULL;

        *o = (struct coord_options) { .strict_uid = true };
        optind = 0;             /* full re-initialisation: the tests call us repeatedly */
        opterr = 0;
        int c;
        while ((c = getopt_long(argc, argv, ":p:i:q", long_options, NULL)) >= 0) {
                switch (c) {
                case 'p':
                        port_arg = optarg;
                        break;
                case ARG_PORT_FILE:
                        if (!*optarg)
                                return fail(err, errsize, "--port-file needs a file name");
                        if (absolute_path(optarg, o->port_file, sizeof o->port_file) < 0)
                                return fail(err, errsize, "--port-file %s: path too long", optarg);
                        break;
                case ARG_BIND:
                        if (!*optarg || strscpy(o->bind, optarg, sizeof o->bind) >= sizeof o->bind)
                                return fail(err, errsize, "--bind needs an address such as 0.0.0.0 or 192.0.2.1");
                        break;
                case ARG_DAEMON:
                        o->daemonize = true;
                        break;
                case ARG_EXIT_ON_LAST:
                        o->exit_on_last = true;
                        break;
                case 'i':
                        interval_arg = optarg;
                        break;
                case ARG_CKPTDIR:
                        ckptdir_arg = optarg;
                        break;
                case ARG_KEEP:
                        keep_arg = optarg;
                        break;
                case ARG_NO_STRICT:
                        o->strict_uid = false;
                        break;
                case ARG_JOB:
                        if (!job_name_valid(optarg))
                                return fail(err, errsize, "invalid job name '%s': use 1 to 64 of A-Z a-z 0-9 _ .", optarg);
                        strscpy(o->job, optarg, sizeof o->job);
                        break;
                case ARG_RESTART_TIMEOUT:
                        rt_arg = optarg;
                        break;
                case ARG_STOP_TIMEOUT:
                        st_arg = optarg;
                        break;
                case ARG_IDLE_TIMEOUT:
                        if (parse_seconds(optarg, MAX_INTERVAL, &o->idle_timeout) < 0 || o->idle_timeout == 0)
                                return fail(err, errsize, "--idle-timeout '%s' is not a number of seconds >= 1", optarg);
                        break;
                case 'q':
                        o->quiet = true;
                        break;
                case ARG_HELP:
                        o->help = true;
                        break;
                case ARG_VERSION:
                        o->version = true;
                        break;
                case ':':
                        return fail(err, errsize, "option %s needs an argument; see --help", argv[optind - 1]);
                default:
                        if (optopt)
                                return fail(err, errsize, "unknown option -%c; see --help", optopt);
                        return fail(err, errsize, "unknown option %s; see --help", argv[optind - 1]);
                }
        }
        if (optind < argc)
                return fail(err, errsize, "unexpected argument '%s'; see --help", argv[optind]);

        /* Environment defaults, as DMTCP reads them. */
        const char *env;
        const char *port_src = "--port";
        if (!port_arg) {
                if ((env = getenv("DMTCP_COORD_PORT")) && *env)
                        port_arg = env, port_src = "DMTCP_COORD_PORT";
                else if ((env = getenv("DMTCP_PORT")) && *env)
                        port_arg = env, port_src = "DMTCP_PORT";
        }
        o->port = DMTCP_DEFAULT_PORT;
        if (port_arg && parse_int_range(port_arg, 0, 65535, &o->port) < 0)
                return fail(err, errsize, "%s '%s' is not a port number 0..65535", port_src, port_arg);

        const char *interval_src = "--interval";
        if (!interval_arg && (env = getenv("DMTCP_CHECKPOINT_INTERVAL")) && *env)
                interval_arg = env, interval_src = "DMTCP_CHECKPOINT_INTERVAL";
        if (interval_arg) {
                if (parse_seconds(interval_arg, MAX_INTERVAL, &o->interval) < 0)
                        return fail(err, errsize, "%s '%s' is not a number of seconds", interval_src, interval_arg);
                o->interval_set = true;
        }

        const char *keep_src = "--keep";
        if (!keep_arg && (env = getenv("DMTCP_KEEP")) && *env)
                keep_arg = env, keep_src = "DMTCP_KEEP";
        o->keep = DMTCP_DEFAULT_KEEP;
        if (keep_arg && parse_int_range(keep_arg, 1, 1000, &o->keep) < 0)
                return fail(err, errsize, "%s '%s' is not a number 1..1000", keep_src, keep_arg);

        const char *rt_src = "--restart-timeout";
        if (!rt_arg && (env = getenv("DMTCP_RESTART_TIMEOUT")) && *env)
                rt_arg = env, rt_src = "DMTCP_RESTART_TIMEOUT";
        o->restart_timeout = 60;
        if (rt_arg && (parse_seconds(rt_arg, MAX_INTERVAL, &o->restart_timeout) < 0 || o->restart_timeout == 0))
                return fail(err, errsize, "%s '%s' is not a number of seconds >= 1", rt_src, rt_arg);

        const char *st_src = "--stop-timeout";
        if (!st_arg && (env = getenv("DMTCP_STOP_TIMEOUT")) && *env)
                st_arg = env, st_src = "DMTCP_STOP_TIMEOUT";
        o->stop_timeout = 60;
        if (st_arg && parse_seconds(st_arg, MAX_INTERVAL, &o->stop_timeout) < 0)
                return fail(err, errsize, "%s '%s' is not a number of seconds (0: no limit)", st_src, st_arg);

        if (ckptdir_arg)
                o->ckptdir_option = true;
        else if ((env = getenv("DMTCP_CHECKPOINT_DIR")) && *env)
                ckptdir_arg = env;
        if (ckptdir_arg) {
                if (!*ckptdir_arg)
                        return fail(err, errsize, "--ckptdir needs a directory");
                if (absolute_path(ckptdir_arg, o->ckptdir, sizeof o->ckptdir) < 0)
                        return fail(err, errsize, "checkpoint directory %s: path too long", ckptdir_arg);
        }
        return 0;
}
