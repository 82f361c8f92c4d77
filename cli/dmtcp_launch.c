/* dmtcp_launch: run a program under the checkpoint runtime.
 *
 *   dmtcp_launch [-h|--coord-host H] [-p|--coord-port P] [--port-file F]
 *                [-j|--join] [--new-coordinator] [-i|--interval S] [--ckptdir DIR]
 *                [--gzip|--no-gzip] [--ckpt-signal N] [--with-plugin P1:P2]
 *                [--modify-env] [--job NAME] [--no-cow-checkpoint]
 *                [--ckpt-libraries] [-q] PROGRAM [ARGS...]
 *
 * Finds or starts the coordinator, sets the environment the runtime reads
 * (DESIGN.md), adds libdmtcp.so to LD_PRELOAD and execs the program, which
 * keeps our pid: its exit status is the program's own. */
#include <elf.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <string.h>
#include <sys/stat.h>

#include "config.h"
#include "coord-start.h"
#include "env.h"
#include "log.h"
#include "util.h"

__attribute__((used, visibility("default"))) const int dmtcp_tool_marker = 1;

static int fail_rc;

_printf_(1, 2) static _Noreturn void die(const char *fmt, ...) {
        int error = errno;
        char msg[2048];
        va_list ap;
        va_start(ap, fmt);
        log_format(msg, sizeof msg, error, fmt, ap);
        va_end(ap);
        fprintf(stderr, "dmtcp_launch: %s\n", msg);
        exit(fail_rc);
}

static void usage(FILE *f) {
        fprintf(f,
                "Usage: dmtcp_launch [OPTIONS] PROGRAM [ARGS...]\n"
                "Run PROGRAM under dmtcp so it can be checkpointed and restarted.\n\n"
                "  -h, --coord-host H      coordinator host (default: DMTCP_COORD_HOST or localhost)\n"
                "  -p, --coord-port P      coordinator port (default: DMTCP_COORD_PORT or 7779; 0 = any free)\n"
                "      --port-file F       write the port of a started coordinator to F\n"
                "  -j, --join              use a running coordinator, do not start one\n"
                "      --new-coordinator   start a new coordinator, fail if one runs\n"
                "      --job NAME          use job NAME's per-user coordinator\n"
                "  -i, --interval S        checkpoint every S seconds\n"
                "      --ckptdir DIR       write checkpoints to DIR (default: DMTCP_CHECKPOINT_DIR or .)\n"
                "      --gzip, --no-gzip   compress images (default: on; DMTCP_GZIP)\n"
                "      --no-cow-checkpoint keep the program stopped while its image is written\n"
                "                          (default: it resumes at once, a copy-on-write snapshot is written)\n"
                "      --ckpt-libraries    copy mapped libraries into the image (restart on machines without them)\n"
                "      --ckpt-signal N     signal used to stop threads (default: SIGUSR2; DMTCP_SIGCKPT)\n"
                "      --with-plugin LIBS  preload these libraries too (colon-separated)\n"
                "  -q, --quiet             only warnings and errors\n"
                "      --help              this text\n"
                "      --version           the version\n");
}

/* LD_PRELOAD cannot reach a statically linked program, and a setuid one
 * drops it: refuse both instead of running them unprotected. */
static void check_injectable(const char *path) {
        struct stat st;
        if (stat(path, &st) < 0)
                die("%s: %m", path);
        if (st.st_mode & (S_ISUID | S_ISGID))
                die("%s is setuid/setgid; the dynamic loader ignores LD_PRELOAD for it, so it cannot run under dmtcp",
                    path);
        _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return; /* let exec report it */
        Elf64_Ehdr eh;
        if (read(fd, &eh, sizeof eh) != (ssize_t) sizeof eh || memcmp(eh.e_ident, ELFMAG, SELFMAG))
                return; /* a script: its interpreter is checked when it runs */
        if (eh.e_ident[EI_CLASS] != ELFCLASS64 || eh.e_phentsize != sizeof(Elf64_Phdr))
                die("%s is not a 64-bit program", path);
        for (int i = 0; i < eh.e_phnum; i++) {
                Elf64_Phdr ph;
                if (pread(fd, &ph, sizeof ph, (off_t) (eh.e_phoff + (uint64_t) i * sizeof ph)) != (ssize_t) sizeof ph)
                        return;
                if (ph.p_type == PT_INTERP)
                        return;
        }
        die("%s is statically linked; dmtcp's runtime cannot be injected into it", path);
}

/* PROGRAM as execvp would find it. */
static int resolve_program(const char *prog, char *out, size_t size) {
        if (strchr(prog, '/'))
                return strscpy(out, prog, size) < size ? 0 : -ENAMETOOLONG;
        const char *path = getenv("PATH");
        if (!path)
                path = "/usr/local/bin:/usr/bin:/bin";
        while (*path) {
                const char *colon = strchr(path, ':');
                size_t n = colon ? (size_t) (colon - path) : strlen(path);
                snprintf(out, size, "%.*s/%s", (int) n, n ? path : ".", prog);
                if (access(out, X_OK) == 0)
                        return 0;
                path += n + (colon ? 1 : 0);
        }
        return -ENOENT;
}

static void set_env(const char *name, const char *value) {
        if (setenv(name, value, 1) < 0)
                die("cannot set %s: %m", name);
}

int main(int argc, char **argv) {
        fail_rc = dmtcp_fail_rc();
        log_set_ident("dmtcp_launch");
        struct coord_start_opts co = { .mode = COORD_START_ANY, .port = -1, .interval = -1 };
        int gzip = -1, sig = -1;
        bool no_cow = false, ckpt_libs = false, quiet = false;
        const char *plugins = NULL;
        char ckptdir[PATH_MAX] = "";
        enum {
                OPT_PORT_FILE = 1000, OPT_NEW, OPT_JOB, OPT_CKPTDIR, OPT_GZIP, OPT_NO_GZIP, OPT_SIG, OPT_PLUGIN,
                OPT_MODIFY_ENV, OPT_NO_COW, OPT_CKPT_LIBS, OPT_HELP, OPT_VERSION,
        };
        static const struct option opts[] = {
                { "coord-host", required_argument, NULL, 'h' },
                { "coord-port", required_argument, NULL, 'p' },
                { "port-file", required_argument, NULL, OPT_PORT_FILE },
                { "join", no_argument, NULL, 'j' },
                { "join-coordinator", no_argument, NULL, 'j' },
                { "new-coordinator", no_argument, NULL, OPT_NEW },
                { "job", required_argument, NULL, OPT_JOB },
                { "interval", required_argument, NULL, 'i' },
                { "ckptdir", required_argument, NULL, OPT_CKPTDIR },
                { "gzip", no_argument, NULL, OPT_GZIP },
                { "no-gzip", no_argument, NULL, OPT_NO_GZIP },
                { "ckpt-signal", required_argument, NULL, OPT_SIG },
                { "with-plugin", required_argument, NULL, OPT_PLUGIN },
                { "modify-env", no_argument, NULL, OPT_MODIFY_ENV },
                { "no-cow-checkpoint", no_argument, NULL, OPT_NO_COW },
                { "ckpt-libraries", no_argument, NULL, OPT_CKPT_LIBS },
                { "quiet", no_argument, NULL, 'q' },
                { "help", no_argument, NULL, OPT_HELP },
                { "version", no_argument, NULL, OPT_VERSION },
                {}
        };
        int c;
        while ((c = getopt_long(argc, argv, "+h:p:ji:q", opts, NULL)) != -1) {
                int v;
                switch (c) {
                case 'h':
                        co.host = optarg;
                        break;
                case 'p':
                        if (parse_int_range(optarg, 0, 65535, &v) < 0)
                                die("invalid port '%s'", optarg);
                        co.port = v;
                        break;
                case OPT_PORT_FILE:
                        co.port_file = optarg;
                        break;
                case 'j':
                        co.mode = COORD_START_JOIN;
                        break;
                case OPT_NEW:
                        co.mode = COORD_START_NEW;
                        break;
                case OPT_JOB:
                        if (!job_name_valid(optarg))
                                die("invalid job name '%s': use letters, digits, '_' and '.', at most 64", optarg);
                        co.job = optarg;
                        break;
                case 'i':
                        if (parse_int_range(optarg, 0, INT32_MAX, &v) < 0)
                                die("invalid interval '%s'", optarg);
                        co.interval = v;
                        break;
                case OPT_CKPTDIR:
                        if (ckpt_dir_resolve(optarg, ckptdir, sizeof ckptdir) < 0)
                                die("invalid checkpoint directory '%s'", optarg);
                        break;
                case OPT_GZIP:
                        gzip = 1;
                        break;
                case OPT_NO_GZIP:
                        gzip = 0;
                        break;
                case OPT_SIG:
                        if (parse_int_range(optarg, 1, SIGRTMAX, &v) < 0 || v == SIGKILL || v == SIGSTOP)
                                die("invalid checkpoint signal '%s'", optarg);
                        sig = v;
                        break;
                case OPT_PLUGIN:
                        plugins = optarg;
                        break;
                case OPT_MODIFY_ENV:
                        fprintf(stderr, "dmtcp_launch: warning: --modify-env is not supported; ignored\n");
                        break;
                case OPT_NO_COW:
                        no_cow = true;
                        break;
                case OPT_CKPT_LIBS:
                        ckpt_libs = true;
                        break;
                case 'q':
                        quiet = true;
                        break;
                case OPT_HELP:
                        usage(stdout);
                        return 0;
                case OPT_VERSION:
                        printf("dmtcp_launch %s\n", DMTCP_VERSION);
                        return 0;
                default:
                        usage(stderr);
                        return fail_rc;
                }
        }
        if (optind >= argc) {
                usage(stderr);
                return fail_rc;
        }
        char prog[PATH_MAX];
        if (resolve_program(argv[optind], prog, sizeof prog) < 0)
                die("%s: command not found", argv[optind]);
        check_injectable(prog);

        char lib[PATH_MAX];
        if (find_sibling(DMTCP_BIN_TO_PKGLIB "/libdmtcp.so", "preload/libdmtcp.so", lib, sizeof lib) < 0)
                die("cannot find libdmtcp.so next to this program; is dmtcp installed completely?");
        if (!ckptdir[0] && ckpt_dir_resolve(NULL, ckptdir, sizeof ckptdir) < 0)
                die("cannot determine the checkpoint directory");
        co.ckptdir = ckptdir;

        struct coord_addr addr;
        int r = coord_ensure(&co, &addr);
        if (r < 0) {
                char where[300];
                struct coord_addr want;
                coord_addr_resolve(&want, co.host, co.port, co.job);
                coord_addr_describe(&want, where, sizeof where);
                if (r == -ECONNREFUSED)
                        die("no coordinator at %s; start one with dmtcp_coordinator or drop --join", where);
                if (r == -EADDRINUSE)
                        die("a coordinator already runs at %s; drop --new-coordinator or pick another port", where);
                die("cannot start a coordinator at %s: %s", where, strerror(-r));
        }

        /* The environment the runtime reads. */
        char buf[PATH_MAX * 2 + 64];
        if (addr.kind == COORD_UNIX) {
                set_env("DMTCP_COORD_SOCKET", addr.path);
                unsetenv("DMTCP_COORD_HOST");
                unsetenv("DMTCP_COORD_PORT");
        } else {
                unsetenv("DMTCP_COORD_SOCKET");
                set_env("DMTCP_COORD_HOST", addr.host);
                snprintf(buf, sizeof buf, "%u", (unsigned) addr.port);
                set_env("DMTCP_COORD_PORT", buf);
        }
        unsetenv("DMTCP_HOST");
        unsetenv("DMTCP_PORT");
        /* The exact address, for the runtime and what it starts. */
        if (addr.kind == COORD_UNIX)
                snprintf(buf, sizeof buf, "unix:%s", addr.path);
        else
                snprintf(buf, sizeof buf, "tcp:%s:%u", addr.host, (unsigned) addr.port);
        set_env("DMTCP_COORD", buf);
        set_env("DMTCP_CHECKPOINT_DIR", ckptdir);
        if (gzip >= 0)
                set_env("DMTCP_GZIP", gzip ? "1" : "0");
        if (sig > 0) {
                snprintf(buf, sizeof buf, "%d", sig);
                set_env("DMTCP_SIGCKPT", buf);
        }
        if (co.interval >= 0) {
                snprintf(buf, sizeof buf, "%d", co.interval);
                set_env("DMTCP_CHECKPOINT_INTERVAL", buf);
        }
        if (co.job)
                set_env("DMTCP_JOB", co.job);
        if (no_cow)
                set_env("DMTCP_COW_CHECKPOINT", "0");
        if (ckpt_libs)
                set_env("DMTCP_CKPT_LIBRARIES", "1");
        if (quiet)
                set_env("DMTCP_QUIET", "1");
        /* A fresh launch starts its own computation and its own record of
         * inherited descriptors. */
        unsetenv("DMTCP_COMPUTATION");
        unsetenv("DMTCP_EXTERNAL_FDS");
        const char *old = getenv("LD_PRELOAD");
        snprintf(buf, sizeof buf, "%s%s%s%s%s", old && *old ? old : "", old && *old ? ":" : "",
                 plugins ? plugins : "", plugins ? ":" : "", lib);
        set_env("LD_PRELOAD", buf);

        execv(prog, argv + optind);
        die("cannot run %s: %m", prog);
}
