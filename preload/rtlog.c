#include <stdarg.h>
#include <string.h>

#include "raw-syscall.h"
#include "rt.h"

/* One write(2) per line, no stdio, no allocation: safe while threads are
 * suspended (vsnprintf with plain %s/%d/%u/%x formats does not allocate). */
void rt_log(int level, const char *fmt, ...) {
        if (level > log_get_max_level())
                return;
        char msg[1024], line[1200];
        va_list ap;
        va_start(ap, fmt);
        log_format(msg, sizeof msg, 0, fmt, ap);
        va_end(ap);
        int n = snprintf(line, sizeof line, "[dmtcp %d] %s%s\n", (int) raw_getpid(),
                         level <= LOG_ERR ? "error: " : level == LOG_WARNING ? "warning: " : "", msg);
        if (n < 0)
                return;
        if ((size_t) n >= sizeof line)
                n = sizeof line - 1;
        raw_syscall3(SYS_write, 2, (long) line, n);
}
