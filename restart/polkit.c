#include "polkit.h"

#include <inttypes.h>
#include <string.h>
#include <systemd/sd-bus.h>

#include "macro.h"
#include "util.h"

#define POLKIT_ACTION "org.dmtcp.restart-foreign-image"
#define POLKIT_FLAG_ALLOW_INTERACTION 1u

/* Field 22 of /proc/self/stat (start time in clock ticks since boot), which
 * polkit compares to tell this process from a later one with the same pid. */
static int self_start_time(uint64_t *ret) {
        char buf[1024];
        ssize_t n = read_small_file("/proc/self/stat", buf, sizeof buf);
        if (n < 0)
                return (int) n;
        const char *p = strrchr(buf, ')');      /* comm may contain spaces and ')' */
        if (!p)
                return -EBADMSG;
        p++;                                    /* at the blank before field 3 */
        for (int field = 3; field < 22; field++) {
                p = strchr(p + 1, ' ');
                if (!p)
                        return -EBADMSG;
        }
        return sscanf(p, " %" SCNu64, ret) == 1 ? 0 : -EBADMSG;
}

static int check(bool interactive, bool *challenge, char *err, size_t errsize) {
        uint64_t start;
        int r = self_start_time(&start);
        if (r < 0) {
                snprintf(err, errsize, "cannot read this process's start time: %s", strerror(-r));
                return r;
        }
        _cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
        r = sd_bus_open_system(&bus);
        if (r < 0) {
                snprintf(err, errsize, "no system bus: %s", strerror(-r));
                return r;
        }
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL, *reply = NULL;
        _cleanup_(sd_bus_error_free) sd_bus_error e = SD_BUS_ERROR_NULL;
        r = sd_bus_message_new_method_call(bus, &m, "org.freedesktop.PolicyKit1", "/org/freedesktop/PolicyKit1/Authority",
                                           "org.freedesktop.PolicyKit1.Authority", "CheckAuthorization");
        /* Subject: this very process; polkit checks pid, start time and uid. */
        if (r >= 0)
                r = sd_bus_message_append(m, "(sa{sv})", "unix-process", 3,
                                          "pid", "u", (uint32_t) getpid(),
                                          "start-time", "t", start,
                                          "uid", "i", (int32_t) getuid());
        if (r >= 0)
                r = sd_bus_message_append(m, "sa{ss}us", POLKIT_ACTION, 0,
                                          interactive ? POLKIT_FLAG_ALLOW_INTERACTION : 0u, "");
        if (r >= 0)
                r = sd_bus_call(bus, m, interactive ? 5 * 60 * UINT64_C(1000000) : 0, &e, &reply);
        int authorized = 0, chall = 0;
        if (r >= 0)
                r = sd_bus_message_enter_container(reply, 'r', "bba{ss}");
        if (r >= 0)
                r = sd_bus_message_read(reply, "bb", &authorized, &chall);
        if (r < 0) {
                snprintf(err, errsize, "%s", e.message ? e.message : strerror(-r));
                return r;
        }
        *challenge = chall;
        return authorized;
}

int rst_polkit_may_restart_foreign_image(void) {
        static int answer = -1;
        if (answer >= 0)
                return answer;
        char err[512] = "";
        bool challenge = false;
        int r = check(isatty(STDIN_FILENO), &challenge, err, sizeof err);
        if (r < 0)
                fprintf(stderr, "dmtcp_restart: cannot ask polkit whether you may restart another user's image (%s); "
                                "taking that as no\n", err);
        else if (r == 0 && challenge)
                fprintf(stderr, "dmtcp_restart: polkit wants authentication for " POLKIT_ACTION "; run "
                                "dmtcp_restart where a polkit agent can ask you (e.g. under pkttyagent)\n");
        answer = r > 0;
        return answer;
}
