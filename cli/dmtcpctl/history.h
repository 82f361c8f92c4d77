/* A job's checkpoint and restart history, read from the journal (sd-journal):
 * the coordinator's structured entries (daemon/messages.h) with
 * DMTCP_JOB=NAME, sent by the calling user (_UID). */
#pragma once

#include <limits.h>
#include <sys/types.h>

#include "macro.h"

enum history_kind {
        HISTORY_CHECKPOINT_COMMITTED,
        HISTORY_CHECKPOINT_ABORTED,
        HISTORY_RESTART,
};

struct history_entry {
        uint64_t realtime_usec;
        enum history_kind kind;
        uint64_t generation;
        uint32_t processes;
        uint64_t bytes;
        uint64_t duration_usec;
        bool have_generation, have_processes, have_bytes, have_duration;
        char computation[128];
        char dir[PATH_MAX];
        char reason[512];               /* aborted: why */
        char unit[256];                 /* _SYSTEMD_USER_UNIT or _SYSTEMD_UNIT */
};

const char *history_kind_name(enum history_kind k);     /* "checkpoint", "restart" */
const char *history_result_name(enum history_kind k);   /* "committed", "aborted", "restarted" */

/* Oldest first. Returns the number of entries (array allocated) or -errno,
 * with err explaining. Limit 0 = all, else the newest limit entries. */
int history_read(const char *job, uid_t uid, size_t limit, struct history_entry **ret, char *err, size_t errsize);
