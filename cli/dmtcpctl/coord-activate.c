#include "coord-activate.h"

#include <limits.h>
#include <string.h>
#include <time.h>

#include "job-paths.h"
#include "log.h"
#include "usermgr.h"
#include "util.h"

int coord_activate_job_socket(const char *job, const char *path, int timeout_ms) {
        char unit[128], err[512];
        if (!job_name_ok(job) || job_coord_socket_name(job, unit, sizeof unit) < 0)
                return 0;
        _cleanup_bus_ sd_bus *bus = NULL;
        if (usermgr_connect(&bus, err, sizeof err) < 0) {
                log_debug("no socket activation for job %s: %s", job, err);
                return 0;
        }
        int r = usermgr_unit_job(bus, "StartUnit", unit, (uint64_t) timeout_ms * 1000, err, sizeof err);
        if (r < 0) {
                log_debug("no socket activation for job %s: %s", job, err);
                return 0;
        }
        uint64_t deadline = now_usec(CLOCK_MONOTONIC) + (uint64_t) timeout_ms * 1000;
        while (access(path, F_OK) < 0) {
                if (now_usec(CLOCK_MONOTONIC) >= deadline) {
                        log_debug("%s started, but %s did not appear", unit, path);
                        return 0;
                }
                struct timespec ts = { 0, 10 * 1000 * 1000 };
                nanosleep(&ts, NULL);
        }
        log_debug("started %s", unit);
        return 1;
}
