# SPDX-License-Identifier: BSD-2-Clause

"""Start the real Debian nginx with the built module, talk HTTP to it.

Each NginxServer gets its own prefix folder, a free port and a rendered
nginx.conf.  After it stops, its error log is scanned: [alert], [crit],
[emerg], a worker that "exited on signal", or a valgrind report fails the
test, unless the test declared the line as expected.

NFFI_MEMCHECK=1 runs nginx under valgrind memcheck with master_process off.
"""

import http.client
import os
import re
import signal
import socket
import subprocess
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.path.join(REPO, "build")
# NFFI_MODULE, NFFI_MODULES_DIR (ndk_http_module.so, ngx_http_lua_module.so)
# and NFFI_NGINX test another nginx build (scripts/openresty-check.sh)
MODULE = os.environ.get("NFFI_MODULE") or os.path.join(
    BUILD, "ngx_http_lua_nonblocking_ffi_module.so")
# the runtime a reader copies (examples/c) and the one the tests call
EXAMPLE = os.path.join(BUILD, "libnffi_example.so")
TEST_RUNTIME = os.path.join(BUILD, "libnffi_test_runtime.so")
NGINX = os.environ.get("NFFI_NGINX", "/usr/sbin/nginx")
MODULES_DIR = os.environ.get("NFFI_MODULES_DIR", "/usr/lib/nginx/modules")
MEMCHECK = os.environ.get("NFFI_MEMCHECK") == "1"
SUPPRESSIONS = os.path.join(REPO, "tests", "valgrind.supp")

# under valgrind everything is 20-50 times slower
SLOW = 20 if MEMCHECK else 1

# The reason of a skip because a part (Go, Python, Java, ...) or a tool is
# not built or not installed here starts with NOT_HERE.  NFFI_REQUIRE_ALL=1
# (CI, .ci/run) turns such skips into failures (conftest.py), so that
# nothing silently stops being tested.
NOT_HERE = "not built or installed here: "
REQUIRE_ALL = os.environ.get("NFFI_REQUIRE_ALL") == "1"


def readable_by_others(path):
    """Whether a worker running as nobody can reach files under path."""
    while True:
        if not os.stat(path).st_mode & 0o001:
            return False
        parent = os.path.dirname(path)
        if parent == path:
            return True
        path = parent


# workers run as nobody: a checkout in a private folder (a clone under
# /root, a mktemp -d) is out of their reach, so they run as root there
WORKER_USER = "" if readable_by_others(REPO) else "user root;"

BAD_LOG_LINE = re.compile(
    r"\[(alert|crit|emerg)\]|exited on signal|AddressSanitizer")

CONF_TEMPLATE = """
load_module {modules_dir}/ndk_http_module.so;
load_module {modules_dir}/ngx_http_lua_module.so;
load_module {module};

{worker_user}
worker_processes {workers};
error_log logs/error.log {log_level};
pid logs/nginx.pid;
env LD_LIBRARY_PATH;
{main}

events {{
    worker_connections 1024;
}}

http {{
    access_log off;
    lua_package_path "{repo}/lib/?.lua;;";
    lua_shared_dict results 1m;
    {http}

    init_worker_by_lua_block {{
        require "resty.nonblocking_ffi"
        {init_worker}
    }}

    server {{
        listen 127.0.0.1:{port};
        {server}
    }}
}}
"""


def abi_version():
    """NONBLOCKING_FFI_ABI_VERSION of include/nonblocking_ffi.h."""
    with open(os.path.join(REPO, "include", "nonblocking_ffi.h")) as f:
        return int(re.search(r"#define NONBLOCKING_FFI_ABI_VERSION\s+(\d+)",
                             f.read()).group(1))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(condition, timeout, what):
    """Polls condition() until it is true; fails naming `what` at the
    deadline."""
    deadline = time.monotonic() + timeout * SLOW
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for " + what)
        time.sleep(0.02)


def stop_process(proc, timeout):
    """TERM, then KILL if proc has not exited after timeout seconds."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def check_signals_reach_nginx(srv, path):
    """USR1, HUP to the master and QUIT to the worker itself all work.

    path answers "true '<worker pid>'" through a loaded runtime.
    """
    worker = srv.worker_pids()[0]
    assert srv.get(path).strip() == "true '%d'" % worker

    srv.signal(signal.SIGUSR1)
    srv.wait_log(r"\[notice\] %d#%d: reopening logs" % (worker, worker))

    srv.signal(signal.SIGHUP)
    srv.wait_log(r"worker process %d exited with code 0" % worker)
    worker = srv.worker_pids()[0]
    assert srv.get(path).strip() == "true '%d'" % worker

    # sent to the worker process itself, the signal lands on any thread
    # that does not block it (a runtime's): nginx must still act on it
    os.kill(worker, signal.SIGQUIT)
    srv.wait_log(r"worker process %d exited with code 0" % worker)
    wait_for(lambda: srv.worker_pids() and srv.worker_pids()[0] != worker,
             10, "a new worker")
    worker = srv.worker_pids()[0]
    assert srv.get(path).strip() == "true '%d'" % worker


class NginxServer:
    def __init__(self, prefix, server="", http="", main="", init_worker="",
                 workers=1, log_level="info", env=None):
        self.prefix = str(prefix)
        self.workers = 1 if MEMCHECK else workers
        self.port = free_port()
        self.expected = []
        self.proc = None
        os.makedirs(os.path.join(self.prefix, "logs"), exist_ok=True)
        self.conf = os.path.join(self.prefix, "nginx.conf")
        with open(self.conf, "w") as f:
            f.write(CONF_TEMPLATE.format(
                modules_dir=MODULES_DIR, module=MODULE, repo=REPO,
                worker_user="" if "user " in main else WORKER_USER,
                workers=workers, log_level=log_level, main=main, http=http,
                init_worker=init_worker, port=self.port, server=server))
        self.env = dict(os.environ)
        self.env.update(env or {})

    @property
    def error_log(self):
        return os.path.join(self.prefix, "logs", "error.log")

    def start(self):
        cmd = [NGINX, "-p", self.prefix, "-c", self.conf,
               "-e", self.error_log]
        if MEMCHECK:
            cmd = ["valgrind", "--quiet", "--leak-check=full",
                   "--errors-for-leak-kinds=definite,indirect",
                   "--show-leak-kinds=definite,indirect",
                   "--suppressions=" + SUPPRESSIONS,
                   "--log-file=" + os.path.join(self.prefix, "valgrind.log"),
                   ] + cmd + ["-g", "daemon off; master_process off;"]
        else:
            cmd += ["-g", "daemon off;"]
        self.proc = subprocess.Popen(cmd, env=self.env,
                                     stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        wait_for(self._accepts, 10, "nginx to listen on %d" % self.port)
        # the master listens before it forks: tests read the workers' pids
        wait_for(lambda: len(self.worker_pids()) >= self.workers, 10,
                 "nginx's workers")
        return self

    def _accepts(self):
        if self.proc.poll() is not None:
            raise AssertionError("nginx exited at start:\n" + self.log())
        try:
            socket.create_connection(("127.0.0.1", self.port), 0.2).close()
            return True
        except OSError:
            return False

    def request(self, path, timeout=30, method="GET", body=None):
        """Returns (status, body bytes)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port,
                                          timeout=timeout * SLOW)
        try:
            conn.request(method, path, body=body)
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def open(self, path, timeout=30):
        """(conn, resp) of a GET whose status and headers came: the test
        reads the body as it comes, then closes conn."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port,
                                          timeout=timeout * SLOW)
        conn.request("GET", path)
        return conn, conn.getresponse()

    def get(self, path, timeout=30):
        """The body of a 200 response, as text."""
        status, body = self.request(path, timeout)
        assert status == 200, "%s -> %d\n%s\n%s" % (
            path, status, body[:2000], self.log()[-3000:])
        return body.decode("utf-8", "replace")

    def log(self):
        try:
            with open(self.error_log, errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def wait_log(self, pattern, timeout=10, count=1):
        rx = re.compile(pattern)
        return wait_for(lambda: len(rx.findall(self.log())) >= count,
                        timeout, "%r in the error log" % pattern)

    def expect(self, pattern):
        """Declares a bad-looking log line as expected by the test."""
        self.expected.append(re.compile(pattern))

    def worker_pids(self):
        if MEMCHECK:
            return [self.proc.pid]
        out = subprocess.run(["pgrep", "-P", str(self.proc.pid)],
                             capture_output=True, text=True).stdout
        return [int(p) for p in out.split()]

    def signal(self, signo):
        os.kill(self.proc.pid, signo)

    def stop(self, timeout=20):
        if self.proc is None or self.proc.poll() is not None:
            return
        self.signal(signal.SIGQUIT)
        deadline = time.monotonic() + timeout * SLOW
        while True:
            try:
                self.proc.wait(0.5)
                return
            except subprocess.TimeoutExpired:
                pass
            if time.monotonic() > deadline:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError("nginx did not quit in time:\n"
                                     + self.log()[-3000:])
            # valgrind delivers a signal at the next system call: an idle
            # epoll_wait() without timers needs an event to return
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
            except OSError:
                pass

    def problems(self):
        bad = []
        for line in self.log().splitlines():
            if BAD_LOG_LINE.search(line) and not any(
                    rx.search(line) for rx in self.expected):
                bad.append(line)
        vg = os.path.join(self.prefix, "valgrind.log")
        if os.path.exists(vg):
            with open(vg, errors="replace") as f:
                report = f.read().strip()
            if report:
                bad.append("valgrind:\n" + report)
        return bad
