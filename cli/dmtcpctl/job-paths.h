/* Where a per-user job's files are (DESIGN.md, Files) and what its
 * checkpoint directory holds. Shared by dmtcpctl and the unit helper
 * dmtcp-job, so both always agree:
 *
 *   job file     ${XDG_CONFIG_HOME:-~/.config}/dmtcp/NAME.conf
 *   images       ${XDG_STATE_HOME:-~/.local/state}/dmtcp/NAME/gen-NNNNNN/
 *   units        dmtcp@NAME.service, dmtcp-coordinator@NAME.{socket,service}
 *
 * XDG variables that are not absolute paths are ignored, as the XDG base
 * directory specification says. */
#pragma once

#include <limits.h>

#include "macro.h"

/* A job name as dmtcpctl and the units accept it: job_name_valid() (letters,
 * digits, '_' and '.', at most 64) and not starting with '.', so that no
 * name is ".", ".." or a hidden file. */
bool job_name_ok(const char *name);

int job_home_dir(char *buf, size_t size);
int job_config_dir(char *buf, size_t size);             /* .../dmtcp */
int job_conf_path(const char *name, char *buf, size_t size);
int job_state_root(char *buf, size_t size);             /* .../dmtcp */
int job_state_dir(const char *name, char *buf, size_t size);

/* "dmtcp@NAME.service" and friends. */
int job_unit_name(const char *name, char *buf, size_t size);
int job_coord_service_name(const char *name, char *buf, size_t size);
int job_coord_socket_name(const char *name, char *buf, size_t size);

/* The generations gen-NNNNNN in dir, ascending (allocated array). Returns
 * the count (0 when dir does not exist) or -errno. */
int job_list_generations(const char *dir, uint64_t **ret);

/* Marker left in the state directory when the job's program ended by itself
 * with status 0: its checkpoints are then history, and the next start
 * launches the command afresh. */
#define JOB_FINISHED_MARKER "finished"

/* Whether dir holds anything that a start would restart from or that a
 * new job would mix with: a generation, a temporary one, the latest link. */
bool job_dir_has_images(const char *dir);
