/* The checkpoint image format, version 1 (docs/image-format.md).
 *
 *   [0, 4096)            header (struct img_header, zero padded)
 *   [4096, data_end)     data blocks, in address order: raw blocks start on a
 *                        page boundary (so they can be mapped straight from
 *                        the file), deflate blocks are packed
 *   [meta_off, +len)     metadata: a sequence of records (struct img_record
 *                        + payload, each padded to 8 bytes)
 *
 * The header is written last, so a partly written file never carries a valid
 * header. Every block carries the crc32 of its stored bytes, the metadata
 * carries its crc32 in the header, and the header carries its own crc32: the
 * header crc is therefore a checksum of the whole image and is what the
 * generation's MANIFEST lists.
 *
 * All integers are little-endian (the format is only read on the
 * architecture that wrote it; `arch` is checked). Structures have explicit
 * sizes with no implicit padding. */
#pragma once

#include "macro.h"

#define IMG_MAGIC         "DMTCPIMG"
#define IMG_VERSION       1
#define IMG_HEADER_SIZE   4096u
#define IMG_BLOCK_MAX     (1u << 20)       /* largest uncompressed block */
#define IMG_NONE          0xffffffffu
#define IMG_ARCH_X86_64   62u              /* EM_X86_64 */

/* Limits the parser enforces, so a hostile image cannot make the restart
 * tool allocate or loop without bound. */
#define IMG_MAX_REGIONS   65536u
#define IMG_MAX_BLOCKS    (1u << 24)
#define IMG_MAX_THREADS   16384u
#define IMG_MAX_FDS       65536u
#define IMG_MAX_FILES     65536u
#define IMG_MAX_TIMERS    4096u
#define IMG_MAX_CHILDREN  65536u
#define IMG_MAX_SHMS      65536u
#define IMG_MAX_SYSV      65536u
#define IMG_MAX_META      (1u << 30)
#define IMG_PATH_MAX      4096u

enum img_header_flags {
        IMG_HF_COMPRESSED = 1u << 0,       /* some blocks are deflate */
        IMG_HF_LIBS_SAVED = 1u << 1,       /* --ckpt-libraries: file maps copied */
};

struct img_header {
        char magic[8];
        uint32_t version;
        uint32_t header_size;              /* IMG_HEADER_SIZE */
        uint32_t arch;
        uint32_t page_size;
        uint32_t flags;
        uint32_t header_crc;               /* crc32 of the 4096 bytes with this field 0 */
        uint64_t file_size;                /* exact size of the image file */
        uint64_t data_off, data_end;
        uint64_t meta_off, meta_len;
        uint32_t meta_crc;
        uint32_t n_records;
        uint64_t generation;
        uint64_t ckpt_time_usec;           /* CLOCK_REALTIME at capture */
        uint32_t uid, gid;
        uint32_t pid, ppid, pgid, sid;
        uint64_t xcr0;                     /* CPU state components in signal frames */
        uint32_t vdso_size, vdso_crc;      /* identity of the kernel's vdso */
        uint64_t mem_bytes;                /* uncompressed bytes of memory saved */
        uint32_t n_members;                /* processes in this checkpoint */
        uint32_t reserved0;
        char kernel_release[68];           /* uname -r */
        char kernel_build[132];            /* uname -v */
        char comp_id[128];
        char upid[128];
        char program[256];
        char host[256];
        uint8_t pad[IMG_HEADER_SIZE - 1120];
};
_Static_assert(sizeof(struct img_header) == IMG_HEADER_SIZE, "img_header size");

enum img_record_type {
        IMG_R_PROCESS = 1,                 /* struct img_process + exe path + cwd */
        IMG_R_AUXV,                        /* raw bytes of /proc/self/auxv */
        IMG_R_THREAD,                      /* struct img_thread */
        IMG_R_FILE,                        /* struct img_file + path */
        IMG_R_REGION,                      /* struct img_region + name */
        IMG_R_BLOCKS,                      /* array of struct img_block */
        IMG_R_FD,                          /* struct img_fd + path */
        IMG_R_SIGACTIONS,                  /* 64 struct img_sigaction (signals 1..64) */
        IMG_R_TIMER,                       /* struct img_timer */
        IMG_R_RUNTIME,                     /* opaque bytes owned by the runtime */
        IMG_R_CHILD,                       /* struct img_child: exited, not yet reaped */
        IMG_R_SHM,                         /* struct img_shm + name: a shared memory object */
        IMG_R_SYSV,                        /* struct img_sysv + data: a System V semaphore set or message queue */
        _IMG_R_MAX,
};

struct img_record {
        uint32_t type;
        uint32_t len;                      /* payload bytes, not counting padding */
};

struct img_process {
        uint64_t start_code, end_code, start_data, end_data;
        uint64_t start_brk, brk, start_stack;
        uint64_t arg_start, arg_end, env_start, env_end;
        uint64_t rst_incoming;             /* address of the runtime's restart hand-off pointer */
        uint64_t cap_effective, cap_permitted, cap_inheritable, cap_ambient;
        uint64_t blocked_ckpt_sigs;        /* informational */
        uint64_t shared_pending;           /* process-wide pending signals */
        uint64_t itimer[3][4];             /* REAL/VIRTUAL/PROF: interval sec,usec, value sec,usec */
        uint64_t rlimit[16][2];            /* RLIMIT_* soft, hard */
        uint32_t umask, personality, dumpable, no_new_privs;
        uint32_t thp_disable, child_subreaper, pdeath_signal, ckpt_signal;
        uint64_t timerslack_ns;
        uint32_t exe_len, cwd_len;         /* strings follow: exe, then cwd (no NUL) */
};

enum img_thread_flags {
        IMG_TF_LEADER = 1u << 0,           /* tid == pid */
        IMG_TF_CKPT = 1u << 1,             /* the runtime's checkpoint thread */
};

struct img_thread {
        uint32_t tid;
        uint32_t flags;
        uint64_t fs_base, gs_base;
        uint64_t ctx_addr;                 /* saved context in the image's memory */
        uint64_t clear_child_tid;
        uint64_t robust_list, robust_len;
        uint64_t rseq_addr;
        uint32_t rseq_len, rseq_sig;
        uint64_t sigmask, sigpending;
        uint64_t altstack_sp, altstack_size;
        uint32_t altstack_flags;
        uint32_t reserved;
        char comm[16];
};

enum img_file_flags {
        IMG_FF_DELETED = 1u << 0,          /* unlinked while open: content saved */
        IMG_FF_CONTENT = 1u << 1,          /* content saved in FILE blocks */
        IMG_FF_CRC = 1u << 2,              /* crc is the crc32 of the whole file */
};

struct img_file {
        uint64_t dev, ino, size;
        int64_t mtime_sec;
        uint32_t mtime_nsec;
        uint32_t mode;
        uint32_t crc;
        uint32_t flags;
        uint32_t path_len;                 /* path follows (no NUL) */
        uint32_t reserved;
};

enum img_region_kind {
        IMG_RK_ANON = 1,                   /* private anonymous (heap, stacks, malloc) */
        IMG_RK_FILE_PRIVATE,               /* private file mapping: file + dirty pages */
        IMG_RK_FILE_SHARED,                /* shared file mapping: content written back */
        IMG_RK_ANON_SHARED,                /* shared anonymous (also /dev/zero) */
        IMG_RK_VDSO,                       /* [vdso]: moved, never saved */
        IMG_RK_VVAR,                       /* [vvar], [vvar_vclock]: moved, never saved */
        IMG_RK_RESERVED,                   /* PROT_NONE reservation without content */
        IMG_RK_SHM,                        /* a view of shared memory object `shm` (content: the object's) */
        _IMG_RK_MAX,
};

enum img_region_flags {
        IMG_RF_GROWSDOWN = 1u << 0,
        IMG_RF_NORESERVE = 1u << 1,
        IMG_RF_HUGEPAGE = 1u << 2,
        IMG_RF_NOHUGEPAGE = 1u << 3,
        IMG_RF_DONTFORK = 1u << 4,
        IMG_RF_WIPEONFORK = 1u << 5,
        IMG_RF_DONTDUMP = 1u << 6,
        IMG_RF_LOCKED = 1u << 7,
        IMG_RF_STACK = 1u << 8,            /* the main thread's stack */
        IMG_RF_HEAP = 1u << 9,             /* [heap] */
        IMG_RF_FULL = 1u << 10,            /* every page's content saved (no file fallback) */
        IMG_RF_GUARD = 1u << 11,           /* guard region markers present (see blocks) */
};

struct img_region {
        uint64_t start, end;
        uint64_t pgoff;                    /* file offset in bytes */
        uint32_t prot;                     /* PROT_* */
        uint32_t kind;                     /* enum img_region_kind */
        uint32_t flags;                    /* enum img_region_flags */
        uint32_t file;                     /* index of an IMG_R_FILE record, or IMG_NONE */
        uint32_t name_len;                 /* name follows, e.g. "[heap]" (no NUL) */
        uint32_t shm;                      /* IMG_RK_SHM: index of its IMG_R_SHM record (else 0) */
};

enum img_block_enc {
        IMG_ENC_RAW = 1,
        IMG_ENC_DEFLATE,                   /* raw deflate (no zlib header) */
        IMG_ENC_ZERO,                      /* ulen bytes of zeros, nothing stored */
        IMG_ENC_GUARD,                     /* MADV_GUARD_INSTALL range, nothing stored */
        _IMG_ENC_MAX,
};

enum img_block_target {
        IMG_BT_MEMORY = 1,                 /* addr is a virtual address in region `index` */
        IMG_BT_FILE,                       /* addr is an offset in file `index` (content) */
        IMG_BT_SHM,                        /* addr is an offset in shared memory object `index` */
};

struct img_block {
        uint64_t addr;
        uint64_t file_off;                 /* where the stored bytes are in the image */
        uint32_t ulen;                     /* bytes restored (pages for memory) */
        uint32_t clen;                     /* bytes stored */
        uint32_t crc;                      /* crc32 of the stored bytes */
        uint16_t enc;
        uint16_t target;
        uint32_t index;
        uint32_t reserved;
};
_Static_assert(sizeof(struct img_block) == 40, "img_block size");

enum img_fd_kind {
        IMG_FD_EXTERNAL = 1,               /* inherited at launch: bound to the restarter's fd */
        IMG_FD_REGULAR,
        IMG_FD_DIRECTORY,
        IMG_FD_CHARDEV,                    /* /dev/null, /dev/zero, /dev/urandom, ... */
        IMG_FD_TTY,                        /* a terminal opened by the program */
        IMG_FD_PIPE,                       /* one end of a pipe */
        IMG_FD_SOCKET,                     /* a Unix, TCP or UDP socket */
        IMG_FD_SHM,                        /* memfd or /dev/shm object: aux = its IMG_R_SHM index */
        IMG_FD_MQUEUE,                     /* POSIX message queue */
        IMG_FD_EVENTFD,                    /* offset: counter; aux: EFD_SEMAPHORE */
        IMG_FD_SIGNALFD,                   /* size: signal mask */
        IMG_FD_TIMERFD,                    /* offset: ns left, size: unread expirations, rdev: clock */
        IMG_FD_INOTIFY,                    /* size: watches */
        IMG_FD_EPOLL,                      /* size: watched descriptors */
        IMG_FD_FIFO,                       /* a named pipe; size: bytes buffered (saved by one description) */
        IMG_FD_PTY_MASTER,                 /* offset: the pty's number */
        IMG_FD_PTY_SLAVE,                  /* offset: the pty's number */
        _IMG_FD_MAX,
};

/* img_fd.aux of an IMG_FD_PTY_SLAVE. */
enum img_pts_aux {
        IMG_PTS_DEVTTY = 1u << 0,          /* opened as /dev/tty */
        IMG_PTS_CTTY = 1u << 1,            /* the controlling terminal of this session leader */
};

/* An open file description shared by several processes is saved by one of
 * them, its leader; the others' records say whose it is (follower). */
enum img_fd_share {
        IMG_FD_OWN = 0,                    /* saved here (this process is its leader) */
        IMG_FD_FOLLOWER,                   /* the same description as leader's leader_fd */
};

struct img_fd {
        int32_t fd;
        uint32_t kind;
        uint32_t flags;                    /* F_GETFL: per description */
        uint32_t fdflags;                  /* F_GETFD: per descriptor (FD_CLOEXEC) */
        int64_t offset;
        uint64_t size;                     /* file size at checkpoint (regular); pipe: bytes buffered */
        uint64_t rdev;
        uint64_t dev, ino;                 /* identity of what it refers to */
        uint32_t file;                     /* index of an IMG_R_FILE record, or IMG_NONE */
        uint32_t path_len;                 /* path follows (no NUL) */
        uint32_t share;                    /* enum img_fd_share */
        int32_t leader_fd;                 /* follower: the leader's descriptor */
        uint32_t aux;                      /* kind-specific (pipe: the other end is in the computation) */
        uint32_t reserved;
        char leader[128];                  /* follower: upid of the leader; pipe write end: of the pipe's creator */
};

struct img_sigaction {
        uint64_t handler;
        uint64_t flags;
        uint64_t restorer;
        uint64_t mask;
};

struct img_timer {
        int32_t id;
        int32_t clock;
        int32_t signo;
        int32_t notify;                    /* SIGEV_SIGNAL, SIGEV_NONE, SIGEV_THREAD_ID */
        int32_t notify_tid;
        int32_t overrun;
        uint64_t sigval;
        int64_t interval_ns, value_ns;     /* remaining time at checkpoint, 0 = disarmed */
};

struct img_child {
        uint32_t pid;
        int32_t code;                      /* CLD_EXITED, CLD_KILLED or CLD_DUMPED */
        int32_t status;                    /* exit status or signal number */
        uint32_t reserved;
};

/* Shared memory: one object, seen by several processes (and regions and
 * descriptors of each). Every image whose process maps or holds it has a
 * record; its content (blocks of target IMG_BT_SHM, addr = offset in the
 * object) is saved once, by the process elected its leader, plus whatever
 * of it other processes map and the leader could not read. The restart tool
 * recreates each object once (by host, kind, dev and ino) and maps it into
 * every process that had it. */
enum img_shm_kind {
        IMG_SHM_ANON = 1,                  /* MAP_SHARED|MAP_ANONYMOUS, or a shared map of /dev/zero */
        IMG_SHM_MEMFD,                     /* memfd_create(2): name is the memfd's name */
        IMG_SHM_POSIX,                     /* a file in /dev/shm (shm_open): name is its path */
        IMG_SHM_SYSV,                      /* System V segment: ino is its shmid */
        _IMG_SHM_MAX,
};

enum img_shm_flags {
        IMG_SHMF_LEADER = 1u << 0,         /* this process was its leader (its record is authoritative) */
        IMG_SHMF_DELETED = 1u << 1,        /* POSIX: unlinked from /dev/shm while in use */
        IMG_SHMF_RMID = 1u << 2,           /* System V: marked for removal (IPC_RMID) */
};

struct img_shm {
        uint64_t dev, ino;                 /* identity at checkpoint */
        uint64_t ns;                       /* System V: inode of the IPC namespace */
        uint64_t size;                     /* bytes (anonymous: the extent mapped; blocks cover whole pages) */
        uint32_t kind;                     /* enum img_shm_kind */
        uint32_t flags;                    /* enum img_shm_flags */
        uint32_t mode;                     /* permission bits */
        uint32_t seals;                    /* memfd: F_GET_SEALS */
        int32_t key;                       /* System V key */
        uint32_t uid, gid;                 /* System V owner */
        uint32_t name_len;                 /* name follows (no NUL) */
};

/* A System V semaphore set or message queue (shared memory segments are
 * IMG_R_SHM). Saved by the leader only; data follows the struct:
 * semaphores: count uint16 values; messages: count times struct
 * img_sysv_msg + text, each padded to 8 bytes. */
enum img_sysv_kind {
        IMG_SYSV_SEM = 1,
        IMG_SYSV_MSG,
        _IMG_SYSV_MAX,
};

struct img_sysv {
        uint64_t ns;                       /* inode of the IPC namespace */
        uint32_t kind;                     /* enum img_sysv_kind */
        int32_t id;
        int32_t key;
        uint32_t mode;
        uint32_t uid, gid;
        uint32_t count;                    /* semaphores, or messages */
        uint32_t reserved;
        uint64_t qbytes;                   /* messages: the queue's byte limit */
        uint64_t data_len;                 /* bytes of data following */
};

struct img_sysv_msg {
        int64_t mtype;
        uint32_t len;
        uint32_t reserved;
};

/* The parsed, validated form of an image (common/img-read.c). Arrays point
 * into one buffer holding the metadata; strings are NUL-terminated copies. */
struct img_str {
        const char *s;
        size_t len;
};

struct img_parsed_region {
        struct img_region r;
        struct img_str name;
        uint32_t first_block, n_blocks;    /* memory blocks of this region, sorted */
};

struct img_parsed_file {
        struct img_file f;
        struct img_str path;
        uint32_t first_block, n_blocks;    /* content blocks, if IMG_FF_CONTENT */
};

struct img_parsed_fd {
        struct img_fd d;
        struct img_str path;
};

struct img_parsed_shm {
        struct img_shm s;
        struct img_str name;
        uint32_t first_block, n_blocks;    /* content blocks of this object in this image */
};

struct img_parsed_sysv {
        struct img_sysv s;
        const uint8_t *data;               /* data_len bytes, checked against count */
};

struct img {
        struct img_header hdr;
        struct img_process proc;
        struct img_str exe, cwd;
        const uint8_t *auxv;
        size_t auxv_len;
        const uint8_t *runtime;
        size_t runtime_len;
        struct img_thread *threads;
        size_t n_threads;
        struct img_parsed_file *files;
        size_t n_files;
        struct img_parsed_region *regions;
        size_t n_regions;
        struct img_block *blocks;          /* memory blocks sorted by address, then file blocks */
        size_t n_blocks, n_mem_blocks;
        struct img_parsed_fd *fds;
        size_t n_fds;
        struct img_sigaction sigactions[64];
        bool have_sigactions;
        struct img_timer *timers;
        size_t n_timers;
        struct img_child *children;
        size_t n_children;
        struct img_parsed_shm *shms;
        size_t n_shms;
        struct img_parsed_sysv *sysv;
        size_t n_sysv;
        void *meta;                        /* owns everything above */
        size_t meta_size;
};

/* What went wrong, for a one-line message "image X: <what>". */
struct img_error {
        int code;                          /* -errno */
        char what[256];
};

/* Read and validate the header and metadata of the image open on fd (size =
 * file size). Checks magic, version, arch, page size, header and metadata
 * checksums, every record's bounds and every cross reference (regions
 * sorted and disjoint, blocks inside their region and inside the data area,
 * indexes in range). Does not read block data: see img_verify_blocks.
 * Returns 0 or -errno with err filled. The caller frees with img_free. */
int img_load(int fd, uint64_t size, struct img *img, struct img_error *err);
void img_free(struct img *img);

/* Only the header: magic, version, arch, header crc, size. */
int img_read_header(int fd, uint64_t size, struct img_header *hdr, struct img_error *err);

/* Verify the crc of every stored block by reading the data (uses n_threads
 * threads). Returns 0 or -EBADMSG with err naming the first bad block. */
int img_verify_blocks(int fd, const struct img *img, unsigned n_threads, struct img_error *err);

/* crc32 as zlib computes it (the image's checksum). */
uint32_t img_crc32(uint32_t crc, const void *p, size_t len);

/* 0 if the stored bytes of block b (clen at stored) match its crc, else
 * -EBADMSG with err naming the block. */
int img_check_block(const struct img_block *b, const void *stored, struct img_error *err);

/* Inflate the raw deflate stream of exactly clen bytes at src into exactly
 * ulen bytes at dst: 0, -EBADMSG (anything else), -ENOMEM. */
int img_inflate(const void *src, size_t clen, void *dst, size_t ulen);

/* Decode one block into dst (ulen bytes): reads, checks crc, inflates.
 * scratch must hold clen bytes for deflate blocks. */
int img_read_block(int fd, const struct img_block *b, void *dst, void *scratch, struct img_error *err);

/* Decode one block whose stored bytes are at src (e.g. a mapping of the
 * image at b->file_off): checks the crc and writes ulen bytes to dst. Raw
 * blocks are checked and copied chunk by chunk, while each chunk is in the
 * CPU's cache: one pass over memory instead of two. */
int img_decode_block(const struct img_block *b, const uint8_t *src, void *dst, struct img_error *err);

const char *img_region_kind_name(uint32_t kind);
const char *img_fd_kind_name(uint32_t kind);
const char *img_shm_kind_name(uint32_t kind);
/* 0 if the data of a System V record matches its count and kind. */
int img_sysv_check_data(const struct img_sysv *v, const uint8_t *data);

/* crc32 of a header with its crc field taken as 0. */
uint32_t img_header_crc(const struct img_header *h);
