/* Recreating the processes of a computation with their shape: original
 * pids (clone3 set_tid), parent and child, sessions, process groups, and
 * children that had exited but were not reaped (zombies), and the shared
 * memory each inherits from dmtcp_restart (shared-mem.c).
 *
 * Each process, while still a copy of dmtcp_restart, creates its own
 * children first (so they are its children again), then all meet at
 * barriers: session leaders call setsid() (and take their terminal, pty.c),
 * then members join their process groups. Only then does each load its own image (loader.c) and wait for
 * "go". The barriers and "go" live in a shared anonymous mapping created by
 * dmtcp_restart; every helper dies with its parent (PDEATHSIG) until it
 * becomes the restored process, so a failure leaves nothing behind. */
#include <fcntl.h>
#include <linux/futex.h>
#include <linux/sched.h>
#include <signal.h>
#include <stdarg.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <time.h>

#include "raw-syscall.h"
#include "restart.h"
#include "shared.h"
#include "util.h"

#define BARRIER_TIMEOUT_USEC (60ULL * 1000000ULL)

pid_t rst_fork_with_pid(pid_t pid) {
        uint64_t tid_addr = 0;
        prctl(PR_GET_TID_ADDRESS, &tid_addr, 0, 0, 0);
        fflush(NULL);
        /* glibc's idea of our thread id stays right in the child through
         * CLONE_CHILD_SETTID on its tid field. */
        struct clone_args a = { 0 };
        a.flags = tid_addr ? CLONE_CHILD_SETTID | CLONE_CHILD_CLEARTID : 0;
        a.child_tid = tid_addr;
        a.exit_signal = SIGCHLD;
        a.set_tid = (uint64_t) &pid;
        a.set_tid_size = 1;
        long r = raw_syscall2(SYS_clone3, (long) &a, sizeof a);
        if (r < 0) {
                errno = (int) -r;
                return -1;
        }
        return (pid_t) r;
}

int rst_tree_plan(struct rst_tree *t, char *err, size_t errsize) {
        t->parent = calloc(t->n + 1, sizeof *t->parent);
        if (!t->parent)
                return -ENOMEM;
        for (size_t i = 0; i < t->n; i++) {
                const struct img_header *h = &t->ims[i].img.hdr;
                t->parent[i] = -1;
                for (size_t k = 0; k < t->n; k++) {
                        const struct img_header *o = &t->ims[k].img.hdr;
                        if (k != i && o->pid == h->pid) {
                                snprintf(err, errsize, "images %s and %s are both of process %u", t->ims[i].path,
                                         t->ims[k].path, h->pid);
                                return -EINVAL;
                        }
                        if (k != i && o->pid == h->ppid)
                                t->parent[i] = (int) k;
                }
        }
        /* A cycle would mean a damaged set of images. */
        for (size_t i = 0; i < t->n; i++) {
                int p = t->parent[i];
                for (size_t steps = 0; p >= 0; steps++, p = t->parent[p])
                        if (steps > t->n) {
                                snprintf(err, errsize, "the images' parent processes form a cycle");
                                return -EINVAL;
                        }
        }
        return 0;
}

static bool id_free(uint32_t id) {
        char p[64];
        snprintf(p, sizeof p, "/proc/%u", id);
        if (access(p, F_OK) == 0)
                return false;
        /* A thread id is not listed at the top of /proc: ask for it. */
        return kill((pid_t) id, 0) < 0 && errno == ESRCH;
}

bool rst_tree_ids_free(const struct rst_tree *t) {
        for (size_t i = 0; i < t->n; i++) {
                const struct img *img = &t->ims[i].img;
                for (size_t k = 0; k < img->n_threads; k++)
                        if (!id_free(img->threads[k].tid))
                                return false;
                for (size_t k = 0; k < img->n_children; k++)
                        if (!id_free(img->children[k].pid))
                                return false;
        }
        return true;
}

static void fail_sync(struct rst_tree *t) {
        atomic_store(&t->sync->failed, 1);
        raw_syscall6(SYS_futex, (long) &t->sync->go, FUTEX_WAKE, INT32_MAX, 0, 0, 0);
}

_printf_(2, 3) static _Noreturn void proc_fail(struct rst_tree *t, const char *fmt, ...) {
        char msg[1024];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof msg, fmt, ap);
        va_end(ap);
        dprintf(t->status_fd, "E%s\n", msg);
        fail_sync(t);
        _exit(t->o->fail_rc);
}

/* Wait until counter reaches n (a shared futex), or give up. */
static void barrier(struct rst_tree *t, _Atomic uint32_t *counter, const char *what) {
        atomic_fetch_add(counter, 1);
        raw_syscall6(SYS_futex, (long) counter, FUTEX_WAKE, INT32_MAX, 0, 0, 0);
        uint64_t deadline = now_usec(CLOCK_MONOTONIC) + BARRIER_TIMEOUT_USEC;
        for (;;) {
                uint32_t v = atomic_load(counter);
                if (v >= t->n)
                        return;
                if (atomic_load(&t->sync->failed))
                        _exit(t->o->fail_rc);
                if (now_usec(CLOCK_MONOTONIC) > deadline)
                        proc_fail(t, "the restarted processes did not all reach the %s step", what);
                struct timespec ts = { 0, 50 * 1000 * 1000 };
                raw_syscall6(SYS_futex, (long) counter, FUTEX_WAIT, v, (long) &ts, 0, 0);
        }
}

/* Recreate a child that had exited but was not reaped: it ends at once, as
 * it ended then, and stays a zombie until its restored parent reaps it. */
static void make_zombie(struct rst_tree *t, const struct img_child *z) {
        pid_t pid = rst_fork_with_pid((pid_t) z->pid);
        if (pid < 0)
                proc_fail(t, "cannot recreate the exited child %u: %m", z->pid);
        if (pid > 0)
                return;
        if (z->code == CLD_EXITED)
                _exit(z->status);
        struct sigaction dfl = { .sa_handler = SIG_DFL };
        sigaction(z->status, &dfl, NULL);
        sigset_t one;
        sigemptyset(&one);
        sigaddset(&one, z->status);
        sigprocmask(SIG_UNBLOCK, &one, NULL);
        prctl(PR_SET_DUMPABLE, 0);          /* no core: it already made one, if any */
        kill(getpid(), z->status);
        _exit(128 + z->status);
}

static _Noreturn void proc_main(struct rst_tree *t, size_t i);

static pid_t spawn(struct rst_tree *t, size_t i) {
        pid_t pid = rst_fork_with_pid((pid_t) t->ims[i].img.hdr.pid);
        if (pid == 0)
                proc_main(t, i);
        return pid;
}

static _Noreturn void proc_main(struct rst_tree *t, size_t i) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        struct rst_image *im = &t->ims[i];
        const struct img_header *h = &im->img.hdr;
        pid_t me = (pid_t) h->pid;
        if (getpid() != me)
                proc_fail(t, "process %d came back as %d", (int) me, (int) getpid());

        /* 1. Sessions and children. A session is joined only by being
         *    forked into it, so a child that stays in the session we are
         *    in now is forked before we make our own (setsid), and the
         *    others after: those of our session inherit it, session leaders
         *    make theirs. */
        bool new_session = h->sid == h->pid;
        for (int pass = 0; pass < 2; pass++) {
                if (pass == 1 && new_session && setsid() < 0)
                        proc_fail(t, "process %d cannot become a session leader again: %m", (int) me);
                /* Its terminal before the session's other processes, which
                 * inherit it (pty.c). */
                char err[512];
                if (pass == 1 && new_session && rst_ptys_take_ctty(im, t->o, err, sizeof err) < 0)
                        proc_fail(t, "%s", err);
                for (size_t k = 0; k < t->n; k++) {
                        if (t->parent[k] != (int) i)
                                continue;
                        const struct img_header *ch = &t->ims[k].img.hdr;
                        bool before = new_session && ch->sid != h->sid && ch->sid != ch->pid;
                        if (before != (pass == 0))
                                continue;
                        if (spawn(t, k) < 0)
                                proc_fail(t, "cannot recreate process %u: %m", ch->pid);
                }
        }
        for (size_t k = 0; k < im->img.n_children; k++)
                make_zombie(t, &im->img.children[k]);
        /* Our children have the shared memory they need: keep ours only. */
        rst_shared_release(im);
        barrier(t, &t->sync->created, "create");
        barrier(t, &t->sync->sessions, "session");

        /* 2. Process groups, whose leaders are in their sessions by then.
         *    Leaders outside the computation are not recreated: such a
         *    process stays in the restarter's. */
        bool leader_here = h->pgid == h->pid;
        for (size_t k = 0; k < t->n && !leader_here; k++)
                leader_here = t->ims[k].img.hdr.pid == h->pgid && t->ims[k].img.hdr.sid == h->sid;
        if (leader_here && getpgid(0) != (pid_t) h->pgid && setpgid(0, (pid_t) h->pgid) < 0)
                proc_fail(t, "process %d cannot rejoin process group %u: %m", (int) me, h->pgid);
        barrier(t, &t->sync->groups, "process group");

        /* 3. Only our own image stays open. */
        for (size_t k = 0; k < t->n; k++)
                if (k != i && t->ims[k].fd >= 0)
                        close(t->ims[k].fd);

        /* The zombies' SIGCHLD is ours, not the program's: the image says
         * what the program had pending. */
        sigset_t chld;
        sigemptyset(&chld);
        sigaddset(&chld, SIGCHLD);
        sigprocmask(SIG_BLOCK, &chld, NULL);
        struct timespec zero = { 0, 0 };
        while (sigtimedwait(&chld, NULL, &zero) > 0)
                ;

        char err[1024] = "";
        int r = rst_load_and_jump(im, t->o, t->status_fd, t->sync, err, sizeof err);
        dprintf(t->status_fd, "Eprocess %d (%s): %s\n", (int) me, h->program, err[0] ? err : strerror(-r));
        fail_sync(t);
        _exit(r == -EBADMSG || r == -EXDEV ? t->o->fail_rc + 1 : t->o->fail_rc);
}

int rst_tree_spawn_roots(struct rst_tree *t, pid_t *roots, size_t *n_roots) {
        *n_roots = 0;
        for (size_t i = 0; i < t->n; i++) {
                if (t->parent[i] >= 0)
                        continue;
                pid_t pid = spawn(t, i);
                if (pid < 0)
                        return -errno;
                roots[(*n_roots)++] = pid;
        }
        return 0;
}

struct rst_sync *rst_sync_new(void) {
        void *p = mmap(NULL, sizeof(struct rst_sync), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED)
                return NULL;
        memset(p, 0, sizeof(struct rst_sync));
        return p;
}

void rst_sync_go(struct rst_sync *s, const struct rst_go *go) {
        s->msg = *go;
        atomic_store(&s->go, 1);
        raw_syscall6(SYS_futex, (long) &s->go, FUTEX_WAKE, INT32_MAX, 0, 0, 0);
}

void rst_sync_abort(struct rst_sync *s) {
        atomic_store(&s->failed, 1);
        atomic_store(&s->go, 2);
        raw_syscall6(SYS_futex, (long) &s->go, FUTEX_WAKE, INT32_MAX, 0, 0, 0);
}

int rst_sync_wait_go(struct rst_sync *s, struct rst_go *out) {
        for (;;) {
                uint32_t v = atomic_load(&s->go);
                if (v == 1) {
                        *out = s->msg;
                        return 0;
                }
                if (v == 2 || atomic_load(&s->failed))
                        return -ECANCELED;
                raw_syscall6(SYS_futex, (long) &s->go, FUTEX_WAIT, v, 0, 0, 0);
        }
}
