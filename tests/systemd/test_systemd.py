#!/usr/bin/env python3
"""System tests of dmtcp's systemd side under the real thing: a systemd user
manager, journald, and (for the polkit tests) the system D-Bus and polkitd.

    test_systemd.py TEST        run one test
    test_systemd.py --list      list the tests

Each test installs the project (meson install --destdir) into its own
temporary directory, relocates the unit files to where the tree landed (the
only absolute paths in it), starts its own `systemd --user` (own HOME and
XDG_RUNTIME_DIR, in its own cgroup below user@UID.service so that journald
records _SYSTEMD_USER_UNIT), links the units, and runs real jobs. What it
starts it stops, by PID: the manager, journald, dbus-daemon and polkitd
where none ran; files it put in system places (the journal catalog, the
polkit action, a polkit rule) it removes.

Needs root where no systemd is PID 1 (CI containers, VMs like this one): it
creates /run/systemd/system and cgroups. Exit 0 pass, 77 skipped (with the
reason), anything else fail.

Environment (set by meson): DMTCP_BUILD_ROOT, DMTCP_SOURCE_ROOT, MESON,
SDPROG."""

import json
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time

SKIP = 77
BUILD = os.environ.get("DMTCP_BUILD_ROOT", "")
SOURCE = os.environ.get("DMTCP_SOURCE_ROOT", "")
MESON = os.environ.get("MESON", "")
SDPROG = os.environ.get("SDPROG", "")
NOBODY = 65534

MSG_COMMITTED = "00cef09204084553a62a15b7e86b3f4a"
MSG_STARTED = "35ebdebbf7c341e4a24f96f82222c520"
MSG_REFUSED = "f9f143547d934576b7243d4a419df04e"
MSG_RESTARTED = "b56a4571c34143b6a05882ea89f2a0e2"

TESTS = {}


def test(fn):
    TESTS[fn.__name__[len("test_"):]] = fn
    return fn


def unprivileged(fn):
    """Run the test in the user manager of an unprivileged user (nobody)."""
    fn.uid = NOBODY
    return fn


class Skip(Exception):
    pass


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def wait_until(pred, timeout, what, step=0.1):
    end = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > end:
            raise AssertionError("timed out after %.0f s waiting for %s" % (timeout, what))
        time.sleep(step)


def log(*a):
    print("#", *a, flush=True)


def sock_alive(path, kind=socket.SOCK_DGRAM):
    """Does a process listen on this Unix socket?"""
    s = socket.socket(socket.AF_UNIX, kind)
    try:
        s.connect(path)
        return True
    except OSError:
        return False
    finally:
        s.close()


def read_status(pid):
    out = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            k, _, v = line.partition(":")
            out[k] = v.strip()
    return out


def ticks(path):
    """The counts in an sdprog file, and markers written by the tests."""
    try:
        with open(path) as f:
            return [l.split() for l in f.read().splitlines() if l]
    except FileNotFoundError:
        return []


def tick_values(path):
    return [int(l[1]) for l in ticks(path) if l and l[0] == "tick"]


def last_tick(path):
    v = tick_values(path)
    return v[-1] if v else 0


def mark(path, text):
    with open(path, "a") as f:
        f.write("mark %s\n" % text)


def after_mark(path, text):
    """Counts written after the marker."""
    lines = ticks(path)
    for i, l in enumerate(lines):
        if l[:2] == ["mark", text]:
            return [int(x[1]) for x in lines[i + 1:] if x[0] == "tick"]
    raise AssertionError("no marker %s in %s" % (text, path))


def before_mark(path, text):
    """The last count before the marker."""
    last = 0
    for l in ticks(path):
        if l[:2] == ["mark", text]:
            return last
        if l[0] == "tick":
            last = int(l[1])
    raise AssertionError("no marker %s in %s" % (text, path))


def no_bad(path):
    bad = [l for l in ticks(path) if l[0] == "BAD"]
    check(not bad, "the program found its own memory damaged: %r" % bad)


class Env:
    """One test's world: an installed tree, journald, a user manager."""

    def __init__(self, tmp, uid=0):
        self.tmp = tmp
        self.uid = uid               # whose user manager: root, or an unprivileged user
        self.t0 = int(time.time()) - 1
        self.started = []            # (name, Popen) we started, stopped in reverse
        self.created = []            # files and directories we put in system places
        self.created_trees = []      # what our daemons leave behind, removed after they stop
        self.cgroups = []
        self.manager = None
        os.chmod(tmp, 0o755)         # nobody reaches the install tree and shared/
        self.home = os.path.join(tmp, "home")
        self.rt = os.path.join(tmp, "rt")
        self.shared = os.path.join(tmp, "shared")
        for d, m in ((self.home, 0o700), (self.rt, 0o700), (self.shared, 0o1777)):
            os.makedirs(d)
            os.chmod(d, m)
        self.work = os.path.join(self.home, "work")
        os.makedirs(self.work)
        if uid:
            for d in (self.home, self.rt, self.work):
                os.chown(d, uid, uid)

    # -- preconditions ------------------------------------------------------

    def preconditions(self):
        if os.geteuid() != 0:
            raise Skip("needs root: starts its own journald and systemd --user, creates cgroups and /run/systemd/system")
        comm = open("/proc/1/comm").read().strip()
        if comm == "systemd":
            raise Skip("systemd is PID 1 here: these tests start their own user manager in a private cgroup, "
                       "which is meant for containers and VMs without systemd (run them there)")
        for p in ("/usr/lib/systemd/systemd", "/usr/lib/systemd/systemd-journald"):
            if not os.access(p, os.X_OK):
                raise Skip("%s is missing (install systemd)" % p)
        for t in ("systemctl", "journalctl", "systemd-analyze", "setpriv", "timeout"):
            if not shutil.which(t):
                raise Skip("%s is missing" % t)
        if not SDPROG or not BUILD:
            raise Skip("run through meson test (DMTCP_BUILD_ROOT, SDPROG unset)")

    # -- running things -----------------------------------------------------

    def env(self, extra=None):
        e = {
            "PATH": os.path.join(self.root, "bin") + ":/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": self.home,
            "XDG_RUNTIME_DIR": self.rt,
            "USER": "root" if not self.uid else "nobody", "LOGNAME": "root" if not self.uid else "nobody",
            "SHELL": "/bin/sh", "LANG": "C.UTF-8",
            "MANPATH": os.path.join(self.root, "share", "man") + ":",
            "SYSTEMD_PAGER": "", "SYSTEMD_COLORS": "0", "SYSTEMD_LESS": "",
        }
        if extra:
            e.update(extra)
        return e

    def run(self, cmd, timeout=60, env=None, user=None, check_rc=None, input=None):
        """Run a client with timeout(1) around it (a client of a socket whose
        service fails could otherwise hang)."""
        if user is not None:
            cmd = ["setpriv", "--reuid=%d" % user, "--regid=%d" % user, "--clear-groups"] + cmd
        full = ["timeout", "-k", "5", str(timeout)] + cmd
        r = subprocess.run(full, capture_output=True, text=True, env=env or self.env(), timeout=timeout + 15,
                           input=input, stdin=None if input is not None else subprocess.DEVNULL)
        if check_rc is not None and r.returncode != check_rc:
            raise AssertionError("%s: exit %d, wanted %d\nstdout: %s\nstderr: %s" % (
                " ".join(cmd), r.returncode, check_rc, r.stdout, r.stderr))
        return r

    def as_user(self):
        """Clients of the user manager run as its user."""
        return self.uid or None

    def ctl(self, *args, rc=0, timeout=120):
        return self.run(["dmtcpctl"] + list(args), timeout=timeout, check_rc=rc, user=self.as_user())

    def systemctl(self, *args, rc=0, timeout=60):
        return self.run(["systemctl", "--user", "--no-pager"] + list(args), timeout=timeout, check_rc=rc,
                        user=self.as_user())

    def show(self, unit, *props):
        r = self.systemctl("show", unit, "-p", ",".join(props))
        return dict(l.split("=", 1) for l in r.stdout.splitlines() if "=" in l)

    def journal(self, *matches, timeout=20):
        """Entries of this test only: the journal keeps earlier runs' jobs of the same names."""
        r = self.run(["journalctl", "--no-pager", "-o", "json", "--since=@%d" % self.t0] + list(matches),
                     timeout=timeout)
        out = []
        for l in r.stdout.splitlines():
            try:
                out.append(json.loads(l))
            except ValueError:
                pass
        return out

    def unit_messages(self, unit, identifier):
        """MESSAGEs of a user unit. journald attributes a line to its unit
        from the writer's cgroup, which it may no longer find when the
        writer was short-lived and is gone: such lines are found by their
        SYSLOG_IDENTIFIER (the program's name) instead."""
        seen, out = set(), []
        for e in (self.journal("_SYSTEMD_USER_UNIT=" + unit) +
                  [e for e in self.journal("SYSLOG_IDENTIFIER=" + identifier)
                   if e.get("_SYSTEMD_USER_UNIT", unit) == unit]):
            key = e.get("__CURSOR")
            if key not in seen:
                seen.add(key)
                out.append(e.get("MESSAGE", ""))
        return out

    # -- set-up ---------------------------------------------------------------

    def install(self):
        dest = os.path.join(self.tmp, "dest")
        if MESON and os.access(MESON, os.X_OK):
            cmd = [MESON, "install", "-C", BUILD, "--no-rebuild", "--destdir", dest, "--quiet"]
        else:
            cmd = [shutil.which("ninja") or shutil.which("ninja-build") or "ninja", "-C", BUILD, "install"]
        r = subprocess.run(["timeout", "300"] + cmd, capture_output=True, text=True, env=dict(os.environ, DESTDIR=dest))
        check(r.returncode == 0, "meson install failed: %s %s" % (r.stdout, r.stderr))
        self.install_log = r.stdout + r.stderr
        opts = {o["name"]: o["value"] for o in
                json.load(open(os.path.join(BUILD, "meson-info", "intro-buildoptions.json")))}
        self.prefix = opts["prefix"]
        self.sanitized = bool(opts.get("sanitize"))
        self.root = dest + self.prefix
        self.bindir = os.path.join(self.root, opts["bindir"])
        self.libexec = os.path.join(self.root, opts["libexecdir"], "dmtcp")
        self.unitdir = os.path.join(self.root, opts["userunitdir"] or "lib/systemd/user")
        self.catalogdir = os.path.join(self.root, opts["catalogdir"] or "lib/systemd/catalog")
        self.datadir = os.path.join(self.root, opts["datadir"])
        for f in ("dmtcpctl", "dmtcp_launch", "dmtcp_restart", "dmtcp_command", "dmtcp_coordinator"):
            check(os.access(os.path.join(self.bindir, f), os.X_OK), "installed %s" % f)
        check(os.access(os.path.join(self.libexec, "dmtcp-job"), os.X_OK), "installed dmtcp-job")
        # The unit files name the configured prefix: point them at the tree.
        self.units = sorted(os.listdir(self.unitdir))
        check(self.units == ["dmtcp-coordinator@.service", "dmtcp-coordinator@.socket", "dmtcp@.service"],
              "installed units: %r" % self.units)
        for u in self.units:
            p = os.path.join(self.unitdir, u)
            text = open(p).read()
            text = re.sub(r"^(Exec\w+=)" + re.escape(self.prefix + "/"), r"\g<1>" + self.root + "/", text, flags=re.M)
            open(p, "w").write(text)
        for l in open(os.path.join(self.unitdir, "dmtcp@.service")):
            if l.startswith("ExecStart="):
                check(l.split("=", 1)[1].split()[0] == os.path.join(self.libexec, "dmtcp-job"), "relocated %s" % l)
        # The job's program, where nobody can run it too.
        self.prog = os.path.join(self.shared, "sdprog")
        shutil.copy(SDPROG, self.prog)
        os.chmod(self.prog, 0o755)

    def start_journald(self):
        sock = "/run/systemd/journal/socket"
        if sock_alive(sock):
            return
        if not os.path.isdir("/run/systemd/journal"):
            os.makedirs("/run/systemd/journal")
            self.created_trees.append("/run/systemd/journal")   # its sockets stay behind otherwise
        p = subprocess.Popen(["setsid", "/usr/lib/systemd/systemd-journald"], stdin=subprocess.DEVNULL,
                             stdout=open(os.path.join(self.tmp, "journald.log"), "wb"), stderr=subprocess.STDOUT)
        self.started.append(("systemd-journald", p))
        wait_until(lambda: sock_alive(sock) or p.poll() is not None, 20, "journald")
        check(p.poll() is None, "journald exited: %s" % open(os.path.join(self.tmp, "journald.log")).read())

    def cgroup_dirs(self):
        rel = "/user.slice/user-%d.slice/user@%d.service/dmtcp-test-%d.slice" % (self.uid, self.uid, os.getpid())
        if os.path.isdir("/sys/fs/cgroup/unified"):
            tops = ["/sys/fs/cgroup/unified", "/sys/fs/cgroup/systemd"]      # hybrid
        elif os.path.exists("/sys/fs/cgroup/cgroup.controllers"):
            tops = ["/sys/fs/cgroup"]                                          # unified
        else:
            tops = ["/sys/fs/cgroup/systemd"]                                  # legacy
        return [t + rel for t in tops if os.path.isdir(t)]

    def start_manager(self):
        if not os.path.isdir("/run/systemd/system"):
            os.makedirs("/run/systemd/system")
            self.created.append("/run/systemd/system")
        dirs = self.cgroup_dirs()
        if not dirs:
            raise Skip("no cgroup file system under /sys/fs/cgroup: systemd --user cannot run here")
        for d in dirs:
            # Remember which levels we make, to remove exactly those.
            parts = d.split("/")
            for i in range(5, len(parts) + 1):
                p = "/".join(parts[:i])
                if not os.path.isdir(p):
                    try:
                        os.mkdir(p)
                    except OSError as e:
                        raise Skip("cannot create cgroup %s (%s): systemd --user cannot run here "
                                   "(a container with a read-only cgroup file system?)" % (p, e.strerror))
                    self.cgroups.append(p)
            if self.uid:
                # Delegated to the user, as logind does for user@UID.service.
                for sub, dirnames, files in os.walk(d):
                    for x in [sub] + [os.path.join(sub, f) for f in files]:
                        os.chown(x, self.uid, self.uid)
        # A root shell moves itself into the cgroup (moving across cgroups
        # needs rights on their common ancestor), then becomes the manager.
        become = "setpriv --reuid=%d --regid=%d --clear-groups " % (self.uid, self.uid) if self.uid else ""
        script = "for d in %s; do echo $$ > \"$d/cgroup.procs\" || exit 97; done; exec %s/usr/lib/systemd/systemd --user" % \
            (" ".join("'%s'" % d for d in dirs), become)
        self.manager_log = os.path.join(self.tmp, "manager.log")
        env = self.env()
        env.pop("MANPATH")
        if self.sanitized:
            # LeakSanitizer needs ptrace, which the coordinator refuses by design.
            env["ASAN_OPTIONS"] = "detect_leaks=0"
        self.manager = subprocess.Popen(["setsid", "sh", "-c", script], env=env, stdin=subprocess.DEVNULL,
                                        stdout=open(self.manager_log, "ab"), stderr=subprocess.STDOUT)

        def up():
            if self.manager.poll() is not None:
                raise AssertionError("systemd --user exited with %s: %s" % (self.manager.returncode,
                                                                             open(self.manager_log).read()[-2000:]))
            r = self.run(["systemctl", "--user", "is-system-running"], timeout=10, user=self.as_user())
            return r.stdout.strip() in ("running", "degraded")
        wait_until(up, 30, "the user manager", step=0.2)

    def link_units(self):
        self.systemctl("link", *[os.path.join(self.unitdir, u) for u in self.units])

    def setup(self):
        self.preconditions()
        self.install()
        self.start_journald()
        self.start_manager()
        self.link_units()
        return self

    # -- system places --------------------------------------------------------

    def put_system_file(self, src, dst):
        """Copy src to a fixed system path unless something is there already."""
        if os.path.exists(dst):
            return False
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        shutil.copy(src, dst)
        self.created.append(dst)
        return True

    def install_catalog(self):
        dst = "/usr/lib/systemd/catalog/dmtcp.catalog"
        self.put_system_file(os.path.join(self.catalogdir, "dmtcp.catalog"), dst)
        self.run(["journalctl", "--update-catalog"], check_rc=0)
        self.catalog_updated = True

    def start_polkit(self):
        """The system bus and polkitd, with our action installed."""
        if not os.path.exists("/usr/lib/polkit-1/polkitd") or not shutil.which("dbus-daemon"):
            raise Skip("polkitd or dbus-daemon is missing (Debian: polkitd, dbus-daemon)")
        self.put_system_file(os.path.join(self.datadir, "polkit-1", "actions", "org.dmtcp.policy"),
                             "/usr/share/polkit-1/actions/org.dmtcp.policy")
        bus = "/run/dbus/system_bus_socket"
        if not sock_alive(bus, socket.SOCK_STREAM):
            if not os.path.isdir("/run/dbus"):
                os.makedirs("/run/dbus")
                self.created_trees.append("/run/dbus")
            else:
                self.created_trees.append(bus)                      # the socket it leaves behind
            p = subprocess.Popen(["dbus-daemon", "--system", "--nofork", "--nopidfile"], stdin=subprocess.DEVNULL,
                                 stdout=open(os.path.join(self.tmp, "dbus.log"), "wb"), stderr=subprocess.STDOUT)
            self.started.append(("dbus-daemon", p))
            wait_until(lambda: sock_alive(bus, socket.SOCK_STREAM), 20, "the system bus")

        def has_polkit():
            r = self.run(["busctl", "--system", "call", "org.freedesktop.DBus", "/org/freedesktop/DBus",
                          "org.freedesktop.DBus", "NameHasOwner", "s", "org.freedesktop.PolicyKit1"], timeout=10)
            return r.stdout.strip() == "b true"
        if not has_polkit():
            p = subprocess.Popen(["setsid", "/usr/lib/polkit-1/polkitd", "--no-debug"], stdin=subprocess.DEVNULL,
                                 stdout=open(os.path.join(self.tmp, "polkitd.log"), "wb"), stderr=subprocess.STDOUT)
            self.started.append(("polkitd", p))
            wait_until(has_polkit, 20, "polkitd on the system bus")
        r = self.run(["pkaction", "--action-id", "org.dmtcp.restart-foreign-image", "--verbose"], timeout=20)
        wait_until(lambda: self.run(["pkaction", "--action-id", "org.dmtcp.restart-foreign-image"], timeout=20)
                   .returncode == 0, 20, "polkit to know org.dmtcp.restart-foreign-image")

    # -- jobs -----------------------------------------------------------------

    def job_file(self, name):
        return os.path.join(self.home, ".config", "dmtcp", name + ".conf")

    def state_dir(self, name):
        return os.path.join(self.home, ".local", "state", "dmtcp", name)

    def gens(self, name):
        d = self.state_dir(name)
        if not os.path.isdir(d):
            return []
        return sorted(int(n[4:]) for n in os.listdir(d) if re.fullmatch(r"gen-\d{6}", n))

    def launch(self, name, *args, step=100, extra=(), progfile=None):
        out = progfile or os.path.join(self.shared, name + ".ticks")
        r = self.run(["dmtcpctl", "launch", name, "--workdir", self.work] + list(extra) +
                     ["--", self.prog, out, str(step)] + [str(a) for a in args],
                     timeout=120, user=self.as_user())
        check(r.returncode == 0, "dmtcpctl launch %s: %d %s %s" % (name, r.returncode, r.stdout, r.stderr))
        return out, r

    def unit_state(self, name, unit=None):
        return self.show(unit or "dmtcp@%s.service" % name, "ActiveState", "SubState", "Result", "ExecMainStatus",
                         "ExecMainCode", "NRestarts", "MainPID")

    def wait_ticks_past(self, path, n, timeout=30):
        wait_until(lambda: last_tick(path) >= n, timeout, "%s to count to %d (now %d)" % (path, n, last_tick(path)))

    # -- teardown -------------------------------------------------------------

    def dump(self):
        """What helps to understand a failure."""
        try:
            units = self.run(["systemctl", "--user", "--no-pager", "--all", "list-units", "dmtcp*"], timeout=10,
                             user=self.as_user())
            print(units.stdout)
            r = self.run(["journalctl", "--no-pager", "-o", "short-precise", "-n", "80",
                          "--user-unit=dmtcp*"], timeout=20)
            print(r.stdout[-6000:])
        except Exception as e:
            print("(no journal: %s)" % e)
        try:
            print("manager log:", open(self.manager_log).read()[-3000:])
        except Exception:
            pass

    def teardown(self):
        if self.manager and self.manager.poll() is None:
            self.run(["systemctl", "--user", "exit"], timeout=30, user=self.as_user())
            try:
                self.manager.wait(30)
            except subprocess.TimeoutExpired:
                self.manager.kill()
                self.manager.wait(10)
        self.kill_cgroups()
        for name, p in reversed(self.started):
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(20)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(10)
        for path in reversed(self.created_trees):
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)
            elif os.path.lexists(path):
                os.unlink(path)
        for path in reversed(self.created):
            try:
                if os.path.isdir(path):
                    os.rmdir(path)
                else:
                    os.unlink(path)
            except OSError as e:
                log("cannot remove %s: %s" % (path, e))
        if getattr(self, "catalog_updated", False):
            subprocess.run(["timeout", "60", "journalctl", "--update-catalog"], capture_output=True)

    def kill_cgroups(self):
        """Whatever is left in our cgroups (there should be nothing) dies, by PID."""
        for top in self.cgroup_dirs():
            if not os.path.isdir(top):
                continue
            for _ in range(50):
                pids = []
                for d, subdirs, files in os.walk(top):
                    try:
                        pids += [int(x) for x in open(os.path.join(d, "cgroup.procs")).read().split()]
                    except OSError:
                        pass
                if not pids:
                    break
                for pid in pids:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                time.sleep(0.1)
            for d, subdirs, files in sorted(os.walk(top), key=lambda x: -len(x[0])):
                try:
                    os.rmdir(d)
                except OSError:
                    pass
        for p in reversed(self.cgroups):
            try:
                os.rmdir(p)
            except OSError:
                pass

    def restart_manager_cleanly(self):
        """A logout or a clean reboot: the manager stops every unit and exits."""
        self.run(["systemctl", "--user", "exit"], timeout=120, check_rc=0, user=self.as_user())
        self.manager.wait(120)
        self.kill_cgroups()
        self.cgroups = []
        shutil.rmtree(self.rt)
        os.makedirs(self.rt)
        os.chmod(self.rt, 0o700)
        os.chown(self.rt, self.uid, self.uid)
        self.start_manager()

    def restart_manager_after_power_cut(self):
        """Everything of the user's dies at once, as at a power cut; the runtime
        directory is empty again, as after a reboot; a new manager starts."""
        self.manager.kill()
        self.manager.wait(10)
        self.kill_cgroups()
        self.cgroups = []
        shutil.rmtree(self.rt)
        os.makedirs(self.rt)
        os.chmod(self.rt, 0o700)
        os.chown(self.rt, self.uid, self.uid)
        self.start_manager()


# ---- the tests ---------------------------------------------------------------


@test
def test_launch_checkpoint_history(env):
    """dmtcpctl launch runs the job; checkpoint --wait commits it, the journal
    has the entry with its fields (and journalctl -x explains it);
    history/status/list/images show it."""
    out, r = env.launch("sim")
    check("launched" in r.stdout and "running" in r.stdout, "launch output: %r" % r.stdout)
    text = open(env.job_file("sim")).read()
    check("COMMAND=%s %s 100\n" % (env.prog, out) in text, "job file: %r" % text)
    st = env.unit_state("sim")
    check(st["ActiveState"] == "active" and st["SubState"] == "running", "unit running: %r" % st)
    check(env.systemctl("is-enabled", "dmtcp@sim.service", rc=None).stdout.strip() == "enabled", "launch enables it")
    env.wait_ticks_past(out, 3)
    # A second launch of the same name is refused.
    r = env.ctl("launch", "sim", "--", env.prog, out, rc=1)
    check("already exists" in r.stderr and "--replace" in r.stderr and r.stderr.count("\n") == 1,
          "one-line refusal: %r" % r.stderr)

    r = env.ctl("checkpoint", "sim", "--wait")
    m = re.search(r"checkpoint generation (\d+) committed: 1 process", r.stdout)
    check(m, "checkpoint output: %r" % r.stdout)
    gen = int(m.group(1))
    check(env.gens("sim") == [gen], "generation %d on disk: %r" % (gen, env.gens("sim")))

    # The journal entry, with its fields, from the coordinator's unit.
    entries = wait_until(lambda: env.journal("MESSAGE_ID=" + MSG_COMMITTED, "DMTCP_JOB=sim"), 10, "the commit entry")
    e = entries[-1]
    check(e.get("DMTCP_GENERATION") == str(gen) and e.get("DMTCP_PROCESSES") == "1", "entry fields: %r" % e)
    check(int(e.get("DMTCP_IMAGE_BYTES", "0")) > 0 and int(e.get("DMTCP_DURATION_USEC", "0")) > 0, "sizes: %r" % e)
    check(e.get("DMTCP_IMAGE_DIR") == os.path.join(env.state_dir("sim"), "gen-%06d" % gen), "image dir: %r" % e)
    check(e.get("DMTCP_COMPUTATION"), "computation: %r" % e)
    check(e.get("_SYSTEMD_USER_UNIT") == "dmtcp-coordinator@sim.service", "from the coordinator unit: %r" % e)
    check(env.journal("--user-unit=dmtcp-coordinator@sim", "MESSAGE_ID=" + MSG_COMMITTED), "--user-unit query")
    check(env.journal("_SYSTEMD_USER_UNIT=dmtcp@sim.service", "MESSAGE=tick 1"), "the program's output in its unit's journal")

    # The job's whole story under DMTCP_JOB=sim: started, joined, checkpoint started and committed.
    ids = dict(re.findall(r'#define (DMTCP_MESSAGE_\w+)\s+"([0-9a-f]{32})"',
                          open(os.path.join(SOURCE, "daemon", "messages.h")).read()))
    check(len(ids) == 8, "eight MESSAGE_IDs: %r" % ids)
    seen = {e.get("MESSAGE_ID") for e in env.journal("DMTCP_JOB=sim")}
    for k in ("COORD_STARTED", "MEMBER_JOINED", "CKPT_STARTED", "CKPT_COMMITTED"):
        check(ids["DMTCP_MESSAGE_" + k] in seen, "journalctl DMTCP_JOB=sim has %s" % k)
    # journalctl -x explains every one of them from the installed catalog.
    env.install_catalog()
    r = env.run(["journalctl", "--list-catalog"], check_rc=0)
    for k, mid in ids.items():
        check(re.search(r"^%s dmtcp: " % mid, r.stdout, re.M), "catalog entry for %s: %s" % (k, mid))
    r = env.run(["journalctl", "--no-pager", "-x", "MESSAGE_ID=" + MSG_COMMITTED, "DMTCP_JOB=sim"], check_rc=0)
    check("Checkpoint generation %d of job sim committed" % gen in r.stdout, "catalog text: %r" % r.stdout[-1500:])

    h = json.loads(env.ctl("history", "sim", "--json").stdout)
    rows = [x for x in h["entries"] if x["event"] == "checkpoint"]
    check(rows and rows[-1]["generation"] == gen and rows[-1]["result"] == "committed" and rows[-1]["processes"] == 1
          and rows[-1]["bytes"] > 0 and rows[-1]["duration_usec"] > 0, "history --json: %r" % h)
    check(rows[-1]["unit"] == "dmtcp-coordinator@sim.service", "history unit: %r" % rows[-1])
    r = env.ctl("history", "sim")
    check(re.search(r"checkpoint\s+%d\s+1\s+.*committed" % gen, r.stdout), "history table: %r" % r.stdout)

    s = json.loads(env.ctl("status", "sim", "--json").stdout)
    check(s["state"] == "running" and s["unit"]["active_state"] == "active" and s["coordinator"]["processes"] == 1,
          "status --json: %r" % s)
    check(s["config"]["command"] == [env.prog, out, "100"] and s["checkpoints"]["newest"]["generation"] == gen,
          "status config/checkpoints: %r" % s)
    lst = json.loads(env.ctl("list", "--json").stdout)
    check([j["job"] for j in lst["jobs"]] == ["sim"] and lst["jobs"][0]["state"] == "running", "list --json: %r" % lst)
    im = json.loads(env.ctl("images", "sim", "--json").stdout)
    check([g["generation"] for g in im["generations"]] == [gen] and im["generations"][0]["complete"], "images: %r" % im)
    r = env.ctl("images", "sim")
    check("complete" in r.stdout and "newest" in r.stdout, "images table: %r" % r.stdout)

    # Unknown jobs and bad names are one-line errors.
    r = env.ctl("status", "nosuch", rc=1)
    check("no job named nosuch" in r.stderr and r.stderr.count("\n") == 1, "unknown job: %r" % r.stderr)
    r = env.ctl("checkpoint", "nosuch", rc=1)
    check("nosuch" in r.stderr and r.stderr.count("\n") == 1, "checkpoint of no job: %r" % r.stderr)
    r = env.ctl("status", "a-b", rc=64)
    check("invalid job name" in r.stderr, "bad name: %r" % r.stderr)
    env.ctl("kill", "sim")
    no_bad(out)


def first_after(path, text):
    v = after_mark(path, text)
    return v[0] if v else None


@test
def test_crash_restarts_from_checkpoint(env):
    """systemctl --user kill -s SIGKILL brings the job back from its newest
    checkpoint by itself (Restart=on-failure)."""
    out, _ = env.launch("crash")
    env.wait_ticks_past(out, 3)
    lo = last_tick(out)
    env.ctl("checkpoint", "crash", "--wait")
    hi = last_tick(out)
    env.wait_ticks_past(out, hi + 5)
    mark(out, "kill")
    env.systemctl("kill", "-s", "SIGKILL", "dmtcp@crash.service")
    wait_until(lambda: env.unit_state("crash")["NRestarts"] == "1", 30, "the unit to restart itself")
    wait_until(lambda: len(after_mark(out, "kill")) >= 3 and env.unit_state("crash")["SubState"] == "running", 30,
               "counting again after the restart")
    st = env.unit_state("crash")
    check(st["ActiveState"] == "active", "running again: %r" % st)
    # Before the kill landed the program may have counted on; the restart
    # goes back to the checkpoint: a value between lo+1 and hi+1.
    v = [before_mark(out, "kill")] + after_mark(out, "kill")
    back = [i for i in range(1, len(v)) if v[i] <= v[i - 1]]
    check(back, "the count went back to the checkpoint after the kill: %r" % v)
    first = v[back[0]]
    check(lo + 1 <= first <= hi + 1, "resumed from the checkpoint (%d..%d), not elsewhere: %d (%r)" % (lo + 1, hi + 1, first, v))
    check(all(v[i] == v[i - 1] + 1 for i in range(back[0] + 1, len(v))), "counting on in steps of one: %r" % v)
    check(env.journal("MESSAGE_ID=" + MSG_RESTARTED, "DMTCP_JOB=crash"), "restart entry in the journal")
    # Now the main process is dmtcp_restart and the program its child: any
    # process of the job killed brings it back, here only the program.
    main = int(env.unit_state("crash")["MainPID"])
    check(open("/proc/%d/comm" % main).read().strip() == "dmtcp_restart", "restarted by dmtcp_restart")
    child = int(open("/proc/%d/task/%d/children" % (main, main)).read().split()[0])
    env.ctl("checkpoint", "crash", "--wait")
    mark(out, "child")
    os.kill(child, signal.SIGKILL)
    wait_until(lambda: env.unit_state("crash")["NRestarts"] == "2" and len(after_mark(out, "child")) >= 2, 30,
               "the unit to restart after its program alone was killed")
    st = env.unit_state("crash")
    check(st["ActiveState"] == "active", "running again: %r" % st)
    env.ctl("kill", "crash")
    no_bad(out)


@test
def test_stop_start_resumes_exactly(env):
    """stop checkpoints and ends the program before it counts again; start
    (and restart) resume exactly there."""
    out, _ = env.launch("resume")
    env.wait_ticks_past(out, 5)
    r = env.ctl("stop", "resume")
    check(re.search(r"stopped after checkpoint generation \d+", r.stdout), "stop output: %r" % r.stdout)
    st = env.unit_state("resume")
    check(st["ActiveState"] == "inactive" and st["Result"] == "success", "stopped cleanly: %r" % st)
    stopped_at = last_tick(out)
    time.sleep(0.5)
    check(last_tick(out) == stopped_at, "the program does not run past the stop checkpoint")
    check(env.systemctl("is-enabled", "dmtcp@resume.service", rc=None).stdout.strip() == "disabled",
          "dmtcpctl stop disables it (no start at the next login)")
    s = json.loads(env.ctl("status", "resume", "--json").stdout)
    check(s["state"] == "stopped", "status after stop: %r" % s)
    mark(out, "start")
    env.ctl("start", "resume")
    wait_until(lambda: len(after_mark(out, "start")) >= 3, 20, "counting after start")
    v = after_mark(out, "start")
    check(v[0] == stopped_at + 1, "start resumed at %d, right after %d: %r" % (v[0], stopped_at, v))
    # systemctl stop/start do the same as dmtcpctl.
    env.systemctl("stop", "dmtcp@resume.service")
    stopped_at = last_tick(out)
    mark(out, "systemctl")
    env.systemctl("start", "dmtcp@resume.service")
    wait_until(lambda: len(after_mark(out, "systemctl")) >= 3, 20, "counting after systemctl start")
    check(after_mark(out, "systemctl")[0] == stopped_at + 1, "systemctl start resumed exactly: %r" %
          after_mark(out, "systemctl"))
    # dmtcpctl restart: stop with a checkpoint, start from it.
    before = env.gens("resume")[-1]
    r = env.ctl("restart", "resume")
    check("restarted from generation %d" % (before + 1) in r.stdout, "restart output: %r" % r.stdout)
    v = tick_values(out)
    drops = [i for i in range(1, len(v)) if v[i] != v[i - 1] + 1]
    check(not drops, "a continuous count over stop/start/restart: breaks at %r" % [(v[i - 1], v[i]) for i in drops])
    # Without a checkpoint on stop, the job resumes from its newest checkpoint.
    env.ctl("kill", "resume")
    check(env.unit_state("resume")["ActiveState"] == "inactive", "killed")
    no_bad(out)


@test
def test_damaged_image_fails_without_loop(env):
    """A damaged newest image: the unit fails with status 100, is not
    restarted, and no older generation is used instead."""
    out, _ = env.launch("dmg")
    env.wait_ticks_past(out, 3)
    env.ctl("checkpoint", "dmg", "--wait")
    env.ctl("stop", "dmg")
    gens = env.gens("dmg")
    check(len(gens) == 2, "two generations: %r" % gens)
    newest = os.path.join(env.state_dir("dmg"), "gen-%06d" % gens[-1])
    img = [f for f in os.listdir(newest) if f.endswith(".dmtcp")][0]
    p = os.path.join(newest, img)
    b = bytearray(open(p, "rb").read())
    b[len(b) // 2] ^= 0xff
    open(p, "wb").write(b)
    mark(out, "damaged")
    r = env.ctl("start", "dmg", rc=1)
    check("status 100 (unusable checkpoint image)" in r.stderr and r.stderr.count("\n") == 1,
          "start reports the unusable image: %r" % r.stderr)
    time.sleep(7)   # longer than RestartSec=
    st = env.unit_state("dmg")
    check(st["ActiveState"] == "failed" and st["ExecMainStatus"] == "100" and st["NRestarts"] == "0" and
          st["Result"] == "exit-code", "failed with 100, no restart: %r" % st)
    check(after_mark(out, "damaged") == [], "nothing ran: no fallback to generation %d" % gens[0])
    wait_until(lambda: [m for m in env.unit_messages("dmtcp@dmg.service", "dmg") if "unusable" in m and "dmg" in m],
               10, "the journal to say why")
    check(env.gens("dmg") == gens, "the generations are left alone: %r" % env.gens("dmg"))


@test
def test_bad_job_file_and_exit_status(env):
    """A bad job file ends the unit with 78 naming the line, without restart;
    the job's own exit status passes through; a finished job starts afresh."""
    conf = env.job_file("bad")
    os.makedirs(os.path.dirname(conf), exist_ok=True)
    open(conf, "w").write("COMMAND=%s /dev/null\nKEEP=0\n" % env.prog)
    env.systemctl("start", "dmtcp@bad.service")
    wait_until(lambda: env.unit_state("bad")["ActiveState"] == "failed", 20, "the unit to fail")
    time.sleep(6)
    st = env.unit_state("bad")
    check(st["ExecMainStatus"] == "78" and st["NRestarts"] == "0", "78 without restart: %r" % st)
    msgs = [e["MESSAGE"] for e in env.journal("_SYSTEMD_USER_UNIT=dmtcp@bad.service")]
    check(any("bad.conf line 2: KEEP=0" in m for m in msgs), "the journal names the line: %r" % msgs)
    r = env.ctl("start", "bad", rc=1)
    check("line 2: KEEP=0" in r.stderr and r.stderr.count("\n") == 1, "dmtcpctl start names it: %r" % r.stderr)
    # No job file at all: the unit's assertion refuses to start.
    r = env.systemctl("start", "dmtcp@nofile.service", rc=None)
    check(r.returncode != 0 and "Assertion" in r.stderr, "no job file: %r" % r.stderr)

    # The program's own status, launched and restarted, with Restart=no for
    # this job so that the status stays visible.
    dropin = os.path.join(env.home, ".config", "systemd", "user", "dmtcp@st.service.d")
    os.makedirs(dropin)
    open(os.path.join(dropin, "norestart.conf"), "w").write("[Service]\nRestart=no\n")
    env.systemctl("daemon-reload")
    out, _ = env.launch("st", 12, 7)       # exits 7 at count 12
    env.ctl("checkpoint", "st", "--wait")
    wait_until(lambda: env.unit_state("st")["ActiveState"] == "failed", 20, "the program to end")
    st = env.unit_state("st")
    check(st["ExecMainStatus"] == "7" and st["ExecMainCode"] == "1", "launched: status 7 passes through: %r" % st)
    mark(out, "again")
    env.ctl("start", "st", rc=None)      # restarts from the checkpoint, counts to 12 again, exits 7
    wait_until(lambda: env.unit_state("st")["ActiveState"] == "failed", 20, "the restarted program to end")
    st = env.unit_state("st")
    v = after_mark(out, "again")
    check(st["ExecMainStatus"] == "7" and v and v[0] > 1 and v[-1] == 12,
          "restarted: status 7 passes through dmtcp_restart: %r %r" % (st, v))

    # Exit 0: finished; the next start launches afresh (from 1).
    out, _ = env.launch("fin", 4)
    wait_until(lambda: env.unit_state("fin")["ActiveState"] == "inactive", 20, "the program to finish")
    st = env.unit_state("fin")
    check(st["Result"] == "success" and st["ExecMainStatus"] == "0", "finished: %r" % st)
    s = json.loads(env.ctl("status", "fin", "--json").stdout)
    check(s["state"] == "finished", "status says finished: %r" % s)
    mark(out, "rerun")
    env.ctl("start", "fin", rc=None)
    wait_until(lambda: env.unit_state("fin")["ActiveState"] == "inactive" and len(after_mark(out, "rerun")) >= 4, 20,
               "the second run")
    check(after_mark(out, "rerun") == [1, 2, 3, 4], "a finished job starts afresh: %r" % after_mark(out, "rerun"))


@test
def test_launch_replace_kill(env):
    """launch refuses an existing job unless --replace, which discards it;
    kill ends a job without a checkpoint; names and commands are checked."""
    out, _ = env.launch("rep")
    env.wait_ticks_past(out, 3)
    env.ctl("checkpoint", "rep", "--wait")
    r = env.ctl("launch", "rep", "--", env.prog, out, rc=1)
    check("job rep already exists" in r.stderr, "refused: %r" % r.stderr)
    out2 = os.path.join(env.shared, "rep2.ticks")
    env.ctl("launch", "rep", "--replace", "--workdir", env.work, "--interval", "0", "--keep", "3",
            "--no-checkpoint-on-stop", "--", env.prog, out2, "100")
    env.wait_ticks_past(out2, 3)
    check(env.gens("rep") == [], "--replace discards the old checkpoints: %r" % env.gens("rep"))
    text = open(env.job_file("rep")).read()
    check("INTERVAL=0\n" in text and "KEEP=3\n" in text and "CHECKPOINT_ON_STOP=no\n" in text, "new job file: %r" % text)
    old = last_tick(out)
    time.sleep(0.3)
    check(last_tick(out) == old, "the old program is gone")
    # dmtcpctl restart checkpoints even so, and resumes exactly there.
    r = env.ctl("restart", "rep")
    check("restarted from generation 1" in r.stdout, "restart output: %r" % r.stdout)
    env.wait_ticks_past(out2, last_tick(out2) + 2)
    v = tick_values(out2)
    check(all(v[i] == v[i - 1] + 1 for i in range(1, len(v))), "a continuous count over the restart: %r" % v)
    # CHECKPOINT_ON_STOP=no: stop takes no checkpoint.
    r = env.ctl("stop", "rep")
    check("without a checkpoint" in r.stdout and env.gens("rep") == [1], "no stop checkpoint: %r" % r.stdout)
    # kill: no checkpoint either, even with CHECKPOINT_ON_STOP=yes.
    out3, _ = env.launch("k")
    env.wait_ticks_past(out3, 3)
    r = env.ctl("kill", "k")
    check("without a checkpoint" in r.stdout and env.gens("k") == [], "kill: %r %r" % (r.stdout, env.gens("k")))
    check(env.unit_state("k")["Result"] == "success", "killed cleanly")
    # Quoting survives: arguments with blanks, quotes and $.
    weird = os.path.join(env.shared, "we ird 'q' $x.ticks")
    env.launch("q", progfile=weird)
    wait_until(lambda: os.path.exists(weird) and last_tick(weird) >= 2, 20, "the quoted file name")
    s = json.loads(env.ctl("status", "q", "--json").stdout)
    check(s["config"]["command"][1] == weird, "argument kept exactly: %r" % s["config"]["command"])
    env.ctl("kill", "q")
    # Usage errors.
    env.ctl("launch", "a-b", "--", "true", rc=64)
    env.ctl("launch", ".hidden", "--", "true", rc=64)
    env.ctl("launch", "x", rc=64)
    env.ctl("launch", "x", "--interval", "abc", "--", "true", rc=64)
    r = env.ctl("launch", "x", "--", "no-such-command-here", rc=1)
    check("command not found" in r.stderr, "missing command: %r" % r.stderr)
    env.ctl("frobnicate", rc=64)
    env.ctl("checkpoint", rc=64)
    # Units not installed in the user manager: a clear error, nothing written.
    os.unlink(os.path.join(env.home, ".config", "systemd", "user", "dmtcp@.service"))
    env.systemctl("daemon-reload")
    r = env.ctl("launch", "nounit", "--", env.prog, "/dev/null", rc=1)
    check("dmtcp@nounit.service is not known to your user manager" in r.stderr and "systemctl --user link" in r.stderr,
          "units missing: %r" % r.stderr)
    check(not os.path.exists(env.job_file("nounit")), "no job file left behind")


@test
def test_clean_reboot(env):
    """A logout or clean reboot stops the job with its checkpoint while its
    coordinator still runs; the next manager resumes it exactly there."""
    out, _ = env.launch("reboot")
    env.wait_ticks_past(out, 3)
    before = env.gens("reboot")
    env.restart_manager_cleanly()
    stopped_at = last_tick(out)
    check(len(env.gens("reboot")) == len(before) + 1, "a stop checkpoint was taken: %r" % env.gens("reboot"))
    mark(out, "after")
    wait_until(lambda: len(after_mark(out, "after")) >= 2, 30, "the job to come back at login")
    check(after_mark(out, "after")[0] == stopped_at + 1, "resumed exactly after %d: %r" % (stopped_at, after_mark(out, "after")))
    msgs = [e.get("MESSAGE", "") for e in env.journal("SYSLOG_IDENTIFIER=reboot")]
    check(not any("failed" in m for m in msgs), "no failed stop: %r" % [m for m in msgs if "tick" not in m])
    env.ctl("kill", "reboot")
    no_bad(out)


@test
def test_power_cut(env):
    """Everything dies at once (job, coordinator, the user manager); a new
    manager starts the enabled job by itself, from its newest checkpoint."""
    out, _ = env.launch("pwr")
    env.wait_ticks_past(out, 3)
    lo = last_tick(out)
    env.ctl("checkpoint", "pwr", "--wait")
    hi = last_tick(out)
    env.wait_ticks_past(out, hi + 3)
    mark(out, "power")
    env.restart_manager_after_power_cut()
    wait_until(lambda: len(after_mark(out, "power")) >= 3, 30, "the job to come back at login")
    v = after_mark(out, "power")
    check(lo + 1 <= v[0] <= hi + 1, "back from the checkpoint (%d..%d): %r" % (lo + 1, hi + 1, v))
    st = env.unit_state("pwr")
    check(st["ActiveState"] == "active", "running: %r" % st)
    env.ctl("kill", "pwr")
    no_bad(out)


@test
def test_adhoc_systemd_run(env):
    """systemd-run --user dmtcp_launch --job NAME joins NAME's per-user
    coordinator instance: same history, same control."""
    out = os.path.join(env.shared, "adhoc.ticks")
    env.run(["systemd-run", "--user", "--unit=adhoc-x", "--collect", "--working-directory=" + env.work,
             "dmtcp_launch", "--job", "adhoc", env.prog, out, "100"], check_rc=0)
    env.wait_ticks_past(out, 3)
    st = env.show("dmtcp-coordinator@adhoc.service", "ActiveState", "TriggeredBy")
    check(st["ActiveState"] == "active", "the socket-activated coordinator instance serves it: %r" % st)
    s = json.loads(env.ctl("status", "adhoc", "--json").stdout)
    check(s["state"] == "running-adhoc" and s["coordinator"]["processes"] == 1, "status of an ad-hoc job: %r" % s)
    r = env.ctl("checkpoint", "adhoc", "--wait")
    m = re.search(r"generation (\d+) committed", r.stdout)
    check(m, "checkpoint of an ad-hoc job: %r" % r.stdout)
    e = wait_until(lambda: env.journal("MESSAGE_ID=" + MSG_COMMITTED, "DMTCP_JOB=adhoc"), 10, "journal entry")
    check(e[-1].get("_SYSTEMD_USER_UNIT") == "dmtcp-coordinator@adhoc.service", "from the instance: %r" % e[-1])
    h = json.loads(env.ctl("history", "adhoc", "--json").stdout)
    check(h["entries"] and h["entries"][-1]["generation"] == int(m.group(1)) and
          h["entries"][-1]["unit"] == "dmtcp-coordinator@adhoc.service", "in its history: %r" % h["entries"][-1:])
    lst = json.loads(env.ctl("list", "--json").stdout)
    check("adhoc" in [j["job"] for j in lst["jobs"]], "listed: %r" % lst)
    env.ctl("kill", "adhoc")
    wait_until(lambda: env.show("adhoc-x.service", "ActiveState")["ActiveState"] in ("inactive", "failed"), 20,
               "the transient unit to end")
    end = last_tick(out)
    time.sleep(0.3)
    check(last_tick(out) == end, "dmtcpctl kill ended the ad-hoc program")
    no_bad(out)



def nobody_home(env, name):
    """A home and runtime directory that belong to nobody."""
    d = os.path.join(env.shared, name)
    os.makedirs(os.path.join(d, "rt"))
    for x in (d, os.path.join(d, "rt")):
        os.chown(x, NOBODY, NOBODY)
        os.chmod(x, 0o700)
    e = env.env({"HOME": d, "XDG_RUNTIME_DIR": os.path.join(d, "rt"), "USER": "nobody", "LOGNAME": "nobody"})
    if env.sanitized:
        e["ASAN_OPTIONS"] = "detect_leaks=0"    # a sanitized coordinator could not exit otherwise
    return d, e


def quit_coordinator(env, job, e):
    """End a coordinator that dmtcp_launch/dmtcp_restart started for nobody."""
    env.run(["dmtcp_command", "--job", job, "--quit"], user=NOBODY, env=e, timeout=30)


def chmod_tree(path, dmode, fmode):
    for d, dirs, files in os.walk(path):
        os.chmod(d, dmode)
        for f in files:
            os.chmod(os.path.join(d, f), fmode)


@test
def test_foreign_uid_and_polkit(env):
    """Another user (nobody) restarting our image gets 101, with and without
    --no-strict-uid-checking, unless polkit authorizes
    org.dmtcp.restart-foreign-image; then the restored program runs as the
    caller. No polkit reachable means denied."""
    out = os.path.join(env.shared, "own.ticks")
    env.launch("own", 60, progfile=out, extra=["--workdir", env.shared])
    env.wait_ticks_past(out, 3)
    env.ctl("stop", "own")
    os.chmod(out, 0o666)
    sdir = env.state_dir("own")
    home, nenv = nobody_home(env, "nb")
    nobus = dict(nenv, DBUS_SYSTEM_BUS_ADDRESS="unix:path=/nonexistent/bus")

    def restart_as_nobody(path, strict, e=nenv, timeout=60):
        flags = [] if strict else ["--no-strict-uid-checking"]
        return env.run(["dmtcp_restart", "--job", "nb"] + flags + [path], user=NOBODY, env=e, timeout=timeout)

    # Our own checkpoint directory, private as it is.
    for strict in (True, False):
        r = restart_as_nobody(sdir, strict, nobus)
        check(r.returncode == 101 and "Permission denied" in r.stderr and r.stderr.count("\n") == 1,
              "private images, strict=%s: %d %r" % (strict, r.returncode, r.stderr))
    # A copy others can read: now the uid check itself refuses.
    pub = os.path.join(env.shared, "pub")
    shutil.copytree(sdir, pub, symlinks=True)
    chmod_tree(pub, 0o755, 0o644)
    r = restart_as_nobody(pub, True)
    check(r.returncode == 101 and "belongs to uid 0" in r.stderr, "strict: %d %r" % (r.returncode, r.stderr))
    r = restart_as_nobody(pub, False, nobus)
    check(r.returncode == 101 and "cannot ask polkit" in r.stderr and "not allowed" in r.stderr,
          "no polkit reachable = denied: %d %r" % (r.returncode, r.stderr))
    env.start_polkit()
    r = restart_as_nobody(pub, False)
    check(r.returncode == 101 and "not allowed" in r.stderr and "cannot ask polkit" not in r.stderr,
          "polkit's default (auth_admin, no agent) denies: %d %r" % (r.returncode, r.stderr))
    # Root may, without polkit.
    rule = "/etc/polkit-1/rules.d/49-dmtcp-test.rules"
    check(not os.path.exists(rule), "%s is free" % rule)
    os.makedirs(os.path.dirname(rule), exist_ok=True)
    open(rule, "w").write('polkit.addRule(function(action, subject) {\n'
                          '    if (action.id == "org.dmtcp.restart-foreign-image" && subject.user == "nobody")\n'
                          '        return polkit.Result.YES;\n});\n')
    env.created.append(rule)
    mark(out, "nobody")
    # polkit reads the rule asynchronously: retry until it applies.
    deadline = time.monotonic() + 20
    while True:
        r = restart_as_nobody(pub, False, timeout=60)
        if r.returncode != 101 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    check(r.returncode == 0, "authorized by polkit, the restored program ran to its end (status 0): %d %r" %
          (r.returncode, r.stderr))
    after = [l for l in ticks(out)[[i for i, l in enumerate(ticks(out)) if l[:2] == ["mark", "nobody"]][0]:]
             if l[0] == "tick"]
    quit_coordinator(env, "nb", nenv)
    check(after and int(after[-1][1]) == 60 and all(l[2] == str(NOBODY) for l in after),
          "the restored program ran as nobody: %r" % after[:3])
    no_bad(out)


@test
def test_restart_capability(env):
    """The install step sets cap_checkpoint_restore on dmtcp_restart where
    it can, and says why where it cannot; a normal user's restart with it
    restores the original pid, keeps only that capability, and the restored
    process has none and stays dumpable."""
    script = os.path.join(SOURCE, "units", "post-install.sh")
    restart = os.path.join(env.bindir, "dmtcp_restart")
    args = [script, os.path.relpath(env.bindir, env.root), "lib/systemd/catalog", "share/polkit-1/actions"]
    r = env.run(args, env=env.env({"MESON_INSTALL_PREFIX": env.prefix, "MESON_INSTALL_DESTDIR_PREFIX": env.root,
                                   "DESTDIR": os.path.join(env.tmp, "dest")}), check_rc=0)
    check("DESTDIR install" in r.stdout and "setcap cap_checkpoint_restore+ep %s/" % env.prefix in r.stdout,
          "DESTDIR: says what to run: %r" % r.stdout)
    check("cap_checkpoint_restore" not in env.run(["getcap", restart]).stdout, "nothing set in a DESTDIR install")
    r = env.run(args, env=env.env({"MESON_INSTALL_PREFIX": env.root}), user=NOBODY, check_rc=0)
    check("only root can" in r.stdout, "non-root: says so: %r" % r.stdout)
    # setcap failing as it does on a filesystem without extended attributes.
    shim = os.path.join(env.tmp, "shim")
    os.makedirs(shim)
    open(os.path.join(shim, "setcap"), "w").write("#!/bin/sh\necho 'Failed to set capabilities on file: Operation not supported' >&2\nexit 1\n")
    os.chmod(os.path.join(shim, "setcap"), 0o755)
    e = env.env({"MESON_INSTALL_PREFIX": env.root})
    e["PATH"] = shim + ":" + e["PATH"]
    r = env.run(args, env=e, check_rc=0)
    check("cannot set cap_checkpoint_restore on %s (Failed to set capabilities on file: Operation not supported; "
          "a filesystem without extended attributes" % restart in r.stdout, "setcap failure: %r" % r.stdout)
    r = env.run(args, env=env.env({"MESON_INSTALL_PREFIX": env.root}), check_rc=0)
    if "cannot set cap_checkpoint_restore" in r.stdout:
        raise Skip("this filesystem cannot hold file capabilities: %s" % r.stdout.strip())
    check("set the file capability cap_checkpoint_restore+ep on %s" % restart in r.stdout, "set: %r" % r.stdout)
    check("cap_checkpoint_restore=ep" in env.run(["getcap", restart]).stdout, "getcap shows it")

    home, nenv = nobody_home(env, "capuser")
    out = os.path.join(home, "ticks")
    ckpt = os.path.join(home, "ckpt")
    launch = subprocess.Popen(["setpriv", "--reuid=%d" % NOBODY, "--regid=%d" % NOBODY, "--clear-groups",
                               "timeout", "120", "dmtcp_launch", "--job", "cap", "--ckptdir", ckpt, env.prog, out, "100"],
                              env=nenv, cwd=home, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE)
    try:
        wait_until(lambda: last_tick(out) >= 3 or launch.poll() is not None, 20, "nobody's program to run")
        check(launch.poll() is None, "dmtcp_launch as nobody: %r" % (launch.stderr.read() if launch.poll() is not None else ""))
        pid = int(open("/proc/%d/task/%d/children" % (launch.pid, launch.pid)).read().split()[0])
        env.run(["dmtcp_command", "--job", "cap", "--kcheckpoint"], user=NOBODY, env=nenv, check_rc=0)
        launch.wait(30)
    finally:
        if launch.poll() is None:
            launch.kill()
            launch.wait()
    stopped = last_tick(out)
    mark(out, "restart")
    rs = subprocess.Popen(["setpriv", "--reuid=%d" % NOBODY, "--regid=%d" % NOBODY, "--clear-groups",
                           "timeout", "120", restart, "--job", "cap", ckpt], env=nenv, cwd=home,
                          stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_until(lambda: len(after_mark(out, "restart")) >= 3 or rs.poll() is not None, 30, "the restart")
        check(rs.poll() is None, "dmtcp_restart runs: %r" % (rs.stderr.read() if rs.poll() is not None else ""))
        check(after_mark(out, "restart")[0] == stopped + 1, "resumed exactly")
        restart_pid = int(open("/proc/%d/task/%d/children" % (rs.pid, rs.pid)).read().split()[0])  # timeout's child
        hs = read_status(restart_pid)
        check(int(hs["CapPrm"], 16) == 1 << 40 and int(hs["CapEff"], 16) == 1 << 40 and int(hs["CapInh"], 16) == 0,
              "the restart helper keeps only cap_checkpoint_restore: %r" % hs)
        st = read_status(pid)
        check(st["Uid"].split()[0] == str(NOBODY), "the original pid %d is the restored process: %r" % (pid, st))
        for k in ("CapInh", "CapPrm", "CapEff", "CapAmb"):
            check(int(st[k], 16) == 0, "the restored process has no capability: %s=%s" % (k, st[k]))
        check(os.stat("/proc/%d/status" % pid).st_uid == NOBODY, "the restored process is dumpable (its /proc is nobody's)")
        env.run(["dmtcp_command", "--job", "cap", "--kill"], user=NOBODY, env=nenv, check_rc=0)
        rs.wait(30)
    finally:
        if rs.poll() is None:
            rs.kill()
            rs.wait()
        quit_coordinator(env, "cap", nenv)
    no_bad(out)


@test
def test_coordinator_sandbox(env):
    """Under its unit's sandboxing plus its own capability drop and seccomp
    filter the coordinator keeps what it needs (netlink uid lookup of loopback
    TCP peers, the journal) and refuses the rest with EPERM, logged. The
    example TCP listener works."""
    probe = os.environ.get("HARDEN_PROBE", "")
    check(os.access(probe, os.X_OK), "harden-probe built")
    user_units = os.path.join(env.home, ".config", "systemd", "user")
    d = os.path.join(user_units, "dmtcp-coordinator@probe.service.d")
    os.makedirs(d)
    open(os.path.join(d, "probe.conf"), "w").write("[Service]\nExecStart=\nExecStart=%s\nRestart=no\n" % probe)
    env.systemctl("daemon-reload")
    env.systemctl("start", "dmtcp-coordinator@probe.service")
    wait_until(lambda: env.show("dmtcp-coordinator@probe.service", "ActiveState")["ActiveState"] in ("inactive", "failed"),
               20, "the probe to finish")
    st = env.show("dmtcp-coordinator@probe.service", "Result", "ExecMainStatus")
    wants = ("probe: socket activation ok", "probe: coord_harden ok", "probe: netlink uid lookup ok",
             "probe: sd_journal_send ok", "probe: refused call ok",
             "seccomp refused system call %d with EPERM" % 101)
    msgs = []

    def all_logged():
        msgs[:] = env.unit_messages("dmtcp-coordinator@probe.service", os.path.basename(probe))
        return all(any(w in m for m in msgs) for w in wants)
    try:
        wait_until(all_logged, 10, "the probe's lines in the journal")
    except AssertionError:
        pass    # the checks below say which is missing
    check(st["Result"] == "success" and st["ExecMainStatus"] == "0", "probe passed: %r\n%s" % (st, "\n".join(msgs)))
    for want in wants:
        check(any(want in m for m in msgs), "journal has '%s': %r" % (want, msgs))
    # The probe may be gone before journald looks up its unit: the field
    # alone identifies the entry.
    check(env.journal("DMTCP_PROBE=journal-works"), "the structured entry with its field")

    # The real coordinator, with the example TCP listener on loopback.
    ex = os.path.join(env.datadir, "doc", "dmtcp", "examples")
    shutil.copy(os.path.join(ex, "dmtcp-coordinator-tcp@.socket"), user_units)
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    sd = os.path.join(user_units, "dmtcp-coordinator-tcp@tcp.socket.d")
    os.makedirs(sd)
    text = open(os.path.join(ex, "dmtcp-coordinator-tcp@JOB.socket.d", "listen.conf")).read()
    check("ListenStream=127.0.0.1:7781" in text, "example drop-in: %r" % text)
    open(os.path.join(sd, "listen.conf"), "w").write(text.replace("7781", str(port)))
    cd = os.path.join(user_units, "dmtcp-coordinator@tcp.service.d")
    os.makedirs(cd)
    shutil.copy(os.path.join(ex, "dmtcp-coordinator@JOB.service.d", "tcp.conf"), cd)
    env.systemctl("daemon-reload")
    r = env.run(["systemd-analyze", "--user", "verify"] + ([] if shutil.which("man") else ["--man=no"]) +
                ["dmtcp-coordinator-tcp@tcp.socket"], timeout=60)
    check(r.returncode == 0, "the example verifies: %s" % r.stderr)
    out, _ = env.launch("tcp")
    env.wait_ticks_past(out, 2)
    cst = env.show("dmtcp-coordinator@tcp.service", "MainPID", "NoNewPrivileges", "RestrictAddressFamilies")
    check(cst["NoNewPrivileges"] == "yes" and "AF_NETLINK" in cst["RestrictAddressFamilies"], "unit settings: %r" % cst)
    pst = read_status(int(cst["MainPID"]))
    check(pst["NoNewPrivs"] == "1" and pst["Seccomp"] == "2" and int(pst.get("Seccomp_filters", "2")) >= 2,
          "seccomp (systemd's and its own): %r" % pst)
    for k in ("CapInh", "CapPrm", "CapEff", "CapAmb"):
        check(int(pst[k], 16) == 0, "no capabilities (root's coordinator dropped its own): %s=%s" % (k, pst[k]))
    # Over TCP: our uid is recognized through sock_diag, nobody's is refused by uid.
    r = env.run(["dmtcp_command", "-p", str(port), "-s", "--json"], check_rc=0)
    j = json.loads(r.stdout)
    check(j["coordinator"]["port"] == port and j["num_peers"] == 1, "status over the TCP listener: %r" % j)
    r = env.run(["dmtcp_command", "-p", str(port), "-s"], user=NOBODY)
    check(r.returncode == 1 and "uid 65534" in r.stderr, "nobody refused by uid: %d %r" % (r.returncode, r.stderr))
    e = wait_until(lambda: env.journal("MESSAGE_ID=" + MSG_REFUSED, "DMTCP_JOB=tcp"), 10, "the refusal entry")
    check(e[-1].get("DMTCP_PEER_UID") == str(NOBODY) and e[-1].get("_SYSTEMD_USER_UNIT") == "dmtcp-coordinator@tcp.service",
          "refusal logged with the peer's uid: %r" % e[-1])
    check(env.journal("MESSAGE_ID=" + MSG_STARTED, "_SYSTEMD_USER_UNIT=dmtcp-coordinator@tcp.service"),
          "its start entry in the journal")
    env.ctl("kill", "tcp")



@test
def test_units_verify(env):
    """systemd-analyze --user verify accepts every installed unit (with their
    man pages), and the units say what they must."""
    inst = ["dmtcp@i.service", "dmtcp-coordinator@i.service", "dmtcp-coordinator@i.socket"]
    man = [] if shutil.which("man") else ["--man=no"]
    if man:
        log("man(1) is missing (Debian: man-db): verifying without checking the Documentation= pages")
    r = env.run(["systemd-analyze", "--user", "verify"] + man + inst, timeout=60)
    check(r.returncode == 0 and not r.stderr.strip(), "verify: %d %r" % (r.returncode, r.stderr))
    # The man pages are there (verify runs man for Documentation=).
    for page in ("dmtcp@.service.5", "dmtcpctl.1", "dmtcp.7", "dmtcp_coordinator.1", "dmtcp_launch.1",
                 "dmtcp_restart.1", "dmtcp_command.1"):
        sec = page.rsplit(".", 1)[1]
        check(os.path.exists(os.path.join(env.root, "share", "man", "man" + sec, page)), "installed man page %s" % page)
    job = env.show("dmtcp@i.service", "Restart", "RestartPreventExitStatus", "KillMode", "Type", "StartLimitBurst",
                   "Environment", "Requires", "After")
    check(job["Restart"] == "on-failure" and job["Type"] == "exec" and job["KillMode"] == "mixed", "job unit: %r" % job)
    check(sorted(job["RestartPreventExitStatus"].split()) == ["100", "101", "78"], "no restart loop codes: %r" % job)
    check("DMTCP_FAIL_RC=99" in job["Environment"], "job unit: %r" % job)
    check("\n[Install]\nWantedBy=default.target\n" in open(os.path.join(env.unitdir, "dmtcp@.service")).read(),
          "enabling a job makes it start at login")
    check("dmtcp-coordinator@i.socket" in job["Requires"] and "dmtcp-coordinator@i.socket" in job["After"], "%r" % job)
    sock = env.show("dmtcp-coordinator@i.socket", "Listen", "SocketMode", "DirectoryMode", "FileDescriptorName")
    check(sock["Listen"] == os.path.join(env.rt, "dmtcp", "i.sock") + " (Stream)" and sock["SocketMode"] == "0600" and
          sock["DirectoryMode"] == "0700" and sock["FileDescriptorName"] == "coord", "socket unit: %r" % sock)
    co = env.show("dmtcp-coordinator@i.service", "Type", "NotifyAccess", "NoNewPrivileges", "CapabilityBoundingSet",
                  "RestrictAddressFamilies", "MemoryDenyWriteExecute", "SystemCallFilter")
    check(co["Type"] == "notify" and co["NoNewPrivileges"] == "yes" and co["MemoryDenyWriteExecute"] == "yes" and
          "AF_NETLINK" in co["RestrictAddressFamilies"], "coordinator unit: %r" % co)
    # No CapabilityBoundingSet=: empty, it fails an unprivileged user's unit (218/CAPABILITIES).
    check(co["CapabilityBoundingSet"].count("cap_") > 30, "bounding set left alone: %s" % co["CapabilityBoundingSet"][:80])
    calls = co["SystemCallFilter"].split()
    check("ptrace" not in calls and "mount" not in calls and "seccomp" in calls and "capset" in calls,
          "its system call filter: %s" % co["SystemCallFilter"][:300])
    # Verify catches a broken unit: the check itself can fail.
    bad = os.path.join(env.home, ".config", "systemd", "user", "dmtcp-broken@.service")
    open(bad, "w").write(open(os.path.join(env.unitdir, "dmtcp@.service")).read().replace("[Service]", "[Service]\nBogusKey=1"))
    r = env.run(["systemd-analyze", "--user", "verify", "dmtcp-broken@i.service"], timeout=60)
    check("BogusKey" in r.stderr, "verify reports a bad key: %r" % r.stderr)



@test
def test_progress_and_idle_exit(env):
    """checkpoint --wait shows its progress on a terminal (and only there);
    the coordinator exits when idle while its socket stays, dmtcpctl status
    does not wake it, and the next connection does."""
    if not shutil.which("script"):
        raise Skip("script(1) is missing (Debian: bsdutils), needed for a terminal")
    d = os.path.join(env.home, ".config", "systemd", "user", "dmtcp-coordinator@big.service.d")
    os.makedirs(d)
    open(os.path.join(d, "idle.conf"), "w").write("[Service]\nEnvironment=DMTCP_IDLE_TIMEOUT=2\n")
    env.systemctl("daemon-reload")
    out, _ = env.launch("big", 0, 0, 1000)       # 1000 MB to write: a checkpoint takes a while (>250 ms)
    env.wait_ticks_past(out, 2)
    r = env.run(["script", "-qefc", "dmtcpctl checkpoint big --wait", "/dev/null"], timeout=120, check_rc=0)
    check("\x1b[Kbig: checkpoint generation 1: phase" in r.stdout, "progress on a terminal: %r" % r.stdout[:400])
    check(re.search(r"job big: checkpoint generation 1 committed: 1 process, [\d.]+ MiB", r.stdout), "result: %r" % r.stdout[-300:])
    r = env.ctl("checkpoint", "big", "--wait")
    check("\x1b" not in r.stdout + r.stderr and "generation 2 committed" in r.stdout, "no progress without a terminal: %r" % r.stdout)
    r = env.ctl("checkpoint", "big")
    check(r.stdout.strip() == "job big: checkpoint generation 3 started", "without --wait: %r" % r.stdout)
    wait_until(lambda: env.gens("big") == [2, 3], 60, "generation 3 committed, 1 removed (KEEP=2): %r" % env.gens("big"))
    env.ctl("kill", "big")
    svc = "dmtcp-coordinator@big.service"
    wait_until(lambda: env.show(svc, "ActiveState")["ActiveState"] == "inactive", 20, "the coordinator's idle exit")
    st = env.show(svc, "Result", "ExecMainStatus")
    check(st["Result"] == "success" and st["ExecMainStatus"] == "0", "a clean idle exit: %r" % st)
    check(env.show("dmtcp-coordinator@big.socket", "ActiveState")["ActiveState"] == "active", "the socket stays")
    s = json.loads(env.ctl("status", "big", "--json").stdout)
    check(s["state"] == "stopped" and s["coordinator"] is None, "status without waking it: %r" % s)
    check(env.show(svc, "ActiveState")["ActiveState"] == "inactive", "still asleep after status")
    r = env.run(["dmtcp_command", "--job", "big", "-s"], check_rc=0, timeout=30)
    check("NUM_PEERS=0" in r.stdout and env.show(svc, "ActiveState")["ActiveState"] == "active",
          "a connection wakes it: %r" % r.stdout)



@test
@unprivileged
def test_unprivileged_user(env):
    """The same in an unprivileged user's (nobody's) manager: the units start
    (no capability setting a normal user's manager cannot apply), the
    coordinator is confined, checkpoints, crash recovery and stop/start work,
    and restarts restore process ids in a new user and pid namespace."""
    out, _ = env.launch("u")
    env.wait_ticks_past(out, 3)
    check(all(l[2] == str(NOBODY) for l in ticks(out) if l[0] == "tick"), "the program runs as nobody")
    cst = env.show("dmtcp-coordinator@u.service", "MainPID", "ActiveState")
    check(cst["ActiveState"] == "active", "the coordinator runs: %r" % cst)
    pst = read_status(int(cst["MainPID"]))
    check(pst["Uid"].split()[0] == str(NOBODY) and pst["NoNewPrivs"] == "1" and pst["Seccomp"] == "2" and
          int(pst["CapEff"], 16) == 0 and int(pst["CapPrm"], 16) == 0, "a confined coordinator: %r" % pst)
    lo = last_tick(out)
    r = env.ctl("checkpoint", "u", "--wait")
    check("committed" in r.stdout, "checkpoint: %r" % r.stdout)
    hi = last_tick(out)
    e = wait_until(lambda: env.journal("MESSAGE_ID=" + MSG_COMMITTED, "DMTCP_JOB=u", "_UID=%d" % NOBODY), 10,
                   "nobody's commit entry")
    check(e[-1].get("_SYSTEMD_USER_UNIT") == "dmtcp-coordinator@u.service", "attributed to the user unit: %r" % e[-1])
    r = env.ctl("history", "u")
    check("committed" in r.stdout or "journal you can read" in r.stdout, "history as nobody: %r" % r.stdout)
    env.wait_ticks_past(out, hi + 3)
    mark(out, "kill")
    env.systemctl("kill", "-s", "SIGKILL", "dmtcp@u.service")
    wait_until(lambda: env.unit_state("u")["NRestarts"] == "1" and len(after_mark(out, "kill")) >= 3, 30,
               "the unit to bring the job back")
    v = [before_mark(out, "kill")] + after_mark(out, "kill")
    back = [i for i in range(1, len(v)) if v[i] <= v[i - 1]]
    check(back and lo + 1 <= v[back[0]] <= hi + 1, "back from the checkpoint (%d..%d): %r" % (lo + 1, hi + 1, v))
    env.ctl("stop", "u")
    stopped_at = last_tick(out)
    mark(out, "start")
    env.ctl("start", "u")
    wait_until(lambda: len(after_mark(out, "start")) >= 2, 20, "counting after start")
    check(after_mark(out, "start")[0] == stopped_at + 1, "resumed exactly: %r" % after_mark(out, "start"))
    env.ctl("kill", "u")
    no_bad(out)


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
    tmp = tempfile.mkdtemp(prefix="dmtcp-sd-%s-" % name)
    env = Env(tmp, getattr(fn, "uid", 0))
    ok = False
    try:
        env.setup()
        fn(env)
        ok = True
    except Skip as e:
        print("SKIP %s: %s" % (name, e))
        env.teardown()
        shutil.rmtree(tmp, ignore_errors=True)
        return SKIP
    except AssertionError as e:
        print("FAIL %s: %s" % (name, e))
        env.dump()
    except Exception as e:
        import traceback
        traceback.print_exc()
        print("FAIL %s: %s: %s" % (name, type(e).__name__, e))
        env.dump()
    finally:
        if not ok:
            env.teardown()
    if ok:
        env.teardown()
        print("PASS %s" % name)
        shutil.rmtree(tmp, ignore_errors=True)
        return 0
    print("temporary directory kept: %s" % tmp)
    return 1


if __name__ == "__main__":
    sys.exit(main())
