/* cli/coord-start.c against the real coordinator: JOIN, NEW and ANY, port 0
 * with a port file, a taken port, a job's Unix socket, a remote host. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <cmocka.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "client.h"
#include "coord-start.h"
#include "util.h"

static char dir[64];
static const char *coordinator;

static int free_port(void) {
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        socklen_t l = sizeof a;
        assert_int_equal(bind(fd, (struct sockaddr *) &a, sizeof a), 0);
        assert_int_equal(getsockname(fd, (struct sockaddr *) &a, &l), 0);
        close(fd);
        return ntohs(a.sin_port);
}

/* Ask the coordinator at a to quit, and wait until it is gone. */
static void quit(const struct coord_addr *a) {
        struct proto_hello h = {};
        hello_fill_self(&h, PROTO_ROLE_COMMAND, "test");
        int fd = coord_join(a, &h, 5000, NULL, NULL, 0);
        assert_true(fd >= 0);
        struct proto_msg m;
        proto_init(&m, PROTO_COMMAND);
        m.u.command.op = PROTO_CMD_QUIT;
        assert_int_equal(proto_send(fd, &m), 0);
        assert_int_equal(proto_recv(fd, &m, 20000), 0);
        assert_int_equal(m.type, PROTO_RESULT);
        close(fd);
        for (int i = 0; i < 200 && coord_answers(a, 500); i++)
                usleep(20000);
        assert_false(coord_answers(a, 500));
}

static struct coord_start_opts opts(enum coord_start_mode mode, int port) {
        return (struct coord_start_opts) {
                .mode = mode, .port = port, .interval = -1, .coordinator = coordinator, .timeout_ms = 2000,
        };
}

static void test_join_needs_one(void **state) {
        struct coord_addr a;
        struct coord_start_opts o = opts(COORD_START_JOIN, free_port());
        assert_int_equal(coord_ensure(&o, &a), -ECONNREFUSED);
        o.port = 0;
        assert_int_equal(coord_ensure(&o, &a), -ECONNREFUSED);     /* port 0 without a port file */
}

static void test_new_port0_then_join_any_new(void **state) {
        char pf[128];
        snprintf(pf, sizeof pf, "%s/port", dir);
        struct coord_addr a, b;
        struct coord_start_opts o = opts(COORD_START_NEW, 0);
        o.port_file = pf;
        o.interval = 0;
        o.ckptdir = dir;
        assert_int_equal(coord_ensure(&o, &a), 1);
        assert_int_equal(a.kind, COORD_TCP);
        assert_true(a.port > 0);
        char buf[16];
        assert_true(read_small_file(pf, buf, sizeof buf) > 0);
        assert_int_equal(atoi(buf), a.port);

        o = opts(COORD_START_JOIN, 0);
        o.port_file = pf;
        assert_int_equal(coord_ensure(&o, &b), 0);               /* port 0 + port file: join it */
        assert_int_equal(b.port, a.port);

        o = opts(COORD_START_ANY, a.port);
        assert_int_equal(coord_ensure(&o, &b), 0);               /* answers: joined, not started */
        o = opts(COORD_START_NEW, a.port);
        assert_int_equal(coord_ensure(&o, &b), -EADDRINUSE);
        quit(&a);
}

static void test_any_starts_on_port(void **state) {
        struct coord_addr a;
        int port = free_port();
        struct coord_start_opts o = opts(COORD_START_ANY, port);
        assert_int_equal(coord_ensure(&o, &a), 1);
        assert_int_equal(a.port, port);
        assert_true(coord_answers(&a, 1000));
        quit(&a);
}

static void test_any_job_socket(void **state) {
        struct coord_addr a;
        struct coord_start_opts o = opts(COORD_START_ANY, -1);
        o.job = "startjob";
        assert_int_equal(coord_ensure(&o, &a), 1);
        assert_int_equal(a.kind, COORD_UNIX);
        char want[128];
        snprintf(want, sizeof want, "%s/rt/dmtcp/startjob.sock", dir);
        assert_string_equal(a.path, want);
        assert_int_equal(coord_ensure(&o, &a), 0);               /* now it answers */
        quit(&a);
}

static void test_cannot_start(void **state) {
        struct coord_addr a;
        struct coord_start_opts o = opts(COORD_START_ANY, 9);
        o.host = "192.0.2.1";                                     /* TEST-NET: never answers */
        o.timeout_ms = 200;
        assert_int_equal(coord_ensure(&o, &a), -ECONNREFUSED);    /* not ours to start there */
        o = opts(COORD_START_ANY, free_port());
        o.coordinator = "/nonexistent/dmtcp_coordinator";
        assert_int_equal(coord_ensure(&o, &a), -ENOENT);
}

int main(void) {
        coordinator = getenv("COORDINATOR");
        if (!coordinator) {
                fprintf(stderr, "COORDINATOR is not set\n");
                return 1;
        }
        strscpy(dir, "/tmp/test-coord-start-XXXXXX", sizeof dir);
        if (!mkdtemp(dir))
                return 1;
        char rt[128];
        snprintf(rt, sizeof rt, "%s/rt", dir);
        mkdir_p(rt, 0700);
        setenv("XDG_RUNTIME_DIR", rt, 1);
        setenv("TMPDIR", dir, 1);
        static const char *const clear[] = { "DMTCP_COORD_HOST", "DMTCP_COORD_PORT", "DMTCP_HOST", "DMTCP_PORT",
                                             "DMTCP_COORD_SOCKET", "DMTCP_CHECKPOINT_DIR" };
        for (size_t i = 0; i < ARRAY_SIZE(clear); i++)
                unsetenv(clear[i]);
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_join_needs_one),
                cmocka_unit_test(test_new_port0_then_join_any_new),
                cmocka_unit_test(test_any_starts_on_port),
                cmocka_unit_test(test_any_job_socket),
                cmocka_unit_test(test_cannot_start),
        };
        int r = cmocka_run_group_tests(tests, NULL, NULL);
        rm_rf(dir);
        return r;
}
