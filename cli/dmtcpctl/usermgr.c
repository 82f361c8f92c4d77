#include "usermgr.h"

#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <string.h>
#include <time.h>

#include "util.h"

#define SD_DEST "org.freedesktop.systemd1"
#define SD_PATH "/org/freedesktop/systemd1"
#define SD_MANAGER "org.freedesktop.systemd1.Manager"

static _printf_(3, 4) void set_err(char *err, size_t size, const char *fmt, ...) {
        if (!err || !size)
                return;
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, size, fmt, ap);
        va_end(ap);
}

/* D-Bus addresses escape everything but [-_/.\A-Za-z0-9] as %XX. */
static int bus_address_escape(const char *s, char *buf, size_t size) {
        size_t o = 0;
        for (const unsigned char *p = (const unsigned char *) s; *p; p++) {
                bool plain = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
                             strchr("-_/.\\", *p);
                if (o + (plain ? 1 : 3) >= size)
                        return -ENAMETOOLONG;
                if (plain)
                        buf[o++] = (char) *p;
                else
                        o += (size_t) snprintf(buf + o, size - o, "%%%02x", *p);
        }
        buf[o] = 0;
        return 0;
}

int usermgr_connect(sd_bus **ret, char *err, size_t errsize) {
        const char *rt = getenv("XDG_RUNTIME_DIR");
        int r = -ENOENT;
        if (rt && rt[0] == '/') {
                char esc[PATH_MAX * 3], addr[PATH_MAX * 3 + 64];
                if (bus_address_escape(rt, esc, sizeof esc) == 0) {
                        snprintf(addr, sizeof addr, "unix:path=%s/systemd/private", esc);
                        sd_bus *b = NULL;
                        r = sd_bus_new(&b);
                        if (r >= 0)
                                r = sd_bus_set_address(b, addr);
                        if (r >= 0)
                                r = sd_bus_start(b);
                        if (r >= 0) {
                                *ret = b;
                                return 0;
                        }
                        sd_bus_unref(b);
                }
        }
        sd_bus *b = NULL;
        int r2 = sd_bus_open_user(&b);
        if (r2 >= 0) {
                *ret = b;
                return 0;
        }
        set_err(err, errsize, "cannot reach your systemd user manager (%s/systemd/private: %s; user bus: %s)",
                rt && *rt ? rt : "$XDG_RUNTIME_DIR unset", strerror(-r), strerror(-r2));
        return r2;
}

bool usermgr_error_no_unit(const char *name) {
        return name && (!strcmp(name, "org.freedesktop.systemd1.NoSuchUnit") ||
                        !strcmp(name, "org.freedesktop.systemd1.LoadFailed") ||
                        !strcmp(name, "org.freedesktop.systemd1.UnitMasked"));
}

/* ---- jobs ------------------------------------------------------------- */

#define MAX_SEEN 64

struct job_wait {
        size_t n;
        char path[MAX_SEEN][128];
        char result[MAX_SEEN][32];
};

static int on_job_removed(sd_bus_message *m, void *userdata, sd_bus_error *e) {
        struct job_wait *w = userdata;
        uint32_t id;
        const char *path, *unit, *result;
        if (sd_bus_message_read(m, "uoss", &id, &path, &unit, &result) < 0)
                return 0;
        size_t i = w->n < MAX_SEEN ? w->n++ : MAX_SEEN - 1;
        strscpy(w->path[i], path, sizeof w->path[i]);
        strscpy(w->result[i], result, sizeof w->result[i]);
        return 0;
}

static const char *seen_result(const struct job_wait *w, const char *path) {
        for (size_t i = 0; i < w->n; i++)
                if (!strcmp(w->path[i], path))
                        return w->result[i];
        return NULL;
}

/* Wait for the job at path to be removed; returns its result. */
static int wait_job(sd_bus *bus, const struct job_wait *w, const char *path, uint64_t deadline, const char **ret) {
        for (;;) {
                if ((*ret = seen_result(w, path)))
                        return 0;
                int r = sd_bus_process(bus, NULL);
                if (r < 0)
                        return r;
                if (r > 0)
                        continue;
                uint64_t now = now_usec(CLOCK_MONOTONIC);
                if (now >= deadline)
                        return -ETIMEDOUT;
                r = sd_bus_wait(bus, deadline - now);
                if (r < 0 && r != -EINTR)
                        return r;
        }
}

int usermgr_unit_job(sd_bus *bus, const char *method, const char *unit, uint64_t timeout_usec, char *err,
                     size_t errsize) {
        _cleanup_(sd_bus_error_free) sd_bus_error e = SD_BUS_ERROR_NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        _cleanup_(sd_bus_slot_unrefp) sd_bus_slot *slot = NULL;
        struct job_wait w = {};
        /* Watch before asking: the job may end before the reply arrives. */
        int r = sd_bus_match_signal(bus, &slot, NULL, SD_PATH, SD_MANAGER, "JobRemoved", on_job_removed, &w);
        if (r < 0) {
                set_err(err, errsize, "cannot watch the user manager's jobs: %s", strerror(-r));
                return r;
        }
        r = sd_bus_call_method(bus, SD_DEST, SD_PATH, SD_MANAGER, "Subscribe", &e, NULL, NULL);
        if (r < 0 && !sd_bus_error_has_name(&e, "org.freedesktop.systemd1.AlreadySubscribed")) {
                set_err(err, errsize, "cannot subscribe to the user manager's jobs: %s", e.message ? e.message : strerror(-r));
                return r;
        }
        sd_bus_error_free(&e);
        r = sd_bus_call_method(bus, SD_DEST, SD_PATH, SD_MANAGER, method, &e, &reply, "ss", unit, "replace");
        if (r < 0) {
                set_err(err, errsize, "%s %s: %s", method, unit, e.message ? e.message : strerror(-r));
                return usermgr_error_no_unit(e.name) ? -ENOENT : r;
        }
        const char *path, *result;
        r = sd_bus_message_read(reply, "o", &path);
        if (r < 0) {
                set_err(err, errsize, "%s %s: unexpected reply", method, unit);
                return r;
        }
        r = wait_job(bus, &w, path, now_usec(CLOCK_MONOTONIC) + timeout_usec, &result);
        if (r == -ETIMEDOUT) {
                set_err(err, errsize, "%s %s did not finish within %" PRIu64 " s", method, unit, timeout_usec / 1000000);
                return r;
        }
        if (r < 0) {
                set_err(err, errsize, "lost the user manager while waiting for %s %s: %s", method, unit, strerror(-r));
                return r;
        }
        if (!strcmp(result, "done") || !strcmp(result, "skipped"))
                return 0;
        set_err(err, errsize, "%s %s ended with result '%s'", method, unit, result);
        return !strcmp(result, "canceled") ? -ECANCELED : !strcmp(result, "timeout") ? -ETIMEDOUT :
               !strcmp(result, "assert") ? -ENOEXEC : -EIO;
}

/* ---- properties ------------------------------------------------------- */

static int get_string(sd_bus *bus, const char *path, const char *iface, const char *prop, char *buf, size_t size) {
        _cleanup_(sd_bus_error_free) sd_bus_error e = SD_BUS_ERROR_NULL;
        _cleanup_free_ char *s = NULL;
        int r = sd_bus_get_property_string(bus, SD_DEST, path, iface, prop, &e, &s);
        if (r < 0)
                return r;
        strscpy(buf, s, size);
        return 0;
}

static int get_trivial(sd_bus *bus, const char *path, const char *iface, const char *prop, char type, void *ret) {
        _cleanup_(sd_bus_error_free) sd_bus_error e = SD_BUS_ERROR_NULL;
        return sd_bus_get_property_trivial(bus, SD_DEST, path, iface, prop, &e, type, ret);
}

int usermgr_unit_info(sd_bus *bus, const char *unit, struct unit_info *info, char *err, size_t errsize) {
        memset(info, 0, sizeof *info);
        _cleanup_(sd_bus_error_free) sd_bus_error e = SD_BUS_ERROR_NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        int r = sd_bus_call_method(bus, SD_DEST, SD_PATH, SD_MANAGER, "LoadUnit", &e, &reply, "s", unit);
        if (r < 0) {
                set_err(err, errsize, "cannot load %s: %s", unit, e.message ? e.message : strerror(-r));
                return r;
        }
        const char *p;
        char path[256];
        r = sd_bus_message_read(reply, "o", &p);
        if (r < 0) {
                set_err(err, errsize, "cannot load %s: unexpected reply", unit);
                return r;
        }
        strscpy(path, p, sizeof path);
        const char *U = "org.freedesktop.systemd1.Unit", *S = "org.freedesktop.systemd1.Service";
        r = get_string(bus, path, U, "LoadState", info->load_state, sizeof info->load_state);
        if (r >= 0)
                r = get_string(bus, path, U, "ActiveState", info->active_state, sizeof info->active_state);
        if (r >= 0)
                r = get_string(bus, path, U, "SubState", info->sub_state, sizeof info->sub_state);
        if (r < 0) {
                set_err(err, errsize, "cannot read the state of %s: %s", unit, strerror(-r));
                return r;
        }
        (void) get_string(bus, path, U, "UnitFileState", info->unit_file_state, sizeof info->unit_file_state);
        (void) get_trivial(bus, path, U, "StateChangeTimestamp", 't', &info->state_change_usec);
        (void) get_trivial(bus, path, U, "ActiveEnterTimestamp", 't', &info->active_enter_usec);
        size_t l = strlen(unit);
        info->is_service = l > 8 && !strcmp(unit + l - 8, ".service");
        if (info->is_service && strcmp(info->load_state, "not-found")) {
                (void) get_string(bus, path, S, "Result", info->result, sizeof info->result);
                (void) get_trivial(bus, path, S, "MainPID", 'u', &info->main_pid);
                (void) get_trivial(bus, path, S, "ExecMainCode", 'i', &info->exec_main_code);
                (void) get_trivial(bus, path, S, "ExecMainStatus", 'i', &info->exec_main_status);
                (void) get_trivial(bus, path, S, "NRestarts", 'u', &info->n_restarts);
        }
        return 0;
}

int usermgr_list_units(sd_bus *bus, const char *pattern, void (*cb)(const char *name, void *userdata), void *userdata,
                       char *err, size_t errsize) {
        _cleanup_(sd_bus_error_free) sd_bus_error e = SD_BUS_ERROR_NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL, *reply = NULL;
        int r = sd_bus_message_new_method_call(bus, &m, SD_DEST, SD_PATH, SD_MANAGER, "ListUnitsByPatterns");
        if (r >= 0)
                r = sd_bus_message_append_strv(m, (char *[]) { NULL });
        if (r >= 0)
                r = sd_bus_message_append_strv(m, (char *[]) { (char *) pattern, NULL });
        if (r >= 0)
                r = sd_bus_call(bus, m, 0, &e, &reply);
        if (r < 0) {
                set_err(err, errsize, "cannot list units: %s", e.message ? e.message : strerror(-r));
                return r;
        }
        r = sd_bus_message_enter_container(reply, 'a', "(ssssssouso)");
        while (r >= 0) {
                const char *name, *desc, *load, *active, *sub, *following, *job_type, *obj, *job_obj;
                uint32_t job_id;
                r = sd_bus_message_read(reply, "(ssssssouso)", &name, &desc, &load, &active, &sub, &following, &obj,
                                        &job_id, &job_type, &job_obj);
                if (r <= 0)
                        break;
                cb(name, userdata);
        }
        if (r < 0) {
                set_err(err, errsize, "cannot read the unit list: %s", strerror(-r));
                return r;
        }
        return 0;
}

/* The number of changes listed in a reply's a(sss) ("symlink", from, to). */
static int count_changes(sd_bus_message *reply) {
        int r = sd_bus_message_enter_container(reply, 'a', "(sss)");
        if (r < 0)
                return r;
        int n = 0;
        const char *type, *from, *to;
        while ((r = sd_bus_message_read(reply, "(sss)", &type, &from, &to)) > 0)
                n++;
        return r < 0 ? r : n;
}

int usermgr_enable(sd_bus *bus, const char *unit, bool enable, char *err, size_t errsize) {
        const char *method = enable ? "EnableUnitFiles" : "DisableUnitFiles";
        _cleanup_(sd_bus_error_free) sd_bus_error e = SD_BUS_ERROR_NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL, *reply = NULL;
        int r = sd_bus_message_new_method_call(bus, &m, SD_DEST, SD_PATH, SD_MANAGER, method);
        if (r >= 0)
                r = sd_bus_message_append_strv(m, (char *[]) { (char *) unit, NULL });
        if (r >= 0)
                r = enable ? sd_bus_message_append(m, "bb", 0, 0) : sd_bus_message_append(m, "b", 0);
        if (r >= 0)
                r = sd_bus_call(bus, m, 0, &e, &reply);
        if (r < 0) {
                set_err(err, errsize, "cannot %s %s: %s", enable ? "enable" : "disable", unit,
                        e.message ? e.message : strerror(-r));
                return r;
        }
        int carries;
        if (enable && (r = sd_bus_message_read(reply, "b", &carries)) < 0) {
                set_err(err, errsize, "unexpected reply to %s %s", method, unit);
                return r;
        }
        int changes = count_changes(reply);
        if (changes < 0) {
                set_err(err, errsize, "unexpected reply to %s %s", method, unit);
                return changes;
        }
        if (changes == 0)
                return 0;
        /* As systemctl enable/disable: let the manager see the new symlinks. */
        r = sd_bus_call_method(bus, SD_DEST, SD_PATH, SD_MANAGER, "Reload", &e, NULL, NULL);
        if (r < 0) {
                set_err(err, errsize, "cannot reload the user manager: %s", e.message ? e.message : strerror(-r));
                return r;
        }
        return 0;
}

int usermgr_getenv(sd_bus *bus, const char *name, char **ret) {
        *ret = NULL;
        _cleanup_(sd_bus_error_free) sd_bus_error e = SD_BUS_ERROR_NULL;
        char **env = NULL;
        int r = sd_bus_get_property_strv(bus, SD_DEST, SD_PATH, SD_MANAGER, "Environment", &e, &env);
        if (r < 0)
                return r;
        size_t l = strlen(name);
        for (char **p = env; p && *p; p++) {
                if (!*ret && !strncmp(*p, name, l) && (*p)[l] == '=')
                        *ret = strdup(*p + l + 1);
                free(*p);
        }
        free(env);
        return 0;
}
