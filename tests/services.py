# SPDX-License-Identifier: BSD-2-Clause

"""Real services for the tests, from Debian packages, on free ports."""

import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile

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


class PostgresServer:
    """Debian's PostgreSQL on a free loopback port, in a folder of its own.

    PostgreSQL refuses to run as root: as root, the cluster belongs to the
    postgres user and its programs run as that user.  Trust authentication
    on 127.0.0.1 only; fsync off (a test database).
    """

    def __init__(self):
        self.folder = None
        self.port = free_port()
        self.proc = None
        self.user = "postgres" if os.getuid() == 0 else None

    @property
    def jdbc_url(self):
        return "jdbc:postgresql://127.0.0.1:%d/postgres?user=%s" % (
            self.port, self.user or pwd.getpwuid(os.getuid()).pw_name)

    @staticmethod
    def bindir():
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"))
        if not found:
            raise AssertionError(
                "PostgreSQL is not installed: run make -C shims/java deps")
        return os.path.dirname(found[-1])

    def _as_user(self, cmd):
        if self.user is None:
            return cmd
        return ["setpriv", "--reuid=" + self.user, "--regid=" + self.user,
                "--init-groups", "--"] + cmd

    def start(self):
        bindir = self.bindir()
        # under /tmp, not the tests' private folder: that user must reach it
        self.folder = tempfile.mkdtemp(prefix="nffi-postgres-")
        self.data = os.path.join(self.folder, "data")
        self.log = os.path.join(self.folder, "postgres.log")
        if self.user is not None:
            entry = pwd.getpwnam(self.user)
            os.chown(self.folder, entry.pw_uid, entry.pw_gid)
        initdb = subprocess.run(self._as_user(
            [os.path.join(bindir, "initdb"), "-D", self.data, "-A", "trust",
             "-E", "UTF8", "--no-sync", "--no-instructions"]),
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            cwd="/")
        if initdb.returncode != 0:
            raise AssertionError("initdb failed:\n" + initdb.stderr)
        with open(self.log, "w") as log:
            if self.user is not None:
                os.chown(self.log, pwd.getpwnam(self.user).pw_uid, -1)
            self.proc = subprocess.Popen(self._as_user(
                [os.path.join(bindir, "postgres"), "-D", self.data,
                 "-p", str(self.port), "-k", self.folder,
                 "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off",
                 "-c", "max_connections=50"]),
                stdout=log, stderr=subprocess.STDOUT, cwd="/")
        wait_for(self._ready, 30, "postgres on port %d" % self.port)
        return self

    def _ready(self):
        if self.proc.poll() is not None:
            with open(self.log, errors="replace") as f:
                raise AssertionError("postgres exited:\n" + f.read())
        return subprocess.run(
            ["pg_isready", "-q", "-h", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        ).returncode == 0

    def sql(self, query):
        """Runs query with psql; returns its unaligned output."""
        user = self.user or pwd.getpwuid(os.getuid()).pw_name
        out = subprocess.run(
            ["psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", user,
             "-d", "postgres", "-X", "-A", "-t", "-c", query],
            capture_output=True, text=True, timeout=30, check=True)
        return out.stdout.rstrip("\n")

    def stop(self):
        # SIGINT is the fast shutdown: clients left connected do not hold it
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None
