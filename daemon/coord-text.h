/* Formatting human-readable text into fixed buffers, where cutting an
 * over-long message short is the intended behaviour (log lines, REJECT
 * reasons, RESULT messages). Paths never go through this: they use checked
 * snprintf and fail with -ENAMETOOLONG. */
#pragma once

#include <stdarg.h>
#include <stdio.h>

#include "log.h"
#include "macro.h"

static inline _printf_(3, 4) void text_printf(char *buf, size_t size, const char *fmt, ...) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(buf, size, fmt, ap);
        va_end(ap);
}

/* A one-line error for the caller to print ("%m" = strerror of r);
 * returns r, so that "return errorf(err, size, r, ...)" reads naturally. */
static inline _printf_(4, 5) int errorf(char *err, size_t size, int r, const char *fmt, ...) {
        va_list ap;
        va_start(ap, fmt);
        log_format(err, size, r, fmt, ap);
        va_end(ap);
        return r;
}
