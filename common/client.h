/* A client's side of joining a coordinator: connect, HELLO, wait for WELCOME
 * or REJECT. Used by the runtime, the command-line tools and dmtcp_restart. */
#pragma once

#include "env.h"
#include "proto.h"

/* Connect to a and send hello. On WELCOME returns the connected fd and fills
 * *welcome (may be NULL). On REJECT returns -EACCES (uid, secret),
 * -EBUSY (not running), -EXDEV (wrong computation), -EPROTO (other) and
 * copies the reason into reason (may be NULL). -ECONNREFUSED/-ENOENT when
 * nobody listens, -ETIMEDOUT when nobody answers. */
int coord_join(const struct coord_addr *a, const struct proto_hello *hello, int timeout_ms,
               struct proto_welcome *welcome, char *reason, size_t reason_size);

/* Fill the identity part of a HELLO for this process. */
void hello_fill_self(struct proto_hello *h, int role, const char *program);

/* Map a REJECT code to -errno as coord_join does. */
int proto_reject_to_errno(int code);
