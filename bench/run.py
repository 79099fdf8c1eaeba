#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-2-Clause
"""Benchmark: our calls side by side with the ways people do it today.

Starts the C echo sidecar (unix socket and TCP) and nginx with
bench/nginx.conf.in, runs every workload on every path in one run, and
writes bench/results/latest.{json,md,svg}.  Besides that main nginx (one
worker, both cores), the run starts: the same pinned to one CPU with taskset
(the ancestor's table), one with two workers (HTTP), and one fresh nginx per
language (a worker's resident memory with that runtime loaded).

    python3 bench/run.py            the full run (a few minutes)
    python3 bench/run.py --smoke    tiny counts, seconds: the harness works
"""

import argparse
import http.client
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

PATHS = ["ffi", "go", "python", "python_async", "java", "rust",
         "rust_async", "unix", "tcp", "thread", "floor"]
PATH_NAMES = {
    "ffi": "(a) nonblocking_ffi, C echo runtime",
    "go": "(a) nonblocking_ffi, Go echo runtime (sdk/go)",
    "python": "(a) nonblocking_ffi, Python echo (shims/python, 1 thread)",
    "python_async": "(a) nonblocking_ffi, Python echo (shims/python, "
                    "asyncio)",
    "java": "(a) nonblocking_ffi, Java echo (shims/java, on the poll thread)",
    "rust": "(a) nonblocking_ffi, Rust echo (sdk/rust, 1 poll thread)",
    "rust_async": "(a) nonblocking_ffi, Rust echo (sdk/rust, tokio)",
    "unix": "(b) cosocket, unix socket sidecar",
    "tcp": "(c) cosocket, TCP loopback sidecar",
    "thread": "(d) ngx.run_worker_thread, Lua echo",
    "floor": "(e) floor: ngx.semaphore ping-pong",
}
# the ancestor's table: one row per way of calling, the sidecar last
TABLE_PATHS = ["ffi", "go", "python", "python_async", "java", "rust",
               "rust_async", "unix"]
# a call's latency while wrk saturates the worker
LATENCY_PATHS = ["ffi", "go", "python", "python_async", "java", "rust",
                 "rust_async", "unix"]
# a worker's resident memory with one language's runtime loaded
MEMORY_PATHS = ["ffi", "go", "python", "java", "rust_async"]
# make go, python, java and rust skip a part without its toolchain
for lib, parts in (("lib_nonblocking_ffi_go.so", ["go"]),
                   ("lib_nonblocking_ffi_python3.so",
                    ["python", "python_async"]),
                   ("lib_nonblocking_ffi_java.so", ["java"]),
                   ("lib_nonblocking_ffi_rust.so", ["rust", "rust_async"])):
    if not os.path.exists(os.path.join(BUILD, lib)):
        for paths in (PATHS, TABLE_PATHS, LATENCY_PATHS, MEMORY_PATHS):
            for part in parts:
                if part in paths:
                    paths.remove(part)
SIZES = [512, 4096, 10240, 102400]
SIZE_NAMES = {512: "512 B", 4096: "4 KB", 10240: "10 KB", 102400: "100 KB"}
# the CPU that taskset gives the one-CPU nginx and its sidecar
ONE_CPU = str(min(os.sched_getaffinity(0)))

# lua-resty-ffi's published figures: seconds for 100 000 sequential echo
# calls from one coroutine, its Go echo runtime against a Go unix-socket echo
# server, AWS EC2 t2.medium, Ubuntu 22.04, 1 CPU by taskset and 2 CPUs
# (charts benchmark1.png and benchmark2.png of benchmark.md, 2022-11-25)
ANCESTOR = {
    "url": "https://github.com/kingluo/lua-resty-ffi/blob/main/benchmark.md",
    "rows": {
        "lua-resty-ffi (Go echo)": {
            1: [1.18, 1.34, 1.53, 3.98], 2: [3.68, 3.80, 3.93, 7.54]},
        "unix domain socket (Go echo server)": {
            1: [3.16, 4.06, 5.40, 23.99], 2: [4.57, 5.19, 6.03, 20.64]},
    },
}
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
    """One nginx (and the echo sidecar unless sidecar is false), started
    under taskset -c cpus when cpus is given."""

    def __init__(self, smoke, spin=None, loop_spin=None, cpus=None,
                 workers=1, sidecar=True):
        self.smoke = smoke
        self.pin = ["taskset", "-c", cpus] if cpus else []
        self.workers = workers
        self.sidecar = sidecar
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
        if self.sidecar:
            # taskset execs the program: the pid is the sidecar's
            echo = subprocess.Popen(self.pin + [
                os.path.join(BUILD, "echo_server"), self.unix,
                str(self.tcp_port)])
            self.procs.append(echo)
            self.echo_pid = echo.pid
            wait_for(lambda: connectable(unix=self.unix), 10,
                     "the echo server")

        prefix = os.path.join(self.tmp, "nginx")
        os.makedirs(os.path.join(prefix, "logs"))
        with open(os.path.join(REPO, "bench", "nginx.conf.in")) as f:
            conf = f.read()
        for key, value in (("@REPO@", REPO), ("@PORT@", str(self.port)),
                           ("@UNIX@", self.unix),
                           ("@TCP_PORT@", str(self.tcp_port)),
                           ("@SPIN@", self.spin),
                           ("@LOOP_SPIN@", self.loop_spin),
                           ("@WORKERS@", str(self.workers)),
                           ("# @USER@", WORKER_USER)):
            conf = conf.replace(key, value)
        conf_path = os.path.join(prefix, "nginx.conf")
        with open(conf_path, "w") as f:
            f.write(conf)
        self.error_log = os.path.join(prefix, "logs", "error.log")
        nginx = subprocess.Popen(self.pin + [
            "nginx", "-p", prefix, "-c", conf_path, "-e", self.error_log])
        self.procs.append(nginx)
        wait_for(lambda: connectable(self.port), 10, "nginx")
        wait_for(lambda: len(self.worker_pids(nginx.pid)) == self.workers,
                 10, "the workers")
        self.worker_list = self.worker_pids(nginx.pid)
        self.worker = self.worker_list[0]

    @staticmethod
    def worker_pids(master):
        out = subprocess.run(["pgrep", "-P", str(master)],
                             capture_output=True, text=True).stdout.split()
        return sorted(int(pid) for pid in out)

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

    def url(self, path):
        return "http://127.0.0.1:%d%s" % (self.port, path)

    def text(self, path, timeout=600):
        with urllib.request.urlopen(self.url(path), timeout=timeout) as resp:
            body = resp.read().decode()
        if resp.status != 200:
            sys.exit("bench: %s -> %d %s" % (path, resp.status, body))
        return body

    def get(self, path, timeout=600):
        return dict(kv.split("=") for kv in self.text(path, timeout).split())

    def checked_get(self, path):
        try:
            return self.get(path)
        except (urllib.error.URLError, http.client.HTTPException) as e:
            # an error page, or a worker that died under the request
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

    def worker_status(self):
        """The worker's resident memory (kB) and thread count."""
        status = {}
        with open("/proc/%d/status" % self.worker) as f:
            for line in f:
                key, _, value = line.partition(":")
                status[key] = value.split()[0] if value.split() else ""
        return int(status["VmRSS"]), int(status["Threads"])

    def warm_up(self):
        """A fresh worker's first tens of thousands of calls are slower, on
        every path alike (the worker warms up): rounds of C echo calls
        until a round is less than 5 % faster than the one before, at most
        10; their calls/s.  Then each runtime warms up too (Go's heap and
        threads grow, the JVM compiles): one round on every other path,
        whose figures are its first calls'."""
        n = 100 if self.smoke else 25000
        rates = []
        while len(rates) < 10:
            r = self.checked_get("/sequential?path=ffi&size=512&n=%d&timed=0"
                                 % n)
            rates.append(int(r["calls_per_s"]))
            if len(rates) >= 2 and rates[-1] < 1.05 * rates[-2]:
                break
        first_calls = {}
        for path in PATHS:
            if path != "ffi":
                r = self.checked_get("/sequential?path=%s&size=512&n=%d"
                                     % (path, n))
                first_calls[path] = {key: float(r[key]) for key in
                                     ("calls_per_s", "p50_us", "p99_us")}
        return {"calls_per_round": n, "calls_per_s": rates,
                "first_calls": first_calls}

    def sequential(self):
        rows = []
        for size in SIZES:
            # 512 B sets the latency ratios: p99 over 1000 calls, not 200,
            # so that a hiccup of a millisecond does not decide it alone
            n = 300 if self.smoke else {512: 100000, 4096: 20000,
                                        10240: 20000}.get(size, 4000)
            for path in PATHS:
                r = self.checked_get("/sequential?path=%s&size=%d&n=%d"
                                     % (path, size, n))
                rows.append({"path": path, "size": size, "calls": n,
                             "calls_per_s": int(r["calls_per_s"]),
                             "p50_us": float(r["p50_us"]),
                             "p99_us": float(r["p99_us"])})
        return rows

    def table(self):
        """The ancestor's table: seconds per 100 000 sequential calls from
        one coroutine, no clock read between the calls; the median of
        interleaved rounds of n calls each, scaled to 100 000."""
        seconds = {}
        rounds = 1 if self.smoke else 3
        for _ in range(rounds):
            for size in SIZES:
                n = 100 if self.smoke else (10000 if size <= 10240
                                            else 4000)
                for path in TABLE_PATHS:
                    r = self.checked_get(
                        "/sequential?path=%s&size=%d&n=%d&timed=0"
                        % (path, size, n))
                    seconds.setdefault((path, size, n), []).append(
                        round(1e5 / int(r["calls_per_s"]), 3))
        return [{"path": path, "size": size, "calls": n, "rounds": rounds,
                 "s_per_100k": statistics.median(figures),
                 "s_per_100k_rounds": figures}
                for (path, size, n), figures in seconds.items()]

    def concurrent(self):
        rows = []
        n = 640 if self.smoke else 64000
        for path in PATHS:
            r = self.checked_get("/concurrent?path=%s&size=512&n=%d&c=64"
                                 % (path, n))
            rows.append({"path": path, "size": 512, "coroutines": 64,
                         "calls": n, "calls_per_s": int(r["calls_per_s"])})
        return rows

    def calls(self, paths=("ffi", "unix"), rounds=5):
        """Medians over rounds of the two workloads the call path decides,
        for A/B runs of two builds; the paths take turns in each round."""
        samples = {path: {"sequential": [], "p50_us": [], "p99_us": [],
                          "concurrent": []} for path in paths}
        n_seq = 300 if self.smoke else 20000
        n_con = 640 if self.smoke else 64000
        for _ in range(rounds):
            for path in paths:
                seq = self.checked_get(
                    "/sequential?path=%s&size=512&n=%d" % (path, n_seq))
                con = self.checked_get(
                    "/concurrent?path=%s&size=512&n=%d&c=64" % (path, n_con))
                for key, figure in (("sequential", seq["calls_per_s"]),
                                    ("p50_us", seq["p50_us"]),
                                    ("p99_us", seq["p99_us"]),
                                    ("concurrent", con["calls_per_s"])):
                    samples[path][key].append(float(figure))
        # calls/s as whole numbers, latencies to a tenth of a microsecond
        return {path: {key: (round(statistics.median(figures), 1)
                             if key.endswith("_us")
                             else int(statistics.median(figures)))
                       for key, figures in sample.items()}
                for path, sample in samples.items()}

    def wrk(self, location, seconds, threads=1, connections=32):
        out = subprocess.run(
            ["wrk", "-t%d" % threads, "-c%d" % connections,
             "-d%ds" % seconds, self.url(location)],
            capture_output=True, text=True, check=True).stdout
        return wrk_rate(location, out)

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

    def http_workers(self):
        """HTTP on this nginx's workers (two): one call per request against
        none, interleaved rounds, and each worker's share of a core."""
        seconds, rounds = (1, 1) if self.smoke else (5, 5)
        call, nocall, busy = [], [], []
        for _ in range(rounds):
            nocall.append(self.wrk("/http/nocall", seconds, 2, 64))
            before = [self.cpu_ticks(pid) for pid in self.worker_list]
            started = time.monotonic()
            call.append(self.wrk("/http/call", seconds, 2, 64))
            elapsed = time.monotonic() - started
            busy.append([round(100.0 * (self.cpu_ticks(pid) - b) / CLK_TCK
                               / elapsed) for pid, b
                         in zip(self.worker_list, before)])
        return {"workers": self.workers, "seconds_per_round": seconds,
                "rounds": rounds, "nocall_req_per_s": nocall,
                "call_req_per_s": call, "workers_cpu_pct_with_call": busy,
                "ratio_median": statistics.median(
                    c / n for c, n in zip(call, nocall))}

    def open_connections(self):
        return int(re.search(r"Active connections:\s*(\d+)",
                             self.text("/status")).group(1))

    def latency_under_load(self):
        """p50/p99 of sequential 512 B calls from one coroutine, first on an
        idle worker, then while wrk -t1 -c32 loads it (saturates it, on a
        quiet machine) with requests that make no call: the calls wait for
        the busy event loop like any other event."""
        n = 50 if self.smoke else 2000
        rows = []
        for path in LATENCY_PATHS:
            query = "/sequential?path=%s&size=512&n=%d" % (path, n)
            idle = self.checked_get(query)
            wrk = subprocess.Popen(
                ["wrk", "-t1", "-c32", "-d600s", self.url("/http/nocall")],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            try:
                # wrk's 32 connections and the status request itself
                wait_for(lambda: self.open_connections() > 32, 10,
                         "wrk's connections")
                # the event loop's thread: 100 % is saturated
                before = self.cpu_ticks(self.worker, self.worker)
                started = time.monotonic()
                loaded = self.checked_get(query)
                elapsed = time.monotonic() - started
                busy = (self.cpu_ticks(self.worker, self.worker)
                        - before) / CLK_TCK
                if wrk.poll() is not None:
                    sys.exit("bench: wrk ended during the measurement")
            finally:
                # wrk stops and reports on SIGINT
                wrk.send_signal(signal.SIGINT)
                try:
                    out, _ = wrk.communicate(timeout=20)
                except subprocess.TimeoutExpired:
                    wrk.kill()
                    out, _ = wrk.communicate()
            rows.append({"path": path, "size": 512, "calls": n,
                         "idle_p50_us": float(idle["p50_us"]),
                         "idle_p99_us": float(idle["p99_us"]),
                         "loaded_p50_us": float(loaded["p50_us"]),
                         "loaded_p99_us": float(loaded["p99_us"]),
                         "wrk_req_per_s": wrk_rate("/http/nocall", out),
                         "main_thread_cpu_pct": round(100.0 * busy
                                                      / elapsed)})
        return rows


def wrk_rate(location, out):
    if "Non-2xx" in out:
        sys.exit("bench: wrk saw errors on %s\n%s" % (location, out))
    return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))


def memory(smoke, spin, loop_spin):
    """A fresh one-worker nginx per language: the worker's resident memory
    and threads after a few calls that load nothing (the semaphore floor),
    then after the same number of calls into that language's echo."""
    n = 50 if smoke else 2000
    rows = []
    for path in MEMORY_PATHS:
        bench = Bench(smoke, spin, loop_spin, sidecar=False)
        try:
            bench.start()
            bench.checked_get("/sequential?path=floor&size=512&n=%d" % n)
            rss_before, threads_before = bench.worker_status()
            bench.checked_get("/sequential?path=%s&size=512&n=%d"
                              % (path, n))
            rss, threads = bench.worker_status()
        finally:
            bench.stop()
        rows.append({"path": path, "calls": n,
                     "rss_kb_without": rss_before,
                     "threads_without": threads_before,
                     "rss_kb": rss, "threads": threads})
    return rows


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


def loadavg():
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


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
            "loadavg": loadavg(),
            "date": datetime.datetime.now(datetime.timezone.utc)
            .strftime("%Y-%m-%d %H:%M UTC")}


def ratios(results):
    seq = {(r["path"], r["size"]): r["calls_per_s"]
           for r in results["sequential"]}
    conc = {r["path"]: r["calls_per_s"] for r in results["concurrent"]}
    cpu = results["cpu"]
    seq512 = {r["path"]: r for r in results["sequential"] if r["size"] == 512}
    rows = [
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
    if "go" in conc:
        rows += [
            ("Go: sequential 512 B vs unix socket", seq["go", 512]
             / seq["unix", 512], ">=", 3),
            ("Go: sequential 512 B vs C", seq["go", 512] / seq["ffi", 512],
             ">=", 1 / 3),
            ("Go: 64 concurrent vs unix socket", conc["go"] / conc["unix"],
             ">=", 5),
            ("Go: sequential 512 B p99 / p50",
             seq512["go"]["p99_us"] / seq512["go"]["p50_us"], "<=", 4),
        ]
    if "python_async" in conc:
        rows += [
            ("Python asyncio: sequential 512 B vs unix socket",
             seq["python_async", 512] / seq["unix", 512], ">=", 3),
            ("Python asyncio: sequential 512 B vs thread handler",
             seq["python_async", 512] / seq["python", 512], ">=", 1 / 2),
        ]
    return rows


def markdown(results):
    lines = ["# Benchmark results", "",
             "Machine: %(cpu)s, %(cores)s cores, kernel %(kernel)s, "
             "%(nginx)s, lua-nginx-module package %(lua_nginx_module_package)s"
             ", %(date)s." % results["machine"],
             "", "1-minute load average at the start and the end of the run "
             "(%s cores): %s." % (results["machine"]["cores"], " and ".join(
                 map(str, results["machine"]["loadavg"]))),
             "", "## Targets (ratios from this one run)", "",
             "| measure | value | target | met |", "|---|---|---|---|"]
    for name, value, op, target in ratios(results):
        met = {">=": value >= target, "<=": value <= target,
               "<": value < target}[op]
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
    lines += table_markdown(results["table"])
    lines += ["", "Both nginx were warmed up first (the two-CPU one before "
              "every workload of this report): rounds of %d sequential C "
              "echo calls "
              "until one was less than 5 %% faster than the one before; "
              "calls/s of those rounds: 2 CPUs %s; 1 CPU %s." % (
                  results["warm_up"]["cpus_2"]["calls_per_round"],
                  ", ".join(map(str,
                                results["warm_up"]["cpus_2"]["calls_per_s"])),
                  ", ".join(map(str,
                                results["warm_up"]["cpus_1"]["calls_per_s"])))]
    lines += ["", "Then one round of %d sequential 512 B calls on every "
              "other path, which warms its runtime up too; those first "
              "calls (2 CPUs):" % results["warm_up"]["cpus_2"]
              ["calls_per_round"], "",
              "| path | calls/s | p50 µs | p99 µs |", "|---|---|---|---|"]
    for path, r in results["warm_up"]["cpus_2"]["first_calls"].items():
        lines.append("| %s | %.0f | %.1f | %.1f |"
                     % (PATH_NAMES[path], r["calls_per_s"], r["p50_us"],
                        r["p99_us"]))
    lines += ["", "## A call's latency while wrk loads the worker", "",
              "Sequential 512 B calls from one coroutine (%d calls), first "
              "on an idle worker, then while `wrk -t1 -c32` keeps the same "
              "worker busy with requests that make no call (saturated when "
              "its main thread is at 100 %% of a core)."
              % results["latency_under_load"][0]["calls"], "",
              "| path | idle p50 µs | idle p99 µs | loaded p50 µs | "
              "loaded p99 µs | wrk req/s meanwhile | worker's main thread "
              "CPU % |",
              "|---|---|---|---|---|---|---|"]
    for r in results["latency_under_load"]:
        lines.append("| %s | %.1f | %.1f | %.1f | %.1f | %.0f | %d |"
                     % (PATH_NAMES[r["path"]], r["idle_p50_us"],
                        r["idle_p99_us"], r["loaded_p50_us"],
                        r["loaded_p99_us"], r["wrk_req_per_s"],
                        r["main_thread_cpu_pct"]))
    h = results["http_workers_2"]
    lines += ["", "## HTTP with worker_processes %d, wrk -t2 -c64, %d rounds "
              "of %d s, interleaved" % (h["workers"], h["rounds"],
                                        h["seconds_per_round"]), "",
              "| round | no call req/s | one call req/s | ratio | "
              "workers' CPU % with the call |", "|---|---|---|---|---|"]
    for i, (n, c, busy) in enumerate(zip(h["nocall_req_per_s"],
                                         h["call_req_per_s"],
                                         h["workers_cpu_pct_with_call"])):
        lines.append("| %d | %.0f | %.0f | %.2f | %s |"
                     % (i + 1, n, c, c / n, " + ".join(map(str, busy))))
    lines.append("| median | | | %.2f | |" % h["ratio_median"])
    lines += ["", "## A worker's resident memory with one runtime loaded",
              "", "A fresh one-worker nginx per language; VmRSS after %d "
              "calls that load nothing, then after as many echo calls "
              "into that language." % results["memory"][0]["calls"], "",
              "| runtime | RSS without, MB | RSS with, MB | added, MB | "
              "threads without → with |", "|---|---|---|---|---|"]
    for r in results["memory"]:
        lines.append("| %s | %.1f | %.1f | %+.1f | %d → %d |"
                     % (PATH_NAMES[r["path"]], r["rss_kb_without"] / 1024,
                        r["rss_kb"] / 1024,
                        (r["rss_kb"] - r["rss_kb_without"]) / 1024,
                        r["threads_without"], r["threads"]))
    lines += ["", "## System calls per sequential 512 B call (strace -c -f "
              "on the worker, all threads; the most frequent)", ""]
    for path, counts in results.get("syscalls_per_call", {}).items():
        lines.append("- %s: %s" % (PATH_NAMES[path], ", ".join(
            "%s %.2f" % kv for kv in counts.items()) or "none"))
    return "\n".join(lines) + "\n"


TABLE_NAMES = {
    "ffi": "ours: C echo runtime",
    "go": "ours: Go echo (sdk/go)",
    "python": "ours: Python echo, thread handler",
    "python_async": "ours: Python echo, asyncio handler",
    "java": "ours: Java echo",
    "rust": "ours: Rust echo, poll thread",
    "rust_async": "ours: Rust echo, tokio",
    "unix": "ours: unix socket sidecar (C echo server)",
}


def table_markdown(table):
    """The ancestor's published table and ours in its shape: seconds per
    100 000 calls, then each row's speed-up over the unix socket of the
    same run (or of the same publication)."""
    ours = {}
    for cpus in (1, 2):
        for r in table["cpus_%d" % cpus]:
            ours.setdefault(r["path"], {}).setdefault(cpus, []).append(
                r["s_per_100k"])
    calls = {r["size"]: r["calls"] for r in table["cpus_2"]}
    rounds = table["cpus_2"][0]["rounds"]
    rows = [("published: " + name, figures)
            for name, figures in ANCESTOR["rows"].items()]
    rows += [(TABLE_NAMES[path], ours[path]) for path in TABLE_PATHS]
    sizes = " | ".join(SIZE_NAMES[size] for size in SIZES)
    head = ["| | 1 CPU: %s | 2 CPUs: %s |" % (sizes, sizes),
            "|---" * (1 + 2 * len(SIZES)) + "|"]
    lines = ["", "## The ancestor's table: seconds per 100 000 sequential "
             "calls from one coroutine (lower is better)", "",
             "Published rows: lua-resty-ffi, %s (its Go echo runtime and a "
             "Go unix-socket echo server, AWS EC2 t2.medium). Ours: this "
             "run, the median of %d interleaved rounds of %d calls (%d at "
             "100 KB), scaled to 100 000, no clock read between calls; "
             "1 CPU is nginx and the sidecar started under `taskset -c %s`."
             % (ANCESTOR["url"], rounds, calls[SIZES[0]], calls[SIZES[-1]],
                table["one_cpu"]), ""] + head
    for name, figures in rows:
        lines.append("| %s | %s |" % (name, " | ".join(
            "%.2f" % v for cpus in (1, 2) for v in figures[cpus])))
    unix_published = ANCESTOR["rows"]["unix domain socket (Go echo server)"]
    lines += ["", "Speed-up over the unix socket (its seconds / the row's "
              "seconds; ours against our sidecar in the same run):", ""]
    lines += head
    for name, figures in rows:
        base = unix_published if name.startswith("published") \
            else ours["unix"]
        lines.append("| %s | %s |" % (name, " | ".join(
            "%.2f×" % (base[cpus][i] / figures[cpus][i])
            for cpus in (1, 2) for i in range(len(SIZES)))))
    return lines


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
                             "the --paths, sequential 512 B (calls/s, p50, "
                             "p99) and 64 concurrent, median of the "
                             "--rounds, after the warm-up")
    parser.add_argument("--paths", default="ffi,unix",
                        help="with --only calls: the paths to measure, "
                             "comma-separated (default ffi,unix; any of "
                             + ", ".join(PATHS) + ")")
    parser.add_argument("--rounds", type=int, default=5,
                        help="with --only calls: how many rounds "
                             "(default 5)")
    args = parser.parse_args()
    paths = args.paths.split(",")
    if not set(paths) <= set(PATHS):
        parser.error("--paths: unknown or not built: %s"
                     % ", ".join(sorted(set(paths) - set(PATHS))))

    if args.only:
        bench = Bench(args.smoke, args.spin, args.loop_spin)
        try:
            bench.start()
            if args.only == "http":
                figures = bench.http()
            else:
                # as the full run: a fresh worker's first calls are slow
                bench.warm_up()
                figures = bench.calls(paths, args.rounds)
            print(json.dumps({"spin": args.spin, "loop_spin": args.loop_spin,
                              args.only: figures}))
        finally:
            bench.stop()
        return

    phases = {}

    def phase(name, work):
        """work's result, its seconds noted under name"""
        started = time.monotonic()
        result = work()
        phases[name] = round(time.monotonic() - started, 1)
        return result

    started = time.monotonic()
    bench = Bench(args.smoke, args.spin, args.loop_spin)
    try:
        phase("start", bench.start)
        results = {"machine": machine(), "smoke": args.smoke,
                   "spin": args.spin, "loop_spin": args.loop_spin,
                   "warm_up": {"cpus_2": phase("warm_up", bench.warm_up)}}
        for name in ("sequential", "concurrent", "http", "cpu"):
            results[name] = phase(name, getattr(bench, name))
        n = 500 if args.smoke else 20000
        results["syscalls_per_call"] = phase("syscalls", lambda: {
            path: syscalls_per_call(bench, path, n)
            for path in ("ffi", "unix")})
        results["latency_under_load"] = phase("latency_under_load",
                                              bench.latency_under_load)
        table = {2: phase("table_2_cpus", bench.table)}
    finally:
        bench.stop()

    # the same nginx and sidecar pinned to one CPU from their start (Go's
    # GOMAXPROCS and the JVM size themselves by it)
    bench = Bench(args.smoke, args.spin, args.loop_spin, cpus=ONE_CPU)
    try:
        phase("start_1_cpu", bench.start)
        results["warm_up"]["cpus_1"] = phase("warm_up_1_cpu", bench.warm_up)
        table[1] = phase("table_1_cpu", bench.table)
    finally:
        bench.stop()
    results["table"] = {"one_cpu": ONE_CPU, "cpus_1": table[1],
                        "cpus_2": table[2]}

    bench = Bench(args.smoke, args.spin, args.loop_spin, workers=2,
                  sidecar=False)
    try:
        phase("start_2_workers", bench.start)
        results["http_workers_2"] = phase("http_workers_2",
                                          bench.http_workers)
    finally:
        bench.stop()

    results["memory"] = phase("memory", lambda: memory(
        args.smoke, args.spin, args.loop_spin))
    results["seconds"] = dict(phases, total=round(
        time.monotonic() - started))
    # other users of a shared machine: the 1-minute load at the start and end
    results["machine"]["loadavg"] = [results["machine"]["loadavg"],
                                     loadavg()]

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
