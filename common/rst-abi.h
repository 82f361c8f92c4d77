/* The hand-off between the restart side (dmtcp_restart and its restorer) and
 * the runtime inside the restored process. Both sides are built from the same
 * tree, but the runtime's half lives in the image's memory, so the structure
 * is versioned and checked.
 *
 * The restorer writes a pointer to a struct rst_incoming into the runtime
 * variable whose address the image records (img_process.rst_incoming). The
 * structure sits in the restorer's bootstrap area, which the runtime unmaps
 * once it has copied what it needs. */
#pragma once

#include <stdint.h>

/* A suspended thread's resume point: callee-saved registers, stack pointer
 * and return address, as saved by rt_ctx_save (preload/ctx.S). Never pointer
 * mangled, so the restorer can load it without glibc's pointer guard. */
struct rt_ctx {
        uint64_t rbx, rbp, r12, r13, r14, r15, rsp, rip;
};

#define RST_INCOMING_MAGIC   0x4e49545352544d44ull   /* "DMTRSTIN" */
#define RST_INCOMING_VERSION 3
#define RST_MAX_FILE_FDS 256
#define RST_MAX_PTYS 16

enum rst_flags {
        RST_F_LAZY = 1u << 0,             /* memory mapped from the image, loads on touch */
        RST_F_NEW_PIDNS = 1u << 1,        /* restored in a fresh pid namespace */
        RST_F_INTERVAL_SET = 1u << 2,     /* -i given on restart */
};

struct rst_range {
        uint64_t start, end;
};

/* A file the restart tool recreated from the image (a file that was deleted
 * while open, or a shared memory object), open on fd in the restored
 * process. */
struct rst_file_fd {
        uint32_t file;                          /* index of the image's IMG_R_FILE, or RST_FILE_SHM | IMG_R_SHM index */
        int32_t fd;
};
#define RST_FILE_SHM 0x80000000u

/* A pty the restart tool made before the processes, because it was the
 * controlling terminal of a session of the computation: Linux gives a
 * controlling terminal only to a session leader (TIOCSCTTY) and, by fork,
 * to the processes it creates afterwards. Its master is open on `master`
 * in every restored process (the runtime of the process that holds the
 * master takes it); the session leader holds the slave on `slave` (until
 * then a placeholder) so that the session keeps it until the program's own
 * descriptors of it are back. The runtime closes both. */
struct rst_pty_fd {
        uint32_t index;                         /* the pty's number at the checkpoint */
        int32_t master, slave;
};

struct rst_incoming {
        uint64_t magic;
        uint32_t version;
        uint32_t flags;
        uint64_t bootstrap_addr, bootstrap_len;  /* restorer area, unmapped by the runtime */
        int32_t status_fd;                      /* report to dmtcp_restart, then close */
        int32_t fail_rc;
        uint32_t coord_kind;                    /* enum coord_kind */
        uint16_t coord_port;
        uint16_t reserved;
        uint32_t interval;
        uint32_t n_file_fds;
        uint32_t members;                       /* processes restarted together (the generation's) */
        uint32_t reserved2;
        uint64_t generation;
        /* --lazy: the image file (as /proc/self/maps names it), mapped
         * privately over parts of anonymous regions. To the program that is
         * anonymous memory whose every page holds data: the runtime saves
         * it as such, never as a mapping of the image, which later
         * checkpoints may delete. 0, 0 when nothing is mapped. */
        uint64_t image_dev, image_ino;
        uint64_t restart_start_usec;            /* CLOCK_MONOTONIC when dmtcp_restart started */
        char coord_host[256];
        char coord_path[108];
        char job[72];
        char ckptdir[4096];                     /* where later checkpoints go */
        char gen_dir[4096];                     /* generation restored from */
        char secret[128];
        struct rst_file_fd file_fds[RST_MAX_FILE_FDS];
        uint32_t n_ptys;
        uint32_t reserved3;
        struct rst_pty_fd ptys[RST_MAX_PTYS];
};
