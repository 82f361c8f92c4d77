/* dmtcp_restart: bring a checkpointed computation back.
 *
 *   dmtcp_restart [-h|--coord-host H] [-p|--coord-port P] [--port-file F]
 *                 [-j|--join] [--new-coordinator] [--job NAME] [--ckptdir DIR]
 *                 [--no-strict-uid-checking] [--lazy] [-i S] [-q] IMAGE...|DIR
 *
 * Order of work: find the images (a directory means its newest complete
 * generation), validate them completely (header, metadata, owner, CPU,
 * kernel, the files they refer to), create the process under its original
 * pid (clone3 set_tid here, or in a fresh user+pid namespace), let it load
 * and verify every block (with --lazy, raw blocks are mapped instead: see
 * loader.c), and only then start or join the coordinator and tell the
 * process to go. Until that go, a failure leaves nothing behind.
 *
 * Exit status: the restored program's own (or its death signal); 99
 * (DMTCP_FAIL_RC) when restarting fails, 100 for an unusable image, 101
 * for a refused permission, never a signal of our own. */
#include <dirent.h>
#include <fcntl.h>
#include <getopt.h>
#include <linux/capability.h>
#include <linux/sched.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include "config.h"
#include "log.h"
#include "manifest.h"
#include "polkit.h"
#include "raw-syscall.h"
#include "restart.h"
#include "rst-caps.h"
#include "shared.h"
#include "util.h"

__attribute__((used, visibility("default"))) const int dmtcp_tool_marker = 1;

#define MAX_IMAGES 4096

static int fail_rc;
static bool tracing;
static uint64_t t_start;

/* DMTCP_TRACE=1: where a restart's time goes. */
static void trace(const char *what) {
        if (tracing)
                fprintf(stderr, "dmtcp_restart: trace %8llu us  %s\n",
                        (unsigned long long) (now_usec(CLOCK_MONOTONIC) - t_start), what);
}

_printf_(2, 3) static _Noreturn void die(int rc, const char *fmt, ...) {
        int error = errno;
        char msg[2048];
        va_list ap;
        va_start(ap, fmt);
        log_format(msg, sizeof msg, error, fmt, ap);
        va_end(ap);
        fprintf(stderr, "dmtcp_restart: %s\n", msg);
        exit(rc);
}

static void usage(FILE *f) {
        fprintf(f,
                "Usage: dmtcp_restart [OPTIONS] IMAGE...|DIR\n"
                "Restart a computation from its checkpoint images. Given a directory, restart its\n"
                "newest complete checkpoint.\n\n"
                "  -h, --coord-host H          coordinator host (default: DMTCP_COORD_HOST or localhost)\n"
                "  -p, --coord-port P          coordinator port (default: DMTCP_COORD_PORT or 7779)\n"
                "      --port-file F           write the port of a started coordinator to F\n"
                "  -j, --join                  use a running coordinator, do not start one\n"
                "      --new-coordinator       start a new coordinator, fail if one runs\n"
                "      --job NAME              use job NAME's per-user coordinator\n"
                "      --ckptdir DIR           write later checkpoints to DIR\n"
                "      --no-strict-uid-checking  allow root to restart another user's image\n"
                "      --inspect               describe the images (validated), restart nothing\n"
                "      --lazy                  map uncompressed memory from the image, loaded on first touch:\n"
                "                              fast, but those blocks' checksums are not verified and the\n"
                "                              image must not be modified while the computation runs\n"
                "  -i, --interval S            checkpoint every S seconds\n"
                "  -q, --quiet                 only warnings and errors\n"
                "      --help                  this text\n"
                "      --version               the version\n");
}

/* --- finding images ----------------------------------------------------- */

/* The newest gen-NNNNNN in dir: only complete generations carry that name. */
static int newest_generation(const char *dir, char *out, size_t size) {
        DIR *d = opendir(dir);
        if (!d)
                return -errno;
        long best = -1;
        struct dirent *de;
        while ((de = readdir(d))) {
                if (strncmp(de->d_name, "gen-", 4) || strlen(de->d_name) != 10)
                        continue;
                uint32_t g;
                if (parse_u32(de->d_name + 4, &g) == 0 && (long) g > best)
                        best = g;
        }
        closedir(d);
        if (best < 0)
                return -ENOENT;
        snprintf(out, size, "%s/gen-%06ld", dir, best);
        return 0;
}

static void dir_of(const char *path, char *out, size_t size) {
        strscpy(out, path, size);
        char *s = strrchr(out, '/');
        if (!s)
                strscpy(out, ".", size);
        else if (s == out)
                out[1] = 0;
        else
                *s = 0;
}

/* What cannot be read for lack of permission is a refused permission
 * (rc+2), not an unusable image (rc+1). */
static int rc_for_errno(int error) {
        return error == EACCES || error == EPERM ? fail_rc + 2 : fail_rc + 1;
}

static size_t collect_images(char **args, int n, struct rst_image *ims, struct manifest *man, char *gen_dir,
                             size_t gsize) {
        size_t count = 0;
        gen_dir[0] = 0;
        for (int i = 0; i < n; i++) {
                struct stat st;
                if (stat(args[i], &st) < 0)
                        die(rc_for_errno(errno), "%s: %m", args[i]);
                if (S_ISDIR(st.st_mode)) {
                        char dir[PATH_MAX], probe[PATH_MAX + 16];
                        if (!realpath(args[i], dir))
                                die(rc_for_errno(errno), "%s: %m", args[i]);
                        snprintf(probe, sizeof probe, "%s/MANIFEST", dir);
                        if (access(probe, F_OK) == 0)
                                strscpy(gen_dir, dir, gsize);
                        else {
                                int r = newest_generation(dir, gen_dir, gsize);
                                if (r == -EACCES || r == -EPERM)
                                        die(fail_rc + 2, "%s: %s", dir, strerror(-r));
                                if (r < 0)
                                        die(fail_rc + 1, "%s holds no complete checkpoint (no gen-NNNNNN directory)", dir);
                        }
                        char mpath[PATH_MAX + 16];
                        snprintf(mpath, sizeof mpath, "%s/" MANIFEST_NAME, gen_dir);
                        manifest_done(man);
                        int r = manifest_read(mpath, man);
                        if (r < 0)
                                die(rc_for_errno(-r), "%s is unreadable or damaged (%s); this checkpoint cannot be used", mpath,
                                    strerror(-r));
                        for (size_t k = 0; k < man->n_images; k++) {
                                if (count >= MAX_IMAGES || !manifest_image_name_ok(man->images[k].name))
                                        die(fail_rc + 1, "%s lists an invalid image", mpath);
                                snprintf(ims[count].path, sizeof ims[count].path, "%s/%s", gen_dir, man->images[k].name);
                                count++;
                        }
                } else {
                        if (count >= MAX_IMAGES)
                                die(fail_rc, "too many images");
                        if (!realpath(args[i], ims[count].path))
                                die(rc_for_errno(errno), "%s: %m", args[i]);
                        count++;
                }
        }
        for (size_t i = 0; i < count; i++)
                dir_of(ims[i].path, ims[i].gen_dir, sizeof ims[i].gen_dir);
        return count;
}

/* --- validation --------------------------------------------------------- */

static uint64_t cpu_xcr0(void) {
        uint32_t lo, hi;
        __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
        return ((uint64_t) hi << 32) | lo;
}

static bool current_vdso(uint32_t *size, uint32_t *crc) {
        _cleanup_fclose_ FILE *f = fopen("/proc/self/maps", "re");
        char line[512];
        while (f && fgets(line, sizeof line, f)) {
                unsigned long long s, e;
                if (strstr(line, "[vdso]") && sscanf(line, "%llx-%llx", &s, &e) == 2) {
                        *size = (uint32_t) (e - s);
                        *crc = img_crc32(0, (const void *) (uintptr_t) s, *size);
                        return true;
                }
        }
        return false;
}

static int file_crc32(const char *path, uint32_t *out) {
        _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        static uint8_t buf[1 << 20];
        uint32_t c = 0;
        ssize_t n;
        while ((n = read(fd, buf, sizeof buf)) > 0)
                c = img_crc32(c, buf, (size_t) n);
        if (n < 0)
                return -errno;
        *out = c;
        return 0;
}

static bool caller_may_override_uid(void) {
        /* root, or whom polkit authorizes for org.dmtcp.restart-foreign-image. */
        return geteuid() == 0 || rst_polkit_may_restart_foreign_image() > 0;
}

static void validate(struct rst_image *im, const struct manifest *man, bool no_strict) {
        im->fd = open(im->path, O_RDONLY | O_CLOEXEC);
        if (im->fd < 0) {
                struct stat ost;
                if (errno == EACCES && stat(im->path, &ost) == 0 && ost.st_uid != getuid())
                        die(fail_rc + 2, "image %s: permission denied: it belongs to uid %u and you (uid %u) cannot read it; restart it as "
                                         "that user", im->path, (unsigned) ost.st_uid, (unsigned) getuid());
                die(errno == EACCES ? fail_rc + 2 : fail_rc + 1, "image %s: %m", im->path);
        }
        struct stat st;
        if (fstat(im->fd, &st) < 0)
                die(fail_rc + 1, "image %s: %m", im->path);
        struct img_error e = { 0 };
        int r = img_load(im->fd, (uint64_t) st.st_size, &im->img, &e);
        if (r < 0)
                die(r == -EACCES ? fail_rc + 2 : fail_rc + 1, "image %s: %s", im->path, e.what);
        im->size = (uint64_t) st.st_size;
        const struct img_header *h = &im->img.hdr;
        const char *name = path_basename(im->path);
        for (size_t i = 0; i < man->n_images; i++)
                if (!strcmp(man->images[i].name, name) && (man->images[i].bytes != im->size || man->images[i].crc != h->header_crc))
                        die(fail_rc + 1, "image %s does not match its generation's MANIFEST (damaged or replaced)", im->path);
        uid_t me = getuid();
        if (h->uid != me || st.st_uid != me) {
                if (!no_strict)
                        die(fail_rc + 2, "image %s belongs to uid %u; restart it as that user (or, as root, with "
                                         "--no-strict-uid-checking)", im->path, h->uid != me ? h->uid : (unsigned) st.st_uid);
                if (!caller_may_override_uid())
                        die(fail_rc + 2, "image %s belongs to uid %u and you (uid %u) are not allowed to restart it",
                            im->path, h->uid, (unsigned) me);
        }
        if (h->xcr0 & ~cpu_xcr0())
                die(fail_rc + 1, "image %s uses CPU state this processor lacks (xcr0 %llx, here %llx)", im->path,
                    (unsigned long long) h->xcr0, (unsigned long long) cpu_xcr0());
        uint32_t vsize, vcrc;
        if (current_vdso(&vsize, &vcrc) && (vsize != h->vdso_size || vcrc != h->vdso_crc))
                die(fail_rc + 1, "image %s was taken under another kernel build (%s %s); restart it on that kernel",
                    im->path, h->kernel_release, h->kernel_build);
        /* Files the image refers to must be the same files. */
        const struct img *img = &im->img;
        for (size_t i = 0; i < img->n_files; i++) {
                const struct img_parsed_file *pf = &img->files[i];
                if (pf->f.flags & IMG_FF_CONTENT)
                        continue;
                struct stat fs;
                if (stat(pf->path.s, &fs) < 0)
                        die(fail_rc + 1, "image %s needs %s, which is missing here", im->path, pf->path.s);
                /* A file the program mapped only shared may have changed since:
                 * its contents come back from the image. */
                bool private_map = false;
                for (size_t k = 0; k < img->n_regions && !private_map; k++)
                        private_map = img->regions[k].r.file == i && img->regions[k].r.kind == IMG_RK_FILE_PRIVATE;
                if (!private_map)
                        continue;
                bool same = fs.st_dev == pf->f.dev && fs.st_ino == pf->f.ino && (uint64_t) fs.st_size == pf->f.size &&
                            fs.st_mtim.tv_sec == pf->f.mtime_sec && (uint32_t) fs.st_mtim.tv_nsec == pf->f.mtime_nsec;
                if (same)
                        continue;
                uint32_t c = 0;
                if ((uint64_t) fs.st_size != pf->f.size || !(pf->f.flags & IMG_FF_CRC) || file_crc32(pf->path.s, &c) < 0 ||
                    c != pf->f.crc)
                        die(fail_rc + 1, "image %s was taken with a different %s; restore that file (or checkpoint "
                                         "with --ckpt-libraries)", im->path, pf->path.s);
        }
        for (size_t i = 0; i < img->n_fds; i++) {
                const struct img_parsed_fd *pd = &img->fds[i];
                if ((pd->d.kind == IMG_FD_REGULAR && pd->d.file == IMG_NONE) || pd->d.kind == IMG_FD_DIRECTORY) {
                        if (access(pd->path.s, F_OK) < 0)
                                die(fail_rc + 1, "image %s: the program had %s open (fd %d), and it is missing here",
                                    im->path, pd->path.s, pd->d.fd);
                }
        }
}

/* --inspect: what an image holds, without restarting anything. */
static void inspect(const struct rst_image *im) {
        const struct img *img = &im->img;
        const struct img_header *h = &img->hdr;
        printf("image %s\n", im->path);
        printf("  program %s, pid %u, uid %u, host %s, computation %s, generation %llu\n", h->program, h->pid, h->uid,
               h->host, h->comp_id, (unsigned long long) h->generation);
        printf("  kernel %s %s, %llu bytes of memory saved, file %llu bytes\n", h->kernel_release, h->kernel_build,
               (unsigned long long) h->mem_bytes, (unsigned long long) h->file_size);
        printf("  exe %s, cwd %s\n", img->exe.s, img->cwd.s);
        for (size_t i = 0; i < img->n_threads; i++) {
                const struct img_thread *t = &img->threads[i];
                printf("  thread %u %-16s fs %llx ctx %llx%s%s\n", t->tid, t->comm, (unsigned long long) t->fs_base,
                       (unsigned long long) t->ctx_addr, t->flags & IMG_TF_LEADER ? " leader" : "",
                       t->flags & IMG_TF_CKPT ? " checkpoint-thread" : "");
        }
        for (size_t i = 0; i < img->n_children; i++) {
                const struct img_child *c = &img->children[i];
                printf("  child %u ended (%s %d), not reaped\n", c->pid,
                       c->code == CLD_EXITED ? "exit" : c->code == CLD_DUMPED ? "dumped core on signal" : "signal",
                       c->status);
        }
        for (size_t i = 0; i < img->n_regions; i++) {
                const struct img_parsed_region *pr = &img->regions[i];
                uint64_t bytes = 0;
                for (uint32_t k = 0; k < pr->n_blocks; k++)
                        bytes += img->blocks[pr->first_block + k].ulen;
                printf("  %012llx-%012llx %c%c%c %-20s %4u blocks %8llu KiB  %s\n", (unsigned long long) pr->r.start,
                       (unsigned long long) pr->r.end, pr->r.prot & 1 ? 'r' : '-', pr->r.prot & 2 ? 'w' : '-',
                       pr->r.prot & 4 ? 'x' : '-', img_region_kind_name(pr->r.kind), pr->n_blocks,
                       (unsigned long long) (bytes / 1024), pr->r.file != IMG_NONE ? img->files[pr->r.file].path.s : pr->name.s);
        }
        for (size_t i = 0; i < img->n_shms; i++) {
                const struct img_parsed_shm *ps = &img->shms[i];
                uint64_t bytes = 0;
                for (uint32_t k = 0; k < ps->n_blocks; k++)
                        bytes += img->blocks[ps->first_block + k].ulen;
                printf("  shared memory %zu: %s%s%s, inode %llu, %llu bytes, mode %o%s%s%s; %llu KiB saved here\n", i,
                       img_shm_kind_name(ps->s.kind), ps->name.len ? " " : "", ps->name.s, (unsigned long long) ps->s.ino,
                       (unsigned long long) ps->s.size, ps->s.mode, ps->s.flags & IMG_SHMF_LEADER ? ", leader" : "",
                       ps->s.flags & IMG_SHMF_DELETED ? ", unlinked" : "",
                       ps->s.flags & IMG_SHMF_RMID ? ", marked for removal" : "", (unsigned long long) (bytes / 1024));
        }
        for (size_t i = 0; i < img->n_sysv; i++) {
                const struct img_sysv *v = &img->sysv[i].s;
                printf("  System V %s %d: key %#x, mode %o, %u %s\n", v->kind == IMG_SYSV_SEM ? "semaphore set" : "message queue",
                       v->id, (unsigned) v->key, v->mode, v->count, v->kind == IMG_SYSV_SEM ? "semaphores" : "messages");
        }
        for (size_t i = 0; i < img->n_fds; i++) {
                const struct img_fd *d = &img->fds[i].d;
                printf("  fd %d: %s %s", d->fd, img_fd_kind_name(d->kind), img->fds[i].path.s);
                if (d->share == IMG_FD_FOLLOWER)
                        printf(", shared: fd %d of process %s\n", d->leader_fd, d->leader);
                else if (d->kind == IMG_FD_PIPE)
                        printf(", %s end, %llu bytes in it, capacity %lld, other end %s%s\n",
                               (d->flags & O_ACCMODE) == O_RDONLY ? "read" : "write", (unsigned long long) d->size,
                               (long long) d->offset, d->aux ? "in process " : "not in the computation",
                               d->aux ? d->leader : "");
                else
                        printf(" offset %lld\n", (long long) d->offset);
        }
}

/* --- process creation ---------------------------------------------------- */

static bool have_restore_cap(void) {
        struct __user_cap_header_struct hdr = { _LINUX_CAPABILITY_VERSION_3, 0 };
        struct __user_cap_data_struct d[2];
        if (raw_syscall2(SYS_capget, (long) &hdr, (long) d) < 0)
                return false;
        uint64_t eff = d[0].effective | ((uint64_t) d[1].effective << 32);
        return eff & ((1ULL << 40 /* CAP_CHECKPOINT_RESTORE */) | (1ULL << CAP_SYS_ADMIN));
}

static pid_t forward_list[MAX_IMAGES];
static size_t n_forward;

static void forward_signal(int sig, siginfo_t *si, void *uc) {
        /* A terminal's signals reach the whole process group by themselves. */
        if (si->si_code == SI_USER || si->si_code == SI_QUEUE || si->si_code == SI_TKILL)
                for (size_t i = 0; i < n_forward; i++)
                        kill(forward_list[i], sig);
}

static void install_forwarding(const pid_t *to, size_t n) {
        n_forward = MIN(n, (size_t) MAX_IMAGES);
        memcpy(forward_list, to, n_forward * sizeof *to);
        static const int sigs[] = { SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGALRM, SIGCONT, SIGWINCH, SIGPWR };
        for (size_t i = 0; i < ARRAY_SIZE(sigs); i++) {
                struct sigaction sa = { .sa_sigaction = forward_signal, .sa_flags = SA_SIGINFO | SA_RESTART };
                sigaction(sigs[i], &sa, NULL);
        }
}

static int write_file(const char *path, const char *s) {
        _cleanup_close_ int fd = open(path, O_WRONLY | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        return write_full(fd, s, strlen(s));
}

/* Wait for the root processes; report how the first one (the computation's
 * main process) ended. Others that end are reaped as they go. */
static int wait_roots(const pid_t *roots, size_t n) {
        int primary = 0;
        size_t left = n;
        while (left > 0) {
                int st;
                pid_t w = waitpid(-1, &st, 0);
                if (w < 0) {
                        if (errno == EINTR)
                                continue;
                        break;
                }
                for (size_t i = 0; i < n; i++)
                        if (roots[i] == w) {
                                if (i == 0)
                                        primary = st;
                                left--;
                        }
        }
        return primary;
}

/* pid 1 of a fresh pid namespace: mount its /proc, create the root
 * processes under their pids, reap, forward signals, report how the main
 * one ended. */
static _Noreturn void init_main(struct rst_tree *t, int exit_fd) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0 ||
            mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0) {
                dprintf(t->status_fd, "Ecannot mount /proc for the new pid namespace: %s\n", strerror(errno));
                _exit(fail_rc);
        }
        setenv("DMTCP_RESTART_NEW_PIDNS", "1", 1);
        char err[1024];
        if (rst_shared_create(err, sizeof err) < 0) {
                dprintf(t->status_fd, "E%s\n", err);
                _exit(fail_rc);
        }
        pid_t roots[MAX_IMAGES];
        size_t n_roots;
        if (rst_tree_spawn_roots(t, roots, &n_roots) < 0) {
                dprintf(t->status_fd, "Ecannot create the processes in the new pid namespace: %s\n", strerror(errno));
                _exit(fail_rc);
        }
        rst_shared_release(NULL);
        close(t->status_fd);
        rst_ptys_close(t->o);
        install_forwarding(roots, n_roots);
        int st = wait_roots(roots, n_roots);
        write_full(exit_fd, &st, sizeof st);
        _exit(0);
}

/* Enter a fresh user (unless root) and pid namespace in a helper process,
 * whose child is the namespace's init. */
static pid_t spawn_in_new_pidns(struct rst_tree *t, int exit_fd) {
        pid_t helper = fork();
        if (helper != 0)
                return helper;
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        uid_t uid = getuid();
        gid_t gid = getgid();
        if (geteuid() != 0) {
                if (unshare(CLONE_NEWUSER) < 0) {
                        dprintf(t->status_fd, "Ecannot restore the original process ids: creating a user namespace failed "
                                              "(%s), and this user lacks CAP_CHECKPOINT_RESTORE\n", strerror(errno));
                        _exit(fail_rc);
                }
                char map[64];
                write_file("/proc/self/setgroups", "deny");
                snprintf(map, sizeof map, "%u %u 1", (unsigned) uid, (unsigned) uid);
                int r1 = write_file("/proc/self/uid_map", map);
                snprintf(map, sizeof map, "%u %u 1", (unsigned) gid, (unsigned) gid);
                int r2 = write_file("/proc/self/gid_map", map);
                if (r1 < 0 || r2 < 0) {
                        dprintf(t->status_fd, "Ecannot map uid/gid in the user namespace\n");
                        _exit(fail_rc);
                }
        }
        if (unshare(CLONE_NEWPID | CLONE_NEWNS | (rst_shared_need_ipc_ns() ? CLONE_NEWIPC : 0)) < 0) {
                dprintf(t->status_fd, "Ecannot create a pid namespace: %s\n", strerror(errno));
                _exit(fail_rc);
        }
        pid_t init = fork();
        if (init < 0) {
                dprintf(t->status_fd, "Ecannot start the namespace's init: %s\n", strerror(errno));
                _exit(fail_rc);
        }
        if (init == 0)
                init_main(t, exit_fd);
        close(t->status_fd);
        rst_ptys_close(t->o);
        close(exit_fd);
        install_forwarding(&init, 1);
        int st;
        while (waitpid(init, &st, 0) < 0 && errno == EINTR)
                ;
        _exit(0);
}

/* --- the waiting parent ---------------------------------------------------- */

struct status_reader {
        int fd;
        char buf[4096];
        size_t len;
        bool loaded, restored;
        char error[2048];
};

/* Read status lines until one arrives or the pipe ends. Returns 1 for a
 * line, 0 on EOF. */
static int read_status_line(struct status_reader *s, char *line, size_t size) {
        for (;;) {
                char *nl = memchr(s->buf, '\n', s->len);
                if (nl) {
                        size_t n = (size_t) (nl - s->buf);
                        size_t c = MIN(n, size - 1);
                        memcpy(line, s->buf, c);
                        line[c] = 0;
                        memmove(s->buf, nl + 1, s->len - n - 1);
                        s->len -= n + 1;
                        return 1;
                }
                if (s->fd < 0)
                        return 0;
                ssize_t k = read(s->fd, s->buf + s->len, sizeof s->buf - s->len - 1);
                if (k < 0 && errno == EINTR)
                        continue;
                if (k <= 0) {
                        s->fd = safe_close(s->fd);
                        return 0;
                }
                s->len += (size_t) k;
        }
}

static _Noreturn void exit_like(int st, bool restored, const struct status_reader *s) {
        if (!restored) {
                if (s->error[0])
                        die(WIFEXITED(st) && WEXITSTATUS(st) ? WEXITSTATUS(st) : fail_rc, "%s", s->error);
                if (WIFSIGNALED(st))
                        die(fail_rc, "the process died of %s while being restored", strsignal(WTERMSIG(st)));
                die(WIFEXITED(st) && WEXITSTATUS(st) ? WEXITSTATUS(st) : fail_rc, "the restore did not complete");
        }
        if (WIFSIGNALED(st)) {
                int sig = WTERMSIG(st);
                signal(sig, SIG_DFL);
                prctl(PR_SET_DUMPABLE, 0);      /* no core of ours for the program's crash */
                sigset_t m;
                sigemptyset(&m);
                sigaddset(&m, sig);
                sigprocmask(SIG_UNBLOCK, &m, NULL);
                kill(getpid(), sig);
                _exit(128 + sig);
        }
        exit(WEXITSTATUS(st));
}

int main(int argc, char **argv) {
        fail_rc = dmtcp_fail_rc();
        t_start = now_usec(CLOCK_MONOTONIC);
        tracing = getenv("DMTCP_TRACE") && parse_bool(getenv("DMTCP_TRACE")) > 0;
        log_set_ident("dmtcp_restart");
        (void) rst_caps_keep_only_restore();    /* a file capability: keep cap_checkpoint_restore only */
        struct rst_options o = {
                .coord = { .mode = COORD_START_ANY, .port = -1, .interval = -1 },
                .interval = -1, .fail_rc = fail_rc, .start_usec = now_usec(CLOCK_MONOTONIC),
        };
        enum { OPT_PORT_FILE = 1000, OPT_NEW, OPT_JOB, OPT_CKPTDIR, OPT_NO_STRICT, OPT_LAZY, OPT_INSPECT, OPT_HELP, OPT_VERSION };
        bool do_inspect = false;
        static const struct option opts[] = {
                { "coord-host", required_argument, NULL, 'h' },
                { "coord-port", required_argument, NULL, 'p' },
                { "port-file", required_argument, NULL, OPT_PORT_FILE },
                { "join", no_argument, NULL, 'j' },
                { "join-coordinator", no_argument, NULL, 'j' },
                { "new-coordinator", no_argument, NULL, OPT_NEW },
                { "job", required_argument, NULL, OPT_JOB },
                { "ckptdir", required_argument, NULL, OPT_CKPTDIR },
                { "no-strict-uid-checking", no_argument, NULL, OPT_NO_STRICT },
                { "no-strict-checking", no_argument, NULL, OPT_NO_STRICT },
                { "lazy", no_argument, NULL, OPT_LAZY },
                { "inspect", no_argument, NULL, OPT_INSPECT },
                { "interval", required_argument, NULL, 'i' },
                { "quiet", no_argument, NULL, 'q' },
                { "help", no_argument, NULL, OPT_HELP },
                { "version", no_argument, NULL, OPT_VERSION },
                {}
        };
        int c;
        char ckptdir[PATH_MAX];
        while ((c = getopt_long(argc, argv, "+h:p:ji:q", opts, NULL)) != -1) {
                int v;
                switch (c) {
                case 'h':
                        o.coord.host = optarg;
                        break;
                case 'p':
                        if (parse_int_range(optarg, 0, 65535, &v) < 0)
                                die(fail_rc, "invalid port '%s'", optarg);
                        o.coord.port = v;
                        break;
                case OPT_PORT_FILE:
                        o.coord.port_file = optarg;
                        break;
                case 'j':
                        o.coord.mode = COORD_START_JOIN;
                        break;
                case OPT_NEW:
                        o.coord.mode = COORD_START_NEW;
                        break;
                case OPT_JOB:
                        if (!job_name_valid(optarg))
                                die(fail_rc, "invalid job name '%s': use letters, digits, '_' and '.', at most 64", optarg);
                        o.coord.job = optarg;
                        break;
                case OPT_CKPTDIR:
                        if (ckpt_dir_resolve(optarg, ckptdir, sizeof ckptdir) < 0)
                                die(fail_rc, "invalid checkpoint directory '%s'", optarg);
                        o.ckptdir = ckptdir;
                        break;
                case OPT_NO_STRICT:
                        o.no_strict = true;
                        break;
                case OPT_LAZY:
                        o.lazy = true;
                        break;
                case OPT_INSPECT:
                        do_inspect = true;
                        break;
                case 'i':
                        if (parse_int_range(optarg, 0, INT32_MAX, &v) < 0)
                                die(fail_rc, "invalid interval '%s'", optarg);
                        o.interval = v;
                        o.coord.interval = v;
                        break;
                case 'q':
                        o.quiet = true;
                        log_set_max_level(LOG_WARNING);
                        break;
                case OPT_HELP:
                        usage(stdout);
                        return 0;
                case OPT_VERSION:
                        printf("dmtcp_restart %s\n", DMTCP_VERSION);
                        return 0;
                default:
                        usage(stderr);
                        return fail_rc;
                }
        }
        if (optind >= argc) {
                usage(stderr);
                return fail_rc;
        }

        static struct rst_image ims[MAX_IMAGES];
        struct manifest man = { 0 };
        char gen_dir[PATH_MAX];
        size_t n = collect_images(argv + optind, argc - optind, ims, &man, gen_dir, sizeof gen_dir);
        if (n == 0)
                die(fail_rc + 1, "no image to restart");
        for (size_t i = 0; i < n; i++)
                validate(&ims[i], &man, o.no_strict);
        trace("images validated");
        if (do_inspect) {
                for (size_t i = 0; i < n; i++)
                        inspect(&ims[i]);
                return 0;
        }
        o.members = man.n_images ? (uint32_t) man.n_images : (uint32_t) n;
        /* Images named one by one may be some of a checkpoint whose other
         * processes are restarted elsewhere (another host): the computation
         * is as many as the checkpoint had. */
        if (!man.n_images && ims[0].img.hdr.n_members > o.members)
                o.members = ims[0].img.hdr.n_members;
        /* Checkpoints after the restart go next to the generation restored,
         * unless --ckptdir says otherwise. */
        char parent_dir[PATH_MAX];
        if (!o.ckptdir) {
                dir_of(ims[0].gen_dir, parent_dir, sizeof parent_dir);
                if (!strncmp(path_basename(ims[0].gen_dir), "gen-", 4))
                        o.coord.ckptdir = parent_dir;
        } else
                o.coord.ckptdir = o.ckptdir;

        int status_pipe[2], exit_pipe[2];
        if (pipe2(status_pipe, O_CLOEXEC) < 0 || pipe2(exit_pipe, O_CLOEXEC) < 0)
                die(fail_rc, "cannot create pipes: %m");
        /* The status pipe stays open in each restored process until its
         * runtime reports; keep it away from the descriptors it restores. */
        int sfd = fcntl(status_pipe[1], F_DUPFD_CLOEXEC, 1000);
        if (sfd >= 0) {
                close(status_pipe[1]);
                status_pipe[1] = sfd;
        }
        struct rst_tree tree = { .ims = ims, .n = n, .o = &o, .status_fd = status_pipe[1] };
        char err[1024] = "";
        if (rst_tree_plan(&tree, err, sizeof err) < 0 || rst_shared_collect(ims, n, err, sizeof err) < 0)
                die(fail_rc + 1, "%s", err);
        if (rst_ptys_make(ims, n, &o, err, sizeof err) < 0)
                die(fail_rc, "%s", err);
        tree.sync = rst_sync_new();
        if (!tree.sync)
                die(fail_rc, "cannot allocate shared memory: %m");

        /* Original pids: here with clone3 set_tid when we may and they are
         * free, else in a fresh pid namespace. */
        static pid_t roots[MAX_IMAGES];
        size_t n_roots = 0;
        bool in_ns = !(have_restore_cap() && rst_tree_ids_free(&tree));
        /* System V objects get their ids back in an IPC namespace of their
         * own, which only root makes here; others make it in the user
         * namespace of a new pid namespace. */
        if (!in_ns && rst_shared_need_ipc_ns() && (geteuid() != 0 || unshare(CLONE_NEWIPC) < 0))
                in_ns = true;
        if (!in_ns && rst_shared_create(err, sizeof err) < 0)
                die(fail_rc, "%s", err);
        if (!in_ns)
                trace("shared objects created");
        if (!in_ns && rst_tree_spawn_roots(&tree, roots, &n_roots) < 0) {
                if (n_roots > 0)
                        die(fail_rc, "cannot create process %u: %m", ims[0].img.hdr.pid);
                in_ns = true;           /* an id was taken meanwhile */
        }
        rst_shared_release(NULL);
        if (in_ns) {
                pid_t helper = spawn_in_new_pidns(&tree, exit_pipe[1]);
                if (helper < 0)
                        die(fail_rc, "cannot restore the processes: %m");
                roots[0] = helper;
                n_roots = 1;
        }
        close(status_pipe[1]);
        close(exit_pipe[1]);
        rst_ptys_close(&o);
        for (size_t i = 0; i < n; i++)
                close(ims[i].fd);
        install_forwarding(roots, n_roots);

        struct status_reader s = { .fd = status_pipe[0] };
        char line[2048];
        size_t loaded = 0, restored = 0;
        while (loaded < n && !s.error[0] && read_status_line(&s, line, sizeof line)) {
                if (line[0] == 'L')
                        loaded++;
                else if (line[0] == 'E')
                        strscpy(s.error, line + 1, sizeof s.error);
        }
        if (loaded == n) {
                s.loaded = true;
                trace("images loaded and verified");
                struct coord_addr addr;
                int r = coord_ensure(&o.coord, &addr);
                if (r < 0) {
                        char where[300] = "";
                        coord_addr_resolve(&addr, o.coord.host, o.coord.port, o.coord.job);
                        coord_addr_describe(&addr, where, sizeof where);
                        rst_sync_abort(tree.sync);
                        die(fail_rc, "no coordinator at %s: %s", where, strerror(-r));
                }
                struct rst_go go = { .magic = RST_GO_MAGIC, .coord_kind = addr.kind, .port = addr.port };
                strscpy(go.host, addr.host, sizeof go.host);
                strscpy(go.path, addr.path, sizeof go.path);
                rst_sync_go(tree.sync, &go);
                trace("coordinator ready");
        } else
                rst_sync_abort(tree.sync);
        while (restored < n && !s.error[0] && read_status_line(&s, line, sizeof line)) {
                if (line[0] == 'R') {
                        if (++restored == n) {
                                s.restored = true;
                                trace("restored processes run");
                        }
                } else if (line[0] == 'E')
                        strscpy(s.error, line + 1, sizeof s.error);
        }
        if (s.error[0] && !s.restored)
                rst_sync_abort(tree.sync);
        int st = in_ns ? 0 : wait_roots(roots, n_roots);
        if (in_ns) {
                int helper_st;
                while (waitpid(roots[0], &helper_st, 0) < 0 && errno == EINTR)
                        ;
                int inner;
                if (read_full(exit_pipe[0], &inner, sizeof inner) == 0)
                        st = inner;
                else if (!s.restored && !s.error[0])
                        strscpy(s.error, "the restore failed in the new pid namespace", sizeof s.error);
        }
        exit_like(st, s.restored, &s);
}
