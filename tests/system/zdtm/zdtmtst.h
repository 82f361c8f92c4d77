/* The life every zdtm test program shares (after CRIU's test/zdtm/lib):
 *
 *   test_init()      set up: remember our pid, open the heartbeat file,
 *                    install the SIGUSR1 handler that asks for verification
 *   ...              the program's own set-up
 *   test_ready()     write "ready" (our pid): the driver may checkpoint now
 *   while (!test_verify_requested()) { work; test_heartbeat(); }
 *   ...              check the state
 *   pass() / fail()  write "result" (PASS, or FAIL: reason) and exit 0/1
 *
 * A program that finds its state inconsistent while it runs calls fail() at
 * once: the driver sees it end and reports the reason from "result".
 *
 * Every file lives in the current directory, which the driver makes a fresh
 * directory per test. The verification request is SIGUSR1; SIGUSR2 is
 * dmtcp's checkpoint signal, which the runtime hides from the program (the
 * signals test uses it as an ordinary signal of its own).
 *
 * Remember what a restart means: the process continues from the checkpoint
 * and everything it did after it is lost, so checks compare the state with
 * what the program itself recorded in memory, never with the wall clock. */
#pragma once

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#define TEST_RESULT_FILE "result"
#define TEST_READY_FILE "ready"
#define TEST_HEARTBEAT_FILE "heartbeat"

void test_init(int argc, char **argv);
void test_ready(void);
/* Progress the driver waits for after a restart: call once per loop. */
void test_heartbeat(void);
uint64_t test_heartbeats(void);
bool test_verify_requested(void);
/* Write a small file atomically (for handshakes with the driver). */
void test_write_file(const char *path, const char *text);
/* Sleep ms milliseconds, resuming after EINTR (a checkpoint, a signal). */
void test_msleep(unsigned ms);

/* The pid recorded by test_init: a restored process must have the same. */
extern pid_t test_pid;
extern const char *test_name;

_Noreturn void pass(void);
_Noreturn void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* fail() with ": strerror(errno)" appended. */
_Noreturn void fail_errno(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#define check(cond, ...)                                   \
        do {                                               \
                if (!(cond))                               \
                        fail(__VA_ARGS__);                 \
        } while (0)

/* Deterministic pseudo-random numbers (splitmix64): patterns derived from a
 * seed can be recomputed to verify memory and files. */
static inline uint64_t mix64(uint64_t x) {
        x += 0x9e3779b97f4a7c15ULL;
        x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
        x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
        return x ^ (x >> 31);
}

/* write(2)/pwrite(2) of all bytes, retrying after EINTR; fail() otherwise. */
void write_all(int fd, const void *buf, size_t len, const char *what);
void pwrite_all(int fd, const void *buf, size_t len, off_t off, const char *what);
/* read(2) of exactly len bytes (fails on a short read). */
void read_all(int fd, void *buf, size_t len, const char *what);
void pread_all(int fd, void *buf, size_t len, off_t off, const char *what);

/* Send one byte carrying descriptor fd (SCM_RIGHTS) over the Unix socket
 * via; receive such a byte and return the descriptor. fail() otherwise. */
void send_fd(int via, int fd);
int recv_fd(int via);
