#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-2-Clause
"""Benchmark: our calls side by side with the ways people do it today.

Starts the C echo sidecar (unix socket and TCP) and nginx with
bench/nginx.conf.in, runs every workload on every path in one run, and
writes bench/results/latest.{json,md,svg}.

    python3 bench/run.py            the full run (a few minutes)
    python3 bench/run.py --smoke    tiny counts, seconds: the harness works
"""

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests"))

from harness import WORKER_USER  # noqa: E402

BUILD = os.path.join(REPO, "build")
RESULTS = os.path.join(REPO, "bench", "results")

PATHS = ["ffi", "go", "python", "java", "unix", "tcp", "thread", "floor"]
PATH_NAMES = {
    "ffi": "(a) nonblocking_ffi, C echo runtime",
    "go": "(a) nonblocking_ffi, Go echo runtime (sdk/go)",
    "python": "(a) nonblocking_ffi, Python echo (shims/python, 1 thread)",
    "java": "(a) nonblocking_ffi, Java echo (shims/java, on the poll thread)",
    "unix": "(b) cosocket, unix socket sidecar",
    "tcp": "(c) cosocket, TCP loopback sidecar",
    "thread": "(d) ngx.run_worker_thread, Lua echo",
    "floor": "(e) floor: ngx.semaphore ping-pong",
}
# make go, make python and make java skip a part without its toolchain
for path, lib in (("go", "lib_nonblocking_ffi_go.so"),
                  ("python", "lib_nonblocking_ffi_python3.so"),
                  ("java", "lib_nonblocking_ffi_java.so")):
    if not os.path.exists(os.path.join(BUILD, lib)):
        PATHS.remove(path)
SIZES = [512, 4096, 10240, 102400]
CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(condition, timeout, what):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            sys.exit("bench: timed out waiting for " + what)
        time.sleep(0.02)


def connectable(port=None, unix=None):
    try:
        if unix:
            s = socket.socket(socket.AF_UNIX)
            s.connect(unix)
        else:
            s = socket.create_connection(("127.0.0.1", port), 0.2)
        s.close()
        return True
    except OSError:
        return False


class Bench:
    def __init__(self, smoke, spin=None, loop_spin=None):
        self.smoke = smoke
        # None: the library's default
        self.spin = "nil" if spin is None else str(int(spin))
        self.loop_spin = "nil" if loop_spin is None else str(int(loop_spin))
        self.tmp = tempfile.mkdtemp(prefix="nffi-bench-")
        os.chmod(self.tmp, 0o755)
        self.port = free_port()
        self.tcp_port = free_port()
        self.unix = os.path.join(self.tmp, "echo.sock")
        self.procs = []

    def start(self):
        echo = subprocess.Popen([os.path.join(BUILD, "echo_server"),
                                 self.unix, str(self.tcp_port)])
        self.procs.append(echo)
        self.echo_pid = echo.pid
        wait_for(lambda: connectable(unix=self.unix), 10, "the echo server")

        prefix = os.path.join(self.tmp, "nginx")
        os.makedirs(os.path.join(prefix, "logs"))
        with open(os.path.join(REPO, "bench", "nginx.conf.in")) as f:
            conf = f.read()
        for key, value in (("@REPO@", REPO), ("@PORT@", str(self.port)),
                           ("@UNIX@", self.unix),
                           ("@TCP_PORT@", str(self.tcp_port)),
                           ("@SPIN@", self.spin),
                           ("@LOOP_SPIN@", self.loop_spin),
                           ("# @USER@", WORKER_USER)):
            conf = conf.replace(key, value)
        conf_path = os.path.join(prefix, "nginx.conf")
        with open(conf_path, "w") as f:
            f.write(conf)
        self.error_log = os.path.join(prefix, "logs", "error.log")
        nginx = subprocess.Popen(["nginx", "-p", prefix, "-c", conf_path,
                                  "-e", self.error_log])
        self.procs.append(nginx)
        wait_for(lambda: connectable(self.port), 10, "nginx")
        wait_for(lambda: self.worker_pid(nginx.pid), 10, "the worker")
        self.worker = self.worker_pid(nginx.pid)

    @staticmethod
    def worker_pid(master):
        out = subprocess.run(["pgrep", "-P", str(master)],
                             capture_output=True, text=True).stdout.split()
        return int(out[0]) if out else None

    def stop(self):
        for proc in reversed(self.procs):
            proc.send_signal(signal.SIGQUIT if proc is self.procs[-1]
                             else signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def get(self, path, timeout=600):
        url = "http://127.0.0.1:%d%s" % (self.port, path)
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            body = resp.read().decode()
        if resp.status != 200:
            sys.exit("bench: %s -> %d %s" % (path, resp.status, body))
        return dict(kv.split("=") for kv in body.split())

    def checked_get(self, path):
        try:
            return self.get(path)
        except urllib.error.HTTPError as e:
            with open(self.error_log) as f:
                sys.exit("bench: %s failed (%s)\n%s"
                         % (path, e, f.read()[-3000:]))

    # --- CPU accounting from /proc

    @staticmethod
    def cpu_ticks(pid, tid=None):
        path = ("/proc/%d/task/%d/stat" % (pid, tid) if tid
                else "/proc/%d/stat" % pid)
        with open(path) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])     # utime + stime

    def runtime_threads(self):
        return [int(t) for t in os.listdir("/proc/%d/task" % self.worker)
                if int(t) != self.worker]

    # --- workloads

    def resident_kb(self):
        with open("/proc/%d/status" % self.worker) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def sequential(self):
        rows = []
        for size in SIZES:
            n = 300 if self.smoke else (20000 if size <= 10240 else 4000)
            for path in PATHS:
                if path == "java" and size == SIZES[0]:
                    # the worker before and after its JVM starts
                    self.rss_before_jvm_kb = self.resident_kb()
                r = self.checked_get("/sequential?path=%s&size=%d&n=%d"
                                     % (path, size, n))
                rows.append({"path": path, "size": size, "calls": n,
                             "calls_per_s": int(r["calls_per_s"]),
                             "p50_us": float(r["p50_us"]),
                             "p99_us": float(r["p99_us"])})
                if path == "java" and size == SIZES[0]:
                    self.rss_with_jvm_kb = self.resident_kb()
        return rows

    def concurrent(self):
        rows = []
        n = 640 if self.smoke else 64000
        for path in PATHS:
            r = self.checked_get("/concurrent?path=%s&size=512&n=%d&c=64"
                                 % (path, n))
            rows.append({"path": path, "size": 512, "coroutines": 64,
                         "calls": n, "calls_per_s": int(r["calls_per_s"])})
        return rows

    def calls(self, rounds=5):
        """Medians over rounds of the two workloads the call path decides,
        for A/B runs of two builds."""
        figures = {}
        n_seq = 300 if self.smoke else 20000
        n_con = 640 if self.smoke else 64000
        for path in ("ffi", "unix"):
            seq, con = [], []
            for _ in range(rounds):
                seq.append(self.checked_get(
                    "/sequential?path=%s&size=512&n=%d" % (path, n_seq))
                    ["calls_per_s"])
                con.append(self.checked_get(
                    "/concurrent?path=%s&size=512&n=%d&c=64" % (path, n_con))
                    ["calls_per_s"])
            figures[path] = {"sequential": int(statistics.median(seq)),
                             "concurrent": int(statistics.median(con))}
        return figures

    def wrk(self, location, seconds):
        out = subprocess.run(
            ["wrk", "-t1", "-c32", "-d%ds" % seconds,
             "http://127.0.0.1:%d%s" % (self.port, location)],
            capture_output=True, text=True, check=True).stdout
        if "Non-2xx" in out:
            sys.exit("bench: wrk saw errors on %s\n%s" % (location, out))
        return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))

    def http(self):
        seconds, rounds = (1, 1) if self.smoke else (5, 5)
        call, nocall, floor = [], [], []
        # interleaved: the machine's noise hits all sides alike
        for _ in range(rounds):
            nocall.append(self.wrk("/http/nocall", seconds))
            floor.append(self.wrk("/http/yield", seconds))
            call.append(self.wrk("/http/call", seconds))
        return {"seconds_per_round": seconds, "rounds": rounds,
                "nocall_req_per_s": nocall, "call_req_per_s": call,
                "yield_floor_req_per_s": floor,
                "ratio_median": statistics.median(
                    c / n for c, n in zip(call, nocall)),
                "yield_floor_ratio_median": statistics.median(
                    f / n for f, n in zip(floor, nocall))}

    def cpu(self):
        n = 1000 if self.smoke else 100000
        result = {}
        for path in ("ffi", "unix"):
            before = self.cpu_ticks(self.worker)
            echo_before = self.cpu_ticks(self.echo_pid)
            self.checked_get("/sequential?path=%s&size=512&n=%d"
                             % (path, n))
            used = (self.cpu_ticks(self.worker) - before
                    + self.cpu_ticks(self.echo_pid) - echo_before)
            result[path + "_cpu_s_per_100k"] = used / CLK_TCK * 100000 / n

        # after a burst, the runtime threads must go quiet
        self.checked_get("/concurrent?path=ffi&size=512&n=%d&c=64"
                         % (640 if self.smoke else 64000))
        threads = self.runtime_threads()
        before = {t: self.cpu_ticks(self.worker, t) for t in threads}
        time.sleep(1.0)    # the measurement window itself, not a settle
        after = {t: self.cpu_ticks(self.worker, t) for t in threads}
        used = sum(after[t] - before[t] for t in threads)
        result["runtime_threads_cpu_pct_second_after_burst"] = \
            100.0 * used / CLK_TCK
        return result


def syscalls_per_call(bench, path, n):
    """strace -c on the worker (all its threads) during n calls."""
    out = os.path.join(bench.tmp, "strace.txt")
    strace = subprocess.Popen(["strace", "-c", "-f", "-o", out,
                               "-p", str(bench.worker)],
                              stderr=subprocess.DEVNULL)
    # strace announces nothing: wait until it is attached to every thread
    wait_for(lambda: all(
        re.search(r"TracerPid:\s+%d" % strace.pid,
                  open("/proc/%d/task/%s/status" % (bench.worker, t)).read())
        for t in os.listdir("/proc/%d/task" % bench.worker)), 10, "strace")
    bench.checked_get("/sequential?path=%s&size=512&n=%d" % (path, n))
    strace.send_signal(signal.SIGINT)
    strace.wait(20)
    counts = {}
    with open(out) as f:
        for line in f:
            fields = line.split()
            if len(fields) >= 5 and fields[0][0].isdigit() \
                    and fields[-1] != "total":
                counts[fields[-1]] = int(fields[3])
    # the warm-up calls and the HTTP request itself are counted too
    calls = n + min(n, 200)
    return {name: round(count / calls, 3)
            for name, count in sorted(counts.items(),
                                      key=lambda kv: -kv[1])[:8]}


def machine():
    def first(path, key):
        try:
            with open(path) as f:
                for line in f:
                    if line.startswith(key):
                        return line.split(":", 1)[1].strip()
        except OSError:
            pass
        return "unknown"

    lua = subprocess.run(["dpkg-query", "-W", "-f=${Version}",
                          "libnginx-mod-http-lua"],
                         capture_output=True, text=True).stdout
    nginx = subprocess.run(["nginx", "-v"], capture_output=True,
                           text=True).stderr.strip()
    return {"cpu": first("/proc/cpuinfo", "model name"),
            "cores": os.cpu_count(), "kernel": platform.release(),
            "nginx": nginx, "lua_nginx_module_package": lua,
            "date": datetime.datetime.now(datetime.timezone.utc)
            .strftime("%Y-%m-%d %H:%M UTC")}


def ratios(results):
    seq = {(r["path"], r["size"]): r["calls_per_s"]
           for r in results["sequential"]}
    conc = {r["path"]: r["calls_per_s"] for r in results["concurrent"]}
    cpu = results["cpu"]
    return [
        ("sequential 512 B vs unix socket", seq["ffi", 512]
         / seq["unix", 512], ">=", 10),
        ("sequential 512 B vs floor", seq["ffi", 512] / seq["floor", 512],
         ">=", 1 / 8),
        ("sequential 100 KB vs unix socket", seq["ffi", 102400]
         / seq["unix", 102400], ">=", 3),
        ("64 concurrent vs unix socket", conc["ffi"] / conc["unix"], ">=",
         10),
        ("HTTP with one call vs without", results["http"]["ratio_median"],
         ">=", 0.85),
        ("runtime threads' CPU % one second after a burst",
         cpu["runtime_threads_cpu_pct_second_after_burst"], "<", 1),
    ]


def markdown(results):
    lines = ["# Benchmark results", "",
             "Machine: %(cpu)s, %(cores)s cores, kernel %(kernel)s, "
             "%(nginx)s, lua-nginx-module package %(lua_nginx_module_package)s"
             ", %(date)s." % results["machine"],
             "", "## Targets (ratios from this one run)", "",
             "| measure | value | target | met |", "|---|---|---|---|"]
    for name, value, op, target in ratios(results):
        met = value >= target if op == ">=" else value < target
        lines.append("| %s | %.3g | %s %.3g | %s |"
                     % (name, value, op, target, "yes" if met else "NO"))
    lines.append("| (for scale) HTTP with one ngx.semaphore round trip, no "
                 "other thread, vs without | %.3g | | |"
                 % results["http"]["yield_floor_ratio_median"])
    lines += ["", "## Sequential calls from one coroutine", "",
              "| path | size | calls/s | p50 µs | p99 µs |",
              "|---|---|---|---|---|"]
    for r in results["sequential"]:
        lines.append("| %s | %d B | %d | %.1f | %.1f |"
                     % (PATH_NAMES[r["path"]], r["size"], r["calls_per_s"],
                        r["p50_us"], r["p99_us"]))
    lines += ["", "## 64 concurrent coroutines in one request, 512 B", "",
              "| path | calls/s |", "|---|---|"]
    for r in results["concurrent"]:
        lines.append("| %s | %d |" % (PATH_NAMES[r["path"]],
                                      r["calls_per_s"]))
    h = results["http"]
    lines += ["", "## HTTP, wrk -t1 -c32, %d rounds of %d s, interleaved"
              % (h["rounds"], h["seconds_per_round"]), "",
              "| round | no call req/s | semaphore round trip req/s | "
              "one call req/s | ratio |", "|---|---|---|---|---|"]
    for i, (n, f, c) in enumerate(zip(h["nocall_req_per_s"],
                                      h["yield_floor_req_per_s"],
                                      h["call_req_per_s"])):
        lines.append("| %d | %.0f | %.0f | %.0f | %.2f |"
                     % (i + 1, n, f, c, c / n))
    lines += ["", "## CPU", ""]
    for key, value in results["cpu"].items():
        lines.append("- %s: %.3f" % (key, value))
    memory = results.get("memory")
    if memory:
        lines += ["", "## Memory", "",
                  "- the worker's resident memory before its JVM started: "
                  "%d kB; with the JVM and the Java echo runtime: %d kB "
                  "(+%d kB)" % (memory["worker_rss_kb_before_jvm"],
                                memory["worker_rss_kb_with_jvm"],
                                memory["worker_rss_kb_with_jvm"]
                                - memory["worker_rss_kb_before_jvm"])]
    lines += ["", "## System calls per sequential 512 B call (strace -c -f "
              "on the worker, all threads; the most frequent)", ""]
    for path, counts in results.get("syscalls_per_call", {}).items():
        lines.append("- %s: %s" % (PATH_NAMES[path], ", ".join(
            "%s %.2f" % kv for kv in counts.items()) or "none"))
    return "\n".join(lines) + "\n"


def svg(results):
    rows = [r for r in results["sequential"] if r["size"] == 512]
    top = max(r["calls_per_s"] for r in rows) or 1
    bars = []
    for i, r in enumerate(rows):
        width = 420.0 * r["calls_per_s"] / top
        y = 40 + i * 34
        bars.append(
            '<text x="10" y="%d" font-size="12">%s</text>'
            '<rect x="260" y="%d" width="%.1f" height="22" fill="#3b6ea5"/>'
            '<text x="%.1f" y="%d" font-size="12">%d/s</text>'
            % (y + 15, PATH_NAMES[r["path"]], y, width, 266 + width, y + 15,
               r["calls_per_s"]))
    return ('<svg xmlns="http://www.w3.org/2000/svg" width="780" '
            'height="%d" font-family="sans-serif">'
            '<text x="10" y="22" font-size="14">Sequential 512 B calls per '
            'second from one coroutine (higher is better)</text>%s</svg>\n'
            % (60 + 34 * len(rows), "".join(bars)))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--spin", type=int,
                        help="opts.spin of the runtime: its pollers' "
                             "sched_yield() rounds (default: the "
                             "library's)")
    parser.add_argument("--loop-spin", type=int,
                        help="opts.loop_spin of the runtime: event-loop "
                             "rounds polling for answers (default: the "
                             "library's)")
    parser.add_argument("--only", choices=["http", "calls"],
                        help="just this workload (knob studies, A/B runs): "
                             "prints its figures, writes no report; calls: "
                             "C echo and unix socket, sequential 512 B and "
                             "64 concurrent, median of 5 rounds")
    args = parser.parse_args()

    if args.only:
        bench = Bench(args.smoke, args.spin, args.loop_spin)
        try:
            bench.start()
            figures = (bench.http() if args.only == "http"
                       else bench.calls())
            print(json.dumps({"spin": args.spin, "loop_spin": args.loop_spin,
                              args.only: figures}))
        finally:
            bench.stop()
        return

    bench = Bench(args.smoke, args.spin, args.loop_spin)
    try:
        bench.start()
        results = {"machine": machine(), "smoke": args.smoke,
                   "spin": args.spin, "loop_spin": args.loop_spin,
                   "sequential": bench.sequential(),
                   "concurrent": bench.concurrent(),
                   "http": bench.http(), "cpu": bench.cpu()}
        if "java" in PATHS:
            results["memory"] = {
                "worker_rss_kb_before_jvm": bench.rss_before_jvm_kb,
                "worker_rss_kb_with_jvm": bench.rss_with_jvm_kb}
        n = 500 if args.smoke else 20000
        results["syscalls_per_call"] = {
            path: syscalls_per_call(bench, path, n)
            for path in ("ffi", "unix")}
    finally:
        bench.stop()

    os.makedirs(RESULTS, exist_ok=True)
    name = "smoke" if args.smoke else "latest"
    with open(os.path.join(RESULTS, name + ".json"), "w") as f:
        json.dump(results, f, indent=2)
    with open(os.path.join(RESULTS, name + ".md"), "w") as f:
        f.write(markdown(results))
    with open(os.path.join(RESULTS, name + ".svg"), "w") as f:
        f.write(svg(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
