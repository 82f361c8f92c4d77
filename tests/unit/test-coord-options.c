/* dmtcp_coordinator's option and environment parsing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <cmocka.h>

#include "coord-options.h"

static const char *const env_vars[] = {
        "DMTCP_COORD_PORT", "DMTCP_PORT", "DMTCP_CHECKPOINT_INTERVAL", "DMTCP_CHECKPOINT_DIR",
        "DMTCP_KEEP", "DMTCP_RESTART_TIMEOUT", "DMTCP_STOP_TIMEOUT",
};

static int clear_env(void **state) {
        for (size_t i = 0; i < sizeof env_vars / sizeof env_vars[0]; i++)
                unsetenv(env_vars[i]);
        return 0;
}

#define PARSE(o, err, ...) ({                                                   \
        char *_argv[] = { (char *) "dmtcp_coordinator", __VA_ARGS__, NULL };    \
        coord_parse_options((int) (sizeof _argv / sizeof _argv[0]) - 1, _argv, (o), (err), sizeof (err)); \
})

static void test_defaults(void **state) {
        struct coord_options o;
        char err[256];
        char *argv[] = { (char *) "dmtcp_coordinator", NULL };
        assert_int_equal(coord_parse_options(1, argv, &o, err, sizeof err), 0);
        assert_int_equal(o.port, 7779);
        assert_true(o.strict_uid);
        assert_false(o.daemonize || o.exit_on_last || o.quiet || o.interval_set || o.ckptdir_option);
        assert_int_equal(o.keep, 2);
        assert_int_equal(o.restart_timeout, 60);
        assert_int_equal(o.stop_timeout, 60);
        assert_int_equal(o.idle_timeout, 0);
        assert_string_equal(o.job, "");
        assert_string_equal(o.ckptdir, "");
}

static void test_all_options(void **state) {
        struct coord_options o;
        char err[256];
        assert_int_equal(PARSE(&o, err, "-p", "0", "--port-file", "/tmp/pf", "--bind", "0.0.0.0", "--daemon",
                               "--exit-on-last", "-i", "30", "--ckptdir", "/data/ck", "--keep", "5",
                               "--no-strict-uid-checking", "--job", "my.job_1", "--restart-timeout", "9",
                               "--idle-timeout", "20", "--stop-timeout", "0", "-q"), 0);
        assert_int_equal(o.port, 0);
        assert_string_equal(o.port_file, "/tmp/pf");
        assert_string_equal(o.bind, "0.0.0.0");
        assert_true(o.daemonize && o.exit_on_last && o.quiet && o.interval_set && o.ckptdir_option);
        assert_false(o.strict_uid);
        assert_int_equal(o.interval, 30);
        assert_string_equal(o.ckptdir, "/data/ck");
        assert_int_equal(o.keep, 5);
        assert_string_equal(o.job, "my.job_1");
        assert_int_equal(o.restart_timeout, 9);
        assert_int_equal(o.idle_timeout, 20);
        assert_int_equal(o.stop_timeout, 0);            /* no limit */
        assert_int_equal(PARSE(&o, err, "--port=1234", "--interval=0", "--help", "--version"), 0);
        assert_int_equal(o.port, 1234);
        assert_true(o.interval_set);
        assert_int_equal(o.interval, 0);
        assert_true(o.help && o.version);
}

static void test_relative_paths_made_absolute(void **state) {
        struct coord_options o;
        char err[256], cwd[4096];
        assert_non_null(getcwd(cwd, sizeof cwd));
        assert_int_equal(PARSE(&o, err, "--ckptdir", "ck", "--port-file", "pf"), 0);
        assert_true(o.ckptdir[0] == '/' && strstr(o.ckptdir, cwd) == o.ckptdir);
        assert_true(o.port_file[0] == '/');
}

static void test_environment(void **state) {
        struct coord_options o;
        char err[256];
        char *argv[] = { (char *) "dmtcp_coordinator", NULL };
        setenv("DMTCP_PORT", "1111", 1);
        assert_int_equal(coord_parse_options(1, argv, &o, err, sizeof err), 0);
        assert_int_equal(o.port, 1111);
        setenv("DMTCP_COORD_PORT", "2222", 1);          /* the newer name wins */
        setenv("DMTCP_CHECKPOINT_INTERVAL", "15", 1);
        setenv("DMTCP_CHECKPOINT_DIR", "/env/ck", 1);
        setenv("DMTCP_KEEP", "7", 1);
        setenv("DMTCP_RESTART_TIMEOUT", "3", 1);
        setenv("DMTCP_STOP_TIMEOUT", "4", 1);
        assert_int_equal(coord_parse_options(1, argv, &o, err, sizeof err), 0);
        assert_int_equal(o.port, 2222);
        assert_int_equal(o.interval, 15);
        assert_true(o.interval_set);
        assert_string_equal(o.ckptdir, "/env/ck");
        assert_false(o.ckptdir_option);                 /* a restart may move it */
        assert_int_equal(o.keep, 7);
        assert_int_equal(o.restart_timeout, 3);
        assert_int_equal(o.stop_timeout, 4);
        /* Options beat the environment. */
        assert_int_equal(PARSE(&o, err, "-p", "3333", "-i", "1", "--keep", "1", "--ckptdir", "/opt"), 0);
        assert_int_equal(o.port, 3333);
        assert_int_equal(o.interval, 1);
        assert_int_equal(o.keep, 1);
        assert_true(o.ckptdir_option);
        /* A bad environment value is an error naming the variable. */
        setenv("DMTCP_KEEP", "lots", 1);
        assert_int_equal(coord_parse_options(1, argv, &o, err, sizeof err), -EINVAL);
        assert_non_null(strstr(err, "DMTCP_KEEP"));
        unsetenv("DMTCP_KEEP");
        setenv("DMTCP_COORD_PORT", "99999", 1);
        assert_int_equal(coord_parse_options(1, argv, &o, err, sizeof err), -EINVAL);
        assert_non_null(strstr(err, "DMTCP_COORD_PORT"));
        clear_env(NULL);
}

static void test_errors(void **state) {
        static const struct { const char *a[4]; const char *needle; } cases[] = {
                { { "--bogus" }, "unknown option --bogus" },
                { { "-x" }, "unknown option -x" },
                { { "-p" }, "needs an argument" },
                { { "--port" }, "needs an argument" },
                { { "-p", "abc" }, "not a port number" },
                { { "-p", "65536" }, "not a port number" },
                { { "-p", "-1" }, "not a port number" },
                { { "-i", "1.5" }, "not a number of seconds" },
                { { "--keep", "0" }, "1..1000" },
                { { "--keep", "1001" }, "1..1000" },
                { { "--job", "a-b" }, "invalid job name" },
                { { "--job", "" }, "invalid job name" },
                { { "--job", "0123456789012345678901234567890123456789012345678901234567890123456789" }, "invalid job name" },
                { { "--restart-timeout", "0" }, ">= 1" },
                { { "--idle-timeout", "0" }, ">= 1" },
                { { "--stop-timeout", "-5" }, "0: no limit" },
                { { "--port-file", "" }, "needs a file name" },
                { { "--ckptdir", "" }, "needs a directory" },
                { { "--bind", "" }, "needs an address" },
                { { "stray" }, "unexpected argument 'stray'" },
        };
        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
                char *argv[6] = { (char *) "dmtcp_coordinator" };
                int argc = 1;
                for (int k = 0; k < 4 && cases[i].a[k]; k++)
                        argv[argc++] = (char *) cases[i].a[k];
                struct coord_options o;
                char err[256] = "";
                assert_int_equal(coord_parse_options(argc, argv, &o, err, sizeof err), -EINVAL);
                if (!strstr(err, cases[i].needle))
                        fail_msg("case %zu (%s): message '%s' lacks '%s'", i, cases[i].a[0], err, cases[i].needle);
                assert_null(strchr(err, '\n'));         /* one line */
        }
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup(test_defaults, clear_env),
                cmocka_unit_test_setup(test_all_options, clear_env),
                cmocka_unit_test_setup(test_relative_paths_made_absolute, clear_env),
                cmocka_unit_test_setup(test_environment, clear_env),
                cmocka_unit_test_setup(test_errors, clear_env),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
