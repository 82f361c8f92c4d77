#include "client.h"

#include <string.h>

#include "util.h"

int proto_reject_to_errno(int code) {
        switch (code) {
        case PROTO_REJ_UID:
        case PROTO_REJ_SECRET:
                return -EACCES;
        case PROTO_REJ_NOT_RUNNING:
                return -EBUSY;
        case PROTO_REJ_WRONG_COMP:
        case PROTO_REJ_PEER_MISMATCH:
                return -EXDEV;
        case PROTO_REJ_SHUTTING_DOWN:
                return -ESHUTDOWN;
        default:
                return -EPROTO;
        }
}

void hello_fill_self(struct proto_hello *h, int role, const char *program) {
        h->role = (uint8_t) role;
        h->pid = (uint32_t) getpid();
        strscpy(h->host, host_name(), sizeof h->host);
        if (program)
                strscpy(h->program, program, sizeof h->program);
}

int coord_join(const struct coord_addr *a, const struct proto_hello *hello, int timeout_ms,
               struct proto_welcome *welcome, char *reason, size_t reason_size) {
        int fd = coord_connect(a, timeout_ms);
        if (fd < 0)
                return fd;
        struct proto_msg m;
        proto_init(&m, PROTO_HELLO);
        m.u.hello = *hello;
        int r = proto_send(fd, &m);
        if (r < 0)
                goto fail;
        r = proto_recv(fd, &m, timeout_ms);
        if (r < 0)
                goto fail;
        if (m.type == PROTO_REJECT) {
                if (reason)
                        strscpy(reason, m.u.reject.reason[0] ? m.u.reject.reason :
                                proto_reject_name(m.u.reject.code), reason_size);
                r = proto_reject_to_errno(m.u.reject.code);
                goto fail;
        }
        if (m.type != PROTO_WELCOME) {
                r = -EPROTO;
                goto fail;
        }
        if (welcome)
                *welcome = m.u.welcome;
        return fd;
fail:
        close(fd);
        return r;
}
