/* Quiescing threads. The checkpoint thread sends the checkpoint signal to
 * every other thread listed in /proc/self/task; each one, in the handler,
 * records its per-thread kernel state, saves its resume point (rt_ctx_save)
 * and parks on a futex. The kernel has already saved the interrupted user
 * context (all registers, FPU state, signal mask, alternate stack) in the
 * signal frame on the thread's own stack, so returning from the handler,
 * now or in a restored process, resumes the thread exactly where it was;
 * SA_RESTART system calls are re-issued.
 *
 * /proc/self/task is the source of truth, so threads created by any means
 * (pthread_create, glibc's internal helpers, raw clone) are found, and a
 * thread created or exiting while we suspend is caught by the rescan.
 *
 * The handler and everything it calls is async-signal-safe: raw system
 * calls, no locks, no allocation. */
#include <dirent.h>
#include <fcntl.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/rseq.h>
#include <ucontext.h>

#include "raw-syscall.h"
#include "rt.h"
#include "util.h"

#ifndef ARCH_GET_FS
#define ARCH_SET_GS 0x1001
#define ARCH_SET_FS 0x1002
#define ARCH_GET_FS 0x1003
#define ARCH_GET_GS 0x1004
#endif
#ifndef RSEQ_SIG
#define RSEQ_SIG 0x53053053
#endif

#define SUSPEND_TIMEOUT_USEC (120ULL * 1000000ULL)

struct rt_thread *rt_thread_slot(pid_t tid, bool create) {
        struct rt_thread *free_slot = NULL;
        for (uint32_t i = 0; i < rt.n_threads; i++) {
                struct rt_thread *t = &rt_threads[i];
                uint32_t st = atomic_load(&t->state);
                if (st != RT_TS_FREE && t->tid == (uint32_t) tid)
                        return t;
                if (st == RT_TS_FREE && !free_slot)
                        free_slot = t;
        }
        if (!create)
                return NULL;
        if (!free_slot) {
                if (rt.n_threads >= RT_MAX_THREADS)
                        return NULL;
                free_slot = &rt_threads[rt.n_threads++];
        }
        memset(free_slot, 0, sizeof *free_slot);
        free_slot->tid = (uint32_t) tid;
        atomic_store(&free_slot->state, RT_TS_RUNNING);
        return free_slot;
}

void rt_threads_forget_all(void) {
        for (uint32_t i = 0; i < rt.n_threads; i++)
                atomic_store(&rt_threads[i].state, RT_TS_FREE);
        rt.n_threads = 0;
}

void rt_thread_capture_self(struct rt_thread *t) {
        struct img_thread *ti = &t->info;
        uint64_t v = 0;
        memset(ti, 0, sizeof *ti);
        ti->tid = t->tid;
        raw_syscall2(SYS_arch_prctl, ARCH_GET_FS, (long) &v);
        ti->fs_base = v;
        v = 0;
        raw_syscall2(SYS_arch_prctl, ARCH_GET_GS, (long) &v);
        ti->gs_base = v;
        uint64_t head = 0, len = 0;
        if (raw_syscall3(SYS_get_robust_list, 0, (long) &head, (long) &len) == 0) {
                ti->robust_list = head;
                ti->robust_len = len;
        }
        v = 0;
        if (raw_syscall2(SYS_prctl, PR_GET_TID_ADDRESS, (long) &v) == 0)
                ti->clear_child_tid = v;
        /* glibc registers an rseq area per thread at a fixed offset from the
         * thread pointer; the registration is kernel state that a restored
         * thread must redo. */
        if (__rseq_size > 0) {
                ti->rseq_addr = ti->fs_base + (uint64_t) __rseq_offset;
                ti->rseq_len = __rseq_size <= 32 ? 32 : ALIGN_UP(__rseq_size, 32);
                ti->rseq_sig = RSEQ_SIG;
        }
        raw_syscall2(SYS_prctl, PR_GET_NAME, (long) ti->comm);
        ti->comm[15] = 0;
        stack_t ss;
        if (raw_syscall2(SYS_sigaltstack, 0, (long) &ss) == 0) {
                ti->altstack_sp = (uint64_t) ss.ss_sp;
                ti->altstack_size = ss.ss_size;
                ti->altstack_flags = (uint32_t) ss.ss_flags;
        }
        if (t->tid == (uint32_t) rt.pid)
                ti->flags |= IMG_TF_LEADER;
        if ((pid_t) t->tid == rt.ckpt_tid)
                ti->flags |= IMG_TF_CKPT;
}

void rt_thread_restore_self(struct rt_thread *t) {
        const struct img_thread *ti = &t->info;
        if (ti->robust_list)
                raw_syscall2(SYS_set_robust_list, (long) ti->robust_list, (long) ti->robust_len);
        if (ti->rseq_addr) {
                long r = raw_syscall4(SYS_rseq, (long) ti->rseq_addr, ti->rseq_len, 0, ti->rseq_sig);
                if (r < 0 && r != -EBUSY)
                        rt_warn("thread %u: cannot re-register rseq: %s", ti->tid, strerror((int) -r));
        }
        raw_syscall1(SYS_set_tid_address, (long) ti->clear_child_tid);
        raw_syscall2(SYS_prctl, PR_SET_NAME, (long) ti->comm);
}

/* A signal set of a status file: "SigPnd" of /proc/thread-self/status is
 * the calling thread's private pending set, "ShdPnd" of /proc/self/status
 * the process's. Read with raw system calls: this runs in the signal
 * handler. */
static uint64_t status_sigset(const char *path, const char *field) {
        char buf[4096];
        if (rt_read_proc(path, buf, sizeof buf) <= 0)
                return 0;
        const char *p = strstr(buf, field);
        return p ? strtoull(p + strlen(field), NULL, 16) : 0;
}

uint32_t rt_take_pending(uint64_t set, pid_t tid, struct rt_pending *out, uint32_t max) {
        /* A thread takes one of each: the kernel hands a thread its private
         * signals first, then process-wide ones, which are not its to take.
         * The process (tid 0) takes every queued instance. */
        bool all = tid == 0;
        uint32_t n = 0;
        set &= ~rt_sigckpt_bit() & ~(1ULL << (SIGKILL - 1)) & ~(1ULL << (SIGSTOP - 1));
        for (int sig = 1; sig <= 64 && n < max; sig++) {
                if (!(set & (1ULL << (sig - 1))))
                        continue;
                uint64_t one = 1ULL << (sig - 1);
                struct timespec zero = { 0, 0 };
                /* Real-time signals can be queued several times: take all. */
                while (n < max) {
                        siginfo_t si;
                        long r = raw_syscall4(SYS_rt_sigtimedwait, (long) &one, (long) &si, (long) &zero, 8);
                        if (r != sig)
                                break;
                        out[n].sig = sig;
                        out[n].info = si;
                        n++;
                        if (!all || sig < 32)   /* standard signals are queued once */
                                break;
                }
        }
        rt_requeue(tid, out, n);
        return n;
}

/* Queue signals again, siginfo intact: the kernel lets a process send
 * itself any siginfo. */
void rt_requeue(pid_t tid, const struct rt_pending *p, uint32_t n) {
        pid_t pid = (pid_t) raw_getpid();
        for (uint32_t i = 0; i < n; i++) {
                siginfo_t si = p[i].info;
                long r = tid ? raw_syscall4(SYS_rt_tgsigqueueinfo, pid, tid, p[i].sig, (long) &si)
                             : raw_syscall3(SYS_rt_sigqueueinfo, pid, p[i].sig, (long) &si);
                if (r < 0)
                        raw_syscall3(SYS_tgkill, pid, tid ? tid : pid, p[i].sig);
        }
}

bool rt_thread_ckpt_requested(void) {
        struct rt_thread *t = rt_thread_slot((pid_t) raw_gettid(), false);
        return t && atomic_load(&t->state) == RT_TS_SIGNALED;
}

void rt_sigckpt_handler(int sig, siginfo_t *si, void *ucv) {
        int saved_errno = errno;
        struct rt_thread *t = rt_thread_slot((pid_t) raw_gettid(), false);
        uint32_t expect = RT_TS_SIGNALED;
        /* Signals of one standard number pending at once are delivered once,
         * with the siginfo of the first. So any of them (the program's, or
         * the runtime's wake-up of a sigwait) reaching a thread the
         * checkpoint is stopping stops it, and the program's is then
         * delivered; the checkpoint's own, if it comes after, is dropped.
         * Still lost: a signal from another thread or process that comes
         * second (raise() never reaches the kernel: signals.c). */
        const enum rt_sig_tag tag = rt_sig_tag(si);
        const bool ours = tag != RT_SIG_PROGRAM;
        if (!t || !atomic_compare_exchange_strong(&t->state, &expect, RT_TS_STOPPING)) {
                if (!ours)
                        rt_deliver_app_signal(sig, si, ucv);
                errno = saved_errno;
                return;
        }
        const ucontext_t *uc = ucv;
        rt_thread_capture_self(t);
        memcpy(&t->info.sigmask, &uc->uc_sigmask, sizeof t->info.sigmask);
        /* Our own pending signals, siginfo included (the handler runs with
         * every signal blocked, so they are ours to take and put back). */
        t->n_pending = rt_take_pending(status_sigset("/proc/thread-self/status", "\nSigPnd:"), (pid_t) t->tid,
                                       t->pending, RT_MAX_THREAD_PENDING);
        /* Only the main thread may queue a signal to the process with its
         * original siginfo (the kernel's rule): it keeps the process-wide
         * pending signals. */
        if (t->tid == (uint32_t) rt.pid && rt_cap && rt_cap->pending)
                rt_cap->n_pending = rt_take_pending(status_sigset("/proc/self/status", "\nShdPnd:"), 0,
                                                    rt_cap->pending, RT_MAX_PROCESS_PENDING);
        t->info.sigpending = 0;
        for (uint32_t i = 0; i < t->n_pending; i++)
                t->info.sigpending |= 1ULL << (t->pending[i].sig - 1);
        const uint32_t seq = atomic_load(&rt.release_seq);
        if (rt_ctx_save(&t->ctx) == 0) {
                atomic_store(&t->state, RT_TS_SUSPENDED);
                atomic_fetch_add(&rt.n_suspended, 1);
                raw_futex_wake((uint32_t *) &rt.n_suspended, 1);
        } else {
                /* We are in a restored process, off the restorer's code for
                 * good: tell the checkpoint thread, which unmaps it. */
                t->restored = 1;
                atomic_fetch_add(&rt.rst_arrived, 1);
                raw_futex_wake((uint32_t *) &rt.rst_arrived, 1);
        }

        while (atomic_load(&rt.release_seq) == seq)
                raw_futex_wait((uint32_t *) &rt.release_seq, seq, NULL);

        if (t->restored) {
                rt_thread_restore_self(t);
                rt_requeue((pid_t) t->tid, t->pending, t->n_pending);
                if (t->tid == (uint32_t) rt.pid && rt_cap && rt_cap->n_pending)
                        rt_requeue(0, rt_cap->pending, rt_cap->n_pending);
                t->restored = 0;
        }
        atomic_store(&t->state, RT_TS_RUNNING);
        atomic_fetch_sub(&rt.n_suspended, 1);
        raw_futex_wake((uint32_t *) &rt.n_suspended, 1);
        if (!ours)
                rt_deliver_app_signal(sig, si, ucv);
        errno = saved_errno;
}


int rt_threads_install_handler(void) {
        struct sigaction sa = { 0 };
        sa.sa_sigaction = rt_sigckpt_handler;
        sa.sa_flags = SA_SIGINFO | SA_RESTART;
        sigfillset(&sa.sa_mask);
        if (rt_real_sigaction(rt.cfg.sigckpt, &sa, NULL) < 0)
                return -errno;
        return 0;
}

/* Thread ids from /proc/self/task, via getdents64 into a stack buffer. */
typedef void (*tid_cb)(pid_t tid, void *userdata);

static int for_each_task(tid_cb cb, void *userdata) {
        rt_fork_lock();
        int fd = rt_open_quietly("/proc/self/task", O_RDONLY | O_DIRECTORY);
        if (fd < 0) {
                rt_fork_unlock();
                return fd;
        }
        char buf[8192];
        int r = 0;
        for (;;) {
                long n = raw_syscall3(SYS_getdents64, fd, (long) buf, sizeof buf);
                if (n <= 0) {
                        r = (int) n;
                        break;
                }
                for (long o = 0; o < n;) {
                        struct dirent64 *de = (struct dirent64 *) (buf + o);
                        o += de->d_reclen;
                        uint32_t tid;
                        if (de->d_name[0] != '.' && parse_u32(de->d_name, &tid) == 0)
                                cb((pid_t) tid, userdata);
                }
        }
        raw_syscall1(SYS_close, fd);
        rt_fork_unlock();
        return r;
}

struct scan_state {
        uint32_t signaled;
        int error;
};

static void scan_one(pid_t tid, void *userdata) {
        struct scan_state *s = userdata;
        if (tid == rt.ckpt_tid)
                return;
        struct rt_thread *t = rt_thread_slot(tid, true);
        if (!t) {
                s->error = -ENOSPC;
                return;
        }
        t->scan = rt.scan_seq;
        if (atomic_load(&t->state) != RT_TS_RUNNING)
                return;
        atomic_store(&t->state, RT_TS_SIGNALED);
        long r = rt_send_ckpt_signal(tid);
        if (r == -ESRCH)
                atomic_store(&t->state, RT_TS_FREE);
        else if (r < 0)
                s->error = (int) r;
        else
                s->signaled++;
}

/* Task state letter from /proc/self/task/TID/stat, or 0. */
static char task_state(pid_t tid) {
        char path[64], buf[512];
        snprintf(path, sizeof path, "/proc/self/task/%d/stat", (int) tid);
        if (rt_read_proc(path, buf, sizeof buf) <= 0)
                return 0;
        char *p = strrchr(buf, ')');
        return p && p[1] == ' ' ? p[2] : 0;
}

/* Is the checkpoint signal blocked in that thread for real? */
static bool task_blocks_sigckpt(pid_t tid) {
        char path[64], buf[4096];
        snprintf(path, sizeof path, "/proc/self/task/%d/status", (int) tid);
        if (rt_read_proc(path, buf, sizeof buf) < 0)
                return false;
        const char *p = strstr(buf, "\nSigBlk:");
        if (!p)
                return false;
        uint64_t mask = strtoull(p + 8, NULL, 16);
        return mask & rt_sigckpt_bit();
}

static void thread_desc(pid_t tid, char *buf, size_t size) {
        char path[64], comm[32] = "";
        snprintf(path, sizeof path, "/proc/self/task/%d/comm", (int) tid);
        if (rt_read_proc(path, comm, sizeof comm) > 0)
                comm[strcspn(comm, "\n")] = 0;
        snprintf(buf, size, "thread %d (%s)", (int) tid, comm);
}

int rt_threads_suspend(char *err, size_t errsize) {
        uint64_t start = now_usec(CLOCK_MONOTONIC);
        bool warned_blocked = false;
        for (;;) {
                rt.scan_seq++;
                struct scan_state s = { 0 };
                int r = for_each_task(scan_one, &s);
                if (r < 0 || s.error < 0) {
                        snprintf(err, errsize, "cannot signal threads: %s", strerror(-(r < 0 ? r : s.error)));
                        return r < 0 ? r : s.error;
                }
                /* Slots not seen in this scan belong to threads that exited. */
                for (uint32_t i = 0; i < rt.n_threads; i++) {
                        struct rt_thread *t = &rt_threads[i];
                        uint32_t st = atomic_load(&t->state);
                        if (st != RT_TS_FREE && t->scan != rt.scan_seq && st != RT_TS_SUSPENDED)
                                atomic_store(&t->state, RT_TS_FREE);
                }
                /* Wait until every signalled thread is parked or gone. */
                for (;;) {
                        uint32_t waiting = 0;
                        pid_t stuck = 0;
                        for (uint32_t i = 0; i < rt.n_threads; i++) {
                                struct rt_thread *t = &rt_threads[i];
                                uint32_t st = atomic_load(&t->state);
                                if (st != RT_TS_SIGNALED && st != RT_TS_STOPPING)
                                        continue;
                                if (raw_syscall3(SYS_tgkill, rt.pid, t->tid, 0) == -ESRCH) {
                                        atomic_store(&t->state, RT_TS_FREE);
                                        continue;
                                }
                                waiting++;
                                stuck = (pid_t) t->tid;
                        }
                        if (!waiting)
                                break;
                        uint64_t elapsed = now_usec(CLOCK_MONOTONIC) - start;
                        if (elapsed > 200000 && stuck) {
                                char desc[96];
                                char st = task_state(stuck);
                                if (st == 'Z' || st == 'X') {
                                        thread_desc(stuck, desc, sizeof desc);
                                        snprintf(err, errsize,
                                                 "%s has exited while other threads run (pthread_exit in the main thread), "
                                                 "which cannot be checkpointed", desc);
                                        return -EOPNOTSUPP;
                                }
                                if (!warned_blocked && task_blocks_sigckpt(stuck)) {
                                        thread_desc(stuck, desc, sizeof desc);
                                        snprintf(err, errsize,
                                                 "%s blocks the checkpoint signal %d; set DMTCP_SIGCKPT to a signal the "
                                                 "program does not block", desc, rt.cfg.sigckpt);
                                        warned_blocked = true;
                                        if (elapsed > 2000000)
                                                return -EDEADLK;
                                }
                        }
                        if (elapsed > SUSPEND_TIMEOUT_USEC) {
                                char desc[96];
                                thread_desc(stuck, desc, sizeof desc);
                                snprintf(err, errsize, "%s did not stop within %llu s (state %c)", desc,
                                         SUSPEND_TIMEOUT_USEC / 1000000, task_state(stuck) ?: '?');
                                return -ETIMEDOUT;
                        }
                        uint32_t cur = atomic_load(&rt.n_suspended);
                        struct timespec ts = { 0, 2 * 1000 * 1000 };
                        raw_futex_wait((uint32_t *) &rt.n_suspended, cur, &ts);
                }
                if (s.signaled == 0)
                        return 0;       /* a full scan found nobody new */
        }
}

void rt_threads_resume(void) {
        atomic_fetch_add(&rt.release_seq, 1);
        raw_futex_wake((uint32_t *) &rt.release_seq, INT32_MAX);
        /* Wait until every parked thread has left the handler, so the next
         * checkpoint never mistakes a released thread for a parked one. */
        uint64_t start = now_usec(CLOCK_MONOTONIC);
        for (;;) {
                uint32_t cur = atomic_load(&rt.n_suspended);
                if (cur == 0 || now_usec(CLOCK_MONOTONIC) - start > 5000000)
                        break;
                struct timespec ts = { 0, 1000 * 1000 };
                raw_futex_wait((uint32_t *) &rt.n_suspended, cur, &ts);
        }
}

