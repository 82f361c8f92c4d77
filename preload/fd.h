/* Descriptor kinds. Each kind lives in its own file and fills one ops table;
 * fd.c walks /proc/self/fd and dispatches. Adding a kind = a new file and a
 * line in fd.c's table. */
#pragma once

#include <sys/stat.h>

#include "rt.h"

struct rt_fd_probe {
        int fd;
        struct stat st;
        char path[PATH_MAX];            /* readlink of /proc/self/fd/N */
        int flags, fdflags;
};

struct rt_fd_ops {
        uint32_t kind;                  /* enum img_fd_kind */
        const char *name;
        /* Is this descriptor of our kind? */
        bool (*match)(const struct rt_fd_probe *p);
        /* Record it (threads suspended). Return 0 or -errno with err set. */
        int (*save)(const struct rt_fd_probe *p, struct rt_fd *out, char *err, size_t errsize);
        /* Recreate it at out->d.fd in a restored process. */
        int (*restore)(const struct rt_fd *f, char *err, size_t errsize);
};

extern const struct rt_fd_ops rt_fd_external_ops, rt_fd_regular_ops, rt_fd_directory_ops,
        rt_fd_chardev_ops, rt_fd_tty_ops;

/* Helpers shared by kinds. */
char *rt_strdup_state(const char *s);
int rt_fd_install(int newfd, int target, int fdflags);   /* dup newfd onto target, close newfd */
int rt_file_add(uint64_t dev, uint64_t ino, const char *path, uint32_t flags, const struct stat *st);
bool rt_fd_is_external(int fd, const struct stat *st);
