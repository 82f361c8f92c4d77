/* Confining the coordinator once its listeners exist: drop every capability
 * (libcap) and install a seccomp deny-list (libseccomp) of the system calls
 * it never needs. A refused call fails with EPERM and is logged: the filter
 * traps (SIGSYS) and the handler writes one line to stderr and makes the
 * call return -EPERM. Netlink (the sock_diag uid lookup) and the journal
 * socket keep working; tests/unit/test-coord-harden.c proves both. */
#pragma once

#include "macro.h"

/* Drop all capabilities if the process has any. 0 or -errno. */
int coord_drop_capabilities(void);

/* Install the SIGSYS handler and the seccomp filter. 0 or -errno. */
int coord_install_seccomp(void);

/* Both, in that order. */
int coord_harden(void);

/* The system calls refused, for the documentation and the tests. */
extern const char *const coord_denied_syscalls[];
