/* shm_posix: POSIX shared memory between two processes.
 *
 *   named      shm_open'ed by the parent (mode 0640), mapped, then opened
 *              and mapped again by the child under its name (another
 *              description, another address): a counter in it that both
 *              increment under a named semaphore (sem_open: itself a file
 *              in /dev/shm, mapped by each), checked against the counts each
 *              keeps in its private memory, and a ping/pong
 *   unlinked   another object, unlinked at once, that both keep through the
 *              inherited descriptor and mapping: the child writes a pattern
 *              into it, the parent checks it
 *
 * The driver removes the objects from /dev/shm before the first restart (as
 * a reboot would) and leaves them, changed by the killed processes after
 * the checkpoint, before the second: either way the restored program must
 * find them as they were at the checkpoint. At verification: names, modes,
 * sizes, the unlinked object still unlinked. */
#include <errno.h>
#include <fcntl.h>
#include <semaphore.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "zdtmtst.h"

#define SIZE (256 * 1024)
#define LOOSE_SIZE (64 * 1024)

struct shared {
        struct test_counter c;
        struct test_pingpong pp;
        volatile uint64_t seed;
        volatile int stop;
};

static char name[64], sem_name[64], loose_name[64];
static sem_t *sem;
static volatile uint64_t *loose;

static void lock(void) {
        while (sem_wait(sem) < 0)
                check(errno == EINTR, "sem_wait: %s", strerror(errno));
}

static void unlock(void) {
        check(sem_post(sem) == 0, "sem_post: %s", strerror(errno));
}

static void check_loose(uint64_t seed, const char *who) {
        for (size_t i = 0; i < LOOSE_SIZE / 8; i += 512)
                check(loose[i] == mix64(seed + i), "%s: the unlinked object's word %zu is wrong (seed %llu)", who, i,
                      (unsigned long long) seed);
}

static void child(void) {
        int fd = shm_open(name, O_RDWR, 0);
        if (fd < 0)
                fail_errno("child: shm_open %s", name);
        struct shared *sh = mmap(NULL, SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        if (sh == MAP_FAILED)
                fail_errno("child: mmap");
        sem_t *s2 = sem_open(sem_name, 0);
        if (s2 == SEM_FAILED)
                fail_errno("child: sem_open");
        sem = s2;
        uint64_t mine = 0, seed = 0;
        while (!sh->stop) {
                lock();
                test_count(&sh->c, 1, &mine, "child");
                check_loose(sh->seed, "child");
                seed = sh->seed + 1;
                for (size_t i = 0; i < LOOSE_SIZE / 8; i += 512)
                        loose[i] = mix64(seed + i);
                sh->seed = seed;
                unlock();
                test_pong(&sh->pp);
                test_msleep(1);
        }
        lock();
        check(sh->c.count[1] == mine, "child: its count is %llu at the end, it made %llu",
              (unsigned long long) sh->c.count[1], (unsigned long long) mine);
        unlock();
        exit(0);
}

static void check_object(const char *path, mode_t mode, off_t size) {
        struct stat st;
        if (stat(path, &st) < 0)
                fail_errno("stat %s", path);
        check((st.st_mode & 0777) == mode && st.st_size == size, "%s: mode %o size %lld, expected %o and %lld", path,
              st.st_mode & 0777, (long long) st.st_size, mode, (long long) size);
}

int main(int argc, char **argv) {
        test_init(argc, argv);
        umask(022);
        snprintf(name, sizeof name, "/zdtm-shm-%d", (int) getpid());
        snprintf(sem_name, sizeof sem_name, "/zdtm-sem-%d", (int) getpid());
        snprintf(loose_name, sizeof loose_name, "/zdtm-loose-%d", (int) getpid());
        test_cleanup_note("shm /dev/shm%s", name);
        test_cleanup_note("shm /dev/shm/sem.%s", sem_name + 1);
        test_cleanup_note("shm /dev/shm%s", loose_name);
        int fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL, 0640);
        if (fd < 0)
                fail_errno("shm_open %s", name);
        if (ftruncate(fd, SIZE) < 0)
                fail_errno("ftruncate");
        struct shared *sh = mmap(NULL, SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        if (sh == MAP_FAILED)
                fail_errno("mmap");
        sem = sem_open(sem_name, O_CREAT | O_EXCL, 0600, 1);
        if (sem == SEM_FAILED)
                fail_errno("sem_open");
        int lfd = shm_open(loose_name, O_RDWR | O_CREAT | O_EXCL, 0600);
        if (lfd < 0 || ftruncate(lfd, LOOSE_SIZE) < 0)
                fail_errno("shm_open %s", loose_name);
        loose = mmap(NULL, LOOSE_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, lfd, 0);
        if (loose == MAP_FAILED)
                fail_errno("mmap the unlinked object");
        shm_unlink(loose_name);
        for (size_t i = 0; i < LOOSE_SIZE / 8; i += 512)
                loose[i] = mix64(i);
        pid_t pid = test_fork(child);
        test_ready();
        uint64_t mine = 0;
        while (!test_verify_requested()) {
                lock();
                test_count(&sh->c, 0, &mine, "parent");
                check_loose(sh->seed, "parent");
                unlock();
                test_ping(&sh->pp, pid, "the child does not see the parent's writes (no pong)");
                test_heartbeat();
                test_msleep(2);
        }
        sh->stop = 1;
        test_reap(pid);
        lock();
        test_count(&sh->c, 0, &mine, "parent");
        check(sh->c.count[1] > 0, "the child never incremented");
        check_loose(sh->seed, "parent");
        unlock();
        char path[128];
        snprintf(path, sizeof path, "/dev/shm%s", name);
        check_object(path, 0640, SIZE);
        snprintf(path, sizeof path, "/dev/shm/sem.%s", sem_name + 1);
        check_object(path, 0600, 32);
        snprintf(path, sizeof path, "/dev/shm%s", loose_name);
        check(access(path, F_OK) < 0, "the unlinked object is back under its name");
        char link[64], target[256];
        snprintf(link, sizeof link, "/proc/self/fd/%d", lfd);
        ssize_t k = readlink(link, target, sizeof target - 1);
        target[k > 0 ? k : 0] = 0;
        check(strstr(target, " (deleted)") != NULL, "the unlinked object's descriptor is %s", target);
        int flags = fcntl(fd, F_GETFL);
        check((flags & O_ACCMODE) == O_RDWR, "the descriptor has flags %#x", flags);
        shm_unlink(name);
        sem_unlink(sem_name);
        pass();
}
