/* Talking to the calling user's systemd manager over D-Bus (sd-bus): connect,
 * run unit jobs and wait for them, read unit properties, enable units.
 * Used by dmtcpctl and, for socket activation of a job's coordinator, by
 * dmtcp_launch and dmtcp_restart (coord-activate.h). */
#pragma once

#include <systemd/sd-bus.h>

#include "macro.h"

#define _cleanup_bus_ _cleanup_(sd_bus_flush_close_unrefp)   /* from sd-bus.h */

/* Connect as systemctl --user does: the manager's private socket
 * $XDG_RUNTIME_DIR/systemd/private, else the user bus. Returns 0 or -errno;
 * err says where it looked. */
int usermgr_connect(sd_bus **ret, char *err, size_t errsize);

/* Call method ("StartUnit", "StopUnit", "RestartUnit") on unit with mode
 * "replace" and wait at most timeout_usec for its job to end. Returns 0 when
 * the job's result is "done" (or there was no job to do); -ENOENT when no
 * such unit can be loaded; -ECANCELED, -ETIMEDOUT or -EIO for the other
 * results; or another -errno. err gets a one-line explanation. */
int usermgr_unit_job(sd_bus *bus, const char *method, const char *unit, uint64_t timeout_usec, char *err,
                     size_t errsize);

struct unit_info {
        char load_state[32];            /* loaded, not-found, masked, ... */
        char active_state[32];          /* active, inactive, failed, activating, deactivating */
        char sub_state[32];             /* running, exited, dead, auto-restart, listening, ... */
        char result[64];                /* success, exit-code, signal, ... (services) */
        char unit_file_state[32];       /* enabled, disabled, linked, ... */
        uint32_t main_pid;
        int32_t exec_main_code;         /* CLD_EXITED, CLD_KILLED, CLD_DUMPED; 0 = none */
        int32_t exec_main_status;
        uint32_t n_restarts;
        uint64_t state_change_usec;     /* CLOCK_REALTIME of the last state change */
        uint64_t active_enter_usec;
        bool is_service;
};

/* Load unit (LoadUnit, so templates' instances work) and read its state. */
int usermgr_unit_info(sd_bus *bus, const char *unit, struct unit_info *info, char *err, size_t errsize);

/* Names of loaded units matching a glob (ListUnitsByPatterns). Calls cb for each. */
int usermgr_list_units(sd_bus *bus, const char *pattern, void (*cb)(const char *name, void *userdata), void *userdata,
                       char *err, size_t errsize);

/* Enable (EnableUnitFiles) or disable (DisableUnitFiles) a unit, then Reload
 * the manager when symlinks changed. */
int usermgr_enable(sd_bus *bus, const char *unit, bool enable, char *err, size_t errsize);

/* The manager's environment block (the Environment property), as given to
 * units: *ret is the value of name (allocated), or NULL when it is not set
 * there. Returns 0, or -errno when the property cannot be read. */
int usermgr_getenv(sd_bus *bus, const char *name, char **ret);

/* Is this the D-Bus error name of an unknown unit? */
bool usermgr_error_no_unit(const char *name);
