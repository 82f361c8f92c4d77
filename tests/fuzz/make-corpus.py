#!/usr/bin/env python3
"""Regenerate the seed corpus of fuzz-proto (tests/fuzz/corpus-proto/):
a few valid messages of every shape, streams of several, and invalid ones
(bad magic, version, type, length, reserved bits, truncation, trailing
bytes, control characters). Encodes the wire format of common/proto.h."""
import os
import struct
import sys

MAGIC = 0x504D5444


def msg(t, payload, version=1, reserved=0, length=None):
    return struct.pack("<IHHII", MAGIC, version, t, len(payload) if length is None else length, reserved) + payload


def s(x):
    b = x.encode()
    return struct.pack("<H", len(b)) + b


def hello(role=1, comp="", ckptdir="/ck"):
    return msg(1, struct.pack("<BIIQII", role, 1234, 0, 0, 0, 0) + s("host") + s("prog") + s("upid") + s(comp)
               + s(ckptdir) + s("") + s("job"))


def main(out):
    os.makedirs(out, exist_ok=True)
    seeds = {
        "hello-worker": hello(),
        "hello-restart": hello(2, "comp-1", "/ck/gen-000001"),
        "welcome": msg(2, struct.pack("<IQII", 1, 5, 10, 0) + s("comp") + s("/ck")),
        "reject": msg(3, struct.pack("<H", 3) + s("peer of another user")),
        "command-bc": msg(4, struct.pack("<BI", 4, 0)),
        "result": msg(5, struct.pack("<iQQQI", -16, 2, 4096, 10, 3) + s("busy") + s("/d")),
        "ckpt-begin": msg(8, struct.pack("<QII", 7, 1, 2) + s("/ck/.gen-000007.tmp") + s("c")),
        "phase-done-write": msg(9, struct.pack("<QBiQIQ", 7, 4, 0, 4096, 0xdeadbeef, 5) + s("ckpt_a_1.dmtcp")),
        "phase-go": msg(10, struct.pack("<QB", 7, 1)),
        "kill": msg(13, struct.pack("<I", 10000)),
        "kv-put": msg(14, s("/sock/1") + struct.pack("<I", 3) + b"abc"),
        "kv-value": msg(16, s("k") + struct.pack("<BI", 1, 1) + b"\0"),
        "stream-hello-done": hello() + msg(9, struct.pack("<QBiQIQ", 1, 1, 0, 0, 0, 0) + s("")),
        "bad-magic": b"GET / HTTP/1.0\r\n\r\n",
        "bad-version": msg(13, struct.pack("<I", 1), version=2),
        "bad-type": msg(99, b""),
        "bad-length": msg(13, struct.pack("<I", 1), length=0x7FFFFFFF),
        "bad-reserved": msg(13, struct.pack("<I", 1), reserved=1),
        "bad-truncated": hello()[:-3],
        "bad-trailing": msg(13, struct.pack("<I", 1) + b"x"),
        "bad-control": msg(3, struct.pack("<H", 1) + s("a\nb")),
        "bad-enum": msg(4, struct.pack("<BI", 42, 0)),
        "bad-bytes-len": msg(14, s("k") + struct.pack("<I", 5000) + b"x" * 5000),
    }
    for name, data in seeds.items():
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus-proto"))
