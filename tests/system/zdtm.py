#!/usr/bin/env python3
"""zdtm driver: single-process checkpoint/restart of the real runtime.

Each test program in tests/system/zdtm/ checks its own state (zdtmtst.h);
this driver puts it through

    launch -> checkpoint -> kill -9 -> restart (new coordinator)
           -> checkpoint -> kill -9 -> restart (new coordinator) -> verify

and a few special flows (bad images, a descriptor that cannot be checkpointed).

    zdtm.py [--build DIR] [--user NAME] [--keep] TEST...
    zdtm.py --list

Binaries come from the environment (COORDINATOR, DMTCP_LAUNCH,
DMTCP_RESTART, DMTCP_COMMAND, ZDTM_BIN = the directory of the built test
programs) or from --build (a meson build directory). --user runs every
step of the test as that user (created with useradd if missing; needs
root), so the unprivileged restore path (a fresh user+pid namespace) is
covered. Every test gets its own temporary directory, coordinator port and
XDG_RUNTIME_DIR, and kills only the processes it started, by PID. The
driver is a child subreaper: a process that outlives its test (a stray
coordinator, a half-restored process) is caught and reported.

Exit status: 0 pass, 1 fail, 77 skipped."""

import argparse
import ctypes
import os
import pwd
import re
import resource
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib

SKIP = 77
HERE = os.path.dirname(os.path.abspath(__file__))
ZDTM_SRC = os.path.join(HERE, "zdtm")
FAIL_RC = 99                     # DMTCP_FAIL_RC
IMAGE_RC = FAIL_RC + 1           # an image that cannot be used
PERM_RC = FAIL_RC + 2            # a refused permission
INHERITED_FD = 20                # inherited: a pipe the driver gives the program

T0 = time.monotonic()


class TestFailure(Exception):
    pass


class Skip(Exception):
    pass


def log(msg):
    print("[%6.2fs] %s" % (time.monotonic() - T0, msg), flush=True)


def check(cond, what):
    if not cond:
        raise TestFailure(what)


def wait_until(pred, timeout, what):
    end = time.monotonic() + timeout
    delay = 0.005
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > end:
            raise TestFailure("timed out after %.0f s waiting for %s" % (timeout, what() if callable(what) else what))
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


def read_text(path, limit=None):
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return ""
    text = data.decode(errors="replace")
    if limit and len(text) > limit:
        text = "...\n" + text[-limit:]
    return text


# ---- processes --------------------------------------------------------------

def set_subreaper():
    libc = ctypes.CDLL(None, use_errno=True)
    PR_SET_CHILD_SUBREAPER = 36
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def children_of(pid):
    kids = []
    try:
        for tid in os.listdir("/proc/%d/task" % pid):
            try:
                kids += [int(x) for x in read_text("/proc/%d/task/%s/children" % (pid, tid)).split()]
            except ValueError:
                pass
    except OSError:
        pass
    return kids


def descendants(pid):
    out, todo = [], [pid]
    while todo:
        for k in children_of(todo.pop()):
            out.append(k)
            todo.append(k)
    return out


def proc_status(pid):
    st = {}
    for line in read_text("/proc/%d/status" % pid).splitlines():
        k, _, v = line.partition(":")
        st[k] = v.strip()
    return st


def alive(pid):
    """True if pid exists and is not a zombie."""
    st = proc_status(pid)
    return bool(st) and not st.get("State", "").startswith(("Z", "X"))


def cmdline(pid):
    return read_text("/proc/%d/cmdline" % pid).replace("\0", " ").strip()


class Env:
    """Paths of the binaries, and how to run a command as the test user."""

    def __init__(self, args):
        b = args.build
        def pick(var, rel):
            v = os.environ.get(var)
            if v:
                return os.path.abspath(v)
            if b:
                return os.path.join(os.path.abspath(b), rel)
            raise SystemExit("zdtm.py: set %s or pass --build" % var)
        self.coord = pick("COORDINATOR", "daemon/dmtcp_coordinator")
        self.launch = pick("DMTCP_LAUNCH", "cli/dmtcp_launch")
        self.restart = pick("DMTCP_RESTART", "restart/dmtcp_restart")
        self.command = pick("DMTCP_COMMAND", "cli/dmtcp_command")
        self.zdtm_bin = pick("ZDTM_BIN", "tests/system/zdtm")
        self.zdtm_src = ZDTM_SRC
        self.user = None
        self.uid = os.getuid()
        self.gid = os.getgid()
        self.home = os.environ.get("HOME", "/root")
        self.keep = args.keep
        self.stage = None

    def as_user(self, name):
        """Run every later step as the user name; stage the binaries where it
        can read them."""
        if os.getuid() != 0:
            raise Skip("--user needs root (to create the user and stage the binaries)")
        try:
            pw = pwd.getpwnam(name)
        except KeyError:
            r = subprocess.run(["useradd", "-m", "-s", "/bin/sh", name], capture_output=True, text=True)
            check(r.returncode == 0 or "already exists" in r.stderr, "useradd %s: %s" % (name, r.stderr))
            pw = pwd.getpwnam(name)
        self.user, self.uid, self.gid, self.home = name, pw.pw_uid, pw.pw_gid, pw.pw_dir
        # Binaries in the layout of a build tree (the tools find libdmtcp.so
        # from their own location), in a directory everyone can read.
        self.stage = tempfile.mkdtemp(prefix="zdtm-bin-")
        os.chmod(self.stage, 0o755)
        def put(src, rel):
            dst = os.path.join(self.stage, rel)
            os.makedirs(os.path.dirname(dst), mode=0o755, exist_ok=True)
            shutil.copy2(src, dst)
            os.chmod(dst, 0o755)
            return dst
        lib = os.path.join(os.path.dirname(os.path.dirname(self.launch)), "preload", "libdmtcp.so")
        put(lib, "preload/libdmtcp.so")
        self.coord = put(self.coord, "daemon/dmtcp_coordinator")
        self.launch = put(self.launch, "cli/dmtcp_launch")
        self.command = put(self.command, "cli/dmtcp_command")
        self.restart = put(self.restart, "restart/dmtcp_restart")
        for f in os.listdir(self.zdtm_bin):
            p = os.path.join(self.zdtm_bin, f)
            if os.path.isfile(p) and os.access(p, os.X_OK):
                put(p, "zdtm-bin/" + f)
        self.zdtm_bin = os.path.join(self.stage, "zdtm-bin")
        for f in os.listdir(ZDTM_SRC):
            if f.endswith((".py", ".pl", ".sh")):
                put(os.path.join(ZDTM_SRC, f), "zdtm-src/" + f)
        self.zdtm_src = os.path.join(self.stage, "zdtm-src")

    def wrap(self, cmd):
        if self.user is None:
            return cmd
        return ["setpriv", "--reuid=%d" % self.uid, "--regid=%d" % self.gid, "--init-groups", "--"] + cmd

    def cleanup(self):
        if self.stage:
            shutil.rmtree(self.stage, ignore_errors=True)


class Proc:
    """A process we started, with its output in files of the test."""

    def __init__(self, t, name, cmd, cwd=None, inherit_pipe=False):
        self.t = t
        self.name = name
        self.out_path = os.path.join(t.logs, name + ".out")
        self.err_path = os.path.join(t.logs, name + ".err")
        self.cmd = cmd
        self.pipe_data = None
        pass_fds = ()
        if inherit_pipe:
            # The write end of a pipe at fd INHERITED_FD of the child; a
            # thread collects what comes out of it.
            r, w = os.pipe()
            try:
                os.fstat(INHERITED_FD)
                raise TestFailure("harness: fd %d of the driver is in use" % INHERITED_FD)
            except OSError:
                pass
            os.dup2(w, INHERITED_FD)
            os.close(w)
            pass_fds = (INHERITED_FD,)
            self.pipe_data = bytearray()
            threading.Thread(target=self._drain, args=(r,), daemon=True).start()
        try:
            with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
                self.p = subprocess.Popen(t.env.wrap(cmd), stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                          cwd=cwd or t.work, env=t.proc_env, start_new_session=True,
                                          pass_fds=pass_fds)
        finally:
            if inherit_pipe:
                os.close(INHERITED_FD)
        t.procs.append(self)
        self.pid = self.p.pid

    def _drain(self, fd):
        while True:
            b = os.read(fd, 65536)
            if not b:
                break
            self.pipe_data += b
        os.close(fd)

    def pipe_text(self):
        return bytes(self.pipe_data or b"").decode(errors="replace")

    def poll(self):
        return self.p.poll()

    def wait(self, timeout):
        try:
            return self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            raise TestFailure("%s (pid %d) did not exit within %.0f s" % (self.name, self.pid, timeout))

    def kill(self, sig=signal.SIGKILL):
        if self.p.poll() is None:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass

    def stderr(self, limit=3000):
        return read_text(self.err_path, limit)

    def describe_exit(self):
        rc = self.p.returncode
        if rc is None:
            return "running"
        if rc < 0:
            return "killed by %s" % signal.Signals(-rc).name
        return "exit status %d" % rc


class Coordinator:
    def __init__(self, t, n, args=()):
        self.port_file = os.path.join(t.run, "port%d" % n)
        self.proc = Proc(t, "coordinator%d" % n,
                         [t.env.coord, "--port", "0", "--port-file", self.port_file, "--ckptdir", t.ckpt] + list(args))
        wait_until(lambda: os.path.exists(self.port_file) or self.proc.poll() is not None, 10,
                   "coordinator %d's port file" % n)
        check(self.proc.poll() is None, "coordinator %d exited at start (%s): %s" %
              (n, self.proc.describe_exit(), self.proc.stderr()))
        self.port = int(read_text(self.port_file))
        self.t = t

    def command(self, *args, timeout=120):
        cmd = self.t.env.wrap([self.t.env.command, "-h", "127.0.0.1", "-p", str(self.port)] + list(args))
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=self.t.proc_env)
        return r.returncode, r.stdout + r.stderr

    def stop(self):
        """Kill it by its pid (it is ours), as a crashed host would."""
        self.proc.kill(signal.SIGKILL)
        self.proc.wait(10)


# ---- one test's world ---------------------------------------------------------

class T:
    """A test's directories, its processes and its program."""

    def __init__(self, env, name):
        self.env = env
        self.name = name
        self.root = tempfile.mkdtemp(prefix="zdtm-%s-" % name)
        self.work = os.path.join(self.root, "work")      # the program's cwd
        self.ckpt = os.path.join(self.root, "ckpt")      # checkpoint directory
        self.run = os.path.join(self.root, "run")        # XDG_RUNTIME_DIR
        self.logs = os.path.join(self.root, "logs")
        for d in (self.work, self.ckpt, self.logs):
            os.makedirs(d)
        os.makedirs(self.run, mode=0o700)
        if env.user:
            os.chmod(self.root, 0o755)
            for d in (self.root, self.work, self.ckpt, self.run, self.logs):
                os.chown(d, env.uid, env.gid)
        self.proc_env = {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "HOME": env.home,
            "LANG": "C.UTF-8",
            "XDG_RUNTIME_DIR": self.run,
            "TMPDIR": self.root,
        }
        self.procs = []
        self.inherit_pipe = False
        self.coord = None
        self.n_coord = 0
        self.n_restart = 0
        self.prog = None                 # launch or restart Proc holding the program
        self.pid = None                  # the program's pid as the program sees it
        self.host_pid = None             # ... and in our pid namespace

    def path(self, *p):
        return os.path.join(self.work, *p)

    # -- coordinator and program --

    def new_coordinator(self, args=()):
        if self.coord:
            self.coord.stop()
        self.n_coord += 1
        self.coord = Coordinator(self, self.n_coord, args)
        return self.coord

    def launch(self, cmd, ready_timeout=30):
        self.prog = Proc(self, "launch", [self.env.launch, "-j", "-h", "127.0.0.1", "-p", str(self.coord.port),
                                          "--ckptdir", self.ckpt] + cmd, inherit_pipe=self.inherit_pipe)
        wait_until(lambda: os.path.exists(self.path("ready")) or self.prog.poll() is not None, ready_timeout,
                   "the program to be ready")
        self.expect_running("after launch")
        self.pid = int(read_text(self.path("ready")))
        check(self.pid == self.prog.pid, "the launched program has pid %d, dmtcp_launch had %d" %
              (self.pid, self.prog.pid))
        self.host_pid = self.pid
        log("%s: launched, pid %d" % (self.name, self.pid))

    def expect_running(self, when):
        if self.prog.poll() is not None:
            last = self.prog.stderr(2000).strip().splitlines()
            raise TestFailure("the program is not running %s: %s%s%s" % (
                when, self.prog.describe_exit(), self.result_note(),
                "; %s said: %s" % (self.prog.name, last[-1]) if last else ""))

    def result_note(self):
        r = read_text(self.path("result")).strip()
        return "; its result file says: %s" % r if r else ""

    def heartbeat(self):
        """The program's step counter; read until two reads agree, so a read
        racing the program's pwrite does not count."""
        def once():
            try:
                return int(read_text(self.path("heartbeat")).strip() or "-1")
            except ValueError:
                return -1
        a, b = once(), once()
        while a != b:
            a, b = b, once()
        return a

    def progress(self, n, timeout=60, fresh=False):
        """Wait until the program advanced its heartbeat n times. fresh: the
        file may still hold what the killed process wrote after the
        checkpoint, so first wait for the restored process to write."""
        v0 = self.heartbeat()
        if fresh:
            wait_until(lambda: self.heartbeat() != v0 or self.prog.poll() is not None, timeout,
                       "the restored program to run (heartbeat stuck at %d)" % v0)
            self.expect_running("after the restart")
            v0 = self.heartbeat()
        wait_until(lambda: self.heartbeat() >= v0 + n or self.prog.poll() is not None, timeout,
                   lambda: "%d steps of progress (heartbeat %d, now %d)" % (n, v0, self.heartbeat()))
        self.expect_running("while running")

    def checkpoint(self, expect_rc=0):
        t0 = time.monotonic()
        rc, out = self.coord.command("-bc")
        if rc != expect_rc:
            raise TestFailure("dmtcp_command -bc exited %d, expected %d: %s" % (rc, expect_rc, out.strip()))
        if expect_rc == 0:
            check(os.path.islink(os.path.join(self.ckpt, "latest")), "no %s/latest after a checkpoint" % self.ckpt)
            log("%s: checkpoint ok in %.2f s: %s" % (self.name, time.monotonic() - t0, out.strip()))
        return out

    def kill_program(self):
        """kill -9 the program and every process under it (pids in our
        namespace), stopped first so none sees another die; wait for its
        parent."""
        def signal_tree(sig):
            tree = [self.host_pid] + descendants(self.host_pid)
            for p in tree:
                try:
                    os.kill(p, sig)
                except OSError:
                    pass
            return tree
        signal_tree(signal.SIGSTOP)
        tree = signal_tree(signal.SIGKILL)
        self.prog.wait(30)
        check(self.prog.p.returncode == -signal.SIGKILL,
              "%s ended with %s after kill -9 of the program, expected SIGKILL" %
              (self.prog.name, self.prog.describe_exit()))
        wait_until(lambda: not any(alive(p) for p in tree), 10, "the killed processes to go away")
        for p in tree[1:]:
            # Orphans came to us (subreaper): reap them, so their pids are
            # free for a restart that wants them back.
            try:
                os.waitpid(p, os.WNOHANG)
            except ChildProcessError:
                pass
        log("%s: killed pid %d%s" % (self.name, self.host_pid,
                                    " and %s" % " ".join(map(str, tree[1:])) if len(tree) > 1 else ""))

    def restart(self, args=(), target=None):
        """dmtcp_restart on a new coordinator; returns once the restored
        program runs."""
        self.new_coordinator()
        self.n_restart += 1
        self.prog = Proc(self, "restart%d" % self.n_restart,
                         [self.env.restart, "-j", "-h", "127.0.0.1", "-p", str(self.coord.port)] + list(args) +
                         [target or self.ckpt], inherit_pipe=self.inherit_pipe)
        self.host_pid = wait_until(self.find_restored, 60, "the restored process %d to appear" % self.pid)
        if self.host_pid < 0:
            raise TestFailure("dmtcp_restart ended (%s): %s%s" % (self.prog.describe_exit(),
                                                                 self.prog.stderr().strip(), self.result_note()))
        log("%s: restarted pid %d%s" % (self.name, self.pid,
                                        "" if self.host_pid == self.pid else " (pid %d here)" % self.host_pid))

    def restart_twice(self, progress):
        """After the program was killed: restart, run, checkpoint, kill,
        restart, run, verify."""
        self.restart()
        self.progress(progress, fresh=True)
        self.checkpoint()
        self.progress(5)
        self.kill_program()
        self.restart()
        self.progress(progress, fresh=True)
        self.verify()

    def find_restored(self):
        """The restored program among dmtcp_restart's descendants: its own
        idea of its pid (last NSpid field) is the original one. -1 when
        dmtcp_restart is gone."""
        if self.prog.poll() is not None:
            return -1
        for d in descendants(self.prog.pid):
            st = proc_status(d)
            ns = st.get("NSpid", "").split()
            if ns and int(ns[-1]) == self.pid and (len(ns) > 1 or d == self.pid):
                return d
        return None

    def verify(self, timeout=120):
        """Ask the program to check itself (SIGUSR1) and expect PASS."""
        os.kill(self.host_pid, signal.SIGUSR1)
        self.prog.wait(timeout)
        res = read_text(self.path("result")).strip()
        rc = self.prog.p.returncode
        if rc != 0 or res != "PASS":
            raise TestFailure("verification failed: %s, result file: %s" %
                              (self.prog.describe_exit(), res or "(none)"))
        log("%s: verified: PASS" % self.name)

    # -- the end --

    def stop_all(self):
        for p in self.procs:
            p.kill(signal.SIGKILL)
        for p in self.procs:
            try:
                p.p.wait(10)
            except subprocess.TimeoutExpired:
                pass
        if self.host_pid and alive(self.host_pid):
            try:
                os.kill(self.host_pid, signal.SIGKILL)
            except OSError:
                pass

    def report(self):
        out = ["--- logs of %s (%s) ---" % (self.name, self.root)]
        for p in self.procs:
            err = p.stderr(4000).strip()
            outp = read_text(p.out_path, 1000).strip()
            out.append("%s [%s] %s" % (p.name, p.describe_exit(), " ".join(p.cmd)))
            if outp:
                out.append("  stdout: " + outp.replace("\n", "\n          "))
            if err:
                out.append("  stderr: " + err.replace("\n", "\n          "))
        res = read_text(self.path("result")).strip()
        if res:
            out.append("result file: " + res)
        out += core_backtraces(self)
        return "\n".join(out)

    def cleanup(self, ok):
        if ok and not self.env.keep:
            shutil.rmtree(self.root, ignore_errors=True)


def core_backtraces(t):
    """Backtraces of core files the programs left in the work directory."""
    out = []
    for f in sorted(os.listdir(t.work)):
        if not f.startswith("core"):
            continue
        core = os.path.join(t.work, f)
        r = subprocess.run(["file", core], capture_output=True, text=True)
        exe = None
        if "execfn: '" in r.stdout:
            exe = r.stdout.split("execfn: '")[1].split("'")[0]
        cmd = ["gdb", "-batch", "-nx", "-ex", "thread apply all bt"] + ([exe] if exe else []) + [core]
        try:
            g = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
            out.append("core %s (%s):\n%s" % (core, exe, g.stdout[-6000:]))
        except (OSError, subprocess.TimeoutExpired) as e:
            out.append("core %s: no backtrace (%s)" % (core, e))
    return out


def leftovers(known):
    """Our children (we are a subreaper: orphans of the test land here)
    that are not processes we started and already reaped."""
    left = []
    for pid in children_of(os.getpid()):
        if pid in known:
            continue
        st = proc_status(pid)
        if st.get("State", "").startswith("Z"):
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass
            continue
        left.append(pid)
    return left


def kill_leftovers(left, known):
    """kill -9 what the test left behind, with everything under it: its
    descendants come to us (subreaper) as their parents die, so go round
    until none is left."""
    for _ in range(50):
        for p in left:
            for q in [p] + descendants(p):
                try:
                    os.kill(q, signal.SIGKILL)
                except OSError:
                    pass
        time.sleep(0.1)
        left = leftovers(known)
        if not left:
            return


# ---- the tests ------------------------------------------------------------------

def program(t, name, *args):
    return [os.path.join(t.env.zdtm_bin, name)] + list(args)


def script(t, interp, name, *args):
    return [interp, os.path.join(t.env.zdtm_src, name)] + list(args)


class Spec:
    """A program and how much it must run after each restart before the
    next step: enough for one full round of its own checks."""

    def __init__(self, cmd, progress=20, first_progress=None, ready_timeout=30, verify_timeout=120,
                 launch_args=(), restart_args=(), before_checkpoint=None, before_restart=None, after_restart=None,
                 after_verify=None, inherit_pipe=False):
        self.cmd = cmd
        self.progress = progress
        self.first_progress = progress if first_progress is None else first_progress
        self.ready_timeout = ready_timeout
        self.verify_timeout = verify_timeout
        self.launch_args = launch_args
        self.restart_args = restart_args
        self.before_checkpoint = before_checkpoint or (lambda t: None)
        self.before_restart = before_restart or (lambda t, round_: None)
        self.after_restart = after_restart or (lambda t: None)
        self.after_verify = after_verify or (lambda t: None)
        self.inherit_pipe = inherit_pipe


def set_frozen(t, on):
    """mmap_shared_file --freeze: stop or resume its writes, and wait for
    the acknowledgement."""
    if on:
        with open(t.path("freeze"), "w"):
            pass
    else:
        os.unlink(t.path("freeze"))
    want = "1" if on else "0"
    wait_until(lambda: read_text(t.path("frozen")).strip() == want or t.prog.poll() is not None, 30,
               "the program to %s" % ("freeze" if on else "write again"))
    t.expect_running("after %s" % ("freezing" if on else "thawing"))


def thaw_and_run(t):
    set_frozen(t, False)
    t.progress(100)


def ipc_objects(t):
    """What the program said to remove if it dies (zdtmtst.h
    test_cleanup_note): (kind, name) pairs."""
    out = []
    for line in read_text(t.path("cleanup")).splitlines():
        kind, _, what = line.partition(" ")
        out.append((kind, what))
    return out


def remove_shm_objects(t, round_=1):
    """As a reboot would: the program's files in /dev/shm are gone."""
    for kind, what in ipc_objects(t):
        if kind == "shm" and what.startswith("/dev/shm/") and "/" not in what[len("/dev/shm/"):]:
            try:
                os.unlink(what)
                log("%s: removed %s" % (t.name, what))
            except FileNotFoundError:
                pass


def remove_ipc_objects(t):
    """The program's named and System V objects in our namespace: those of
    the launched process outlive it (a restarted one's System V objects are
    in a namespace of its own)."""
    remove_shm_objects(t)
    for kind, what in ipc_objects(t):
        if kind == "mq":
            try:
                libc = ctypes.CDLL(None, use_errno=True)
                libc.mq_unlink(what.encode())
            except (OSError, AttributeError):
                pass
        elif kind in ("sem", "msg", "shmid"):
            flag = {"sem": "-s", "msg": "-q", "shmid": "-m"}[kind]
            subprocess.run(["ipcrm", flag, what], capture_output=True)


def check_inherited(t):
    """Each stage's pipe (fd 20) and stdout got what the program wrote while
    it was that stage's: the launch's before the first kill, each restart's
    after it, the last one the final line."""
    stages = [p for p in t.procs if p.name == "launch" or p.name.startswith("restart")]
    for p in stages:
        text = p.pipe_text()
        out = read_text(p.out_path)
        check("step " in text, "%s's pipe (fd %d) got no line from the program: %r" % (p.name, INHERITED_FD, text[-200:]))
        check("step " in out, "%s's stdout got no line from the program: %r" % (p.name, out[-200:]))
    check(re.search(r"fd 1 \(.*\), inherited at launch, holds a file lock", stages[0].stderr()),
          "no warning about the lock on the inherited stdout: %s" % stages[0].stderr()[-300:])
    last = stages[-1]
    check("verified" in last.pipe_text() and "verified" in read_text(last.out_path),
          "the last restart's pipe and stdout did not get the final line")
    for p in stages[:-1]:
        check("verified" not in p.pipe_text(), "%s's pipe got the final line" % p.name)
    log("%s: each stage's fd %d and stdout got the program's lines" % (t.name, INHERITED_FD))


def check_in_flight(t, kind, least):
    """The images of the generation just restored hold at least `least`
    bytes queued on sockets of `kind` (dmtcp_restart --inspect)."""
    gen = os.path.realpath(os.path.join(t.ckpt, "latest"))
    total = 0
    for f in sorted(os.listdir(gen)):
        if not f.endswith(".dmtcp"):
            continue
        r = subprocess.run(t.env.wrap([t.env.restart, "--inspect", os.path.join(gen, f)]), capture_output=True,
                           text=True, timeout=60, env=t.proc_env)
        check(r.returncode == 0, "dmtcp_restart --inspect %s: %s" % (f, r.stderr.strip()))
        for m in re.finditer(r"fd \d+: socket %s\S* socket .*?, (\d+) bytes queued" % kind, r.stdout):
            total += int(m.group(1))
    check(total >= least, "only %d bytes were in flight on %s sockets at the checkpoint, expected at least %d" %
          (total, kind, least))
    log("%s: %.1f MiB in flight on %s sockets at the checkpoint" % (t.name, total / 1048576.0, kind))


def remove_older_generations(t, round_=None):
    """Delete every generation but the newest: the images a lazy restart
    mapped memory from must not be needed by later checkpoints."""
    latest = os.path.realpath(os.path.join(t.ckpt, "latest"))
    for g in os.listdir(t.ckpt):
        d = os.path.join(t.ckpt, g)
        if g.startswith("gen-") and os.path.realpath(d) != latest:
            shutil.rmtree(d)
            log("%s: removed %s before restarting from %s" % (t.name, g, os.path.basename(latest)))


def check_lazy_maps(t):
    """The restored process maps memory from the image it was restarted
    from, and from no other image."""
    latest = os.path.realpath(os.path.join(t.ckpt, "latest"))
    images = set()
    with open("/proc/%d/maps" % t.host_pid) as f:
        for line in f:
            parts = line.split(None, 5)
            name = parts[5].strip() if len(parts) == 6 else ""
            if name.endswith(".dmtcp") or name.endswith(".dmtcp (deleted)"):
                images.add(name)
    check(images, "nothing is mapped from an image after a restart with --lazy")
    others = [i for i in images if os.path.dirname(i) != latest]
    check(not others, "the restored process maps images other than %s: %s" % (latest, others))
    log("%s: memory mapped from %s" % (t.name, ", ".join(sorted(images))))


class EchoServer:
    """A line echo server outside the computation (a thread of the driver),
    on TCP loopback or a Unix stream socket; counts its connections."""

    def __init__(self, family, address):
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(address)
        if family == socket.AF_UNIX:
            os.chmod(address, 0o777)    # the -user program connects too
        self.sock.listen(16)
        self.address = self.sock.getsockname()
        self.connections = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._echo, args=(c,), daemon=True).start()

    def _echo(self, c):
        with c:
            try:
                while True:
                    b = c.recv(4096)
                    if not b:
                        return
                    c.sendall(b)
            except OSError:
                return

    def close(self):
        self.sock.close()


def external_spec(t):
    tcp = EchoServer(socket.AF_INET, ("127.0.0.1", 0))
    unix = EchoServer(socket.AF_UNIX, os.path.join(t.root, "echo.sock"))

    def after_verify(t):
        tcp.close()
        unix.close()
        closings = read_text(t.path("closings")).split()
        check(closings == ["TCP", "2", "Unix", "2"],
              "the program saw its connections closed %s times, expected 2 each (one per restart)" % closings)
        check(tcp.connections == 3 and unix.connections == 3,
              "the servers got %d and %d connections, expected 3 each" % (tcp.connections, unix.connections))
        # Each restart warns, naming the fd and the peer; each coordinator
        # that restarted says which connections came back closed.
        peers = ["127.0.0.1:%d" % tcp.address[1], unix.address]
        for n in (1, 2):
            err = read_text(os.path.join(t.logs, "restart%d.err" % n))
            clog = read_text(os.path.join(t.logs, "coordinator%d.err" % (n + 1)))
            for peer in peers:
                pat = r"fd \d+: [^:]* socket connected to %s, outside the computation" % re.escape(peer)
                check(re.search(pat + r": restored closed", err),
                      "restart %d did not warn about its connection to %s: %s" % (n, peer, err.strip()))
                check(re.search(r"pid %d .*" % t.pid + pat + r": restored closed", clog),
                      "coordinator %d did not log the connection to %s restored closed" % (n + 1, peer))
        log("%s: both connections came back closed at each restart, warned about and logged" % t.name)

    return Spec(program(t, "external", str(tcp.address[1]), unix.address), progress=50, after_verify=after_verify)


SPECS = {
    "counter": lambda t: Spec(program(t, "counter"), progress=50),
    # The same with uncompressed images, and with the program kept stopped
    # while its image is written (no copy-on-write snapshot).
    "counter_nogzip": lambda t: Spec(program(t, "counter"), progress=50, launch_args=["--no-gzip"]),
    "counter_nocow": lambda t: Spec(program(t, "counter"), progress=50, launch_args=["--no-cow-checkpoint"]),
    "threads": lambda t: Spec(program(t, "threads"), progress=50),
    "files": lambda t: Spec(program(t, "files"), progress=50),
    "inherited": lambda t: Spec(program(t, "inherited"), progress=30, inherit_pipe=True,
                                after_verify=check_inherited),
    "files_nodeleted": lambda t: Spec(program(t, "files", "--no-deleted"), progress=50),
    "mmap_shared_file": lambda t: Spec(program(t, "mmap_shared_file"), progress=100),
    # The same, with the file left unchanged between each checkpoint and
    # the restart (the program writes only after it is restored).
    "mmap_shared_file_frozen": lambda t: Spec(program(t, "mmap_shared_file", "--freeze"), progress=100,
                                              before_checkpoint=lambda t: set_frozen(t, True),
                                              after_restart=thaw_and_run),
    "python": lambda t: Spec(script(t, "/usr/bin/python3", "hashchain.py"), progress=100),
    "perl": lambda t: Spec(script(t, "/usr/bin/perl", "hashchain.pl"), progress=100),
    # After each restart, run longer than the program's stall limit (200
    # steps without a tick fails), so a timer lost by a restart is caught.
    "signals": lambda t: Spec(program(t, "signals", "itimer"), first_progress=20, progress=250),
    "signals_alarm": lambda t: Spec(program(t, "signals", "alarm"), first_progress=20, progress=450),
    "signals_pending": lambda t: Spec(program(t, "signals", "pending"), progress=20),
    # SIGUSR2 taken by sigwaitinfo()/sigtimedwait() in a thread of the program.
    "sigwait": lambda t: Spec(program(t, "sigwait"), progress=100),
    # A real-time checkpoint signal; SIGUSR2 is then the program's alone.
    "signals_rtckpt": lambda t: Spec(program(t, "signals", "itimer"), first_progress=20, progress=250,
                                     launch_args=["--ckpt-signal", "40"]),
    "signals_itimer_blocked": lambda t: Spec(program(t, "signals", "itimer-blocked"), first_progress=20,
                                             progress=250),
    # 128 steps of 8 MiB per sweep: the first checkpoint catches the first
    # fill half done; after each restart a full sweep checks every page.
    # Two processes, pipes between them and in each, a description shared
    # by both, bytes in flight at the checkpoint.
    "pipes": lambda t: Spec(program(t, "pipes"), progress=100),
    # Three generations around a ring of pipes, a session, a group, a
    # zombie; system(), popen() and vfork() now and then.
    "tree": lambda t: Spec(program(t, "tree"), progress=150),
    # A shell script whose every step runs a pipeline of short-lived
    # programs: checkpoints catch them starting, piping and ending.
    "steps": lambda t: Spec(script(t, "/bin/bash", "steps.sh"), progress=15),
    # A shell pipeline: a forked subshell, an exec'd cat and a Python
    # consumer, the pipes between them full at every checkpoint.
    "pipeline": lambda t: Spec(script(t, "/bin/bash", "pipeline.sh"), progress=20),
    # Parent and child sharing MAP_SHARED anonymous memory under a
    # process-shared mutex; each must see the other's writes after a restart.
    "shm_anon": lambda t: Spec(program(t, "shm_anon"), progress=100),
    "shm_anon_nocow": lambda t: Spec(program(t, "shm_anon"), progress=100, launch_args=["--no-cow-checkpoint"]),
    # A memfd shared by two processes through mappings and descriptions.
    "shm_memfd": lambda t: Spec(program(t, "shm_memfd"), progress=100),
    # POSIX shared memory between two processes (a named object, a named
    # semaphore, an unlinked object); the objects are removed before the
    # first restart, as a reboot would.
    "shm_posix": lambda t: Spec(program(t, "shm_posix"), progress=100,
                                before_restart=lambda t, r: remove_shm_objects(t) if r == 1 else None),
    # A System V semaphore set (one semaphore held with SEM_UNDO), message
    # queue and segments (one marked for removal) between two processes.
    "sysv_ipc": lambda t: Spec(program(t, "sysv_ipc"), progress=100),
    # POSIX message queues: one streaming between two processes with
    # messages of four priorities queued at every checkpoint, one left full,
    # one unlinked.
    "mqueue": lambda t: Spec(program(t, "mqueue"), progress=100),
    # fcntl, flock and OFD locks held by a parent and its child across
    # checkpoints, each checking every step that it cannot take the other's;
    # a second child waits for two of the parent's locks throughout.
    "locks": lambda t: Spec(program(t, "locks"), progress=100),
    # An epoll loop over a timerfd, eventfds, a signalfd and a pipe, shared
    # with a child that feeds it; a heartbeat per timer expiration (20 ms).
    "evloop": lambda t: Spec(program(t, "evloop"), progress=40),
    # inotify watching a directory the program writes to.
    "inotify": lambda t: Spec(program(t, "inotify"), progress=50),
    # A FIFO between two processes, opened separately, bytes in flight.
    "fifo": lambda t: Spec(program(t, "fifo"), progress=100),
    # A program in a pty it opened: parent on the master, a session
    # leader child with the slave as its controlling terminal.
    "pty": lambda t: Spec(program(t, "pty"), progress=50),
    # Unix socket pairs (stream, seqpacket, datagram) between a parent and
    # its child and in one process, with bytes and datagrams in flight.
    "sockpair": lambda t: Spec(program(t, "sockpair"), progress=100),
    # A loopback TCP connection between parent and child (IPv4, IPv6) with
    # megabytes in flight both ways at each checkpoint.
    "tcp": lambda t: Spec(program(t, "tcp"), progress=100, after_restart=lambda t: check_in_flight(t, "TCP", 3 << 20)),
    "tcp6": lambda t: Spec(program(t, "tcp", "-6"), progress=100,
                           after_restart=lambda t: check_in_flight(t, "TCP", 3 << 20)),
    # A server on Unix sockets (a listener bound to a path, one to an
    # abstract name, a datagram socket bound to a path) and forked clients.
    "unixserver": lambda t: Spec(program(t, "unixserver"), progress=1000),
    # Connections to servers outside the computation (run by the driver)
    # come back closed after a restart, with a warning and a log line.
    "external": external_spec,
    # Random, text, sparse, untouched, read-only, heap and realloc()ed
    # memory restarted with --lazy from uncompressed images (so mostly
    # mapped from the image), the first generation deleted before the
    # second restart; and the same from gzip images (text read, random
    # mapped).
    "lazymem": lambda t: Spec(program(t, "lazymem"), first_progress=20, progress=40, launch_args=["--no-gzip"],
                              restart_args=["--lazy"], before_restart=remove_older_generations,
                              after_restart=check_lazy_maps),
    "lazymem_gzip": lambda t: Spec(program(t, "lazymem"), first_progress=20, progress=40, restart_args=["--lazy"],
                                   before_restart=remove_older_generations, after_restart=check_lazy_maps),
    "bigmem": lambda t: Spec(program(t, "bigmem", "--mib", "1024", "--chunk-mib", "8"), first_progress=40,
                             progress=140),
    # 320 MiB rewritten a slice at a time, memory the program marked
    # MADV_DONTFORK and MADV_WIPEONFORK, and a fork() at every step: the
    # checkpoint's forks ahead of the pause (which toggle those flags) must
    # never show in the program's children or its flags.
    "forkflags": lambda t: Spec(program(t, "forkflags"), progress=30),
}


def cycle(t, spec):
    """launch, ckpt, kill, restart, ckpt, kill, restart, verify."""
    t.inherit_pipe = spec.inherit_pipe
    t.new_coordinator()
    t.launch(list(spec.launch_args) + spec.cmd, spec.ready_timeout)
    t.progress(spec.first_progress)
    for round_ in (1, 2):
        spec.before_checkpoint(t)
        t.checkpoint()
        t.progress(spec.progress)
        t.kill_program()
        spec.before_restart(t, round_)
        t.restart(spec.restart_args)
        t.progress(spec.progress, fresh=True)
        spec.after_restart(t)
    t.verify(spec.verify_timeout)
    spec.after_verify(t)


def run_test(env, name):
    if name not in SPECS and name not in SPECIAL:
        raise SystemExit("zdtm.py: unknown test %s (try --list)" % name)
    t = T(env, name)
    ok = False
    try:
        if name in SPECIAL:
            SPECIAL[name](t)
        else:
            cycle(t, SPECS[name](t))
        ok = True
    except TestFailure as e:
        print("FAIL %s: %s" % (name, e), flush=True)
        t.stop_all()
        print(t.report(), flush=True)
    except Skip as e:
        t.stop_all()
        t.cleanup(True)
        print("SKIP %s: %s" % (name, e), flush=True)
        return SKIP
    finally:
        if t.coord:
            t.coord.proc.kill()
        t.stop_all()
        remove_ipc_objects(t)
    known = {p.pid for p in t.procs}
    left = leftovers(known)
    if left:
        ok = False
        print("FAIL %s: processes left behind: %s" % (name, "; ".join("%d %s" % (p, cmdline(p)) for p in left)),
              flush=True)
        kill_leftovers(left, known)
    if ok:
        print("PASS %s" % name, flush=True)
    t.cleanup(ok)
    return 0 if ok else 1

# ---- special flows ----------------------------------------------------------

SPECIAL = {}


def special(fn):
    SPECIAL[fn.__name__[len("flow_"):]] = fn
    return fn


def refused_then_fixed(t, name, words, what):
    """The program holds something the runtime cannot save, as fd 40: -bc
    fails (exit 1) with a message holding every one of words, nothing is
    committed, the program goes on; once it has set that right (asked by
    the file close-fd, answered by fd-closed), checkpoints work, and the
    usual kill/restart/verify follows."""
    t.new_coordinator()
    try:
        t.launch(program(t, name))
    except TestFailure:
        if t.prog.poll() == SKIP:
            raise Skip("no %s here: %s" % (what, t.prog.stderr().strip()))
        raise
    t.progress(20)
    out = t.checkpoint(expect_rc=1)
    check(all(w in out for w in words),
          "the failed checkpoint's message does not name %s (%s): %s" % (what, ", ".join(words), out.strip()))
    log("%s: checkpoint refused as expected: %s" % (t.name, out.strip()))
    t.progress(20)
    gens = [d for d in os.listdir(t.ckpt) if d.startswith("gen-")]
    check(not gens and not os.path.lexists(os.path.join(t.ckpt, "latest")),
          "a refused checkpoint left a generation behind: %s" % os.listdir(t.ckpt))
    with open(t.path("close-fd"), "w"):
        pass
    wait_until(lambda: os.path.exists(t.path("fd-closed")) or t.prog.poll() is not None, 30,
               "the program to close its descriptor")
    t.expect_running("after closing the descriptor")
    rounds(t, 1)
    t.verify()


@special
def flow_unsupported_fd(t):
    """A descriptor kind the runtime cannot save (a userfaultfd); the
    program closes it."""
    refused_then_fixed(t, "unsupported_fd", ["fd 40", "userfaultfd"], "a userfaultfd")


@special
def flow_inotify_renamed(t):
    """An inotify watch whose path no longer leads to its directory (renamed):
    it could not be added again by path; the program adds it by the new one."""
    refused_then_fixed(t, "inotify_renamed", ["fd 40", "inotify", "watch 1"], "an inotify watch on a renamed directory")


@special
def flow_api(t):
    """include/dmtcp.h: the program checkpoints itself with dmtcp_checkpoint()
    (which returns 1), is killed and restarted from that checkpoint, where
    the same call returns 2; twice. A checkpoint asked for while the program
    is between dmtcp_disable_ckpt() and dmtcp_enable_ckpt() waits for it.
    Run alone, the program sees every call report dmtcp absent."""
    r = subprocess.run(t.env.wrap(program(t, "api", "--native")), capture_output=True, text=True, timeout=30,
                       env=t.proc_env, cwd=t.work)
    check(r.returncode == 0, "api --native: %s%s" % (r.stdout, r.stderr))
    t.new_coordinator()
    t.launch(program(t, "api"))
    t.progress(10)

    def answer():
        try:
            return read_text(t.path("answer")).split()
        except FileNotFoundError:
            return []

    gens = 0
    for n in (1, 2):
        with open(t.path("request"), "w"):
            pass
        wait_until(lambda: answer() == ["1", str(n)] or t.prog.poll() is not None, 120,
                   "dmtcp_checkpoint() to return 1 (request %d)" % n)
        t.expect_running("after dmtcp_checkpoint()")
        now = len([d for d in os.listdir(t.ckpt) if d.startswith("gen-")])
        check(now > gens, "dmtcp_checkpoint() returned but no new generation is there: %s" % os.listdir(t.ckpt))
        gens = now
        t.progress(10)
        t.kill_program()
        t.restart()
        wait_until(lambda: answer() == ["2", str(n)] or t.prog.poll() is not None, 60,
                   "dmtcp_checkpoint() to return 2 in the restarted program (request %d)" % n)
        t.progress(10, fresh=True)
        log("%s: request %d: 1 after the checkpoint, 2 after the restart" % (t.name, n))

    with open(t.path("hold"), "w"):
        pass
    wait_until(lambda: os.path.exists(t.path("held")) or t.prog.poll() is not None, 30, "the program to disable checkpoints")
    t.expect_running("after dmtcp_disable_ckpt()")
    bc = subprocess.Popen(t.env.wrap([t.env.command, "-h", "127.0.0.1", "-p", str(t.coord.port), "-bc"]),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=t.proc_env)
    time.sleep(1.5)
    if bc.poll() is not None:
        raise TestFailure("a checkpoint completed while the program had checkpoints disabled: %s" %
                          bc.stdout.read().strip())
    check(not os.path.exists(t.path("released")), "the program left its disabled section by itself")
    with open(t.path("release"), "w"):
        pass
    try:
        out, _ = bc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        bc.kill()
        raise TestFailure("the held checkpoint did not end within 60 s of dmtcp_enable_ckpt()")
    check(bc.returncode == 0, "the held checkpoint failed after dmtcp_enable_ckpt(): %s" % out.strip())
    wait_until(lambda: os.path.exists(t.path("released")) or t.prog.poll() is not None, 30,
               "the program to say it enabled checkpoints")
    log("%s: a checkpoint waited for dmtcp_enable_ckpt(): %s" % (t.name, out.strip()))
    rounds(t, 1, progress=10)
    t.verify()


def rounds(t, n, progress=20):
    """n times: checkpoint, run, kill, restart, run."""
    for _ in range(n):
        t.checkpoint()
        t.progress(progress)
        t.kill_program()
        t.restart()
        t.progress(progress, fresh=True)


@special
def flow_unsupported_sock(t):
    """Sockets the runtime cannot save: a netlink socket, then a Unix pair
    with a descriptor in flight (SCM_RIGHTS). Each makes -bc fail (exit 1)
    naming the fd and what it is; nothing is committed and the program goes
    on. Once both are gone, checkpoints work and the usual kill, restart and
    verify follow."""
    t.new_coordinator()
    t.launch(program(t, "unsupported_sock"))
    t.progress(20)
    for want, step, ack in ((("fd 40", "netlink socket"), "close-fd", "fd-closed"),
                            (("fd 42", "SCM_RIGHTS"), "take-fd", "fd-taken")):
        out = t.checkpoint(expect_rc=1)
        check(all(w in out for w in want), "the failed checkpoint's message does not name %s: %s" %
              (" and ".join(want), out.strip()))
        log("%s: checkpoint refused as expected: %s" % (t.name, out.strip()))
        t.progress(20)
        check(not [d for d in os.listdir(t.ckpt) if d.startswith("gen-")],
              "a refused checkpoint left a generation behind: %s" % os.listdir(t.ckpt))
        with open(t.path(step), "w"):
            pass
        wait_until(lambda: os.path.exists(t.path(ack)) or t.prog.poll() is not None, 30,
                   "the program to act on %s" % step)
        t.expect_running("after %s" % step)
    rounds(t, 2)
    t.verify()


def abort_then_rounds(t, args, refused, trigger, ack, what):
    """A checkpoint of program args refused (its output matches refused),
    with the program going on; then the driver writes the file trigger, the
    program answers with the file ack once it is rid of what (the cause),
    and the usual rounds follow."""
    t.new_coordinator()
    t.launch(program(t, *args))
    t.progress(50)
    out = t.checkpoint(expect_rc=1)
    check(re.search(refused, out), "the checkpoint did not fail on %s: %s" % (what, out.strip()))
    log("%s: checkpoint refused as expected: %s" % (t.name, out.strip()))
    t.progress(200)
    with open(t.path(trigger), "w"):
        pass
    wait_until(lambda: os.path.exists(t.path(ack)) or t.prog.poll() is not None, 30,
               "the program to be rid of %s" % what)
    t.expect_running("once rid of %s" % what)
    rounds(t, 2, progress=100)
    t.verify()


@special
def flow_mqueue_abort(t):
    """A checkpoint that fails (a lease) after the messages of the queues
    were taken out to be saved: every message must be back, in its order,
    and the program, checking each, goes on. Then the usual rounds."""
    abort_then_rounds(t, ("mqueue", "--abort"), r"fd \d+ \(\S+/lease\) holds a lease", "drop-lease", "lease-dropped",
                      "its lease")


@special
def flow_tcp_abort(t):
    """A checkpoint that fails after the TCP drain read megabytes out of the
    connection (a Unix pair with a descriptor in flight, drained later, makes
    it fail): both ends must put them all back, and the program, checking
    every byte, goes on. Then the usual rounds."""
    abort_then_rounds(t, ("tcp", "--abort"), r"fd 61\b.*SCM_RIGHTS", "take-fd", "fd-taken", "fd 61")


class NetnsHosts:
    """Two "hosts": network namespaces joined by a veth pair, 10.99.7.1 and
    10.99.7.2 (as the multi-host test bed, shared/testbed, but a pair of
    our own, named after this driver's pid, so parallel tests do not meet).
    Nothing is configured in our namespace but an unreachable route for
    that network, so a packet meant for the hosts never leaves."""

    NET = "10.99.7"

    def __init__(self):
        self.names = ["zsk%d-h%d" % (os.getpid(), i) for i in (1, 2)]
        self.made = []

        def ip(*args):
            r = subprocess.run(["ip"] + list(args), capture_output=True, text=True)
            if r.returncode:
                raise Skip("cannot make network namespaces here (ip %s: %s)" % (" ".join(args), r.stderr.strip()))
        if os.getuid() != 0 or not shutil.which("ip"):
            raise Skip("network namespaces need root and iproute2")
        ip("route", "replace", "unreachable", self.NET + ".0/24")
        for n in self.names:
            ip("netns", "add", n)
            self.made.append(n)
        ip("link", "add", "veth0", "netns", self.names[0], "type", "veth", "peer", "name", "veth0", "netns",
           self.names[1])
        for i, n in enumerate(self.names):
            ip("-n", n, "link", "set", "lo", "up")
            ip("-n", n, "addr", "add", "%s.%d/24" % (self.NET, i + 1), "dev", "veth0")
            ip("-n", n, "link", "set", "veth0", "up")

    def addr(self, i):
        return "%s.%d" % (self.NET, i + 1)

    def run_on(self, i, cmd):
        return ["ip", "netns", "exec", self.names[i]] + cmd

    def pids(self, i):
        r = subprocess.run(["ip", "netns", "pids", self.names[i]], capture_output=True, text=True)
        return [int(x) for x in r.stdout.split()]

    def close(self):
        for n in self.made:
            for p in self.pids(self.names.index(n)):
                try:
                    os.kill(p, signal.SIGKILL)
                except OSError:
                    pass
            subprocess.run(["ip", "netns", "del", n], capture_output=True)
        self.made = []


@special
def flow_tcp_hosts(t):
    """A TCP connection between two hosts of one computation (network
    namespaces): the server and its coordinator on host 1, the client on
    host 2, megabytes in flight both ways. launch, checkpoint, kill,
    restart each host's process on its host, twice, then verify; after each
    restart the connection must again join 10.99.7.2 to 10.99.7.1 (the
    runtime reconnected it across the hosts, through the coordinator)."""
    if t.env.user:
        raise Skip("the hosts are network namespaces, made as root")
    hosts = NetnsHosts()
    try:
        two_hosts(t, hosts)
    finally:
        hosts.close()


def two_hosts(t, hosts):
    h1 = hosts.addr(0)
    work = [t.path("h1"), t.path("h2")]
    for w in work:
        os.makedirs(w)
    # Members reach the coordinator over TCP across the hosts, so it listens
    # beyond loopback and the members present its secret (in the checkpoint
    # directory, where they look for it); the driver talks to it on its
    # Unix socket.
    n_coord = [0]

    def coordinator():
        n_coord[0] += 1
        pf = os.path.join(t.run, "port%d" % n_coord[0])
        p = Proc(t, "coordinator%d" % n_coord[0], hosts.run_on(0, [t.env.coord, "--port", "0", "--port-file", pf,
                                                                    "--bind", h1, "--ckptdir", t.ckpt]))
        wait_until(lambda: os.path.exists(pf) or p.poll() is not None, 10, "the coordinator's port file")
        check(p.poll() is None, "the coordinator exited: %s" % p.stderr())
        return p, int(read_text(pf))

    def command(*a):
        env = dict(t.proc_env, DMTCP_COORD_SOCKET=os.path.join(t.run, "dmtcp", "default.sock"))
        r = subprocess.run([t.env.command] + list(a), capture_output=True, text=True, timeout=120, env=env)
        return r.returncode, r.stdout + r.stderr

    def heartbeat(i):
        try:
            return int(read_text(os.path.join(work[i], "heartbeat")).strip() or "-1")
        except ValueError:
            return -1

    def progress(n, procs):
        v = [heartbeat(0), heartbeat(1)]
        wait_until(lambda: all(heartbeat(i) >= v[i] + n for i in (0, 1)) or any(p.poll() is not None for p in procs),
                   60, lambda: "both ends to make progress (heartbeats %s, now %d %d)" % (v, heartbeat(0), heartbeat(1)))
        for p in procs:
            check(p.poll() is None, "%s ended (%s): %s" % (p.name, p.describe_exit(), p.stderr(1500)))

    def connection_across(pid):
        """The client's (pid's) TCP connections as host 2 sees them, but
        the runtime's own to the coordinator."""
        r = subprocess.run(hosts.run_on(1, ["ss", "-tnpH", "state", "established"]), capture_output=True, text=True)
        return [l for l in r.stdout.splitlines() if "pid=%d," % pid in l and ":%d " % port not in l]

    coord, port = coordinator()
    launch = lambda i, args: Proc(t, "launch-h%d" % (i + 1), hosts.run_on(i, [t.env.launch, "-j", "-h", h1, "-p",
                                  str(port), "--ckptdir", t.ckpt] + program(t, "tcp") + args), cwd=work[i])
    server = launch(0, ["server", h1])
    wait_until(lambda: os.path.exists(os.path.join(work[0], "port")) or server.poll() is not None, 30,
               "the server's port")
    check(server.poll() is None, "the server ended: %s" % server.stderr())
    client = launch(1, ["client", h1, read_text(os.path.join(work[0], "port")).strip()])
    for w in work:
        wait_until(lambda: os.path.exists(os.path.join(w, "ready")), 30, "both ends to be ready")
    pids = [int(read_text(os.path.join(w, "ready"))) for w in work]
    log("%s: server pid %d on %s, client pid %d on %s" % (t.name, pids[0], hosts.names[0], pids[1], hosts.names[1]))
    procs = [server, client]
    progress(20, procs)
    for round_ in (1, 2):
        rc, out = command("-bc")
        check(rc == 0, "dmtcp_command -bc exited %d: %s" % (rc, out.strip()))
        log("%s: checkpoint ok: %s" % (t.name, out.strip()))
        gen = os.path.realpath(os.path.join(t.ckpt, "latest"))
        progress(20, procs)
        for p in pids:
            os.kill(p, signal.SIGKILL)
        for p in procs:
            p.wait(30)
        coord.kill()
        coord.wait(10)
        coord, port = coordinator()
        images = {}
        for f in os.listdir(gen):
            if f.endswith(".dmtcp"):
                r = subprocess.run([t.env.restart, "--inspect", os.path.join(gen, f)], capture_output=True, text=True)
                m = re.search(r"pid (\d+),", r.stdout)
                check(m, "no pid in the description of %s" % f)
                images[int(m.group(1))] = os.path.join(gen, f)
        check(sorted(images) == sorted(pids), "the images are of processes %s, expected %s" % (sorted(images), pids))
        procs = [Proc(t, "restart%d-h%d" % (round_, i + 1), hosts.run_on(i, [t.env.restart, "-j", "-h", h1, "-p",
                      str(port), images[pids[i]]]), cwd=work[i]) for i in (0, 1)]
        wait_until(lambda: connection_across(pids[1]) or any(p.poll() is not None for p in procs), 60,
                   "the client's connection to be back")
        conns = connection_across(pids[1])
        check(len(conns) == 1 and re.search(r"\s%s:\d+\s+%s:\d+\s" % (re.escape(hosts.addr(1)), re.escape(h1)),
                                            conns[0]),
              "after restart %d the client's connections are not one from %s to %s: %s" %
              (round_, hosts.addr(1), h1, conns))
        log("%s: restart %d: the connection joins the hosts again: %s" % (t.name, round_, " ".join(conns[0].split()[2:4])))
        progress(20, procs)
    os.kill(pids[0], signal.SIGUSR1)
    for p in procs:
        p.wait(120)
    for i, w in enumerate(work):
        res = read_text(os.path.join(w, "result")).strip()
        check(procs[i].p.returncode == 0 and res == "PASS", "%s: %s, result file: %s" %
              (procs[i].name, procs[i].describe_exit(), res or "(none)"))
    coord.kill()
    log("%s: verified: both ends PASS" % t.name)


# Image header layout (common/img.h), for the corruption cases.
HDR_VERSION, HDR_CRC, HDR_FILE_SIZE, HDR_DATA_OFF, HDR_DATA_END = 8, 28, 32, 40, 48
HDR_META_OFF, HDR_META_LEN, HDR_META_CRC, HDR_PID = 56, 64, 72, 104
HEADER_SIZE = 4096
R_BLOCKS, BLOCK_SIZE = 6, 40
ENC_RAW, ENC_DEFLATE = 1, 2


def header_crc(hdr):
    """img_header_crc: crc32 of the 4096-byte header with its crc field 0."""
    return zlib.crc32(hdr[:HDR_CRC] + b"\0\0\0\0" + hdr[HDR_CRC + 4:HEADER_SIZE]) & 0xffffffff


def image_blocks(data, records=False):
    """(file_off, clen, enc) of every stored block, from the metadata; with
    records, also where its block record is."""
    meta_off, meta_len = struct.unpack_from("<QQ", data, HDR_META_OFF)
    out, pos, end = [], meta_off, meta_off + meta_len
    while pos + 8 <= end:
        rtype, rlen = struct.unpack_from("<II", data, pos)
        payload = pos + 8
        if rtype == R_BLOCKS:
            for k in range(rlen // BLOCK_SIZE):
                addr, file_off, ulen, clen, crc, enc, target, index = struct.unpack_from(
                    "<QQIIIHHI", data, payload + k * BLOCK_SIZE)
                if enc in (ENC_RAW, ENC_DEFLATE) and clen >= 64:
                    out.append((file_off, clen, enc) + ((payload + k * BLOCK_SIZE,) if records else ()))
        pos = payload + ((rlen + 7) & ~7)
    return out


def flip(data, off):
    data[off] ^= 0x5a


def mut_truncate_half(d):
    del d[len(d) // 2:]


def mut_truncate_header(d):
    del d[100:]


def mut_empty(d):
    del d[:]


def mut_bitflip_data(d):
    blocks = image_blocks(d)
    check(blocks, "harness: no stored data block found in the image")
    off, clen, _ = max(blocks, key=lambda b: b[1])
    flip(d, off + clen // 2)


def mut_undecodable(d):
    """A deflate block whose checksums all match but that does not inflate
    (reserved block type): the decoder itself must refuse it."""
    blocks = [b for b in image_blocks(d, records=True) if b[2] == ENC_DEFLATE]
    check(blocks, "harness: no deflate block found in the image")
    off, clen, _, rec = blocks[0]
    d[off] = 0x07                                   # BFINAL, BTYPE 11
    struct.pack_into("<I", d, rec + 24, zlib.crc32(bytes(d[off:off + clen])) & 0xffffffff)
    meta_off, meta_len = struct.unpack_from("<QQ", d, HDR_META_OFF)
    struct.pack_into("<I", d, HDR_META_CRC, zlib.crc32(bytes(d[meta_off:meta_off + meta_len])) & 0xffffffff)
    struct.pack_into("<I", d, HDR_CRC, header_crc(bytes(d)))


def mut_bitflip_meta(d):
    meta_off, meta_len = struct.unpack_from("<QQ", d, HDR_META_OFF)
    flip(d, meta_off + meta_len // 2)


def mut_bitflip_header(d):
    flip(d, HDR_PID)


def mut_magic(d):
    d[0:8] = b"DMTCPIMX"


def mut_version(d):
    struct.pack_into("<I", d, HDR_VERSION, 2)
    struct.pack_into("<I", d, HDR_CRC, header_crc(bytes(d)))


# name: (mutation of the image bytes or None, of the MANIFEST text or None,
#        restart the directory (else the image itself), what the message must say)
BAD_CASES = [
    ("truncated", mut_truncate_half, None, True, r"truncated"),
    ("truncated_header", mut_truncate_header, None, True, r"truncated"),
    ("empty", mut_empty, None, True, r"truncated|empty"),
    ("bitflip_data", mut_bitflip_data, None, True, r"corrupt|checksum"),
    ("bitflip_data_file", mut_bitflip_data, None, False, r"corrupt|checksum"),
    ("bitflip_meta", mut_bitflip_meta, None, True, r"corrupt|checksum|metadata"),
    ("undecodable_deflate", mut_undecodable, None, False, r"does not decompress"),
    ("bitflip_header", mut_bitflip_header, None, True, r"header"),
    ("bad_magic", mut_magic, None, True, r"magic|not a dmtcp"),
    ("bad_version", mut_version, None, False, r"version"),
    ("manifest_crc", None, "crc", True, r"MANIFEST"),
    ("manifest_syntax", None, "syntax", True, r"MANIFEST"),
    ("manifest_missing_image", None, "missing", True, r"No such file"),
]


def copy_generation(t, case):
    src = os.path.join(t.ckpt, "gen-000001")
    top = os.path.join(t.root, "bad", case)
    dst = os.path.join(top, "gen-000001")
    shutil.copytree(src, dst)
    if t.env.user:
        for p in (os.path.dirname(top), top, dst) + tuple(os.path.join(dst, f) for f in os.listdir(dst)):
            os.chown(p, t.env.uid, t.env.gid)
    image = [os.path.join(dst, f) for f in os.listdir(dst) if f.endswith(".dmtcp")]
    check(len(image) == 1, "harness: expected one image in %s" % dst)
    return top, dst, image[0]


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def port_listening(port):
    s = socket.socket()
    try:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0
    finally:
        s.close()


def expect_refusal(t, name, target, rc_want, pattern, names, extra=()):
    """dmtcp_restart on a bad target: exit rc_want, one stderr line that
    names one of names and matches pattern, nothing left running."""
    port = free_port()
    p = Proc(t, "restart-" + name, [t.env.restart, "-h", "127.0.0.1", "-p", str(port)] + list(extra) + [target])
    rc = p.wait(60)
    err = read_text(p.err_path).strip()
    lines = err.splitlines()
    problems = []
    if rc != rc_want:
        problems.append("exit %s, expected %d" % (p.describe_exit(), rc_want))
    if len(lines) != 1:
        problems.append("%d lines on stderr, expected 1" % len(lines))
    if not any(n in err for n in names):
        problems.append("the message does not name %s" % " or ".join(names))
    if not re.search(pattern, err, re.I):
        problems.append("the message does not say /%s/" % pattern)
    if port_listening(port):
        problems.append("a coordinator was left listening on port %d" % port)
    left = leftovers({q.pid for q in t.procs})
    if left:
        problems.append("processes left behind: %s" % "; ".join("%d %s" % (q, cmdline(q)) for q in left))
        for q in left:
            try:
                os.kill(q, signal.SIGKILL)
            except OSError:
                pass
    if problems:
        log("%s: %s: %s -- stderr: %s" % (t.name, name, ", ".join(problems), err or "(empty)"))
        return "%s (%s; stderr: %s)" % (name, ", ".join(problems), err or "(empty)")
    log("%s: %s: refused as expected: %s" % (t.name, name, err))
    return None


@special
def flow_locks_conflict(t):
    """A lock the program held at the checkpoint is taken by a process
    outside the computation before the restart: the restart fails (exit
    99) naming the descriptor, the file and the lock, and leaves nothing
    behind; once the lock is free the restart works and the program
    passes."""
    import fcntl
    t.new_coordinator()
    t.launch(program(t, "locks"))
    t.progress(20)
    t.checkpoint()
    t.kill_program()
    with open(t.path("a"), "r+b") as f:
        fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB, 100, 0)
        t.new_coordinator()
        t.n_restart += 1
        p = Proc(t, "restart%d" % t.n_restart, [t.env.restart, "-j", "-h", "127.0.0.1", "-p", str(t.coord.port), t.ckpt])
        rc = p.wait(60)
        err = p.stderr()
        check(rc == FAIL_RC, "dmtcp_restart exited %d with the program's lock taken, expected %d: %s" %
              (rc, FAIL_RC, err.strip()))
        check(re.search(r"fd \d+ \(\S+/work/a\): cannot take its fcntl write lock on bytes 0-99 again", err),
              "the failed restart does not name the lock: %s" % err.strip())
        log("%s: restart refused as expected: %s" % (t.name, err.strip().splitlines()[-1]))
    t.restart()
    t.progress(50, fresh=True)
    t.verify()


@special
def flow_full_disk(t):
    """A checkpoint that meets a full disk fails with a message that says
    so; the program runs on, the previous generation stays the latest and
    restarts; with room again, checkpoints succeed. The program holds 160
    MiB, so its image is written with O_DIRECT (preload/write.c). The
    checkpoint directory is a tmpfs of 400 MiB mounted for the test."""
    if os.geteuid() != 0 or t.env.user:
        raise Skip("mounting a small file system needs root")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=400m,mode=0755", "zdtm-full-disk", t.ckpt],
                       capture_output=True, text=True)
    if r.returncode:
        raise Skip("cannot mount a tmpfs: %s" % r.stderr.strip())
    try:
        t.new_coordinator()
        t.launch(program(t, "bigmem", "--mib", "160", "--chunk-mib", "8"))
        t.progress(25)
        t.checkpoint()
        latest = os.readlink(os.path.join(t.ckpt, "latest"))
        filler = os.path.join(t.ckpt, "filler")
        st = os.statvfs(t.ckpt)
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            os.posix_fallocate(fd, 0, st.f_bavail * st.f_frsize - (8 << 20))
        finally:
            os.close(fd)
        t.progress(5)
        out = t.checkpoint(expect_rc=1)
        check(re.search(r"No space left on device", out), "the failed checkpoint does not say why: %s" % out.strip())
        log("%s: checkpoint refused as expected: %s" % (t.name, out.strip().splitlines()[-1]))
        t.expect_running("after the failed checkpoint")
        check(os.readlink(os.path.join(t.ckpt, "latest")) == latest,
              "latest moved from %s to %s after a failed checkpoint" % (latest, os.readlink(os.path.join(t.ckpt, "latest"))))
        check(not [n for n in os.listdir(t.ckpt) if n not in (latest, "latest", "filler", "dmtcp_restart_script.sh")],
              "the failed checkpoint left files behind: %s" % sorted(os.listdir(t.ckpt)))
        t.progress(5)
        t.kill_program()
        os.unlink(filler)
        # The generation before the failure restarts; then the usual round.
        t.restart_twice(25)
    finally:
        if t.coord:
            t.coord.stop()
            t.coord = None
        t.stop_all()
        subprocess.run(["umount", "-l", t.ckpt], capture_output=True)


@special
def flow_stopped(t):
    """A process stopped by SIGSTOP (^Z in its terminal) cannot stop for a
    checkpoint. After the coordinator's --stop-timeout the checkpoint fails
    naming it; the previous generation stays the latest. Continued, the
    process finds the abort waiting, stays in the computation, and
    checkpoints and restarts as usual."""
    t.new_coordinator(["--stop-timeout", "2"])
    t.launch(program(t, "counter"))
    t.progress(20)
    t.checkpoint()
    latest = os.readlink(os.path.join(t.ckpt, "latest"))
    os.kill(t.host_pid, signal.SIGSTOP)
    t0 = time.monotonic()
    out = t.checkpoint(expect_rc=1)
    took = time.monotonic() - t0
    check(re.search(r"not stopped within 2 s \(phase suspend\): 1 of 1 processes not done: "
                    r"member \d+ \([^,]*, pid %d on " % t.pid, out),
          "the timed-out checkpoint does not say who did not stop: %s" % out.strip())
    check(2 <= took < 15, "the checkpoint gave up after %.1f s, with --stop-timeout 2" % took)
    log("%s: checkpoint of the stopped process refused after %.1f s: %s" %
        (t.name, took, out.strip().splitlines()[-1]))
    check(os.readlink(os.path.join(t.ckpt, "latest")) == latest, "latest moved after an aborted checkpoint")
    check(not [n for n in os.listdir(t.ckpt) if n not in (latest, "latest", "dmtcp_restart_script.sh")],
          "the aborted checkpoint left files behind: %s" % sorted(os.listdir(t.ckpt)))
    os.kill(t.host_pid, signal.SIGCONT)
    t.progress(20)
    rc, out = t.coord.command("-s")
    check(rc == 0 and "NUM_PEERS=1" in out and "RUNNING=yes" in out,
          "the continued process is no longer a running member: %s" % out.strip())
    t.checkpoint()
    check(os.readlink(os.path.join(t.ckpt, "latest")) != latest, "latest did not move after the next checkpoint")
    t.kill_program()
    t.restart_twice(20)


@special
def flow_bad_images(t):
    """Damaged images and MANIFESTs are refused with exit 100 and one line
    naming the file, another user's image with exit 101; root may restart
    it with --no-strict-uid-checking."""
    t.new_coordinator()
    t.launch(program(t, "counter"))
    t.progress(20)
    t.checkpoint()
    t.kill_program()
    t.coord.stop()
    t.coord = None
    gen = os.path.join(t.ckpt, "gen-000001")
    img = [f for f in os.listdir(gen) if f.endswith(".dmtcp")][0]
    with open(os.path.join(gen, img), "rb") as f:
        orig = f.read()
    check(header_crc(orig) == struct.unpack_from("<I", orig, HDR_CRC)[0],
          "harness: the header crc computed here does not match the image's (layout changed?)")
    failures, cases = [], 0

    def refusal(*a, **k):
        nonlocal cases
        cases += 1
        r = expect_refusal(*a, **k)
        if r:
            failures.append(r)

    for name, mut_img, mut_man, use_dir, pattern in BAD_CASES:
        top, dst, image = copy_generation(t, name)
        manifest = os.path.join(dst, "MANIFEST")
        if mut_img:
            data = bytearray(orig)
            mut_img(data)
            with open(image, "wb") as f:
                f.write(data)
        if mut_man == "crc":
            lines = read_text(manifest).split("\n")
            for k, l in enumerate(lines):
                if l.startswith("image "):
                    w = l.split(" ")
                    w[3] = "%08x" % (int(w[3], 16) ^ 1)
                    lines[k] = " ".join(w)
            with open(manifest, "w") as f:
                f.write("\n".join(lines))
        elif mut_man == "syntax":
            text = read_text(manifest)
            with open(manifest, "w") as f:
                f.write(text.replace("\nend\n", "\n"))
        elif mut_man == "missing":
            os.unlink(image)
        names = [image] + ([manifest] if mut_man in ("crc", "syntax") else [])
        refusal(t, name, top if use_dir else image, IMAGE_RC, pattern, names)

    # Another user's image.
    top, dst, image = copy_generation(t, "foreign")
    nobody = pwd.getpwnam("nobody")
    os.chown(image, nobody.pw_uid, nobody.pw_gid)
    refusal(t, "foreign_uid", top, PERM_RC, r"uid|user|belongs", [image])
    if t.env.user is None:
        # Root may override; the program runs on and verifies itself.
        t.restart(args=["--no-strict-uid-checking"], target=top)
        t.progress(20, fresh=True)
        t.verify()
    else:
        refusal(t, "foreign_uid_no_strict", top, PERM_RC, r"not allowed|uid|belongs", [image],
                extra=["--no-strict-uid-checking"])
        # An image the caller cannot read at all.
        top, dst, image = copy_generation(t, "unreadable")
        os.chmod(image, 0)
        os.chown(image, 0, 0)
        refusal(t, "unreadable", top, PERM_RC, r"permission denied", [image])
    check(not failures, "%d of %d bad-image cases wrong:\n  %s" % (len(failures), cases, "\n  ".join(failures)))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", help="meson build directory (instead of the environment)")
    ap.add_argument("--user", help="run the test as this user (created if missing)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directories")
    ap.add_argument("--list", action="store_true", help="list the tests")
    ap.add_argument("tests", nargs="*")
    args = ap.parse_args()
    if args.list:
        print("\n".join(sorted(list(SPECS) + list(SPECIAL))))
        return 0
    if not args.tests:
        ap.error("name a test (or --list)")
    set_subreaper()
    # Cores of crashing programs land in their work directory (the runtime
    # restores RLIMIT_CORE, so it is set before the launch).
    try:
        resource.setrlimit(resource.RLIMIT_CORE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    except (ValueError, OSError):
        pass
    env = Env(args)
    rc = 0
    try:
        if args.user:
            env.as_user(args.user)
        for name in args.tests:
            r = run_test(env, name)
            if r == 1 or (r == SKIP and len(args.tests) == 1):
                rc = r
    except Skip as e:
        print("SKIP: %s" % e)
        return SKIP
    finally:
        env.cleanup()
    return rc


if __name__ == "__main__":
    sys.exit(main())
