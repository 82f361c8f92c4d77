#include "job-paths.h"

#include <dirent.h>
#include <pwd.h>
#include <stdarg.h>
#include <string.h>

#include "util.h"

bool job_name_ok(const char *name) {
        return name && job_name_valid(name) && name[0] != '.';
}

static _printf_(3, 4) int fmt(char *buf, size_t size, const char *f, ...) {
        va_list ap;
        va_start(ap, f);
        int n = vsnprintf(buf, size, f, ap);
        va_end(ap);
        return n < 0 || (size_t) n >= size ? -ENAMETOOLONG : 0;
}

int job_home_dir(char *buf, size_t size) {
        const char *h = getenv("HOME");
        if (!h || h[0] != '/') {
                struct passwd *pw = getpwuid(getuid());
                if (!pw || !pw->pw_dir || pw->pw_dir[0] != '/')
                        return -ENOENT;
                h = pw->pw_dir;
        }
        return strscpy(buf, h, size) < size ? 0 : -ENAMETOOLONG;
}

static int xdg_dir(const char *var, const char *fallback, char *buf, size_t size) {
        const char *e = getenv(var);
        if (e && e[0] == '/')
                return fmt(buf, size, "%s/%s", e, "dmtcp");
        char home[PATH_MAX];
        int r = job_home_dir(home, sizeof home);
        if (r < 0)
                return r;
        return fmt(buf, size, "%s/%s/dmtcp", home, fallback);
}

int job_config_dir(char *buf, size_t size) {
        return xdg_dir("XDG_CONFIG_HOME", ".config", buf, size);
}

int job_state_root(char *buf, size_t size) {
        return xdg_dir("XDG_STATE_HOME", ".local/state", buf, size);
}

int job_conf_path(const char *name, char *buf, size_t size) {
        char dir[PATH_MAX];
        int r = job_config_dir(dir, sizeof dir);
        return r < 0 ? r : fmt(buf, size, "%s/%s.conf", dir, name);
}

int job_state_dir(const char *name, char *buf, size_t size) {
        char dir[PATH_MAX];
        int r = job_state_root(dir, sizeof dir);
        return r < 0 ? r : fmt(buf, size, "%s/%s", dir, name);
}

int job_unit_name(const char *name, char *buf, size_t size) {
        return fmt(buf, size, "dmtcp@%s%s", name, ".service");
}

int job_coord_service_name(const char *name, char *buf, size_t size) {
        return fmt(buf, size, "dmtcp-coordinator@%s%s", name, ".service");
}

int job_coord_socket_name(const char *name, char *buf, size_t size) {
        return fmt(buf, size, "dmtcp-coordinator@%s%s", name, ".socket");
}

static bool parse_gen_name(const char *n, uint64_t *gen) {
        if (strncmp(n, "gen-", 4) || strlen(n) != 10)
                return false;
        for (int i = 4; i < 10; i++)
                if (n[i] < '0' || n[i] > '9')
                        return false;
        return parse_u64(n + 4, gen) == 0;
}

static int cmp_u64(const void *a, const void *b) {
        uint64_t x = *(const uint64_t *) a, y = *(const uint64_t *) b;
        return x < y ? -1 : x > y;
}

int job_list_generations(const char *dir, uint64_t **ret) {
        *ret = NULL;
        DIR *d = opendir(dir);
        if (!d)
                return errno == ENOENT ? 0 : -errno;
        uint64_t *v = NULL;
        size_t n = 0, cap = 0;
        struct dirent *de;
        while ((de = readdir(d))) {
                uint64_t g;
                if (!parse_gen_name(de->d_name, &g))
                        continue;
                if (n == cap) {
                        cap = cap ? cap * 2 : 16;
                        uint64_t *nv = realloc(v, cap * sizeof *v);
                        if (!nv) {
                                free(v);
                                closedir(d);
                                return -ENOMEM;
                        }
                        v = nv;
                }
                v[n++] = g;
        }
        closedir(d);
        if (n > INT32_MAX) {
                free(v);
                return -E2BIG;
        }
        if (n > 1)
                qsort(v, n, sizeof *v, cmp_u64);
        *ret = v;
        return (int) n;
}

bool job_dir_has_images(const char *dir) {
        DIR *d = opendir(dir);
        if (!d)
                return false;
        bool found = false;
        struct dirent *de;
        while (!found && (de = readdir(d)))
                found = !strncmp(de->d_name, "gen-", 4) || !strncmp(de->d_name, ".gen-", 5) ||
                        !strcmp(de->d_name, "latest");
        closedir(d);
        return found;
}
