/* The restorer: a small position-independent blob with no libc, copied into
 * the bootstrap area of the process being restored and entered with the
 * plan (plan.h). It removes the restart tool's own mappings, moves the
 * kernel's vdso/vvar to where the image had them, builds the image's address
 * space from staged memory and files, sets the kernel's mm fields, recreates
 * every thread under its original id, gives up any capability the process
 * did not have, and resumes each thread at its saved context.
 *
 * Rules: no libc, no TLS, no stack protector, no global data with pointers
 * (the build checks there is not a single relocation), only the system
 * calls in raw-syscall.h. On any failure it writes one line and exits the
 * process with DMTCP_FAIL_RC: never a signal. */
#include <stddef.h>
#include <stdint.h>
#include <linux/capability.h>
#include <linux/prctl.h>
#include <linux/sched.h>
#include <sys/mman.h>

#include "plan.h"
#include "raw-syscall.h"

#ifndef MAP_FIXED_NOREPLACE
#define MAP_FIXED_NOREPLACE 0x100000
#endif
#ifndef MREMAP_MAYMOVE
#define MREMAP_MAYMOVE 1
#define MREMAP_FIXED 2
#endif
#define ARCH_SET_GS 0x1001
#define ARCH_SET_FS 0x1002

/* restorer-entry.S */
#define HIDDEN __attribute__((visibility("hidden")))
HIDDEN long rst_clone3_thread(void *args, unsigned long size, struct plan_thread *t, struct plan *p);
HIDDEN __attribute__((noreturn)) void rst_jump_ctx(uint64_t ctx);

void *memcpy(void *dst, const void *src, size_t n);
void *memset(void *dst, int c, size_t n);
void rst_main(struct plan *p);
__attribute__((noreturn)) void rst_thread_main(struct plan_thread *t, struct plan *p);

/* gcc may turn loops into these calls; the blob brings its own. */
void *memcpy(void *dst, const void *src, size_t n) {
        unsigned char *d = dst;
        const unsigned char *s = src;
        if (((uintptr_t) d | (uintptr_t) s | n) % 8 == 0) {
                uint64_t *d8 = dst;
                const uint64_t *s8 = src;
                for (size_t i = 0; i < n / 8; i++)
                        d8[i] = s8[i];
                return dst;
        }
        for (size_t i = 0; i < n; i++)
                d[i] = s[i];
        return dst;
}

void *memset(void *dst, int c, size_t n) {
        unsigned char *d = dst;
        for (size_t i = 0; i < n; i++)
                d[i] = (unsigned char) c;
        return dst;
}

static size_t slen(const char *s) {
        size_t n = 0;
        while (s[n])
                n++;
        return n;
}

static void put_hex(char *buf, size_t *o, uint64_t v) {
        char tmp[16];
        int n = 0;
        do {
                tmp[n++] = "0123456789abcdef"[v & 15];
                v >>= 4;
        } while (v);
        while (n)
                buf[(*o)++] = tmp[--n];
}

static void put_dec(char *buf, size_t *o, int64_t v) {
        char tmp[24];
        int n = 0;
        if (v < 0) {
                buf[(*o)++] = '-';
                v = -v;
        }
        do {
                tmp[n++] = (char) ('0' + v % 10);
                v /= 10;
        } while (v);
        while (n)
                buf[(*o)++] = tmp[--n];
}

/* "dmtcp restorer: <what> at <addr>: error <n>" to stderr and the status
 * pipe, then exit with the failure code. */
__attribute__((noreturn)) static void die(const struct plan *p, const char *what, uint64_t addr, long err) {
        char buf[256];
        size_t o = 0;
        buf[o++] = 'E';
        const char *pre = "restorer: ";
        for (size_t i = 0; pre[i]; i++)
                buf[o++] = pre[i];
        size_t n = slen(what);
        for (size_t i = 0; i < n && o < 180; i++)
                buf[o++] = what[i];
        buf[o++] = ' ';
        buf[o++] = '0';
        buf[o++] = 'x';
        put_hex(buf, &o, addr);
        const char *mid = ": error ";
        for (size_t i = 0; mid[i]; i++)
                buf[o++] = mid[i];
        put_dec(buf, &o, -err);
        buf[o++] = '\n';
        if (p->status_fd >= 0)
                raw_syscall3(SYS_write, p->status_fd, (long) buf, (long) o);
        const char *tag = "dmtcp_restart: ";
        raw_syscall3(SYS_write, 2, (long) tag, (long) slen(tag));
        raw_syscall3(SYS_write, 2, (long) (buf + 1), (long) (o - 1));
        raw_syscall1(SYS_exit_group, p->fail_rc);
        for (;;)
                ;
}

static void check(const struct plan *p, long r, const char *what, uint64_t addr) {
        if (r < 0 && r > -4096)
                die(p, what, addr, r);
}

static void set_caps(const struct plan *p) {
        struct __user_cap_header_struct hdr = { _LINUX_CAPABILITY_VERSION_3, 0 };
        struct __user_cap_data_struct data[2];
        data[0].effective = (uint32_t) p->cap_effective;
        data[1].effective = (uint32_t) (p->cap_effective >> 32);
        data[0].permitted = (uint32_t) p->cap_permitted;
        data[1].permitted = (uint32_t) (p->cap_permitted >> 32);
        data[0].inheritable = (uint32_t) p->cap_inheritable;
        data[1].inheritable = (uint32_t) (p->cap_inheritable >> 32);
        /* Only ever a subset of what we have: capset refuses anything else. */
        struct __user_cap_data_struct cur[2];
        if (raw_syscall2(SYS_capget, (long) &hdr, (long) cur) == 0) {
                for (int i = 0; i < 2; i++) {
                        data[i].permitted &= cur[i].permitted;
                        data[i].effective &= data[i].permitted;
                        data[i].inheritable &= cur[i].inheritable | cur[i].permitted;
                }
        }
        hdr.pid = 0;
        check(p, raw_syscall2(SYS_capset, (long) &hdr, (long) data), "cannot set capabilities", 0);
        raw_syscall5(SYS_prctl, PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
        for (int c = 0; c < 64; c++)
                if (p->cap_ambient & (1ULL << c))
                        raw_syscall5(SYS_prctl, PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, c, 0, 0);
}

__attribute__((noreturn)) void rst_thread_main(struct plan_thread *t, struct plan *p) {
        if (t->gs_base)
                raw_syscall2(SYS_arch_prctl, ARCH_SET_GS, (long) t->gs_base);
        set_caps(p);
        __atomic_fetch_add(&p->threads_started, 1, __ATOMIC_SEQ_CST);
        rst_jump_ctx(t->ctx);
}

static void run_op(const struct plan *p, const struct plan_op *op) {
        long r;
        switch (op->kind) {
        case PLAN_MAP_ANON:
                r = raw_syscall6(SYS_mmap, (long) op->dst, (long) op->len, op->prot,
                                 op->flags | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
                check(p, r, "cannot map memory", op->dst);
                if ((uint64_t) r != op->dst)
                        die(p, "memory mapped at the wrong place", op->dst, -1);
                break;
        case PLAN_MAP_FILE:
                r = raw_syscall6(SYS_mmap, (long) op->dst, (long) op->len, op->prot,
                                 op->flags | MAP_FIXED_NOREPLACE, op->fd, (long) op->off);
                check(p, r, "cannot map a file", op->dst);
                if ((uint64_t) r != op->dst)
                        die(p, "file mapped at the wrong place", op->dst, -1);
                break;
        case PLAN_MAP_OVER:
                r = raw_syscall6(SYS_mmap, (long) op->dst, (long) op->len, op->prot, op->flags | MAP_FIXED, op->fd,
                                 (long) op->off);
                check(p, r, "cannot map the image", op->dst);
                break;
        case PLAN_MOVE:
                r = raw_syscall5(SYS_mremap, (long) op->src, (long) op->len, (long) op->len,
                                 MREMAP_MAYMOVE | MREMAP_FIXED, (long) op->dst);
                check(p, r, "cannot move memory", op->dst);
                break;
        case PLAN_COPY:
                memcpy((void *) op->dst, (const void *) op->src, op->len);
                break;
        case PLAN_ZERO:
                memset((void *) op->dst, 0, op->len);
                break;
        case PLAN_PROTECT:
                check(p, raw_syscall3(SYS_mprotect, (long) op->dst, (long) op->len, op->prot),
                      "cannot protect memory", op->dst);
                break;
        case PLAN_ADVISE:
                /* Best effort: an advice the kernel lacks changes no contents. */
                raw_syscall3(SYS_madvise, (long) op->dst, (long) op->len, op->advice);
                break;
        case PLAN_UNMAP:
                raw_syscall2(SYS_munmap, (long) op->src, (long) op->len);
                break;
        case PLAN_CLOSE:
                raw_syscall1(SYS_close, op->fd);
                break;
        case PLAN_DUP:
                r = raw_syscall5(SYS_mremap, (long) op->src, 0, (long) op->len, MREMAP_MAYMOVE | MREMAP_FIXED,
                                 (long) op->dst);
                check(p, r, "cannot map shared memory", op->dst);
                break;
        case PLAN_SHMAT:
                r = raw_syscall3(SYS_shmat, op->fd, (long) op->dst, op->flags);
                check(p, r, "cannot attach System V shared memory", op->dst);
                if ((uint64_t) r != op->dst)
                        die(p, "System V shared memory attached at the wrong place", op->dst, -1);
                break;
        default:
                die(p, "unknown plan step", op->kind, -1);
        }
}

void rst_main(struct plan *p) {
        if (p->magic != PLAN_MAGIC)
                die(p, "bad plan", 0, -1);

        /* 1. The restart tool's own memory (libc, heap, stack) goes. */
        for (uint32_t i = 0; i < p->n_unmap; i++)
                raw_syscall2(SYS_munmap, (long) p->unmap[i].start, (long) (p->unmap[i].end - p->unmap[i].start));

        /* 2. The kernel's vdso and vvar move to where the image had them,
         *    through a staging spot so moves never overlap. */
        uint64_t stage = p->vdso_stage;
        for (uint32_t i = 0; i < p->n_special; i++) {
                long r = raw_syscall5(SYS_mremap, (long) p->special[i].from, (long) p->special[i].len,
                                      (long) p->special[i].len, MREMAP_MAYMOVE | MREMAP_FIXED, (long) stage);
                check(p, r, "cannot move the vdso", p->special[i].from);
                p->special[i].from = stage;
                stage += p->special[i].len;
        }
        for (uint32_t i = 0; i < p->n_special; i++) {
                long r = raw_syscall5(SYS_mremap, (long) p->special[i].from, (long) p->special[i].len,
                                      (long) p->special[i].len, MREMAP_MAYMOVE | MREMAP_FIXED, (long) p->special[i].to);
                check(p, r, "cannot move the vdso", p->special[i].to);
        }

        /* 3. The image's address space. */
        for (uint32_t i = 0; i < p->n_ops; i++)
                run_op(p, &p->ops[i]);

        /* 4. The kernel's view of the layout: brk, argv, environ, auxv, exe. */
        p->mm.auxv = (uint64_t) p->auxv;
        long r = raw_syscall5(SYS_prctl, PR_SET_MM, PR_SET_MM_MAP, (long) &p->mm, sizeof p->mm, 0);
        if (r < 0 && p->mm.exe_fd != (uint32_t) -1) {
                /* Without the right to replace /proc/self/exe, keep the rest. */
                p->mm.exe_fd = (uint32_t) -1;
                r = raw_syscall5(SYS_prctl, PR_SET_MM, PR_SET_MM_MAP, (long) &p->mm, sizeof p->mm, 0);
        }
        if (r < 0) {
                const char *w = "dmtcp_restart: warning: cannot restore the process layout (PR_SET_MM_MAP); "
                                "/proc/self/cmdline and the heap break may differ\n";
                raw_syscall3(SYS_write, 2, (long) w, (long) slen(w));
        }
        raw_syscall2(SYS_prctl, PR_SET_DUMPABLE, p->dumpable);

        /* 5. Hand-off to the restored runtime. */
        *(volatile uint64_t *) p->incoming_var = p->incoming;

        /* 6. Threads, each under its own id (clone3 set_tid), then ourselves. */
        struct plan_thread *leader = 0;
        for (uint32_t i = 0; i < p->n_threads; i++) {
                struct plan_thread *t = &p->threads[i];
                if (t->leader) {
                        leader = t;
                        continue;
                }
                int32_t tid = (int32_t) t->tid;
                struct clone_args args;
                memset(&args, 0, sizeof args);
                args.flags = CLONE_VM | CLONE_FS | CLONE_FILES | CLONE_SIGHAND | CLONE_THREAD | CLONE_SYSVSEM |
                             CLONE_SETTLS;
                args.stack = t->stack_top - 16384;
                args.stack_size = 16384;
                args.tls = t->fs_base;
                args.set_tid = (uint64_t) &tid;
                args.set_tid_size = 1;
                long r2 = rst_clone3_thread(&args, sizeof args, t, p);
                check(p, r2, "cannot recreate thread", t->tid);
        }
        if (!leader)
                die(p, "no main thread in the plan", 0, -1);
        check(p, raw_syscall2(SYS_arch_prctl, ARCH_SET_FS, (long) leader->fs_base), "cannot set the thread pointer", 0);
        rst_thread_main(leader, p);
}
