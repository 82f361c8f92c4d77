/* Raw x86-64 system calls, without libc: no errno, no cancellation points,
 * no locks. Each returns the kernel's value (negative errno on failure).
 *
 * Used where libc cannot be trusted: in the runtime's signal handler and
 * snapshot child (other threads are frozen, maybe inside malloc), and in the
 * freestanding restorer (no libc at all). Header-only on purpose. */
#pragma once

#include <stdint.h>
#include <sys/syscall.h>

static inline long raw_syscall0(long n) {
        long r;
        __asm__ volatile("syscall" : "=a"(r) : "a"(n) : "rcx", "r11", "memory");
        return r;
}

static inline long raw_syscall1(long n, long a) {
        long r;
        __asm__ volatile("syscall" : "=a"(r) : "a"(n), "D"(a) : "rcx", "r11", "memory");
        return r;
}

static inline long raw_syscall2(long n, long a, long b) {
        long r;
        __asm__ volatile("syscall" : "=a"(r) : "a"(n), "D"(a), "S"(b) : "rcx", "r11", "memory");
        return r;
}

static inline long raw_syscall3(long n, long a, long b, long c) {
        long r;
        __asm__ volatile("syscall" : "=a"(r) : "a"(n), "D"(a), "S"(b), "d"(c) : "rcx", "r11", "memory");
        return r;
}

static inline long raw_syscall4(long n, long a, long b, long c, long d) {
        long r;
        register long r10 __asm__("r10") = d;
        __asm__ volatile("syscall" : "=a"(r) : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10) : "rcx", "r11", "memory");
        return r;
}

static inline long raw_syscall5(long n, long a, long b, long c, long d, long e) {
        long r;
        register long r10 __asm__("r10") = d;
        register long r8 __asm__("r8") = e;
        __asm__ volatile("syscall" : "=a"(r) : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8)
                         : "rcx", "r11", "memory");
        return r;
}

static inline long raw_syscall6(long n, long a, long b, long c, long d, long e, long f) {
        long r;
        register long r10 __asm__("r10") = d;
        register long r8 __asm__("r8") = e;
        register long r9 __asm__("r9") = f;
        __asm__ volatile("syscall" : "=a"(r) : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9)
                         : "rcx", "r11", "memory");
        return r;
}

#define RAW_FUTEX_WAIT_PRIVATE 128
#define RAW_FUTEX_WAKE_PRIVATE 129

static inline long raw_futex_wait(uint32_t *addr, uint32_t val, const void *timeout) {
        return raw_syscall4(SYS_futex, (long) addr, RAW_FUTEX_WAIT_PRIVATE, (long) val, (long) timeout);
}

static inline long raw_futex_wake(uint32_t *addr, int n) {
        return raw_syscall3(SYS_futex, (long) addr, RAW_FUTEX_WAKE_PRIVATE, n);
}

static inline long raw_gettid(void) { return raw_syscall0(SYS_gettid); }
static inline long raw_getpid(void) { return raw_syscall0(SYS_getpid); }
