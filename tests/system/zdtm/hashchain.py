"""zdtm test program in Python (run by /usr/bin/python3 under dmtcp): a
SHA-256 hash chain, h[i+1] = sha256(h[i] || i), with a milestone kept every
64 steps in a dict and a list of derived strings (a heap of Python objects).

Checked on every step: the list and the dict are consistent with the step
count. At verification (SIGUSR1): the chain recomputed from the seed gives
the current hash and every milestone. Same protocol as zdtmtst.h: "ready",
"heartbeat", "result" in the current directory."""

import hashlib
import os
import signal
import struct
import sys
import time

NAME = "hashchain.py"
verify = False


def on_usr1(sig, frame):
    global verify
    verify = True


def write_atomic(path, text):
    tmp = "." + path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, path)


def finish(ok, why=""):
    if not ok:
        sys.stderr.write("%s: %s\n" % (NAME, why))
    if ok and os.getpid() != start_pid:
        ok, why = False, "pid changed: %d, started as %d" % (os.getpid(), start_pid)
    write_atomic("result", "PASS\n" if ok else "FAIL: %s: %s\n" % (NAME, why))
    sys.exit(0 if ok else 1)


def step(h, i):
    return hashlib.sha256(h + struct.pack("<Q", i)).digest()


start_pid = os.getpid()
signal.signal(signal.SIGUSR1, on_usr1)
hb = os.open("heartbeat", os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
beats = 0


def heartbeat():
    global beats
    beats += 1
    os.pwrite(hb, b"%020d\n" % beats, 0)


seed = hashlib.sha256(b"dmtcp zdtm python").digest()
h, i = seed, 0
milestones = {0: seed}
derived = []
heartbeat()
write_atomic("ready", "%d\n" % start_pid)

while not verify:
    if len(milestones) != i // 64 + 1 or len(derived) != min(i, 4096):
        finish(False, "state inconsistent at step %d: %d milestones, %d derived" % (i, len(milestones), len(derived)))
    if derived and derived[-1] != h.hex():
        finish(False, "last derived string is not the current hash at step %d" % i)
    h = step(h, i)
    i += 1
    if i % 64 == 0:
        milestones[i] = h
    derived.append(h.hex())
    if len(derived) > 4096:
        del derived[0]
    heartbeat()
    time.sleep(0.002)

x = seed
for k in range(i):
    if k in milestones and milestones[k] != x:
        finish(False, "milestone %d differs from the recomputed chain" % k)
    x = step(x, k)
if x != h:
    finish(False, "hash at step %d differs from the recomputed chain" % i)
if i < 10:
    finish(False, "only %d steps" % i)
finish(True)
