/* common/manifest: format, parse back, refuse malformed text. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <cmocka.h>

#include "manifest.h"
#include "util.h"

static void test_roundtrip_with_escapes(void **state) {
        struct manifest_image im[3] = {};
        strscpy(im[0].name, "ckpt_a_1.dmtcp", sizeof im[0].name);
        im[0].bytes = 123456789012ull;
        im[0].crc = 0x0000abcd;
        strscpy(im[0].upid, "u-1", sizeof im[0].upid);
        strscpy(im[0].program, "my prog%x", sizeof im[0].program);   /* space and percent */
        strscpy(im[0].host, "h\xc3\xa9", sizeof im[0].host);          /* non-ASCII */
        strscpy(im[1].name, "b", sizeof im[1].name);
        strscpy(im[1].upid, "-", sizeof im[1].upid);                  /* the empty marker itself */
        /* im[1].program and host stay empty */
        strscpy(im[2].name, "c", sizeof im[2].name);
        im[2].crc = 0xffffffff;
        struct manifest m = { .generation = 42, .time_usec = 1700000000123456ull, .images = im, .n_images = 3 };
        strscpy(m.computation, "host-12-abc", sizeof m.computation);

        char *text = NULL;
        ssize_t n = manifest_format(&m, &text);
        assert_true(n > 0);
        assert_non_null(strstr(text, "dmtcp-manifest 1\ncomputation host-12-abc\ngeneration 42\n"));
        assert_non_null(strstr(text, "processes 3\n"));
        assert_non_null(strstr(text, "image ckpt_a_1.dmtcp 123456789012 0000abcd u-1 my%20prog%25x h%C3%A9\n"));
        assert_non_null(strstr(text, "image b 0 00000000 %2D - -\n"));
        assert_true(n >= 4 && !strcmp(text + n - 4, "end\n"));

        struct manifest p;
        assert_int_equal(manifest_parse(text, (size_t) n, &p), 0);
        assert_string_equal(p.computation, m.computation);
        assert_int_equal(p.generation, 42);
        assert_int_equal(p.time_usec, m.time_usec);
        assert_int_equal(p.n_images, 3);
        for (size_t i = 0; i < 3; i++) {
                assert_string_equal(p.images[i].name, im[i].name);
                assert_int_equal(p.images[i].bytes, im[i].bytes);
                assert_int_equal(p.images[i].crc, im[i].crc);
                assert_string_equal(p.images[i].upid, im[i].upid);
                assert_string_equal(p.images[i].program, im[i].program);
                assert_string_equal(p.images[i].host, im[i].host);
        }
        manifest_done(&p);
        free(text);
}

static void test_refusals(void **state) {
        static const char *const bad[] = {
                "",
                "dmtcp-manifest 2\ncomputation c\ngeneration 1\ntime 1\nprocesses 0\nend\n",
                "dmtcp-manifest 1\ncomputation c\ngeneration 1\ntime 1\nprocesses 0\n",            /* no end */
                "dmtcp-manifest 1\ncomputation c\ngeneration 1\ntime 1\nprocesses 0\nend",          /* no newline */
                "dmtcp-manifest 1\ncomputation c\ngeneration 1\ntime 1\nprocesses 0\nend\nx\n",     /* after end */
                "dmtcp-manifest 1\ncomputation c\ngeneration x\ntime 1\nprocesses 0\nend\n",
                "dmtcp-manifest 1\ncomputation c\ngeneration 1\ntime 1\nprocesses 2\nimage a 1 00000000 u p h\nend\n",
                "dmtcp-manifest 1\ncomputation c\ngeneration 1\ntime 1\nprocesses 1\nimage a 1 0000000 u p h\nend\n",
                "dmtcp-manifest 1\ncomputation c\ngeneration 1\ntime 1\nprocesses 1\nimage a 1 0000000g u p h\nend\n",
                "dmtcp-manifest 1\ncomputation c\ngeneration 1\ntime 1\nprocesses 1\nimage a/b 1 00000000 u p h\nend\n",
                "dmtcp-manifest 1\ncomputation c\ngeneration 1\ntime 1\nprocesses 1\nimage .. 1 00000000 u p h\nend\n",
                "dmtcp-manifest 1\ncomputation c\ngeneration 1\ntime 1\nprocesses 1\nimage a 1 00000000 u p\nend\n",
                "dmtcp-manifest 1\ncomputation c\ngeneration 1\ntime 1\nprocesses 1\nimage a 1 00000000 u%0 p h\nend\n",
                "dmtcp-manifest 1\ncomputation c\ngeneration 1\ntime 1\nprocesses 1\nimage a 1 00000000 u%00 p h\nend\n",
                "dmtcp-manifest 1\ncomputation c\ngeneration 1\ntime 1\nprocesses 1\nimage a  1 00000000 u p h\nend\n",
                "dmtcp-manifest 1\ncomputation c d\ngeneration 1\ntime 1\nprocesses 0\nend\n",
                "dmtcp-manifest 1\ngeneration 1\ncomputation c\ntime 1\nprocesses 0\nend\n",        /* order */
                "dmtcp-manifest 1\ncomputation c\ngeneration 1\ntime 1\nprocesses 0\nend \n",
                "dmtcp-manifest 1\ncomputation c\ngeneration 1\ntime 1\nprocesses 9999999999\nend\n",
        };
        for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
                struct manifest m;
                int r = manifest_parse(bad[i], strlen(bad[i]), &m);
                if (r != -EBADMSG)
                        fail_msg("case %zu parsed (%d): %s", i, r, bad[i]);
                assert_null(m.images);
        }
        struct manifest m;
        const char *ok = "dmtcp-manifest 1\ncomputation -\ngeneration 0\ntime 0\nprocesses 0\nend\n";
        assert_int_equal(manifest_parse(ok, strlen(ok), &m), 0);
        assert_string_equal(m.computation, "");
        manifest_done(&m);
}

static void test_read_file(void **state) {
        char dir[] = "/tmp/test-manifest-XXXXXX";
        assert_non_null(mkdtemp(dir));
        char path[256];
        snprintf(path, sizeof path, "%s/MANIFEST", dir);
        struct manifest m;
        assert_int_equal(manifest_read(path, &m), -ENOENT);
        const char *t = "dmtcp-manifest 1\ncomputation c\ngeneration 3\ntime 5\nprocesses 1\nimage i 10 0000000a u p h\nend\n";
        assert_int_equal(write_file_atomic(path, t, strlen(t), 0600), 0);
        assert_int_equal(manifest_read(path, &m), 0);
        assert_int_equal(m.images[0].crc, 10);
        manifest_done(&m);
        assert_true(manifest_image_name_ok("ckpt_x.dmtcp"));
        assert_false(manifest_image_name_ok("."));
        assert_false(manifest_image_name_ok("a/b"));
        assert_int_equal(rm_rf(dir), 0);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_roundtrip_with_escapes),
                cmocka_unit_test(test_refusals),
                cmocka_unit_test(test_read_file),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
