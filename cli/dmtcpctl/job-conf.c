#include "job-conf.h"

#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <string.h>
#include <sys/stat.h>

#include "util.h"

static _printf_(3, 4) int fail(char *err, size_t size, const char *fmt, ...) {
        va_list ap;
        va_start(ap, fmt);
        if (err && size)
                vsnprintf(err, size, fmt, ap);
        va_end(ap);
        return -EINVAL;
}

void job_strv_free(char **v) {
        for (size_t i = 0; v && v[i]; i++)
                free(v[i]);
        free(v);
}

static void strv_freep(char ***v) {
        job_strv_free(*v);
}
#define _cleanup_strv_free_ _cleanup_(strv_freep)

void job_conf_init(struct job_conf *c) {
        *c = (struct job_conf) {
                .interval = JOB_DEFAULT_INTERVAL,
                .checkpoint_on_stop = true,
                .keep = 2,
        };
}

void job_conf_done(struct job_conf *c) {
        job_strv_free(c->argv);
        free(c->working_directory);
        job_conf_init(c);
}

/* ---- words ------------------------------------------------------------ */

struct word {
        char *s;
        size_t len, cap;
};

static int word_add(struct word *w, char ch) {
        if (w->len + 2 > w->cap) {
                size_t cap = w->cap ? w->cap * 2 : 32;
                char *s = realloc(w->s, cap);
                if (!s)
                        return -ENOMEM;
                w->s = s;
                w->cap = cap;
        }
        w->s[w->len++] = ch;
        w->s[w->len] = 0;
        return 0;
}

/* What a shell would do with c outside quotes, NULL when it is plain. */
static const char *shell_meaning(char c, bool word_start) {
        switch (c) {
        case '$':
                return "would expand a variable";
        case '`':
                return "would run a command";
        case '*':
        case '?':
        case '[':
                return "would be a wildcard";
        case '|':
                return "would start a pipe";
        case '&':
        case ';':
                return "would end the command";
        case '<':
        case '>':
                return "would redirect";
        case '(':
        case ')':
                return "would start a subshell";
        case '~':
                return word_start ? "would be the home directory" : NULL;
        case '#':
                return word_start ? "would start a comment" : NULL;
        default:
                return NULL;
        }
}

static bool is_blank(char c) {
        return c == ' ' || c == '\t';
}

static bool is_control(unsigned char c) {
        return (c < 0x20 && c != '\t') || c == 0x7f;
}

static int strv_push(char ***v, size_t *n, char *s) {
        if (*n + 1 >= JOB_CONF_MAX_WORDS)
                return -E2BIG;
        char **nv = realloc(*v, (*n + 2) * sizeof **v);
        if (!nv)
                return -ENOMEM;
        nv[(*n)++] = s;
        nv[*n] = NULL;
        *v = nv;
        return 0;
}

int job_split_words(const char *s, char ***ret, char *err, size_t errsize) {
        _cleanup_strv_free_ char **v = calloc(1, sizeof *v);
        size_t n = 0;
        if (!v)
                return -ENOMEM;
        const char *p = s;
        for (;;) {
                while (is_blank(*p))
                        p++;
                if (!*p)
                        break;
                struct word w = {};
                bool started = false;   /* '' makes an empty word */
                int r = 0;
                while (*p && !is_blank(*p) && r == 0) {
                        char c = *p;
                        if (is_control((unsigned char) c)) {
                                r = fail(err, errsize, "control character 0x%02x; job files hold printable text only",
                                         (unsigned char) c);
                                break;
                        }
                        if (c == '\'') {
                                const char *end = strchr(p + 1, '\'');
                                if (!end) {
                                        r = fail(err, errsize, "a quote ' is not closed");
                                        break;
                                }
                                for (const char *q = p + 1; q < end && r == 0; q++)
                                        r = is_control((unsigned char) *q) ?
                                                fail(err, errsize, "control character 0x%02x; job files hold printable text only",
                                                     (unsigned char) *q) :
                                                word_add(&w, *q);
                                started = true;
                                p = end + 1;
                        } else if (c == '"') {
                                p++;
                                while (r == 0 && *p && *p != '"') {
                                        if (*p == '\\' && (p[1] == '"' || p[1] == '\\' || p[1] == '$' || p[1] == '`')) {
                                                r = word_add(&w, p[1]);
                                                p += 2;
                                        } else if (*p == '$' || *p == '`') {
                                                r = fail(err, errsize,
                                                         "'%c' inside \"...\" %s in a shell, and job files expand nothing; "
                                                         "write it as \\%c or inside '...'",
                                                         *p, shell_meaning(*p, false), *p);
                                        } else if (is_control((unsigned char) *p)) {
                                                r = fail(err, errsize, "control character 0x%02x; job files hold printable text only",
                                                         (unsigned char) *p);
                                        } else
                                                r = word_add(&w, *p++);
                                }
                                if (r == 0 && *p != '"')
                                        r = fail(err, errsize, "a quote \" is not closed");
                                if (r == 0)
                                        p++;
                                started = true;
                        } else if (c == '\\') {
                                if (!p[1])
                                        r = fail(err, errsize, "a backslash ends the line; lines cannot be continued");
                                else if (is_control((unsigned char) p[1]))
                                        r = fail(err, errsize, "control character 0x%02x; job files hold printable text only",
                                                 (unsigned char) p[1]);
                                else {
                                        r = word_add(&w, p[1]);
                                        p += 2;
                                }
                                started = true;
                        } else {
                                const char *m = shell_meaning(c, !started && w.len == 0);
                                if (m)
                                        r = fail(err, errsize,
                                                 "'%c' %s in a shell, and job files expand nothing; quote it ('%c') to mean it literally",
                                                 c, m, c);
                                else {
                                        r = word_add(&w, c);
                                        p++;
                                }
                                started = true;
                        }
                }
                if (r == 0 && !w.s)
                        r = (w.s = strdup("")) ? 0 : -ENOMEM;
                if (r == 0)
                        r = strv_push(&v, &n, w.s);
                if (r < 0) {
                        free(w.s);
                        if (r == -E2BIG)
                                return fail(err, errsize, "more than %u words", JOB_CONF_MAX_WORDS);
                        return r;
                }
        }
        *ret = TAKE_PTR(v);
        return (int) n;
}

static bool is_safe_char(char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
               strchr("_@%+=:,./-", c) != NULL;
}

int job_quote_word(const char *s, char *buf, size_t size) {
        size_t o = strlen(buf);
        bool bare = *s != 0;
        for (const char *p = s; *p; p++) {
                if (is_control((unsigned char) *p))
                        return -EINVAL;
                if (!is_safe_char(*p))
                        bare = false;
        }
#define PUT(ch) do { if (o + 1 >= size) return -ENOBUFS; buf[o++] = (ch); } while (0)
        if (bare) {
                for (const char *p = s; *p; p++)
                        PUT(*p);
        } else {
                PUT('\'');
                for (const char *p = s; *p; p++) {
                        if (*p == '\'') {
                                PUT('\'');
                                PUT('\\');
                                PUT('\'');
                                PUT('\'');
                        } else
                                PUT(*p);
                }
                PUT('\'');
        }
#undef PUT
        buf[o] = 0;
        return 0;
}

/* ---- the file --------------------------------------------------------- */

enum job_key {
        KEY_COMMAND,
        KEY_WORKING_DIRECTORY,
        KEY_INTERVAL,
        KEY_CHECKPOINT_ON_STOP,
        KEY_KEEP,
        _KEY_MAX,
};

static const char *const key_names[_KEY_MAX] = {
        [KEY_COMMAND] = "COMMAND",
        [KEY_WORKING_DIRECTORY] = "WORKING_DIRECTORY",
        [KEY_INTERVAL] = "INTERVAL",
        [KEY_CHECKPOINT_ON_STOP] = "CHECKPOINT_ON_STOP",
        [KEY_KEEP] = "KEEP",
};

/* Set one key from its words; err gets the message without the line. */
static int set_key(struct job_conf *c, enum job_key k, char **words, int n, char *err, size_t errsize) {
        const char *name = key_names[k];
        if (n == 0)
                return fail(err, errsize, "%s= needs a value", name);
        if (k != KEY_COMMAND && n > 1)
                return fail(err, errsize, "%s= takes one value; quote it if it contains blanks", name);
        const char *v = words[0];
        uint32_t u;
        int b;
        switch (k) {
        case KEY_COMMAND:
                if (!*v)
                        return fail(err, errsize, "COMMAND= starts with an empty program name");
                c->argv = words;
                c->argc = (size_t) n;
                return 1;       /* took ownership */
        case KEY_WORKING_DIRECTORY:
                if (v[0] != '/')
                        return fail(err, errsize, "WORKING_DIRECTORY=%s is not an absolute path", v);
                if (strlen(v) >= PATH_MAX)
                        return fail(err, errsize, "WORKING_DIRECTORY= is longer than %d bytes", PATH_MAX - 1);
                c->working_directory = strdup(v);
                return c->working_directory ? 0 : -ENOMEM;
        case KEY_INTERVAL:
                if (parse_u32(v, &u) < 0 || u > JOB_MAX_INTERVAL)
                        return fail(err, errsize, "INTERVAL=%s is not a number of seconds (0 = off, at most %u)", v,
                                    JOB_MAX_INTERVAL);
                c->interval = u;
                return 0;
        case KEY_CHECKPOINT_ON_STOP:
                b = parse_bool(v);
                if (b < 0)
                        return fail(err, errsize, "CHECKPOINT_ON_STOP=%s is not yes or no", v);
                c->checkpoint_on_stop = b;
                return 0;
        case KEY_KEEP:
                if (parse_int_range(v, 1, JOB_MAX_KEEP, &b) < 0)
                        return fail(err, errsize, "KEEP=%s is not a number of checkpoints from 1 to %d", v, JOB_MAX_KEEP);
                c->keep = b;
                return 0;
        default:
                return -EINVAL;
        }
}

int job_conf_parse(const char *text, size_t len, struct job_conf *c, char *err, size_t errsize) {
        job_conf_init(c);
        unsigned seen[_KEY_MAX] = {};
        unsigned lineno = 0;
        char msg[512];
        const char *p = text, *end = text + len;
        int r = 0;

        while (p < end) {
                lineno++;
                const char *nl = memchr(p, '\n', (size_t) (end - p));
                size_t ll = nl ? (size_t) (nl - p) : (size_t) (end - p);
                _cleanup_free_ char *line = strndup(p, ll);
                if (!line) {
                        r = -ENOMEM;
                        break;
                }
                p += ll + (nl ? 1 : 0);
                if (strlen(line) != ll) {
                        r = fail(err, errsize, "line %u: a NUL byte; job files hold text only", lineno);
                        break;
                }
                if (ll && line[ll - 1] == '\r') {
                        r = fail(err, errsize, "line %u: ends with a carriage return; save the file with Unix line ends",
                                 lineno);
                        break;
                }
                const char *s = line;
                while (is_blank(*s))
                        s++;
                if (!*s || *s == '#')
                        continue;
                const char *k = s;
                while ((*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') || *s == '_' || (*s >= 'a' && *s <= 'z'))
                        s++;
                if (s == k || *s != '=') {
                        r = fail(err, errsize, "line %u: expected KEY=VALUE, found \"%.40s\"", lineno, k);
                        break;
                }
                size_t kl = (size_t) (s - k);
                enum job_key key = _KEY_MAX;
                for (int i = 0; i < _KEY_MAX; i++)
                        if (strlen(key_names[i]) == kl && !strncmp(key_names[i], k, kl))
                                key = (enum job_key) i;
                if (key == _KEY_MAX) {
                        r = fail(err, errsize,
                                 "line %u: unknown key %.*s (known: COMMAND, WORKING_DIRECTORY, INTERVAL, "
                                 "CHECKPOINT_ON_STOP, KEEP)", lineno, (int) MIN(kl, (size_t) 64), k);
                        break;
                }
                if (seen[key]) {
                        r = fail(err, errsize, "line %u: %s= given again (first on line %u)", lineno, key_names[key],
                                 seen[key]);
                        break;
                }
                seen[key] = lineno;
                char **words = NULL;
                int n = job_split_words(s + 1, &words, msg, sizeof msg);
                if (n < 0) {
                        r = n == -EINVAL ? fail(err, errsize, "line %u: %s= %s", lineno, key_names[key], msg) : n;
                        break;
                }
                r = set_key(c, key, words, n, msg, sizeof msg);
                if (r != 1)
                        job_strv_free(words);
                if (r < 0) {
                        if (r == -EINVAL)
                                fail(err, errsize, "line %u: %s", lineno, msg);
                        break;
                }
                r = 0;
        }
        if (r == 0 && !seen[KEY_COMMAND])
                r = fail(err, errsize, "no COMMAND= line: the job needs a command to run");
        if (r < 0)
                job_conf_done(c);
        return r;
}

int job_conf_load(const char *path, struct job_conf *c, char *err, size_t errsize) {
        job_conf_init(c);
        _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
        if (fd < 0) {
                int r = -errno;
                fail(err, errsize, "%s: %s", path, strerror(-r));
                return r;
        }
        struct stat st;
        if (fstat(fd, &st) < 0) {
                int r = -errno;
                fail(err, errsize, "%s: %s", path, strerror(-r));
                return r;
        }
        if (!S_ISREG(st.st_mode)) {
                fail(err, errsize, "%s is not a regular file", path);
                return -EINVAL;
        }
        if (st.st_size > JOB_CONF_MAX_SIZE) {
                fail(err, errsize, "%s is larger than %u bytes; is it a job file?", path, JOB_CONF_MAX_SIZE);
                return -EFBIG;
        }
        _cleanup_free_ char *text = malloc(JOB_CONF_MAX_SIZE + 1);
        if (!text)
                return -ENOMEM;
        size_t len = 0;
        for (;;) {
                ssize_t n = read(fd, text + len, JOB_CONF_MAX_SIZE + 1 - len);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0) {
                        int r = -errno;
                        fail(err, errsize, "%s: %s", path, strerror(-r));
                        return r;
                }
                if (n == 0)
                        break;
                len += (size_t) n;
                if (len > JOB_CONF_MAX_SIZE) {
                        fail(err, errsize, "%s is larger than %u bytes; is it a job file?", path, JOB_CONF_MAX_SIZE);
                        return -EFBIG;
                }
        }
        char msg[600];
        int r = job_conf_parse(text, len, c, msg, sizeof msg);
        if (r == -EINVAL)
                fail(err, errsize, "%s %s", path, msg);
        return r;
}

ssize_t job_conf_format(const struct job_conf *c, char **ret, char *err, size_t errsize) {
        size_t size = 512;
        for (size_t i = 0; i < c->argc; i++)
                size += strlen(c->argv[i]) * 4 + 3;
        if (c->working_directory)
                size += strlen(c->working_directory) * 4 + 3;
        _cleanup_free_ char *buf = malloc(size);
        if (!buf)
                return -ENOMEM;
        int n = snprintf(buf, size, "# A dmtcp job; see dmtcp@.service(5). No value is ever expanded.\nCOMMAND=");
        if (n < 0)
                return -EIO;
        for (size_t i = 0; i < c->argc; i++) {
                if (i > 0)
                        strcat(buf, " ");
                int r = job_quote_word(c->argv[i], buf, size);
                if (r == -EINVAL)
                        return fail(err, errsize, "argument %zu (%s) contains a control character, which a job file cannot hold",
                                    i, c->argv[i]);
                if (r < 0)
                        return r;
        }
        strcat(buf, "\n");
        if (c->working_directory) {
                strcat(buf, "WORKING_DIRECTORY=");
                int r = job_quote_word(c->working_directory, buf, size);
                if (r == -EINVAL)
                        return fail(err, errsize, "the working directory contains a control character");
                if (r < 0)
                        return r;
                strcat(buf, "\n");
        }
        size_t l = strlen(buf);
        n = snprintf(buf + l, size - l, "INTERVAL=%u\nCHECKPOINT_ON_STOP=%s\nKEEP=%d\n", c->interval,
                     c->checkpoint_on_stop ? "yes" : "no", c->keep);
        if (n < 0 || (size_t) n >= size - l)
                return -ENOBUFS;
        l += (size_t) n;
        *ret = TAKE_PTR(buf);
        return (ssize_t) l;
}
