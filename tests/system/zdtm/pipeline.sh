#!/bin/bash
# zdtm test program (run by /bin/bash under dmtcp): a shell pipeline
#
#     produce | cat | python3 (consume)
#
# produce, a forked subshell, writes the numbers 0, 1, 2, ... one per line
# as fast as the pipes take them; cat (an exec'd program) relays them;
# the consumer checks each is the one after the last, advances the
# heartbeat every 1000 and reads slowly, so the pipes and cat's buffer are
# full at every checkpoint. A lost, repeated or reordered line fails.
#
# Same protocol as zdtmtst.h: "ready" (this shell's pid), "heartbeat",
# "result"; SIGUSR1 to this shell is passed to the consumer, which checks
# and ends; the shell ends with the consumer's status.
set -u

consume='
import os, signal, sys, time

verify = False
def on_usr1(sig, frame):
    global verify
    verify = True

def finish(ok, why=""):
    with open(".result.tmp", "w") as f:
        f.write("PASS\n" if ok else "FAIL: pipeline: %s\n" % why)
    os.rename(".result.tmp", "result")
    os._exit(0 if ok else 1)

signal.signal(signal.SIGUSR1, on_usr1)
hb = os.open("heartbeat", os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
expect = beats = 0
for line in sys.stdin.buffer:
    try:
        n = int(line)
    except ValueError:
        finish(False, "line %d is damaged: %r" % (expect, line[:40]))
    if n != expect:
        finish(False, "got %d, expected %d" % (n, expect))
    expect += 1
    if expect % 1000 == 0:
        beats += 1
        os.pwrite(hb, b"%d\n" % beats, 0)
        time.sleep(0.003)
    if verify:
        finish(expect > 0, "nothing came through")
finish(False, "the input ended after %d lines" % expect)
'

produce() {
        local i=0
        while echo $i; do
                i=$((i + 1))
        done
}

trap 'kill -USR1 $consumer 2>/dev/null' USR1
produce 2>/dev/null | cat | /usr/bin/python3 -c "$consume" &
consumer=$!
echo $$ > ready.tmp && mv ready.tmp ready
while :; do
        wait $consumer
        # Interrupted by the trap: the consumer is still there.
        kill -0 $consumer 2>/dev/null && continue
        # It ended, maybe as the trap interrupted the wait (which then said
        # 138): bash keeps its status for another wait.
        wait $consumer
        exit $?
done
