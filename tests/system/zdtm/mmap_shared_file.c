/* mmap_shared_file: a MAP_SHARED, writable mapping of a 1 MiB file,
 * modified in place one word per step, with a private mirror of what it
 * must hold.
 *
 * Checked on every step: the word about to be changed and its page hold
 * what the mirror says; every 64 steps the whole mapping. At verification:
 * the mapping equals the mirror, and so does the file itself (after
 * msync, read through a new descriptor): the state of the last checkpoint
 * plus what the program wrote after the restart, nothing of what the
 * killed process wrote after the checkpoint.
 *
 * With --freeze the driver can stop the writes (file "freeze" present;
 * the program acknowledges by writing "frozen" = 1, and 0 when the file is
 * gone): it freezes the program around each checkpoint and kill, so the
 * file is unchanged when the restart validates it, and lets it write again
 * after the restart — the restored mapping must still be the file's. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "zdtmtst.h"

#define FILE_NAME "shared.dat"
#define SIZE (1024 * 1024)
#define WORDS (SIZE / 8)

static uint64_t *map, *mirror;

static void compare(size_t from, size_t to, const char *when) {
        for (size_t i = from; i < to; i++)
                check(map[i] == mirror[i], "%s: word %zu (page %zu) of the mapping is %#llx, expected %#llx", when, i,
                      i * 8 / 4096, (unsigned long long) map[i], (unsigned long long) mirror[i]);
}

int main(int argc, char **argv) {
        test_init(argc, argv);
        int fd = open(FILE_NAME, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd < 0)
                fail_errno("create %s", FILE_NAME);
        mirror = malloc(SIZE);
        check(mirror, "out of memory");
        for (size_t i = 0; i < WORDS; i++)
                mirror[i] = mix64(i);
        write_all(fd, mirror, SIZE, FILE_NAME);
        map = mmap(NULL, SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        if (map == MAP_FAILED)
                fail_errno("mmap %s", FILE_NAME);
        close(fd);
        compare(0, WORDS, "at start");
        bool freeze_protocol = argc > 1 && !strcmp(argv[1], "--freeze"), frozen = false;
        uint64_t step = 0, writes = 0;
        test_ready();

        while (!test_verify_requested()) {
                if (freeze_protocol && (access("freeze", F_OK) == 0) != frozen) {
                        frozen = !frozen;
                        test_write_file("frozen", frozen ? "1\n" : "0\n");
                }
                if (frozen) {
                        if (++step % 64 == 0)
                                compare(0, WORDS, "full check while frozen");
                        test_heartbeat();
                        test_msleep(2);
                        continue;
                }
                step++;
                writes++;
                /* A word in a different page each step, all pages in turn. */
                size_t page = (size_t) (step * 37) % (SIZE / 4096);
                size_t i = page * 512 + (size_t) (mix64(step) % 512);
                compare(page * 512, page * 512 + 512, "before a write");
                uint64_t v = mix64(step ^ 0xabcdef) | 1;
                mirror[i] = v;
                map[i] = v;
                if (step % 64 == 0)
                        compare(0, WORDS, "full check");
                test_heartbeat();
                test_msleep(2);
        }
        compare(0, WORDS, "at verification");
        check(writes > 0, "no write to the mapping");
        if (msync(map, SIZE, MS_SYNC) < 0)
                fail_errno("msync");
        fd = open(FILE_NAME, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                fail_errno("open %s", FILE_NAME);
        uint64_t *file = malloc(SIZE);
        check(file, "out of memory");
        pread_all(fd, file, SIZE, 0, FILE_NAME);
        close(fd);
        for (size_t k = 0; k < WORDS; k++)
                check(file[k] == mirror[k], "%s: word %zu in the file is %#llx, expected %#llx", FILE_NAME, k,
                      (unsigned long long) file[k], (unsigned long long) mirror[k]);
        pass();
}
