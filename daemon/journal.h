/* The journald logging backend of the coordinator.
 *
 * sd_journal_send() returns 0 even when no journald listens, so whether to
 * use it is decided once at start-up: only when $JOURNAL_STREAM names the
 * device:inode of our stderr (systemd connected it to the journal). Otherwise
 * log lines go to stderr (common/log.c). */
#pragma once

#include "macro.h"

#define COORD_SYSLOG_IDENTIFIER "dmtcp_coordinator"

/* Does $JOURNAL_STREAM match fd 2? */
bool journal_stream_is_stderr(void);

/* Install the journald backend (log_set_backend). */
void journal_install(void);
