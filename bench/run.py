#!/usr/bin/env python3
"""The performance benchmark of issue 6: pause, checkpoint time to durable,
image size and restart time for programs of several sizes and contents, the
run-time overhead of a mixed workload and the launch overhead, each next to
the machine's own limits measured in the same run (dd with fsync, memcpy,
the cost of a first page fault).

    bench/run.py [--build DIR] [--dir DIR] [--sizes 1,256,1024,2048]
                 [--contents random,text,zeros,untouched] [--runs N]
                 [--smoke] [--out FILE]

Every figure is the median of --runs runs. Each restarted program recomputes
the checksum of its whole memory and the run fails if one byte differs: a
fast restart that loses data is not a result. The restart time is from the
start of dmtcp_restart to the program's first heartbeat after it, with the
page cache warm and the coordinator already running. --smoke (the meson test
`bench-smoke`) runs small sizes once: it checks that the benchmark works, its
figures are not measurements of anything.
"""

import argparse
import datetime
import mmap
import os
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import time

HB_SIZE = 4096
HB_FIELDS = ("ready", "stamp_ns", "max_gap_ns", "reset", "checksum", "verify", "verified")


class Fail(Exception):
    pass


def log(msg):
    print("bench: " + msg, file=sys.stderr, flush=True)


def wait_until(pred, timeout, what, step=0.0005):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = pred()
        if v:
            return v
        time.sleep(step)
    raise Fail("timed out after %g s waiting for %s" % (timeout, what))


class Heartbeat:
    """The program's shared page (bench/bench-mem.c, struct heartbeat)."""

    def __init__(self, path):
        self.path = path
        with open(path, "wb") as f:
            f.truncate(HB_SIZE)
        self.f = open(path, "r+b")
        self.m = mmap.mmap(self.f.fileno(), HB_SIZE)

    def get(self, name):
        return struct.unpack_from("<Q", self.m, 8 * HB_FIELDS.index(name))[0]

    def set(self, name, v):
        struct.pack_into("<Q", self.m, 8 * HB_FIELDS.index(name), v)

    def close(self):
        self.m.close()
        self.f.close()


class Bench:
    def __init__(self, args):
        self.args = args
        b = os.path.abspath(args.build)
        self.bin = {
            "coord": os.path.join(b, "daemon", "dmtcp_coordinator"),
            "launch": os.path.join(b, "cli", "dmtcp_launch"),
            "command": os.path.join(b, "cli", "dmtcp_command"),
            "restart": os.path.join(b, "restart", "dmtcp_restart"),
            "mem": os.path.join(b, "bench", "bench-mem"),
            "limits": os.path.join(b, "bench", "bench-limits"),
            "mixed": os.path.join(b, "bench", "bench-mixed"),
            "empty": os.path.join(b, "bench", "bench-empty.so"),
        }
        for k, p in self.bin.items():
            if not os.access(p, os.R_OK if p.endswith(".so") else os.X_OK):
                raise Fail("%s not found: build first (ninja -C %s)" % (p, args.build))
        self.root = tempfile.mkdtemp(prefix="dmtcp-bench-", dir=args.dir)
        self.run_dir = os.path.join(self.root, "run")
        os.makedirs(self.run_dir, mode=0o700)
        self.hb_dir = tempfile.mkdtemp(prefix="dmtcp-bench-hb-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
        self.env = dict(os.environ, XDG_RUNTIME_DIR=self.run_dir, DMTCP_QUIET="1")
        for k in ("DMTCP_COORD_HOST", "DMTCP_COORD_PORT", "DMTCP_CHECKPOINT_DIR", "DMTCP_GZIP", "LD_PRELOAD"):
            self.env.pop(k, None)
        self.coords = []
        self.n = 0

    def cleanup(self):
        for c in self.coords:
            self.stop_coordinator(c)
        shutil.rmtree(self.root, ignore_errors=True)
        shutil.rmtree(self.hb_dir, ignore_errors=True)

    # -- processes -------------------------------------------------------

    def start_coordinator(self, ckpt):
        self.n += 1
        port_file = os.path.join(self.run_dir, "port%d" % self.n)
        p = subprocess.Popen([self.bin["coord"], "--port", "0", "--port-file", port_file, "--ckptdir", ckpt, "-q"],
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, env=self.env)
        self.coords.append(p)
        wait_until(lambda: os.path.exists(port_file) and open(port_file).read().strip() or p.poll() is not None,
                   10, "the coordinator's port")
        if p.poll() is not None:
            raise Fail("the coordinator exited at start (status %s)" % p.returncode)
        p.port = int(open(port_file).read())
        return p

    def stop_coordinator(self, c):
        if c.poll() is None:
            c.kill()            # our child, by its pid
        c.wait()
        if c in self.coords:
            self.coords.remove(c)

    def command(self, c, *args, timeout=600):
        r = subprocess.run([self.bin["command"], "-h", "127.0.0.1", "-p", str(c.port)] + list(args),
                           capture_output=True, text=True, timeout=timeout, env=self.env)
        return r.returncode, (r.stdout + r.stderr).strip()

    def end_computation(self, c, proc):
        """Kill the computation through its coordinator, then the coordinator."""
        self.command(c, "-k", timeout=60)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        self.stop_coordinator(c)

    # -- the machine's limits ----------------------------------------------

    def dd_seconds(self, mib):
        path = os.path.join(self.root, "dd.tmp")
        t = time.monotonic()
        subprocess.run(["dd", "if=/dev/zero", "of=" + path, "bs=1M", "count=%d" % mib, "conv=fsync"],
                       check=True, capture_output=True)
        t = time.monotonic() - t
        os.unlink(path)
        return t

    def limits(self, mib):
        out = subprocess.run([self.bin["limits"], str(mib)], check=True, capture_output=True, text=True).stdout
        return {k: float(v) for k, v in (line.split() for line in out.splitlines())}

    # -- one program: launch, checkpoint, restart ----------------------------

    def one_run(self, mib, contents, lazy_too):
        self.n += 1
        base = os.path.join(self.root, "r%d" % self.n)
        ckpt, work = os.path.join(base, "ckpt"), os.path.join(base, "work")
        os.makedirs(ckpt)
        os.makedirs(work)
        # The shared page lives in memory (tmpfs), not on the disk the
        # images go to: a write to a shared page of a disk file can wait for
        # that file system's journal, which the image writer keeps busy, and
        # that stop would be the disk's, not the checkpoint's.
        hb = Heartbeat(os.path.join(self.hb_dir, "heartbeat%d" % self.n))
        res = {}
        try:
            c = self.start_coordinator(ckpt)
            prog = subprocess.Popen([self.bin["launch"], "-j", "-h", "127.0.0.1", "-p", str(c.port), "--ckptdir", ckpt,
                                     self.bin["mem"], str(mib), contents, hb.path],
                                    cwd=work, stdin=subprocess.DEVNULL, env=self.env)
            wait_until(lambda: hb.get("ready") or prog.poll() is not None, 300, "the program to fill its memory",
                       step=0.01)
            if prog.poll() is not None:
                raise Fail("bench-mem exited at start (status %s)" % prog.returncode)
            want = hb.get("checksum")
            time.sleep(0.05)
            hb.set("reset", 1)
            wait_until(lambda: hb.get("reset") == 0, 10, "the heartbeat reset")
            t = time.monotonic()
            rc, out = self.command(c, "-bc")
            res["ckpt_s"] = time.monotonic() - t
            if rc:
                raise Fail("checkpoint of %d MiB %s failed: %s" % (mib, contents, out))
            stamp = hb.get("stamp_ns")
            wait_until(lambda: hb.get("stamp_ns") != stamp, 10, "a heartbeat after the checkpoint")
            res["pause_s"] = hb.get("max_gap_ns") / 1e9
            # The same program over as long a window without a checkpoint:
            # on a virtual machine its longest gap is not zero (the
            # hypervisor stops guests, more often the more memory they hold).
            hb.set("reset", 1)
            wait_until(lambda: hb.get("reset") == 0, 10, "the heartbeat reset")
            time.sleep(max(res["ckpt_s"], 0.5))
            res["quiet_gap_s"] = hb.get("max_gap_ns") / 1e9
            gen = os.path.join(ckpt, os.readlink(os.path.join(ckpt, "latest")))
            res["image_b"] = sum(os.path.getsize(os.path.join(gen, f)) for f in os.listdir(gen)
                                 if f.endswith(".dmtcp"))
            self.end_computation(c, prog)
            # Large images are written with O_DIRECT, past the page cache:
            # read them once, so that restarts are measured as the issue
            # states them, page cache warm.
            for f in os.listdir(gen):
                with open(os.path.join(gen, f), "rb") as fh:
                    while fh.read(1 << 24):
                        pass
            for mode in (["eager", "lazy"] if lazy_too else ["eager"]):
                c = self.start_coordinator(ckpt)
                t0 = time.time_ns()
                t = time.monotonic()
                r = subprocess.Popen([self.bin["restart"], "-j", "-h", "127.0.0.1", "-p", str(c.port), "-q"] +
                                     (["--lazy"] if mode == "lazy" else []) + [ckpt],
                                     cwd=work, stdin=subprocess.DEVNULL, env=self.env)
                wait_until(lambda: hb.get("stamp_ns") > t0 or r.poll() is not None, 300, "the restarted program")
                if hb.get("stamp_ns") <= t0:
                    raise Fail("dmtcp_restart %s exited with status %s" % (ckpt, r.returncode))
                res["restart_%s_s" % mode] = time.monotonic() - t
                hb.set("verify", 1)
                wait_until(lambda: hb.get("verify") == 2, 300, "the restarted program's checksum", step=0.005)
                if hb.get("verified") != want:
                    raise Fail("CORRUPT: %d MiB %s restarted (%s) with checksum %#x, expected %#x" %
                               (mib, contents, mode, hb.get("verified"), want))
                self.end_computation(c, r)
        finally:
            hb.close()
            os.unlink(hb.path)
            shutil.rmtree(base, ignore_errors=True)
        return res

    # -- overheads -------------------------------------------------------------

    def native_and_under(self, name, runs, measure, control=False):
        """measure(prefix, env) run natively, (control) natively with an
        empty library preloaded, and under dmtcp_launch, in turn, runs
        times, with a coordinator of their own. Returns the medians of each
        ("native", "empty", "dmtcp") and the medians of each round's ratio
        to its native run ("empty_ratio", "dmtcp_ratio"): rounds cancel
        the machine's slow drifts, which medians of whole series do not."""
        ckpt = os.path.join(self.root, name)
        os.makedirs(ckpt, exist_ok=True)
        c = self.start_coordinator(ckpt)
        launch = [self.bin["launch"], "-j", "-h", "127.0.0.1", "-p", str(c.port), "--ckptdir", ckpt]
        kinds = ("native", "empty", "dmtcp") if control else ("native", "dmtcp")
        got = {k: [] for k in kinds}
        try:
            for _ in range(runs):
                got["native"].append(measure([], self.env))
                if control:
                    got["empty"].append(measure([], dict(self.env, LD_PRELOAD=self.bin["empty"])))
                got["dmtcp"].append(measure(launch, self.env))
        finally:
            self.stop_coordinator(c)
        res = {k: statistics.median(v) for k, v in got.items()}
        for k in kinds[1:]:
            res[k + "_ratio"] = statistics.median(x / n for x, n in zip(got[k], got["native"]))
        return res

    def mixed_overhead(self, runs, iters):
        def work_seconds(pre, env):
            out = subprocess.run(pre + [self.bin["mixed"], "2", str(iters)], check=True,
                                 capture_output=True, text=True, env=env).stdout
            return float(out.split()[1])
        return self.native_and_under("mixed", runs, work_seconds, control=True)

    def launch_overhead(self, runs):
        true = shutil.which("true") or "/bin/true"

        def wall_seconds(pre, env):
            t = time.monotonic()
            subprocess.run(pre + [true], check=True, env=env)
            return time.monotonic() - t
        return self.native_and_under("launch", runs, wall_seconds)


# ---- the report ------------------------------------------------------------------

def ms(s):
    return "%.1f ms" % (s * 1e3) if s < 1 else "%.2f s" % s


def size_str(b):
    if b < 1 << 20:
        return "%.0f KiB" % (b / 1024)
    if b < 1 << 30:
        return "%.1f MiB" % (b / (1 << 20))
    return "%.2f GiB" % (b / (1 << 30))


def verdict(ok):
    return "met" if ok else "**not met**"


def report(a, lim, dd, table, mixed, launch, lazy):
    L = []
    L.append("Machine limits (this run): sequential write with fsync (dd conv=fsync, bs=1M) %s; "
             "memcpy %.1f GB/s; first touch of fresh memory %.2f us per 4 KiB page; %d cores."
             % (", ".join("%d MiB in %s (%.2f GB/s)" % (m, ms(t), m * (1 << 20) / t / 1e9) for m, t in sorted(dd.items())),
                lim["memcpy_gbps"], lim["fault_us"], os.cpu_count()))
    L.append("")
    L.append("Medians of %d run%s; restart with the coordinator already running, page cache warm; "
             "images compressed (default)." % (a.runs, "" if a.runs == 1 else "s"))
    L.append("")
    L.append("pause: the longest gap between two ticks of the program's 1 ms heartbeat during the checkpoint; "
             "quiet: the same over as long a window without a checkpoint (the machine's own stops).")
    L.append("")
    hdr = "| size | contents | pause | quiet | checkpoint to durable | × dd | image | restart | restart --lazy |"
    L.append(hdr)
    L.append("|" + "---|" * (hdr.count("|") - 1))
    for (mib, contents), r in sorted(table.items(), key=lambda kv: (kv[0][0], a.contents.index(kv[0][1]))):
        L.append("| %d MiB | %s | %s | %s | %s | %.2f | %s | %s | %s |" % (
            mib, contents, ms(r["pause_s"]), ms(r["quiet_gap_s"]), ms(r["ckpt_s"]), r["ckpt_s"] / dd[mib],
            size_str(r["image_b"]), ms(r["restart_eager_s"]), ms(r["restart_lazy_s"]) if "restart_lazy_s" in r else "—"))
    L.append("")
    L.append("Run-time overhead, mixed workload (2 threads: malloc/free, open/close, read, getppid, a shared "
             "mutex; the work's own time, medians): native %s, under dmtcp %s; median of the rounds' ratios "
             "%+.1f %%. Control, an empty library preloaded: %s, %+.1f %% (the part any preloaded library "
             "causes by shifting the memory layout, plus this machine's noise)." % (
                 ms(mixed["native"]), ms(mixed["dmtcp"]), (mixed["dmtcp_ratio"] - 1) * 100, ms(mixed["empty"]),
                 (mixed["empty_ratio"] - 1) * 100))
    L.append("Launch: `true` %s, `dmtcp_launch true` %s, overhead %s." % (
        ms(launch["native"]), ms(launch["dmtcp"]), ms(launch["dmtcp"] - launch["native"])))
    L.append("")

    def get(mib, contents, key):
        r = table.get((mib, contents))
        return r.get(key) if r else None

    rows = []
    big = [r for (mib, _), r in table.items() if mib >= 1024]
    if big:
        worst = max(big, key=lambda r: r["pause_s"])
        rows.append(("pause, 1–2 GiB, any contents", "≤ 50 ms",
                     "%s (quiet: %s)" % (ms(worst["pause_s"]), ms(worst["quiet_gap_s"])), worst["pause_s"] <= 0.05))
    for mib in (1024, 2048):
        v = get(mib, "random", "ckpt_s")
        if v is not None:
            rows.append(("checkpoint to durable, random, %d MiB" % mib, "≤ 1.3 × dd",
                         "%s = %.2f × dd" % (ms(v), v / dd[mib]), v <= 1.3 * dd[mib]))
        v, img = get(mib, "text", "ckpt_s"), get(mib, "text", "image_b")
        if v is not None:
            cap = 156e6 * mib / 2048
            rows.append(("checkpoint to durable, text, %d MiB" % mib, "≤ 2 × dd, image ≤ %.0f MB" % (cap / 1e6),
                         "%s = %.2f × dd, image %s" % (ms(v), v / dd[mib], size_str(img)),
                         v <= 2 * dd[mib] and img <= cap))
    v, img = get(2048, "zeros", "ckpt_s"), get(2048, "zeros", "image_b")
    if v is not None:
        rows.append(("touched zeros, 2 GiB", "image ≤ 1 MiB, ≤ 0.3 s", "%s, %s" % (size_str(img), ms(v)),
                     img <= 1 << 20 and v <= 0.3))
    for contents, cap in (("random", 0.5), ("text", 1.5)):
        v = get(1024, contents, "restart_eager_s")
        if v is not None:
            rows.append(("restart, default settings, 1 GiB %s" % contents, "≤ %g s" % cap, ms(v), v <= cap))
    v = get(2048, "random", "restart_lazy_s")
    if v is not None:
        rows.append(("restart --lazy, 2 GiB random", "≤ 0.1 s", ms(v), v <= 0.1))
    r = table.get((1, "random"))
    if r:
        rows.append(("1 MiB process: checkpoint / restart / image", "≤ 50 ms / ≤ 50 ms / ≤ 2 MiB",
                     "%s / %s / %s" % (ms(r["ckpt_s"]), ms(r["restart_eager_s"]), size_str(r["image_b"])),
                     r["ckpt_s"] <= 0.05 and r["restart_eager_s"] <= 0.05 and r["image_b"] <= 2 << 20))
    over = mixed["dmtcp_ratio"] - 1
    rows.append(("run-time overhead, mixed workload", "≤ 1 %", "%+.1f %% (control %+.1f %%)" % (
        over * 100, (mixed["empty_ratio"] - 1) * 100), over <= 0.01))
    lo = launch["dmtcp"] - launch["native"]
    rows.append(("launch overhead", "≤ 5 ms", ms(lo), lo <= 0.005))
    L.append("| target | goal | measured | |")
    L.append("|---|---|---|---|")
    for name, goal, got, ok in rows:
        L.append("| %s | %s | %s | %s |" % (name, goal, got, verdict(ok)))
    if not lazy:
        L.append("")
        L.append("(`--lazy` restarts not measured: --no-lazy given.)")
    return "\n".join(L) + "\n"


def git_commit():
    here = os.path.dirname(os.path.abspath(__file__))
    r = subprocess.run(["git", "-C", here, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(["git", "-C", here, "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()
    return (r.stdout.strip() or "unknown") + ("+changes" if dirty else "")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build", default=os.environ.get("DMTCP_BUILD",
                                                      os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "build")))
    ap.add_argument("--dir", default=None, help="where images are written (default: $TMPDIR)")
    ap.add_argument("--sizes", default="1,256,1024,2048")
    ap.add_argument("--contents", default="random,text,zeros,untouched")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--no-lazy", action="store_true", help="do not measure restart --lazy")
    ap.add_argument("--smoke", action="store_true", help="small sizes, one run: checks the benchmark works")
    ap.add_argument("--out", help="also write the report (with date and commit) to this file")
    a = ap.parse_args()
    if a.smoke:
        a.sizes, a.runs = "1,16", 1
    sizes = [int(s) for s in a.sizes.split(",")]
    a.contents = a.contents.split(",")
    for c in a.contents:
        if c not in ("random", "text", "zeros", "untouched"):
            ap.error("unknown contents %s" % c)
    lazy = not a.no_lazy
    b = Bench(a)
    try:
        lim = b.limits(64 if a.smoke else 512)
        dd = {m: statistics.median(b.dd_seconds(m) for _ in range(a.runs)) for m in sizes}
        table = {}
        for mib in sizes:
            for contents in a.contents:
                runs = []
                for i in range(a.runs):
                    runs.append(b.one_run(mib, contents, lazy))
                    log("%d MiB %s run %d: %s" % (mib, contents, i + 1,
                                                  ", ".join("%s %.4f" % kv for kv in sorted(runs[-1].items()))))
                table[(mib, contents)] = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        mixed = b.mixed_overhead(3 if a.smoke else max(15, a.runs), 20000 if a.smoke else 1000000)
        launch = b.launch_overhead(3 if a.smoke else 20)
    except Fail as e:
        print("bench: FAILED: %s" % e, file=sys.stderr)
        return 1
    finally:
        b.cleanup()
    text = report(a, lim, dd, table, mixed, launch, lazy)
    print(text)
    if a.out:
        head = "# Benchmark results\n\n%s, commit %s, `bench/run.py %s`.\n\n" % (
            datetime.date.today().isoformat(), git_commit(), " ".join(sys.argv[1:]))
        with open(a.out, "w") as f:
            f.write(head + text)
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    sys.exit(main())
