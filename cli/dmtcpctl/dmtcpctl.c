/* dmtcpctl: the systemd-native front of dmtcp (dmtcpctl(1)).
 *
 * A job NAME is the unit dmtcp@NAME.service, defined by the job file
 * ${XDG_CONFIG_HOME:-~/.config}/dmtcp/NAME.conf, with its images in
 * ${XDG_STATE_HOME:-~/.local/state}/dmtcp/NAME/ and its coordinator
 * dmtcp-coordinator@NAME (socket-activated on $XDG_RUNTIME_DIR/dmtcp/NAME.sock).
 * Units are driven through the user manager over D-Bus, checkpoints through
 * the coordinator's protocol, history comes from the journal.
 *
 * Exit status as dmtcp_command: 0 success, 1 refused or failed, 2 nothing
 * answered (no coordinator, no user manager), 64 usage error. */
#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "config.h"
#include "ctl-coord.h"
#include "env.h"
#include "history.h"
#include "job-conf.h"
#include "job-paths.h"
#include "json.h"
#include "manifest.h"
#include "usermgr.h"
#include "util.h"

#define EXIT_FAILED   1
#define EXIT_NO_REPLY 2
#define EXIT_USAGE    64

#define START_TIMEOUT_USEC   (90ULL * 1000000)
#define STOP_TIMEOUT_USEC    (330ULL * 1000000)     /* the unit's TimeoutStopSec= and a margin */
#define RUNNING_WAIT_USEC    (20ULL * 1000000)

static const char *prog = "dmtcpctl";

struct ctl {
        bool json;
        sd_bus *bus;
        bool bus_tried;
        int bus_error;
        char bus_err[512];
};

static _printf_(2, 3) int fail(int rc, const char *fmt, ...) {
        va_list ap;
        va_start(ap, fmt);
        fprintf(stderr, "%s: ", prog);
        vfprintf(stderr, fmt, ap);
        fputc('\n', stderr);
        va_end(ap);
        return rc;
}

static _printf_(1, 2) int usage_error(const char *fmt, ...) {
        va_list ap;
        va_start(ap, fmt);
        fprintf(stderr, "%s: ", prog);
        vfprintf(stderr, fmt, ap);
        fputs("; see dmtcpctl --help\n", stderr);
        va_end(ap);
        return EXIT_USAGE;
}

/* ---- the user manager --------------------------------------------------- */

/* Use the same XDG directories as the units: the user manager's environment
 * decides, not the caller's shell. */
static void sync_xdg_env(sd_bus *bus) {
        static const char *const vars[] = { "XDG_CONFIG_HOME", "XDG_STATE_HOME" };
        for (size_t i = 0; i < ARRAY_SIZE(vars); i++) {
                char *v = NULL;
                if (usermgr_getenv(bus, vars[i], &v) < 0)
                        return;
                if (v)
                        setenv(vars[i], v, 1);
                else
                        unsetenv(vars[i]);
                free(v);
        }
}

static sd_bus *ctl_bus(struct ctl *c) {
        if (!c->bus_tried) {
                c->bus_tried = true;
                c->bus_error = usermgr_connect(&c->bus, c->bus_err, sizeof c->bus_err);
                if (c->bus)
                        sync_xdg_env(c->bus);
        }
        return c->bus;
}

static int need_bus(struct ctl *c, const char *job) {
        if (ctl_bus(c))
                return 0;
        return fail(EXIT_NO_REPLY, "job %s: %s; dmtcpctl needs a running 'systemd --user' (see loginctl enable-linger)",
                    job, c->bus_err);
}

static bool unit_is_up(const struct unit_info *u) {
        return !strcmp(u->active_state, "active") || !strcmp(u->active_state, "activating") ||
               !strcmp(u->active_state, "reloading");
}

static int job_unit_info(struct ctl *c, const char *job, struct unit_info *u) {
        char unit[128], err[512];
        job_unit_name(job, unit, sizeof unit);
        if (!ctl_bus(c))
                return -ENOTCONN;
        return usermgr_unit_info(c->bus, unit, u, err, sizeof err);
}

/* Is a coordinator of job up and worth asking? Never wakes a socket-activated
 * one that is idle (asking would start it just to say "no processes"). */
static bool coordinator_up(struct ctl *c, const char *job) {
        char path[PATH_MAX], unit[128], err[256];
        if (coord_socket_path(job, path, sizeof path) < 0 || access(path, F_OK) < 0)
                return false;
        if (!ctl_bus(c))
                return true;
        struct unit_info svc, sock;
        job_coord_service_name(job, unit, sizeof unit);
        if (usermgr_unit_info(c->bus, unit, &svc, err, sizeof err) < 0)
                return true;
        if (!strcmp(svc.active_state, "active"))
                return true;
        job_coord_socket_name(job, unit, sizeof unit);
        if (usermgr_unit_info(c->bus, unit, &sock, err, sizeof err) == 0 && !strcmp(sock.active_state, "active"))
                return false;   /* systemd holds the socket; the coordinator sleeps */
        return true;            /* a coordinator started by dmtcp_launch itself */
}

static const char *exit_status_meaning(int st) {
        int rc = dmtcp_fail_rc();
        if (st == rc)
                return "dmtcp failed";
        if (st == rc + 1)
                return "unusable checkpoint image";
        if (st == rc + 2)
                return "permission refused";
        if (st == 78)
                return "bad job file";
        return NULL;
}

static void describe_exit(const struct unit_info *u, char *buf, size_t size) {
        if (u->exec_main_code == 1 /* CLD_EXITED */) {
                const char *m = exit_status_meaning(u->exec_main_status);
                snprintf(buf, size, "status %d%s%s%s", u->exec_main_status, m ? " (" : "", m ? m : "", m ? ")" : "");
        } else if (u->exec_main_code == 2 || u->exec_main_code == 3)
                snprintf(buf, size, "signal %s", sigabbrev_np(u->exec_main_status) ?: "?");
        else
                snprintf(buf, size, "result %s", u->result[0] ? u->result : "unknown");
}

/* ---- formatting --------------------------------------------------------- */

static void fmt_time(uint64_t usec, char *buf, size_t size) {
        time_t t = (time_t) (usec / 1000000);
        struct tm tm;
        if (!usec || !localtime_r(&t, &tm) || !strftime(buf, size, "%Y-%m-%d %H:%M:%S", &tm))
                snprintf(buf, size, "-");
}

static void fmt_bytes(uint64_t b, char *buf, size_t size) {
        if (b < 1024)
                snprintf(buf, size, "%" PRIu64 " B", b);
        else if (b < 1024 * 1024)
                snprintf(buf, size, "%.1f KiB", (double) b / 1024);
        else if (b < 1024ULL * 1024 * 1024)
                snprintf(buf, size, "%.1f MiB", (double) b / (1024 * 1024));
        else
                snprintf(buf, size, "%.2f GiB", (double) b / (1024.0 * 1024 * 1024));
}

static void fmt_command(const struct job_conf *jc, char *buf, size_t size) {
        buf[0] = 0;
        for (size_t i = 0; i < jc->argc; i++) {
                if (i && strlen(buf) + 1 < size)
                        strcat(buf, " ");
                if (job_quote_word(jc->argv[i], buf, size) < 0)
                        break;
        }
}

/* ---- generations on disk ------------------------------------------------ */

struct gen_info {
        uint64_t generation;
        uint64_t time_usec;
        uint64_t bytes;
        uint32_t processes;
        bool complete;                  /* MANIFEST readable and well-formed */
        char error[128];
        char path[PATH_MAX];
};

static int read_generations(const char *dir, struct gen_info **ret) {
        uint64_t *g = NULL;
        int n = job_list_generations(dir, &g);
        *ret = NULL;
        if (n <= 0)
                return n;
        struct gen_info *v = calloc((size_t) n, sizeof *v);
        if (!v) {
                free(g);
                return -ENOMEM;
        }
        for (int i = 0; i < n; i++) {
                struct gen_info *gi = &v[i];
                gi->generation = g[i];
                snprintf(gi->path, sizeof gi->path, "%s/gen-%06" PRIu64, dir, g[i]);
                char mp[PATH_MAX + 16];
                snprintf(mp, sizeof mp, "%s/" MANIFEST_NAME, gi->path);
                struct manifest m = {};
                int r = manifest_read(mp, &m);
                if (r < 0) {
                        snprintf(gi->error, sizeof gi->error, "MANIFEST %s", r == -ENOENT ? "missing" :
                                 r == -EBADMSG ? "damaged" : strerror(-r));
                        struct stat st;
                        if (stat(gi->path, &st) == 0)
                                gi->time_usec = (uint64_t) st.st_mtim.tv_sec * 1000000 + (uint64_t) st.st_mtim.tv_nsec / 1000;
                        continue;
                }
                gi->complete = true;
                gi->time_usec = m.time_usec;
                gi->processes = (uint32_t) m.n_images;
                for (size_t k = 0; k < m.n_images; k++)
                        gi->bytes += m.images[k].bytes;
                manifest_done(&m);
        }
        free(g);
        *ret = v;
        return n;
}

/* ---- one job's state ---------------------------------------------------- */

struct job_view {
        char name[80];
        char conf_path[PATH_MAX];
        char state_dir[PATH_MAX];
        bool have_conf;
        char conf_error[1024];
        struct job_conf conf;
        bool have_unit;
        struct unit_info unit;
        bool have_coord;
        struct proto_status coord;
        struct gen_info *gens;
        int n_gens;
        bool finished;
        char state[32];
};

static void job_view_done(struct job_view *v) {
        job_conf_done(&v->conf);
        free(v->gens);
}

static void job_view_load(struct ctl *c, const char *job, struct job_view *v) {
        memset(v, 0, sizeof *v);
        job_conf_init(&v->conf);
        strscpy(v->name, job, sizeof v->name);
        ctl_bus(c);
        job_conf_path(job, v->conf_path, sizeof v->conf_path);
        job_state_dir(job, v->state_dir, sizeof v->state_dir);
        int r = job_conf_load(v->conf_path, &v->conf, v->conf_error, sizeof v->conf_error);
        v->have_conf = r == 0;
        if (r == -ENOENT)
                v->conf_error[0] = 0;
        if (c->bus && job_unit_info(c, job, &v->unit) == 0 && strcmp(v->unit.load_state, "not-found"))
                v->have_unit = true;
        char err[512];
        if (coordinator_up(c, job) && ctl_coord_status(job, &v->coord, err, sizeof err) == 0)
                v->have_coord = true;
        v->n_gens = read_generations(v->state_dir, &v->gens);
        if (v->n_gens < 0)
                v->n_gens = 0;
        char p[PATH_MAX + 16];
        snprintf(p, sizeof p, "%s/" JOB_FINISHED_MARKER, v->state_dir);
        v->finished = access(p, F_OK) == 0;

        const char *s;
        const struct unit_info *u = &v->unit;
        if (v->have_unit && !strcmp(u->sub_state, "auto-restart"))
                s = "restarting";
        else if (v->have_unit && !strcmp(u->active_state, "active"))
                s = "running";
        else if (v->have_unit && !strcmp(u->active_state, "activating"))
                s = "starting";
        else if (v->have_unit && !strcmp(u->active_state, "deactivating"))
                s = "stopping";
        else if (v->have_unit && !strcmp(u->active_state, "failed"))
                s = "failed";
        else if (v->have_coord && v->coord.num_peers > 0)
                s = "running-adhoc";    /* e.g. systemd-run ... dmtcp_launch --job NAME */
        else if (v->finished)
                s = "finished";
        else if (v->n_gens > 0)
                s = "stopped";
        else if (v->have_conf || v->conf_error[0])
                s = "defined";
        else
                s = "unknown";
        strscpy(v->state, s, sizeof v->state);
}

/* A template instance always loads, so a unit alone does not make a job:
 * it must run, have failed, or have a job file or images. */
static bool job_exists(const struct job_view *v) {
        return strcmp(v->state, "unknown") != 0;
}

static const struct gen_info *newest_gen(const struct job_view *v) {
        return v->n_gens > 0 ? &v->gens[v->n_gens - 1] : NULL;
}

static void json_unit(struct json *j, const struct job_view *v) {
        if (!v->have_unit) {
                json_null(j, "unit");
                return;
        }
        const struct unit_info *u = &v->unit;
        char name[128];
        job_unit_name(v->name, name, sizeof name);
        json_begin_object(j, "unit");
        json_string(j, "name", name);
        json_string(j, "load_state", u->load_state);
        json_string(j, "active_state", u->active_state);
        json_string(j, "sub_state", u->sub_state);
        json_string(j, "result", u->result);
        json_string(j, "unit_file_state", u->unit_file_state);
        json_u64(j, "main_pid", u->main_pid);
        json_string(j, "exec_main_code", u->exec_main_code == 1 ? "exited" : u->exec_main_code == 2 ? "killed" :
                                         u->exec_main_code == 3 ? "dumped" : NULL);
        json_i64(j, "exec_main_status", u->exec_main_status);
        json_u64(j, "n_restarts", u->n_restarts);
        json_u64(j, "active_enter_usec", u->active_enter_usec);
        json_u64(j, "state_change_usec", u->state_change_usec);
        json_end_object(j);
}

static void json_gen(struct json *j, const char *key, const struct gen_info *g) {
        json_begin_object(j, key);
        json_u64(j, "generation", g->generation);
        json_string(j, "path", g->path);
        json_bool(j, "complete", g->complete);
        json_u64(j, "time_usec", g->time_usec);
        json_u64(j, "processes", g->processes);
        json_u64(j, "bytes", g->bytes);
        json_string(j, "error", g->complete ? NULL : g->error);
        json_end_object(j);
}

static void json_job(struct json *j, const struct job_view *v) {
        json_begin_object(j, NULL);
        json_string(j, "job", v->name);
        json_string(j, "state", v->state);
        json_unit(j, v);
        if (v->have_conf) {
                json_begin_object(j, "config");
                json_string(j, "path", v->conf_path);
                json_begin_array(j, "command");
                for (size_t i = 0; i < v->conf.argc; i++)
                        json_string(j, NULL, v->conf.argv[i]);
                json_end_array(j);
                json_string(j, "working_directory", v->conf.working_directory);
                json_u64(j, "interval", v->conf.interval);
                json_bool(j, "checkpoint_on_stop", v->conf.checkpoint_on_stop);
                json_u64(j, "keep", (uint64_t) v->conf.keep);
                json_end_object(j);
        } else
                json_null(j, "config");
        json_string(j, "config_error", v->conf_error[0] ? v->conf_error : NULL);
        json_begin_object(j, "checkpoints");
        json_string(j, "directory", v->state_dir);
        json_u64(j, "count", (uint64_t) v->n_gens);
        if (newest_gen(v))
                json_gen(j, "newest", newest_gen(v));
        else
                json_null(j, "newest");
        json_bool(j, "finished", v->finished);
        json_end_object(j);
        if (v->have_coord) {
                const struct proto_status *s = &v->coord;
                char unit[128];
                job_coord_service_name(v->name, unit, sizeof unit);
                json_begin_object(j, "coordinator");
                json_u64(j, "pid", s->coord_pid);
                json_string(j, "socket", s->socket);
                json_string(j, "computation", s->comp_id[0] ? s->comp_id : NULL);
                json_u64(j, "processes", s->num_peers);
                json_bool(j, "running", s->running);
                json_u64(j, "interval", s->interval);
                json_u64(j, "generation", s->generation);
                json_u64(j, "last_checkpoint_usec", s->last_ckpt_usec);
                json_string(j, "ckptdir", s->ckptdir);
                json_string(j, "phase", proto_phase_name(s->phase));
                json_string(j, "state", s->state);
                json_end_object(j);
        } else
                json_null(j, "coordinator");
        json_end_object(j);
}

static void print_job(const struct job_view *v) {
        char when[64], size[32], cmd[2048], why[128];
        const struct unit_info *u = &v->unit;
        printf("Job %s: %s\n", v->name, v->state);
        if (v->have_unit) {
                char unit[128];
                job_unit_name(v->name, unit, sizeof unit);
                fmt_time(u->state_change_usec, when, sizeof when);
                printf("  Unit: %s %s (%s)", unit, u->active_state, u->sub_state);
                if (u->state_change_usec)
                        printf(" since %s", when);
                if (u->main_pid)
                        printf(", main pid %" PRIu32, u->main_pid);
                if (u->n_restarts)
                        printf(", restarted %" PRIu32 " times", u->n_restarts);
                printf(", %s\n", u->unit_file_state[0] ? u->unit_file_state : "-");
                if (!strcmp(u->active_state, "failed") || (u->exec_main_code && strcmp(u->active_state, "active"))) {
                        describe_exit(u, why, sizeof why);
                        printf("  Last exit: %s\n", why);
                }
        }
        if (v->have_conf) {
                fmt_command(&v->conf, cmd, sizeof cmd);
                printf("  Command: %s\n", cmd);
                printf("  Directory: %s\n", v->conf.working_directory ? v->conf.working_directory : "(home)");
                if (v->conf.interval)
                        printf("  Checkpoints: every %" PRIu32 " s", v->conf.interval);
                else
                        printf("  Checkpoints: on request");
                printf(", on stop: %s, keep %d\n", v->conf.checkpoint_on_stop ? "yes" : "no", v->conf.keep);
        } else if (v->conf_error[0])
                printf("  Job file: %s\n", v->conf_error);
        printf("  Images: %s", v->state_dir);
        const struct gen_info *g = newest_gen(v);
        if (g) {
                fmt_time(g->time_usec, when, sizeof when);
                fmt_bytes(g->bytes, size, sizeof size);
                printf(": %d generation%s, newest %" PRIu64 " (%s, %s%s%s)\n", v->n_gens, v->n_gens == 1 ? "" : "s",
                       g->generation, when, size, g->complete ? "" : ", ", g->complete ? "" : g->error);
        } else
                printf(": none\n");
        if (v->finished)
                printf("  Finished: its program exited with status 0; the next start launches it afresh\n");
        if (v->have_coord) {
                const struct proto_status *s = &v->coord;
                printf("  Coordinator: pid %" PRIu32 ", %s\n", s->coord_pid, s->state);
        }
}

/* ---- commands ------------------------------------------------------------ */

static int check_name(const char *job) {
        if (!job_name_ok(job))
                return usage_error("invalid job name '%s': use 1 to 64 letters, digits, '_' and '.', not starting with '.'",
                                   job);
        return 0;
}

static int write_no_checkpoint_flag(const char *job) {
        char d[PATH_MAX], p[PATH_MAX + 80];
        int r = coord_socket_dir(d, sizeof d);
        if (r < 0)
                return r;
        r = mkdir_p(d, 0700);
        if (r < 0)
                return r;
        snprintf(p, sizeof p, "%s/%s.no-checkpoint", d, job);
        return write_file_atomic(p, "", 0, 0600);
}

static void remove_no_checkpoint_flag(const char *job) {
        char d[PATH_MAX], p[PATH_MAX + 80];
        if (coord_socket_dir(d, sizeof d) == 0) {
                snprintf(p, sizeof p, "%s/%s.no-checkpoint", d, job);
                (void) unlink(p);
        }
}

static int unit_job(struct ctl *c, const char *job, const char *method, const char *unit, uint64_t timeout) {
        char err[768];
        int r = usermgr_unit_job(c->bus, method, unit, timeout, err, sizeof err);
        if (r == -ENOENT)
                return fail(EXIT_FAILED, "job %s: %s is not known to your user manager; link dmtcp's units into it "
                                         "(systemctl --user link PREFIX/lib/systemd/user/dmtcp*) and retry", job, unit);
        if (r == -ENOEXEC)
                return fail(EXIT_FAILED, "job %s: %s refused to start: it has no job file; create it with dmtcpctl "
                                         "launch %s -- COMMAND...", job, unit, job);
        if (r < 0)
                return fail(EXIT_FAILED, "job %s: %s; see journalctl --user-unit=%s", job, err, unit);
        return 0;
}

static void reset_failed(struct ctl *c, const char *unit) {
        sd_bus_error e = SD_BUS_ERROR_NULL;
        (void) sd_bus_call_method(c->bus, "org.freedesktop.systemd1", "/org/freedesktop/systemd1",
                                  "org.freedesktop.systemd1.Manager", "ResetFailedUnit", &e, NULL, "s", unit);
        sd_bus_error_free(&e);
}

/* After a start: wait until the job's processes joined its coordinator (or
 * its unit gave up). Prints the outcome; returns the exit status. */
static int wait_running(struct ctl *c, const char *job, const char *what) {
        uint64_t deadline = now_usec(CLOCK_MONOTONIC) + RUNNING_WAIT_USEC;
        char unit[128], why[160], err[512];
        job_unit_name(job, unit, sizeof unit);
        struct unit_info u;
        for (;;) {
                if (job_unit_info(c, job, &u) < 0)
                        return fail(EXIT_FAILED, "job %s: lost the user manager", job);
                bool up = unit_is_up(&u) || !strcmp(u.sub_state, "auto-restart");
                if (!up && u.exec_main_code == 1 /* CLD_EXITED */ && u.exec_main_status == 0 &&
                    !strcmp(u.result, "success")) {
                        if (!c->json)
                                printf("job %s %s and has already finished (status 0)\n", job, what);
                        return 0;
                }
                if (!up) {
                        describe_exit(&u, why, sizeof why);
                        return fail(EXIT_FAILED, "job %s failed to start (%s, %s); see journalctl --user-unit=%s", job,
                                    u.active_state, why, unit);
                }
                struct proto_status st;
                if (!strcmp(u.active_state, "active") && !strcmp(u.sub_state, "running") &&
                    coordinator_up(c, job) && ctl_coord_status(job, &st, err, sizeof err) == 0 && st.num_peers > 0 &&
                    st.running) {
                        if (c->json) {
                                struct json j;
                                json_init(&j, stdout);
                                json_begin_object(&j, NULL);
                                json_string(&j, "job", job);
                                json_string(&j, "unit", unit);
                                json_u64(&j, "main_pid", u.main_pid);
                                json_u64(&j, "processes", st.num_peers);
                                json_string(&j, "computation", st.comp_id);
                                json_u64(&j, "generation", st.generation);
                                json_end_object(&j);
                                json_finish(&j);
                        } else
                                printf("job %s %s: %s running (main pid %" PRIu32 ", %" PRIu32 " process%s)\n", job, what,
                                       unit, u.main_pid, st.num_peers, st.num_peers == 1 ? "" : "es");
                        return 0;
                }
                if (now_usec(CLOCK_MONOTONIC) >= deadline) {
                        if (!c->json)
                                printf("job %s %s: %s is %s (%s); its processes have not joined the coordinator yet\n",
                                       job, what, unit, u.active_state, u.sub_state);
                        return 0;
                }
                struct timespec ts = { 0, 100 * 1000 * 1000 };
                nanosleep(&ts, NULL);
        }
}

static int start_job(struct ctl *c, const char *job, bool enable) {
        char unit[128], err[768];
        job_unit_name(job, unit, sizeof unit);
        reset_failed(c, unit);
        if (enable && usermgr_enable(c->bus, unit, true, err, sizeof err) < 0)
                fprintf(stderr, "%s: warning: job %s: %s; it will not start by itself at login\n", prog, job, err);
        remove_no_checkpoint_flag(job);
        return unit_job(c, job, "StartUnit", unit, START_TIMEOUT_USEC);
}

static int resolve_program(const char *arg, const char *wd, char *out, size_t size) {
        if (strchr(arg, '/')) {
                char p[PATH_MAX * 2];
                snprintf(p, sizeof p, "%s%s%s", arg[0] == '/' ? "" : wd, arg[0] == '/' ? "" : "/", arg);
                if (access(p, X_OK) < 0)
                        return -errno;
                return strscpy(out, arg, size) < size ? 0 : -ENAMETOOLONG;
        }
        const char *path = getenv("PATH");
        if (!path || !*path)
                path = "/usr/local/bin:/usr/bin:/bin";
        while (*path) {
                const char *colon = strchr(path, ':');
                size_t n = colon ? (size_t) (colon - path) : strlen(path);
                if (n > 0 && path[0] == '/') {
                        snprintf(out, size, "%.*s/%s", (int) n, path, arg);
                        struct stat st;
                        if (access(out, X_OK) == 0 && stat(out, &st) == 0 && S_ISREG(st.st_mode))
                                return 0;
                }
                path += n + (colon ? 1 : 0);
        }
        return -ENOENT;
}

static bool adhoc_running(struct ctl *c, const char *job);

static int discard_job(struct ctl *c, const char *job, const char *state_dir) {
        char unit[128], cunit[128], err[768];
        job_unit_name(job, unit, sizeof unit);
        job_coord_service_name(job, cunit, sizeof cunit);
        struct unit_info u;
        if (job_unit_info(c, job, &u) == 0 && (unit_is_up(&u) || !strcmp(u.active_state, "deactivating") ||
                                               !strcmp(u.sub_state, "auto-restart"))) {
                (void) write_no_checkpoint_flag(job);
                int r = unit_job(c, job, "StopUnit", unit, STOP_TIMEOUT_USEC);
                if (r)
                        return r;
        } else if (adhoc_running(c, job)) {
                struct proto_result res;
                int r = ctl_coord_command(job, PROTO_CMD_KILL, 0, false, &res, err, sizeof err);
                if (r < 0)
                        return fail(EXIT_FAILED, "job %s: cannot end its running processes: %s", job, err);
        }
        /* Its coordinator remembers the old computation and settings. */
        if (usermgr_unit_job(c->bus, "StopUnit", cunit, STOP_TIMEOUT_USEC, err, sizeof err) < 0 &&
            strstr(err, "not loaded") == NULL)
                fprintf(stderr, "%s: warning: job %s: %s\n", prog, job, err);
        reset_failed(c, unit);
        int r = rm_rf(state_dir);
        if (r < 0 && r != -ENOENT)
                return fail(EXIT_FAILED, "job %s: cannot remove its old checkpoints in %s: %s", job, state_dir,
                            strerror(-r));
        return 0;
}

/* "--opt VALUE" or "--opt=VALUE"; returns 1 and the value when a matches. */
static int opt_value(int argc, char *argv[], int *i, const char *name, const char **ret) {
        const char *a = argv[*i];
        size_t l = strlen(name);
        if (strncmp(a, name, l))
                return 0;
        if (a[l] == '=') {
                *ret = a + l + 1;
                return 1;
        }
        if (a[l])
                return 0;
        if (*i + 1 >= argc)
                return -1;
        *ret = argv[++*i];
        return 1;
}

static int cmd_launch(struct ctl *c, int argc, char *argv[]) {
        _cleanup_(job_conf_done) struct job_conf jc;
        job_conf_init(&jc);
        bool replace = false, enable = true;
        const char *wd_opt = NULL, *job = NULL, *v;
        _cleanup_free_ char *text = NULL;
        int i = 1, k;
        /* Options and NAME in any order, then "--" (or the first word after
         * NAME that is not an option) starts the command. */
        for (; i < argc; i++) {
                const char *a = argv[i];
                if (!strcmp(a, "--")) {
                        i++;
                        break;
                }
                if (a[0] != '-') {
                        if (job)
                                break;
                        job = a;
                } else if ((k = opt_value(argc, argv, &i, "--interval", &v))) {
                        uint32_t u;
                        if (k < 0 || parse_u32(v, &u) < 0 || u > JOB_MAX_INTERVAL)
                                return usage_error("--interval needs a number of seconds (0 = off)");
                        jc.interval = u;
                } else if ((k = opt_value(argc, argv, &i, "--keep", &v))) {
                        if (k < 0 || parse_int_range(v, 1, JOB_MAX_KEEP, &jc.keep) < 0)
                                return usage_error("--keep needs a number from 1 to %d", JOB_MAX_KEEP);
                } else if ((k = opt_value(argc, argv, &i, "--workdir", &v)) ||
                           (k = opt_value(argc, argv, &i, "--working-directory", &v))) {
                        if (k < 0 || !*v)
                                return usage_error("--workdir needs a directory");
                        wd_opt = v;
                } else if (!strcmp(a, "--replace"))
                        replace = true;
                else if (!strcmp(a, "--no-checkpoint-on-stop"))
                        jc.checkpoint_on_stop = false;
                else if (!strcmp(a, "--no-enable"))
                        enable = false;
                else if (!strcmp(a, "--json"))
                        c->json = true;
                else
                        return usage_error("unknown option '%s' for launch", a);
        }
        if (!job)
                return usage_error("launch needs a job name and a command: dmtcpctl launch NAME -- COMMAND...");
        int r = check_name(job);
        if (r)
                return r;
        if (i >= argc)
                return usage_error("launch %s needs a command after --", job);
        const int cmd0 = i;

        char wd[PATH_MAX], prog_path[PATH_MAX];
        if (!realpath(wd_opt ? wd_opt : ".", wd))
                return fail(EXIT_FAILED, "job %s: working directory %s: %s", job, wd_opt ? wd_opt : ".", strerror(errno));
        r = resolve_program(argv[cmd0], wd, prog_path, sizeof prog_path);
        if (r < 0)
                return fail(EXIT_FAILED, "job %s: %s: %s; give the program's path", job, argv[cmd0],
                            r == -ENOENT ? "command not found" : strerror(-r));
        jc.argc = (size_t) (argc - cmd0);
        jc.argv = calloc(jc.argc + 1, sizeof *jc.argv);
        if (!jc.argv)
                return fail(EXIT_FAILED, "out of memory");
        jc.argv[0] = strdup(prog_path);
        for (size_t w = 1; w < jc.argc; w++)
                jc.argv[w] = strdup(argv[cmd0 + (int) w]);
        jc.working_directory = strdup(wd);

        if ((r = need_bus(c, job)))
                return r;
        char conf_path[PATH_MAX], state_dir[PATH_MAX], cdir[PATH_MAX], unit[128], err[1024];
        if (job_conf_path(job, conf_path, sizeof conf_path) < 0 || job_state_dir(job, state_dir, sizeof state_dir) < 0 ||
            job_config_dir(cdir, sizeof cdir) < 0)
                return fail(EXIT_FAILED, "job %s: cannot place its files; set HOME", job);
        job_unit_name(job, unit, sizeof unit);
        struct unit_info u = {};
        if (job_unit_info(c, job, &u) == 0 && !strcmp(u.load_state, "not-found"))
                return fail(EXIT_FAILED, "job %s: %s is not known to your user manager; link dmtcp's units into it "
                                         "(systemctl --user link PREFIX/lib/systemd/user/dmtcp*) and retry", job, unit);
        bool unit_up = unit_is_up(&u) || !strcmp(u.sub_state, "auto-restart");
        bool have_conf = access(conf_path, F_OK) == 0, have_images = job_dir_has_images(state_dir);
        if ((have_conf || have_images || unit_up) && !replace)
                return fail(EXIT_FAILED, "job %s already exists (%s%s%s); use --replace to discard it and its checkpoints, "
                                         "or choose another name", job, have_conf ? conf_path : "",
                            have_conf && have_images ? ", " : "", have_images ? state_dir : unit_up ? unit : "");
        if (replace && (r = discard_job(c, job, state_dir)))
                return r;

        ssize_t len = job_conf_format(&jc, &text, err, sizeof err);
        if (len < 0)
                return len == -EINVAL ? fail(EXIT_FAILED, "job %s: %s", job, err) :
                                        fail(EXIT_FAILED, "job %s: cannot write its job file: %s", job, strerror((int) -len));
        k = mkdir_p(cdir, 0700);
        if (k == 0)
                k = write_file_atomic(conf_path, text, (size_t) len, 0600);
        if (k < 0)
                return fail(EXIT_FAILED, "job %s: cannot write %s: %s", job, conf_path, strerror(-k));
        if ((r = start_job(c, job, enable)))
                return r;
        return wait_running(c, job, "launched");
}

static int cmd_start(struct ctl *c, const char *job) {
        int r = need_bus(c, job);
        if (r)
                return r;
        char conf_path[PATH_MAX], err[1024];
        struct job_conf jc;
        job_conf_path(job, conf_path, sizeof conf_path);
        r = job_conf_load(conf_path, &jc, err, sizeof err);
        if (r == -ENOENT)
                return fail(EXIT_FAILED, "job %s has no job file %s; create it with dmtcpctl launch %s -- COMMAND...", job,
                            conf_path, job);
        if (r < 0)
                return fail(EXIT_FAILED, "job %s: %s; fix the job file", job, err);
        job_conf_done(&jc);
        r = start_job(c, job, true);
        return r ? r : wait_running(c, job, "started");
}

static uint64_t newest_generation_of(const char *job) {
        char dir[PATH_MAX];
        uint64_t *g = NULL, newest = 0;
        if (job_state_dir(job, dir, sizeof dir) < 0)
                return 0;
        int n = job_list_generations(dir, &g);
        if (n > 0)
                newest = g[n - 1];
        free(g);
        return newest;
}

static int print_result(struct ctl *c, const char *job, const struct proto_result *res, const char *what) {
        char size[32];
        if (c->json) {
                struct json j;
                json_init(&j, stdout);
                json_begin_object(&j, NULL);
                json_string(&j, "job", job);
                json_bool(&j, "ok", true);
                json_string(&j, "message", res->message);
                json_bool(&j, "committed", strcmp(what, "started") != 0);
                json_u64(&j, "generation", res->generation);
                json_u64(&j, "processes", res->processes);
                json_u64(&j, "bytes", res->bytes);
                json_u64(&j, "duration_usec", res->duration_usec);
                json_string(&j, "dir", res->dir[0] ? res->dir : NULL);
                json_end_object(&j);
                json_finish(&j);
                return 0;
        }
        if (!strcmp(what, "started") && res->generation)
                printf("job %s: checkpoint generation %" PRIu64 " started\n", job, res->generation);
        else if (res->generation && res->dir[0]) {
                fmt_bytes(res->bytes, size, sizeof size);
                printf("job %s: checkpoint generation %" PRIu64 " %s: %" PRIu32 " process%s, %s in %.3f s, %s\n", job,
                       res->generation, what, res->processes, res->processes == 1 ? "" : "es", size,
                       (double) res->duration_usec / 1e6, res->dir);
        } else
                printf("job %s: %s\n", job, res->message);
        return 0;
}

static int coord_error(const char *job, int r, const char *err) {
        if (r == -ENOENT || r == -ECONNREFUSED || r == -ETIMEDOUT)
                return fail(EXIT_NO_REPLY, "job %s: %s; is it running? (dmtcpctl status %s)", job, err, job);
        return fail(EXIT_FAILED, "job %s: %s", job, err);
}

static int cmd_checkpoint(struct ctl *c, const char *job, bool wait) {
        if (!coordinator_up(c, job)) {
                char conf_path[PATH_MAX];
                if (job_conf_path(job, conf_path, sizeof conf_path) == 0 && access(conf_path, F_OK) < 0)
                        return fail(EXIT_FAILED, "no job %s is running, so there is nothing to checkpoint; create one with "
                                                 "dmtcpctl launch %s -- COMMAND...", job, job);
                return fail(EXIT_FAILED, "job %s is not running, so there is nothing to checkpoint; start it with "
                                         "dmtcpctl start %s", job, job);
        }
        struct proto_result res;
        char err[1024];
        bool progress = wait && !c->json && isatty(STDERR_FILENO);
        int r = ctl_coord_command(job, wait ? PROTO_CMD_BCHECKPOINT : PROTO_CMD_CHECKPOINT, 0, progress, &res, err,
                                  sizeof err);
        if (r == -EIO)
                return fail(EXIT_FAILED, "job %s: checkpoint failed: %s", job, err);
        if (r < 0)
                return coord_error(job, r, err);
        return print_result(c, job, &res, wait ? "committed" : "started");
}

/* Processes of an ad-hoc job (no dmtcp@NAME unit running): known only to
 * the coordinator. */
static bool adhoc_running(struct ctl *c, const char *job) {
        struct proto_status st;
        char err[256];
        return coordinator_up(c, job) && ctl_coord_status(job, &st, err, sizeof err) == 0 && st.num_peers > 0;
}

static int cmd_stop(struct ctl *c, const char *job, bool kill) {
        int r = need_bus(c, job);
        if (r)
                return r;
        char unit[128], err[768], why[160];
        job_unit_name(job, unit, sizeof unit);
        struct unit_info u;
        if (job_unit_info(c, job, &u) < 0)
                return fail(EXIT_FAILED, "job %s: cannot read the state of %s", job, unit);
        bool up = unit_is_up(&u) || !strcmp(u.sub_state, "auto-restart");
        if (!up && adhoc_running(c, job)) {
                struct proto_result res;
                r = ctl_coord_command(job, kill ? PROTO_CMD_KILL : PROTO_CMD_KCHECKPOINT, 0, false, &res, err,
                                      sizeof err);
                if (r < 0)
                        return r == -EIO ? fail(EXIT_FAILED, "job %s: %s", job, err) : coord_error(job, r, err);
                return print_result(c, job, &res, "committed; its processes end now");
        }
        (void) usermgr_enable(c->bus, unit, false, err, sizeof err);
        if (!up) {
                if (!c->json)
                        printf("job %s is not running (%s)\n", job, u.active_state);
                return 0;
        }
        uint64_t before = newest_generation_of(job);
        if (kill && (r = write_no_checkpoint_flag(job)) < 0)
                return fail(EXIT_FAILED, "job %s: cannot ask for a stop without checkpoint: %s", job, strerror(-r));
        r = unit_job(c, job, "StopUnit", unit, STOP_TIMEOUT_USEC);
        if (r)
                return r;
        remove_no_checkpoint_flag(job);
        uint64_t after = newest_generation_of(job);
        if (job_unit_info(c, job, &u) == 0 && !strcmp(u.active_state, "failed")) {
                describe_exit(&u, why, sizeof why);
                return fail(EXIT_FAILED, "job %s stopped, but its unit failed (%s%s); see journalctl --user-unit=%s", job,
                            why, !kill && after == before ? ", no stop checkpoint was taken" : "", unit);
        }
        if (c->json) {
                struct json j;
                json_init(&j, stdout);
                json_begin_object(&j, NULL);
                json_string(&j, "job", job);
                json_bool(&j, "checkpointed", after > before);
                json_u64(&j, "generation", after);
                json_end_object(&j);
                json_finish(&j);
        } else if (after > before)
                printf("job %s stopped after checkpoint generation %" PRIu64 "; 'dmtcpctl start %s' resumes it\n", job,
                       after, job);
        else
                printf("job %s stopped without a checkpoint%s\n", job,
                       kill ? "" : " (CHECKPOINT_ON_STOP=no, or its processes had already ended)");
        return 0;
}

static int cmd_restart(struct ctl *c, const char *job) {
        int r = need_bus(c, job);
        if (r)
                return r;
        char unit[128], conf_path[PATH_MAX], err[1024];
        job_unit_name(job, unit, sizeof unit);
        struct unit_info u;
        if (job_unit_info(c, job, &u) < 0 || !(unit_is_up(&u) || !strcmp(u.sub_state, "auto-restart")))
                return fail(EXIT_FAILED, "job %s is not running; start it with dmtcpctl start %s", job, job);
        struct job_conf jc;
        job_conf_path(job, conf_path, sizeof conf_path);
        bool ckpt_on_stop = true;
        if (job_conf_load(conf_path, &jc, err, sizeof err) == 0) {
                ckpt_on_stop = jc.checkpoint_on_stop;
                job_conf_done(&jc);
        }
        uint64_t before = newest_generation_of(job);
        if (!ckpt_on_stop) {
                /* The unit's stop would not checkpoint: take the stop
                 * checkpoint here, the processes end, then start. */
                struct proto_result res;
                r = ctl_coord_command(job, PROTO_CMD_KCHECKPOINT, 0, false, &res, err, sizeof err);
                if (r < 0)
                        return r == -EIO ? fail(EXIT_FAILED, "job %s: checkpoint failed, nothing restarted: %s", job, err) :
                                           coord_error(job, r, err);
        }
        r = unit_job(c, job, "RestartUnit", unit, STOP_TIMEOUT_USEC + START_TIMEOUT_USEC);
        if (r)
                return r;
        uint64_t after = newest_generation_of(job);
        if (after <= before)
                fprintf(stderr, "%s: warning: job %s: no new checkpoint was taken; it restarted from generation %" PRIu64
                                "\n", prog, job, after);
        char what[64];
        snprintf(what, sizeof what, "restarted from generation %" PRIu64, after);
        return wait_running(c, job, what);
}

static int cmd_status(struct ctl *c, const char *job) {
        struct job_view v;
        job_view_load(c, job, &v);
        int r = 0;
        if (!job_exists(&v))
                r = fail(EXIT_FAILED, "no job named %s (no job file %s, no images, no unit); create it with dmtcpctl "
                                      "launch %s -- COMMAND...", job, v.conf_path, job);
        else if (c->json) {
                struct json j;
                json_init(&j, stdout);
                json_job(&j, &v);
                json_finish(&j);
        } else
                print_job(&v);
        job_view_done(&v);
        return r;
}

/* ---- list ------------------------------------------------------------------ */

struct names {
        char **v;
        size_t n;
};

static void names_add(struct names *ns, const char *name) {
        if (!job_name_ok(name))
                return;
        for (size_t i = 0; i < ns->n; i++)
                if (!strcmp(ns->v[i], name))
                        return;
        char **nv = realloc(ns->v, (ns->n + 1) * sizeof *nv);
        if (!nv)
                return;
        ns->v = nv;
        if ((ns->v[ns->n] = strdup(name)))
                ns->n++;
}

static void names_from_dir(struct names *ns, const char *dir, const char *suffix, bool dirs) {
        DIR *d = opendir(dir);
        if (!d)
                return;
        struct dirent *de;
        size_t sl = suffix ? strlen(suffix) : 0;
        while ((de = readdir(d))) {
                char name[256];
                size_t l = strlen(de->d_name);
                if (de->d_name[0] == '.' || l >= sizeof name)
                        continue;
                if (dirs) {
                        struct stat st;
                        if (fstatat(dirfd(d), de->d_name, &st, 0) < 0 || !S_ISDIR(st.st_mode))
                                continue;
                        names_add(ns, de->d_name);
                } else if (l > sl && !strcmp(de->d_name + l - sl, suffix)) {
                        memcpy(name, de->d_name, l - sl);
                        name[l - sl] = 0;
                        names_add(ns, name);
                }
        }
        closedir(d);
}

static void name_from_unit(const char *unit, void *userdata) {
        struct names *ns = userdata;
        const char *at = strchr(unit, '@'), *dot = strrchr(unit, '.');
        if (!at || !dot || dot <= at + 1)
                return;
        char name[128];
        size_t l = (size_t) (dot - at - 1);
        if (l >= sizeof name)
                return;
        memcpy(name, at + 1, l);
        name[l] = 0;
        names_add(ns, name);
}

static int cmp_str(const void *a, const void *b) {
        return strcmp(*(char *const *) a, *(char *const *) b);
}

static int cmd_list(struct ctl *c) {
        struct names ns = {};
        char dir[PATH_MAX], err[512];
        ctl_bus(c);
        if (job_config_dir(dir, sizeof dir) == 0)
                names_from_dir(&ns, dir, ".conf", false);
        if (job_state_root(dir, sizeof dir) == 0)
                names_from_dir(&ns, dir, NULL, true);
        if (coord_socket_dir(dir, sizeof dir) == 0)
                names_from_dir(&ns, dir, ".sock", false);
        if (c->bus) {
                (void) usermgr_list_units(c->bus, "dmtcp@*.service", name_from_unit, &ns, err, sizeof err);
                (void) usermgr_list_units(c->bus, "dmtcp-coordinator@*", name_from_unit, &ns, err, sizeof err);
        }
        if (ns.n)
                qsort(ns.v, ns.n, sizeof *ns.v, cmp_str);
        struct json j;
        if (c->json) {
                json_init(&j, stdout);
                json_begin_object(&j, NULL);
                json_begin_array(&j, "jobs");
        } else
                printf("%-20s %-14s %-6s %-10s %-19s %s\n", "JOB", "STATE", "PROCS", "GENERATION", "LAST CHECKPOINT",
                       "COMMAND");
        size_t shown = 0;
        for (size_t i = 0; i < ns.n; i++) {
                struct job_view v;
                job_view_load(c, ns.v[i], &v);
                if (!job_exists(&v)) {
                        job_view_done(&v);
                        continue;
                }
                shown++;
                if (c->json)
                        json_job(&j, &v);
                else {
                        char when[64] = "-", gen[24] = "-", cmd[2048] = "-", procs[16] = "-";
                        const struct gen_info *g = newest_gen(&v);
                        if (g) {
                                fmt_time(g->time_usec, when, sizeof when);
                                snprintf(gen, sizeof gen, "%" PRIu64 "%s", g->generation, g->complete ? "" : "!");
                        }
                        if (v.have_coord)
                                snprintf(procs, sizeof procs, "%" PRIu32, v.coord.num_peers);
                        if (v.have_conf)
                                fmt_command(&v.conf, cmd, sizeof cmd);
                        else if (v.conf_error[0])
                                snprintf(cmd, sizeof cmd, "(invalid job file; see dmtcpctl status %s)", v.name);
                        printf("%-20s %-14s %-6s %-10s %-19s %s\n", v.name, v.state, procs, gen, when, cmd);
                }
                job_view_done(&v);
        }
        if (c->json) {
                json_end_array(&j);
                json_end_object(&j);
                json_finish(&j);
        } else if (!shown)
                printf("(no jobs; create one with dmtcpctl launch NAME -- COMMAND...)\n");
        for (size_t i = 0; i < ns.n; i++)
                free(ns.v[i]);
        free(ns.v);
        return 0;
}

/* ---- history, images ------------------------------------------------------- */

static int cmd_history(struct ctl *c, const char *job, size_t limit) {
        struct history_entry *h = NULL;
        char err[512];
        int n = history_read(job, getuid(), limit, &h, err, sizeof err);
        if (n < 0)
                return fail(EXIT_FAILED, "job %s: %s", job, err);
        if (c->json) {
                struct json j;
                json_init(&j, stdout);
                json_begin_object(&j, NULL);
                json_string(&j, "job", job);
                json_begin_array(&j, "entries");
                for (int i = 0; i < n; i++) {
                        const struct history_entry *e = &h[i];
                        json_begin_object(&j, NULL);
                        json_u64(&j, "time_usec", e->realtime_usec);
                        json_string(&j, "event", history_kind_name(e->kind));
                        json_string(&j, "result", history_result_name(e->kind));
                        if (e->have_generation)
                                json_u64(&j, "generation", e->generation);
                        else
                                json_null(&j, "generation");
                        if (e->have_processes)
                                json_u64(&j, "processes", e->processes);
                        else
                                json_null(&j, "processes");
                        if (e->have_bytes)
                                json_u64(&j, "bytes", e->bytes);
                        else
                                json_null(&j, "bytes");
                        if (e->have_duration)
                                json_u64(&j, "duration_usec", e->duration_usec);
                        else
                                json_null(&j, "duration_usec");
                        json_string(&j, "computation", e->computation[0] ? e->computation : NULL);
                        json_string(&j, "dir", e->dir[0] ? e->dir : NULL);
                        json_string(&j, "reason", e->reason[0] ? e->reason : NULL);
                        json_string(&j, "unit", e->unit[0] ? e->unit : NULL);
                        json_end_object(&j);
                }
                json_end_array(&j);
                json_end_object(&j);
                json_finish(&j);
        } else {
                printf("%-19s %-10s %-10s %-5s %-10s %-9s %s\n", "TIME", "EVENT", "GENERATION", "PROCS", "SIZE",
                       "DURATION", "RESULT");
                for (int i = 0; i < n; i++) {
                        const struct history_entry *e = &h[i];
                        char when[64], gen[24] = "-", procs[16] = "-", size[32] = "-", dur[32] = "-";
                        fmt_time(e->realtime_usec, when, sizeof when);
                        if (e->have_generation)
                                snprintf(gen, sizeof gen, "%" PRIu64, e->generation);
                        if (e->have_processes)
                                snprintf(procs, sizeof procs, "%" PRIu32, e->processes);
                        if (e->have_bytes)
                                fmt_bytes(e->bytes, size, sizeof size);
                        if (e->have_duration)
                                snprintf(dur, sizeof dur, "%.3f s", (double) e->duration_usec / 1e6);
                        printf("%-19s %-10s %-10s %-5s %-10s %-9s %s%s%s\n", when, history_kind_name(e->kind), gen, procs,
                               size, dur, history_result_name(e->kind), e->reason[0] ? ": " : "", e->reason);
                }
                if (n == 0 && geteuid() != 0)
                        printf("(no checkpoints of job %s in the journal you can read; a journal kept only in /run "
                               "is readable by the systemd-journal group alone)\n", job);
                else if (n == 0)
                        printf("(no checkpoints of job %s in the journal)\n", job);
        }
        free(h);
        return 0;
}

static int cmd_images(struct ctl *c, const char *job) {
        char dir[PATH_MAX];
        ctl_bus(c);
        if (job_state_dir(job, dir, sizeof dir) < 0)
                return fail(EXIT_FAILED, "job %s: cannot place its checkpoint directory; set HOME", job);
        struct gen_info *g = NULL;
        int n = read_generations(dir, &g);
        if (n < 0)
                return fail(EXIT_FAILED, "job %s: cannot read %s: %s", job, dir, strerror(-n));
        if (c->json) {
                struct json j;
                json_init(&j, stdout);
                json_begin_object(&j, NULL);
                json_string(&j, "job", job);
                json_string(&j, "directory", dir);
                json_begin_array(&j, "generations");
                for (int i = 0; i < n; i++)
                        json_gen(&j, NULL, &g[i]);
                json_end_array(&j);
                json_end_object(&j);
                json_finish(&j);
        } else {
                printf("Images of job %s in %s\n", job, dir);
                printf("%-10s %-19s %-5s %-10s %s\n", "GENERATION", "TIME", "PROCS", "SIZE", "STATUS");
                for (int i = 0; i < n; i++) {
                        char when[64], size[32];
                        fmt_time(g[i].time_usec, when, sizeof when);
                        fmt_bytes(g[i].bytes, size, sizeof size);
                        printf("%-10" PRIu64 " %-19s %-5" PRIu32 " %-10s %s%s\n", g[i].generation, when, g[i].processes,
                               g[i].complete ? size : "-", g[i].complete ? "complete" : g[i].error,
                               i == n - 1 ? " (newest: a start restarts from it)" : "");
                }
                if (n == 0)
                        printf("(none)\n");
        }
        free(g);
        return 0;
}

/* ---- main ------------------------------------------------------------------ */

static void help(void) {
        printf("Usage: %s COMMAND [NAME] [OPTIONS]\n"
               "Run programs as checkpointed systemd user services (dmtcp@NAME.service).\n"
               "\n"
               "Commands:\n"
               "  launch NAME [--interval S] [--keep N] [--workdir DIR] [--no-checkpoint-on-stop]\n"
               "         [--no-enable] [--replace] -- COMMAND [ARGS...]\n"
               "                          define job NAME and start it\n"
               "  start NAME              start a defined job: resume from its newest checkpoint\n"
               "  checkpoint NAME [--wait] checkpoint the running job (--wait: until committed)\n"
               "  restart NAME            stop with a checkpoint, then start from it\n"
               "  stop NAME               checkpoint and end the job (unless CHECKPOINT_ON_STOP=no)\n"
               "  kill NAME               end the job without a checkpoint\n"
               "  status [NAME] [--json]  the state of one job (of all without NAME)\n"
               "  list [--json]           all jobs\n"
               "  history NAME [-n N] [--json]  checkpoints and restarts, from the journal\n"
               "  images NAME [--json]    the checkpoint generations on disk\n"
               "\n"
               "Exit status: 0 success, 1 refused or failed, 2 no coordinator or user manager answered,\n"
               "64 usage error. See dmtcpctl(1), dmtcp@.service(5).\n",
               prog);
}

int main(int argc, char *argv[]) {
        struct ctl c = {};
        if (argc < 2)
                return usage_error("no command given");
        const char *cmd = argv[1];
        if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h") || !strcmp(cmd, "help")) {
                help();
                return 0;
        }
        if (!strcmp(cmd, "--version")) {
                printf("%s %s\n", prog, DMTCP_VERSION);
                return 0;
        }
        if (!strcmp(cmd, "launch")) {
                int r = cmd_launch(&c, argc - 1, argv + 1);
                if (c.bus)
                        sd_bus_flush_close_unref(c.bus);
                return r;
        }

        /* The other commands: NAME and a few flags, in any order. */
        const char *job = NULL;
        bool wait = false;
        size_t limit = 0;
        for (int i = 2; i < argc; i++) {
                const char *a = argv[i];
                if (!strcmp(a, "--json"))
                        c.json = true;
                else if (!strcmp(a, "--wait") && !strcmp(cmd, "checkpoint"))
                        wait = true;
                else if ((!strcmp(a, "-n") || !strcmp(a, "--lines")) && !strcmp(cmd, "history")) {
                        int v;
                        if (i + 1 >= argc || parse_int_range(argv[i + 1], 1, INT32_MAX, &v) < 0)
                                return usage_error("%s needs a positive number", a);
                        limit = (size_t) v;
                        i++;
                } else if (!strcmp(a, "--help")) {
                        help();
                        return 0;
                } else if (a[0] == '-')
                        return usage_error("unknown option '%s' for %s", a, cmd);
                else if (job)
                        return usage_error("%s takes one job name, not '%s' too", cmd, a);
                else
                        job = a;
        }
        int r;
        if (job && (r = check_name(job)))
                return r;
        bool needs_name = strcmp(cmd, "list") && strcmp(cmd, "status");
        if (needs_name && !job && (!strcmp(cmd, "start") || !strcmp(cmd, "checkpoint") || !strcmp(cmd, "restart") ||
                                   !strcmp(cmd, "stop") || !strcmp(cmd, "kill") || !strcmp(cmd, "history") ||
                                   !strcmp(cmd, "images")))
                return usage_error("%s needs a job name", cmd);

        if (!strcmp(cmd, "start"))
                r = cmd_start(&c, job);
        else if (!strcmp(cmd, "checkpoint"))
                r = cmd_checkpoint(&c, job, wait);
        else if (!strcmp(cmd, "restart"))
                r = cmd_restart(&c, job);
        else if (!strcmp(cmd, "stop"))
                r = cmd_stop(&c, job, false);
        else if (!strcmp(cmd, "kill"))
                r = cmd_stop(&c, job, true);
        else if (!strcmp(cmd, "status"))
                r = job ? cmd_status(&c, job) : cmd_list(&c);
        else if (!strcmp(cmd, "list")) {
                if (job)
                        return usage_error("list takes no job name; use dmtcpctl status %s", job);
                r = cmd_list(&c);
        } else if (!strcmp(cmd, "history"))
                r = cmd_history(&c, job, limit);
        else if (!strcmp(cmd, "images"))
                r = cmd_images(&c, job);
        else
                return usage_error("unknown command '%s'", cmd);
        if (c.bus)
                sd_bus_flush_close_unref(c.bus);
        fflush(stdout);
        return r;
}
