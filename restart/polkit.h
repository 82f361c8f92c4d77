/* polkit authorization for dmtcp_restart --no-strict-uid-checking: may the
 * caller restart a checkpoint image of another user (the action
 * org.dmtcp.restart-foreign-image, polkit/org.dmtcp.policy)? Asked over the
 * system bus with CheckAuthorization, the subject being this process
 * (unix-process: pid, start time, uid). */
#pragma once

/* 1 authorized, 0 denied. Never an error: when polkit or the system bus
 * cannot be reached the answer is 0 (denied), and one line on stderr says
 * why. The answer is asked once and remembered. */
int rst_polkit_may_restart_foreign_image(void);
