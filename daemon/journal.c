#include "journal.h"

#include <inttypes.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <systemd/sd-journal.h>

#include "log.h"

bool journal_stream_is_stderr(void) {
        const char *e = getenv("JOURNAL_STREAM");
        if (!e || !*e)
                return false;
        uint64_t dev, ino;
        char tail;
        if (sscanf(e, "%" SCNu64 ":%" SCNu64 "%c", &dev, &ino, &tail) != 2)
                return false;
        struct stat st;
        if (fstat(STDERR_FILENO, &st) < 0)
                return false;
        return (uint64_t) st.st_dev == dev && (uint64_t) st.st_ino == ino;
}

#define MAX_FIELDS 32

static void journal_backend(int level, const char *message_id, const char *msg,
                            const char *const *fields, size_t n_fields) {
        char prio[16], mid[64];
        _cleanup_free_ char *message = NULL;
        struct iovec iov[MAX_FIELDS + 4];
        size_t n = 0;

        if (asprintf(&message, "MESSAGE=%s", msg) < 0)
                return;
        iov[n++] = (struct iovec) { message, strlen(message) };
        snprintf(prio, sizeof prio, "PRIORITY=%d", level);
        iov[n++] = (struct iovec) { prio, strlen(prio) };
        iov[n++] = (struct iovec) { (char *) "SYSLOG_IDENTIFIER=" COORD_SYSLOG_IDENTIFIER,
                                    strlen("SYSLOG_IDENTIFIER=" COORD_SYSLOG_IDENTIFIER) };
        if (message_id) {
                snprintf(mid, sizeof mid, "MESSAGE_ID=%s", message_id);
                iov[n++] = (struct iovec) { mid, strlen(mid) };
        }
        for (size_t i = 0; i < n_fields && i < MAX_FIELDS; i++)
                iov[n++] = (struct iovec) { (char *) fields[i], strlen(fields[i]) };
        (void) sd_journal_sendv(iov, (int) n);
}

void journal_install(void) {
        log_set_backend(journal_backend);
}
