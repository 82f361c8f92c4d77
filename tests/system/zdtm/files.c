/* files: the descriptor kinds the runtime restores, at chosen numbers.
 *
 *   fd 50  append.log      O_WRONLY|O_APPEND, CLOEXEC   one record per step
 *   fd 51  plain.dat       O_RDWR (no append)           one record per step at its offset
 *   fd 52  (deleted)       O_RDWR, unlinked while open  64 KiB pattern + one record per step
 *   fd 53  (deleted)       O_RDONLY, unlinked           16 KiB pattern read 32 bytes per step
 *   fd 54  input.dat       O_RDONLY|O_NONBLOCK          64 KiB pattern read 32 bytes per step
 *   fd 55  subdir/         O_DIRECTORY                  openat/fstatat through it
 *   fd 56  /dev/null       O_RDWR
 *   fd 57  /dev/urandom    O_RDONLY
 *   fd 58  /dev/zero       O_RDONLY, CLOEXEC
 *   fd 59  /proc/self/fd   O_DIRECTORY, CLOEXEC         must list this process's fds
 *
 * With --no-deleted, fds 52 and 53 stay ordinary files (so the rest is
 * still covered while deleted files cannot be restored).
 *
 * Checked on every step: each descriptor's offset is where the program
 * left it, its access mode and status flags (O_APPEND, O_NONBLOCK) and
 * FD_CLOEXEC are as opened, the deleted files are still deleted (and not
 * back in the directory), reads return the expected bytes, and no
 * descriptor below the runtime's range (900) appeared. At verification:
 * the three written files hold exactly records 1..N (what the killed
 * process wrote after the last checkpoint is neither duplicated nor lost)
 * and the deleted files their patterns. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "zdtmtst.h"

#define REC 32
#define FDN_APPEND 50
#define FDN_PLAIN 51
#define FDN_DEL 52
#define FDN_DEL_RO 53
#define FDN_INPUT 54
#define FDN_DIR 55
#define FDN_NULL 56
#define FDN_URANDOM 57
#define FDN_ZERO 58
#define FDN_PROCFD 59
#define DEL_SIZE (64 * 1024)
#define DEL_RO_SIZE (16 * 1024)
#define INPUT_SIZE (64 * 1024)

struct fd_want {
        int fd;
        int flags;              /* O_ACCMODE | O_APPEND | O_NONBLOCK */
        bool cloexec;
        const char *name;
};

static const struct fd_want fds[] = {
        { FDN_APPEND, O_WRONLY | O_APPEND, true, "append.log" },
        { FDN_PLAIN, O_RDWR, false, "plain.dat" },
        { FDN_DEL, O_RDWR, false, "deleted.dat (deleted)" },
        { FDN_DEL_RO, O_RDONLY, true, "deleted-ro.dat (deleted)" },
        { FDN_INPUT, O_RDONLY | O_NONBLOCK, false, "input.dat" },
        { FDN_DIR, O_RDONLY, true, "subdir" },
        { FDN_NULL, O_RDWR, false, "/dev/null" },
        { FDN_URANDOM, O_RDONLY, false, "/dev/urandom" },
        { FDN_ZERO, O_RDONLY, true, "/dev/zero" },
        { FDN_PROCFD, O_RDONLY, true, "/proc/self/fd" },
};

static void record(char *buf, char tag, uint64_t i) {
        char tmp[REC + 1];
        snprintf(tmp, sizeof tmp, "%c%010llu:%019llx\n", tag, (unsigned long long) i,
                 (unsigned long long) (mix64(i ^ (uint64_t) tag) >> 1));
        memcpy(buf, tmp, REC);
}

static void pattern(char *buf, size_t len, uint64_t seed) {
        for (size_t i = 0; i < len; i++)
                buf[i] = (char) (mix64(seed ^ (i / 8)) >> (8 * (i % 8)));
}

static void place(int fd, int at, bool cloexec, const char *what) {
        if (fd < 0)
                fail_errno("open %s", what);
        if (fd != at) {
                if (dup3(fd, at, cloexec ? O_CLOEXEC : 0) < 0)
                        fail_errno("dup3 %s", what);
                close(fd);
        } else if (fcntl(at, F_SETFD, cloexec ? FD_CLOEXEC : 0) < 0)
                fail_errno("F_SETFD %s", what);
}

static void make_file(const char *name, size_t size, uint64_t seed) {
        char *buf = malloc(size);
        check(buf, "out of memory");
        pattern(buf, size, seed);
        int fd = open(name, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd < 0)
                fail_errno("create %s", name);
        write_all(fd, buf, size, name);
        close(fd);
        free(buf);
}

static void check_offset(int fd, off_t want, const char *name) {
        off_t o = lseek(fd, 0, SEEK_CUR);
        check(o == want, "%s (fd %d): offset %lld, expected %lld", name, fd, (long long) o, (long long) want);
}

/* The whole content of fd: records 1..n after a prefix of `skip` bytes. */
static void check_records(int fd, off_t skip, char tag, uint64_t n, const char *name) {
        struct stat st;
        if (fstat(fd, &st) < 0)
                fail_errno("fstat %s", name);
        off_t want = skip + (off_t) n * REC;
        if (st.st_size != want) {
                /* Say what is wrong: a duplicated or a lost tail. */
                char rec[REC];
                uint64_t last = 0;
                if (st.st_size >= skip + REC) {
                        pread_all(fd, rec, REC, st.st_size - REC, name);
                        last = strtoull(rec + 1, NULL, 10);
                }
                fail("%s: %lld bytes (last record %llu), expected %lld (records 1..%llu)", name,
                     (long long) st.st_size, (unsigned long long) last, (long long) want, (unsigned long long) n);
        }
        char *buf = malloc((size_t) n * REC + 1);
        check(buf, "out of memory");
        pread_all(fd, buf, (size_t) n * REC, skip, name);
        for (uint64_t i = 1; i <= n; i++) {
                char rec[REC];
                record(rec, tag, i);
                if (memcmp(buf + (i - 1) * REC, rec, REC)) {
                        fail("%s: record %llu is \"%.*s\", expected \"%.*s\"", name, (unsigned long long) i, REC - 1,
                             buf + (i - 1) * REC, REC - 1, rec);
                }
        }
        free(buf);
}

static void check_pattern_at(int fd, size_t size, uint64_t seed, const char *name) {
        char *buf = malloc(size), *want = malloc(size);
        check(buf && want, "out of memory");
        pread_all(fd, buf, size, 0, name);
        pattern(want, size, seed);
        for (size_t i = 0; i < size; i++)
                check(buf[i] == want[i], "%s: byte %zu differs", name, i);
        free(buf);
        free(want);
}

static bool fd_known(int fd) {
        if (fd <= 3 || fd >= 900)
                return true;
        for (size_t i = 0; i < sizeof fds / sizeof fds[0]; i++)
                if (fds[i].fd == fd)
                        return true;
        return false;
}

static bool fd_target(int fd, char *buf, size_t size) {
        char link[64];
        snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
        ssize_t k = readlink(link, buf, size - 1);
        buf[k > 0 ? k : 0] = 0;
        return k > 0;
}

/* Every descriptor below 900 (the runtime keeps its own above) is one we
 * opened. One that shows up only for a moment (the runtime reading a
 * file while it prepares a checkpoint) is not held against it: only one
 * that is still there, the same, 200 ms later. */
static void check_no_strangers(void) {
        int seen[64], n_seen = 0;
        char targets[64][256];
        DIR *d = opendir("/proc/self/fd");
        if (!d)
                fail_errno("opendir /proc/self/fd");
        struct dirent *de;
        while ((de = readdir(d))) {
                int fd = atoi(de->d_name);
                if (de->d_name[0] == '.' || fd == dirfd(d) || fd_known(fd) || n_seen == 64)
                        continue;
                if (fd_target(fd, targets[n_seen], sizeof targets[n_seen]))
                        seen[n_seen++] = fd;
        }
        closedir(d);
        if (!n_seen)
                return;
        test_msleep(200);
        for (int i = 0; i < n_seen; i++) {
                char now[256];
                if (fd_target(seen[i], now, sizeof now) && !strcmp(now, targets[i]))
                        fail("unexpected descriptor %d (%s)", seen[i], now);
        }
}

static bool with_deleted = true;

int main(int argc, char **argv) {
        test_init(argc, argv);
        for (int i = 1; i < argc; i++)
                if (!strcmp(argv[i], "--no-deleted"))
                        with_deleted = false;
        mkdir("subdir", 0755);
        make_file("subdir/a", 100, 7);
        make_file("deleted.dat", DEL_SIZE, 1);
        make_file("deleted-ro.dat", DEL_RO_SIZE, 2);
        make_file("input.dat", INPUT_SIZE, 3);

        place(open("append.log", O_WRONLY | O_CREAT | O_TRUNC | O_APPEND, 0644), FDN_APPEND, true, "append.log");
        place(open("plain.dat", O_RDWR | O_CREAT | O_TRUNC, 0644), FDN_PLAIN, false, "plain.dat");
        place(open("deleted.dat", O_RDWR), FDN_DEL, false, "deleted.dat");
        place(open("deleted-ro.dat", O_RDONLY), FDN_DEL_RO, true, "deleted-ro.dat");
        place(open("input.dat", O_RDONLY | O_NONBLOCK), FDN_INPUT, false, "input.dat");
        place(open("subdir", O_RDONLY | O_DIRECTORY), FDN_DIR, true, "subdir");
        place(open("/dev/null", O_RDWR), FDN_NULL, false, "/dev/null");
        place(open("/dev/urandom", O_RDONLY), FDN_URANDOM, false, "/dev/urandom");
        place(open("/dev/zero", O_RDONLY), FDN_ZERO, true, "/dev/zero");
        place(open("/proc/self/fd", O_RDONLY | O_DIRECTORY), FDN_PROCFD, true, "/proc/self/fd");
        if (lseek(FDN_DEL, 0, SEEK_END) != DEL_SIZE)
                fail_errno("lseek deleted.dat");
        if (with_deleted && (unlink("deleted.dat") < 0 || unlink("deleted-ro.dat") < 0))
                fail_errno("unlink");
        struct stat dir_st;
        if (fstat(FDN_DIR, &dir_st) < 0)
                fail_errno("fstat subdir");

        char *input = malloc(INPUT_SIZE), *del_ro = malloc(DEL_RO_SIZE);
        check(input && del_ro, "out of memory");
        pattern(input, INPUT_SIZE, 3);
        pattern(del_ro, DEL_RO_SIZE, 2);
        uint64_t n = 0;
        off_t in_off = 0, ro_off = 0;
        test_ready();

        while (!test_verify_requested()) {
                /* Where everything was left. */
                for (size_t i = 0; i < sizeof fds / sizeof fds[0]; i++) {
                        const struct fd_want *f = &fds[i];
                        int fl = fcntl(f->fd, F_GETFL), fdf = fcntl(f->fd, F_GETFD);
                        if (fl < 0 || fdf < 0)
                                fail_errno("fd %d (%s) is gone", f->fd, f->name);
                        int got = fl & (O_ACCMODE | O_APPEND | O_NONBLOCK);
                        check(got == f->flags, "fd %d (%s): status flags %#o, opened with %#o", f->fd, f->name, got,
                              f->flags);
                        check(!!(fdf & FD_CLOEXEC) == f->cloexec, "fd %d (%s): FD_CLOEXEC is %s", f->fd, f->name,
                              (fdf & FD_CLOEXEC) ? "set" : "clear");
                }
                /* /proc/self/fd as opened: still this process's (after a
                 * restart, not the old pid's, which is gone or another's). */
                struct stat via, direct;
                check(fstatat(FDN_PROCFD, "50", &via, 0) == 0 && fstat(FDN_APPEND, &direct) == 0 &&
                      via.st_ino == direct.st_ino && via.st_dev == direct.st_dev,
                      "fd %d (/proc/self/fd) does not list this process's fd 50", FDN_PROCFD);
                check_offset(FDN_PLAIN, (off_t) n * REC, "plain.dat");
                check_offset(FDN_DEL, DEL_SIZE + (off_t) n * REC, "deleted.dat");
                check_offset(FDN_DEL_RO, ro_off, "deleted-ro.dat");
                check_offset(FDN_INPUT, in_off, "input.dat");
                struct stat st;
                if (fstat(FDN_DEL, &st) < 0)
                        fail_errno("fstat deleted.dat");
                check(st.st_size == DEL_SIZE + (off_t) n * REC, "deleted.dat: %lld bytes, expected %lld",
                      (long long) st.st_size, (long long) (DEL_SIZE + (off_t) n * REC));
                if (with_deleted) {
                        check(st.st_nlink == 0, "deleted.dat has %ld links", (long) st.st_nlink);
                        if (fstat(FDN_DEL_RO, &st) < 0)
                                fail_errno("fstat deleted-ro.dat");
                        check(st.st_nlink == 0, "deleted-ro.dat has %ld links", (long) st.st_nlink);
                        check(access("deleted.dat", F_OK) < 0 && access("deleted-ro.dat", F_OK) < 0,
                              "a deleted file is back in the directory");
                }
                /* Write one record to each written file. */
                n++;
                char rec[REC];
                record(rec, 'A', n);
                write_all(FDN_APPEND, rec, REC, "append.log");
                record(rec, 'P', n);
                write_all(FDN_PLAIN, rec, REC, "plain.dat");
                record(rec, 'D', n);
                write_all(FDN_DEL, rec, REC, "deleted.dat");

                /* Read on. */
                char got[REC];
                if (in_off + REC > INPUT_SIZE) {
                        lseek(FDN_INPUT, 0, SEEK_SET);
                        in_off = 0;
                }
                read_all(FDN_INPUT, got, REC, "input.dat");
                check(!memcmp(got, input + in_off, REC), "input.dat: wrong bytes at offset %lld", (long long) in_off);
                in_off += REC;
                if (ro_off + REC > DEL_RO_SIZE) {
                        lseek(FDN_DEL_RO, 0, SEEK_SET);
                        ro_off = 0;
                }
                read_all(FDN_DEL_RO, got, REC, "deleted-ro.dat");
                check(!memcmp(got, del_ro + ro_off, REC), "deleted-ro.dat: wrong bytes at offset %lld",
                      (long long) ro_off);
                ro_off += REC;

                /* The directory and the devices. */
                if (fstat(FDN_DIR, &st) < 0)
                        fail_errno("fstat subdir");
                check(st.st_ino == dir_st.st_ino && st.st_dev == dir_st.st_dev, "fd %d is no longer subdir", FDN_DIR);
                int a = openat(FDN_DIR, "a", O_RDONLY | O_CLOEXEC);
                if (a < 0)
                        fail_errno("openat(subdir fd, \"a\")");
                char abuf[100], want_a[100];
                read_all(a, abuf, sizeof abuf, "subdir/a");
                close(a);
                pattern(want_a, sizeof want_a, 7);
                check(!memcmp(abuf, want_a, sizeof abuf), "subdir/a read through the directory fd differs");
                check(write(FDN_NULL, rec, REC) == REC, "write to /dev/null failed");
                check(read(FDN_NULL, got, REC) == 0, "read from /dev/null is not at end of file");
                check(fstat(FDN_NULL, &st) == 0 && S_ISCHR(st.st_mode) && st.st_rdev == makedev(1, 3),
                      "fd %d is not /dev/null", FDN_NULL);
                uint64_t rnd[2] = { 0, 0 };
                read_all(FDN_URANDOM, rnd, sizeof rnd, "/dev/urandom");
                check(rnd[0] | rnd[1], "/dev/urandom gave 16 zero bytes");
                check(fstat(FDN_URANDOM, &st) == 0 && st.st_rdev == makedev(1, 9), "fd %d is not /dev/urandom",
                      FDN_URANDOM);
                memset(got, 1, sizeof got);
                read_all(FDN_ZERO, got, REC, "/dev/zero");
                for (int i = 0; i < REC; i++)
                        check(got[i] == 0, "/dev/zero gave a non-zero byte");
                if (n % 32 == 0)
                        check_no_strangers();
                test_heartbeat();
                test_msleep(2);
        }
        /* fd 50 is write-only: read the file through a new descriptor. */
        int afd = open("append.log", O_RDONLY | O_CLOEXEC);
        if (afd < 0)
                fail_errno("open append.log");
        check_records(afd, 0, 'A', n, "append.log");
        close(afd);
        check_records(FDN_PLAIN, 0, 'P', n, "plain.dat");
        check_records(FDN_DEL, DEL_SIZE, 'D', n, "deleted.dat");
        check_pattern_at(FDN_DEL, DEL_SIZE, 1, "deleted.dat");
        check_pattern_at(FDN_DEL_RO, DEL_RO_SIZE, 2, "deleted-ro.dat");
        pass();
}
