/* A small streaming JSON writer for dmtcpctl's --json output (docs/dmtcpctl-json.md).
 * Strings are escaped; invalid UTF-8 becomes U+FFFD so the output always
 * parses. Commas are placed automatically. */
#pragma once

#include "macro.h"

struct json {
        FILE *f;
        int depth;
        bool first[32];         /* no member written yet at this depth */
};

void json_init(struct json *j, FILE *f);
void json_begin_object(struct json *j, const char *key);   /* key NULL inside arrays / at top */
void json_end_object(struct json *j);
void json_begin_array(struct json *j, const char *key);
void json_end_array(struct json *j);
void json_string(struct json *j, const char *key, const char *v);      /* v NULL = null */
void json_u64(struct json *j, const char *key, uint64_t v);
void json_i64(struct json *j, const char *key, int64_t v);
void json_bool(struct json *j, const char *key, bool v);
void json_null(struct json *j, const char *key);
/* Ends the top-level value with a newline. */
void json_finish(struct json *j);
