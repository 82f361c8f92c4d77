/* The checkpoint directory: generation numbering, temporary directories,
 * the commit (image checks, MANIFEST, rename, latest, restart script) and
 * pruning that never touches what is not exactly gen-NNNNNN. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <inttypes.h>
#include <string.h>
#include <cmocka.h>
#include <fcntl.h>
#include <sys/stat.h>

#include "coord-commit.h"
#include "manifest.h"
#include "util.h"

static char root[64];

static int setup(void **state) {
        strscpy(root, "/tmp/test-commit-XXXXXX", sizeof root);
        assert_non_null(mkdtemp(root));
        return 0;
}

static int teardown(void **state) {
        rm_rf(root);
        return 0;
}

static void path(char *buf, size_t size, const char *rel) {
        snprintf(buf, size, "%s/%s", root, rel);
}

static void make_dir(const char *rel) {
        char p[256];
        path(p, sizeof p, rel);
        assert_int_equal(mkdir_p(p, 0700), 0);
}

static void make_file(const char *rel, size_t size) {
        char p[256];
        path(p, sizeof p, rel);
        int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        assert_true(fd >= 0);
        assert_int_equal(ftruncate(fd, (off_t) size), 0);
        close(fd);
}

static bool exists(const char *rel) {
        char p[256];
        struct stat st;
        path(p, sizeof p, rel);
        return lstat(p, &st) == 0;
}

static int commit(uint64_t gen, size_t n, const uint64_t *sizes, int keep, char *err, size_t errsize) {
        struct coord_commit c = { .generation = gen, .time_usec = 1700000000000000ull, .n_images = n };
        strscpy(c.comp_id, "comp-1", sizeof c.comp_id);
        strscpy(c.ckptdir, root, sizeof c.ckptdir);
        char tmp[256];
        int r = coord_prepare_generation(root, gen, tmp, sizeof tmp, err, errsize);
        if (r < 0)
                return r;
        strscpy(c.tmpdir, tmp, sizeof c.tmpdir);
        struct manifest_image im[8] = {};
        for (size_t i = 0; i < n; i++) {
                snprintf(im[i].name, sizeof im[i].name, "img%zu", i);
                snprintf(im[i].upid, sizeof im[i].upid, "u%zu", i);
                strscpy(im[i].program, "prog", sizeof im[i].program);
                strscpy(im[i].host, "host", sizeof im[i].host);
                im[i].bytes = sizes[i];
                char rel[64];
                snprintf(rel, sizeof rel, ".gen-%06" PRIu64 ".tmp/img%zu", gen, i);
                make_file(rel, i == 1 && sizes[i] == 999 ? 5 : (size_t) sizes[i]);   /* 999: a lie */
        }
        c.images = im;
        r = coord_commit_generation(&c, "/opt/dmtcp/bin/dmtcp_restart", err, errsize);
        if (r == 0)
                r = coord_prune_generations(root, gen, keep);
        return r;
}

static void test_generations_and_prune(void **state) {
        char err[512];
        uint64_t newest;
        assert_int_equal(coord_newest_generation("/nonexistent/dir", &newest), 0);
        assert_int_equal(newest, 0);
        /* Decoys: never counted, never removed. */
        make_dir("gen-1");
        make_dir("gen-0000009");
        make_dir("gen-00000a");
        make_file("gen-000050", 1);             /* a file, not a directory */
        make_dir("gen-000003");                 /* incomplete: no MANIFEST */
        make_dir(".gen-000077.tmp/sub");        /* stale temporary */
        make_dir(".gen-000002.del/sub");        /* a removal cut short */
        assert_int_equal(coord_newest_generation(root, &newest), 0);
        assert_int_equal(newest, 3);

        const uint64_t sizes[] = { 10, 20 };
        for (uint64_t g = 4; g <= 7; g++) {
                assert_int_equal(commit(g, 2, sizes, 2, err, sizeof err), 0);
                char rel[32];
                snprintf(rel, sizeof rel, "gen-%06" PRIu64 "/MANIFEST", g);
                assert_true(exists(rel));
                assert_false(exists(".gen-000077.tmp"));
                assert_false(exists(".gen-000002.del"));
        }
        assert_false(exists("gen-000004"));
        assert_false(exists("gen-000005"));
        assert_false(exists(".gen-000004.del") || exists(".gen-000005.del"));
        assert_true(exists("gen-000006") && exists("gen-000007"));
        assert_true(exists("gen-1") && exists("gen-0000009") && exists("gen-00000a") && exists("gen-000050"));
        assert_true(exists("gen-000003"));      /* incomplete ones are not ours to prune */

        char p[256], link[64];
        path(p, sizeof p, "latest");
        ssize_t n = readlink(p, link, sizeof link - 1);
        assert_true(n > 0);
        link[n] = 0;
        assert_string_equal(link, "gen-000007");

        struct manifest m;
        path(p, sizeof p, "gen-000007/MANIFEST");
        assert_int_equal(manifest_read(p, &m), 0);
        assert_int_equal(m.generation, 7);
        assert_int_equal(m.n_images, 2);
        assert_int_equal(m.images[1].bytes, 20);
        assert_string_equal(m.computation, "comp-1");
        manifest_done(&m);

        struct stat st;
        path(p, sizeof p, COORD_RESTART_SCRIPT);
        assert_int_equal(stat(p, &st), 0);
        assert_int_equal(st.st_mode & 07777, 0700);
        char text[4096];
        assert_true(read_small_file(p, text, sizeof text) > 0);
        assert_non_null(strstr(text, "#!/bin/sh\n"));
        assert_non_null(strstr(text, "generation:  7"));
        assert_non_null(strstr(text, "[ -n \"${DMTCP_RESTART:-}\" ] || DMTCP_RESTART='/opt/dmtcp/bin/dmtcp_restart'\n"));
        assert_non_null(strstr(text, "exec \"$DMTCP_RESTART\" \"$@\" \"$dir\"\n"));
        /* Run it: it must exec the recorded path with our options and its directory. */
        char cmd[PATH_MAX * 2];
        snprintf(cmd, sizeof cmd, "env -u DMTCP_RESTART PATH=/usr/bin:/bin sh %s -p 5 2>&1", p);
        FILE *f = popen(cmd, "r");
        assert_non_null(f);
        char out[512] = "";
        size_t k = fread(out, 1, sizeof out - 1, f);
        out[k] = 0;
        pclose(f);
        assert_non_null(strstr(out, "/opt/dmtcp/bin/dmtcp_restart"));
        assert_null(strstr(out, "'/opt"));
        snprintf(cmd, sizeof cmd, "DMTCP_RESTART=echo sh %s -p 5", p);
        f = popen(cmd, "r");
        assert_non_null(f);
        k = fread(out, 1, sizeof out - 1, f);
        out[k] = 0;
        pclose(f);
        assert_non_null(strstr(out, "-p 5 /"));
}

static void test_commit_refuses_bad_images(void **state) {
        char err[512];
        const uint64_t sizes[] = { 10, 999 };
        assert_int_equal(commit(1, 2, sizes, 2, err, sizeof err), -EBADMSG);
        assert_non_null(strstr(err, "img1"));
        assert_non_null(strstr(err, "5 bytes, the process reported 999"));
        assert_false(exists("gen-000001"));
        assert_false(exists("latest"));
        assert_false(exists(COORD_RESTART_SCRIPT));

        /* A missing image. */
        struct coord_commit c = { .generation = 2, .n_images = 1 };
        struct manifest_image im = { .bytes = 1 };
        strscpy(im.name, "absent", sizeof im.name);
        c.images = &im;
        strscpy(c.ckptdir, root, sizeof c.ckptdir);
        assert_int_equal(coord_prepare_generation(root, 2, c.tmpdir, sizeof c.tmpdir, err, sizeof err), 0);
        assert_int_equal(coord_commit_generation(&c, "x", err, sizeof err), -ENOENT);
        assert_non_null(strstr(err, "image absent"));
        assert_non_null(strstr(err, "missing"));
}

static void test_names(void **state) {
        uint64_t g;
        assert_true(coord_gen_name_parse("gen-000123", &g));
        assert_int_equal(g, 123);
        assert_false(coord_gen_name_parse("gen-12345", &g));
        assert_false(coord_gen_name_parse("gen-1234567", &g));
        assert_false(coord_gen_name_parse("gen-00012x", &g));
        assert_false(coord_gen_name_parse("Gen-000123", &g));
        assert_false(coord_gen_name_parse(".gen-000123.tmp", &g));
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_generations_and_prune, setup, teardown),
                cmocka_unit_test_setup_teardown(test_commit_refuses_bad_images, setup, teardown),
                cmocka_unit_test(test_names),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
