#include <sched.h>
#include <string.h>
#include <linux/futex.h>

#include "raw-syscall.h"
#include "rawthread.h"

long rt_raw_clone(unsigned long flags, void *stack_top, int *ptid, int *ctid, void (*fn)(void *), void *arg);

#define STACK_SIZE (512 * 1024)

int rt_rawthread_start(struct rt_rawthread *t, void (*fn)(void *), void *arg) {
        t->stack_size = STACK_SIZE;
        t->stack = rt_map_scratch(t->stack_size);
        if (!t->stack)
                return -ENOMEM;
        atomic_store(&t->tid, -1);
        unsigned long flags = CLONE_VM | CLONE_FS | CLONE_FILES | CLONE_SIGHAND | CLONE_THREAD | CLONE_SYSVSEM |
                              CLONE_CHILD_CLEARTID | CLONE_CHILD_SETTID;
        long r = rt_raw_clone(flags, (char *) t->stack + t->stack_size, NULL, (int *) &t->tid, fn, arg);
        if (r < 0) {
                rt_unmap_scratch(t->stack, t->stack_size);
                t->stack = NULL;
                atomic_store(&t->tid, 0);
                return (int) r;
        }
        return 0;
}

void rt_rawthread_join(struct rt_rawthread *t) {
        if (!t->stack)
                return;
        /* The kernel clears tid and wakes (a shared futex) once the thread
         * has left its stack for good. */
        for (;;) {
                int32_t v = atomic_load(&t->tid);
                if (v == 0)
                        break;
                raw_syscall4(SYS_futex, (long) &t->tid, FUTEX_WAIT, v, 0);
        }
        rt_unmap_scratch(t->stack, t->stack_size);
        t->stack = NULL;
}

unsigned rt_ncpus(void) {
        cpu_set_t set;
        CPU_ZERO(&set);
        if (raw_syscall3(SYS_sched_getaffinity, 0, sizeof set, (long) &set) <= 0)
                return 1;
        int n = CPU_COUNT(&set);
        return n < 1 ? 1 : n > 64 ? 64 : (unsigned) n;
}
