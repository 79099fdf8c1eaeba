# SPDX-License-Identifier: BSD-2-Clause
"""Soak: a mixed load against real nginx, first with one worker, then two.

    python3 tests/soak.py [--seconds N]      (make soak; SOAK_SECONDS=N)

The load: echoes of random sizes (0-256 KB), calls that time out, runtime
errors, clients that disconnect while their call runs, the runtime unloaded
and loaded again every few seconds, and `nginx -s reload` every 20 s.

It fails when a call is lost (for every runtime on the Prometheus page:
posted = answered + bad answers + in flight, at every scrape; and in Lua:
calls = ok + runtime errors + local failures + aborted), when a request
fails that should not, when the largest worker's memory floor grows more
than 5 % after warm-up (judged on phases of a minute or more), or when the
error log has an [alert], [crit] or [emerg].  It prints memory samples and
a summary.
"""

import argparse
import http.client
import os
import random
import re
import signal
import socket
import statistics
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import TEST_RUNTIME, NginxServer, wait_for  # noqa: E402

RELOAD_EVERY = 20                   # at least twice per phase, though
RUNTIME_RELOAD_EVERY = 3
SCRAPE_EVERY = 2
RSS_EVERY = 0.5
CLIENTS = 6
MAX_ECHO = 256 * 1024
GROWTH_LIMIT = 0.05
# a shorter phase is all warm-up: workers live RELOAD_EVERY seconds, and
# their pools, arenas and Lua heap grow for the first tens of seconds
MEMORY_JUDGED_FROM = 60
# a worker started by a reload is smaller for its first seconds: its
# samples then are not compared with those of older workers
WORKER_YOUNG = 5

HTTP = r"""
    lua_shared_dict soak 1m;
    lua_shared_dict nffi_stats 1m;
    lua_check_client_abort on;
"""

INIT_WORKER = r"""
    assert(require("resty.nonblocking_ffi.prometheus").init(
        "nffi_stats", { interval = 0.2 }))
"""

LOAD = ('ngx.load_nonblocking_ffi("%s", "threads=2", { timeout = 10 })'
        % TEST_RUNTIME)

SERVER = r"""
    location = /call {
        content_by_lua_block {
            local dict = ngx.shared.soak
            local kind = ngx.var.arg_kind
            dict:incr("calls", 1, 0)
            assert(ngx.on_abort(function()
                dict:incr("aborted", 1, 0)
                ngx.exit(499)
            end))
            local rt = assert(%(load)s)
            local ok, res, rsp
            if kind == "echo" then
                local size = tonumber(ngx.var.arg_size)
                ok, res = rt:echo(string.rep("e", size))
                if ok and #(res or "") ~= size then
                    dict:incr("wrong_answers", 1, 0)
                end
            elseif kind == "timeout" then
                ok, res = rt:delay("300", 0.02)
            elseif kind == "error" then
                ok, res, rsp = rt:error("7")
            elseif kind == "abort" then
                ok, res = rt:delay("300")
            end
            if ok then
                dict:incr("ok", 1, 0)
            elseif type(res) == "number" then
                dict:incr("runtime_errors", 1, 0)
            else
                dict:incr("failed:" .. tostring(res), 1, 0)
            end
            ngx.say(tostring(ok), " ", #(type(res) == "string" and res
                                          or ""))
        }
    }

    location = /reload-runtime {
        content_by_lua_block {
            local rt = assert(%(load)s)
            rt:__unload()
            assert(%(load)s)
            ngx.say("reloaded")
        }
    }

    location = /counts {
        content_by_lua_block {
            local dict = ngx.shared.soak
            for _, key in ipairs(dict:get_keys(0)) do
                ngx.say(key, " ", dict:get(key))
            end
        }
    }

    location = /metrics {
        content_by_lua_block {
            require("resty.nonblocking_ffi.prometheus").collect()
        }
    }
""" % {"load": LOAD}

SAMPLE = re.compile(r'^(nonblocking_ffi_[a-z_]+)\{pid="(\d+)",lib="[^"]*",'
                    r'cfg="[^"]*"(?:,(?:rc|reason)="([a-z_]+)")?\} (\S+)$')


class Soak:
    def __init__(self, seconds, workers, prefix):
        self.seconds = seconds
        self.workers = workers
        self.nginx_counts = {}
        self.srv = NginxServer(prefix, workers=workers, http=HTTP,
                               init_worker=INIT_WORKER, server=SERVER)
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.client = {}
        self.problems = []
        self.rss = []
        self.worker_born = {}
        self.reloads = 0
        self.scrapes = 0

    def count(self, what):
        with self.lock:
            self.client[what] = self.client.get(what, 0) + 1

    def problem(self, text):
        with self.lock:
            if len(self.problems) < 20:
                self.problems.append(text)

    def request(self, conn, path):
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()

    def client_loop(self, seed):
        rng = random.Random(seed)
        conn = None
        while not self.stop.is_set():
            kind = rng.choice(["echo"] * 6 + ["timeout", "error", "abort"])
            if kind == "abort":
                self.abort_one()
                continue
            size = rng.randint(0, MAX_ECHO)
            path = "/call?kind=%s&size=%d" % (kind, size)
            try:
                if conn is None:
                    conn = http.client.HTTPConnection(
                        "127.0.0.1", self.srv.port, timeout=30)
                status, body = self.request(conn, path)
            except (OSError, http.client.HTTPException):
                # a reload closes idle keep-alive connections: try again
                # once on a new one
                conn = None
                self.count("reconnects")
                continue
            self.count("sent")
            expected = {
                "echo": b"true %d\n" % size,
                "timeout": b"false 7\n",
                "error": b"false 0\n",
            }[kind]
            if status != 200 or body != expected:
                self.problem("%s -> %d %r" % (path, status, body[:100]))
            self.count(kind)

    def abort_one(self):
        """A client that goes away while its call runs."""
        try:
            with socket.create_connection(("127.0.0.1", self.srv.port),
                                          5) as s:
                s.sendall(b"GET /call?kind=abort HTTP/1.1\r\n"
                          b"Host: soak\r\n\r\n")
                s.settimeout(0.05)
                try:
                    s.recv(1)
                    self.problem("an aborting client got an answer")
                except socket.timeout:
                    pass
            self.count("sent")
            self.count("abort")
        except OSError:
            self.count("reconnects")

    def scrape(self):
        """Checks posted = answered + bad answers + in flight for every
        runtime of every worker, and returns the figures by worker."""
        status, body = self.srv.request("/metrics")
        if status != 200:
            self.problem("/metrics -> %d" % status)
            return
        runtimes = {}
        for line in body.decode().splitlines():
            match = SAMPLE.match(line)
            if not match:
                continue
            name, pid, label, value = match.groups()
            key = pid
            figures = runtimes.setdefault(key, {})
            name = name + ("." + label if label else "")
            figures[name] = figures.get(name, 0) + float(value)
        for pid, f in runtimes.items():
            posted = f.get("nonblocking_ffi_calls_posted_total", 0)
            accounted = (f.get("nonblocking_ffi_answers_total.ok", 0)
                         + f.get("nonblocking_ffi_answers_total.error", 0)
                         + f.get("nonblocking_ffi_local_failures_total"
                                 ".bad_answer", 0)
                         + f.get("nonblocking_ffi_calls_in_flight", 0))
            if posted != accounted:
                self.problem("worker %s: %d calls posted, %d accounted for"
                             % (pid, posted, accounted))
        self.scrapes += 1

    def sample_rss(self):
        now = time.monotonic()
        total = []
        for pid in self.srv.worker_pids():
            self.worker_born.setdefault(pid, now)
            try:
                with open("/proc/%d/status" % pid) as f:
                    kb = int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))
                total.append((kb, pid))
            except (OSError, AttributeError):
                pass
        if total:
            kb, pid = max(total)
            self.rss.append((now, kb, now - self.worker_born[pid]))

    def run(self):
        self.srv.start()
        start = time.monotonic()
        clients = [threading.Thread(target=self.client_loop, args=(i,))
                   for i in range(CLIENTS)]
        for t in clients:
            t.start()
        reload_every = min(RELOAD_EVERY, self.seconds / 3)
        next_reload = start + reload_every
        next_runtime_reload = start + RUNTIME_RELOAD_EVERY
        next_scrape = next_rss = start
        try:
            while time.monotonic() < start + self.seconds:
                now = time.monotonic()
                if now >= next_scrape:
                    self.scrape()
                    next_scrape = now + SCRAPE_EVERY
                if now >= next_rss:
                    self.sample_rss()
                    next_rss = now + RSS_EVERY
                if now >= next_runtime_reload:
                    self.srv.request("/reload-runtime")
                    next_runtime_reload = now + RUNTIME_RELOAD_EVERY
                if now >= next_reload:
                    self.srv.signal(signal.SIGHUP)
                    self.reloads += 1
                    next_reload = now + reload_every
                self.stop.wait(0.1)
        finally:
            self.stop.set()
            for t in clients:
                t.join()
        # every call ends: answered, timed out (10 s at most) or aborted
        wait_for(self.settled, 30, "every call in nginx to end")
        self.scrape()
        self.srv.stop()
        self.problems += self.srv.problems()
        self.check_memory()

    def counts(self):
        _, body = self.srv.request("/counts")
        return {k: int(float(v)) for k, v in
                (line.split(" ") for line in body.decode().splitlines())}

    def settled(self):
        c = self.counts()
        ended = (c.get("ok", 0) + c.get("runtime_errors", 0)
                 + c.get("aborted", 0)
                 + sum(v for k, v in c.items() if k.startswith("failed:")))
        if c.get("calls", 0) != ended:
            return False
        self.nginx_counts = c
        return True

    def check_memory(self):
        """After warm-up (the first half), the largest worker may not grow
        more than GROWTH_LIMIT: the medians of the first and the last third
        of the samples after it, leaving out workers younger than
        WORKER_YOUNG.  Medians, not floors: with a reload every
        RELOAD_EVERY seconds a third's floor is whichever worker happened
        to be sampled smallest (floors moved -6 to +9 % between thirds in
        runs whose per-minute medians stayed within 1 %), while a leak
        raises the whole distribution, median included."""
        if self.seconds < MEMORY_JUDGED_FROM:
            return
        warm = [kb for t, kb, age in self.rss
                if t >= self.rss[0][0] + self.seconds / 2
                and age >= WORKER_YOUNG]
        if len(warm) < 6:
            self.problem("too few memory samples: %d" % len(warm))
            return
        third = len(warm) // 3
        first = statistics.median(warm[:third])
        last = statistics.median(warm[-third:])
        self.growth = (last - first) / first
        if self.growth > GROWTH_LIMIT:
            self.problem("worker memory grew %.1f %% after warm-up "
                         "(%d kB -> %d kB)" % (100 * self.growth, first,
                                               last))

    def report(self, out):
        c = self.nginx_counts
        out.write("workers: %d, %d s, %d reloads, %d scrapes\n" % (
            self.workers, self.seconds, self.reloads, self.scrapes))
        out.write("client: %s\n" % " ".join(
            "%s=%d" % kv for kv in sorted(self.client.items())))
        out.write("nginx:  %s\n" % " ".join(
            "%s=%d" % kv for kv in sorted(c.items())))
        out.write("worker RSS (kB, largest worker, every %g s): %s\n" % (
            RSS_EVERY, " ".join(str(kb) for _, kb, _ in self.rss)))
        if hasattr(self, "growth"):
            out.write("growth after warm-up: %.1f %%\n"
                      % (100 * self.growth))
        else:
            out.write("growth after warm-up: not judged (phase under "
                      "%d s)\n" % MEMORY_JUDGED_FROM)
        if c.get("wrong_answers"):
            self.problem("%d echoes came back wrong" % c["wrong_answers"])
        sent = self.client.get("sent", 0)
        if c.get("calls", 0) < sent:
            self.problem("the client sent %d calls, nginx counted %d"
                         % (sent, c.get("calls", 0)))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int,
                        default=int(os.environ.get("SOAK_SECONDS", 600)))
    args = parser.parse_args()
    failed = []
    for workers, seconds in ((1, args.seconds // 2),
                             (2, args.seconds - args.seconds // 2)):
        prefix = tempfile.mkdtemp(prefix="nffi-soak-")
        os.chmod(prefix, 0o755)
        soak = Soak(seconds, workers, prefix)
        try:
            soak.run()
        finally:
            soak.stop.set()
            soak.srv.stop()
        soak.report(sys.stdout)
        for problem in soak.problems:
            print("PROBLEM: " + problem)
        failed += soak.problems
        sys.stdout.flush()
    print("soak: %s" % ("FAILED" if failed else "ok"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
