/* dmtcpctl's side of the coordinator protocol: a job's coordinator is always
 * the one on the job's own Unix socket (coord_socket_path), whatever
 * DMTCP_COORD_* say. */
#pragma once

#include "proto.h"

/* Errors: -ENOENT/-ECONNREFUSED no coordinator listens, -ETIMEDOUT nobody
 * answered, -EACCES etc. refused (err holds the reason), others. */
int ctl_coord_status(const char *job, struct proto_status *st, char *err, size_t errsize);

/* LIST: members (allocated) and their count. */
int ctl_coord_list(const char *job, struct proto_member **ret, size_t *n, char *err, size_t errsize);

/* A command (CHECKPOINT, BCHECKPOINT, KCHECKPOINT, KILL, ...). Fills res
 * with the coordinator's answer; returns 0 when the command succeeded, -EIO
 * when the coordinator reported a failure (res->message says why), or a
 * connection error. With progress, a waiting checkpoint shows its phase on
 * stderr (a terminal), refreshed a few times a second. */
int ctl_coord_command(const char *job, int op, uint32_t arg, bool progress, struct proto_result *res, char *err,
                      size_t errsize);
