/* Finding or starting the coordinator for dmtcp_launch and dmtcp_restart,
 * in DMTCP's three modes:
 *   JOIN (--join):            one must already answer, else -ECONNREFUSED;
 *   NEW  (--new-coordinator): start one; -EADDRINUSE if the port is taken
 *                             (port 0 with a port file is allowed);
 *   ANY  (default):           join one that answers, else start
 *                             `dmtcp_coordinator --daemon --exit-on-last -q`
 *                             and wait until it listens.
 * The coordinator binary is our sibling (find_sibling) unless given. */
#pragma once

#include "env.h"

enum coord_start_mode {
        COORD_START_ANY,
        COORD_START_JOIN,
        COORD_START_NEW,
};

struct coord_start_opts {
        enum coord_start_mode mode;
        const char *host;               /* --coord-host, NULL = not given */
        int port;                       /* --coord-port, -1 = not given */
        const char *port_file;          /* --port-file, NULL = none */
        const char *job;                /* --job, NULL = none */
        const char *ckptdir;            /* passed to a started coordinator, NULL = none */
        int interval;                   /* -i for a started coordinator, -1 = none */
        const char *coordinator;        /* coordinator binary, NULL = find_sibling */
        int timeout_ms;                 /* per connection attempt, 0 = 5000 */
};

/* Make sure a coordinator answers and fill addr with where it listens.
 * Returns 0 (joined), 1 (started one), -ECONNREFUSED (JOIN: none answers;
 * ANY: none answers on a remote host), -EADDRINUSE (NEW: something
 * answers), -ENOENT (no coordinator binary), or another -errno. */
int coord_ensure(const struct coord_start_opts *o, struct coord_addr *addr);

/* Does a dmtcp coordinator answer at a (a HELLO as a command client)? */
bool coord_answers(const struct coord_addr *a, int timeout_ms);
