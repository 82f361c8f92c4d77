/* dmtcp_coordinator's command line and environment (DESIGN.md contracts).
 * Parsing is a pure function of argv and the environment so that
 * tests/unit/test-coord-options.c can exercise every error. */
#pragma once

#include <limits.h>

#include "macro.h"

struct coord_options {
        int port;                       /* resolved: -p, DMTCP_COORD_PORT, DMTCP_PORT, 7779 */
        char port_file[PATH_MAX];       /* "" = none */
        char bind[256];                 /* "" = 127.0.0.1 */
        bool daemonize;
        bool exit_on_last;
        bool quiet;
        bool strict_uid;                /* default true; --no-strict-uid-checking */
        uint32_t interval;              /* seconds */
        bool interval_set;              /* -i or DMTCP_CHECKPOINT_INTERVAL */
        char ckptdir[PATH_MAX];         /* absolute; "" = none given */
        bool ckptdir_option;            /* from --ckptdir rather than DMTCP_CHECKPOINT_DIR */
        int keep;                       /* --keep, DMTCP_KEEP, 2 */
        char job[65];                   /* "" = default */
        uint32_t restart_timeout;       /* seconds: --restart-timeout, DMTCP_RESTART_TIMEOUT, 60 */
        uint32_t stop_timeout;          /* seconds: --stop-timeout, DMTCP_STOP_TIMEOUT, 60; 0 = none */
        uint32_t idle_timeout;          /* seconds, 0 = never */
        bool help, version;
};

/* Parse argv and the environment into o. Returns 0, or -EINVAL with a
 * one-line message in err (the caller prints it and exits 64). */
int coord_parse_options(int argc, char *argv[], struct coord_options *o, char *err, size_t errsize);

void coord_print_help(FILE *f);
