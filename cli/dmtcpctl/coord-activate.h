/* Socket activation of a job's coordinator for dmtcp_launch and dmtcp_restart
 * (--job NAME), so that an ad-hoc `systemd-run --user dmtcp_launch --job NAME
 * PROGRAM` joins the same per-user coordinator instance,
 * dmtcp-coordinator@NAME, as the job unit dmtcp@NAME does: its journal
 * history, dmtcpctl control and idle exit, instead of a private coordinator
 * living in the caller's unit. */
#pragma once

/* If nothing answers on job's socket at path, ask the calling user's systemd
 * manager to start dmtcp-coordinator@JOB.socket, then wait (at most
 * timeout_ms) for path to appear. Returns 1 when the socket is there, 0 when
 * this is not possible (no user manager, the units are not installed, ...),
 * in which case the caller starts a coordinator itself, as before. */
int coord_activate_job_socket(const char *job, const char *path, int timeout_ms);
