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

static char proc_state(pid_t pid) {
        char path[64], buf[512];
        snprintf(path, sizeof path, "/proc/%d/stat", (int) pid);
        if (read_small_file(path, buf, sizeof buf) < 0)
                return 0;
        char *p = strrchr(buf, ')');
        return p && p[1] == ' ' ? p[2] : 0;
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
                        char st = proc_state(pid);
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
                                if (st == 'Z')
                                        break;  /* auto-reaped (SIGCHLD ignored) */
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
                                snprintf(err, errsize, after_suspend ? "child %d (%s) left the checkpoint but did not end"
                                                                     : "child %d (%s) did not join the computation within %llu s",
                                         (int) pid, comm, CHILD_JOIN_TIMEOUT_USEC / 1000000);
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
