/* Logging. One line per message; errors return -errno so a caller can write
 *     return log_error_errno(r, "Failed to open image %s: %m", path);
 * The default backend writes "<ident>: message" to stderr with one write(2),
 * without stdio or allocation, so the runtime can log from its checkpoint
 * thread. The coordinator installs a journald backend (daemon/journal.c). */
#pragma once

#include "macro.h"
#include <stdarg.h>
#include <syslog.h>

/* A structured field for log_event(): "KEY=value". */
typedef void (*log_backend_t)(int level, const char *message_id, const char *msg,
                              const char *const *fields, size_t n_fields);

void log_set_ident(const char *ident);
const char *log_get_ident(void);
void log_set_max_level(int level);      /* LOG_ERR .. LOG_DEBUG */
int log_get_max_level(void);
void log_set_backend(log_backend_t backend); /* NULL = stderr */
void log_set_stderr_prefix_level(bool on);   /* "<3>" prefixes for journal streams */

int log_internal(int level, int error, const char *fmt, ...) _printf_(3, 4);
int log_internalv(int level, int error, const char *fmt, va_list ap) _printf_(3, 0);

/* A structured event: message plus fields; stderr shows only the message. */
void log_event(int level, const char *message_id, const char *const *fields, size_t n_fields,
               const char *fmt, ...) _printf_(5, 6);

#define log_full_errno(level, error, ...) log_internal((level), (error), __VA_ARGS__)
#define log_debug(...)   log_internal(LOG_DEBUG, 0, __VA_ARGS__)
#define log_info(...)    log_internal(LOG_INFO, 0, __VA_ARGS__)
#define log_notice(...)  log_internal(LOG_NOTICE, 0, __VA_ARGS__)
#define log_warning(...) log_internal(LOG_WARNING, 0, __VA_ARGS__)
#define log_error(...)   log_internal(LOG_ERR, 0, __VA_ARGS__)
#define log_debug_errno(e, ...)   log_internal(LOG_DEBUG, (e), __VA_ARGS__)
#define log_info_errno(e, ...)    log_internal(LOG_INFO, (e), __VA_ARGS__)
#define log_warning_errno(e, ...) log_internal(LOG_WARNING, (e), __VA_ARGS__)
#define log_error_errno(e, ...)   log_internal(LOG_ERR, (e), __VA_ARGS__)

/* Format a message into buf exactly as the backends do (%m = strerror(error)). */
size_t log_format(char *buf, size_t size, int error, const char *fmt, va_list ap) _printf_(4, 0);
