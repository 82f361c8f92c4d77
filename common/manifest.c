#include "manifest.h"

#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <string.h>
#include <sys/stat.h>

#include "util.h"

/* Growable text buffer for manifest_format. */
struct sbuf {
        char *p;
        size_t len, cap;
        int err;
};

static void sb_reserve(struct sbuf *b, size_t more) {
        if (b->err || b->len + more + 1 <= b->cap)
                return;
        size_t cap = MAX(b->cap * 2, b->len + more + 1);
        cap = MAX(cap, (size_t) 256);
        char *n = realloc(b->p, cap);
        if (!n) {
                b->err = -ENOMEM;
                return;
        }
        b->p = n;
        b->cap = cap;
}

static void sb_add(struct sbuf *b, const char *s, size_t n) {
        sb_reserve(b, n);
        if (b->err)
                return;
        memcpy(b->p + b->len, s, n);
        b->len += n;
        b->p[b->len] = 0;
}

static _printf_(2, 3) void sb_printf(struct sbuf *b, const char *fmt, ...) {
        char tmp[128];
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
        va_end(ap);
        if (n < 0 || (size_t) n >= sizeof tmp) {
                b->err = b->err ?: -EINVAL;
                return;
        }
        sb_add(b, tmp, (size_t) n);
}

static bool field_char_plain(unsigned char c) {
        return c > 0x20 && c < 0x7f && c != '%';
}

static void sb_field(struct sbuf *b, const char *s) {
        static const char hex[] = "0123456789ABCDEF";
        sb_add(b, " ", 1);
        if (!*s) {
                sb_add(b, "-", 1);
                return;
        }
        if (!strcmp(s, "-")) {
                sb_add(b, "%2D", 3);
                return;
        }
        for (const unsigned char *p = (const unsigned char *) s; *p; p++) {
                if (field_char_plain(*p))
                        sb_add(b, (const char *) p, 1);
                else {
                        char e[3] = { '%', hex[*p >> 4], hex[*p & 15] };
                        sb_add(b, e, 3);
                }
        }
}

ssize_t manifest_format(const struct manifest *m, char **ret) {
        struct sbuf b = {};
        sb_printf(&b, "dmtcp-manifest 1\ncomputation");
        sb_field(&b, m->computation);
        sb_printf(&b, "\ngeneration %" PRIu64 "\ntime %" PRIu64 "\nprocesses %zu\n",
                  m->generation, m->time_usec, m->n_images);
        for (size_t i = 0; i < m->n_images; i++) {
                const struct manifest_image *im = &m->images[i];
                sb_printf(&b, "image");
                sb_field(&b, im->name);
                sb_printf(&b, " %" PRIu64 " %08" PRIx32, im->bytes, im->crc);
                sb_field(&b, im->upid);
                sb_field(&b, im->program);
                sb_field(&b, im->host);
                sb_add(&b, "\n", 1);
        }
        sb_printf(&b, "end\n");
        if (b.err) {
                free(b.p);
                return b.err;
        }
        *ret = b.p;
        return (ssize_t) b.len;
}

static int hexval(char c) {
        if (c >= '0' && c <= '9')
                return c - '0';
        if (c >= 'a' && c <= 'f')
                return c - 'a' + 10;
        if (c >= 'A' && c <= 'F')
                return c - 'A' + 10;
        return -1;
}

/* Decode one escaped field of n bytes into out (size bytes). */
static int field_decode(const char *s, size_t n, char *out, size_t size) {
        if (n == 1 && s[0] == '-') {
                out[0] = 0;
                return 0;
        }
        size_t o = 0;
        for (size_t i = 0; i < n; i++) {
                unsigned char c = (unsigned char) s[i];
                if (c == '%') {
                        if (i + 2 >= n)
                                return -EBADMSG;
                        int hi = hexval(s[i + 1]), lo = hexval(s[i + 2]);
                        if (hi < 0 || lo < 0)
                                return -EBADMSG;
                        c = (unsigned char) (hi << 4 | lo);
                        if (c == 0)
                                return -EBADMSG;
                        i += 2;
                } else if (!field_char_plain(c))
                        return -EBADMSG;
                if (o + 1 >= size)
                        return -EBADMSG;
                out[o++] = (char) c;
        }
        out[o] = 0;
        return 0;
}

/* Split a line into at most max space-separated words (exactly one space
 * between words, none leading or trailing). Returns the word count or -EBADMSG. */
static int split_words(const char *line, size_t len, const char **w, size_t *wl, int max) {
        int n = 0;
        size_t i = 0;
        while (i < len) {
                if (n == max)
                        return -EBADMSG;
                size_t j = i;
                while (j < len && line[j] != ' ')
                        j++;
                if (j == i)
                        return -EBADMSG;
                w[n] = line + i;
                wl[n] = j - i;
                n++;
                if (j == len)
                        break;
                i = j + 1;
                if (i == len)
                        return -EBADMSG;   /* trailing space */
        }
        return n;
}

static int word_u64(const char *s, size_t n, uint64_t *ret) {
        char buf[32];
        if (n == 0 || n >= sizeof buf)
                return -EBADMSG;
        memcpy(buf, s, n);
        buf[n] = 0;
        return parse_u64(buf, ret) < 0 ? -EBADMSG : 0;
}

static bool word_is(const char *s, size_t n, const char *lit) {
        return strlen(lit) == n && !memcmp(s, lit, n);
}

bool manifest_image_name_ok(const char *name) {
        size_t n = strlen(name);
        return n > 0 && n <= MANIFEST_IMAGE_NAME_MAX && !strchr(name, '/') &&
               strcmp(name, ".") && strcmp(name, "..");
}

int manifest_parse(const char *text, size_t len, struct manifest *m) {
        memset(m, 0, sizeof *m);
        enum { H_MAGIC, H_COMP, H_GEN, H_TIME, H_PROCS, H_IMAGES, H_END } at = H_MAGIC;
        uint64_t procs = 0;
        size_t pos = 0;
        int r = -EBADMSG;

        while (pos < len) {
                const char *nl = memchr(text + pos, '\n', len - pos);
                if (!nl)
                        goto fail;          /* every line ends with \n */
                const char *line = text + pos;
                size_t ll = (size_t) (nl - line);
                pos += ll + 1;

                const char *w[8];
                size_t wl[8];
                int n = split_words(line, ll, w, wl, 8);
                if (n <= 0)
                        goto fail;
                switch (at) {
                case H_MAGIC:
                        if (n != 2 || !word_is(w[0], wl[0], "dmtcp-manifest") || !word_is(w[1], wl[1], "1"))
                                goto fail;
                        at = H_COMP;
                        break;
                case H_COMP:
                        if (n != 2 || !word_is(w[0], wl[0], "computation") ||
                            field_decode(w[1], wl[1], m->computation, sizeof m->computation) < 0)
                                goto fail;
                        at = H_GEN;
                        break;
                case H_GEN:
                        if (n != 2 || !word_is(w[0], wl[0], "generation") || word_u64(w[1], wl[1], &m->generation) < 0)
                                goto fail;
                        at = H_TIME;
                        break;
                case H_TIME:
                        if (n != 2 || !word_is(w[0], wl[0], "time") || word_u64(w[1], wl[1], &m->time_usec) < 0)
                                goto fail;
                        at = H_PROCS;
                        break;
                case H_PROCS:
                        if (n != 2 || !word_is(w[0], wl[0], "processes") || word_u64(w[1], wl[1], &procs) < 0 ||
                            procs > MANIFEST_MAX_IMAGES)
                                goto fail;
                        if (procs > 0) {
                                m->images = calloc(procs, sizeof *m->images);
                                if (!m->images) {
                                        r = -ENOMEM;
                                        goto fail;
                                }
                        }
                        at = procs > 0 ? H_IMAGES : H_END;
                        break;
                case H_IMAGES: {
                        if (n != 7 || !word_is(w[0], wl[0], "image"))
                                goto fail;
                        struct manifest_image *im = &m->images[m->n_images];
                        if (field_decode(w[1], wl[1], im->name, sizeof im->name) < 0 ||
                            !manifest_image_name_ok(im->name) ||
                            word_u64(w[2], wl[2], &im->bytes) < 0 ||
                            field_decode(w[4], wl[4], im->upid, sizeof im->upid) < 0 ||
                            field_decode(w[5], wl[5], im->program, sizeof im->program) < 0 ||
                            field_decode(w[6], wl[6], im->host, sizeof im->host) < 0)
                                goto fail;
                        if (wl[3] != 8)
                                goto fail;
                        uint32_t crc = 0;
                        for (size_t i = 0; i < 8; i++) {
                                int h = hexval(w[3][i]);
                                if (h < 0)
                                        goto fail;
                                crc = crc << 4 | (uint32_t) h;
                        }
                        im->crc = crc;
                        if (++m->n_images == procs)
                                at = H_END;
                        break;
                }
                case H_END:
                        if (n != 1 || !word_is(w[0], wl[0], "end") || pos != len)
                                goto fail;
                        return 0;
                }
        }
fail:
        manifest_done(m);
        return r;
}

int manifest_read(const char *path, struct manifest *m) {
        _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        if (fd < 0)
                return -errno;
        struct stat st;
        if (fstat(fd, &st) < 0)
                return -errno;
        if (!S_ISREG(st.st_mode))
                return -EBADMSG;
        if ((uint64_t) st.st_size > MANIFEST_MAX_SIZE)
                return -EFBIG;
        size_t size = (size_t) st.st_size;
        _cleanup_free_ char *buf = malloc(size + 1);
        if (!buf)
                return -ENOMEM;
        int r = read_full(fd, buf, size);
        if (r < 0)
                return r == -EPIPE ? -EBADMSG : r;
        buf[size] = 0;
        return manifest_parse(buf, size, m);
}

void manifest_done(struct manifest *m) {
        free(m->images);
        m->images = NULL;
        m->n_images = 0;
}
