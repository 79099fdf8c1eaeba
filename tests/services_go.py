# SPDX-License-Identifier: BSD-2-Clause

"""Real services and builds that the Go tests use.

- go_libs: builds examples/go (make is a no-op when it is up to date) and
  returns the paths of the two Go libraries.
- etcd: a real etcd from Debian's etcd-server package, on free loopback
  ports with a temporary data folder, stopped when the module's tests end.
- demo_location: a location of `make run`'s demo, as it serves it.
"""

import base64
import json
import os
import re
import shutil
import subprocess
import urllib.request

import pytest

from harness import BUILD, REPO, free_port, stop_process, wait_for

GO_LIB = os.path.join(BUILD, "lib_nonblocking_ffi_go.so")
GO_RAW_LIB = os.path.join(BUILD, "lib_nonblocking_ffi_go_raw.so")
GO_EXAMPLES = os.path.join(REPO, "examples", "go")
DEMO_CONF = os.path.join(REPO, "examples", "nginx", "demo.conf")


def demo_location(name, **fill):
    """The block `location = name { ... }` of the demo's nginx.conf, its
    @REPO@ and the given @KEY@s filled in as scripts/run-demo.sh does."""
    with open(DEMO_CONF) as f:
        conf = f.read()
    start = conf.index("location = %s {" % name)
    depth, end = 0, start
    for end in range(start, len(conf)):
        depth += {"{": 1, "}": -1}.get(conf[end], 0)
        if depth == 0 and conf[end] == "}":
            break
    block = conf[start:end + 1].replace("@REPO@", REPO)
    for key, value in fill.items():
        block = block.replace("@%s@" % key, str(value))
    left = re.findall(r"@[A-Z_]+@", block)
    assert not left, "demo.conf placeholders not filled: %s" % left
    return block + "\n"


@pytest.fixture(scope="session")
def go_libs():
    # the Makefile finds the toolchain (on PATH or in /usr/local/go)
    done = subprocess.run(["make", "-s", "-C", GO_EXAMPLES, "all"],
                          capture_output=True, text=True)
    assert done.returncode == 0, "building examples/go failed:\n%s\n%s" % (
        done.stdout[-3000:], done.stderr[-3000:])
    return GO_LIB, GO_RAW_LIB


class Etcd:
    def __init__(self, folder):
        self.folder = str(folder)
        self.client_port = free_port()
        self.peer_port = free_port()
        self.endpoint = "127.0.0.1:%d" % self.client_port
        self.log_file = os.path.join(self.folder, "etcd.log")
        self.proc = None

    def start(self):
        client = "http://" + self.endpoint
        peer = "http://127.0.0.1:%d" % self.peer_port
        cmd = [
            "etcd", "--name", "test",
            "--data-dir", os.path.join(self.folder, "data"),
            "--listen-client-urls", client,
            "--advertise-client-urls", client,
            "--listen-peer-urls", peer,
            "--initial-advertise-peer-urls", peer,
            "--initial-cluster", "test=" + peer,
            "--initial-cluster-state", "new",
            "--logger", "zap", "--log-outputs", self.log_file,
        ]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        wait_for(self.healthy, 30, "etcd to be healthy on " + self.endpoint)
        return self

    def healthy(self):
        if self.proc.poll() is not None:
            raise AssertionError("etcd exited at start:\n" + self.log())
        try:
            with urllib.request.urlopen(
                    "http://%s/health" % self.endpoint, timeout=1) as rsp:
                return json.load(rsp).get("health") == "true"
        except OSError:
            return False

    def v3(self, path, **fields):
        """A call of etcd's JSON gateway (/v3/kv/put, ...): keys and values
        go base64-encoded, as the gateway wants them."""
        body = {k: base64.b64encode(v.encode()).decode()
                if isinstance(v, str) else v for k, v in fields.items()}
        req = urllib.request.Request(
            "http://%s/v3/%s" % (self.endpoint, path),
            data=json.dumps(body).encode(), method="POST")
        with urllib.request.urlopen(req, timeout=10) as rsp:
            return json.load(rsp)

    def revision(self):
        return int(self.v3("kv/range", key="\0")["header"]["revision"])

    def watchers(self):
        """The watchers etcd keeps now (its metric)."""
        with urllib.request.urlopen("http://%s/metrics" % self.endpoint,
                                    timeout=10) as rsp:
            text = rsp.read().decode()
        return int(float(re.search(
            r"^etcd_debugging_mvcc_watcher_total (\S+)$", text,
            re.M).group(1)))

    def log(self):
        try:
            with open(self.log_file, errors="replace") as f:
                return f.read()[-3000:]
        except FileNotFoundError:
            return ""

    def stop(self):
        stop_process(self.proc, 20)


@pytest.fixture(scope="module")
def etcd(tmp_path_factory):
    if shutil.which("etcd") is None:
        pytest.fail("etcd is not installed: run make -C examples/go deps "
                    "(Debian package etcd-server)")
    server = Etcd(tmp_path_factory.mktemp("etcd")).start()
    yield server
    server.stop()
