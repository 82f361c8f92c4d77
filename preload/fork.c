/* Processes of a computation. A child created by fork re-initializes the
 * runtime (pthread_atfork) and joins the coordinator from its own new
 * checkpoint thread, so fork costs no round trip. A program started by exec
 * (posix_spawn, system, popen, or fork+exec) joins from its constructor.
 *
 * For a checkpoint to be consistent, a process must not be saved without
 * the children it knows of. So during SUSPEND, once its own threads are
 * stopped, each process lists its children from the kernel and waits until
 * every one that runs under the runtime is a member of the checkpoint in
 * flight (WHO_IS), or between an exec and its new image joining, which the
 * coordinator holds the place of. Children that exited but were not reaped
 * are recorded with their status, for the restart to recreate. */
#include <dirent.h>
#include <elf.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>

#include "client.h"
#include "raw-syscall.h"
#include "rt.h"
#include "util.h"

#define CHILD_JOIN_TIMEOUT_USEC (20ULL * 1000000ULL)

void rt_atfork_child(void) {
        if (!rt.initialized)
                return;
        /* The parent's connection and other descriptors of its runtime (a
         * snapshot writer's pipe) are not ours, nor the program's. */
        rt_fds_close_private();
        /* A fork while our parent's checkpoint thread was starting a
         * checkpoint (before it stopped the threads): none runs here. */
        atomic_store(&rt.ckpt_active, 0);
        atomic_store(&rt.crit, 0);
        atomic_store(&rt.exec_pending, 0);
        rt.pid = (pid_t) raw_getpid();
        rt.ckpt_tid = 0;
        rt_threads_forget_all();
        rt_signals_atfork_child();
        atomic_store(&rt.n_suspended, 0);
        rt_new_upid();
        int r = rt_ckpt_thread_start();
        if (r < 0)
                rt_error("the child %d cannot start its checkpoint thread (%s); it will not be checkpointed",
                         (int) rt.pid, strerror(-r));
}

/* Our children: /proc/self/task/TID/children for every thread. Runs while
 * threads are suspended: raw getdents64, no allocation. */
static int list_children(pid_t *out, int max) {
        int dfd = (int) raw_syscall4(SYS_openat, AT_FDCWD, (long) "/proc/self/task", O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0);
        if (dfd < 0)
                return dfd;
        int n = 0;
        char dents[8192], path[96], buf[16384];
        for (;;) {
                long k = raw_syscall3(SYS_getdents64, dfd, (long) dents, sizeof dents);
                if (k <= 0)
                        break;
                for (long o = 0; o < k;) {
                        struct dirent64 *de = (struct dirent64 *) (dents + o);
                        o += de->d_reclen;
                        if (de->d_name[0] == '.')
                                continue;
                        snprintf(path, sizeof path, "/proc/self/task/%s/children", de->d_name);
                        if (read_small_file(path, buf, sizeof buf) < 0)
                                continue;
                        for (char *p = buf; *p && n < max;) {
                                char *end;
                                long pid = strtol(p, &end, 10);
                                if (end == p)
                                        break;
                                out[n++] = (pid_t) pid;
                                p = end;
                                while (*p == ' ' || *p == '\n')
                                        p++;
                        }
                }
        }
        raw_syscall1(SYS_close, dfd);
        return n;
}

/* What /proc/PID/stat (or a thread's) tells. Fields (proc(5)): 3 state,
 * 9 flags, 23 vsize, 26 startcode, 51 env_end. */
struct task_stat {
        char state;                     /* 0: gone */
        bool exiting;                   /* PF_EXITING: in exit(), memory and descriptors going */
        bool execing;                   /* its new memory has no environment yet: inside execve */
};

#define PF_EXITING 0x00000004

static struct task_stat task_stat(const char *path) {
        struct task_stat ts = { 0 };
        char buf[2048];
        if (read_small_file(path, buf, sizeof buf) < 0)
                return ts;
        char *p = strrchr(buf, ')');
        if (!p || p[1] != ' ')
                return ts;
        ts.state = p[2];
        unsigned long long flags = 0, vsize = 0, start_code = 0, env_end = 0;
        p += 2;
        for (int field = 3; field <= 51 && *p; field++) {
                char *end;
                unsigned long long v = strtoull(p, &end, 10);
                if (field == 9)
                        flags = v;
                else if (field == 23)
                        vsize = v;
                else if (field == 26)
                        start_code = v;
                else if (field == 51)
                        env_end = v;
                p = strchr(end, ' ');
                if (!p)
                        break;
                p++;
        }
        ts.exiting = flags & PF_EXITING;
        /* The kernel shows the memory fields only to who may read the
         * process's memory (start_code reads 1 to others), and env_end is
         * set when execve lays out the new stack: memory without an
         * environment is an exec between switching memories and that. */
        ts.execing = !ts.exiting && vsize > 0 && start_code != 1 && env_end == 0;
        return ts;
}

static struct task_stat child_stat(pid_t pid) {
        char path[64];
        snprintf(path, sizeof path, "/proc/%d/stat", (int) pid);
        return task_stat(path);
}

/* Has the thread been told to die (SIGKILL pending: exit_group or a fatal
 * signal of its process)? */
static bool thread_killed(pid_t pid, const char *tid) {
        char path[96], buf[8192];
        snprintf(path, sizeof path, "/proc/%d/task/%s/status", (int) pid, tid);
        if (read_small_file(path, buf, sizeof buf) < 0)
                return true;    /* gone */
        const char *p = strstr(buf, "\nSigPnd:");
        if (!p)
                return false;
        unsigned long long pending = strtoull(p + strlen("\nSigPnd:"), NULL, 16);
        return pending & (1ULL << (SIGKILL - 1));
}

/* A child whose main thread is a zombie but which the kernel does not let
 * us wait for yet: other threads of it remain (the checkpoint thread of a
 * program under the runtime, at least). Is the whole process ending, every
 * other thread exiting or killed, so that it will be a zombie to record in
 * a moment? Or did only its main thread end (pthread_exit) while the others
 * run on? */
static bool process_ending(pid_t pid) {
        char path[64];
        snprintf(path, sizeof path, "/proc/%d/task", (int) pid);
        int dfd = (int) raw_syscall4(SYS_openat, AT_FDCWD, (long) path, O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0);
        if (dfd < 0)
                return true;
        bool ending = true;
        char dents[4096], tpath[96];
        long k;
        while (ending && (k = raw_syscall3(SYS_getdents64, dfd, (long) dents, sizeof dents)) > 0) {
                for (long o = 0; ending && o < k;) {
                        struct dirent64 *de = (struct dirent64 *) (dents + o);
                        o += de->d_reclen;
                        if (de->d_name[0] == '.' || atoi(de->d_name) == pid)
                                continue;
                        snprintf(tpath, sizeof tpath, "/proc/%d/task/%s/stat", (int) pid, de->d_name);
                        struct task_stat ts = task_stat(tpath);
                        if (ts.state == 0 || ts.state == 'Z' || ts.state == 'X' || ts.exiting)
                                continue;
                        ending = thread_killed(pid, de->d_name);
                }
        }
        raw_syscall1(SYS_close, dfd);
        return ending;
}

/* Does the process run under the runtime (our library mapped)? Reads its
 * maps in chunks, no allocation. */
static bool runs_runtime(pid_t pid) {
        static const char needle[] = "/libdmtcp.so";
        static char buf[65536 + sizeof needle];
        char path[64];
        snprintf(path, sizeof path, "/proc/%d/maps", (int) pid);
        int fd = (int) raw_syscall4(SYS_openat, AT_FDCWD, (long) path, O_RDONLY | O_CLOEXEC, 0);
        if (fd < 0)
                return false;
        size_t keep = 0;
        bool found = false;
        for (;;) {
                long k = raw_syscall3(SYS_read, fd, (long) (buf + keep), 65536);
                if (k <= 0)
                        break;
                size_t len = keep + (size_t) k;
                if (memmem(buf, len, needle, sizeof needle - 1)) {
                        found = true;
                        break;
                }
                keep = MIN(len, sizeof needle - 1);
                memmove(buf, buf + len - keep, keep);
        }
        raw_syscall1(SYS_close, fd);
        return found;
}

static void proc_comm(pid_t pid, char *buf, size_t size) {
        char path[64];
        snprintf(path, sizeof path, "/proc/%d/comm", (int) pid);
        if (read_small_file(path, buf, size) > 0)
                buf[strcspn(buf, "\n")] = 0;
        else
                strscpy(buf, "?", size);
}

static bool who_match(const struct proto_msg *reply, const void *pid) {
        return reply->u.who.pid == *(const uint32_t *) pid;
}

/* Ask the coordinator about one process. -ECANCELED: the checkpoint was
 * aborted or we are killed meanwhile (rt_recv has the message). */
static int who_is(pid_t pid, uint8_t *status) {
        struct proto_msg m;
        proto_init(&m, PROTO_WHO_IS);
        uint32_t p = (uint32_t) pid;
        m.u.who_is.pid = p;
        strscpy(m.u.who_is.host, host_name(), sizeof m.u.who_is.host);
        int r = rt_exchange(&m, PROTO_WHO, who_match, &p);
        if (r == 0)
                *status = m.u.who.status;
        return r == -ECANCELED ? r : r < 0 ? -ECONNRESET : 0;
}

/* A child that has just exec'd shows no runtime in its maps until the
 * dynamic loader has mapped it: will it? Its environment has our library in
 * LD_PRELOAD (exec passes it on), its program is dynamic (an interpreter),
 * and it is not set-user or set-group-id (the loader would ignore
 * LD_PRELOAD). */
static bool will_run_runtime(pid_t pid) {
        static char env[256 * 1024];
        char path[64];
        snprintf(path, sizeof path, "/proc/%d/environ", (int) pid);
        ssize_t n = read_small_file(path, env, sizeof env);
        if (n <= 0)
                return false;
        bool preload = false;
        for (const char *p = env; p < env + n; p += strlen(p) + 1)
                if (!strncmp(p, "LD_PRELOAD=", 11) && strstr(p, "/libdmtcp.so"))
                        preload = true;
        if (!preload)
                return false;
        snprintf(path, sizeof path, "/proc/%d/exe", (int) pid);
        int fd = (int) raw_syscall4(SYS_openat, AT_FDCWD, (long) path, O_RDONLY | O_CLOEXEC, 0);
        if (fd < 0)
                return false;
        struct stat st;
        Elf64_Ehdr eh;
        bool dynamic = false;
        if (fstat(fd, &st) == 0 && !(st.st_mode & (S_ISUID | S_ISGID)) && pread_full(fd, &eh, sizeof eh, 0) == 0 &&
            !memcmp(eh.e_ident, ELFMAG, SELFMAG) && eh.e_phentsize == sizeof(Elf64_Phdr) && eh.e_phnum < 256) {
                Elf64_Phdr ph[256];
                if (pread_full(fd, ph, eh.e_phnum * sizeof(Elf64_Phdr), (off_t) eh.e_phoff) == 0)
                        for (int i = 0; i < eh.e_phnum; i++)
                                dynamic |= ph[i].p_type == PT_INTERP;
        }
        raw_syscall1(SYS_close, fd);
        return dynamic;
}

static bool recorded_zombie(pid_t pid) {
        for (uint32_t i = 0; i < rt_cap->n_children; i++)
                if (rt_cap->children[i].pid == (uint32_t) pid)
                        return true;
        return false;
}

/* Settle every child: an exited one (zombie) is recorded, one under the
 * runtime must be a member of the checkpoint in flight. after_suspend: the
 * coordinator said everyone is suspended, so a child that is neither a
 * zombie nor in the round is on its way out (it ended before it was
 * suspended, and the checkpoint goes on without it): wait for it to become
 * the zombie the restart must recreate. */
static int settle_children(bool after_suspend, char *err, size_t errsize) {
        static pid_t kids[16384];
        int n = list_children(kids, (int) ARRAY_SIZE(kids));
        if (n < 0)
                return 0;
        if (!rt_cap->children) {
                rt_cap->children = rt_alloc(RT_ARENA_STATE, ARRAY_SIZE(kids) * sizeof(struct img_child));
                if (!rt_cap->children)
                        return -ENOMEM;
                rt_cap->n_children = 0;
        }
        uint64_t deadline = now_usec(CLOCK_MONOTONIC) + CHILD_JOIN_TIMEOUT_USEC;
        for (int i = 0; i < n; i++) {
                pid_t pid = kids[i];
                if (recorded_zombie(pid))
                        continue;
                for (;;) {
                        struct task_stat cs = child_stat(pid);
                        char st = cs.state;
                        if (st == 0)
                                break;                  /* gone: reaped by the program meanwhile */
                        if (st == 'Z' || st == 'X') {
                                siginfo_t si = { 0 };
                                if (waitid(P_PID, (id_t) pid, &si, WEXITED | WNOHANG | WNOWAIT | __WALL) == 0 &&
                                    si.si_pid == pid) {
                                        struct img_child *c = &rt_cap->children[rt_cap->n_children++];
                                        *c = (struct img_child) { (uint32_t) pid, si.si_code, si.si_status, 0 };
                                        break;
                                }
                                /* Not waitable: a zombie main thread whose
                                 * process still has threads. Wait for those to
                                 * go if they are going (a checkpoint thread
                                 * outlives the main thread of an ending
                                 * program by a moment); not for a process
                                 * whose main thread alone ended. */
                                if (st == 'Z' && !process_ending(pid))
                                        break;
                        } else if (cs.exiting || cs.execing) {
                                /* Its maps and environment are gone or not
                                 * there yet, so they cannot say whether it runs
                                 * under the runtime: an ending child (whose
                                 * runtime may have left the round already) is
                                 * about to be a zombie to record; an exec'ing
                                 * one will show its new program. Wait. */
                        } else if (!runs_runtime(pid) && !will_run_runtime(pid)) {
                                if (!after_suspend) {
                                        char comm[32];
                                        proc_comm(pid, comm, sizeof comm);
                                        rt_warn("child %d (%s) does not run under dmtcp (static, setuid, or its "
                                                "environment was cleared); it is not part of the checkpoint",
                                                (int) pid, comm);
                                }
                                break;
                        } else {
                                uint8_t status;
                                int r = who_is(pid, &status);
                                if (r < 0)
                                        return r;
                                if (status == PROTO_WHO_IN_ROUND)
                                        break;
                                if (status == PROTO_WHO_MEMBER && !after_suspend) {
                                        snprintf(err, errsize, "child %d is a member outside this checkpoint",
                                                 (int) pid);
                                        return -EPROTO;
                                }
                        }
                        if (now_usec(CLOCK_MONOTONIC) > deadline) {
                                char comm[32];
                                proc_comm(pid, comm, sizeof comm);
                                const char *what = st == 'Z' || st == 'X' || cs.exiting ? "was still ending after"
                                                   : cs.execing   ? "was still starting a program after"
                                                   : after_suspend ? "left the checkpoint but did not end within"
                                                                   : "did not join the computation within";
                                snprintf(err, errsize, "child %d (%s) %s %llu s", (int) pid, comm, what,
                                         CHILD_JOIN_TIMEOUT_USEC / 1000000);
                                return -ETIMEDOUT;
                        }
                        struct timespec ts = { 0, 2 * 1000 * 1000 };
                        nanosleep(&ts, NULL);
                }
        }
        return 0;
}

int rt_wait_children(char *err, size_t errsize) {
        return settle_children(false, err, errsize);
}

int rt_children_after_suspend(char *err, size_t errsize) {
        return settle_children(true, err, errsize);
}
