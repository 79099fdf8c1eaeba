# SPDX-License-Identifier: BSD-2-Clause

"""`make run`'s demo serves what the README shows.

scripts/run-demo.sh runs in a session of its own with default signal
handling: a shell cannot trap a signal that was ignored when it started
(QUIT and INT are, for anything a background script starts), so the test
never relies on the script forwarding one.  It stops nginx through the
master's PID file, waits with a deadline for the script (which stops its
etcd on exit), and kills the whole process group if anything is left,
whatever the outcome of the test.
"""

import http.client
import json
import os
import re
import signal
import subprocess
import time

import pytest

from harness import MEMCHECK, NOT_HERE, REPO, free_port, wait_for

PREFIX = os.path.join(REPO, "build", "demo")
ERROR_LOG = os.path.join(PREFIX, "logs", "error.log")
# built by make java, skipped when javac or mvn is missing
JAVA = os.path.join(REPO, "build", "lib_nonblocking_ffi_java.so")
PID_FILE = os.path.join(PREFIX, "logs", "nginx.pid")
# built by make rust, skipped when cargo is missing
RUST = os.path.join(REPO, "build", "lib_nonblocking_ffi_rust.so")


def reset_signals():
    """Runs in the child before exec: default dispositions, no mask."""
    for signo in (signal.SIGHUP, signal.SIGINT, signal.SIGQUIT,
                  signal.SIGTERM):
        signal.signal(signo, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, [])


def group_members(pgid):
    """The live processes (not zombies) of process group pgid."""
    members = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % name) as f:
                stat = f.read()
        except OSError:
            continue
        # "pid (comm) state ppid pgrp ...": comm may hold spaces
        comm = stat[stat.index("(") + 1:stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append("%s %s" % (name, comm))
    return members


class Demo:
    def __init__(self, folder):
        self.port = free_port()
        self.etcd_port = free_port()
        # ports handed out one after the other are often neighbours: the
        # etcd peers' port is one of those, not etcd_port + 1, which the
        # kernel may just have given to a connection
        self.ports = {self.port, self.etcd_port}
        self.etcd_peer_port = self.another_port()
        self.pg_port = self.another_port()
        self.grpc_port = self.another_port()
        self.output = os.path.join(str(folder), "run-demo.out")
        self.proc = None
        self.quit_pid = None

    def start(self):
        with open(self.output, "wb") as out:
            self.proc = subprocess.Popen(
                [os.path.join(REPO, "scripts", "run-demo.sh")],
                env=dict(os.environ, PORT=str(self.port),
                         ETCD_PORT=str(self.etcd_port),
                         ETCD_PEER_PORT=str(self.etcd_peer_port),
                         PG_PORT=str(self.pg_port),
                         GRPC_PORT=str(self.grpc_port)),
                stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                start_new_session=True, preexec_fn=reset_signals)
        return self

    def another_port(self):
        port = free_port()
        while port in self.ports:
            port = free_port()
        self.ports.add(port)
        return port

    def script_output(self):
        with open(self.output, errors="replace") as f:
            return f.read()

    def get(self, path):
        """The body, or None while nothing answers."""
        if self.proc.poll() is not None:
            raise AssertionError("run-demo.sh exited with %d:\n%s" % (
                self.proc.returncode, self.script_output()))
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request("GET", path)
            return conn.getresponse().read().decode()
        except OSError:
            return None
        finally:
            conn.close()

    def events(self, path, last_event_id=None, count=None):
        """The status and the server-sent events of path (the first count,
        or all until the end), each with the time it arrived."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        headers = ({} if last_event_id is None
                   else {"Last-Event-ID": str(last_event_id)})
        try:
            conn.request("GET", path, headers=headers)
            resp = conn.getresponse()
            assert resp.getheader("Content-Type") == "text/event-stream"
            events, lines = [], []
            for line in iter(resp.readline, b""):
                if line.strip():
                    lines.append(line.decode().strip())
                elif lines:
                    events.append((time.monotonic(), "\n".join(lines)))
                    lines = []
                    if len(events) == count:
                        break
            return resp.status, events
        finally:
            conn.close()

    def nginx_pid(self):
        """The master's PID, only if that process is in our group (not a
        stale PID file, nor the nginx of a `make run` in this checkout)."""
        try:
            with open(PID_FILE) as f:
                pid = int(f.read())
            return pid if os.getpgid(pid) == self.proc.pid else None
        except (OSError, ValueError):
            return None

    def stop(self, timeout=20):
        """Quits nginx gracefully; returns what was still running at the
        deadline (then killed with the whole group)."""
        if self.proc is None:
            return []
        pgid, deadline = self.proc.pid, time.monotonic() + timeout
        try:
            self.quit_pid = self.nginx_pid()
            if self.quit_pid is None:
                # no nginx of ours to quit: nothing to wait for
                return group_members(pgid)
            os.kill(self.quit_pid, signal.SIGQUIT)
            # the script ends once nginx has, and stops etcd on its way out
            try:
                self.proc.wait(max(0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            while group_members(pgid) and time.monotonic() < deadline:
                time.sleep(0.05)
            left = group_members(pgid)
            return left + ([] if self.proc.poll() is not None
                           else ["run-demo.sh"])
        finally:
            try:
                os.killpg(pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()
            self.proc = None


@pytest.fixture
def demo(tmp_path):
    started = Demo(tmp_path)
    try:
        yield started
    finally:
        started.stop()


@pytest.mark.skipif(MEMCHECK, reason="the demo runs nginx as it is")
@pytest.mark.skipif(
    not all(os.path.exists(os.path.join(REPO, "build", lib)) for lib in (
        "lib_nonblocking_ffi_go.so", "lib_nonblocking_ffi_python3.so")),
    reason=NOT_HERE + "the demo's Go library or Python loader")
def test_demo_answers_like_the_readme_says(demo):
    seen = os.path.getsize(ERROR_LOG) if os.path.exists(ERROR_LOG) else 0
    get = demo.start().get

    wait_for(lambda: get("/c/echo?hello"), 10, "the demo")
    assert get("/c/echo?hello") == "true hello\n"
    assert get("/c/error?7") == "false 7 error 7\n"
    assert get("/c/echo") == "true nil\n"
    assert get("/c/delay?250") == "true 250\n"
    assert get("/c/nosuch") == "false 404 unknown method nosuch\n"
    # the runtime's own names are not served
    assert "404 Not Found" in get("/c/__unload")
    assert get("/c/echo?still") == "true still\n"
    # the worker that served the calls shows them on the Prometheus page
    # (wait: the other worker may answer before it published)
    wait_for(lambda: re.search(
        r'^nonblocking_ffi_answers_total\{pid="\d+",lib="[^"]*'
        r'libnffi_example.so",cfg="threads=2",rc="ok"\} [1-9]',
        get("/metrics") or "", re.M), 10, "the demo's calls on /metrics")
    lines = get("/c-concurrent").splitlines()
    assert [line.split(" answered ")[0] for line in lines] == [
        "call 2 (100 ms)", "call 3 (200 ms)", "call 1 (300 ms)"]
    assert get("/go/echo?hello") == "true hello\n"
    assert get("/python/upper?hello") == "true HELLO\n"
    assert get("/python/fail?x") == "false 1 ValueError: failing as asked\n"
    # server-sent events: one per word, each sent as its generator yields it
    status, events = demo.events("/python/tokens?q=one+two+three+four+five")
    assert status == 200
    assert [event for _, event in events] == [
        "data: one", "data: two", "data: three", "data: four", "data: five",
        "event: end\ndata: ok"]
    # the generator waits echo.py's TOKEN_DELAY (0.1 s) before each word:
    # events sent as they come arrive spread over those waits, an answer
    # buffered to its end would bring them all at once
    assert events[4][0] - events[0][0] >= 4 * 0.1 / 2
    if os.path.exists(JAVA):
        assert get("/java/upper?hello") == "true HELLO\n"
        assert get("/java/sleep?250") == "true 250\n"
        assert get("/java/fail?x") == (
            "false 1 java.lang.IllegalArgumentException: failing as asked\n")
    if os.path.exists(JAVA):
        # PostgreSQL starts beside nginx: the first put may come before it
        wait_for(lambda: (get("/java/jdbc/put?key=a&value=x%00y") or "")
                 .startswith("true"), 30, "PostgreSQL through the demo")
        assert get("/java/jdbc/get?key=a") == "true x\0y\n"
        assert get("/java/jdbc/get?key=b") == "true nil\n"
    if os.path.exists(RUST):
        assert get("/rust/echo?hello") == "true hello\n"
        assert get("/rust/echo_async?hello") == "true hello\n"
        # the gRPC server starts beside nginx: the first call may come first
        wait_for(lambda: get("/rust/grpc/echo?hello") == "true hello\n", 30,
                 "the gRPC server through the demo")
        assert get("/rust/grpc/sleep?50") == "true slept 50\n"
        # one HTTP/2 connection per worker that called, whatever the calls
        assert get("/rust/grpc/connections") in ("true 1\n", "true 2\n")
    # etcd starts beside nginx: the first put may come before it is up
    wait_for(lambda: (get("/go/etcd/put?key=/demo/a&value=1") or "")
             .startswith("{"), 30, "etcd through the demo")
    got = json.loads(get("/go/etcd/get?key=/demo/a"))
    assert got["value"] == "1"
    # the watch as server-sent events, resumed before that put
    status, events = demo.events("/go/etcd/events?prefix=/demo/",
                                 got["mod_revision"] - 1, count=1)
    assert status == 200
    assert events[0][1].split("\n") == [
        "id: %d" % got["mod_revision"],
        'data: {"type":"PUT","key":"/demo/a","value":"1","mod_revision":%d}'
        % got["mod_revision"]]

    # a graceful stop ends nginx, its workers and etcd within the deadline
    assert demo.stop() == []
    with open(ERROR_LOG) as f:
        f.seek(seen)
        log = f.read()
    assert "[alert]" not in log and "[crit]" not in log
    master = demo.quit_pid
    assert re.search(r"\[notice\] %d#%d: exit$" % (master, master), log,
                     re.M), "nginx %d did not exit gracefully" % master
