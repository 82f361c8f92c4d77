#!/bin/bash
# zdtm test program (run by /bin/bash under dmtcp): a script whose every
# step runs a pipeline of short-lived programs in a command substitution,
#
#     out=$(printf ... | sort -rn | head -n 1 | tr -d '\n')
#
# so a checkpoint catches processes being forked, exec'd, piping and
# exiting. Each step's answer is known; a wrong one fails.
#
# Same protocol as zdtmtst.h: "ready" (this shell's pid), "heartbeat",
# "result"; SIGUSR1 asks for verification.
set -u

finish() {
        printf '%s\n' "$1" > .result.tmp && mv .result.tmp result
        exit "$2"
}

verify=0
trap 'verify=1' USR1
i=0
echo 0 > heartbeat
echo $$ > ready.tmp && mv ready.tmp ready
while [ $verify = 0 ]; do
        out=$(printf '%d\n' $i $((i + 2)) $((i + 1)) | sort -rn | head -n 1 | tr -d '\n')
        [ "$out" = $((i + 2)) ] || finish "FAIL: steps.sh: step $i gave '$out', expected $((i + 2))" 1
        i=$((i + 1))
        echo $i > heartbeat
done
[ $$ = "$(cat ready)" ] || finish "FAIL: steps.sh: pid changed" 1
finish PASS 0
