/* The job file of a per-user systemd job (DESIGN.md, Files; dmtcp@.service(5)):
 * $XDG_CONFIG_HOME/dmtcp/NAME.conf, read by our own parser, never by
 * systemd's EnvironmentFile= (which strips quotes and splits on blanks).
 *
 *     # comment
 *     COMMAND=./simulate --days 30 --title 'two words'
 *     WORKING_DIRECTORY=/home/me/sim
 *     INTERVAL=3600
 *     CHECKPOINT_ON_STOP=yes
 *     KEEP=2
 *
 * Every value is written as shell words; COMMAND takes one or more, the
 * other keys exactly one. Quoting is POSIX sh's ('...', "...", backslash),
 * but nothing is ever expanded: a character a shell would expand or
 * interpret ($ ` * ? [ | & ; < > ( ), a leading ~ or #) is an error unless
 * quoted, so that a file means the same to a reader and to us. An unknown
 * key, a key given twice or a bad value is an error naming the line. */
#pragma once

#include "macro.h"

#define JOB_CONF_MAX_SIZE      (64u * 1024u)
#define JOB_CONF_MAX_WORDS     4096u
#define JOB_DEFAULT_INTERVAL   3600u
#define JOB_MAX_INTERVAL       (10u * 365u * 24u * 3600u)
#define JOB_MAX_KEEP           1000

struct job_conf {
        char **argv;                    /* COMMAND words, NULL-terminated */
        size_t argc;
        char *working_directory;        /* absolute; NULL = not given (the home directory) */
        uint32_t interval;              /* seconds, 0 = no periodic checkpoints */
        bool checkpoint_on_stop;
        int keep;                       /* complete checkpoints kept */
};

/* Defaults for every key but COMMAND. */
void job_conf_init(struct job_conf *c);
void job_conf_done(struct job_conf *c);

/* Parse the text of a job file. Returns 0, or -EINVAL (or -ENOMEM) with a
 * one-line explanation starting "line N: " in err. */
int job_conf_parse(const char *text, size_t len, struct job_conf *c, char *err, size_t errsize);

/* Read and parse a job file: -errno of open/read (err says which file),
 * -EFBIG over JOB_CONF_MAX_SIZE, or job_conf_parse's errors. */
int job_conf_load(const char *path, struct job_conf *c, char *err, size_t errsize);

/* The text of a job file for c (allocated). Returns its length or -errno;
 * -EINVAL (with err) when a value cannot be written (a control character). */
ssize_t job_conf_format(const struct job_conf *c, char **ret, char *err, size_t errsize);

/* Split one value into shell words as the parser does (allocated,
 * NULL-terminated). Returns the number of words or -EINVAL with err. */
int job_split_words(const char *s, char ***ret, char *err, size_t errsize);

/* Append s to buf as one shell word that job_split_words reads back as s
 * (bare when only safe characters, else single-quoted). Returns -EINVAL for
 * a control character, -ENOBUFS when buf is too small. */
int job_quote_word(const char *s, char *buf, size_t size);

void job_strv_free(char **v);
