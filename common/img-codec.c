/* The image's checksum and decompression, through libdeflate: the same
 * crc32 and raw deflate format as zlib (images written with zlib read
 * unchanged), with a crc32 that uses carry-less multiplication and an
 * inflater that decodes whole buffers, several times faster than zlib's
 * on this project's machines (bench/README.md). */
#include <libdeflate.h>

#include "img.h"

uint32_t img_crc32(uint32_t crc, const void *p, size_t len) {
        return libdeflate_crc32(crc, p, len);
}

int img_inflate(const void *src, size_t clen, void *dst, size_t ulen) {
        struct libdeflate_decompressor *d = libdeflate_alloc_decompressor();
        if (!d)
                return -ENOMEM;
        size_t used = 0;
        /* No actual_out: anything but exactly ulen bytes is an error. */
        enum libdeflate_result r = libdeflate_deflate_decompress_ex(d, src, clen, dst, ulen, &used, NULL);
        libdeflate_free_decompressor(d);
        return r == LIBDEFLATE_SUCCESS && used == clen ? 0 : -EBADMSG;
}
