/* Memory and objects shared between the processes of a computation: shared
 * memory (shm.c, fd-shm.c), System V IPC (ipc-sysv.c), POSIX message queues
 * (fd-mq.c) and file locks (locks.c).
 *
 * Such an object is seen by several processes but must be saved once and
 * recreated once. Every process that maps or holds one stands for it in the
 * coordinator's KV store during ELECT; after GO(ELECT) all read back the same
 * winner, its leader (rt_obj_stand, rt_obj_leader). What the leader cannot
 * read of it, the others that can save (shm.c).
 *
 * The checkpoint thread calls, in order:
 *   ELECT      rt_shared_elect     list the objects, stand for each
 *   (GO)       rt_shared_resolve   learn the leaders; leaders publish what
 *                                  of each object they will save
 *   CAPTURE    rt_shared_capture   copy contents (before rt_mem_capture),
 *                                  System V sets and queues, locks
 * and after a restart, in RST_REFILL, rt_shared_rst_refill. Suspended-safe
 * (see rt.h). */
#pragma once

#include "rt.h"

/* One line of /proc/self/maps, parsed in place (mem.c). */
struct rt_maps_line {
        uint64_t start, end, pgoff, ino;
        uint32_t prot;
        bool shared;
        unsigned dev_major, dev_minor;
        const char *name;               /* NUL-terminated in place */
};

bool rt_parse_maps_line(char *line, struct rt_maps_line *m);
/* /proc/self/maps so, with its number of lines; NULL with err filled. */
char *rt_read_maps(size_t *lines, char *err, size_t errsize);

/* Scratch memory for copies made during the pause, freed by
 * rt_copies_release once the image is written (or at the next checkpoint). */
void *rt_copy_alloc(size_t size);
void rt_copies_release(void);

/* shm.c: the object behind a mapping, or -1 if it is none. Valid from
 * rt_shared_elect until the next checkpoint. */
int rt_shm_find_mapping(const struct rt_maps_line *m);
/* The object behind a descriptor of kind IMG_FD_SHM, or -1. */
int rt_shm_find_fd(uint64_t dev, uint64_t ino);
/* Is this descriptor's file a shared memory object (memfd, /dev/shm)? */
bool rt_shm_path_is_object(const char *path);

int rt_shared_elect(char *err, size_t errsize);
int rt_shared_resolve(char *err, size_t errsize);
int rt_shared_capture(char *err, size_t errsize);
int rt_shared_rst_refill(char *err, size_t errsize);

/* Leaders of objects: "<prefix>/<host>/<id>" in the KV store. */
struct rt_obj_vote {
        char upid[PROTO_ID_MAX + 1];
        int32_t pid;
        uint32_t reserved;
};
int rt_obj_stand(const char *key);
/* 1 if we are the leader, 0 if another process is (upid filled), -errno. */
int rt_obj_leader(const char *key, char *upid, size_t size);

/* ipc-sysv.c: the System V objects this process used (wrappers record
 * them), saved by their leaders; SEM_UNDO adjustments made again. */
int rt_sysv_elect(char *err, size_t errsize);
/* The System V segments the program used that still exist (after elect). */
uint32_t rt_sysv_segments(int32_t *out, uint32_t max);
int rt_sysv_resolve(char *err, size_t errsize);
int rt_sysv_capture(char *err, size_t errsize);
int rt_sysv_rst_refill(char *err, size_t errsize);
void rt_sysv_atfork_child(void);
uint64_t rt_ipc_ns(void);               /* inode of our IPC namespace */

/* locks.c: fcntl, OFD and flock locks held on our descriptors. */
int rt_locks_capture(char *err, size_t errsize);
int rt_locks_rst_refill(char *err, size_t errsize);
