/* Fuzz target of the job file parser: any input either parses or fails with
 * a message naming a line (or the missing COMMAND=); what parses is written
 * back by job_conf_format() and must read back to the same job. Built as a
 * libFuzzer binary with -Dfuzz=true (clang), and always as a test that runs
 * the seed corpus and deterministic mutations of it (fuzz-job-conf-main.c). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "job-conf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(x) do { if (!(x)) abort(); } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        struct job_conf c, d;
        char err[1024] = "";
        int r = job_conf_parse((const char *) data, size, &c, err, sizeof err);
        if (r < 0) {
                CHECK(r == -EINVAL || r == -ENOMEM);
                CHECK(r != -EINVAL || !strncmp(err, "line ", 5) || strstr(err, "no COMMAND= line"));
                CHECK(!c.argv && !c.working_directory);
                return 0;
        }
        CHECK(c.argc >= 1 && c.argv[0][0] && !c.argv[c.argc]);
        CHECK(!c.working_directory || c.working_directory[0] == '/');
        CHECK(c.keep >= 1 && c.keep <= JOB_MAX_KEEP && c.interval <= JOB_MAX_INTERVAL);
        char *text = NULL;
        ssize_t n = job_conf_format(&c, &text, err, sizeof err);
        CHECK(n > 0);
        CHECK(job_conf_parse(text, (size_t) n, &d, err, sizeof err) == 0);
        CHECK(d.argc == c.argc);
        for (size_t i = 0; i < c.argc; i++)
                CHECK(!strcmp(c.argv[i], d.argv[i]));
        CHECK((!c.working_directory && !d.working_directory) ||
              (c.working_directory && d.working_directory && !strcmp(c.working_directory, d.working_directory)));
        CHECK(c.interval == d.interval && c.keep == d.keep && c.checkpoint_on_stop == d.checkpoint_on_stop);
        free(text);
        job_conf_done(&c);
        job_conf_done(&d);
        return 0;
}
