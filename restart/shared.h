/* Objects shared by the processes of a restart: shared memory (shared-mem.c)
 * and System V IPC (sysv.c). dmtcp_restart creates each object once, before
 * it creates the processes, which inherit them (descriptors and mappings
 * survive fork) and map them where their images say (loader.c). */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "restart.h"

struct rst_shm {
        struct img_shm s;               /* the leader's record; size: the largest */
        const char *name;
        const char *host;
        bool have_leader;
        int fd;                         /* memfd, POSIX: a descriptor here, or -1 */
        uint64_t base;                  /* anonymous: a MAP_SHARED mapping here, or 0 */
        int32_t shmid;                  /* System V: the segment, or -1 */
};

/* Match the shared memory and System V records of all images: one object
 * each. Fails (one line in err) when an object's saved contents are in no
 * image given. */
int rst_shared_collect(struct rst_image *ims, size_t n, char *err, size_t errsize);
/* System V objects need a fresh IPC namespace to get their ids back. */
bool rst_shared_need_ipc_ns(void);
/* Create and fill every object (in the IPC namespace of the restart). */
int rst_shared_create(char *err, size_t errsize);
/* Drop what this process no longer passes on: all (im NULL), or all but
 * what image im uses. */
void rst_shared_release(const struct rst_image *im);
/* The object behind an image's IMG_R_SHM record (NULL if none). */
const struct rst_shm *rst_shared_get(const struct rst_image *im, uint32_t shm);
/* Is [start, end) the mapping of an anonymous object here? */
bool rst_shared_is_base(uint64_t start, uint64_t end);

/* sysv.c */
int rst_sysv_create_segment(struct rst_shm *o, char *err, size_t errsize);
int rst_sysv_create_set(const char *host, const struct img_parsed_sysv *v, char *err, size_t errsize);
