# SPDX-License-Identifier: BSD-2-Clause

"""Builds and services that the Rust tests use.

- rust_lib: builds the Rust parts (make rust: a no-op when up to date) and
  returns the path of lib_nonblocking_ffi_rust.so.
- GrpcServer: examples/rust's nffi-grpc-server on a free loopback port.
"""

import os
import shutil
import subprocess

import pytest

from harness import (BUILD, NOT_HERE, REPO, free_port, stop_process,
                     wait_for)

RUST_LIB = os.path.join(BUILD, "lib_nonblocking_ffi_rust.so")
GRPC_SERVER = os.path.join(BUILD, "nffi-grpc-server")


@pytest.fixture(scope="session")
def rust_lib():
    if shutil.which("cargo") is None:
        pytest.skip(NOT_HERE + "the Rust library (make rust needs cargo)")
    done = subprocess.run(["make", "-s", "-C", REPO, "rust"],
                          capture_output=True, text=True)
    assert done.returncode == 0, "make rust failed:\n%s\n%s" % (
        done.stdout[-3000:], done.stderr[-3000:])
    return RUST_LIB


class GrpcServer:
    """nffi-grpc-server on 127.0.0.1:port; its stdout goes to a file."""

    def __init__(self, folder, port=None):
        self.folder = str(folder)
        self.port = port or free_port()
        self.url = "http://127.0.0.1:%d" % self.port
        self.output = os.path.join(self.folder, "grpc-server-%d.out"
                                   % self.port)
        self.proc = None

    def start(self):
        os.makedirs(self.folder, exist_ok=True)
        with open(self.output, "w") as out:
            self.proc = subprocess.Popen(
                [GRPC_SERVER, "127.0.0.1:%d" % self.port],
                stdout=out, stderr=subprocess.STDOUT)
        wait_for(lambda: self.lines("listening on"), 10,
                 "nffi-grpc-server on port %d" % self.port)
        return self

    def lines(self, prefix):
        if self.proc.poll() is not None:
            raise AssertionError("nffi-grpc-server exited:\n"
                                 + self.read())
        return [line for line in self.read().splitlines()
                if line.startswith(prefix)]

    def read(self):
        with open(self.output, errors="replace") as f:
            return f.read()

    def kill(self):
        """Goes away at once, as a crash would."""
        self.proc.kill()
        self.proc.wait()

    def stop(self):
        stop_process(self.proc, 10)


@pytest.fixture
def grpc_server(tmp_path, rust_lib):
    servers = []

    def start(port=None):
        server = GrpcServer(tmp_path / "grpc", port).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()
