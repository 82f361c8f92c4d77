/* forkflags: the program's fork() and its fork flags across checkpoints.
 *
 * A checkpoint of a process with a few hundred MiB of anonymous memory
 * shares that memory ahead of its pause by forking throwaway children with
 * slices of it marked MADV_DONTFORK, and puts every flag back before the
 * pause (preload/mem.c, rt_mem_share_ahead). Here the program holds
 *   - BIG (320 MiB, enough for that) of plain memory, rewritten a slice per
 *     step, so the checkpoint meets both settled and freshly written pages;
 *   - KEEP (8 MiB) that the program marked MADV_DONTFORK itself;
 *   - WIPE (8 MiB) that it marked MADV_WIPEONFORK;
 * and forks a child every step, checkpoint or not. Each child must see BIG
 * whole (a page in every MiB, and the slice last written, carry the
 * parent's pattern), KEEP absent and WIPE zero. The parent checks its own
 * flags in /proc/self/smaps every few steps (BIG must never be left
 * MADV_DONTFORK, KEEP and WIPE must stay marked) and, at verification,
 * every byte. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "zdtmtst.h"

#define PAGE 4096u
#define MIB (1024u * 1024u)
#define BIG_MIB 320u
#define SMALL_MIB 8u
#define SLICE_MIB 4u

static uint64_t *big, *keep, *wipe;
static uint64_t gen[BIG_MIB / SLICE_MIB];     /* how often each slice was written */

static uint64_t word(uint64_t off, uint64_t g, uint64_t tag) {
        return mix64(off * 0x9e3779b97f4a7c15ULL ^ (g << 40) ^ tag);
}

static void fill(uint64_t *p, size_t bytes, uint64_t base, uint64_t g, uint64_t tag) {
        for (size_t i = 0; i < bytes / 8; i++)
                p[i] = word(base + i, g, tag);
}

/* Index of the first wrong word + 1, or 0. */
static size_t bad(const uint64_t *p, size_t bytes, uint64_t base, uint64_t g, uint64_t tag) {
        for (size_t i = 0; i < bytes / 8; i++)
                if (p[i] != word(base + i, g, tag))
                        return i + 1;
        return 0;
}

static const size_t slice_words = (size_t) SLICE_MIB * MIB / 8;

static size_t check_big_page(size_t page) {
        size_t w = page * (PAGE / 8), s = w / slice_words;
        return bad(big + w, PAGE, w, gen[s], 1);
}

static unsigned child_slice;

/* Exit status: 0 fine, else which check failed. */
static _Noreturn void child_main(void) {
        for (size_t mib = 0; mib < BIG_MIB; mib++)
                if (check_big_page(mib * (MIB / PAGE) + mib % (MIB / PAGE)))
                        _exit(2);
        size_t first = (size_t) child_slice * SLICE_MIB * (MIB / PAGE);
        for (size_t p = first; p < first + SLICE_MIB * (MIB / PAGE); p++)
                if (check_big_page(p))
                        _exit(3);
        unsigned char vec;
        if (mincore(keep, PAGE, &vec) == 0 || errno != ENOMEM)
                _exit(4);                       /* MADV_DONTFORK memory is not in the child */
        for (size_t i = 0; i < (size_t) SMALL_MIB * MIB / 8; i += PAGE / 8)
                if (wipe[i])
                        _exit(5);               /* MADV_WIPEONFORK memory is zero in the child */
        _exit(0);
}

static void fork_and_check(unsigned slice) {
        child_slice = slice;
        pid_t c = fork();
        check(c >= 0, "fork: %s", strerror(errno));
        if (c == 0)
                child_main();
        int st;
        while (waitpid(c, &st, 0) < 0)
                check(errno == EINTR, "waitpid: %s", strerror(errno));
        static const char *const what[] = { "", "", "a page of the large region differs", "the slice last written differs",
                                            "the MADV_DONTFORK region is mapped", "the MADV_WIPEONFORK region is not zero" };
        if (WIFSIGNALED(st))
                fail("a forked child was killed by signal %d (memory missing from it?)", WTERMSIG(st));
        int rc = WEXITSTATUS(st);
        check(rc == 0, "in a forked child: %s", rc < 6 ? what[rc] : "unknown failure");
}

/* The VmFlags of the mapping that starts at p, from /proc/self/smaps. */
static void vmflags(const void *p, char *out, size_t size) {
        FILE *f = fopen("/proc/self/smaps", "re");
        check(f != NULL, "open /proc/self/smaps: %s", strerror(errno));
        char line[512];
        bool in = false;
        out[0] = 0;
        while (fgets(line, sizeof line, f)) {
                unsigned long long s, e;
                if (sscanf(line, "%llx-%llx ", &s, &e) == 2 && strchr(line, '-') < strchr(line, ' '))
                        in = s <= (uintptr_t) p && (uintptr_t) p < e;
                else if (in && !strncmp(line, "VmFlags:", 8)) {
                        snprintf(out, size, "%s", line + 8);
                        break;
                }
        }
        fclose(f);
}

static bool has_flag(const char *flags, const char *f) {
        for (const char *p = flags; (p = strstr(p, f)); p++)
                if ((p == flags || p[-1] == ' ') && (p[2] == ' ' || p[2] == '\n' || !p[2]))
                        return true;
        return false;
}

static void check_flags(void) {
        char f[256];
        for (size_t mib = 0; mib < BIG_MIB; mib += SLICE_MIB) {
                vmflags((const char *) big + (size_t) mib * MIB, f, sizeof f);
                check(f[0] && !has_flag(f, "dc") && !has_flag(f, "wf"),
                      "the large region at +%zu MiB has VmFlags %s", mib, f);
        }
        vmflags(keep, f, sizeof f);
        check(has_flag(f, "dc"), "the MADV_DONTFORK region lost its flag: VmFlags %s", f);
        vmflags(wipe, f, sizeof f);
        check(has_flag(f, "wf"), "the MADV_WIPEONFORK region lost its flag: VmFlags %s", f);
}

static uint64_t *map(size_t bytes) {
        void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        check(p != MAP_FAILED, "mmap: %s", strerror(errno));
        return p;
}

int main(int argc, char **argv) {
        test_init(argc, argv);
        big = map((size_t) BIG_MIB * MIB);
        keep = map((size_t) SMALL_MIB * MIB);
        wipe = map((size_t) SMALL_MIB * MIB);
        check(madvise(keep, (size_t) SMALL_MIB * MIB, MADV_DONTFORK) == 0, "MADV_DONTFORK: %s", strerror(errno));
        check(madvise(wipe, (size_t) SMALL_MIB * MIB, MADV_WIPEONFORK) == 0, "MADV_WIPEONFORK: %s", strerror(errno));
        for (unsigned s = 0; s < BIG_MIB / SLICE_MIB; s++)
                fill(big + (size_t) s * slice_words, (size_t) SLICE_MIB * MIB, (uint64_t) s * slice_words, 0, 1);
        fill(keep, (size_t) SMALL_MIB * MIB, 0, 0, 2);
        fill(wipe, (size_t) SMALL_MIB * MIB, 0, 0, 3);
        check_flags();
        test_ready();

        unsigned slice = 0;
        for (uint64_t step = 1; !test_verify_requested(); step++) {
                gen[slice]++;
                fill(big + (size_t) slice * slice_words, (size_t) SLICE_MIB * MIB, (uint64_t) slice * slice_words,
                     gen[slice], 1);
                fork_and_check(slice);
                if (step % 8 == 0)
                        check_flags();
                slice = (slice + 1) % (BIG_MIB / SLICE_MIB);
                test_heartbeat();
                test_msleep(5);
        }
        check_flags();
        for (unsigned s = 0; s < BIG_MIB / SLICE_MIB; s++) {
                size_t b = bad(big + (size_t) s * slice_words, (size_t) SLICE_MIB * MIB, (uint64_t) s * slice_words,
                               gen[s], 1);
                check(!b, "the large region differs at slice %u, word %zu", s, b - 1);
        }
        size_t b = bad(keep, (size_t) SMALL_MIB * MIB, 0, 0, 2);
        check(!b, "the MADV_DONTFORK region differs at word %zu", b - 1);
        b = bad(wipe, (size_t) SMALL_MIB * MIB, 0, 0, 3);
        check(!b, "the MADV_WIPEONFORK region differs at word %zu", b - 1);
        fork_and_check(0);
        pass();
}
