/* The restore plan: everything the restorer blob does, computed beforehand by
 * the loader (ordinary C with libc) so the blob itself only executes a list
 * of system calls. Plain data, no pointers into libc's memory: the blob runs
 * after that memory is gone. Lives in the bootstrap area together with the
 * blob's code and stacks. */
#pragma once

#include <stdint.h>

#include "rst-abi.h"

#define PLAN_MAGIC 0x4e414c5052544d44ull        /* "DMTRPLAN" */

enum plan_op_kind {
        PLAN_MAP_ANON = 1,      /* mmap anonymous at dst (MAP_FIXED_NOREPLACE) */
        PLAN_MAP_FILE,          /* mmap fd at dst, offset off */
        PLAN_MOVE,              /* mremap src -> dst (staging into place) */
        PLAN_COPY,              /* memcpy src -> dst */
        PLAN_ZERO,              /* memset dst to zero */
        PLAN_PROTECT,           /* mprotect dst, prot */
        PLAN_ADVISE,            /* madvise dst, advice */
        PLAN_UNMAP,             /* munmap src (staging no longer needed) */
        PLAN_CLOSE,             /* close fd */
        PLAN_MAP_OVER,          /* mmap fd at dst over what is there (MAP_FIXED): --lazy */
        PLAN_DUP,               /* mremap(src, 0, len) to dst: another view of shared memory */
        PLAN_SHMAT,             /* shmat(fd = the System V id, dst, flags) */
};

struct plan_op {
        uint32_t kind;
        uint32_t prot;
        uint32_t flags;         /* mmap flags */
        int32_t fd;
        uint64_t src, dst, len, off;
        int32_t advice;
        uint32_t reserved;
};

struct plan_thread {
        uint32_t tid;
        uint32_t leader;
        uint64_t fs_base, gs_base;
        uint64_t ctx;           /* struct rt_ctx in restored memory */
        uint64_t stack_top;     /* blob stack for this thread until it jumps */
};

struct plan_range {
        uint64_t start, end;
};

/* struct prctl_mm_map (linux/prctl.h), spelled out for the freestanding blob. */
struct plan_mm_map {
        uint64_t start_code, end_code, start_data, end_data;
        uint64_t start_brk, brk, start_stack;
        uint64_t arg_start, arg_end, env_start, env_end;
        uint64_t auxv;
        uint32_t auxv_size;
        uint32_t exe_fd;
};

struct plan {
        uint64_t magic;
        uint64_t boot_addr, boot_len;           /* the whole bootstrap area */
        uint64_t vdso_stage;                    /* free space in the area for vdso moves */
        uint32_t n_unmap, n_ops, n_threads, n_special;
        struct plan_range *unmap;               /* the helper's own mappings to remove */
        struct plan_op *ops;
        struct plan_thread *threads;
        struct {
                uint64_t from, to, len;         /* [vdso], [vvar], [vvar_vclock] */
        } special[4];
        struct plan_mm_map mm;
        int32_t mm_ok_without_exe;              /* retry PR_SET_MM_MAP without exe_fd */
        int32_t status_fd;
        int32_t fail_rc;
        uint32_t dumpable;
        uint64_t cap_effective, cap_permitted, cap_inheritable, cap_ambient;
        uint64_t incoming_var;                  /* &rt_incoming in restored memory */
        uint64_t incoming;                      /* struct rst_incoming in this area */
        _Atomic uint32_t threads_started;
        uint32_t reserved;
        uint8_t auxv[2048];
};
