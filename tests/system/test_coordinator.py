#!/usr/bin/env python3
"""System tests of the real dmtcp_coordinator, driven with fakeworker and
dmtcp_command. One test per invocation (meson runs them in parallel):

    test_coordinator.py TEST        run one test
    test_coordinator.py --list      list the tests

Environment: COORDINATOR, DMTCP_COMMAND, FAKEWORKER (paths to the
binaries), MESSAGES_H and CATALOG (for the catalog test). Every test uses
its own temporary directory, port (--port 0 --port-file) and
XDG_RUNTIME_DIR, and kills only the processes it started, by PID.
Exit status 0 = pass, 77 = skipped, anything else = fail."""

import json
import os
import re
import resource
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
import zlib

COORD = os.environ.get("COORDINATOR", "")
CMD = os.environ.get("DMTCP_COMMAND", "")
FAKE = os.environ.get("FAKEWORKER", "")
SKIP = 77

TESTS = {}
STARTED = []        # every process a test started, killed by PID at the end whatever happened


def test(fn):
    TESTS[fn.__name__[len("test_"):]] = fn
    return fn


class Skip(Exception):
    pass


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def wait_until(pred, timeout, what):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = pred()
        if v:
            return v
        time.sleep(0.02)
    raise AssertionError("timed out after %.1f s waiting for %s" % (timeout, what))


def clean_env(extra=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DMTCP_", "NOTIFY_SOCKET", "LISTEN_", "JOURNAL_STREAM"))}
    if extra:
        env.update(extra)
    return env


class Worker:
    """A fakeworker process; its stdout lines are collected by a thread."""

    def __init__(self, args, env, user=None, name="worker"):
        cmd = [FAKE] + [str(a) for a in args]
        if user:
            cmd = ["setpriv", "--reuid=%d" % user, "--regid=%d" % user, "--clear-groups"] + cmd
        self.name = name
        self.lines = []
        self.cond = threading.Condition()
        self.p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        STARTED.append(self.p)
        self.t = threading.Thread(target=self._read, daemon=True)
        self.t.start()

    def _read(self):
        for line in self.p.stdout:
            with self.cond:
                self.lines.append(line.rstrip("\n"))
                self.cond.notify_all()

    def count(self, prefix):
        with self.cond:
            return sum(1 for l in self.lines if l.startswith(prefix))

    def wait_for(self, prefix, n=1, timeout=15):
        end = time.monotonic() + timeout
        with self.cond:
            while sum(1 for l in self.lines if l.startswith(prefix)) < n:
                left = end - time.monotonic()
                if left <= 0 or (self.p.poll() is not None and not self.t.is_alive()):
                    raise AssertionError("%s: no %d line(s) '%s' (rc=%s): %s / %s" % (
                        self.name, n, prefix, self.p.poll(), self.lines[-8:], self.stderr_now()))
                self.cond.wait(min(left, 0.2))
        return [l for l in self.lines if l.startswith(prefix)]

    def stderr_now(self):
        return "(stderr after exit)" if self.p.poll() is None else self.p.stderr.read()

    def wait_exit(self, timeout=15):
        try:
            rc = self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError("%s did not exit: %s" % (self.name, self.lines[-5:]))
        self.t.join(5)
        return rc

    def kill(self):
        if self.p.poll() is None:
            self.p.kill()
        self.p.wait()
        self.t.join(5)


class Coord:
    """A dmtcp_coordinator in its own directory, port and runtime dir."""

    def __init__(self, tmp, args=(), env=None, stdin=False, job=None, start=True, preexec=None):
        self.tmp = tmp
        self.rt = os.path.join(tmp, "rt")
        os.makedirs(self.rt, mode=0o700, exist_ok=True)
        self.port_file = os.path.join(tmp, "port")
        self.log_path = os.path.join(tmp, "coordinator.log")
        self.job = job
        self.env = clean_env({"XDG_RUNTIME_DIR": self.rt})
        if env:
            self.env.update(env)
        self.sock = os.path.join(self.rt, "dmtcp", (job or "default") + ".sock")
        self.p = None
        if start:
            self.start(args, stdin, preexec)

    def start(self, args=(), stdin=False, preexec=None):
        cmd = [COORD, "--port", "0", "--port-file", self.port_file] + [str(a) for a in args]
        if self.job:
            cmd += ["--job", self.job]
        self.log = open(self.log_path, "ab")
        self.p = subprocess.Popen(cmd, stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                                  stdout=self.log, stderr=self.log, env=self.env, cwd=self.tmp,
                                  preexec_fn=preexec)
        STARTED.append(self.p)
        wait_until(lambda: os.path.exists(self.port_file) or self.p.poll() is not None, 10, "the port file")
        check(self.p.poll() is None, "coordinator exited at start: %s" % self.text())
        self.port = int(open(self.port_file).read())

    def text(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def wait_log(self, pattern, timeout=10):
        return wait_until(lambda: re.search(pattern, self.text()), timeout, "log /%s/: %s" % (pattern, self.text()[-2000:]))

    def cmd(self, *args, unix=False, timeout=60, user=None, env=None):
        cmd = [CMD]
        if not unix:
            cmd += ["-h", "127.0.0.1", "-p", str(self.port)]
        cmd += [str(a) for a in args]
        if user:
            cmd = ["setpriv", "--reuid=%d" % user, "--regid=%d" % user, "--clear-groups"] + cmd
        e = dict(self.env)
        if unix:
            e["DMTCP_COORD_SOCKET"] = self.sock
        if env:
            e.update(env)
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=e)
        return r.returncode, r.stdout, r.stderr

    def status(self):
        rc, out, err = self.cmd("-s", "--json")
        check(rc == 0, "status failed: %s" % err)
        return json.loads(out)

    def worker(self, *args, unix=False, user=None, name="worker"):
        addr = ["--socket", self.sock] if unix else ["--port", self.port]
        return Worker(addr + list(args), self.env, user=user, name=name)

    def send(self, line):
        self.p.stdin.write((line + "\n").encode())
        self.p.stdin.flush()

    def wait_exit(self, timeout=15):
        try:
            return self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError("coordinator did not exit: %s" % self.text()[-2000:])

    def stop(self):
        if self.p and self.p.poll() is None:
            self.p.terminate()
            try:
                self.p.wait(10)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        if self.p:
            self.log.close()


# ---- helpers ---------------------------------------------------------------

def manifest(path):
    lines = open(path).read().split("\n")
    check(lines[0] == "dmtcp-manifest 1" and lines[-2] == "end" and lines[-1] == "", "manifest frame: %r" % lines)
    head = dict(l.split(" ", 1) for l in lines[1:5])
    images = [l.split(" ") for l in lines[5:-2]]
    check(all(i[0] == "image" and len(i) == 7 for i in images), "image lines: %r" % images)
    check(int(head["processes"]) == len(images), "processes count")
    return head, images


def check_generation(ckpt, gen, n, image_bytes=None):
    d = os.path.join(ckpt, "gen-%06d" % gen)
    check(os.path.isdir(d), "%s exists" % d)
    head, images = manifest(os.path.join(d, "MANIFEST"))
    check(int(head["generation"]) == gen, "manifest generation")
    check(len(images) == n, "manifest has %d images, want %d" % (len(images), n))
    for img in images:
        path = os.path.join(d, img[1])
        data = open(path, "rb").read()
        check(len(data) == int(img[2]), "size of %s" % img[1])
        if image_bytes is not None:
            check(len(data) == image_bytes, "image bytes")
        check("%08x" % zlib.crc32(data) == img[3], "crc of %s" % img[1])
    check(os.readlink(os.path.join(ckpt, "latest")) == "gen-%06d" % gen, "latest -> gen %d" % gen)
    script = os.path.join(ckpt, "dmtcp_restart_script.sh")
    check(stat.S_IMODE(os.stat(script).st_mode) == 0o700, "script mode")
    check("generation:  %d" % gen in open(script).read(), "script names generation %d" % gen)
    return head, images


def no_tmp(ckpt):
    return not [e for e in os.listdir(ckpt) if e.startswith(".gen-")]


def bc_ok(c, n=None):
    rc, out, err = c.cmd("-bc", "--json")
    check(rc == 0, "-bc failed (%d): %s %s\n%s" % (rc, out, err, c.text()[-3000:]))
    res = json.loads(out)
    check(res["ok"] and res["generation"] > 0, "-bc result %r" % res)
    if n is not None:
        check(res["processes"] == n, "-bc processes %d want %d" % (res["processes"], n))
    return res


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


# ---- tests -----------------------------------------------------------------

@test
def test_join_200(tmp):
    ckpt = os.path.join(tmp, "ckpt")
    c = Coord(tmp, ["--ckptdir", ckpt])
    ws = [c.worker("--count", 50, "--image-bytes", 1000, "--upid", "g%d-" % i, name="group%d" % i) for i in range(4)]
    for w in ws:
        w.wait_for("ready 50")
    rc, out, err = c.cmd("-l", "--json")
    check(rc == 0, "list: %s" % err)
    lst = json.loads(out)
    check(len(lst["members"]) == 200 and lst["processes"] == 200, "list shows %d" % len(lst["members"]))
    check(len({m["upid"] for m in lst["members"]}) == 200, "200 distinct members")
    rc, out, err = c.cmd("-s")
    check(rc == 0 and "NUM_PEERS=200" in out and "RUNNING=yes" in out, "status: %s" % out)
    bc_ok(c, 200)
    check_generation(ckpt, 1, 200, 1000)
    for w in ws:
        w.wait_for("committed", 50)
    rc, out, err = c.cmd("-k")
    check(rc == 0, "kill: %s" % err)
    for w in ws:
        check(w.wait_exit() == 0, "worker exit status")
    check(c.status()["num_peers"] == 0, "nobody left")
    c.stop()


@test
def test_commit_keep(tmp):
    ckpt = os.path.join(tmp, "ckpt")
    os.makedirs(ckpt)
    decoys = ["gen-1", "gen-0000001", "gen-abcdef", "keepme"]
    for d in decoys:
        os.makedirs(os.path.join(ckpt, d))
    open(os.path.join(ckpt, "gen-00000x"), "w").close()
    os.makedirs(os.path.join(ckpt, ".gen-000077.tmp", "junk"))
    c = Coord(tmp, ["--ckptdir", ckpt, "--keep", 2])
    ws = [c.worker("--program", "prog%d" % i, "--image-bytes", 5000 + i) for i in range(3)]
    for w in ws:
        w.wait_for("ready")
    for gen in (1, 2, 3):
        res = bc_ok(c, 3)
        check(res["generation"] == gen and res["bytes"] == 5000 + 5001 + 5002, "result %r" % res)
        check(res["dir"] == os.path.join(ckpt, "gen-%06d" % gen), "dir %r" % res["dir"])
        head, images = check_generation(ckpt, gen, 3)
        check(head["computation"] == c.status()["computation"], "manifest computation")
        check(sorted(i[5] for i in images) == ["prog0", "prog1", "prog2"], "programs %r" % images)
        check(no_tmp(ckpt), "no temporary generation left")
        for w in ws:
            w.wait_for("committed", gen)
    # Pruned after the commit's answers went out.
    wait_until(lambda: not os.path.exists(os.path.join(ckpt, "gen-000001")), 10, "gen 1 pruned (keep 2)")
    check(os.path.isdir(os.path.join(ckpt, "gen-000002")), "gen 2 kept")
    for d in decoys + ["gen-00000x"]:
        check(os.path.exists(os.path.join(ckpt, d)), "decoy %s untouched" % d)
    # The restart script passes options through to dmtcp_restart with its directory.
    script = os.path.join(ckpt, "dmtcp_restart_script.sh")
    r = subprocess.run(["sh", script, "--coord-port", "1234"], capture_output=True, text=True,
                       env=clean_env({"DMTCP_RESTART": "echo"}))
    check(r.returncode == 0 and r.stdout.strip() == "--coord-port 1234 %s" % os.path.realpath(ckpt),
          "script output %r %r" % (r.stdout, r.stderr))
    check("exec \"$DMTCP_RESTART\" \"$@\" \"$dir\"" in open(script).read(), "script exec line")
    # A plain checkpoint answers at once and completes on its own.
    rc, out, err = c.cmd("-c")
    check(rc == 0 and "generation 4 started" in out, "-c: %r %r" % (out, err))
    wait_until(lambda: os.path.isdir(os.path.join(ckpt, "gen-000004")), 10, "gen 4")
    for w in ws:
        w.kill()
    c.stop()


def abort_case(tmp, how, phase):
    ckpt = os.path.join(tmp, "ckpt")
    c = Coord(tmp, ["--ckptdir", ckpt])
    good = [c.worker("--program", "good%d" % i) for i in range(2)]
    for w in good:
        w.wait_for("ready")
    bc_ok(c, 2)
    bad = c.worker("--program", "bad", "--%s-at" % how, phase, name="bad")
    bad.wait_for("ready")
    rc, out, err = c.cmd("-bc")
    if how == "die" and phase == "suspend":
        # It ended before it was suspended: the checkpoint goes on without it.
        check(rc == 0, "-bc must commit without a worker that ended before suspension: rc %d %s %s" % (rc, out, err))
        check(bad.wait_exit() == -signal.SIGKILL, "the bad worker died")
        c.wait_log(r"ended before it was suspended")
        check_generation(ckpt, 2, 2)
        for w in good:
            w.kill()
        c.stop()
        return
    check(rc == 1, "-bc must fail when a worker %ss in %s: rc %d %s %s" % (how, phase, rc, out, err))
    check("aborted" in err and "bad" in err, "reason names the program: %r" % err)
    check(not os.path.exists(os.path.join(ckpt, "gen-000002")), "no gen 2")
    check(no_tmp(ckpt), "temporary generation removed")
    check(os.readlink(os.path.join(ckpt, "latest")) == "gen-000001", "latest unchanged")
    c.wait_log(r"checkpoint generation 2 aborted")
    for w in good:
        w.wait_for("aborted")
    if how == "die":
        check(bad.wait_exit() == -signal.SIGKILL, "the bad worker died")
    else:
        bad.wait_for("aborted")
        wait_until(lambda: c.status()["running"], 10, "everyone resumed")
        bad.kill()
        wait_until(lambda: c.status()["num_peers"] == 2, 10, "bad worker gone")
    # The coordinator serves a new checkpoint fine.
    # Generation = max(on disk, last committed) + 1: the aborted number is reused.
    res = bc_ok(c, 2)
    check(res["generation"] == 2, "next generation is 2 again: %r" % res)
    check_generation(ckpt, 2, 2)
    for w in good:
        w.kill()
    c.stop()


for _how in ("die", "fail"):
    for _ph in ("suspend", "elect", "drain", "capture", "refill", "write"):
        def _mk(how, ph):
            def f(tmp):
                abort_case(tmp, how, ph)
            f.__name__ = "test_abort_%s_%s" % (how, ph)
            return f
        test(_mk(_how, _ph))


@test
def test_abort_commit(tmp):
    """An image whose size differs from what its process reported aborts at commit."""
    ckpt = os.path.join(tmp, "ckpt")
    c = Coord(tmp, ["--ckptdir", ckpt])
    w = c.worker("--lie-size")
    w.wait_for("ready")
    rc, out, err = c.cmd("-bc")
    check(rc == 1 and "commit failed" in err and "bytes" in err, "commit check: %r" % err)
    check(not os.path.exists(os.path.join(ckpt, "gen-000001")) and no_tmp(ckpt), "nothing committed")
    check(not os.path.exists(os.path.join(ckpt, "latest")), "no latest")
    w.wait_for("aborted")
    w.kill()
    c.stop()


@test
def test_bad_input(tmp):
    c = Coord(tmp)
    ws = [c.worker() for _ in range(2)]
    for w in ws:
        w.wait_for("ready")
    for unix in (False, True):
        for mode in ("garbage", "oversize", "truncated", "version", "reserved", "string", "unexpected"):
            b = c.worker("--bad", mode, unix=unix, name="bad-%s" % mode)
            rc = b.wait_exit()
            check(rc == 0, "bad input %s (unix=%s): rc %d %s" % (mode, unix, rc, b.lines))
            check(any(l.startswith("rejected") for l in b.lines), "REJECT for %s: %s" % (mode, b.lines))
    check(c.status()["num_peers"] == 2, "members still there")
    check(c.text().count("closing its connection") >= 14, "each bad peer logged")
    bc_ok(c, 2)
    for w in ws:
        w.kill()
    c.stop()


@test
def test_hello_timeout(tmp):
    c = Coord(tmp)
    t0 = time.monotonic()
    b = c.worker("--bad", "nohello", name="silent")
    check(b.wait_exit(15) == 0 and any("no HELLO within 5 s" in l for l in b.lines), "silent peer: %s" % b.lines)
    check(4.5 < time.monotonic() - t0 < 9, "closed after about 5 s (%.1f)" % (time.monotonic() - t0))
    c.wait_log("sent no HELLO within 5 s")
    check(c.status()["num_peers"] == 0, "still serving")
    c.stop()


@test
def test_uid(tmp):
    os.chmod(tmp, 0o755)
    c = Coord(tmp)
    os.chmod(c.rt, 0o711)
    os.chmod(os.path.dirname(c.sock), 0o711)
    os.chmod(c.sock, 0o666)
    for unix in (True, False):
        w = c.worker("--expect-reject", "uid", unix=unix, user=65534, name="nobody-unix=%s" % unix)
        check(w.wait_exit() == 0, "nobody refused (unix=%s): %s %s" % (unix, w.lines, w.stderr_now()))
    rc, out, err = c.cmd("-s", user=65534)
    check(rc == 1 and "refused" in err, "dmtcp_command as nobody: %d %r" % (rc, err))
    c.wait_log(r"refused peer unix uid 65534")
    c.wait_log(r"refused peer 127\.0\.0\.1:\d+ uid 65534")
    own = c.worker()
    own.wait_for("ready")
    own.kill()
    c.stop()

    tmp2 = os.path.join(tmp, "relaxed")
    os.makedirs(tmp2)
    os.chmod(tmp2, 0o755)
    c = Coord(tmp2, ["--no-strict-uid-checking", "--ckptdir", tmp2])
    os.chmod(c.rt, 0o711)
    os.chmod(os.path.dirname(c.sock), 0o711)
    os.chmod(c.sock, 0o666)
    ws = [c.worker(unix=unix, user=65534, name="nobody-relaxed") for unix in (True, False)]
    for w in ws:
        w.wait_for("ready")
    check(c.status()["num_peers"] == 2, "both accepted")
    for w in ws:
        w.kill()
    c.stop()


@test
def test_exit_on_last(tmp):
    c = Coord(tmp, ["--exit-on-last"])
    w1, w2 = c.worker(), c.worker()
    w1.wait_for("ready")
    w2.wait_for("ready")
    w1.kill()
    time.sleep(0.3)
    check(c.p.poll() is None, "still running with one member")
    w2.kill()
    check(c.wait_exit() == 0, "exit 0 after the last member")
    check(not os.path.exists(c.port_file), "port file removed")
    check(not os.path.exists(c.sock), "socket removed")


@test
def test_port_file(tmp):
    c = Coord(tmp)
    check(0 < c.port < 65536 and open(c.port_file).read() == "%d\n" % c.port, "port file content")
    s = socket.create_connection(("127.0.0.1", c.port), 5)
    s.close()
    check(stat.S_IMODE(os.stat(c.sock).st_mode) == 0o600, "socket mode 0600")
    check(stat.S_IMODE(os.stat(os.path.dirname(c.sock)).st_mode) == 0o700, "socket dir 0700")
    # A second coordinator of the same job refuses to start (exit 2).
    r = subprocess.run([COORD, "--port", "0"], capture_output=True, text=True, env=c.env, timeout=10)
    check(r.returncode == 2 and "already listening" in r.stderr, "live socket: %d %r" % (r.returncode, r.stderr))
    # ... and the same port too.
    r = subprocess.run([COORD, "--port", str(c.port), "--job", "other"], capture_output=True, text=True,
                       env=c.env, timeout=10)
    check(r.returncode == 2 and "in use" in r.stderr, "port in use: %d %r" % (r.returncode, r.stderr))
    c.stop()
    # A stale socket is replaced.
    check(os.path.exists(c.sock) is False, "socket removed at exit")
    s = socket.socket(socket.AF_UNIX)
    s.bind(c.sock)
    s.close()
    c2 = Coord(tmp)
    c2.wait_log("replaced stale socket")
    check(c2.status()["num_peers"] == 0, "serves")
    c2.stop()
    # A socket directory others may write to is refused.
    os.chmod(os.path.dirname(c.sock), 0o770)
    r = subprocess.run([COORD, "--port", "0"], capture_output=True, text=True, env=c.env, timeout=10)
    check(r.returncode == 1 and "not a private directory" in r.stderr, "open socket dir: %d %r" % (r.returncode, r.stderr))


@test
def test_usage(tmp):
    for args in (["--bogus"], ["-p", "x"], ["--port", "70000"], ["--job", "a-b"], ["--keep", "0"],
                 ["-i"], ["extra"], ["--restart-timeout", "0"]):
        r = subprocess.run([COORD] + args, capture_output=True, text=True, env=clean_env(), timeout=10)
        check(r.returncode == 64 and r.stderr.count("\n") == 1 and "dmtcp_coordinator:" in r.stderr,
              "usage %r: %d %r" % (args, r.returncode, r.stderr))
    r = subprocess.run([COORD], capture_output=True, text=True, env=clean_env({"DMTCP_KEEP": "zero"}), timeout=10)
    check(r.returncode == 64 and "DMTCP_KEEP" in r.stderr, "env error %r" % r.stderr)
    r = subprocess.run([COORD, "--help"], capture_output=True, text=True, timeout=10)
    check(r.returncode == 0 and "--port-file" in r.stdout, "help")
    r = subprocess.run([COORD, "--version"], capture_output=True, text=True, timeout=10)
    check(r.returncode == 0 and r.stdout.startswith("dmtcp_coordinator "), "version")


@test
def test_interval(tmp):
    ckpt = os.path.join(tmp, "ckpt")
    c = Coord(tmp, ["--ckptdir", ckpt, "-i", 1])
    w = c.worker()
    w.wait_for("ready")
    wait_until(lambda: os.path.isdir(os.path.join(ckpt, "gen-000001")), 8, "an interval checkpoint")
    wait_until(lambda: os.path.isdir(os.path.join(ckpt, "gen-000002")), 8, "a second one")
    rc, out, err = c.cmd("-i", 0)
    check(rc == 0 and "(off)" in out, "interval off: %r" % out)
    n = len([e for e in os.listdir(ckpt) if e.startswith("gen-")])
    time.sleep(2.2)
    n2 = len([e for e in os.listdir(ckpt) if e.startswith("gen-")])
    check(n2 <= n + 1, "no more interval checkpoints after -i 0 (%d -> %d)" % (n, n2))
    rc, out, err = c.cmd("-s")
    check("CKPT_INTERVAL=0" in out, "status shows interval 0")
    w.kill()
    c.stop()
    # The first worker's requested interval is used when the coordinator has none.
    tmp2 = os.path.join(tmp, "b")
    os.makedirs(tmp2)
    ckpt2 = os.path.join(tmp2, "ckpt")
    c = Coord(tmp2)
    w = c.worker("--interval", 1, "--ckptdir", ckpt2)
    w.wait_for("ready")
    check(c.status()["ckpt_interval"] == 1 and c.status()["ckptdir"] == ckpt2, "worker's interval and ckptdir")
    wait_until(lambda: os.path.isdir(os.path.join(ckpt2, "gen-000001")), 8, "an interval checkpoint from the worker's interval")
    w.kill()
    c.stop()


def write_manifest(gendir, comp, gen, images):
    os.makedirs(gendir, exist_ok=True)
    lines = ["dmtcp-manifest 1", "computation " + comp, "generation %d" % gen, "time 1", "processes %d" % len(images)]
    for name, upid, prog, host in images:
        lines.append("image %s 10 00000000 %s %s %s" % (name, upid, prog, host))
    lines.append("end")
    with open(os.path.join(gendir, "MANIFEST"), "w") as f:
        f.write("\n".join(lines) + "\n")


def rst_worker(c, comp, gen, members, upid, gendir, *extra, name=None):
    return c.worker("--restart", "--comp", comp, "--gen", gen, "--members", members, "--upid", upid,
                    "--ckptdir", gendir, *extra, name=name or "rst-" + upid)


@test
def test_restart(tmp):
    # A real generation from a checkpoint of three workers.
    ckpt = os.path.join(tmp, "ckpt")
    os.makedirs(os.path.join(tmp, "a"))
    a = Coord(os.path.join(tmp, "a"), ["--ckptdir", ckpt])
    ws = [a.worker("--upid", "p%d" % i, "--program", "prog%d" % i) for i in range(3)]
    for w in ws:
        w.wait_for("ready")
    bc_ok(a, 3)
    comp = a.status()["computation"]
    rc, out, err = a.cmd("-k")
    check(rc == 0, "kill")
    a.stop()
    gendir = os.path.join(ckpt, "gen-000001")

    os.makedirs(os.path.join(tmp, "b"))
    c = Coord(os.path.join(tmp, "b"))
    r0 = rst_worker(c, comp, 1, 3, "p0", gendir)
    r0.wait_for("ready")
    # Mismatches are refused while the rendezvous waits.
    for extra, code in (((comp, 2, 3, "p1"), "wrong_comp"), (("other", 1, 3, "p1"), "wrong_comp"),
                        ((comp, 1, 4, "p1"), "peer_mismatch"), ((comp, 1, 3, "p0"), "peer_mismatch"),
                        ((comp, 1, 3, "stranger"), "peer_mismatch")):
        x = rst_worker(c, extra[0], extra[1], extra[2], extra[3], gendir, "--expect-reject", code, name="mismatch")
        check(x.wait_exit() == 0, "restart mismatch %r -> %s: %s" % (extra, code, x.lines))
    st = c.status()
    check(not st["running"] and "1 of 3" in st["state"], "waiting: %r" % st["state"])
    rs = [r0] + [rst_worker(c, comp, 1, 3, "p%d" % i, gendir) for i in (1, 2)]
    for r in rs:
        r.wait_for("restarted")
    wait_until(lambda: c.status()["running"], 10, "the restarted computation runs")
    st = c.status()
    check(st["num_peers"] == 3 and st["computation"] == comp and st["generation"] == 1, "status %r" % st)
    check(st["ckptdir"] == ckpt, "ckptdir is the parent of the generation: %r" % st["ckptdir"])
    c.wait_log(r"restart of generation 1 completed: 3 processes")
    # A restart on a coordinator with a running computation is refused.
    x = rst_worker(c, comp, 1, 3, "p0", gendir, "--expect-reject", "not_running", name="busy")
    check(x.wait_exit() == 0, "busy coordinator refuses a restart")
    # The restarted computation checkpoints into the same directory.
    res = bc_ok(c, 3)
    check(res["generation"] == 2 and res["dir"] == os.path.join(ckpt, "gen-000002"), "after restart %r" % res)
    for r in rs:
        r.kill()
    c.stop()


@test
def test_restart_timeout(tmp):
    ckpt = os.path.join(tmp, "ckpt")
    gendir = os.path.join(ckpt, "gen-000005")
    host = socket.gethostname()
    write_manifest(gendir, "comp-x", 5, [("ckpt_a_1.dmtcp", "u1", "a", host), ("ckpt_b_2.dmtcp", "u2", "b", host),
                                          ("ckpt_c_3.dmtcp", "u3", "c", "h3")])
    c = Coord(tmp, ["--restart-timeout", 2, "--exit-on-last"])
    rs = [rst_worker(c, "comp-x", 5, 3, u, gendir) for u in ("u1", "u2")]
    for r in rs:
        r.wait_for("ready")
    t0 = time.monotonic()
    for r in rs:
        r.wait_for("killed", timeout=10)
        check(r.wait_exit() == 0, "killed worker exits 0")
    check(1.5 < time.monotonic() - t0 < 6, "timeout took %.1f s" % (time.monotonic() - t0))
    c.wait_log(r"restart of generation 5 timed out after 2 s: 1 of 3 processes missing: ckpt_c_3\.dmtcp \(c on host h3\)")
    check(c.wait_exit() == 0, "--exit-on-last after the failed restart")


@test
def test_restart_force(tmp):
    ckpt = os.path.join(tmp, "ckpt")
    gendir = os.path.join(ckpt, "gen-000003")
    write_manifest(gendir, "comp-f", 3, [("i1", "u1", "a", "h"), ("i2", "u2", "b", "h"), ("i3", "u3", "c", "h")])
    c = Coord(tmp, ["--restart-timeout", 60], stdin=True)
    rs = [rst_worker(c, "comp-f", 3, 3, u, gendir) for u in ("u1", "u3")]
    for r in rs:
        r.wait_for("ready")
    c.send("f")
    for r in rs:
        r.wait_for("restarted")
    wait_until(lambda: c.status()["running"], 10, "forced restart runs")
    check(c.status()["num_peers"] == 2, "two processes")
    c.wait_log(r"forcing restart of generation 3 with 2 of 3 processes \(1 of 3 processes missing: i2 \(b on host h\)\)")
    c.send("f")
    c.wait_log("no restart is waiting for processes")
    for r in rs:
        r.kill()
    c.send("q")
    check(c.wait_exit() == 0, "q quits")


@test
def test_console(tmp):
    c = Coord(tmp, stdin=True)
    w = c.worker("--program", "consoled")
    w.wait_for("ready")
    c.send("l")
    c.send("s")
    c.send("?")
    c.send("zz")
    c.send("c")
    w.wait_for("committed")
    c.send("k")
    check(w.wait_exit() == 0, "k kills the workers")
    c.send("q")
    check(c.wait_exit() == 0, "q quits")
    out = c.text()
    for s in ("consoled", "NUM_PEERS=1", "RUNNING=yes", "Commands:", "unknown command 'zz'", "all processes are gone"):
        check(s in out, "console output has %r: %s" % (s, out[-1500:]))


@test
def test_command(tmp):
    ckpt = os.path.join(tmp, "ckpt")
    c = Coord(tmp, ["--ckptdir", ckpt])
    # 64: usage errors.
    for args in (["--bogus"], [], ["-s", "-l"], ["-i", "x"], ["-p", "0", "-s"], ["--job", "a/b", "-s"]):
        rc, out, err = c.cmd(*args)
        check(rc == 64 and err.count("\n") == 1, "usage %r: %d %r" % (args, rc, err))
    # 2: nobody there.
    dead = free_port()
    r = subprocess.run([CMD, "-p", str(dead), "-s"], capture_output=True, text=True, env=clean_env())
    check(r.returncode == 2 and "no coordinator at 127.0.0.1:%d" % dead in r.stderr, "no coordinator: %r" % r.stderr)
    r = subprocess.run([CMD, "--job", "nosuch", "-s"], capture_output=True, text=True, env=c.env)
    check(r.returncode == 2, "no coordinator on a job socket")
    # 1: refused: no members, then busy.
    rc, out, err = c.cmd("-bc")
    check(rc == 1 and "no processes" in err, "-bc without members: %r" % err)
    rc, out, err = c.cmd("-s", unix=True)
    check(rc == 0 and "NUM_PEERS=0" in out and "RUNNING=no" in out, "status over the Unix socket")
    r = subprocess.run([CMD, "-s"], capture_output=True, text=True, env=dict(c.env, DMTCP_COORD_PORT=str(c.port)))
    check(r.returncode == 0 and "NUM_PEERS=0" in r.stdout, "DMTCP_COORD_PORT is honoured: %r" % r.stderr)
    stall = c.worker("--stall-at", "drain", name="staller")
    stall.wait_for("ready")
    rc, out, err = c.cmd("-c")
    check(rc == 0, "-c starts: %r" % err)
    stall.wait_for("stalling")
    rc, out, err = c.cmd("-c")
    check(rc == 1 and "in progress" in err, "busy -c: %d %r" % (rc, err))
    rc, out, err = c.cmd("-bc")
    check(rc == 1, "busy -bc")
    rc, out, err = c.cmd("-s")
    check("RUNNING=no" in out and "NUM_PEERS=1" in out, "status while busy: %r" % out)
    # A worker joining after SUSPEND was released joins at once, outside the round.
    late = c.worker(name="late")
    late.wait_for("welcome")
    time.sleep(0.3)
    check(late.count("begin") == 0, "a late joiner takes no part in the checkpoint in flight: %s" % late.lines)
    rc, out, err = c.cmd("-k")
    check(rc == 0, "-k: %r" % err)
    check(stall.wait_exit() == 0, "stalled worker killed")
    check(late.wait_exit() == 0, "the late joiner was killed too: %s" % late.lines)
    # JSON status and list.
    w = c.worker("--program", "j\"son")
    w.wait_for("ready")
    rc, out, err = c.cmd("-i", 7)
    check(rc == 0, "-i")
    st = c.status()
    check(st["num_peers"] == 1 and st["running"] and st["ckpt_interval"] == 7 and st["coordinator"]["port"] == c.port,
          "json status %r" % st)
    rc, out, err = c.cmd("-l", "--json")
    lst = json.loads(out)
    check(lst["members"][0]["program"] == "j\"son" and lst["members"][0]["state"] == "running", "json list %r" % lst)
    rc, out, err = c.cmd("-l")
    check(rc == 0 and "j\"son" in out and "1 processes" in out, "list %r" % out)
    rc, out, err = c.cmd("--version")
    check(rc == 0 and out.startswith("dmtcp_command "), "version")
    rc, out, err = c.cmd("--help")
    check(rc == 0 and "--bcheckpoint" in out, "help")
    # -kc: checkpoint, then the processes end.
    res = json.loads(c.cmd("-kc", "--json")[1])
    check(res["ok"] and res["generation"] == 1, "-kc %r" % res)
    w.wait_for("exiting-after-checkpoint")
    check(w.wait_exit() == 0, "worker ended after -kc")
    wait_until(lambda: c.status()["num_peers"] == 0, 10, "members gone after -kc")
    # -q: the coordinator quits.
    rc, out, err = c.cmd("-q")
    check(rc == 0, "-q")
    check(c.wait_exit() == 0, "coordinator exit 0 after -q")


@test
def test_join_during_suspend(tmp):
    ckpt = os.path.join(tmp, "ckpt")
    c = Coord(tmp, ["--ckptdir", ckpt])
    s = c.worker("--stall-at", "suspend", name="staller")
    s.wait_for("ready")
    rc, out, err = c.cmd("-c")
    check(rc == 0, "-c")
    s.wait_for("stalling")
    child = c.worker(name="child")
    child.wait_for("ready")
    child.wait_for("begin 0 1 members 2")
    # The staller ends before it was suspended: generation 1 goes on with the child.
    s.kill()
    child.wait_for("committed 0 1")
    wait_until(lambda: c.status()["running"], 10, "idle again")
    res = bc_ok(c, 1)
    check(res["generation"] == 2, "generation 2 after the committed 1")
    child.kill()
    c.stop()


@test
def test_kcheckpoint_waits(tmp):
    """--kcheckpoint (a job's stop) during a checkpoint in flight (an interval
    checkpoint) waits for that one to end, then checkpoints and kills; a
    second --kcheckpoint meanwhile is refused as busy."""
    ckpt = os.path.join(tmp, "ckpt")
    c = Coord(tmp, ["--ckptdir", ckpt])
    s = c.worker("--stall-at", "suspend", name="staller")
    w = c.worker(name="worker")
    s.wait_for("ready")
    w.wait_for("ready")
    rc, out, err = c.cmd("-c")
    check(rc == 0, "-c: %r" % err)
    s.wait_for("stalling")
    k = subprocess.Popen([CMD, "-h", "127.0.0.1", "-p", str(c.port), "--kcheckpoint"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=c.env)
    STARTED.append(k)
    c.wait_log(r"checkpoint and kill requested during checkpoint generation 1: it starts when that one is over")
    rc, out, err = c.cmd("--kcheckpoint")
    check(rc == 1 and "in progress" in err, "a second --kcheckpoint while one waits: %d %r" % (rc, err))
    check(k.poll() is None, "the first --kcheckpoint returned while generation 1 was in flight")
    # The staller ends before it was suspended: generation 1 goes on with
    # the worker and commits; then the waiting request runs.
    s.kill()
    w.wait_for("committed 0 1")
    out, err = k.communicate(timeout=30)
    check(k.returncode == 0 and "generation 2 committed" in out + err,
          "the waiting --kcheckpoint: %d %r %r" % (k.returncode, out, err))
    check(w.wait_exit() == 0, "the worker was killed after generation 2: %s" % w.lines)
    check_generation(ckpt, 2, 1)
    c.stop()


@test
def test_bc_waits_for_resume(tmp):
    """A -bc that arrives when the checkpoint in flight has committed and
    only waits for its processes to resume (a script's second -bc right
    after the first) waits for that, then runs."""
    ckpt = os.path.join(tmp, "ckpt")
    c = Coord(tmp, ["--ckptdir", ckpt])
    s = c.worker("--stall-at", "resume", name="staller")
    s.wait_for("ready")
    res = bc_ok(c, 1)
    check(res["generation"] == 1, "generation 1: %r" % res)
    s.wait_for("stalling")
    k = subprocess.Popen([CMD, "-h", "127.0.0.1", "-p", str(c.port), "-bc"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=c.env)
    STARTED.append(k)
    c.wait_log(r"checkpoint requested during checkpoint generation 1: it starts when that one is over")
    check(k.poll() is None, "the second -bc returned while generation 1 was resuming")
    # The staller goes: generation 1's round ends, generation 2 runs without anyone.
    w = c.worker(name="worker")
    w.wait_for("ready")
    s.kill()
    out, err = k.communicate(timeout=30)
    check(k.returncode == 0 and "generation 2 committed" in out + err,
          "the waiting -bc: %d %r %r" % (k.returncode, out, err))
    check_generation(ckpt, 2, 1)
    w.kill()
    c.stop()


@test
def test_max_conns(tmp):
    def lim():
        resource.setrlimit(resource.RLIMIT_NOFILE, (100, 100))
    c = Coord(tmp, preexec=lim)
    socks, full = [], 0
    for i in range(70):
        s = socket.create_connection(("127.0.0.1", c.port), 5)
        socks.append(s)
    time.sleep(0.3)
    for s in socks:
        s.settimeout(0.05)
        try:
            d = s.recv(64)
            if len(d) >= 16 and d[6] == 3:      # REJECT
                full += 1
        except socket.timeout:
            pass
    check(full >= 15, "connections beyond the limit get REJECT FULL (%d)" % full)
    for s in socks:
        s.close()
    time.sleep(0.3)
    check(c.status()["num_peers"] == 0, "still serving")
    c.wait_log("too|maximum")
    c.stop()


@test
def test_secret(tmp):
    try:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.connect(("192.0.2.1", 9))
        ip = s.getsockname()[0]
        s.close()
    except OSError:
        raise Skip("no non-loopback address")
    if ip.startswith("127."):
        raise Skip("no non-loopback address")
    ckpt = os.path.join(tmp, "ckpt")
    c = Coord(tmp, ["--bind", "0.0.0.0", "--ckptdir", ckpt])
    path = os.path.join(ckpt, ".dmtcp-secret")
    check(stat.S_IMODE(os.stat(path).st_mode) == 0o600, "secret mode 0600")
    secret = open(path).read().strip()
    check(re.fullmatch(r"[0-9a-f]{64}", secret), "secret is 64 hex digits")
    w = Worker(["--host", ip, "--port", c.port, "--expect-reject", "secret"], c.env, name="no-secret")
    check(w.wait_exit() == 0, "non-loopback peer without the secret refused: %s" % w.lines)
    w = Worker(["--host", ip, "--port", c.port, "--secret", "0" * 64, "--expect-reject", "secret"], c.env, name="bad-secret")
    check(w.wait_exit() == 0, "wrong secret refused")
    ok = Worker(["--host", ip, "--port", c.port, "--secret", secret], c.env, name="secret")
    ok.wait_for("ready")
    loop = c.worker(name="loopback")
    loop.wait_for("ready")
    c.wait_log(r"refused peer %s:\d+: peers beyond loopback" % re.escape(ip))
    ok.kill()
    loop.kill()
    c.stop()
    # Restarting reuses the same secret.
    c = Coord(tmp, ["--bind", "0.0.0.0", "--ckptdir", ckpt])
    check(open(path).read().strip() == secret, "secret reused")
    c.stop()


@test
def test_socket_activation(tmp):
    sa = shutil.which("systemd-socket-activate")
    if not sa:
        raise Skip("no systemd-socket-activate")
    rt = os.path.join(tmp, "rt")
    os.makedirs(os.path.join(rt, "dmtcp"), mode=0o700)
    path = os.path.join(rt, "dmtcp", "act.sock")
    port = free_port()
    log = open(os.path.join(tmp, "coordinator.log"), "wb")
    env = clean_env({"XDG_RUNTIME_DIR": rt})
    p = subprocess.Popen([sa, "-l", path, "-l", "127.0.0.1:%d" % port, "--fdname=coord:coord-tcp",
                          COORD, "--job", "act", "--idle-timeout", "30"], stdout=log, stderr=log, env=env,
                         stdin=subprocess.DEVNULL)
    STARTED.append(p)
    try:
        wait_until(lambda: os.path.exists(path), 10, "activated socket")
        r = subprocess.run([CMD, "--job", "act", "-s", "--json"], capture_output=True, text=True, env=env, timeout=30)
        check(r.returncode == 0, "status over the activated Unix socket: %r" % r.stderr)
        st = json.loads(r.stdout)
        check(st["coordinator"]["port"] == port and st["coordinator"]["socket"] == path, "activated listeners %r" % st)
        r = subprocess.run([CMD, "-p", str(port), "-s"], capture_output=True, text=True, env=env, timeout=30)
        check(r.returncode == 0 and "NUM_PEERS=0" in r.stdout, "status over the activated TCP socket")
        text = open(os.path.join(tmp, "coordinator.log")).read()
        check("socket-activated" in text, "used the activated sockets: %s" % text)
    finally:
        p.terminate()
        p.wait(10)
        log.close()


@test
def test_notify_and_idle(tmp):
    ns = os.path.join(tmp, "notify")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(ns)
    s.settimeout(10)
    t0 = time.monotonic()
    c = Coord(tmp, ["--idle-timeout", 1], env={"NOTIFY_SOCKET": ns})
    msgs = []
    while not any("READY=1" in m for m in msgs):
        msgs.append(s.recv(4096).decode())
    check(any("STATUS=" in m for m in msgs), "STATUS sent with READY: %r" % msgs)
    check(c.wait_exit(10) == 0, "idle exit 0")
    check(time.monotonic() - t0 >= 0.9, "waited for the idle timeout")
    s.settimeout(1)
    try:
        while True:
            msgs.append(s.recv(4096).decode())
    except socket.timeout:
        pass
    check(any("STOPPING=1" in m for m in msgs), "STOPPING=1 at idle exit: %r" % msgs)
    # A connected client keeps it alive.
    c = Coord(tmp, ["--idle-timeout", 1])
    w = c.worker()
    w.wait_for("ready")
    time.sleep(1.5)
    check(c.p.poll() is None, "not idle while a member is connected")
    w.kill()
    check(c.wait_exit(10) == 0, "idle exit after the member left")


@test
def test_daemon(tmp):
    env = clean_env({"XDG_RUNTIME_DIR": os.path.join(tmp, "rt")})
    os.makedirs(env["XDG_RUNTIME_DIR"], mode=0o700)
    pf = os.path.join(tmp, "port")
    r = subprocess.run([COORD, "--daemon", "--port", "0", "--port-file", pf, "-q"], capture_output=True,
                       text=True, env=env, timeout=10, cwd=tmp)
    check(r.returncode == 0, "daemon parent exit 0: %r" % r.stderr)
    port = int(open(pf).read())
    st = json.loads(subprocess.run([CMD, "-p", str(port), "-s", "--json"], capture_output=True, text=True,
                                   env=env, timeout=10).stdout)
    pid = st["coordinator"]["pid"]
    check(pid > 0, "daemon answers")
    DAEMONS.append(pid)
    # A second daemon on the same port fails in the parent with the child's status.
    r = subprocess.run([COORD, "--daemon", "--port", str(port), "--job", "x"], capture_output=True, text=True,
                       env=env, timeout=10)
    check(r.returncode == 2 and "in use" in r.stderr, "daemon failure reported: %d %r" % (r.returncode, r.stderr))
    r = subprocess.run([CMD, "-p", str(port), "-q"], capture_output=True, text=True, env=env, timeout=30)
    check(r.returncode == 0, "quit the daemon")
    wait_until(lambda: not os.path.exists("/proc/%d" % pid) or open("/proc/%d/stat" % pid).read().split()[2] == "Z",
               10, "daemon exit")


@test
def test_journal_stream_rule(tmp):
    # JOURNAL_STREAM naming another file: stderr is used.
    c = Coord(tmp, env={"JOURNAL_STREAM": "1:1"})
    c.wait_log("coordinator .* started")
    c.stop()
    # JOURNAL_STREAM naming our stderr: events go to the journal, not stderr.
    log = os.path.join(tmp, "j.log")
    f = open(log, "wb")
    st = os.fstat(f.fileno())
    env = clean_env({"XDG_RUNTIME_DIR": os.path.join(tmp, "rt"), "JOURNAL_STREAM": "%d:%d" % (st.st_dev, st.st_ino)})
    pf = os.path.join(tmp, "port2")
    p = subprocess.Popen([COORD, "--port", "0", "--port-file", pf, "--job", "jr"], stdout=f, stderr=f,
                         env=env, stdin=subprocess.DEVNULL)
    STARTED.append(p)
    wait_until(lambda: os.path.exists(pf), 10, "port file")
    p.terminate()
    p.wait(10)
    f.close()
    check("started" not in open(log).read(), "no stderr lines when logging to the journal")


@test
def test_catalog(tmp):
    ids = dict(re.findall(r'#define (DMTCP_MESSAGE_\w+)\s+"([0-9a-f]{32})"', open(os.environ["MESSAGES_H"]).read()))
    check(len(ids) == 8 and len(set(ids.values())) == 8, "eight distinct MESSAGE_IDs")
    cat = open(os.environ["CATALOG"]).read()
    blocks = re.split(r"^-- ", cat, flags=re.M)[1:]
    entries = {}
    for b in blocks:
        head, _, body = b.partition("\n")
        entries[head.strip().split()[0]] = b
    for name, mid in ids.items():
        check(mid in entries, "catalog entry for %s" % name)
        b = entries[mid]
        for key in ("Subject: ", "Defined-By: dmtcp", "Documentation: "):
            check(key in b, "%s has %s" % (name, key))
        check(len(b.split("\n\n", 1)[1].strip()) > 20, "%s has a body" % name)


DAEMONS = []        # PIDs of coordinators started with --daemon (not our children)


def kill_started():
    for p in STARTED:
        if p.poll() is None:
            p.kill()
            p.wait()
    for pid in DAEMONS:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def main():
    if len(sys.argv) != 2:
        print(__doc__)
        return 64
    if sys.argv[1] == "--list":
        print("\n".join(sorted(TESTS)))
        return 0
    name = sys.argv[1]
    fn = TESTS.get(name)
    if not fn:
        print("unknown test %s" % name)
        return 64
    tmp = tempfile.mkdtemp(prefix="dmtcp-%s-" % name)
    try:
        fn(tmp)
    except Skip as e:
        kill_started()
        print("SKIP %s: %s" % (name, e))
        return SKIP
    except Exception as e:
        kill_started()
        print("FAIL %s: %s" % (name, e))
        print("temporary directory kept: %s" % tmp)
        return 1
    kill_started()
    print("PASS %s" % name)
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
