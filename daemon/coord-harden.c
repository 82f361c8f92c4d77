/* The SIGSYS handler below runs in signal context: it calls only write(2)
 * and touches only its ucontext and stack buffers. */
#include "coord-harden.h"

#include <seccomp.h>
#include <signal.h>
#include <string.h>
#include <sys/capability.h>
#include <sys/prctl.h>
#include <ucontext.h>

#include "log.h"

const char *const coord_denied_syscalls[] = {
        "ptrace", "process_vm_readv", "process_vm_writev",
        "mount", "umount2", "pivot_root",
        "kexec_load", "kexec_file_load",
        "init_module", "finit_module", "delete_module",
        "bpf", "perf_event_open", "reboot", "swapon", "swapoff",
        "iopl", "ioperm", "acct",
        "settimeofday", "clock_settime", "adjtimex",
        "open_by_handle_at", "userfaultfd",
        "add_key", "request_key", "keyctl",
        NULL,
};

int coord_drop_capabilities(void) {
        cap_t cur = cap_get_proc();
        if (!cur)
                return -errno;
        cap_t empty = cap_init();
        if (!empty) {
                int r = -errno;
                cap_free(cur);
                return r;
        }
        int r = 0;
        /* Only call capset when there is something to drop: under
         * SystemCallFilter=~@privileged capset itself is refused, and the
         * unit's CapabilityBoundingSet= has already emptied the sets. */
        if (cap_compare(cur, empty) != 0 && cap_set_proc(empty) < 0)
                r = -errno;
        cap_free(empty);
        cap_free(cur);
        return r;
}

static size_t fmt_uint(char *buf, unsigned long v) {
        char tmp[24];
        size_t n = 0, o = 0;
        do {
                tmp[n++] = (char) ('0' + v % 10);
                v /= 10;
        } while (v);
        while (n)
                buf[o++] = tmp[--n];
        return o;
}

static void sigsys_handler(int sig, siginfo_t *si, void *ctx) {
        ucontext_t *uc = ctx;
        int saved = errno;
        char line[128];
        static const char pre[] = "dmtcp_coordinator: seccomp refused system call ";
        size_t o = 0;
        memcpy(line, pre, sizeof pre - 1);
        o += sizeof pre - 1;
        o += fmt_uint(line + o, (unsigned long) si->si_syscall);
        static const char post[] = " with EPERM\n";
        memcpy(line + o, post, sizeof post - 1);
        o += sizeof post - 1;
        ssize_t w = write(STDERR_FILENO, line, o);
        (void) w;
        /* The trapped call did not run; its return value is what RAX holds
         * when the handler returns. */
        uc->uc_mcontext.gregs[REG_RAX] = -EPERM;
        errno = saved;
        (void) sig;
}

int coord_install_seccomp(void) {
        struct sigaction sa = {
                .sa_sigaction = sigsys_handler,
                .sa_flags = SA_SIGINFO | SA_RESTART,
        };
        sigemptyset(&sa.sa_mask);
        if (sigaction(SIGSYS, &sa, NULL) < 0)
                return -errno;
        sigset_t ss;
        sigemptyset(&ss);
        sigaddset(&ss, SIGSYS);
        if (sigprocmask(SIG_UNBLOCK, &ss, NULL) < 0)
                return -errno;

        scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
        if (!ctx)
                return -ENOMEM;
        int r = 0;
        for (size_t i = 0; coord_denied_syscalls[i]; i++) {
                int nr = seccomp_syscall_resolve_name(coord_denied_syscalls[i]);
                if (nr == __NR_SCMP_ERROR)
                        continue;       /* not a system call on this architecture */
                r = seccomp_rule_add(ctx, SCMP_ACT_TRAP, nr, 0);
                if (r < 0) {
                        log_error_errno(r, "Failed to add seccomp rule for %s: %m", coord_denied_syscalls[i]);
                        break;
                }
        }
        if (r == 0)
                r = seccomp_load(ctx);
        seccomp_release(ctx);
        return r;
}

int coord_harden(void) {
        int r = coord_drop_capabilities();
        if (r < 0)
                return log_error_errno(r, "Failed to drop capabilities: %m");
        r = coord_install_seccomp();
        if (r < 0)
                return log_error_errno(r, "Failed to install the seccomp filter: %m");
        return 0;
}
