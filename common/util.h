/* String, number, time and I/O helpers. Nothing here allocates unless its
 * comment says so; all are safe to call from the runtime's checkpoint thread. */
#pragma once

#include "macro.h"
#include <sys/types.h>
#include <time.h>

/* Copy at most size-1 bytes and always terminate. Returns the length of src
 * (like strlcpy) so truncation can be detected. */
size_t strscpy(char *dst, const char *src, size_t size);

/* Strict parsers: the whole string must be a number in range. */
int parse_u64(const char *s, uint64_t *ret);
int parse_u32(const char *s, uint32_t *ret);
int parse_int_range(const char *s, int min, int max, int *ret);
int parse_bool(const char *s);          /* 1, 0, or -EINVAL */

uint64_t now_usec(clockid_t clock);     /* CLOCK_MONOTONIC, CLOCK_REALTIME, ... */

/* read/write everything, retrying on EINTR and short transfers. Return 0 or
 * -errno; read_full returns -EPIPE on early EOF. */
int read_full(int fd, void *buf, size_t len);
int write_full(int fd, const void *buf, size_t len);
int pread_full(int fd, void *buf, size_t len, off_t off);
int pwrite_full(int fd, const void *buf, size_t len, off_t off);

/* Read a small file (e.g. under /proc) into buf, NUL-terminated. Returns the
 * length or -errno; -EFBIG if it does not fit. */
ssize_t read_small_file(const char *path, char *buf, size_t size);

/* Write a file atomically: temp file in the same directory, fsync, rename,
 * fsync the directory. mode is the new file's mode. */
int write_file_atomic(const char *path, const void *data, size_t len, mode_t mode);

int mkdir_p(const char *path, mode_t mode);
int fsync_dir_of(const char *path);     /* fsync the directory containing path */
int fsync_path(const char *path);       /* fsync a file or directory by path */
int rm_rf(const char *path);            /* recursive remove, no symlink follow */

/* "name" of a program from a path: the part after the last '/'. */
const char *path_basename(const char *path);

/* Make a string safe for a file name: keep [A-Za-z0-9._+-], replace others by '_'. */
void sanitize_filename(char *s);

/* Hostname, cached. */
const char *host_name(void);

/* Is a string a valid job name: [A-Za-z0-9_.]{1,64}. */
bool job_name_valid(const char *name);

/* A new pty (opening ptmx, O_RDWR | O_NOCTTY | O_CLOEXEC) numbered want if
 * that number is free: ptys are numbered lowest free first, so the lower
 * free ones are held open until it comes. Otherwise the first one opened
 * (*got says which). Raw syscalls, no allocation. The descriptor, or -errno. */
int pty_open_numbered(const char *ptmx, uint32_t want, uint32_t *got);
