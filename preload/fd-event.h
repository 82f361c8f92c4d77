/* Helpers shared by the kinds of fd-event.c (eventfd, signalfd, timerfd),
 * fd-epoll.c, fd-inotify.c, fd-fifo.c and fd-pty.c. Suspended-safe. */
#pragma once

#include "fd.h"

/* The text of /proc/self/fdinfo/<fd>, NUL-terminated, in the scratch arena
 * (however long: an epoll's interest list can be large). NULL with err
 * filled when it cannot be read. */
char *evfd_fdinfo(int fd, char *err, size_t errsize);

/* The number after "key" (which includes its colon) in an fdinfo text, in
 * base (16 or 10). -ENOENT when the key is absent. */
int evfd_info_u64(const char *info, const char *key, int base, uint64_t *out);

/* The lines of an fdinfo text that begin with prefix: how many, and one
 * by one (*pos starts at the text; a NUL-terminated copy in line). */
uint32_t evfd_info_count(const char *info, const char *prefix);
bool evfd_info_next(const char **pos, const char *prefix, char *line, size_t size);

/* Field number field (from 1, as proc(5) counts) of /proc/<pid>/stat (pid 0:
 * ourselves), a number. -1 if it cannot be read. */
int64_t evfd_stat_field(pid_t pid, int field);

/* Several descriptors of one process may be one open file description
 * (dup, dup2, F_DUPFD): the first (lowest) is saved and restored, the later
 * ones become duplicates of it again. */
#define EVFD_AUX_DUP (1u << 31)         /* img_fd.aux: a dup of leader_fd */
#define EVFD_AUX_SEEN (1u << 30)        /* img_fd.aux: dups looked for (this checkpoint) */

/* At save: is f a dup of an earlier descriptor of ours? Marks it so. */
bool evfd_note_dup(struct rt_fd *f);

/* At restore, for a descriptor marked a dup: make it one again. */
int evfd_restore_dup(struct rt_fd *f, char *err, size_t errsize);

/* Put newfd at f's number with f's descriptor flags, and the status flags
 * F_SETFL can change (O_NONBLOCK, O_ASYNC, ...). Closes newfd. */
int evfd_place(int newfd, struct rt_fd *f, const char *what, char *err, size_t errsize);

/* A descriptor of the runtime's own, out of the program's range (close-on-exec,
 * hidden from checkpoints). */
int evfd_private(int fd);
void evfd_close_private(int fd);

/* fd-pty.c: put every pty slave of this process in its final place (a
 * description of its own, the controlling terminal of its session), once.
 * RST_REFILL, before an epoll instance watches them. */
int evfd_pty_settle(char *err, size_t errsize);

/* Remaining time of a timespec in ns and back. */
int64_t evfd_ts_ns(const struct timespec *t);
struct timespec evfd_ns_ts(int64_t ns);
