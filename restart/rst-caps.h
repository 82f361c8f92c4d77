/* The restart helper may carry the file capability cap_checkpoint_restore
 * (set at install time) to restore process ids without a new pid namespace.
 * It keeps only that one; the restorer (restorer.c, set_caps) then gives the
 * restored process exactly the capabilities it had, so a normal user's
 * restored program runs without any. */
#pragma once

/* For a non-root caller holding capabilities: reduce the permitted and
 * effective sets to CAP_CHECKPOINT_RESTORE, clear the inheritable and
 * ambient sets. Returns 0 or -errno (the caller goes on without). */
int rst_caps_keep_only_restore(void);
