/* tree: three generations passing a token around a ring of pipes.
 *
 *   G (the launched program) -> P (its child, a new session) -> C (P's
 *   child, its own process group) -> back to G
 *
 * Each adds one to the token and checks it is the number it expects. Every
 * few dozen steps G also runs system("exit 3"), reads popen("echo ..."),
 * vfork()+exec()s /bin/true, posix_spawn()s it and fork()+exec()s a shell,
 * each a program started under the runtime that must come and go cleanly:
 * a checkpoint that catches one ending must bring it back as the zombie its
 * parent then reaps. C holds a child that exited at once and was never
 * reaped (a zombie, its SIGCHLD blocked and pending). P tried once to exec
 * a program that does not exist, and went on.
 *
 * At verification the token "verify" goes round: each process checks its
 * pid, parent, session and process group, C reaps its zombie (status 7,
 * SIGCHLD pending), and each ends after its child, whose status it checks
 * with waitpid: the restored parent must see its restored child. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "zdtmtst.h"

#define VERIFY UINT64_MAX
#define SPAWN_EVERY 40

enum { G, P, C };
static const char *const names[] = { "grandparent", "parent", "child" };

struct ids {
        pid_t pid, ppid, pgid, sid;
};

static struct ids mine;
static int me;
static int in_fd, out_fd;

static struct ids ids_now(void) {
        return (struct ids) { getpid(), getppid(), getpgid(0), getsid(0) };
}

/* A broken ring: whoever saw the first failure wrote "result" already. */
static _Noreturn void ring_broken(const char *what) {
        if (access(TEST_RESULT_FILE, F_OK) == 0)
                _exit(1);
        fail("%s: %s the ring", names[me], what);
}

static uint64_t ring_read(void) {
        uint64_t v;
        size_t got = 0;
        while (got < sizeof v) {
                ssize_t k = read(in_fd, (char *) &v + got, sizeof v - got);
                if (k < 0 && errno == EINTR)
                        continue;
                if (k <= 0)
                        ring_broken(k == 0 ? "end of file on" : "cannot read");
                got += (size_t) k;
        }
        return v;
}

static void ring_write(uint64_t v) {
        size_t put = 0;
        while (put < sizeof v) {
                ssize_t k = write(out_fd, (const char *) &v + put, sizeof v - put);
                if (k < 0 && errno == EINTR)
                        continue;
                if (k <= 0)
                        ring_broken("cannot write to");
                put += (size_t) k;
        }
}

/* G's parent, session and group are the launching (then the restarting)
 * command's, outside the computation: only its pid is its own. */
static void check_ids(void) {
        struct ids now = ids_now();
        if (me == G)
                now.ppid = mine.ppid, now.pgid = mine.pgid, now.sid = mine.sid;
        check(now.pid == mine.pid && now.ppid == mine.ppid && now.pgid == mine.pgid && now.sid == mine.sid,
              "%s: pid/ppid/pgid/sid %d/%d/%d/%d, were %d/%d/%d/%d", names[me], now.pid, now.ppid, now.pgid,
              now.sid, mine.pid, mine.ppid, mine.pgid, mine.sid);
}

static void wait_child(pid_t pid, int want, const char *what) {
        int st;
        pid_t w;
        while ((w = waitpid(pid, &st, 0)) < 0 && errno == EINTR)
                ;
        check(w == pid, "%s: waitpid(%s %d): %s", names[me], what, (int) pid, strerror(errno));
        check(WIFEXITED(st) && WEXITSTATUS(st) == want, "%s: %s %d ended with status %#x, expected exit %d",
              names[me], what, (int) pid, st, want);
}

static void spawn_programs(void) {
        int st = system("exit 3");
        check(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 3, "system(\"exit 3\") gave %#x", st);
        FILE *f = popen("echo through popen", "r");
        check(f != NULL, "popen: %s", strerror(errno));
        char line[64] = "";
        if (!fgets(line, sizeof line, f))
                line[0] = 0;
        st = pclose(f);
        check(!strcmp(line, "through popen\n") && WIFEXITED(st) && WEXITSTATUS(st) == 0,
              "popen read %s, status %#x", line, st);
        pid_t pid = vfork();
        if (pid == 0) {
                execl("/bin/true", "true", (char *) NULL);
                _exit(127);
        }
        check(pid > 0, "vfork: %s", strerror(errno));
        wait_child(pid, 0, "vfork child");
        /* posix_spawn itself (system and popen use glibc's own), and fork
         * then exec (announced to the coordinator). */
        char *const true_argv[] = { (char *) "true", NULL };
        int r = posix_spawn(&pid, "/bin/true", NULL, NULL, true_argv, environ);
        check(r == 0, "posix_spawn: %s", strerror(r));
        wait_child(pid, 0, "posix_spawn child");
        pid = fork();
        if (pid == 0) {
                execl("/bin/sh", "sh", "-c", "exit 5", (char *) NULL);
                _exit(127);
        }
        check(pid > 0, "fork: %s", strerror(errno));
        wait_child(pid, 5, "forked child");
}

/* A process of the ring: forward the token (+1) until "verify". */
static void relay(pid_t child, pid_t zombie) {
        uint64_t expect = (uint64_t) me - 1;   /* P gets 0, 3, 6...; C 1, 4, 7... */
        for (;;) {
                uint64_t v = ring_read();
                if (v == VERIFY) {
                        check_ids();
                        if (zombie > 0) {
                                sigset_t pend;
                                sigpending(&pend);
                                check(sigismember(&pend, SIGCHLD), "%s: the zombie's SIGCHLD is not pending",
                                      names[me]);
                                wait_child(zombie, 7, "exited child");
                        }
                        ring_write(VERIFY);
                        if (child > 0)
                                wait_child(child, 0, names[me + 1]);
                        exit(0);
                }
                check(v == expect, "%s: token %llu, expected %llu", names[me], (unsigned long long) v,
                      (unsigned long long) expect);
                ring_write(v + 1);
                expect = v + 3;
        }
}

int main(int argc, char **argv) {
        test_init(argc, argv);
        int gp[2], pc[2], cg[2];
        if (pipe(gp) < 0 || pipe(pc) < 0 || pipe(cg) < 0)
                fail_errno("pipe");
        pid_t p = fork();
        check(p >= 0, "fork: %s", strerror(errno));
        if (p == 0) {
                me = P;
                check(setsid() > 0, "parent: setsid: %s", strerror(errno));
                pid_t c = fork();
                check(c >= 0, "parent: fork: %s", strerror(errno));
                if (c == 0) {
                        me = C;
                        check(setpgid(0, 0) == 0, "child: setpgid: %s", strerror(errno));
                        sigset_t chld;
                        sigemptyset(&chld);
                        sigaddset(&chld, SIGCHLD);
                        sigprocmask(SIG_BLOCK, &chld, NULL);
                        pid_t z = fork();
                        check(z >= 0, "child: fork: %s", strerror(errno));
                        if (z == 0)
                                _exit(7);
                        mine = ids_now();
                        in_fd = pc[0];
                        out_fd = cg[1];
                        close(gp[0]), close(gp[1]), close(pc[1]), close(cg[0]);
                        relay(0, z);
                }
                /* An exec that fails: P stays what it was, to the coordinator
                 * too (it announced the exec, then took it back), so G's
                 * checkpoints find it a member, not a process between two
                 * programs. */
                errno = 0;
                execl("/nonexistent/dmtcp-zdtm-program", "none", (char *) NULL);
                check(errno == ENOENT, "parent: an exec of a missing program gave %s", strerror(errno));
                mine = ids_now();
                in_fd = gp[0];
                out_fd = pc[1];
                close(gp[1]), close(pc[0]), close(cg[0]), close(cg[1]);
                relay(c, 0);
        }
        me = G;
        mine = ids_now();
        in_fd = cg[0];
        out_fd = gp[1];
        close(gp[0]), close(pc[0]), close(pc[1]), close(cg[1]);
        test_ready();
        uint64_t token = 0, rounds = 0;
        while (!test_verify_requested()) {
                ring_write(token);
                uint64_t back = ring_read();
                check(back == token + 2, "grandparent: token %llu came back as %llu", (unsigned long long) token,
                      (unsigned long long) back);
                token += 3;
                if (++rounds % SPAWN_EVERY == 0)
                        spawn_programs();
                test_heartbeat();
                test_msleep(1);
        }
        check_ids();
        spawn_programs();
        ring_write(VERIFY);
        check(ring_read() == VERIFY, "grandparent: the verify token did not come back");
        wait_child(p, 0, "parent");
        pass();
}
