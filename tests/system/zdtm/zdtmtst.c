/* The shared life of the zdtm test programs: see zdtmtst.h. */
#include "zdtmtst.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

pid_t test_pid;
const char *test_name = "zdtm";

static volatile sig_atomic_t verify_requested;
static int heartbeat_fd = -1;
static uint64_t heartbeats;

static void on_sigusr1(int sig) {
        (void) sig;
        verify_requested = 1;
}

bool test_verify_requested(void) {
        return verify_requested;
}

void write_all(int fd, const void *buf, size_t len, const char *what) {
        const char *p = buf;
        while (len) {
                ssize_t n = write(fd, p, len);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0)
                        fail_errno("write %s", what);
                p += n;
                len -= (size_t) n;
        }
}

void pwrite_all(int fd, const void *buf, size_t len, off_t off, const char *what) {
        const char *p = buf;
        while (len) {
                ssize_t n = pwrite(fd, p, len, off);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0)
                        fail_errno("pwrite %s", what);
                p += n;
                off += n;
                len -= (size_t) n;
        }
}

void read_all(int fd, void *buf, size_t len, const char *what) {
        char *p = buf;
        while (len) {
                ssize_t n = read(fd, p, len);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0)
                        fail_errno("read %s", what);
                if (n == 0)
                        fail("read %s: unexpected end of file (%zu bytes missing)", what, len);
                p += n;
                len -= (size_t) n;
        }
}

void pread_all(int fd, void *buf, size_t len, off_t off, const char *what) {
        char *p = buf;
        while (len) {
                ssize_t n = pread(fd, p, len, off);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0)
                        fail_errno("pread %s", what);
                if (n == 0)
                        fail("pread %s: unexpected end of file at %lld (%zu bytes missing)", what,
                             (long long) off, len);
                p += n;
                off += n;
                len -= (size_t) n;
        }
}

/* Write path atomically (temporary file, then rename): the driver never
 * reads half a file. Only used when no checkpoint can be running (before
 * "ready", at the very end, or when the driver waits for this file), so
 * no descriptor of a temporary file is ever in an image. */
void test_write_file(const char *path, const char *text) {
        char tmp[256];
        snprintf(tmp, sizeof tmp, ".%s.tmp", path);
        int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd < 0) {
                fprintf(stderr, "%s: cannot create %s: %s\n", test_name, tmp, strerror(errno));
                _exit(2);
        }
        size_t len = strlen(text);
        while (len) {
                ssize_t n = write(fd, text, len);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0) {
                        fprintf(stderr, "%s: cannot write %s: %s\n", test_name, tmp, strerror(errno));
                        _exit(2);
                }
                text += n;
                len -= (size_t) n;
        }
        fsync(fd);
        close(fd);
        if (rename(tmp, path) < 0) {
                fprintf(stderr, "%s: cannot rename %s: %s\n", test_name, tmp, strerror(errno));
                _exit(2);
        }
}

void test_init(int argc, char **argv) {
        (void) argc;
        const char *slash = strrchr(argv[0], '/');
        test_name = slash ? slash + 1 : argv[0];
        test_pid = getpid();
        struct sigaction sa = { .sa_handler = on_sigusr1, .sa_flags = SA_RESTART };
        sigemptyset(&sa.sa_mask);
        if (sigaction(SIGUSR1, &sa, NULL) < 0)
                fail_errno("sigaction(SIGUSR1)");
        heartbeat_fd = open(TEST_HEARTBEAT_FILE, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (heartbeat_fd < 0)
                fail_errno("open %s", TEST_HEARTBEAT_FILE);
        unlink(TEST_RESULT_FILE);
        unlink(TEST_READY_FILE);
}

void test_ready(void) {
        char buf[32];
        snprintf(buf, sizeof buf, "%d\n", (int) test_pid);
        test_heartbeat();
        test_write_file(TEST_READY_FILE, buf);
}

void test_heartbeat(void) {
        char buf[32];
        uint64_t h = __atomic_add_fetch(&heartbeats, 1, __ATOMIC_RELAXED);
        int n = snprintf(buf, sizeof buf, "%020llu\n", (unsigned long long) h);
        pwrite_all(heartbeat_fd, buf, (size_t) n, 0, TEST_HEARTBEAT_FILE);
}

uint64_t test_heartbeats(void) {
        return heartbeats;
}

void test_msleep(unsigned ms) {
        struct timespec ts = { ms / 1000, (long) (ms % 1000) * 1000000L };
        while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
                ;
}

static _Noreturn void finish(bool ok, const char *reason) {
        char buf[1200];
        snprintf(buf, sizeof buf, "%s%s%s\n", ok ? "PASS" : "FAIL: ", ok ? "" : test_name, ok ? "" : reason);
        if (!ok)
                fprintf(stderr, "%s", buf + 6);
        test_write_file(TEST_RESULT_FILE, buf);
        exit(ok ? 0 : 1);
}

_Noreturn void pass(void) {
        /* Every restored process keeps its pid: the driver and the program
         * both rely on it. */
        if (getpid() != test_pid)
                fail("pid changed: started as %d, now %d", (int) test_pid, (int) getpid());
        finish(true, "");
}

_Noreturn void fail(const char *fmt, ...) {
        char msg[1024];
        msg[0] = ':';
        msg[1] = ' ';
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg + 2, sizeof msg - 2, fmt, ap);
        va_end(ap);
        finish(false, msg);
}

_Noreturn void fail_errno(const char *fmt, ...) {
        int e = errno;
        char msg[900];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof msg, fmt, ap);
        va_end(ap);
        fail("%s: %s", msg, strerror(e));
}

/* One byte with a descriptor (SCM_RIGHTS) over a Unix socket, and back. */
void send_fd(int via, int fd) {
        char c = 'x';
        struct iovec iov = { &c, 1 };
        union {
                struct cmsghdr h;
                char buf[CMSG_SPACE(sizeof(int))];
        } u;
        memset(&u, 0, sizeof u);
        struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf, .msg_controllen = sizeof u.buf };
        struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
        cm->cmsg_level = SOL_SOCKET;
        cm->cmsg_type = SCM_RIGHTS;
        cm->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(cm), &fd, sizeof fd);
        if (sendmsg(via, &mh, 0) != 1)
                fail_errno("sendmsg SCM_RIGHTS");
}

int recv_fd(int via) {
        char c;
        struct iovec iov = { &c, 1 };
        union {
                struct cmsghdr h;
                char buf[CMSG_SPACE(sizeof(int))];
        } u;
        struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf, .msg_controllen = sizeof u.buf };
        if (recvmsg(via, &mh, 0) != 1)
                fail_errno("recvmsg SCM_RIGHTS");
        struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
        check(cm && cm->cmsg_type == SCM_RIGHTS, "no descriptor came with the message");
        int fd;
        memcpy(&fd, CMSG_DATA(cm), sizeof fd);
        return fd;
}
