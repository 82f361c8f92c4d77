/* Process-wide kernel state that is not in memory: the mm layout fields
 * (for PR_SET_MM_MAP at restore: brk, argv/environ, auxv, exe), cwd, umask,
 * rlimits, personality, capabilities and prctl settings. Captured while
 * threads are suspended; suspended-safe. */
#include <fcntl.h>
#include <linux/capability.h>
#include <string.h>
#include <sys/personality.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include "raw-syscall.h"
#include "rt.h"
#include "util.h"

/* Field n (1-based, as in proc(5)) of /proc/self/stat. */
static int stat_fields(uint64_t *out, const int *which, size_t n) {
        char buf[2048];
        ssize_t len = read_small_file("/proc/self/stat", buf, sizeof buf);
        if (len < 0)
                return (int) len;
        char *p = strrchr(buf, ')');
        if (!p)
                return -EINVAL;
        p += 2; /* field 3 starts here */
        uint64_t vals[64] = { 0 };
        int field = 3;
        while (*p && field < 64) {
                char *end;
                if (field == 3)
                        vals[field] = 0, end = p + 1;
                else
                        vals[field] = strtoull(p, &end, 10);
                p = end;
                while (*p == ' ')
                        p++;
                field++;
        }
        for (size_t i = 0; i < n; i++)
                out[i] = which[i] < 64 ? vals[which[i]] : 0;
        return 0;
}

int rt_proc_capture(struct img_process *p, char *exe, size_t exesize, char *cwd, size_t cwdsize,
                    uint8_t *auxv, size_t *auxv_len, char *err, size_t errsize) {
        static const int which[] = { 26, 27, 28, 45, 46, 47, 48, 49, 50, 51 };
        uint64_t v[ARRAY_SIZE(which)];
        int r = stat_fields(v, which, ARRAY_SIZE(which));
        if (r < 0) {
                snprintf(err, errsize, "cannot read /proc/self/stat: %s", strerror(-r));
                return r;
        }
        p->start_code = v[0];
        p->end_code = v[1];
        p->start_stack = v[2];
        p->start_data = v[3];
        p->end_data = v[4];
        p->start_brk = v[5];
        p->arg_start = v[6];
        p->arg_end = v[7];
        p->env_start = v[8];
        p->env_end = v[9];
        p->brk = (uint64_t) raw_syscall1(SYS_brk, 0);

        ssize_t n = raw_syscall3(SYS_readlink, (long) "/proc/self/exe", (long) exe, (long) exesize - 1);
        if (n < 0)
                n = 0;
        exe[n] = 0;
        p->exe_len = (uint32_t) n;
        n = raw_syscall2(SYS_getcwd, (long) cwd, (long) cwdsize);
        if (n <= 0) {
                snprintf(err, errsize, "cannot read the current directory: %s", strerror((int) -n));
                return n < 0 ? (int) n : -EIO;
        }
        p->cwd_len = (uint32_t) strlen(cwd);

        int fd = (int) raw_syscall4(SYS_openat, AT_FDCWD, (long) "/proc/self/auxv", O_RDONLY | O_CLOEXEC, 0);
        *auxv_len = 0;
        if (fd >= 0) {
                long k = raw_syscall3(SYS_read, fd, (long) auxv, 2048);
                raw_syscall1(SYS_close, fd);
                if (k > 0)
                        *auxv_len = (size_t) k & ~15UL;
        }

        for (int res = 0; res < 16; res++) {
                struct rlimit rl;
                if (raw_syscall4(SYS_prlimit64, 0, res, 0, (long) &rl) == 0) {
                        p->rlimit[res][0] = rl.rlim_cur;
                        p->rlimit[res][1] = rl.rlim_max;
                } else
                        p->rlimit[res][0] = p->rlimit[res][1] = RLIM_INFINITY;
        }
        /* umask(2) can only be read by setting it; nobody runs meanwhile. */
        uint32_t um = (uint32_t) raw_syscall1(SYS_umask, 022);
        raw_syscall1(SYS_umask, um);
        p->umask = um;
        p->personality = (uint32_t) raw_syscall1(SYS_personality, 0xffffffff);
        p->dumpable = (uint32_t) raw_syscall2(SYS_prctl, PR_GET_DUMPABLE, 0);
        p->no_new_privs = (uint32_t) raw_syscall5(SYS_prctl, PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0);
        long thp = raw_syscall5(SYS_prctl, PR_GET_THP_DISABLE, 0, 0, 0, 0);
        p->thp_disable = thp > 0 ? 1 : 0;
        int sub = 0, pdeath = 0;
        raw_syscall2(SYS_prctl, PR_GET_CHILD_SUBREAPER, (long) &sub);
        raw_syscall2(SYS_prctl, PR_GET_PDEATHSIG, (long) &pdeath);
        p->child_subreaper = (uint32_t) sub;
        p->pdeath_signal = (uint32_t) pdeath;
        long slack = raw_syscall5(SYS_prctl, PR_GET_TIMERSLACK, 0, 0, 0, 0);
        p->timerslack_ns = slack > 0 ? (uint64_t) slack : 0;
        p->ckpt_signal = (uint32_t) rt.cfg.sigckpt;

        struct __user_cap_header_struct hdr = { _LINUX_CAPABILITY_VERSION_3, 0 };
        struct __user_cap_data_struct data[2] = { 0 };
        if (raw_syscall2(SYS_capget, (long) &hdr, (long) data) == 0) {
                p->cap_effective = data[0].effective | ((uint64_t) data[1].effective << 32);
                p->cap_permitted = data[0].permitted | ((uint64_t) data[1].permitted << 32);
                p->cap_inheritable = data[0].inheritable | ((uint64_t) data[1].inheritable << 32);
        }
        char status[8192];
        if (read_small_file("/proc/self/status", status, sizeof status) > 0) {
                const char *q = strstr(status, "\nCapAmb:");
                if (q)
                        p->cap_ambient = strtoull(q + 8, NULL, 16);
                q = strstr(status, "\nSeccomp_filters:");
                int filters = q ? (int) strtol(q + 17, NULL, 10) : 0;
                if (filters > rt.seccomp_filters_at_launch) {
                        snprintf(err, errsize,
                                 "the program installed a seccomp filter, which cannot be checkpointed");
                        return -EOPNOTSUPP;
                }
        }
        p->rst_incoming = (uint64_t) &rt_incoming;
        return 0;
}

/* Restore what the restorer did not (it did the mm fields, auxv, exe,
 * capabilities and dumpability). Called in the restored process. */
int rt_proc_restore(void) {
        const struct img_process *p = &rt_cap->proc;
        if (raw_syscall1(SYS_chdir, (long) rt_cap->cwd) < 0)
                rt_warn("cannot return to the working directory %s; staying in the current one", rt_cap->cwd);
        raw_syscall1(SYS_umask, p->umask);
        for (int res = 0; res < 16; res++) {
                struct rlimit rl = { p->rlimit[res][0], p->rlimit[res][1] };
                long r = raw_syscall4(SYS_prlimit64, 0, res, (long) &rl, 0);
                if (r < 0) {
                        /* A lower hard limit here: keep the soft limit within it. */
                        struct rlimit cur;
                        if (raw_syscall4(SYS_prlimit64, 0, res, 0, (long) &cur) == 0) {
                                rl.rlim_max = cur.rlim_max;
                                if (rl.rlim_cur > rl.rlim_max)
                                        rl.rlim_cur = rl.rlim_max;
                                raw_syscall4(SYS_prlimit64, 0, res, (long) &rl, 0);
                        }
                }
        }
        if ((uint32_t) raw_syscall1(SYS_personality, 0xffffffff) != p->personality)
                raw_syscall1(SYS_personality, p->personality);
        if (p->no_new_privs)
                raw_syscall5(SYS_prctl, PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
        raw_syscall5(SYS_prctl, PR_SET_THP_DISABLE, p->thp_disable, 0, 0, 0);
        raw_syscall2(SYS_prctl, PR_SET_CHILD_SUBREAPER, p->child_subreaper);
        raw_syscall2(SYS_prctl, PR_SET_PDEATHSIG, p->pdeath_signal);
        if (p->timerslack_ns)
                raw_syscall2(SYS_prctl, PR_SET_TIMERSLACK, (long) p->timerslack_ns);
        return 0;
}
