#include "coord-commit.h"

#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "coord-text.h"
#include "log.h"
#include "manifest.h"
#include "util.h"

static void closedirp(DIR **d) {
        if (*d)
                closedir(*d);
}
#define _cleanup_closedir_ _cleanup_(closedirp)

/* snprintf for paths: -ENAMETOOLONG instead of silent truncation. */
static _printf_(3, 4) int pathf(char *buf, size_t size, const char *fmt, ...) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(buf, size, fmt, ap);
        va_end(ap);
        return n < 0 || (size_t) n >= size ? -ENAMETOOLONG : 0;
}

bool coord_gen_name_parse(const char *name, uint64_t *gen) {
        if (strncmp(name, COORD_GEN_PREFIX, 4) != 0 || strlen(name) != 10)
                return false;
        uint64_t v = 0;
        for (const char *p = name + 4; *p; p++) {
                if (*p < '0' || *p > '9')
                        return false;
                v = v * 10 + (uint64_t) (*p - '0');
        }
        *gen = v;
        return true;
}

/* ".gen-NNNNNN.tmp" (a generation being written) or ".gen-NNNNNN.del" (an
 * old one being removed): left behind only by a coordinator that died. */
static bool tmp_name_parse(const char *name) {
        uint64_t g;
        char buf[16];
        if (name[0] != '.' || strlen(name) != 15 || (strcmp(name + 11, ".tmp") && strcmp(name + 11, ".del")))
                return false;
        memcpy(buf, name + 1, 10);
        buf[10] = 0;
        return coord_gen_name_parse(buf, &g);
}

static bool is_dir_at(int dfd, const char *name) {
        struct stat st;
        return fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(st.st_mode);
}

int coord_newest_generation(const char *ckptdir, uint64_t *ret) {
        *ret = 0;
        _cleanup_closedir_ DIR *d = opendir(ckptdir);
        if (!d)
                return errno == ENOENT ? 0 : -errno;
        struct dirent *de;
        uint64_t g;
        while ((de = readdir(d)))
                if (coord_gen_name_parse(de->d_name, &g) && g > *ret && is_dir_at(dirfd(d), de->d_name))
                        *ret = g;
        return 0;
}

int coord_prepare_generation(const char *ckptdir, uint64_t gen, char *tmpdir, size_t size,
                             char *err, size_t errsize) {
        int r = mkdir_p(ckptdir, 0700);
        if (r < 0)
                return errorf(err, errsize, r, "cannot create checkpoint directory %s: %m", ckptdir);
        {
                _cleanup_closedir_ DIR *d = opendir(ckptdir);
                if (!d)
                        return errorf(err, errsize, -errno, "cannot read checkpoint directory %s: %m", ckptdir);
                struct dirent *de;
                while ((de = readdir(d))) {
                        if (!tmp_name_parse(de->d_name))
                                continue;
                        char path[PATH_MAX];
                        r = pathf(path, sizeof path, "%s/%s", ckptdir, de->d_name);
                        if (r == 0)
                                r = rm_rf(path);
                        if (r < 0)
                                log_warning_errno(r, "Failed to remove stale temporary generation %s: %m", path);
                        else
                                log_info("removed stale temporary generation %s", path);
                }
        }
        int n = snprintf(tmpdir, size, "%s/.gen-%06" PRIu64 ".tmp", ckptdir, gen);
        if (n < 0 || (size_t) n >= size)
                return errorf(err, errsize, -ENAMETOOLONG, "checkpoint directory %s: path too long", ckptdir);
        if (mkdir(tmpdir, 0700) < 0)
                return errorf(err, errsize, -errno, "cannot create %s: %m", tmpdir);
        return 0;
}

static int verify_images(const struct coord_commit *c, char *err, size_t errsize) {
        _cleanup_close_ int dfd = open(c->tmpdir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd < 0)
                return errorf(err, errsize, -errno, "cannot open %s: %m", c->tmpdir);
        for (size_t i = 0; i < c->n_images; i++) {
                const struct manifest_image *im = &c->images[i];
                struct stat st;
                if (fstatat(dfd, im->name, &st, AT_SYMLINK_NOFOLLOW) < 0)
                        return errorf(err, errsize, -errno, "image %s of %s (%s on %s) is missing: %m",
                                     im->name, im->upid, im->program, im->host);
                if (!S_ISREG(st.st_mode))
                        return errorf(err, errsize, -EBADF, "image %s of %s (%s on %s) is not a regular file",
                                     im->name, im->upid, im->program, im->host);
                if ((uint64_t) st.st_size != im->bytes)
                        return errorf(err, errsize, -EBADMSG,
                                     "image %s of %s (%s on %s) has %" PRIu64 " bytes, the process reported %" PRIu64,
                                     im->name, im->upid, im->program, im->host, (uint64_t) st.st_size, im->bytes);
        }
        return 0;
}

static int write_manifest(const struct coord_commit *c, char *err, size_t errsize) {
        struct manifest m = {
                .generation = c->generation,
                .time_usec = c->time_usec,
                .images = c->images,
                .n_images = c->n_images,
        };
        strscpy(m.computation, c->comp_id, sizeof m.computation);
        _cleanup_free_ char *text = NULL;
        ssize_t len = manifest_format(&m, &text);
        if (len < 0)
                return errorf(err, errsize, (int) len, "cannot format the manifest: %m");
        char path[PATH_MAX];
        if (pathf(path, sizeof path, "%s/%s", c->tmpdir, MANIFEST_NAME) < 0)
                return errorf(err, errsize, -ENAMETOOLONG, "%s: path too long", c->tmpdir);
        _cleanup_close_ int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (fd < 0)
                return errorf(err, errsize, -errno, "cannot create %s: %m", path);
        int r = write_full(fd, text, (size_t) len);
        if (r == 0 && fsync(fd) < 0)
                r = -errno;
        if (r < 0)
                return errorf(err, errsize, r, "cannot write %s: %m", path);
        r = fsync_path(c->tmpdir);
        if (r < 0)
                return errorf(err, errsize, r, "cannot sync %s: %m", c->tmpdir);
        return 0;
}

static void sh_quote(char *out, size_t size, const char *in) {
        size_t o = 0;
        if (size < 3)
                return;
        out[o++] = '\'';
        for (const char *p = in; *p && o + 5 < size; p++) {
                if (*p == '\'') {
                        memcpy(out + o, "'\\''", 4);
                        o += 4;
                } else
                        out[o++] = *p;
        }
        out[o++] = '\'';
        out[o] = 0;
}

int coord_restart_script(const struct coord_commit *c, const char *restart_bin, char **ret) {
        char when[64] = "?";
        time_t t = (time_t) (c->time_usec / 1000000);
        struct tm tm;
        if (localtime_r(&t, &tm))
                strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S %z", &tm);
        char quoted[PATH_MAX * 4 + 8];
        sh_quote(quoted, sizeof quoted, restart_bin && *restart_bin ? restart_bin : "dmtcp_restart");
        char *s = NULL;
        int n = asprintf(&s,
                "#!/bin/sh\n"
                "# dmtcp_restart_script.sh, written by dmtcp_coordinator after each checkpoint.\n"
                "#   computation: %s\n"
                "#   generation:  %" PRIu64 " (the newest complete one when this was written)\n"
                "#   written:     %s\n"
                "#\n"
                "# Usage: ./dmtcp_restart_script.sh [dmtcp_restart options]\n"
                "#   e.g. --coord-host H --coord-port P --ckptdir DIR; DMTCP_COORD_HOST and\n"
                "#   DMTCP_COORD_PORT are honoured. Restarts the newest complete generation in\n"
                "#   the directory of this script. DMTCP_RESTART overrides the program run.\n"
                "dir=$(CDPATH= cd -- \"$(dirname -- \"$0\")\" && pwd -P) || exit 1\n"
                "[ -n \"${DMTCP_RESTART:-}\" ] || DMTCP_RESTART=%s\n"
                "exec \"$DMTCP_RESTART\" \"$@\" \"$dir\"\n",
                c->comp_id, c->generation, when, quoted);
        if (n < 0)
                return -ENOMEM;
        *ret = s;
        return 0;
}

static int replace_latest(const char *ckptdir, uint64_t gen) {
        char target[32], tmp[PATH_MAX], path[PATH_MAX];
        if (pathf(target, sizeof target, COORD_GEN_PREFIX "%06" PRIu64, gen) < 0 ||
            pathf(tmp, sizeof tmp, "%s/.%s.tmp.%d", ckptdir, COORD_LATEST, (int) getpid()) < 0 ||
            pathf(path, sizeof path, "%s/%s", ckptdir, COORD_LATEST) < 0)
                return -ENAMETOOLONG;
        (void) unlink(tmp);
        if (symlink(target, tmp) < 0)
                return -errno;
        if (rename(tmp, path) < 0) {
                int r = -errno;
                (void) unlink(tmp);
                return r;
        }
        return 0;
}

struct gen_entry {
        uint64_t gen;
};

static int cmp_gen_desc(const void *a, const void *b) {
        uint64_t x = ((const struct gen_entry *) a)->gen, y = ((const struct gen_entry *) b)->gen;
        return x < y ? 1 : x > y ? -1 : 0;
}

/* Complete = a gen-NNNNNN directory with a MANIFEST file in it. */
static bool gen_complete(int dfd, const char *name) {
        char p[PATH_MAX];
        struct stat st;
        return pathf(p, sizeof p, "%s/%s", name, MANIFEST_NAME) == 0 && is_dir_at(dfd, name) && fstatat(dfd, p, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st.st_mode);
}

int coord_prune_generations(const char *ckptdir, uint64_t newest, int keep) {
        _cleanup_closedir_ DIR *d = opendir(ckptdir);
        if (!d)
                return -errno;
        _cleanup_free_ struct gen_entry *list = NULL;
        size_t n = 0, alloc = 0;
        struct dirent *de;
        uint64_t g;
        while ((de = readdir(d))) {
                if (!coord_gen_name_parse(de->d_name, &g) || !gen_complete(dirfd(d), de->d_name))
                        continue;
                if (n == alloc) {
                        alloc = MAX(alloc * 2, (size_t) 16);
                        struct gen_entry *nl = realloc(list, alloc * sizeof *list);
                        if (!nl)
                                return -ENOMEM;
                        list = nl;
                }
                list[n++].gen = g;
        }
        qsort(list, n, sizeof *list, cmp_gen_desc);
        int r = 0;
        for (size_t i = (size_t) MAX(keep, 1); i < n; i++) {
                if (list[i].gen == newest)
                        continue;
                /* Out of sight first, in one step: removing a generation in
                 * place could be cut short with its MANIFEST gone and its
                 * images left, a directory no one would remove. */
                char path[PATH_MAX], del[PATH_MAX];
                int k = pathf(path, sizeof path, "%s/" COORD_GEN_PREFIX "%06" PRIu64, ckptdir, list[i].gen);
                if (k == 0 && pathf(del, sizeof del, "%s/." COORD_GEN_PREFIX "%06" PRIu64 ".del", ckptdir,
                                    list[i].gen) == 0 && rename(path, del) == 0)
                        strscpy(path, del, sizeof path);
                if (k == 0)
                        k = rm_rf(path);
                if (k < 0) {
                        log_warning_errno(k, "Failed to remove old generation %s: %m", path);
                        r = r ?: k;
                } else
                        log_info("removed old generation %s (keeping %d)", path, keep);
        }
        return r;
}

int coord_commit_generation(const struct coord_commit *c, const char *restart_bin, char *err, size_t errsize) {
        int r = verify_images(c, err, errsize);
        if (r < 0)
                return r;
        r = write_manifest(c, err, errsize);
        if (r < 0)
                return r;

        char final[PATH_MAX];
        int n = snprintf(final, sizeof final, "%s/" COORD_GEN_PREFIX "%06" PRIu64, c->ckptdir, c->generation);
        if (n < 0 || (size_t) n >= sizeof final)
                return errorf(err, errsize, -ENAMETOOLONG, "checkpoint directory %s: path too long", c->ckptdir);
        if (renameat2(AT_FDCWD, c->tmpdir, AT_FDCWD, final, RENAME_NOREPLACE) < 0)
                return errorf(err, errsize, -errno, "cannot rename %s to %s: %m", c->tmpdir, final);
        /* From here on the generation is complete on disk; a failure below
         * leaves it restartable by directory, so it is still committed. */
        r = fsync_path(c->ckptdir);
        if (r < 0)
                log_warning_errno(r, "Failed to sync %s: %m", c->ckptdir);

        r = replace_latest(c->ckptdir, c->generation);
        if (r < 0)
                log_warning_errno(r, "Failed to point %s/%s to generation %" PRIu64 ": %m",
                                  c->ckptdir, COORD_LATEST, c->generation);

        _cleanup_free_ char *script = NULL;
        char spath[PATH_MAX];
        r = pathf(spath, sizeof spath, "%s/%s", c->ckptdir, COORD_RESTART_SCRIPT);
        if (r == 0)
                r = coord_restart_script(c, restart_bin, &script);
        if (r == 0)
                r = write_file_atomic(spath, script, strlen(script), 0700);
        if (r < 0)
                log_warning_errno(r, "Failed to write %s: %m", spath);

        r = fsync_path(c->ckptdir);
        if (r < 0)
                log_warning_errno(r, "Failed to sync %s: %m", c->ckptdir);
        return 0;
}
