/* The MANIFEST of a checkpoint generation (docs/checkpoint-dir.md).
 *
 * Written by the coordinator as the last file of CKPTDIR/.gen-NNNNNN.tmp/
 * before the directory is renamed to gen-NNNNNN; read by the coordinator (to
 * name the processes a restart is waiting for) and by dmtcp_restart (to know
 * the images of a generation). Text, one record per line:
 *
 *     dmtcp-manifest 1
 *     computation <id>
 *     generation <n>
 *     time <realtime usec>
 *     processes <n>
 *     image <name> <bytes> <crc, 8 hex digits> <upid> <program> <host>   (n lines)
 *     end
 *
 * Fields never contain spaces: bytes outside 0x21..0x7e and '%' are written
 * as %XX, an empty field as "-" (and a field that is exactly "-" as %2D).
 * These functions allocate (the image array, the formatted text); the
 * injected runtime does not use them. */
#pragma once

#include "macro.h"
#include "proto.h"

#define MANIFEST_NAME        "MANIFEST"
#define MANIFEST_MAX_SIZE    (64u * 1024u * 1024u)
#define MANIFEST_MAX_IMAGES  (1u << 20)
#define MANIFEST_IMAGE_NAME_MAX 255

struct manifest_image {
        char name[MANIFEST_IMAGE_NAME_MAX + 1];  /* file name inside the generation directory */
        uint64_t bytes;
        uint32_t crc;
        char upid[PROTO_ID_MAX + 1];
        char program[PROTO_NAME_MAX + 1];
        char host[PROTO_HOST_MAX + 1];
};

struct manifest {
        char computation[PROTO_ID_MAX + 1];
        uint64_t generation;
        uint64_t time_usec;
        struct manifest_image *images;
        size_t n_images;
};

/* Format m as text (allocated, NUL-terminated). Returns the length or -errno. */
ssize_t manifest_format(const struct manifest *m, char **ret);

/* Parse text of len bytes. The whole text must be a well-formed manifest
 * (header, "processes" equal to the number of image lines, "end" last).
 * Returns 0 or -EBADMSG (malformed), -ENOMEM. On success m owns an array
 * to be released with manifest_done(). */
int manifest_parse(const char *text, size_t len, struct manifest *m);

/* Read and parse a MANIFEST file. -errno of the open/read, -EFBIG when it is
 * over MANIFEST_MAX_SIZE, or manifest_parse's errors. */
int manifest_read(const char *path, struct manifest *m);

/* Is name a plain file name usable inside a generation directory: not empty,
 * not "." or "..", no '/', at most MANIFEST_IMAGE_NAME_MAX bytes. */
bool manifest_image_name_ok(const char *name);

void manifest_done(struct manifest *m);
