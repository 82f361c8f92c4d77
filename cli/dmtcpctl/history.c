#include "history.h"

#include <stdarg.h>
#include <string.h>
#include <systemd/sd-journal.h>

#include "messages.h"
#include "util.h"

const char *history_kind_name(enum history_kind k) {
        return k == HISTORY_RESTART ? "restart" : "checkpoint";
}

const char *history_result_name(enum history_kind k) {
        switch (k) {
        case HISTORY_CHECKPOINT_COMMITTED:
                return "committed";
        case HISTORY_CHECKPOINT_ABORTED:
                return "aborted";
        default:
                return "restarted";
        }
}

/* Value of FIELD in the current entry, NUL-terminated into buf; false when absent. */
static bool field(sd_journal *j, const char *name, char *buf, size_t size) {
        const void *d;
        size_t l, nl = strlen(name);
        if (sd_journal_get_data(j, name, &d, &l) < 0 || l <= nl || ((const char *) d)[nl] != '=')
                return false;
        size_t vl = MIN(l - nl - 1, size - 1);
        memcpy(buf, (const char *) d + nl + 1, vl);
        buf[vl] = 0;
        return true;
}

static bool field_u64(sd_journal *j, const char *name, uint64_t *v) {
        char buf[32];
        return field(j, name, buf, sizeof buf) && parse_u64(buf, v) == 0;
}

static int add_match(sd_journal *j, const char *field_name, const char *value) {
        char m[256];
        int n = snprintf(m, sizeof m, "%s=%s", field_name, value);
        if (n < 0 || (size_t) n >= sizeof m)
                return -ENAMETOOLONG;
        return sd_journal_add_match(j, m, 0);
}

int history_read(const char *job, uid_t uid, size_t limit, struct history_entry **ret, char *err, size_t errsize) {
        *ret = NULL;
        sd_journal *j = NULL;
        int r = sd_journal_open(&j, SD_JOURNAL_LOCAL_ONLY);
        if (r < 0) {
                snprintf(err, errsize, "cannot open the journal: %s", strerror(-r));
                return r;
        }
        char uidbuf[16];
        snprintf(uidbuf, sizeof uidbuf, "%u", (unsigned) uid);
        /* Same field: OR; different fields: AND. */
        r = add_match(j, "DMTCP_JOB", job);
        if (r >= 0)
                r = add_match(j, "_UID", uidbuf);
        if (r >= 0)
                r = add_match(j, "MESSAGE_ID", DMTCP_MESSAGE_CKPT_COMMITTED);
        if (r >= 0)
                r = add_match(j, "MESSAGE_ID", DMTCP_MESSAGE_CKPT_ABORTED);
        if (r >= 0)
                r = add_match(j, "MESSAGE_ID", DMTCP_MESSAGE_RESTART_COMPLETED);
        if (r < 0) {
                snprintf(err, errsize, "cannot query the journal: %s", strerror(-r));
                sd_journal_close(j);
                return r;
        }
        (void) sd_journal_set_data_threshold(j, 0);

        struct history_entry *v = NULL;
        size_t n = 0, cap = 0;
        /* Newest first, so a limit stops early; reversed at the end. */
        SD_JOURNAL_FOREACH_BACKWARDS(j) {
                if (limit && n >= limit)
                        break;
                char mid[40];
                if (!field(j, "MESSAGE_ID", mid, sizeof mid))
                        continue;
                struct history_entry e = {};
                if (!strcmp(mid, DMTCP_MESSAGE_CKPT_COMMITTED))
                        e.kind = HISTORY_CHECKPOINT_COMMITTED;
                else if (!strcmp(mid, DMTCP_MESSAGE_CKPT_ABORTED))
                        e.kind = HISTORY_CHECKPOINT_ABORTED;
                else if (!strcmp(mid, DMTCP_MESSAGE_RESTART_COMPLETED))
                        e.kind = HISTORY_RESTART;
                else
                        continue;
                (void) sd_journal_get_realtime_usec(j, &e.realtime_usec);
                e.have_generation = field_u64(j, "DMTCP_GENERATION", &e.generation);
                uint64_t p;
                if ((e.have_processes = field_u64(j, "DMTCP_PROCESSES", &p)))
                        e.processes = (uint32_t) MIN(p, (uint64_t) UINT32_MAX);
                e.have_bytes = field_u64(j, "DMTCP_IMAGE_BYTES", &e.bytes);
                e.have_duration = field_u64(j, "DMTCP_DURATION_USEC", &e.duration_usec);
                field(j, "DMTCP_COMPUTATION", e.computation, sizeof e.computation);
                field(j, "DMTCP_IMAGE_DIR", e.dir, sizeof e.dir);
                field(j, "DMTCP_REASON", e.reason, sizeof e.reason);
                if (!field(j, "_SYSTEMD_USER_UNIT", e.unit, sizeof e.unit))
                        field(j, "_SYSTEMD_UNIT", e.unit, sizeof e.unit);
                if (n == cap) {
                        cap = cap ? cap * 2 : 64;
                        struct history_entry *nv = realloc(v, cap * sizeof *v);
                        if (!nv) {
                                free(v);
                                sd_journal_close(j);
                                return -ENOMEM;
                        }
                        v = nv;
                }
                v[n++] = e;
        }
        sd_journal_close(j);
        if (n > INT32_MAX) {
                free(v);
                return -E2BIG;
        }
        for (size_t a = 0, b = n ? n - 1 : 0; a < b; a++, b--) {
                struct history_entry t = v[a];
                v[a] = v[b];
                v[b] = t;
        }
        *ret = v;
        return (int) n;
}
