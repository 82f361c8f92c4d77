/* Image parser and validator. Everything read from an image is untrusted:
 * each length, offset, index and enum is checked before use, so a corrupt or
 * hostile image yields an error naming what is wrong, never a crash (this
 * file is fuzzed: tests/fuzz/fuzz-img.c). */
#include "img.h"

#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <string.h>
#include <sys/mman.h>

#include "util.h"

_printf_(3, 4)
static int fail(struct img_error *err, int code, const char *fmt, ...) {
        if (err) {
                va_list ap;
                va_start(ap, fmt);
                vsnprintf(err->what, sizeof err->what, fmt, ap);
                va_end(ap);
                err->code = code;
        }
        return code;
}

const char *img_region_kind_name(uint32_t kind) {
        static const char *const names[_IMG_RK_MAX] = {
                [IMG_RK_ANON] = "anonymous",
                [IMG_RK_FILE_PRIVATE] = "private file mapping",
                [IMG_RK_FILE_SHARED] = "shared file mapping",
                [IMG_RK_ANON_SHARED] = "shared anonymous",
                [IMG_RK_VDSO] = "vdso",
                [IMG_RK_VVAR] = "vvar",
                [IMG_RK_RESERVED] = "reservation",
                [IMG_RK_SHM] = "shared memory",
        };
        return kind < _IMG_RK_MAX && names[kind] ? names[kind] : "unknown";
}

const char *img_fd_kind_name(uint32_t kind) {
        static const char *const names[_IMG_FD_MAX] = {
                [IMG_FD_EXTERNAL] = "inherited",
                [IMG_FD_REGULAR] = "regular file",
                [IMG_FD_DIRECTORY] = "directory",
                [IMG_FD_CHARDEV] = "character device",
                [IMG_FD_TTY] = "terminal",
                [IMG_FD_PIPE] = "pipe",
                [IMG_FD_SOCKET] = "socket",
                [IMG_FD_SHM] = "shared memory",
                [IMG_FD_MQUEUE] = "message queue",
                [IMG_FD_EVENTFD] = "eventfd",
                [IMG_FD_SIGNALFD] = "signalfd",
                [IMG_FD_TIMERFD] = "timerfd",
                [IMG_FD_INOTIFY] = "inotify",
                [IMG_FD_EPOLL] = "epoll",
                [IMG_FD_FIFO] = "FIFO",
                [IMG_FD_PTY_MASTER] = "pty master",
                [IMG_FD_PTY_SLAVE] = "pty slave",
        };
        return kind < _IMG_FD_MAX && names[kind] ? names[kind] : "unknown";
}

const char *img_shm_kind_name(uint32_t kind) {
        static const char *const names[_IMG_SHM_MAX] = {
                [IMG_SHM_ANON] = "shared anonymous memory",
                [IMG_SHM_MEMFD] = "memfd",
                [IMG_SHM_POSIX] = "POSIX shared memory",
                [IMG_SHM_SYSV] = "System V shared memory",
        };
        return kind < _IMG_SHM_MAX && names[kind] ? names[kind] : "unknown";
}

uint32_t img_header_crc(const struct img_header *h) {
        struct img_header copy = *h;
        copy.header_crc = 0;
        return img_crc32(0, &copy, sizeof copy);
}

static bool fixed_str_ok(const char *s, size_t size) {
        return memchr(s, 0, size) != NULL;
}

int img_read_header(int fd, uint64_t size, struct img_header *hdr, struct img_error *err) {
        if (size < IMG_HEADER_SIZE)
                return fail(err, -EBADMSG, "truncated (%llu bytes, shorter than its header)",
                            (unsigned long long) size);
        int r = pread_full(fd, hdr, sizeof *hdr, 0);
        if (r < 0)
                return fail(err, r, "cannot read header: %s", strerror(-r));
        if (memcmp(hdr->magic, IMG_MAGIC, 8) != 0)
                return fail(err, -EBADMSG, "not a dmtcp checkpoint image (bad magic)");
        if (hdr->version != IMG_VERSION)
                return fail(err, -EPROTONOSUPPORT,
                            "unknown image format version %u (this dmtcp reads version %u)",
                            hdr->version, IMG_VERSION);
        if (img_header_crc(hdr) != hdr->header_crc)
                return fail(err, -EBADMSG, "corrupted header (checksum mismatch)");
        if (hdr->header_size != IMG_HEADER_SIZE || hdr->page_size != PAGE_SZ)
                return fail(err, -EBADMSG, "unsupported header or page size");
        if (hdr->arch != IMG_ARCH_X86_64)
                return fail(err, -EXDEV, "image is for another architecture (ELF machine %u), this is x86_64",
                            hdr->arch);
        if (hdr->file_size != size)
                return fail(err, -EBADMSG, "%s (%llu bytes, expected %llu)",
                            size < hdr->file_size ? "truncated" : "has trailing data",
                            (unsigned long long) size, (unsigned long long) hdr->file_size);
        if (hdr->data_off != IMG_HEADER_SIZE || hdr->data_end < hdr->data_off ||
            hdr->meta_off < hdr->data_end || hdr->meta_len > IMG_MAX_META ||
            hdr->meta_off > size || hdr->meta_len != size - hdr->meta_off)
                return fail(err, -EBADMSG, "corrupted header (inconsistent layout)");
        if (!fixed_str_ok(hdr->kernel_release, sizeof hdr->kernel_release) ||
            !fixed_str_ok(hdr->kernel_build, sizeof hdr->kernel_build) ||
            !fixed_str_ok(hdr->comp_id, sizeof hdr->comp_id) ||
            !fixed_str_ok(hdr->upid, sizeof hdr->upid) ||
            !fixed_str_ok(hdr->program, sizeof hdr->program) ||
            !fixed_str_ok(hdr->host, sizeof hdr->host))
                return fail(err, -EBADMSG, "corrupted header (unterminated string)");
        return 0;
}

void img_free(struct img *img) {
        free(img->threads);
        free(img->files);
        free(img->regions);
        free(img->blocks);
        free(img->fds);
        free(img->timers);
        free(img->children);
        free(img->shms);
        free(img->sysv);
        free(img->meta);
        memset(img, 0, sizeof *img);
}

/* Free a half-parsed image and report what was wrong with it. */
_printf_(3, 4)
static int bad_meta(struct img *img, struct img_error *err, const char *fmt, ...) {
        img_free(img);
        if (err) {
                va_list ap;
                va_start(ap, fmt);
                vsnprintf(err->what, sizeof err->what, fmt, ap);
                va_end(ap);
                err->code = -EBADMSG;
        }
        return -EBADMSG;
}

/* A string stored after a fixed struct in a record: no NUL inside. We copy it
 * into the padding-free tail of our own buffer, NUL-terminated. */
static int take_str(uint8_t *payload, size_t fixed, size_t len, size_t rec_len, size_t max,
                    char **strbuf, struct img_str *out) {
        if (len > max || fixed + len > rec_len)
                return -EBADMSG;
        const char *s = (const char *) payload + fixed;
        if (memchr(s, 0, len))
                return -EBADMSG;
        memcpy(*strbuf, s, len);
        (*strbuf)[len] = 0;
        out->s = *strbuf;
        out->len = len;
        *strbuf += len + 1;
        return 0;
}

static int block_cmp(const void *a, const void *b) {
        const struct img_block *x = a, *y = b;
        if (x->target != y->target)
                return x->target < y->target ? -1 : 1;
        if (x->index != y->index && x->target != IMG_BT_MEMORY)
                return x->index < y->index ? -1 : 1;
        return x->addr < y->addr ? -1 : x->addr > y->addr ? 1 : 0;
}

struct counts {
        size_t process, auxv, threads, files, regions, blocks, fds, sigactions, timers, runtime, children, shms, sysv;
        size_t strings;
};

static int count_records(const uint8_t *meta, size_t len, uint32_t n_records, struct counts *c,
                         struct img_error *err) {
        size_t o = 0;
        memset(c, 0, sizeof *c);
        for (uint32_t i = 0; i < n_records; i++) {
                if (len - o < sizeof(struct img_record))
                        return fail(err, -EBADMSG, "corrupted metadata (record %u truncated)", i);
                struct img_record rec;
                memcpy(&rec, meta + o, sizeof rec);
                o += sizeof rec;
                if (rec.len > len - o)
                        return fail(err, -EBADMSG, "corrupted metadata (record %u overruns)", i);
                switch (rec.type) {
                case IMG_R_PROCESS: c->process++; break;
                case IMG_R_AUXV: c->auxv++; break;
                case IMG_R_THREAD: c->threads++; break;
                case IMG_R_FILE: c->files++; break;
                case IMG_R_REGION: c->regions++; break;
                case IMG_R_BLOCKS:
                        if (rec.len % sizeof(struct img_block))
                                return fail(err, -EBADMSG, "corrupted metadata (block table size)");
                        c->blocks += rec.len / sizeof(struct img_block);
                        break;
                case IMG_R_FD: c->fds++; break;
                case IMG_R_SIGACTIONS: c->sigactions++; break;
                case IMG_R_TIMER: c->timers++; break;
                case IMG_R_RUNTIME: c->runtime++; break;
                case IMG_R_CHILD: c->children++; break;
                case IMG_R_SHM: c->shms++; break;
                case IMG_R_SYSV: c->sysv++; break;
                default:
                        return fail(err, -EBADMSG, "corrupted metadata (unknown record type %u)", rec.type);
                }
                c->strings += rec.len + 1;
                size_t padded = ALIGN_UP((size_t) rec.len, 8);
                if (padded > len - o)
                        return fail(err, -EBADMSG, "corrupted metadata (record %u padding)", i);
                o += padded;
        }
        if (o != len)
                return fail(err, -EBADMSG, "corrupted metadata (trailing bytes)");
        if (c->process != 1)
                return fail(err, -EBADMSG, "corrupted metadata (%zu process records)", c->process);
        if (c->threads < 1 || c->threads > IMG_MAX_THREADS || c->files > IMG_MAX_FILES ||
            c->regions > IMG_MAX_REGIONS || c->blocks > IMG_MAX_BLOCKS || c->fds > IMG_MAX_FDS ||
            c->timers > IMG_MAX_TIMERS || c->children > IMG_MAX_CHILDREN || c->shms > IMG_MAX_SHMS ||
            c->sysv > IMG_MAX_SYSV || c->auxv > 1 || c->sigactions > 1 ||
            c->runtime > 1)
                return fail(err, -EBADMSG, "corrupted metadata (record counts out of range)");
        return 0;
}

static int check_block(const struct img *img, const struct img_block *b, struct img_error *err) {
        const struct img_header *h = &img->hdr;
        if (b->enc == 0 || b->enc >= _IMG_ENC_MAX || b->target < IMG_BT_MEMORY || b->target > IMG_BT_SHM)
                return fail(err, -EBADMSG, "corrupted block table (bad encoding or target)");
        if (b->ulen == 0 || b->ulen > IMG_BLOCK_MAX)
                return fail(err, -EBADMSG, "corrupted block table (bad length)");
        switch (b->enc) {
        case IMG_ENC_RAW:
                if (b->clen != b->ulen)
                        return fail(err, -EBADMSG, "corrupted block table (raw length)");
                break;
        case IMG_ENC_DEFLATE:
                if (b->clen == 0)
                        return fail(err, -EBADMSG, "corrupted block table (empty deflate block)");
                break;
        default:
                if (b->clen != 0 || b->file_off != 0)
                        return fail(err, -EBADMSG, "corrupted block table (zero block with data)");
        }
        if (b->clen && (b->file_off < h->data_off || b->file_off > h->data_end ||
                        b->clen > h->data_end - b->file_off))
                return fail(err, -EBADMSG, "corrupted block table (data outside the data area)");
        if (b->target == IMG_BT_MEMORY) {
                if (b->index >= img->n_regions)
                        return fail(err, -EBADMSG, "corrupted block table (region index)");
                const struct img_region *r = &img->regions[b->index].r;
                if (b->addr % PAGE_SZ || b->ulen % PAGE_SZ || b->addr < r->start ||
                    b->addr > r->end || b->ulen > r->end - b->addr)
                        return fail(err, -EBADMSG, "corrupted block table (block outside its region)");
                if (b->enc == IMG_ENC_RAW && b->file_off % PAGE_SZ)
                        return fail(err, -EBADMSG, "corrupted block table (unaligned raw block)");
                if (r->kind == IMG_RK_VDSO || r->kind == IMG_RK_VVAR || r->kind == IMG_RK_RESERVED ||
                    r->kind == IMG_RK_SHM)
                        if (b->enc != IMG_ENC_GUARD)
                                return fail(err, -EBADMSG, "corrupted block table (data for a region without content)");
        } else if (b->target == IMG_BT_SHM) {
                if (b->index >= img->n_shms)
                        return fail(err, -EBADMSG, "corrupted block table (shared memory index)");
                const struct img_shm *o = &img->shms[b->index].s;
                uint64_t size = ALIGN_UP(o->size, (uint64_t) PAGE_SZ);
                if (b->addr % PAGE_SZ || b->addr > size || b->ulen > size - b->addr || b->enc == IMG_ENC_GUARD)
                        return fail(err, -EBADMSG, "corrupted block table (block outside its shared memory object)");
        } else {
                if (b->index >= img->n_files)
                        return fail(err, -EBADMSG, "corrupted block table (file index)");
                const struct img_file *f = &img->files[b->index].f;
                if (!(f->flags & IMG_FF_CONTENT) || b->addr > f->size || b->ulen > f->size - b->addr ||
                    b->enc == IMG_ENC_GUARD)
                        return fail(err, -EBADMSG, "corrupted block table (file block outside its file)");
        }
        return 0;
}

int img_sysv_check_data(const struct img_sysv *v, const uint8_t *data) {
        if (v->kind == IMG_SYSV_SEM)
                return v->count >= 1 && v->count <= 65536 && v->data_len == (uint64_t) v->count * 2 ? 0 : -EBADMSG;
        uint64_t o = 0;
        for (uint32_t i = 0; i < v->count; i++) {
                struct img_sysv_msg m;
                if (v->data_len - o < sizeof m)
                        return -EBADMSG;
                memcpy(&m, data + o, sizeof m);
                o += sizeof m;
                if (m.mtype < 1 || m.len > v->data_len - o || ALIGN_UP((uint64_t) m.len, 8) > v->data_len - o)
                        return -EBADMSG;
                o += ALIGN_UP((uint64_t) m.len, 8);
        }
        return o == v->data_len ? 0 : -EBADMSG;
}

int img_load(int fd, uint64_t size, struct img *img, struct img_error *err) {
        memset(img, 0, sizeof *img);
        int r = img_read_header(fd, size, &img->hdr, err);
        if (r < 0)
                return r;
        const struct img_header *h = &img->hdr;

        size_t mlen = (size_t) h->meta_len;
        uint8_t *meta = malloc(mlen ? mlen : 1);
        if (!meta)
                return fail(err, -ENOMEM, "metadata too large (%zu bytes)", mlen);
        r = pread_full(fd, meta, mlen, (off_t) h->meta_off);
        if (r < 0) {
                free(meta);
                return fail(err, r == -EPIPE ? -EBADMSG : r, "cannot read metadata: %s", strerror(-r));
        }
        if (img_crc32(0, meta, mlen) != h->meta_crc) {
                free(meta);
                return fail(err, -EBADMSG, "corrupted metadata (checksum mismatch)");
        }

        struct counts c;
        r = count_records(meta, mlen, h->n_records, &c, err);
        if (r < 0) {
                free(meta);
                return r;
        }
        /* One buffer for the metadata bytes we keep plus the NUL-terminated
         * copies of every string. */
        img->meta_size = mlen + c.strings + 1;
        img->meta = malloc(img->meta_size);
        img->threads = calloc(c.threads, sizeof *img->threads);
        img->files = calloc(c.files + 1, sizeof *img->files);
        img->regions = calloc(c.regions + 1, sizeof *img->regions);
        img->blocks = calloc(c.blocks + 1, sizeof *img->blocks);
        img->fds = calloc(c.fds + 1, sizeof *img->fds);
        img->timers = calloc(c.timers + 1, sizeof *img->timers);
        img->children = calloc(c.children + 1, sizeof *img->children);
        img->shms = calloc(c.shms + 1, sizeof *img->shms);
        img->sysv = calloc(c.sysv + 1, sizeof *img->sysv);
        if (!img->meta || !img->threads || !img->files || !img->regions || !img->blocks || !img->fds ||
            !img->timers || !img->children || !img->shms || !img->sysv) {
                free(meta);
                img_free(img);
                return fail(err, -ENOMEM, "out of memory reading metadata");
        }
        memcpy(img->meta, meta, mlen);
        free(meta);
        uint8_t *m = img->meta;
        char *strbuf = (char *) m + mlen;

        size_t o = 0;
        bool have_leader = false, have_ckpt = false;
        for (uint32_t i = 0; i < h->n_records; i++) {
                struct img_record rec;
                memcpy(&rec, m + o, sizeof rec);
                o += sizeof rec;
                uint8_t *p = m + o;
                o += ALIGN_UP((size_t) rec.len, 8);
                switch (rec.type) {
                case IMG_R_PROCESS:
                        if (rec.len < sizeof img->proc)
                                goto bad;
                        memcpy(&img->proc, p, sizeof img->proc);
                        if (sizeof img->proc + (size_t) img->proc.exe_len + img->proc.cwd_len != rec.len)
                                goto bad;
                        if (take_str(p, sizeof img->proc, img->proc.exe_len, rec.len, IMG_PATH_MAX, &strbuf, &img->exe) < 0 ||
                            take_str(p, sizeof img->proc + img->proc.exe_len, img->proc.cwd_len, rec.len, IMG_PATH_MAX,
                                     &strbuf, &img->cwd) < 0)
                                goto bad;
                        break;
                case IMG_R_AUXV:
                        if (rec.len % 16)
                                goto bad;
                        img->auxv = p;
                        img->auxv_len = rec.len;
                        break;
                case IMG_R_RUNTIME:
                        img->runtime = p;
                        img->runtime_len = rec.len;
                        break;
                case IMG_R_THREAD: {
                        if (rec.len != sizeof(struct img_thread))
                                goto bad;
                        struct img_thread *t = &img->threads[img->n_threads++];
                        memcpy(t, p, sizeof *t);
                        if (t->tid == 0 || !fixed_str_ok(t->comm, sizeof t->comm))
                                goto bad;
                        for (size_t k = 0; k + 1 < img->n_threads; k++)
                                if (img->threads[k].tid == t->tid)
                                        return bad_meta(img, err, "corrupted metadata (thread %u listed twice)", t->tid);
                        if (t->flags & IMG_TF_LEADER) {
                                if (have_leader || t->tid != h->pid)
                                        goto bad;
                                have_leader = true;
                        }
                        if (t->flags & IMG_TF_CKPT) {
                                if (have_ckpt)
                                        goto bad;
                                have_ckpt = true;
                        }
                        break;
                }
                case IMG_R_FILE: {
                        struct img_parsed_file *f = &img->files[img->n_files++];
                        if (rec.len < sizeof f->f)
                                goto bad;
                        memcpy(&f->f, p, sizeof f->f);
                        if (sizeof f->f + (size_t) f->f.path_len != rec.len || f->f.path_len == 0 ||
                            take_str(p, sizeof f->f, f->f.path_len, rec.len, IMG_PATH_MAX, &strbuf, &f->path) < 0)
                                goto bad;
                        break;
                }
                case IMG_R_REGION: {
                        struct img_parsed_region *pr = &img->regions[img->n_regions++];
                        if (rec.len < sizeof pr->r)
                                goto bad;
                        memcpy(&pr->r, p, sizeof pr->r);
                        if (sizeof pr->r + (size_t) pr->r.name_len != rec.len ||
                            take_str(p, sizeof pr->r, pr->r.name_len, rec.len, IMG_PATH_MAX, &strbuf, &pr->name) < 0)
                                goto bad;
                        break;
                }
                case IMG_R_BLOCKS:
                        memcpy(img->blocks + img->n_blocks, p, rec.len);
                        img->n_blocks += rec.len / sizeof(struct img_block);
                        break;
                case IMG_R_FD: {
                        struct img_parsed_fd *d = &img->fds[img->n_fds++];
                        if (rec.len < sizeof d->d)
                                goto bad;
                        memcpy(&d->d, p, sizeof d->d);
                        if (sizeof d->d + (size_t) d->d.path_len != rec.len ||
                            take_str(p, sizeof d->d, d->d.path_len, rec.len, IMG_PATH_MAX, &strbuf, &d->path) < 0)
                                goto bad;
                        break;
                }
                case IMG_R_SIGACTIONS:
                        if (rec.len != sizeof img->sigactions)
                                goto bad;
                        memcpy(img->sigactions, p, sizeof img->sigactions);
                        img->have_sigactions = true;
                        break;
                case IMG_R_TIMER:
                        if (rec.len != sizeof(struct img_timer))
                                goto bad;
                        memcpy(&img->timers[img->n_timers++], p, sizeof(struct img_timer));
                        break;
                case IMG_R_CHILD: {
                        if (rec.len != sizeof(struct img_child))
                                goto bad;
                        struct img_child *ch = &img->children[img->n_children++];
                        memcpy(ch, p, sizeof *ch);
                        if (ch->pid == 0 || ch->pid == h->pid || ch->code < CLD_EXITED || ch->code > CLD_DUMPED ||
                            ch->status < 0 || ch->status > 255)
                                goto bad;
                        break;
                }
                case IMG_R_SHM: {
                        struct img_parsed_shm *sh = &img->shms[img->n_shms++];
                        if (rec.len < sizeof sh->s)
                                goto bad;
                        memcpy(&sh->s, p, sizeof sh->s);
                        if (sizeof sh->s + (size_t) sh->s.name_len != rec.len || sh->s.kind == 0 ||
                            sh->s.kind >= _IMG_SHM_MAX || sh->s.size > (1ULL << 48) ||
                            (sh->s.flags & ~(uint32_t) (IMG_SHMF_LEADER | IMG_SHMF_DELETED | IMG_SHMF_RMID)) ||
                            take_str(p, sizeof sh->s, sh->s.name_len, rec.len, IMG_PATH_MAX, &strbuf, &sh->name) < 0)
                                goto bad;
                        if (sh->s.kind == IMG_SHM_POSIX && (sh->name.len < 2 || sh->name.s[0] != '/'))
                                goto bad;
                        for (size_t k = 0; k + 1 < img->n_shms; k++)
                                if (img->shms[k].s.kind == sh->s.kind && img->shms[k].s.dev == sh->s.dev &&
                                    img->shms[k].s.ino == sh->s.ino)
                                        return bad_meta(img, err, "corrupted metadata (shared memory object listed twice)");
                        break;
                }
                case IMG_R_SYSV: {
                        struct img_parsed_sysv *v = &img->sysv[img->n_sysv++];
                        if (rec.len < sizeof v->s)
                                goto bad;
                        memcpy(&v->s, p, sizeof v->s);
                        v->data = p + sizeof v->s;
                        if (v->s.data_len != rec.len - sizeof v->s || v->s.kind == 0 || v->s.kind >= _IMG_SYSV_MAX ||
                            v->s.id < 0 || img_sysv_check_data(&v->s, v->data) < 0)
                                goto bad;
                        break;
                }
                }
        }
        if (!have_leader)
                goto bad;

        /* Cross references, now that every table is complete. */
        for (size_t i = 0; i < img->n_files; i++)
                if (img->files[i].f.size > (1ULL << 48))
                        goto bad;
        for (size_t i = 0; i < img->n_regions; i++) {
                const struct img_region *rg = &img->regions[i].r;
                if (rg->start >= rg->end || rg->start % PAGE_SZ || rg->end % PAGE_SZ ||
                    rg->end > (1ULL << 57) || rg->kind == 0 || rg->kind >= _IMG_RK_MAX ||
                    rg->pgoff % PAGE_SZ || (rg->prot & ~7u))
                        return bad_meta(img, err, "corrupted metadata (region %zu)", i);
                bool is_file = rg->kind == IMG_RK_FILE_PRIVATE || rg->kind == IMG_RK_FILE_SHARED;
                if (is_file ? rg->file >= img->n_files : rg->file != IMG_NONE)
                        return bad_meta(img, err, "corrupted metadata (region %zu file index)", i);
                if (rg->kind == IMG_RK_SHM && rg->shm >= img->n_shms)
                        return bad_meta(img, err, "corrupted metadata (region %zu shared memory index)", i);
                if (i > 0 && img->regions[i - 1].r.end > rg->start)
                        return bad_meta(img, err, "corrupted metadata (regions overlap or are unsorted)");
        }
        for (size_t i = 0; i < img->n_fds; i++) {
                const struct img_fd *d = &img->fds[i].d;
                if (d->kind == IMG_FD_SHM && d->share == IMG_FD_OWN && d->aux >= img->n_shms)
                        return bad_meta(img, err, "corrupted metadata (descriptor record %zu: shared memory index)", i);
                if (d->fd < 0 || d->kind == 0 || d->kind >= _IMG_FD_MAX || d->share > IMG_FD_FOLLOWER ||
                    (d->file != IMG_NONE && d->file >= img->n_files) || !memchr(d->leader, 0, sizeof d->leader))
                        return bad_meta(img, err, "corrupted metadata (descriptor record %zu)", i);
                for (size_t k = 0; k < i; k++)
                        if (img->fds[k].d.fd == d->fd)
                                return bad_meta(img, err, "corrupted metadata (fd %d listed twice)", d->fd);
        }
        for (size_t i = 0; i < img->n_blocks; i++) {
                r = check_block(img, &img->blocks[i], err);
                if (r < 0) {
                        img_free(img);
                        return r;
                }
        }
        qsort(img->blocks, img->n_blocks, sizeof *img->blocks, block_cmp);
        uint64_t mem_end = 0;
        size_t b = 0;
        for (; b < img->n_blocks && img->blocks[b].target == IMG_BT_MEMORY; b++) {
                const struct img_block *bl = &img->blocks[b];
                if (bl->addr < mem_end)
                        return bad_meta(img, err, "corrupted block table (blocks overlap)");
                mem_end = bl->addr + bl->ulen;
                struct img_parsed_region *pr = &img->regions[bl->index];
                if (pr->n_blocks == 0)
                        pr->first_block = (uint32_t) b;
                else if (pr->first_block + pr->n_blocks != b)
                        return bad_meta(img, err, "corrupted block table (region blocks not contiguous)");
                pr->n_blocks++;
        }
        img->n_mem_blocks = b;
        /* The rest, sorted by target, object and offset: the content of
         * deleted files, then of shared memory objects. Each object's blocks
         * are one run that must not overlap itself. */
        uint64_t prev_end = 0;
        const struct img_block *prev = NULL;
        for (; b < img->n_blocks; b++) {
                const struct img_block *bl = &img->blocks[b];
                bool file = bl->target == IMG_BT_FILE;
                if (!prev || bl->index != prev->index || bl->target != prev->target)
                        prev_end = 0;
                if (bl->addr < prev_end)
                        return bad_meta(img, err, "corrupted block table (%s blocks overlap)",
                                        file ? "file" : "shared memory");
                prev_end = bl->addr + bl->ulen;
                prev = bl;
                uint32_t *first = file ? &img->files[bl->index].first_block : &img->shms[bl->index].first_block;
                uint32_t *n = file ? &img->files[bl->index].n_blocks : &img->shms[bl->index].n_blocks;
                if (*n == 0)
                        *first = (uint32_t) b;
                (*n)++;
        }
        return 0;
bad:
        return bad_meta(img, err, "corrupted metadata (malformed record)");
}

static int crc_mismatch(const struct img_block *b, struct img_error *err) {
        return fail(err, -EBADMSG, "corrupted data block at offset %llu (checksum mismatch)",
                    (unsigned long long) b->file_off);
}

int img_check_block(const struct img_block *b, const void *stored, struct img_error *err) {
        return img_crc32(0, stored, b->clen) == b->crc ? 0 : crc_mismatch(b, err);
}

static int inflate_block(const struct img_block *b, const void *src, void *dst, struct img_error *err) {
        int r = img_inflate(src, b->clen, dst, b->ulen);
        if (r == -ENOMEM)
                return fail(err, r, "no memory to decompress");
        if (r < 0)
                return fail(err, r, "corrupted data block at offset %llu (does not decompress)",
                            (unsigned long long) b->file_off);
        return 0;
}

int img_read_block(int fd, const struct img_block *b, void *dst, void *scratch, struct img_error *err) {
        int r;
        switch (b->enc) {
        case IMG_ENC_ZERO:
                memset(dst, 0, b->ulen);
                return 0;
        case IMG_ENC_GUARD:
                return 0;
        case IMG_ENC_RAW:
                r = pread_full(fd, dst, b->clen, (off_t) b->file_off);
                if (r < 0)
                        return fail(err, r == -EPIPE ? -EBADMSG : r, "cannot read block at offset %llu: %s",
                                    (unsigned long long) b->file_off, strerror(-r));
                return img_check_block(b, dst, err);
        case IMG_ENC_DEFLATE: {
                r = pread_full(fd, scratch, b->clen, (off_t) b->file_off);
                if (r < 0)
                        return fail(err, r == -EPIPE ? -EBADMSG : r, "cannot read block at offset %llu: %s",
                                    (unsigned long long) b->file_off, strerror(-r));
                return img_check_block(b, scratch, err) ?: inflate_block(b, scratch, dst, err);
        }
        }
        return fail(err, -EBADMSG, "corrupted block encoding");
}

int img_decode_block(const struct img_block *b, const uint8_t *src, void *dst, struct img_error *err) {
        switch (b->enc) {
        case IMG_ENC_ZERO:
                memset(dst, 0, b->ulen);
                return 0;
        case IMG_ENC_GUARD:
                return 0;
        case IMG_ENC_RAW: {
                const size_t chunk = 64 * 1024;
                uint32_t c = 0;
                for (size_t o = 0; o < b->clen; o += chunk) {
                        size_t n = MIN(chunk, (size_t) b->clen - o);
                        c = img_crc32(c, src + o, n);
                        memcpy((uint8_t *) dst + o, src + o, n);
                }
                return c == b->crc ? 0 : crc_mismatch(b, err);
        }
        case IMG_ENC_DEFLATE: {
                return img_check_block(b, src, err) ?: inflate_block(b, src, dst, err);
        }
        }
        return fail(err, -EBADMSG, "corrupted block encoding");
}

struct verify_job {
        int fd;
        const struct img *img;
        size_t next;                       /* atomic cursor into blocks */
        int result;
        size_t bad_block;
        pthread_mutex_t lock;
};

static void *verify_worker(void *arg) {
        struct verify_job *j = arg;
        size_t bufsize = IMG_BLOCK_MAX + PAGE_SZ;
        uint8_t *buf = mmap(NULL, bufsize, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (buf == MAP_FAILED) {
                pthread_mutex_lock(&j->lock);
                if (!j->result)
                        j->result = -ENOMEM;
                pthread_mutex_unlock(&j->lock);
                return NULL;
        }
        for (;;) {
                size_t i = __atomic_fetch_add(&j->next, 1, __ATOMIC_RELAXED);
                if (i >= j->img->n_blocks || __atomic_load_n(&j->result, __ATOMIC_RELAXED))
                        break;
                const struct img_block *b = &j->img->blocks[i];
                if (!b->clen)
                        continue;
                int r = pread_full(j->fd, buf, b->clen, (off_t) b->file_off);
                if (r == 0 && img_crc32(0, buf, b->clen) != b->crc)
                        r = -EBADMSG;
                if (r < 0) {
                        pthread_mutex_lock(&j->lock);
                        if (!j->result) {
                                j->result = r == -EPIPE ? -EBADMSG : r;
                                j->bad_block = i;
                        }
                        pthread_mutex_unlock(&j->lock);
                        break;
                }
        }
        munmap(buf, bufsize);
        return NULL;
}

int img_verify_blocks(int fd, const struct img *img, unsigned n_threads, struct img_error *err) {
        struct verify_job j = { .fd = fd, .img = img, .lock = PTHREAD_MUTEX_INITIALIZER };
        if (n_threads < 1)
                n_threads = 1;
        if (n_threads > 64)
                n_threads = 64;
        pthread_t tids[64];
        unsigned started = 0;
        for (unsigned i = 1; i < n_threads; i++)
                if (pthread_create(&tids[started], NULL, verify_worker, &j) == 0)
                        started++;
        verify_worker(&j);
        for (unsigned i = 0; i < started; i++)
                pthread_join(tids[i], NULL);
        if (j.result < 0) {
                const struct img_block *b = &img->blocks[j.bad_block];
                if (j.result == -EBADMSG)
                        return crc_mismatch(b, err);
                return fail(err, j.result, "cannot read data block at offset %llu: %s",
                            (unsigned long long) b->file_off, strerror(-j.result));
        }
        return 0;
}
