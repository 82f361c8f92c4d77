/* dmtcp-activate: socket activation of a job's coordinator, for
 * dmtcp_launch and dmtcp_restart --job NAME (installed in
 * LIBEXECDIR/dmtcp/, not meant to be typed).
 *
 *   dmtcp-activate JOB SOCKET_PATH TIMEOUT_MS
 *
 * Exit status 0 when SOCKET_PATH is there (the user manager started
 * dmtcp-coordinator@JOB.socket), 1 when that is not possible, 64 on a usage
 * error. A separate program so that dmtcp_launch, which every launch runs,
 * does not load libsystemd and what it pulls in (a few milliseconds of
 * dynamic linking per launch): only this helper talks to the user manager. */
#include <stdlib.h>

#include "coord-activate.h"
#include "log.h"

int main(int argc, char **argv) {
        log_set_ident("dmtcp-activate");
        if (argc != 4) {
                log_error("usage: dmtcp-activate JOB SOCKET_PATH TIMEOUT_MS");
                return 64;
        }
        char *end;
        long t = strtol(argv[3], &end, 10);
        if (*end || t < 0 || t > 3600 * 1000) {
                log_error("bad timeout %s", argv[3]);
                return 64;
        }
        return coord_activate_job_socket(argv[1], argv[2], (int) t) > 0 ? 0 : 1;
}
