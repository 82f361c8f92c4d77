#include "coord-log.h"

#include <inttypes.h>
#include <stdarg.h>
#include <string.h>

#include "log.h"
#include "messages.h"

const char *coord_event_message_id(enum coord_event ev) {
        static const char *const ids[_COORD_EV_MAX] = {
                [COORD_EV_STARTED] = DMTCP_MESSAGE_COORD_STARTED,
                [COORD_EV_MEMBER_JOINED] = DMTCP_MESSAGE_MEMBER_JOINED,
                [COORD_EV_MEMBER_LEFT] = DMTCP_MESSAGE_MEMBER_LEFT,
                [COORD_EV_CKPT_STARTED] = DMTCP_MESSAGE_CKPT_STARTED,
                [COORD_EV_CKPT_COMMITTED] = DMTCP_MESSAGE_CKPT_COMMITTED,
                [COORD_EV_CKPT_ABORTED] = DMTCP_MESSAGE_CKPT_ABORTED,
                [COORD_EV_RESTART_COMPLETED] = DMTCP_MESSAGE_RESTART_COMPLETED,
                [COORD_EV_PEER_REFUSED] = DMTCP_MESSAGE_PEER_REFUSED,
        };
        return ev > 0 && ev < _COORD_EV_MAX ? ids[ev] : NULL;
}

#define N_FIELDS 16

struct fieldbuf {
        char *v[N_FIELDS];
        size_t n;
};

static _printf_(2, 3) void add(struct fieldbuf *f, const char *fmt, ...) {
        if (f->n >= N_FIELDS)
                return;
        va_list ap;
        va_start(ap, fmt);
        char *s = NULL;
        if (vasprintf(&s, fmt, ap) >= 0)
                f->v[f->n++] = s;
        va_end(ap);
}

void coord_log_emit(const struct coord_log *l, const char *job) {
        if (l->level > log_get_max_level())
                return;
        struct fieldbuf f = {};
        add(&f, "DMTCP_JOB=%s", job && *job ? job : "default");
        if (l->computation[0])
                add(&f, "DMTCP_COMPUTATION=%s", l->computation);
        if (l->fields & COORD_LOG_GENERATION)
                add(&f, "DMTCP_GENERATION=%" PRIu64, l->generation);
        if (l->fields & COORD_LOG_PROCESSES)
                add(&f, "DMTCP_PROCESSES=%" PRIu32, l->processes);
        if (l->fields & COORD_LOG_BYTES)
                add(&f, "DMTCP_IMAGE_BYTES=%" PRIu64, l->bytes);
        if (l->fields & COORD_LOG_DURATION)
                add(&f, "DMTCP_DURATION_USEC=%" PRIu64, l->duration_usec);
        if (l->fields & COORD_LOG_DIR)
                add(&f, "DMTCP_IMAGE_DIR=%s", l->dir);
        if (l->fields & COORD_LOG_MEMBER)
                add(&f, "DMTCP_MEMBER=%" PRIu32, l->member);
        if (l->fields & COORD_LOG_PROGRAM)
                add(&f, "DMTCP_PROGRAM=%s", l->program);
        if (l->fields & COORD_LOG_REASON)
                add(&f, "DMTCP_REASON=%s", l->reason);
        if (l->fields & COORD_LOG_PEER) {
                if (l->peer.have_uid)
                        add(&f, "DMTCP_PEER_UID=%" PRIu32, l->peer.uid);
                if (l->peer.have_pid)
                        add(&f, "DMTCP_PEER_PID=%" PRIu32, l->peer.pid);
                if (l->peer.addr[0])
                        add(&f, "DMTCP_PEER_ADDR=%s", l->peer.addr);
        }
        log_event(l->level, coord_event_message_id(l->event), (const char *const *) f.v, f.n, "%s", l->text);
        for (size_t i = 0; i < f.n; i++)
                free(f.v[i]);
}
