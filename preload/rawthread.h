/* Worker threads without libc (see rawclone.S). They share the creator's
 * thread pointer, so their code must not use TLS (errno included): raw
 * system calls only, plus libdeflate with our allocator. Suspended-safe. */
#pragma once

#include "rt.h"

struct rt_rawthread {
        void *stack;
        size_t stack_size;
        _Atomic int32_t tid;    /* cleared by the kernel when the thread is gone */
};

int rt_rawthread_start(struct rt_rawthread *t, void (*fn)(void *), void *arg);
void rt_rawthread_join(struct rt_rawthread *t);
unsigned rt_ncpus(void);
