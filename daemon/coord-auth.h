/* Who is connecting, and may they: SO_PEERCRED on the Unix socket, the
 * owner of the peer's TCP socket through sock_diag (NETLINK_SOCK_DIAG,
 * SOCK_DIAG_BY_FAMILY, exact 4-tuple) on loopback, and the computation's
 * secret for peers beyond loopback. */
#pragma once

#include <sys/socket.h>

#include "coord-state.h"

#define COORD_SECRET_LEN 64     /* 32 random bytes as hex */

/* Fill p for an accepted connection. For TCP, *loopback says whether the
 * peer address is a loopback one; p->have_uid is set when sock_diag found
 * the peer socket's owner. Returns 0 or -errno (the peer is unusable). */
int coord_peer_identify(int fd, struct coord_peer *p, bool *is_tcp, bool *loopback);

/* The uid owning the TCP socket whose local address is peer and remote
 * address is local (i.e. the other end of our connected socket). */
int coord_sock_diag_uid(const struct sockaddr *local, const struct sockaddr *peer, uint32_t *ret);

bool coord_sockaddr_is_loopback(const struct sockaddr *sa);
void coord_sockaddr_format(const struct sockaddr *sa, char *buf, size_t size);

/* Load DIR/.dmtcp-secret if it is ours (regular file, our uid, no group or
 * other permission, 64 hex digits), else create it (0600) from getrandom.
 * secret receives the NUL-terminated hex. */
int coord_secret_load_or_create(const char *dir, char secret[COORD_SECRET_LEN + 1], char *err, size_t errsize);

/* Constant-time comparison of a presented secret with ours. */
bool coord_secret_equal(const char *ours, const char *given);
