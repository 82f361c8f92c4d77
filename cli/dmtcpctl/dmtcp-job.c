/* dmtcp-job: what the units run for job NAME (installed in
 * LIBEXECDIR/dmtcp/, not meant to be typed; see dmtcp@.service(5)).
 *
 *   dmtcp-job start NAME        ExecStart= of dmtcp@NAME.service: read the job
 *                               file, then restart from the newest complete
 *                               checkpoint if there is one, else launch the
 *                               command; exec()s, so the unit's main process
 *                               is dmtcp_restart or the program itself and the
 *                               job's own exit status reaches systemd.
 *   dmtcp-job stop NAME         ExecStop=: checkpoint and end the computation
 *                               (dmtcp_command --kcheckpoint), unless
 *                               CHECKPOINT_ON_STOP=no or dmtcpctl kill asked
 *                               for no checkpoint.
 *   dmtcp-job post NAME         ExecStopPost=: record a job that finished by
 *                               itself (status 0), explain a hopeless failure.
 *   dmtcp-job coordinator NAME  ExecStart= of dmtcp-coordinator@NAME.service:
 *                               exec the coordinator with the job's settings.
 *
 * Exit status (start): 78 (EX_CONFIG) for a missing or invalid job file, which
 * the unit does not retry; otherwise whatever dmtcp_launch/dmtcp_restart and
 * the program return (DMTCP_FAIL_RC, +1 unusable image, +2 permission). */
#include <fcntl.h>
#include <dirent.h>
#include <inttypes.h>
#include <limits.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>

#include "config.h"
#include "env.h"
#include "job-conf.h"
#include "job-paths.h"
#include "log.h"
#include "util.h"

#define EXIT_CONFIG 78
#define COORD_IDLE_TIMEOUT 60   /* seconds; the unit's DMTCP_IDLE_TIMEOUT= overrides */

static const char *job;

/* systemd connected stderr to the journal: prefix lines with <level> instead
 * of our name, so journalctl shows priorities. */
static void setup_logging(void) {
        log_set_ident("dmtcp-job");
        const char *e = getenv("JOURNAL_STREAM");
        unsigned long long dev, ino;
        struct stat st;
        if (e && sscanf(e, "%llu:%llu", &dev, &ino) == 2 && fstat(STDERR_FILENO, &st) == 0 &&
            (unsigned long long) st.st_dev == dev && (unsigned long long) st.st_ino == ino)
                log_set_stderr_prefix_level(true);
}

/* The job always talks to its own coordinator and keeps its images in its
 * state directory, whatever the user manager's environment says. */
static void clean_environment(void) {
        static const char *const vars[] = {
                "DMTCP_COORD_SOCKET", "DMTCP_COORD_HOST", "DMTCP_COORD_PORT", "DMTCP_HOST", "DMTCP_PORT",
                "DMTCP_CHECKPOINT_DIR", "DMTCP_CHECKPOINT_INTERVAL", "DMTCP_KEEP", "DMTCP_COMPUTATION",
                "DMTCP_EXTERNAL_FDS",
        };
        for (size_t i = 0; i < ARRAY_SIZE(vars); i++)
                unsetenv(vars[i]);
}

static int find_tool(const char *name, const char *build_rel, char *buf, size_t size) {
        char rel[PATH_MAX];
        snprintf(rel, sizeof rel, "%s/%s", DMTCP_LIBEXEC_TO_BIN, name);
        int r = find_sibling(rel, build_rel, buf, size);
        if (r < 0)
                log_error("job %s: cannot find %s next to dmtcp-job; is dmtcp installed completely?", job, name);
        return r;
}

static int load_conf(struct job_conf *c, char *path, size_t size) {
        char err[1024];
        int r = job_conf_path(job, path, size);
        if (r < 0)
                return log_error_errno(r, "job %s: cannot locate its job file: %m; set HOME", job);
        r = job_conf_load(path, c, err, sizeof err);
        if (r == -ENOENT)
                log_error("job %s has no job file %s; create it (see dmtcp@.service(5)) or use 'dmtcpctl launch %s -- "
                          "COMMAND...'", job, path, job);
        else if (r < 0)
                log_error("job %s: %s; fix the job file", job, err);
        return r;
}

/* After a finished run the old checkpoints would resurrect a computation
 * that already ended: remove them before launching afresh. */
static int forget_finished_run(const char *dir) {
        char p[PATH_MAX];
        snprintf(p, sizeof p, "%s/" JOB_FINISHED_MARKER, dir);
        if (access(p, F_OK) < 0)
                return 0;
        DIR *d = opendir(dir);
        if (!d)
                return -errno;
        struct dirent *de;
        int r = 0;
        while ((de = readdir(d))) {
                if (strncmp(de->d_name, "gen-", 4) && strncmp(de->d_name, ".gen-", 5) && strcmp(de->d_name, "latest") &&
                    strcmp(de->d_name, "dmtcp_restart_script.sh"))
                        continue;
                char q[PATH_MAX];
                snprintf(q, sizeof q, "%s/%s", dir, de->d_name);
                int k = rm_rf(q);
                if (k < 0 && r == 0)
                        r = k;
        }
        closedir(d);
        if (r == 0 && unlink(p) < 0)
                r = -errno;
        if (r < 0)
                return log_error_errno(r, "job %s: cannot remove the checkpoints of its finished run in %s: %m", job, dir);
        log_info("job %s finished its last run; launching it afresh (its old checkpoints were removed)", job);
        return 1;
}

static int cmd_start(void) {
        _cleanup_(job_conf_done) struct job_conf c = {};
        char conf_path[PATH_MAX], dir[PATH_MAX], tool[PATH_MAX], interval[16];
        if (load_conf(&c, conf_path, sizeof conf_path) < 0)
                return EXIT_CONFIG;
        int r = job_state_dir(job, dir, sizeof dir);
        if (r < 0) {
                log_error_errno(r, "job %s: cannot place its checkpoint directory: %m; set HOME or XDG_STATE_HOME", job);
                return EXIT_CONFIG;
        }
        r = mkdir_p(dir, 0700);
        if (r < 0) {
                log_error_errno(r, "job %s: cannot create its checkpoint directory %s: %m", job, dir);
                return dmtcp_fail_rc();
        }
        if (forget_finished_run(dir) < 0)
                return dmtcp_fail_rc();
        clean_environment();
        snprintf(interval, sizeof interval, "%" PRIu32, c.interval);

        uint64_t *gens = NULL;
        int n = job_list_generations(dir, &gens);
        if (n < 0) {
                log_error_errno(n, "job %s: cannot read its checkpoint directory %s: %m", job, dir);
                return dmtcp_fail_rc();
        }
        if (n > 0) {
                /* The newest generation, damaged or not: dmtcp_restart refuses
                 * a damaged one (status 100), and nothing falls back to an
                 * older one behind the user's back. */
                uint64_t newest = gens[n - 1];
                free(gens);
                if (find_tool("dmtcp_restart", "../restart/dmtcp_restart", tool, sizeof tool) < 0)
                        return dmtcp_fail_rc();
                /* The restored processes get their own working directory
                 * back; ours only matters for relative paths in messages. */
                if (chdir(dir) < 0 && chdir("/") < 0)
                        log_debug_errno(errno, "job %s: cannot change directory: %m", job);
                log_info("job %s: restarting from checkpoint generation %" PRIu64 " in %s", job, newest, dir);
                char *argv[] = { tool, (char *) "--job", (char *) job, (char *) "--ckptdir", dir,
                                 (char *) "--interval", interval, dir, NULL };
                execv(tool, argv);
                log_error_errno(errno, "job %s: cannot run %s: %m", job, tool);
                return dmtcp_fail_rc();
        }
        free(gens);

        char wd[PATH_MAX];
        if (c.working_directory)
                strscpy(wd, c.working_directory, sizeof wd);
        else if (job_home_dir(wd, sizeof wd) < 0)
                strscpy(wd, "/", sizeof wd);
        if (chdir(wd) < 0) {
                log_error_errno(errno, "job %s: cannot enter its working directory %s: %m; create it or fix "
                                       "WORKING_DIRECTORY= in %s", job, wd, conf_path);
                return EXIT_CONFIG;
        }
        if (find_tool("dmtcp_launch", "../cli/dmtcp_launch", tool, sizeof tool) < 0)
                return dmtcp_fail_rc();
        char shown[1024] = "";
        for (size_t i = 0; i < c.argc && strlen(shown) < 900; i++) {
                if (i)
                        strcat(shown, " ");
                if (job_quote_word(c.argv[i], shown, sizeof shown) < 0)
                        break;
        }
        if (c.interval)
                log_info("job %s: launching %s in %s; checkpoints every %" PRIu32 " s into %s", job, shown, wd, c.interval,
                         dir);
        else
                log_info("job %s: launching %s in %s; checkpoints on request into %s", job, shown, wd, dir);

        size_t na = c.argc + 9;
        char **argv = calloc(na, sizeof *argv);
        if (!argv)
                return dmtcp_fail_rc();
        size_t k = 0;
        argv[k++] = tool;
        argv[k++] = (char *) "--job";
        argv[k++] = (char *) job;
        argv[k++] = (char *) "--ckptdir";
        argv[k++] = dir;
        argv[k++] = (char *) "--interval";
        argv[k++] = interval;
        argv[k++] = (char *) "--";
        for (size_t i = 0; i < c.argc; i++)
                argv[k++] = c.argv[i];
        argv[k] = NULL;
        execv(tool, argv);
        log_error_errno(errno, "job %s: cannot run %s: %m", job, tool);
        free(argv);
        return dmtcp_fail_rc();
}

static int no_checkpoint_flag(char *buf, size_t size) {
        char d[PATH_MAX];
        int r = coord_socket_dir(d, sizeof d);
        if (r < 0)
                return r;
        int n = snprintf(buf, size, "%s/%s.no-checkpoint", d, job);
        return n < 0 || (size_t) n >= size ? -ENAMETOOLONG : 0;
}

static int run_wait(char *const argv[]) {
        pid_t pid = fork();
        if (pid < 0)
                return -errno;
        if (pid == 0) {
                execv(argv[0], argv);
                _exit(127);
        }
        int st;
        while (waitpid(pid, &st, 0) < 0)
                if (errno != EINTR)
                        return -errno;
        return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static int cmd_stop(void) {
        const char *main_pid = getenv("MAINPID");
        if (!main_pid || !*main_pid) {
                log_info("job %s: its processes have already ended; nothing to checkpoint", job);
                return 0;
        }
        char flag[PATH_MAX];
        if (no_checkpoint_flag(flag, sizeof flag) == 0 && unlink(flag) == 0) {
                log_info("job %s: stopping without a checkpoint, as asked (dmtcpctl kill)", job);
                return 0;
        }
        _cleanup_(job_conf_done) struct job_conf c = {};
        char conf_path[PATH_MAX];
        if (load_conf(&c, conf_path, sizeof conf_path) < 0)
                log_warning("job %s: checkpointing on stop, the default, as its job file cannot be read", job);
        else if (!c.checkpoint_on_stop) {
                log_info("job %s: stopping without a checkpoint (CHECKPOINT_ON_STOP=no)", job);
                return 0;
        }
        char tool[PATH_MAX];
        if (find_tool("dmtcp_command", "../cli/dmtcp_command", tool, sizeof tool) < 0)
                return 1;
        clean_environment();
        log_info("job %s: checkpointing before it stops", job);
        char *argv[] = { tool, (char *) "--job", (char *) job, (char *) "--kcheckpoint", NULL };
        int r = run_wait(argv);
        if (r == 0)
                return 0;
        if (r < 0)
                log_error_errno(r, "job %s: cannot run %s: %m", job, tool);
        log_error("job %s: the checkpoint on stop failed (dmtcp_command status %d); the job ends without it, and its "
                  "next start resumes from the newest complete checkpoint ('dmtcpctl images %s')", job, r, job);
        return 1;
}

static int cmd_post(void) {
        const char *code = getenv("EXIT_CODE"), *status = getenv("EXIT_STATUS");
        char flag[PATH_MAX];
        if (no_checkpoint_flag(flag, sizeof flag) == 0)
                (void) unlink(flag);
        if (!code || !status)
                return 0;
        int fail_rc = dmtcp_fail_rc(), st = -1;
        (void) parse_int_range(status, 0, 255, &st);
        if (!strcmp(code, "exited") && st == 0) {
                char dir[PATH_MAX], p[PATH_MAX + 16];
                if (job_state_dir(job, dir, sizeof dir) < 0)
                        return 0;
                snprintf(p, sizeof p, "%s/" JOB_FINISHED_MARKER, dir);
                char when[64];
                time_t t = time(NULL);
                struct tm tm;
                strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S%z\n", localtime_r(&t, &tm));
                int r = write_file_atomic(p, when, strlen(when), 0600);
                if (r < 0)
                        return log_error_errno(r, "job %s finished, but %s cannot be written: %m", job, p), 0;
                log_info("job %s finished: its program exited with status 0; the next start launches it afresh", job);
        } else if (!strcmp(code, "exited") && st == fail_rc + 1)
                log_error("job %s cannot restart: its newest checkpoint is unusable (status %d); inspect it with "
                          "'dmtcpctl images %s', then remove that generation or relaunch with 'dmtcpctl launch --replace'",
                          job, st, job);
        else if (!strcmp(code, "exited") && st == fail_rc + 2)
                log_error("job %s cannot restart: permission refused (status %d); its images must belong to you", job, st);
        else if (!strcmp(code, "exited") && st == EXIT_CONFIG)
                log_error("job %s cannot start: its job file or working directory is wrong (status 78); fix it, then "
                          "'systemctl --user reset-failed dmtcp@%s'", job, job);
        return 0;
}

static int cmd_coordinator(void) {
        char tool[PATH_MAX], keep[16], dir[PATH_MAX], conf_path[PATH_MAX], err[1024], idle[16];
        int idle_s = COORD_IDLE_TIMEOUT;
        const char *e = getenv("DMTCP_IDLE_TIMEOUT");
        if (e && *e && parse_int_range(e, 1, 86400, &idle_s) < 0) {
                log_warning("job %s: DMTCP_IDLE_TIMEOUT=%s is not a number of seconds from 1 to 86400; using %d", job, e,
                            COORD_IDLE_TIMEOUT);
                idle_s = COORD_IDLE_TIMEOUT;
        }
        snprintf(idle, sizeof idle, "%d", idle_s);
        if (find_tool("dmtcp_coordinator", "../daemon/dmtcp_coordinator", tool, sizeof tool) < 0)
                return dmtcp_fail_rc();
        const char *argv[16];
        size_t k = 0;
        argv[k++] = tool;
        argv[k++] = "--job";
        argv[k++] = job;
        argv[k++] = "--idle-timeout";
        argv[k++] = idle;
        /* A job with a job file checkpoints into its state directory and
         * keeps KEEP generations there; an ad-hoc job (systemd-run
         * dmtcp_launch --job NAME) decides its checkpoint directory itself. */
        _cleanup_(job_conf_done) struct job_conf c = {};
        int r = job_conf_path(job, conf_path, sizeof conf_path);
        if (r == 0)
                r = job_conf_load(conf_path, &c, err, sizeof err);
        if (r == 0 && job_state_dir(job, dir, sizeof dir) == 0 && mkdir_p(dir, 0700) == 0) {
                snprintf(keep, sizeof keep, "%d", c.keep);
                argv[k++] = "--keep";
                argv[k++] = keep;
                argv[k++] = "--ckptdir";
                argv[k++] = dir;
        } else if (r != -ENOENT)
                log_warning("job %s: %s; the coordinator uses its defaults", job, err);
        argv[k] = NULL;
        clean_environment();
        execv(tool, (char *const *) argv);
        log_error_errno(errno, "job %s: cannot run %s: %m", job, tool);
        return dmtcp_fail_rc();
}

int main(int argc, char *argv[]) {
        setup_logging();
        if (argc != 3) {
                log_error("usage: dmtcp-job start|stop|post|coordinator NAME (run by the dmtcp units; see dmtcp@.service(5))");
                return 64;
        }
        job = argv[2];
        if (!job_name_ok(job)) {
                log_error("invalid job name '%s': use 1 to 64 letters, digits, '_' and '.', not starting with '.'", job);
                return EXIT_CONFIG;
        }
        if (!strcmp(argv[1], "start"))
                return cmd_start();
        if (!strcmp(argv[1], "stop"))
                return cmd_stop();
        if (!strcmp(argv[1], "post"))
                return cmd_post();
        if (!strcmp(argv[1], "coordinator"))
                return cmd_coordinator();
        log_error("unknown command '%s': use start, stop, post or coordinator", argv[1]);
        return 64;
}
