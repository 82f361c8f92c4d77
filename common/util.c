#include "util.h"

#include <ctype.h>
#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <time.h>

#include "raw-syscall.h"

size_t strscpy(char *dst, const char *src, size_t size) {
        size_t n = strlen(src);
        if (size > 0) {
                size_t c = n < size - 1 ? n : size - 1;
                memcpy(dst, src, c);
                dst[c] = 0;
        }
        return n;
}

int parse_u64(const char *s, uint64_t *ret) {
        if (!s || !*s || !isdigit((unsigned char) s[0]))
                return -EINVAL;
        errno = 0;
        char *end;
        unsigned long long v = strtoull(s, &end, 10);
        if (errno == ERANGE)
                return -ERANGE;
        if (*end)
                return -EINVAL;
        *ret = v;
        return 0;
}

int parse_u32(const char *s, uint32_t *ret) {
        uint64_t v;
        int r = parse_u64(s, &v);
        if (r < 0)
                return r;
        if (v > UINT32_MAX)
                return -ERANGE;
        *ret = (uint32_t) v;
        return 0;
}

int parse_int_range(const char *s, int min, int max, int *ret) {
        if (!s || !*s)
                return -EINVAL;
        errno = 0;
        char *end;
        long v = strtol(s, &end, 10);
        if (errno == ERANGE || *end || end == s)
                return -EINVAL;
        if (v < min || v > max)
                return -ERANGE;
        *ret = (int) v;
        return 0;
}

int parse_bool(const char *s) {
        if (!s)
                return -EINVAL;
        if (!strcmp(s, "1") || !strcasecmp(s, "yes") || !strcasecmp(s, "true") || !strcasecmp(s, "on"))
                return 1;
        if (!strcmp(s, "0") || !strcasecmp(s, "no") || !strcasecmp(s, "false") || !strcasecmp(s, "off"))
                return 0;
        return -EINVAL;
}

uint64_t now_usec(clockid_t clock) {
        struct timespec ts;
        clock_gettime(clock, &ts);
        return (uint64_t) ts.tv_sec * 1000000ULL + (uint64_t) ts.tv_nsec / 1000ULL;
}

int read_full(int fd, void *buf, size_t len) {
        char *p = buf;
        while (len > 0) {
                ssize_t n = read(fd, p, len);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                if (n == 0)
                        return -EPIPE;
                p += n;
                len -= (size_t) n;
        }
        return 0;
}

int write_full(int fd, const void *buf, size_t len) {
        const char *p = buf;
        while (len > 0) {
                ssize_t n = write(fd, p, len);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                if (n == 0)
                        return -EIO;
                p += n;
                len -= (size_t) n;
        }
        return 0;
}

int pread_full(int fd, void *buf, size_t len, off_t off) {
        char *p = buf;
        while (len > 0) {
                ssize_t n = pread(fd, p, len, off);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                if (n == 0)
                        return -EPIPE;
                p += n;
                off += n;
                len -= (size_t) n;
        }
        return 0;
}

int pwrite_full(int fd, const void *buf, size_t len, off_t off) {
        const char *p = buf;
        while (len > 0) {
                ssize_t n = pwrite(fd, p, len, off);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                if (n == 0)
                        return -EIO;
                p += n;
                off += n;
                len -= (size_t) n;
        }
        return 0;
}

ssize_t read_small_file(const char *path, char *buf, size_t size) {
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        size_t len = 0;
        for (;;) {
                if (len + 1 >= size) {
                        close(fd);
                        return -EFBIG;
                }
                ssize_t n = read(fd, buf + len, size - 1 - len);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        int r = -errno;
                        close(fd);
                        return r;
                }
                if (n == 0)
                        break;
                len += (size_t) n;
        }
        close(fd);
        buf[len] = 0;
        return (ssize_t) len;
}

static int dir_of(const char *path, char *buf, size_t size) {
        if (strscpy(buf, path, size) >= size)
                return -ENAMETOOLONG;
        char *slash = strrchr(buf, '/');
        if (!slash)
                strscpy(buf, ".", size);
        else if (slash == buf)
                buf[1] = 0;
        else
                *slash = 0;
        return 0;
}

int fsync_path(const char *path) {
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        int r = fsync(fd) < 0 ? -errno : 0;
        close(fd);
        return r;
}

int fsync_dir_of(const char *path) {
        char dir[PATH_MAX];
        int r = dir_of(path, dir, sizeof dir);
        if (r < 0)
                return r;
        return fsync_path(dir);
}

int write_file_atomic(const char *path, const void *data, size_t len, mode_t mode) {
        char tmp[PATH_MAX];
        if ((size_t) snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int) getpid()) >= sizeof tmp)
                return -ENAMETOOLONG;
        int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, mode);
        if (fd < 0)
                return -errno;
        int r = write_full(fd, data, len);
        if (r == 0 && fchmod(fd, mode) < 0)
                r = -errno;
        if (r == 0 && fsync(fd) < 0)
                r = -errno;
        close(fd);
        if (r == 0 && rename(tmp, path) < 0)
                r = -errno;
        if (r < 0) {
                unlink(tmp);
                return r;
        }
        return fsync_dir_of(path);
}

int mkdir_p(const char *path, mode_t mode) {
        char buf[PATH_MAX];
        if (strscpy(buf, path, sizeof buf) >= sizeof buf)
                return -ENAMETOOLONG;
        for (char *p = buf + 1; *p; p++) {
                if (*p != '/')
                        continue;
                *p = 0;
                if (mkdir(buf, mode) < 0 && errno != EEXIST)
                        return -errno;
                *p = '/';
        }
        if (mkdir(buf, mode) < 0 && errno != EEXIST)
                return -errno;
        struct stat st;
        if (stat(buf, &st) < 0)
                return -errno;
        if (!S_ISDIR(st.st_mode))
                return -ENOTDIR;
        return 0;
}

static int rm_rf_at(int dirfd, const char *name) {
        struct stat st;
        if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
                return errno == ENOENT ? 0 : -errno;
        if (!S_ISDIR(st.st_mode))
                return unlinkat(dirfd, name, 0) < 0 && errno != ENOENT ? -errno : 0;
        int fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        DIR *d = fdopendir(fd);
        if (!d) {
                close(fd);
                return -errno;
        }
        int r = 0;
        struct dirent *de;
        while ((de = readdir(d))) {
                if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
                        continue;
                int k = rm_rf_at(fd, de->d_name);
                if (k < 0 && r == 0)
                        r = k;
        }
        closedir(d);
        if (unlinkat(dirfd, name, AT_REMOVEDIR) < 0 && errno != ENOENT && r == 0)
                r = -errno;
        return r;
}

int rm_rf(const char *path) {
        return rm_rf_at(AT_FDCWD, path);
}

const char *path_basename(const char *path) {
        const char *s = strrchr(path, '/');
        return s ? s + 1 : path;
}

void sanitize_filename(char *s) {
        for (; *s; s++)
                if (!isalnum((unsigned char) *s) && !strchr("._+-", *s))
                        *s = '_';
}

const char *host_name(void) {
        static char name[256];
        if (!name[0]) {
                if (gethostname(name, sizeof name - 1) < 0 || !name[0])
                        strscpy(name, "localhost", sizeof name);
                name[sizeof name - 1] = 0;
        }
        return name;
}

bool job_name_valid(const char *name) {
        size_t n = 0;
        for (const char *p = name; *p; p++, n++)
                if (!isalnum((unsigned char) *p) && *p != '_' && *p != '.')
                        return false;
        return n >= 1 && n <= 64;
}

int pty_open_numbered(const char *ptmx, uint32_t want, uint32_t *got) {
        enum { HOLD = 256 };
        int held[HOLD], n_held = 0, first = -1, r = -EBUSY;
        uint32_t first_index = 0;
        for (;;) {
                int fd = (int) raw_syscall4(SYS_openat, AT_FDCWD, (long) ptmx, O_RDWR | O_NOCTTY | O_CLOEXEC, 0);
                unsigned index = 0;
                if (fd >= 0 && raw_syscall3(SYS_ioctl, fd, TIOCGPTN, (long) &index) < 0) {
                        raw_syscall1(SYS_close, fd);
                        fd = -EIO;
                }
                if (fd < 0) {
                        r = fd;
                        break;
                }
                if (index == want || (first < 0 && index > want)) {
                        r = fd;
                        *got = index;
                        break;
                }
                if (first < 0) {
                        first = fd;
                        first_index = index;
                } else if (index > want || n_held == HOLD) {
                        raw_syscall1(SYS_close, fd);
                        break;          /* taken: the first one will do */
                } else
                        held[n_held++] = fd;
        }
        for (int i = 0; i < n_held; i++)
                raw_syscall1(SYS_close, held[i]);
        if (r >= 0) {
                if (first >= 0)
                        raw_syscall1(SYS_close, first);
                return r;
        }
        if (first >= 0) {
                *got = first_index;
                return first;
        }
        return r;
}
