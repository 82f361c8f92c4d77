/* inotify_renamed: a watch whose path no longer leads to its file.
 *
 * The program watches directory "d" (watch 1, as fd 40) and renames it to
 * "d2": the watch follows the directory, but a restart could only add it
 * again by a path, and "d" is gone. A checkpoint must fail naming fd 40 and
 * the watch, and the program go on. When the file "close-fd" appears, the
 * program adds the watch again by its new name (the kernel gives back watch
 * 1) and writes "fd-closed"; checkpoints work then, and after the restarts
 * a file created in d2 must give watch 1 its IN_CREATE. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include "zdtmtst.h"

#define FD 40

int main(int argc, char **argv) {
        test_init(argc, argv);
        if (mkdir("d", 0700) < 0)
                fail_errno("mkdir d");
        int fd = inotify_init1(IN_NONBLOCK);
        if (fd < 0 || dup2(fd, FD) < 0)
                fail_errno("inotify_init1");
        close(fd);
        int wd = inotify_add_watch(FD, "d", IN_CREATE);
        check(wd == 1, "the watch is %d", wd);
        if (rename("d", "d2") < 0)
                fail_errno("rename");
        test_ready();
        bool readded = false;
        while (!test_verify_requested()) {
                if (!readded && access("close-fd", F_OK) == 0) {
                        wd = inotify_add_watch(FD, "d2", IN_CREATE);
                        check(wd == 1, "the watch added again by its new name is %d", wd);
                        readded = true;
                        test_write_file("fd-closed", "1\n");
                }
                test_heartbeat();
                test_msleep(5);
        }
        check(readded, "verification before the watch was added again");
        char buf[4096] __attribute__((aligned(8)));
        check(read(FD, buf, sizeof buf) < 0 && errno == EAGAIN, "an event came before any file was made");
        int f = open("d2/new", O_WRONLY | O_CREAT | O_EXCL, 0600);
        if (f < 0)
                fail_errno("create d2/new");
        close(f);
        struct pollfd p = { FD, POLLIN, 0 };
        check(poll(&p, 1, 5000) == 1, "no event for d2/new");
        ssize_t k = read(FD, buf, sizeof buf);
        struct inotify_event ev;
        check(k >= (ssize_t) sizeof ev, "read the inotify descriptor: %zd", k);
        memcpy(&ev, buf, sizeof ev);
        check(ev.wd == 1 && ev.mask == IN_CREATE && !strcmp(buf + sizeof ev, "new"),
              "event wd %d mask %#x name %s, expected IN_CREATE of new on watch 1", ev.wd, ev.mask, buf + sizeof ev);
        pass();
}
