#include "json.h"

#include <inttypes.h>
#include <string.h>

void json_init(struct json *j, FILE *f) {
        memset(j, 0, sizeof *j);
        j->f = f;
        j->first[0] = true;
}

static void put_str(FILE *f, const char *s) {
        fputc('"', f);
        const unsigned char *p = (const unsigned char *) s;
        while (*p) {
                unsigned char c = *p;
                if (c == '"' || c == '\\') {
                        fprintf(f, "\\%c", c);
                        p++;
                } else if (c < 0x20 || c == 0x7f) {
                        fprintf(f, "\\u%04x", c);
                        p++;
                } else if (c < 0x80) {
                        fputc(c, f);
                        p++;
                } else {
                        int n = c >= 0xf0 && c < 0xf5 ? 4 : c >= 0xe0 && c < 0xf0 ? 3 : c >= 0xc2 && c < 0xe0 ? 2 : 0;
                        bool ok = n > 0;
                        for (int k = 1; ok && k < n; k++)
                                ok = (p[k] & 0xc0) == 0x80;
                        if (ok) {
                                fwrite(p, 1, (size_t) n, f);
                                p += n;
                        } else {
                                fputs("\\ufffd", f);
                                p++;
                        }
                }
        }
        fputc('"', f);
}

static void member(struct json *j, const char *key) {
        if (!j->first[j->depth])
                fputc(',', j->f);
        j->first[j->depth] = false;
        if (key) {
                put_str(j->f, key);
                fputc(':', j->f);
        }
}

static void push(struct json *j, char open) {
        fputc(open, j->f);
        if (j->depth + 1 < (int) ARRAY_SIZE(j->first))
                j->depth++;
        j->first[j->depth] = true;
}

void json_begin_object(struct json *j, const char *key) {
        member(j, key);
        push(j, '{');
}

void json_end_object(struct json *j) {
        fputc('}', j->f);
        if (j->depth > 0)
                j->depth--;
}

void json_begin_array(struct json *j, const char *key) {
        member(j, key);
        push(j, '[');
}

void json_end_array(struct json *j) {
        fputc(']', j->f);
        if (j->depth > 0)
                j->depth--;
}

void json_string(struct json *j, const char *key, const char *v) {
        member(j, key);
        if (v)
                put_str(j->f, v);
        else
                fputs("null", j->f);
}

void json_u64(struct json *j, const char *key, uint64_t v) {
        member(j, key);
        fprintf(j->f, "%" PRIu64, v);
}

void json_i64(struct json *j, const char *key, int64_t v) {
        member(j, key);
        fprintf(j->f, "%" PRId64, v);
}

void json_bool(struct json *j, const char *key, bool v) {
        member(j, key);
        fputs(v ? "true" : "false", j->f);
}

void json_null(struct json *j, const char *key) {
        member(j, key);
        fputs("null", j->f);
}

void json_finish(struct json *j) {
        fputc('\n', j->f);
        fflush(j->f);
}
