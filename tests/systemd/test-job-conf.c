/* cmocka tests of the job file parser (cli/dmtcpctl/job-conf.c), its quoting
 * and the job paths: good files, every kind of bad input (each error must
 * name its line), and round trips of what dmtcpctl writes. */
#include <fcntl.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>
#include <cmocka.h>

#include "job-conf.h"
#include "job-paths.h"
#include "util.h"

static int parse(const char *text, struct job_conf *c, char *err, size_t size) {
        return job_conf_parse(text, strlen(text), c, err, size);
}

static void test_full_file(void **state) {
        const char *text =
                "# a job\n"
                "\n"
                "   # indented comment\n"
                "COMMAND=/usr/bin/sim --days 30 'two words' \"dq \\\"x\\\" \\$HOME\" back\\ slash '' end\n"
                "WORKING_DIRECTORY='/home/me/my sims'\n"
                "INTERVAL=600\n"
                "CHECKPOINT_ON_STOP=no\n"
                "KEEP=7\n";
        struct job_conf c;
        char err[512] = "";
        assert_int_equal(parse(text, &c, err, sizeof err), 0);
        assert_int_equal(c.argc, 8);
        const char *want[] = { "/usr/bin/sim", "--days", "30", "two words", "dq \"x\" $HOME", "back slash", "", "end" };
        for (size_t i = 0; i < c.argc; i++)
                assert_string_equal(c.argv[i], want[i]);
        assert_null(c.argv[c.argc]);
        assert_string_equal(c.working_directory, "/home/me/my sims");
        assert_int_equal(c.interval, 600);
        assert_false(c.checkpoint_on_stop);
        assert_int_equal(c.keep, 7);
        job_conf_done(&c);
}

static void test_defaults(void **state) {
        struct job_conf c;
        char err[512];
        assert_int_equal(parse("COMMAND=prog", &c, err, sizeof err), 0);  /* no final newline */
        assert_int_equal(c.argc, 1);
        assert_string_equal(c.argv[0], "prog");
        assert_null(c.working_directory);
        assert_int_equal(c.interval, JOB_DEFAULT_INTERVAL);
        assert_true(c.checkpoint_on_stop);
        assert_int_equal(c.keep, 2);
        job_conf_done(&c);
}

static void test_literal_where_a_shell_would_not_expand(void **state) {
        struct job_conf c;
        char err[512];
        assert_int_equal(parse("COMMAND=a#b x~y '$HOME' '*.dat' \\* \"a|b;c&d\" k=v {x,y} ! ^\n", &c, err, sizeof err), 0);
        const char *want[] = { "a#b", "x~y", "$HOME", "*.dat", "*", "a|b;c&d", "k=v", "{x,y}", "!", "^" };
        assert_int_equal(c.argc, ARRAY_SIZE(want));
        for (size_t i = 0; i < c.argc; i++)
                assert_string_equal(c.argv[i], want[i]);
        job_conf_done(&c);
        assert_int_equal(parse("COMMAND=\"a\"'b'c\\d \"\\q\"\n", &c, err, sizeof err), 0);
        assert_int_equal(c.argc, 2);
        assert_string_equal(c.argv[0], "abcd");
        assert_string_equal(c.argv[1], "\\q");  /* POSIX: a backslash stays before other characters in "..." */
        job_conf_done(&c);
        /* Booleans as systemd spells them. */
        assert_int_equal(parse("COMMAND=x\nCHECKPOINT_ON_STOP=yes\n", &c, err, sizeof err), 0);
        assert_true(c.checkpoint_on_stop);
        job_conf_done(&c);
        assert_int_equal(parse("COMMAND=x\nCHECKPOINT_ON_STOP=false\nINTERVAL=0\nKEEP=1000\n", &c, err, sizeof err), 0);
        assert_false(c.checkpoint_on_stop);
        assert_int_equal(c.interval, 0);
        assert_int_equal(c.keep, 1000);
        job_conf_done(&c);
}

struct bad {
        const char *text;
        const char *want;       /* substring of the error */
};

static void test_bad_input(void **state) {
        static const struct bad bad[] = {
                { "COMMAND=x\nFOO=1\n", "line 2: unknown key FOO" },
                { "COMMAND=x\ncommand=y\n", "line 2: unknown key command" },
                { "COMMAND=x\nCOMMAND=y\n", "line 2: COMMAND= given again (first on line 1)" },
                { "\n\nCOMMAND x\n", "line 3: expected KEY=VALUE" },
                { "COMMAND =x\n", "line 1: expected KEY=VALUE" },
                { "=x\n", "line 1: expected KEY=VALUE" },
                { "COMMAND=\n", "line 1: COMMAND= needs a value" },
                { "COMMAND=   \n", "line 1: COMMAND= needs a value" },
                { "COMMAND='' x\n", "line 1: COMMAND= starts with an empty program name" },
                { "COMMAND=x\nINTERVAL=-1\n", "line 2: INTERVAL=-1 is not a number of seconds" },
                { "COMMAND=x\nINTERVAL=1h\n", "line 2: INTERVAL=1h is not a number of seconds" },
                { "COMMAND=x\nINTERVAL=315360001\n", "line 2: INTERVAL=315360001" },
                { "COMMAND=x\nINTERVAL=99999999999999999999\n", "line 2: INTERVAL=" },
                { "COMMAND=x\nINTERVAL=1 2\n", "line 2: INTERVAL= takes one value" },
                { "COMMAND=x\nKEEP=0\n", "line 2: KEEP=0 is not a number of checkpoints from 1 to 1000" },
                { "COMMAND=x\nKEEP=1001\n", "line 2: KEEP=1001" },
                { "COMMAND=x\nKEEP=two\n", "line 2: KEEP=two" },
                { "COMMAND=x\nCHECKPOINT_ON_STOP=maybe\n", "line 2: CHECKPOINT_ON_STOP=maybe is not yes or no" },
                { "COMMAND=x\nWORKING_DIRECTORY=rel/dir\n", "line 2: WORKING_DIRECTORY=rel/dir is not an absolute path" },
                { "COMMAND=x\nWORKING_DIRECTORY=~/sim\n", "line 2: WORKING_DIRECTORY= '~' would be the home directory" },
                { "COMMAND=x\nWORKING_DIRECTORY=/a b\n", "line 2: WORKING_DIRECTORY= takes one value" },
                { "COMMAND=x 'open\n", "line 1: COMMAND= a quote ' is not closed" },
                { "COMMAND=x \"open\n", "line 1: COMMAND= a quote \" is not closed" },
                { "COMMAND=x \\\n", "line 1: COMMAND= a backslash ends the line" },
                { "COMMAND=echo $HOME\n", "line 1: COMMAND= '$' would expand a variable" },
                { "COMMAND=echo \"$HOME\"\n", "'$' inside \"...\" would expand a variable" },
                { "COMMAND=echo `id`\n", "'`' would run a command" },
                { "COMMAND=echo \"`id`\"\n", "'`' inside \"...\"" },
                { "COMMAND=ls *.dat\n", "'*' would be a wildcard" },
                { "COMMAND=ls file?\n", "'?' would be a wildcard" },
                { "COMMAND=ls [ab]\n", "'[' would be a wildcard" },
                { "COMMAND=a | b\n", "'|' would start a pipe" },
                { "COMMAND=a && b\n", "'&' would end the command" },
                { "COMMAND=a; b\n", "';' would end the command" },
                { "COMMAND=a > out\n", "'>' would redirect" },
                { "COMMAND=a <in\n", "'<' would redirect" },
                { "COMMAND=(a)\n", "'(' would start a subshell" },
                { "COMMAND=a ~/x\n", "'~' would be the home directory" },
                { "COMMAND=a #comment\n", "'#' would start a comment" },
                { "COMMAND=a\x01" "b\n", "control character 0x01" },
                { "COMMAND='a\x1b'\n", "control character 0x1b" },
                { "COMMAND=a\r\n", "line 1: ends with a carriage return" },
                { "", "no COMMAND= line" },
                { "# only a comment\n\n", "no COMMAND= line" },
                { "KEEP=3\n", "no COMMAND= line" },
        };
        for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
                struct job_conf c;
                char err[512] = "";
                int r = parse(bad[i].text, &c, err, sizeof err);
                if (r != -EINVAL || !strstr(err, bad[i].want))
                        fail_msg("case %zu (%s): got %d \"%s\", wanted -EINVAL with \"%s\"", i, bad[i].text, r, err,
                                 bad[i].want);
                assert_null(c.argv);
                assert_null(c.working_directory);
        }
}

static void test_nul_byte(void **state) {
        static const char text[] = "COMMAND=x\nKEEP=2\0junk\n";
        struct job_conf c;
        char err[512] = "";
        assert_int_equal(job_conf_parse(text, sizeof text - 1, &c, err, sizeof err), -EINVAL);
        assert_non_null(strstr(err, "line 2: a NUL byte"));
}

static void test_words_limit(void **state) {
        size_t n = JOB_CONF_MAX_WORDS + 10;
        char *text = malloc(n * 2 + 16);
        assert_non_null(text);
        strcpy(text, "COMMAND=");
        for (size_t i = 0; i < n; i++)
                strcat(text, "a ");
        struct job_conf c;
        char err[512] = "";
        assert_int_equal(parse(text, &c, err, sizeof err), -EINVAL);
        assert_non_null(strstr(err, "more than"));
        free(text);
}

static void roundtrip(char **args, size_t n, const char *wd) {
        struct job_conf c;
        job_conf_init(&c);
        c.argv = args;
        c.argc = n;
        c.working_directory = (char *) wd;
        c.interval = 42;
        c.keep = 3;
        c.checkpoint_on_stop = false;
        char *text = NULL, err[512] = "";
        ssize_t len = job_conf_format(&c, &text, err, sizeof err);
        assert_true(len > 0);
        struct job_conf d;
        if (job_conf_parse(text, (size_t) len, &d, err, sizeof err) < 0)
                fail_msg("cannot read back %s: %s", text, err);
        assert_int_equal(d.argc, n);
        for (size_t i = 0; i < n; i++)
                assert_string_equal(d.argv[i], args[i]);
        if (wd)
                assert_string_equal(d.working_directory, wd);
        else
                assert_null(d.working_directory);
        assert_int_equal(d.interval, 42);
        assert_int_equal(d.keep, 3);
        assert_false(d.checkpoint_on_stop);
        job_conf_done(&d);
        free(text);
}

static void test_roundtrip(void **state) {
        char *args[] = { "/bin/prog", "", "it's", "\"q\"", "$HOME", "`x`", "a b\tc", "*?[", "~", "#", "\\", "'", "''",
                         "ünïcødé", "--opt=a,b:c@d%e+f", NULL };
        roundtrip(args, ARRAY_SIZE(args) - 1, "/home/me/dir with 'quotes'");
        roundtrip(args, 1, NULL);
        /* Random printable strings. */
        srand(12345);
        for (int round = 0; round < 500; round++) {
                char *v[8];
                size_t n = 1 + (size_t) (rand() % 7);
                for (size_t i = 0; i < n; i++) {
                        size_t l = (size_t) (rand() % 12) + (i == 0);
                        v[i] = malloc(l + 1);
                        for (size_t k = 0; k < l; k++) {
                                int ch = 0x20 + rand() % 0x5f;
                                if (rand() % 10 == 0)
                                        ch = 0xc3;  /* bytes above 0x7f pass through */
                                v[i][k] = (char) ch;
                        }
                        v[i][l] = 0;
                        if (i == 0 && !v[0][0])
                                v[0][0] = 'x';
                }
                roundtrip(v, n, "/");
                for (size_t i = 0; i < n; i++)
                        free(v[i]);
        }
}

static void test_format_refuses_control_characters(void **state) {
        char *args[] = { "/bin/prog", "line\nbreak", NULL };
        struct job_conf c;
        job_conf_init(&c);
        c.argv = args;
        c.argc = 2;
        char *text = NULL, err[512] = "";
        assert_int_equal(job_conf_format(&c, &text, err, sizeof err), -EINVAL);
        assert_non_null(strstr(err, "argument 1"));
        assert_null(text);
}

static void test_quote_word(void **state) {
        char buf[64] = "";
        assert_int_equal(job_quote_word("plain-word_1.2/x", buf, sizeof buf), 0);
        assert_string_equal(buf, "plain-word_1.2/x");
        buf[0] = 0;
        assert_int_equal(job_quote_word("it's", buf, sizeof buf), 0);
        assert_string_equal(buf, "'it'\\''s'");
        buf[0] = 0;
        assert_int_equal(job_quote_word("", buf, sizeof buf), 0);
        assert_string_equal(buf, "''");
        buf[0] = 0;
        assert_int_equal(job_quote_word("a\x7f", buf, sizeof buf), -EINVAL);
        char small[4] = "";
        assert_int_equal(job_quote_word("abcdef", small, sizeof small), -ENOBUFS);
}

static void test_load(void **state) {
        char dir[] = "/tmp/dmtcp-job-conf-XXXXXX";
        assert_non_null(mkdtemp(dir));
        char p[PATH_MAX], err[1024];
        struct job_conf c;
        snprintf(p, sizeof p, "%s/none.conf", dir);
        assert_int_equal(job_conf_load(p, &c, err, sizeof err), -ENOENT);
        assert_non_null(strstr(err, "none.conf"));
        /* A directory. */
        assert_int_equal(job_conf_load(dir, &c, err, sizeof err), -EINVAL);
        /* Too big. */
        snprintf(p, sizeof p, "%s/big.conf", dir);
        size_t n = JOB_CONF_MAX_SIZE + 1;
        char *big = malloc(n);
        memset(big, '#', n);
        assert_int_equal(write_file_atomic(p, big, n, 0600), 0);
        free(big);
        assert_int_equal(job_conf_load(p, &c, err, sizeof err), -EFBIG);
        /* Errors name the file and the line. */
        snprintf(p, sizeof p, "%s/bad.conf", dir);
        const char *text = "COMMAND=x\nKEEP=0\n";
        assert_int_equal(write_file_atomic(p, text, strlen(text), 0600), 0);
        assert_int_equal(job_conf_load(p, &c, err, sizeof err), -EINVAL);
        assert_non_null(strstr(err, "bad.conf line 2: KEEP=0"));
        snprintf(p, sizeof p, "%s/good.conf", dir);
        text = "COMMAND=x y\n";
        assert_int_equal(write_file_atomic(p, text, strlen(text), 0600), 0);
        assert_int_equal(job_conf_load(p, &c, err, sizeof err), 0);
        assert_int_equal(c.argc, 2);
        job_conf_done(&c);
        assert_int_equal(rm_rf(dir), 0);
}

static void test_names_and_paths(void **state) {
        assert_true(job_name_ok("sim"));
        assert_true(job_name_ok("a.b_C9"));
        assert_false(job_name_ok("."));
        assert_false(job_name_ok(".."));
        assert_false(job_name_ok(".hidden"));
        assert_false(job_name_ok("a-b"));
        assert_false(job_name_ok("a/b"));
        assert_false(job_name_ok(""));
        assert_false(job_name_ok("0123456789012345678901234567890123456789012345678901234567890123456789"));
        char buf[PATH_MAX];
        setenv("HOME", "/home/u", 1);
        unsetenv("XDG_CONFIG_HOME");
        unsetenv("XDG_STATE_HOME");
        assert_int_equal(job_conf_path("sim", buf, sizeof buf), 0);
        assert_string_equal(buf, "/home/u/.config/dmtcp/sim.conf");
        assert_int_equal(job_state_dir("sim", buf, sizeof buf), 0);
        assert_string_equal(buf, "/home/u/.local/state/dmtcp/sim");
        setenv("XDG_CONFIG_HOME", "/cfg", 1);
        setenv("XDG_STATE_HOME", "/st", 1);
        assert_int_equal(job_conf_path("sim", buf, sizeof buf), 0);
        assert_string_equal(buf, "/cfg/dmtcp/sim.conf");
        assert_int_equal(job_state_dir("sim", buf, sizeof buf), 0);
        assert_string_equal(buf, "/st/dmtcp/sim");
        /* Relative XDG values are ignored (XDG base directory spec). */
        setenv("XDG_CONFIG_HOME", "relative", 1);
        assert_int_equal(job_conf_path("sim", buf, sizeof buf), 0);
        assert_string_equal(buf, "/home/u/.config/dmtcp/sim.conf");
        assert_int_equal(job_unit_name("sim", buf, sizeof buf), 0);
        assert_string_equal(buf, "dmtcp@sim.service");
        assert_int_equal(job_coord_socket_name("sim", buf, sizeof buf), 0);
        assert_string_equal(buf, "dmtcp-coordinator@sim.socket");
        char small[8];
        assert_int_equal(job_conf_path("sim", small, sizeof small), -ENAMETOOLONG);
}

static void test_generations(void **state) {
        char dir[] = "/tmp/dmtcp-gens-XXXXXX", p[PATH_MAX];
        assert_non_null(mkdtemp(dir));
        uint64_t *g = NULL;
        assert_int_equal(job_list_generations(dir, &g), 0);
        assert_false(job_dir_has_images(dir));
        const char *names[] = { "gen-000010", "gen-000002", "gen-123456", ".gen-000011.tmp", "gen-12", "gen-00000x",
                                "latest-not" };
        for (size_t i = 0; i < ARRAY_SIZE(names); i++) {
                snprintf(p, sizeof p, "%s/%s", dir, names[i]);
                assert_int_equal(mkdir(p, 0700), 0);
        }
        int n = job_list_generations(dir, &g);
        assert_int_equal(n, 3);
        assert_int_equal(g[0], 2);
        assert_int_equal(g[1], 10);
        assert_int_equal(g[2], 123456);
        free(g);
        assert_true(job_dir_has_images(dir));
        snprintf(p, sizeof p, "%s/nonexistent", dir);
        assert_int_equal(job_list_generations(p, &g), 0);
        assert_int_equal(rm_rf(dir), 0);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_full_file),
                cmocka_unit_test(test_defaults),
                cmocka_unit_test(test_literal_where_a_shell_would_not_expand),
                cmocka_unit_test(test_bad_input),
                cmocka_unit_test(test_nul_byte),
                cmocka_unit_test(test_words_limit),
                cmocka_unit_test(test_roundtrip),
                cmocka_unit_test(test_format_refuses_control_characters),
                cmocka_unit_test(test_quote_word),
                cmocka_unit_test(test_load),
                cmocka_unit_test(test_names_and_paths),
                cmocka_unit_test(test_generations),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
