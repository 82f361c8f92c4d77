/* Turning the state machine's log records into log lines and journald
 * events: the MESSAGE_ID of each event (messages.h) and its DMTCP_* fields. */
#pragma once

#include "coord-state.h"

/* The MESSAGE_ID of an event, NULL for COORD_EV_NONE. */
const char *coord_event_message_id(enum coord_event ev);

/* Log l; job names the job ("" = default) for DMTCP_JOB. */
void coord_log_emit(const struct coord_log *l, const char *job);
