#include "log.h"

#include <string.h>

static const char *log_ident = "dmtcp";
static int log_max_level = LOG_INFO;
static log_backend_t log_backend;
static bool log_prefix_level;

void log_set_ident(const char *ident) { log_ident = ident; }
const char *log_get_ident(void) { return log_ident; }
void log_set_max_level(int level) { log_max_level = level; }
int log_get_max_level(void) { return log_max_level; }
void log_set_backend(log_backend_t backend) { log_backend = backend; }
void log_set_stderr_prefix_level(bool on) { log_prefix_level = on; }

/* %m is expanded here from the error we were given, not from errno, because
 * errno may have changed between the failure and the log call. */
size_t log_format(char *buf, size_t size, int error, const char *fmt, va_list ap) {
        char fmt2[1024];
        const char *f = fmt;
        if (strstr(fmt, "%m")) {
                char errbuf[128];
                const char *es = strerror_r(error < 0 ? -error : error, errbuf, sizeof errbuf);
                size_t o = 0;
                for (const char *p = fmt; *p && o + 1 < sizeof fmt2; p++) {
                        if (p[0] == '%' && p[1] == '%') {
                                if (o + 2 < sizeof fmt2) {
                                        fmt2[o++] = '%';
                                        fmt2[o++] = '%';
                                }
                                p++;
                        } else if (p[0] == '%' && p[1] == 'm') {
                                for (const char *e = es; *e && o + 2 < sizeof fmt2; e++) {
                                        if (*e == '%')
                                                fmt2[o++] = '%';
                                        fmt2[o++] = *e;
                                }
                                p++;
                        } else
                                fmt2[o++] = *p;
                }
                fmt2[o] = 0;
                f = fmt2;
        }
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
        int n = vsnprintf(buf, size, f, ap);
#pragma GCC diagnostic pop
        if (n < 0)
                n = 0;
        if ((size_t) n >= size)
                n = (int) size - 1;
        return (size_t) n;
}

static void write_stderr_line(int level, const char *msg) {
        char line[2200];
        int n;
        if (log_prefix_level)
                n = snprintf(line, sizeof line, "<%d>%s\n", level, msg);
        else
                n = snprintf(line, sizeof line, "%s: %s\n", log_ident, msg);
        if (n < 0)
                return;
        if ((size_t) n >= sizeof line) {
                n = sizeof line - 1;
                line[n - 1] = '\n';
        }
        int saved = errno;
        ssize_t w = write(STDERR_FILENO, line, (size_t) n);
        (void) w;
        errno = saved;
}

int log_internalv(int level, int error, const char *fmt, va_list ap) {
        int ret = error > 0 ? -error : error;
        if (level > log_max_level)
                return ret;
        char msg[2048];
        int saved = errno;
        log_format(msg, sizeof msg, error, fmt, ap);
        if (log_backend)
                log_backend(level, NULL, msg, NULL, 0);
        else
                write_stderr_line(level, msg);
        errno = saved;
        return ret;
}

int log_internal(int level, int error, const char *fmt, ...) {
        va_list ap;
        va_start(ap, fmt);
        int r = log_internalv(level, error, fmt, ap);
        va_end(ap);
        return r;
}

void log_event(int level, const char *message_id, const char *const *fields, size_t n_fields,
               const char *fmt, ...) {
        if (level > log_max_level)
                return;
        char msg[2048];
        va_list ap;
        va_start(ap, fmt);
        log_format(msg, sizeof msg, 0, fmt, ap);
        va_end(ap);
        if (log_backend)
                log_backend(level, message_id, msg, fields, n_fields);
        else
                write_stderr_line(level, msg);
}
