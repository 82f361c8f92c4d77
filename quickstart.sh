#!/usr/bin/env bash
# Quick start: install what is missing (Debian 12), build, and show dmtcp at
# work: launch a demo program, checkpoint it, kill it, restart it from the
# checkpoint, and see it continue where it was.
set -euo pipefail
cd "$(dirname "$0")"
here=$(pwd)

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends meson ninja-build pkg-config gcc libc6-dev libsystemd-dev \
        libdeflate-dev libcap-dev libseccomp-dev libcmocka-dev python3 >/dev/null
fi
[ -d build ] || meson setup build >/dev/null
ninja -C build >/dev/null

bin="$here/build"
work=$(mktemp -d /tmp/dmtcp-demo.XXXXXX)
export XDG_RUNTIME_DIR="$work/run"
mkdir -m 0700 "$XDG_RUNTIME_DIR"
cd "$work"
cleanup() {
    [ -n "${coord:-}" ] && kill "$coord" 2>/dev/null || true
    [ -n "${demo:-}" ] && kill -9 "$demo" 2>/dev/null || true
    [ -n "${restarted:-}" ] && kill "$restarted" 2>/dev/null || true
}
trap cleanup EXIT

echo "== starting a coordinator"
"$bin/daemon/dmtcp_coordinator" --port 0 --port-file port --ckptdir "$work/ckpt" --daemon -q
port=$(cat port)
coord=$(sed -n 's/.*PID: *//p' < <("$bin/cli/dmtcp_command" -p "$port" -s))

echo "== launching the demo under dmtcp_launch"
"$bin/cli/dmtcp_launch" -p "$port" --ckptdir "$work/ckpt" "$bin/tests/demo/dmtcp-demo-counter" 300 > out1 2>&1 &
demo=$!
sleep 2
tail -n 2 out1

echo "== checkpointing"
"$bin/cli/dmtcp_command" -p "$port" -bc
ls "$work/ckpt"
sleep 1
echo "== killing the program (kill -9 $demo); its last lines:"
kill -9 "$demo"; wait "$demo" 2>/dev/null || true
demo=
tail -n 2 out1

echo "== restarting it from the checkpoint ($work/ckpt/dmtcp_restart_script.sh)"
"$work/ckpt/dmtcp_restart_script.sh" -p "$port" > out2 2>&1 &
restarted=$!
sleep 2
echo "== the restored program continues from the checkpoint, same pid:"
head -n 3 out2
echo "..."
tail -n 1 out2
"$bin/cli/dmtcp_command" -p "$port" -q >/dev/null
wait "$restarted" 2>/dev/null || true
restarted=
echo "== done: images and logs are in $work"
