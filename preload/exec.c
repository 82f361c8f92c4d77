/* exec and posix_spawn: a program exec'd from the computation must run under
 * the runtime too, whatever environment the program hands to exec. So the
 * environment passed on is ours: the coordinator's current address (it may
 * have changed with a restart), the computation, the identities of the
 * descriptors inherited at launch, LD_PRELOAD with our library, and our
 * settings where the program's environment lacks them.
 *
 * Before exec the process tells the coordinator (EXEC), which then keeps its
 * place until the new image joins; an exec never starts while this process
 * is being checkpointed (a small critical section the checkpoint thread
 * waits for).
 *
 * The environment is built on the stack: a vfork child must not allocate. */
#include <dlfcn.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "raw-syscall.h"
#include "rt.h"
#include "util.h"

extern char **environ;

static int (*real_execve)(const char *, char *const[], char *const[]);
static int (*real_execveat)(int, const char *, char *const[], char *const[], int);
static int (*real_fexecve)(int, char *const[], char *const[]);
static int (*real_execvpe)(const char *, char *const[], char *const[]);
static int (*real_posix_spawn)(pid_t *, const char *, const posix_spawn_file_actions_t *, const posix_spawnattr_t *,
                               char *const[], char *const[]);
static int (*real_posix_spawnp)(pid_t *, const char *, const posix_spawn_file_actions_t *, const posix_spawnattr_t *,
                                char *const[], char *const[]);

#define RESOLVE(var, name) \
        do { if (!var) var = (__typeof__(var)) dlsym(RTLD_NEXT, name); } while (0)

static char self_lib[PATH_MAX];

static const char *runtime_library(void) {
        if (!self_lib[0]) {
                Dl_info info;
                if (dladdr((void *) &rt, &info) && info.dli_fname)
                        strscpy(self_lib, info.dli_fname, sizeof self_lib);
        }
        return self_lib;
}

static void format_external(char *buf, size_t size) {
        size_t o = 0;
        buf[0] = 0;
        for (uint32_t i = 0; i < rt.n_external; i++) {
                int n = snprintf(buf + o, size - o, "%s%d:%llu:%llu", o ? "," : "", rt.external[i].fd,
                                 (unsigned long long) rt.external[i].dev, (unsigned long long) rt.external[i].ino);
                if (n < 0 || (size_t) n >= size - o)
                        break;
                o += (size_t) n;
        }
}

static bool has_key(char *const env[], const char *key) {
        size_t k = strlen(key);
        for (size_t i = 0; env && env[i]; i++)
                if (!strncmp(env[i], key, k) && env[i][k] == '=')
                        return true;
        return false;
}

static bool is_key(const char *entry, const char *key) {
        size_t k = strlen(key);
        return !strncmp(entry, key, k) && entry[k] == '=';
}

/* Strings we add, in a caller-provided buffer. */
struct env_strings {
        char coord[PATH_MAX + 32];
        char comp[PROTO_ID_MAX + 32];
        char external[RT_MAX_EXTERNAL_FDS * 48 + 32];
        char preload[4 * PATH_MAX];
        char extra[10][PATH_MAX + 64];
};

/* out must hold count(env) + 16 pointers. */
static char *const *build_env(char *const env[], char **out, struct env_strings *s) {
        size_t n = 0;
        char addr[PATH_MAX + 16];
        rt_coord_addr_format(&rt.cfg.coord, addr, sizeof addr);
        snprintf(s->coord, sizeof s->coord, "DMTCP_COORD=%s", addr);
        snprintf(s->comp, sizeof s->comp, "DMTCP_COMPUTATION=%s", rt.cfg.comp_id);
        char ext[sizeof s->external];
        format_external(ext, sizeof ext);
        snprintf(s->external, sizeof s->external, "DMTCP_EXTERNAL_FDS=%s", ext);
        const char *old_preload = NULL;
        for (size_t i = 0; env && env[i]; i++) {
                if (is_key(env[i], "DMTCP_COORD") || is_key(env[i], "DMTCP_COMPUTATION") ||
                    is_key(env[i], "DMTCP_EXTERNAL_FDS") || is_key(env[i], "DMTCP_COORD_SOCKET") ||
                    is_key(env[i], "DMTCP_COORD_HOST") || is_key(env[i], "DMTCP_COORD_PORT"))
                        continue;
                if (is_key(env[i], "LD_PRELOAD")) {
                        old_preload = env[i] + strlen("LD_PRELOAD=");
                        continue;
                }
                out[n++] = env[i];
        }
        out[n++] = s->coord;
        out[n++] = s->comp;
        out[n++] = s->external;
        const char *lib = runtime_library();
        if (old_preload && (!lib[0] || strstr(old_preload, "libdmtcp.so")))
                snprintf(s->preload, sizeof s->preload, "LD_PRELOAD=%s", old_preload);
        else
                snprintf(s->preload, sizeof s->preload, "LD_PRELOAD=%s%s%s", old_preload ? old_preload : "",
                         old_preload && *old_preload ? ":" : "", lib);
        out[n++] = s->preload;
        /* Settings the program's environment may lack. */
        struct { const char *key; char value[PATH_MAX]; } add[] = {
                { "DMTCP_CHECKPOINT_DIR", "" }, { "DMTCP_GZIP", "" }, { "DMTCP_SIGCKPT", "" },
                { "DMTCP_COW_CHECKPOINT", "" }, { "DMTCP_CKPT_LIBRARIES", "" }, { "DMTCP_FAIL_RC", "" },
                { "DMTCP_JOB", "" }, { "DMTCP_QUIET", "" },
        };
        strscpy(add[0].value, rt.cfg.ckptdir, sizeof add[0].value);
        strscpy(add[1].value, rt.cfg.gzip ? "1" : "0", sizeof add[1].value);
        snprintf(add[2].value, sizeof add[2].value, "%d", rt.cfg.sigckpt);
        strscpy(add[3].value, rt.cfg.cow ? "1" : "0", sizeof add[3].value);
        strscpy(add[4].value, rt.cfg.ckpt_libraries ? "1" : "0", sizeof add[4].value);
        snprintf(add[5].value, sizeof add[5].value, "%d", rt.cfg.fail_rc);
        strscpy(add[6].value, rt.cfg.job, sizeof add[6].value);
        strscpy(add[7].value, rt.cfg.quiet ? "1" : "0", sizeof add[7].value);
        size_t k = 0;
        for (size_t i = 0; i < ARRAY_SIZE(add) && k < ARRAY_SIZE(s->extra); i++) {
                if (!add[i].value[0] || has_key(env, add[i].key))
                        continue;
                snprintf(s->extra[k], sizeof s->extra[k], "%s=%s", add[i].key, add[i].value);
                out[n++] = s->extra[k++];
        }
        out[n] = NULL;
        return out;
}

static size_t env_count(char *const env[]) {
        size_t n = 0;
        while (env && env[n])
                n++;
        return n;
}

/* Announce an exec to the coordinator (EXEC), or take it back after it
 * failed (EXEC_FAILED), under the fork lock: no join is in flight meanwhile,
 * and none starts while an exec is pending. */
static void set_exec_pending(bool on) {
        rt_fork_lock();
        atomic_store(&rt.exec_pending, on ? 1 : 0);
        if (rt.coord_fd >= 0) {
                struct proto_msg m;
                proto_init(&m, on ? PROTO_EXEC : PROTO_EXEC_FAILED);
                proto_send(rt.coord_fd, &m);
        }
        rt_fork_unlock();
}

/* The exec critical section: no exec while this process is checkpointed,
 * and no checkpoint starts while an exec is being announced. The new
 * environment is built inside it: a checkpoint (and a restart, with a new
 * coordinator) cannot come between building it and the exec. Not for a
 * vfork child, which shares our memory and must not talk for us. announce:
 * tell the coordinator this process is about to exec (not for posix_spawn,
 * whose child execs). */
static bool exec_enter(bool announce) {
        if (!rt.initialized || (pid_t) raw_getpid() != rt.pid)
                return false;
        rt_crit_enter(&rt.crit);
        if (announce) {
                /* Wait for a join in flight (it holds the fork lock), and
                 * start none until the exec: the coordinator must hear of
                 * the exec from a member it knows, or not know us at all. */
                set_exec_pending(true);
        }
        return true;
}

static void exec_leave(bool entered) {
        if (!entered)
                return;
        if (atomic_load(&rt.exec_pending))
                set_exec_pending(false);  /* the exec failed: we are still ourselves */
        rt_crit_leave(&rt.crit);
}

/* The program's view of the checkpoint signal goes to the new image (or,
 * for posix_spawn, the child) as the real mask and pending signals. */
#define WITH_ENV(env, announce, body)                                           \
        do {                                                                    \
                char *ptrs_[env_count(env) + 16];                               \
                struct env_strings strs_;                                       \
                bool entered_ = exec_enter(announce);                           \
                char *const *new_env = rt.initialized ? build_env(env, ptrs_, &strs_) : (env); \
                uint64_t mask_ = entered_ ? rt_signals_before_exec(announce) : 0; \
                body;                                                           \
                int saved_ = errno;                                             \
                if (entered_)                                                   \
                        rt_signals_after_exec(mask_);                           \
                exec_leave(entered_);                                           \
                errno = saved_;                                                 \
        } while (0)

_public_ int execve(const char *path, char *const argv[], char *const envp[]) {
        RESOLVE(real_execve, "execve");
        int r = -1;
        WITH_ENV(envp, true, r = real_execve(path, argv, new_env));
        return r;
}

_public_ int execveat(int dirfd, const char *path, char *const argv[], char *const envp[], int flags) {
        RESOLVE(real_execveat, "execveat");
        int r = -1;
        WITH_ENV(envp, true, r = real_execveat(dirfd, path, argv, new_env, flags));
        return r;
}

_public_ int fexecve(int fd, char *const argv[], char *const envp[]) {
        RESOLVE(real_fexecve, "fexecve");
        int r = -1;
        WITH_ENV(envp, true, r = real_fexecve(fd, argv, new_env));
        return r;
}

_public_ int execvpe(const char *file, char *const argv[], char *const envp[]) {
        RESOLVE(real_execvpe, "execvpe");
        int r = -1;
        WITH_ENV(envp, true, r = real_execvpe(file, argv, new_env));
        return r;
}

_public_ int execv(const char *path, char *const argv[]) {
        return execve(path, argv, environ);
}

_public_ int execvp(const char *file, char *const argv[]) {
        return execvpe(file, argv, environ);
}

/* execl, execlp, execle: collect the variadic arguments on the stack. */
#define COLLECT_ARGS(first, ap, argv, max)                                      \
        size_t n_ = 1;                                                          \
        {                                                                       \
                va_list c_;                                                     \
                va_copy(c_, ap);                                                \
                while (va_arg(c_, char *))                                      \
                        n_++;                                                   \
                va_end(c_);                                                     \
        }                                                                       \
        char *argv[n_ + 1];                                                     \
        argv[0] = (char *) (first);                                             \
        for (size_t i_ = 1; i_ <= n_; i_++)                                     \
                argv[i_] = va_arg(ap, char *);

_public_ int execl(const char *path, const char *arg, ...) {
        va_list ap;
        va_start(ap, arg);
        COLLECT_ARGS(arg, ap, argv, 0);
        va_end(ap);
        return execve(path, argv, environ);
}

_public_ int execlp(const char *file, const char *arg, ...) {
        va_list ap;
        va_start(ap, arg);
        COLLECT_ARGS(arg, ap, argv, 0);
        va_end(ap);
        return execvpe(file, argv, environ);
}

_public_ int execle(const char *path, const char *arg, ...) {
        va_list ap;
        va_start(ap, arg);
        COLLECT_ARGS(arg, ap, argv, 0);
        char *const *envp = va_arg(ap, char *const *);
        va_end(ap);
        return execve(path, argv, envp);
}

_public_ int posix_spawn(pid_t *pid, const char *path, const posix_spawn_file_actions_t *fa,
                         const posix_spawnattr_t *attr, char *const argv[], char *const envp[]) {
        RESOLVE(real_posix_spawn, "posix_spawn");
        int r = -1;
        WITH_ENV(envp, false, r = real_posix_spawn(pid, path, fa, attr, argv, new_env));
        return r;
}

_public_ int posix_spawnp(pid_t *pid, const char *file, const posix_spawn_file_actions_t *fa,
                          const posix_spawnattr_t *attr, char *const argv[], char *const envp[]) {
        RESOLVE(real_posix_spawnp, "posix_spawnp");
        int r = -1;
        WITH_ENV(envp, false, r = real_posix_spawnp(pid, file, fa, attr, argv, new_env));
        return r;
}

/* After a restart the coordinator's address and the inherited descriptors
 * differ from what the program's environment says, and system() and popen()
 * pass that environment on as it is (glibc calls its own posix_spawn, not
 * ours). Point the entries at current values before the program runs
 * again, or a child it starts at once would look for the old coordinator.
 *
 * In two steps. While the threads are parked nothing may allocate (a parked
 * thread may hold malloc's lock): the entries point at strings of ours, in
 * static storage. Once the threads run, each entry that still points there
 * gets a copy from malloc, since programs may free or replace their
 * environment's strings (perl does). The old strings are left alone: we do
 * not know who owns them. */
static char env_coord[PATH_MAX + 32];
static char env_external[RT_MAX_EXTERNAL_FDS * 48 + 32];

void rt_env_before_resume(void) {
        char addr[PATH_MAX + 16], fds[RT_MAX_EXTERNAL_FDS * 48 + 32];
        rt_coord_addr_format(&rt.cfg.coord, addr, sizeof addr);
        format_external(fds, sizeof fds);
        snprintf(env_coord, sizeof env_coord, "DMTCP_COORD=%s", addr);
        snprintf(env_external, sizeof env_external, "DMTCP_EXTERNAL_FDS=%s", fds);
        bool coord = false, ext = false;
        for (size_t i = 0; environ && environ[i]; i++) {
                if (!coord && is_key(environ[i], "DMTCP_COORD")) {
                        environ[i] = env_coord;
                        coord = true;
                } else if (!ext && is_key(environ[i], "DMTCP_EXTERNAL_FDS")) {
                        environ[i] = env_external;
                        ext = true;
                }
        }
}

void rt_env_after_restart(void) {
        for (size_t i = 0; environ && environ[i]; i++) {
                if (environ[i] != env_coord && environ[i] != env_external)
                        continue;
                char *copy = strdup(environ[i]);
                if (copy)
                        environ[i] = copy;
        }
}
