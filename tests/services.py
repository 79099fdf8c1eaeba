# SPDX-License-Identifier: BSD-2-Clause

"""Real services for the tests, from Debian packages, on free ports."""

import os
import shutil
import subprocess

from harness import free_port, stop_process, wait_for


class RedisServer:
    """redis-server on a free loopback port, without persistence."""

    def __init__(self, folder):
        self.folder = str(folder)
        self.port = free_port()
        self.proc = None

    @property
    def url(self):
        return "redis://127.0.0.1:%d/0" % self.port

    def start(self):
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        if not os.path.exists(binary):
            raise AssertionError(
                "redis-server is not installed: run make -C shims/python deps"
            )
        os.makedirs(self.folder, exist_ok=True)
        self.log = os.path.join(self.folder, "redis.log")
        self.proc = subprocess.Popen(
            [
                binary,
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
                "--dir",
                self.folder,
                "--logfile",
                self.log,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(self._pong, 10, "redis-server on port %d" % self.port)
        return self

    def _pong(self):
        if self.proc.poll() is not None:
            with open(self.log, errors="replace") as f:
                raise AssertionError("redis-server exited:\n" + f.read())
        try:
            return self.command("PING") == "PONG"
        except (OSError, subprocess.CalledProcessError):
            return False

    def command(self, *args):
        """Runs one command with redis-cli; returns its raw output."""
        out = subprocess.run(
            ["redis-cli", "-h", "127.0.0.1", "-p", str(self.port), "--raw"]
            + [str(a) for a in args],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
        return out.stdout.rstrip("\n")

    def stop(self):
        stop_process(self.proc, 10)
