/* libFuzzer target for the wire protocol decoder: whatever
 * proto_frame_length and proto_decode accept must re-encode to the very same
 * bytes (the schema drives both directions, so they cannot drift apart). */
#include <assert.h>
#include <string.h>

#include "proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        static uint8_t again[PROTO_MAX_MESSAGE];
        struct proto_msg m;

        /* As a stream: frame after frame, as the coordinator reads them. */
        size_t off = 0;
        while (off < size) {
                int len = proto_frame_length(data + off, size - off);
                if (len <= 0)
                        break;
                assert(len >= PROTO_HEADER_SIZE && (size_t) len <= PROTO_MAX_MESSAGE);
                if ((size_t) len > size - off)
                        break;
                if (proto_decode(data + off, (size_t) len, &m) == 0) {
                        int n = proto_encode(&m, again, sizeof again);
                        assert(n == len);
                        assert(memcmp(again, data + off, (size_t) len) == 0);
                        struct proto_msg m2;
                        assert(proto_decode(again, (size_t) n, &m2) == 0);
                        assert(memcmp(&m, &m2, sizeof m) == 0);
                }
                off += (size_t) len;
        }
        /* As one message of exactly this size. */
        if (proto_decode(data, size, &m) == 0) {
                int n = proto_encode(&m, again, sizeof again);
                assert(n >= 0 && (size_t) n == size && memcmp(again, data, size) == 0);
        }
        return 0;
}
