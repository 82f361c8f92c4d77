/* DMTCP's environment contract (DESIGN.md): where the coordinator is, the
 * failure exit code, checkpoint directory, signal, and where our own files
 * live relative to a binary. */
#pragma once

#include "macro.h"
#include <netinet/in.h>

#define DMTCP_DEFAULT_PORT 7779
#define DMTCP_DEFAULT_FAIL_RC 99
#define DMTCP_DEFAULT_KEEP 2

/* DMTCP_FAIL_RC, validated to 1..200, default 99. rc+1: unusable image,
 * rc+2: permission refused. */
int dmtcp_fail_rc(void);

enum coord_kind { COORD_TCP, COORD_UNIX };

struct coord_addr {
        enum coord_kind kind;
        char host[256];
        uint16_t port;          /* 0 with COORD_TCP: read from port_file */
        char path[108];         /* COORD_UNIX */
};

/* Resolve where the coordinator is from options (NULL/-1 = not given) and the
 * environment, in DMTCP's order: --coord-host/--coord-port, then
 * DMTCP_COORD_SOCKET (Unix, wins over TCP when no TCP option was given),
 * then DMTCP_COORD_HOST/DMTCP_COORD_PORT (and DMTCP_HOST/DMTCP_PORT), then
 * --job NAME's Unix socket, then localhost:7779. */
int coord_addr_resolve(struct coord_addr *a, const char *host_opt, int port_opt, const char *job);
void coord_addr_describe(const struct coord_addr *a, char *buf, size_t size);

/* $XDG_RUNTIME_DIR/dmtcp/<job or "default">.sock, else ${TMPDIR:-/tmp}/dmtcp-$UID/... */
int coord_socket_dir(char *buf, size_t size);
int coord_socket_path(const char *job, char *buf, size_t size);

/* Connect with a timeout. Returns the fd (CLOEXEC) or -errno
 * (-ECONNREFUSED/-ENOENT: nobody listening). */
int coord_connect(const struct coord_addr *a, int timeout_ms);
/* The runtime's sockets are made at or above this descriptor (0: anywhere):
 * a program closing one of its descriptors twice must not hit ours. */
extern int coord_fd_floor;

/* Checkpoint signal: DMTCP_SIGCKPT (number or name), default SIGUSR2. */
int dmtcp_ckpt_signal(void);

/* The directory of the running binary (from /proc/self/exe). */
int self_exe_dir(char *buf, size_t size);

/* Find a sibling file of ours: first relative to the installed layout
 * (e.g. "../lib/dmtcp/libdmtcp.so" from bindir), then the build tree
 * (DMTCP_BUILD_ROOT/<build_rel>). Returns 0 and the absolute path. */
int find_sibling(const char *installed_rel, const char *build_rel, char *buf, size_t size);

/* Checkpoint directory: option, else DMTCP_CHECKPOINT_DIR, else cwd. Absolute. */
int ckpt_dir_resolve(const char *opt, char *buf, size_t size);

/* Keep count: DMTCP_KEEP, default 2, 1..1000. */
int dmtcp_keep(void);
