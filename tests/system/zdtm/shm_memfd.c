/* shm_memfd: a memfd shared by two processes, through mappings and
 * descriptors.
 *
 *   views      the parent maps its first MiB and, at another address, 64 KiB
 *              at offset 1 MiB + 64 KiB; the child inherits both
 *   ping/pong  the parent writes a token through its mapping, the child
 *              reads it through the mapping and answers with pwrite(2) on a
 *              description of its own (opened through /proc/self/fd), which
 *              the parent must see in its mapping: mappings and descriptors
 *              of both processes are one object
 *   records    each step the parent pwrites a record into a part of the
 *              memfd nobody maps (from 3 MiB), the child checks the previous
 *              one through its own description, and the parent appends a
 *              line with write(2) at the offset both processes share (the
 *              inherited description)
 *
 * At verification: size, seals (F_SEAL_SHRINK), name, the shared offset
 * (the same in both processes: one description) and the child's own offset
 * (not shared), and every record. */
#include <errno.h>
#include <stddef.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "zdtmtst.h"

#define MIB (1 << 20)
#define SIZE (4 * MIB)
#define VIEW_B_OFF (MIB + 65536)
#define VIEW_B_LEN 65536
#define RECORDS (3 * MIB)
#define LINES (2 * MIB)
#define LINE 32
#define NAME "zdtm-memfd"

struct ctl {
        struct test_pingpong pp;
        volatile uint64_t records;      /* written by the parent */
        volatile uint64_t child_offset; /* of its own description, reported at the end */
        volatile uint64_t child_shared; /* the inherited description's offset, as the child sees it */
        volatile int stop;
};

static int mfd;
static struct ctl *ctl;                 /* at offset 0 of the memfd */
static uint8_t *view_b;

static void record(uint64_t n, uint8_t *buf) {
        for (size_t i = 0; i < 64; i++)
                buf[i] = (uint8_t) mix64(n * 64 + i);
}

static off_t record_off(uint64_t n) {
        return RECORDS + (off_t) (n % 200) * 4096;
}

static void check_record(int fd, uint64_t n, const char *who) {
        uint8_t want[64], got[64];
        record(n, want);
        pread_all(fd, got, sizeof got, record_off(n), "a record");
        check(!memcmp(want, got, sizeof got), "%s: record %llu at %lld is wrong", who, (unsigned long long) n,
              (long long) record_off(n));
}

static void child(void) {
        char link[64];
        snprintf(link, sizeof link, "/proc/self/fd/%d", mfd);
        int own = open(link, O_RDWR | O_CLOEXEC);
        if (own < 0)
                fail_errno("child: reopen the memfd");
        if (lseek(own, 12345, SEEK_SET) != 12345)
                fail_errno("child: lseek");
        uint64_t seen = 0;
        while (!ctl->stop) {
                uint64_t ping = ctl->pp.ping;
                if (ping != ctl->pp.pong)
                        pwrite_all(own, &ping, sizeof ping, offsetof(struct ctl, pp.pong), "the pong");
                uint64_t n = ctl->records;
                if (n > 0 && n != seen) {
                        check_record(own, n - 1, "child");
                        seen = n;
                }
                /* The second view is the same bytes as the parent's. */
                check(((volatile uint64_t *) view_b)[0] == mix64(VIEW_B_OFF), "child: view B lost its first word");
                test_msleep(1);
        }
        ctl->child_offset = (uint64_t) lseek(own, 0, SEEK_CUR);
        ctl->child_shared = (uint64_t) lseek(mfd, 0, SEEK_CUR);
        exit(0);
}

int main(int argc, char **argv) {
        test_init(argc, argv);
        mfd = memfd_create(NAME, MFD_ALLOW_SEALING);
        if (mfd < 0)
                fail_errno("memfd_create");
        if (ftruncate(mfd, SIZE) < 0)
                fail_errno("ftruncate");
        uint8_t *view_a = mmap(NULL, MIB, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
        view_b = mmap(NULL, VIEW_B_LEN, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, VIEW_B_OFF);
        if (view_a == MAP_FAILED || view_b == MAP_FAILED)
                fail_errno("mmap the memfd");
        ctl = (struct ctl *) view_a;
        uint64_t w = mix64(VIEW_B_OFF);
        pwrite_all(mfd, &w, sizeof w, VIEW_B_OFF, "view B's first word");
        if (fcntl(mfd, F_ADD_SEALS, F_SEAL_SHRINK) < 0)
                fail_errno("F_ADD_SEALS");
        if (lseek(mfd, LINES, SEEK_SET) != LINES)
                fail_errno("lseek");
        pid_t pid = test_fork(child);
        test_ready();
        uint64_t n = 0;
        while (!test_verify_requested()) {
                uint8_t rec[64];
                record(n, rec);
                pwrite_all(mfd, rec, sizeof rec, record_off(n), "a record");
                ctl->records = ++n;
                char line[LINE + 1];
                snprintf(line, sizeof line, "%031llu\n", (unsigned long long) n);
                write_all(mfd, line, LINE, "a line");
                test_ping(&ctl->pp, pid, "the child's pwrite does not reach the parent's mapping (no pong)");
                test_heartbeat();
                test_msleep(2);
        }
        ctl->stop = 1;
        test_reap(pid);
        check(ctl->child_offset == 12345, "the child's own description is at offset %llu, not 12345",
              (unsigned long long) ctl->child_offset);
        struct stat sb;
        if (fstat(mfd, &sb) < 0)
                fail_errno("fstat");
        check(sb.st_size == SIZE, "the memfd has %lld bytes, not %d", (long long) sb.st_size, SIZE);
        int seals = fcntl(mfd, F_GET_SEALS);
        check(seals == F_SEAL_SHRINK, "the memfd's seals are %#x, not F_SEAL_SHRINK", seals);
        check(ftruncate(mfd, MIB) < 0 && errno == EPERM, "the memfd can be shrunk: its seal is lost");
        char link[64], target[256];
        snprintf(link, sizeof link, "/proc/self/fd/%d", mfd);
        ssize_t k = readlink(link, target, sizeof target - 1);
        target[k > 0 ? k : 0] = 0;
        check(!strcmp(target, "/memfd:" NAME " (deleted)"), "the memfd is now %s", target);
        off_t off = lseek(mfd, 0, SEEK_CUR);
        check(off == LINES + (off_t) n * LINE, "the shared offset is %lld, expected %lld after %llu lines",
              (long long) off, (long long) (LINES + (off_t) n * LINE), (unsigned long long) n);
        check(ctl->child_shared == (uint64_t) off, "the child sees the inherited description at %llu, the parent at "
              "%lld: not one description", (unsigned long long) ctl->child_shared, (long long) off);
        for (uint64_t i = n > 200 ? n - 200 : 0; i < n; i++)
                check_record(mfd, i, "parent");
        char line[LINE + 1];
        for (uint64_t i = 0; i < n; i++) {
                pread_all(mfd, line, LINE, LINES + (off_t) i * LINE, "a line");
                check(strtoull(line, NULL, 10) == i + 1 && line[LINE - 1] == '\n', "line %llu is damaged",
                      (unsigned long long) i);
        }
        pass();
}
