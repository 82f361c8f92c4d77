/* The image writer's interface (write.c). */
#pragma once

#include "rt.h"

struct wr_request {
        int fd;                         /* the image file, empty, open for writing */
        const struct rt_capture *cap;
        const struct img_thread *threads;
        uint32_t n_threads;
        bool gzip;
        uint64_t generation;
        uint64_t ckpt_time_usec;
        uint32_t members;
        pid_t pid, ppid, pgid, sid;
        const char *comp_id;
};

struct wr_result {
        uint64_t size;                  /* bytes in the image file */
        uint32_t crc;                   /* header crc: the image's checksum */
        uint64_t mem_bytes;
        bool reported;                  /* the snapshot writer sent PHASE_DONE(WRITE) itself */
        char err[256];
};

int rt_write_image(const struct wr_request *req, struct wr_result *res);
