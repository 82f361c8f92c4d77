/* api: the application interface of include/dmtcp.h.
 *
 *   api            under dmtcp_launch; the driver talks to it with files:
 *     "request"    -> it calls dmtcp_checkpoint() and writes its return
 *                     value to "answer" as "<value> <request number>". The
 *                     same call returns again in a process restarted from
 *                     that checkpoint, which writes "2 <n>" there.
 *     "hold"       -> dmtcp_disable_ckpt(), writes "held", waits for
 *                     "release", then dmtcp_enable_ckpt() and writes "released".
 *   api --native   run alone: every call says dmtcp is not present.
 *
 * Checked inside: dmtcp_is_enabled() is 1 under dmtcp; dmtcp_checkpoint()
 * inside a disabled section is refused with -EDEADLK; an unmatched
 * dmtcp_enable_ckpt() is -EINVAL; each call returns 1 (after checkpoint) or
 * 2 (after restart), never anything else; the main loop's counter goes on. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "dmtcp.h"
#include "zdtmtst.h"

static volatile uint64_t counter;

static bool take(const char *path) {
        return unlink(path) == 0;
}

static void *requester(void *arg) {
        (void) arg;
        unsigned n = 0;
        for (;;) {
                if (take("request")) {
                        n++;
                        int r = dmtcp_checkpoint();
                        check(r == DMTCP_AFTER_CHECKPOINT || r == DMTCP_AFTER_RESTART,
                              "dmtcp_checkpoint() returned %d (request %u)", r, n);
                        char line[32];
                        snprintf(line, sizeof line, "%d %u\n", r, n);
                        test_write_file("answer", line);
                }
                if (take("hold")) {
                        check(dmtcp_disable_ckpt() == 1, "dmtcp_disable_ckpt() failed");
                        check(dmtcp_disable_ckpt() == 1, "nested dmtcp_disable_ckpt() failed");
                        check(dmtcp_checkpoint() == -EDEADLK, "dmtcp_checkpoint() in a disabled section");
                        check(dmtcp_enable_ckpt() == 1, "inner dmtcp_enable_ckpt() failed");
                        test_write_file("held", "held\n");
                        while (!take("release"))
                                test_msleep(5);
                        check(dmtcp_enable_ckpt() == 1, "dmtcp_enable_ckpt() failed");
                        check(dmtcp_enable_ckpt() == -EINVAL, "an unmatched dmtcp_enable_ckpt() was accepted");
                        test_write_file("released", "released\n");
                }
                test_msleep(5);
        }
        return NULL;
}

int main(int argc, char **argv) {
        if (argc > 1 && !strcmp(argv[1], "--native")) {
                int e = dmtcp_is_enabled(), c = dmtcp_checkpoint(), d = dmtcp_disable_ckpt(), u = dmtcp_enable_ckpt();
                printf("enabled %d checkpoint %d disable %d enable %d\n", e, c, d, u);
                return e == 0 && c == DMTCP_NOT_PRESENT && d == DMTCP_NOT_PRESENT && u == DMTCP_NOT_PRESENT ? 0 : 1;
        }
        test_init(argc, argv);
        check(dmtcp_is_enabled() == 1, "dmtcp_is_enabled() is %d under dmtcp_launch", dmtcp_is_enabled());
        pthread_t t;
        check(pthread_create(&t, NULL, requester, NULL) == 0, "pthread_create failed");
        test_ready();
        uint64_t at_ready = counter;
        while (!test_verify_requested()) {
                counter++;
                test_heartbeat();
                test_msleep(2);
        }
        check(counter > at_ready, "the counter did not move");
        check(dmtcp_is_enabled() == 1, "dmtcp_is_enabled() is %d after the restarts", dmtcp_is_enabled());
        pass();
}
