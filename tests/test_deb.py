# SPDX-License-Identifier: BSD-2-Clause
"""The Debian packages (make deb) on this machine: installed with apt, the
stock nginx -t passes with the module enabled by its modules-available
snippet, the stock nginx serves a request that calls the C example and the
Python loader through a conf.d snippet, and a purge leaves the system as it
was found: no file of ours, /etc/nginx unchanged, the stock nginx stopped.

It installs into the system, so it runs as root only, and only on CI
(NFFI_REQUIRE_ALL=1, .ci/run) or when NFFI_DEB_TEST=1 asks for it.
"""

import fcntl
import glob
import hashlib
import os
import shutil
import signal
import subprocess
import tempfile

import pytest

from harness import (EXAMPLE, MEMCHECK, NOT_HERE, REPO, REQUIRE_ALL,
                     free_port, wait_for)

PACKAGES = ["libnginx-mod-http-lua-nonblocking-ffi",
            "lua-resty-nonblocking-ffi", "nonblocking-ffi-dev",
            "nonblocking-ffi-python3"]
DEB_DIR = os.path.join(REPO, "build", "deb")
ENABLED = "/etc/nginx/modules-enabled/60-mod-http-lua-nonblocking-ffi.conf"
SNIPPET = "/etc/nginx/conf.d/nffi-deb-test.conf"
# what the packages and the test touch
WATCHED = ["/etc/nginx", "/usr/lib/nginx/modules", "/usr/share/nginx",
           "/usr/share/lua/5.1", "/usr/include", "/run/nginx.pid"]

pytestmark = [
    pytest.mark.skipif(MEMCHECK, reason="nothing of nginx under valgrind"),
    pytest.mark.skipif(
        not (REQUIRE_ALL or os.environ.get("NFFI_DEB_TEST") == "1"),
        reason="installs packages into the system: runs on CI "
        "(NFFI_REQUIRE_ALL=1) or with NFFI_DEB_TEST=1"),
    pytest.mark.skipif(
        os.geteuid() != 0 or not shutil.which("dpkg-buildpackage")
        or not os.path.exists("/usr/bin/dh_nginx"),
        reason=NOT_HERE + "root, dpkg-buildpackage and dh_nginx (nginx-dev)"),
]


def run(*cmd, **kw):
    done = subprocess.run(list(cmd), capture_output=True, text=True, **kw)
    assert done.returncode == 0, "%s:\n%s\n%s" % (
        " ".join(cmd), done.stdout[-3000:], done.stderr[-3000:])
    return done.stdout


def snapshot():
    """Every path under WATCHED with its type, mode, target or content."""
    seen = {}
    for top in WATCHED:
        if not os.path.lexists(top):
            continue
        paths = [top]
        for folder, dirs, files in os.walk(top):
            paths += [os.path.join(folder, n) for n in dirs + files]
        for path in paths:
            st = os.lstat(path)
            if os.path.islink(path):
                seen[path] = "link " + os.readlink(path)
            elif os.path.isfile(path):
                with open(path, "rb") as f:
                    seen[path] = "%o %s" % (
                        st.st_mode, hashlib.sha256(f.read()).hexdigest())
            else:
                seen[path] = "%o" % st.st_mode
    return seen


def installed(package):
    done = subprocess.run(["dpkg-query", "-W", "-f=${Status}", package],
                          capture_output=True, text=True)
    return "installed" in done.stdout or "config-files" in done.stdout


def stock_nginx_running():
    try:
        with open("/run/nginx.pid") as f:
            os.kill(int(f.read()), 0)
        return True
    except (OSError, ValueError):
        return False


@pytest.fixture
def machine_lock():
    """One such test at a time on this machine (several checkouts)."""
    with open("/tmp/nffi-deb-test.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def test_debian_packages_install_serve_and_purge(machine_lock, tmp_path):
    for package in PACKAGES:
        assert not installed(package), (
            "%s is installed on this machine: the test does not touch it"
            % package)
    assert not stock_nginx_running(), "a stock nginx runs: not touching it"

    run("scripts/build-deb.sh", cwd=REPO,
        env=dict(os.environ, NFFI_DEB_LINTIAN="0"))
    debs = [glob.glob(os.path.join(DEB_DIR, "%s_*.deb" % p))[0]
            for p in PACKAGES]

    # runtimes the worker (www-data) can read
    public = tempfile.mkdtemp(prefix="nffi-deb-")
    os.chmod(public, 0o755)
    shutil.copy(EXAMPLE, public)
    shutil.copy(os.path.join(REPO, "examples", "python", "echo.py"), public)
    port = free_port()

    before = snapshot()
    proc = None
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    try:
        run("apt-get", "install", "-y", "-q", "--no-install-recommends",
            *debs, env=env)
        assert os.path.realpath(ENABLED) == (
            "/usr/share/nginx/modules-available/"
            "mod-http-lua-nonblocking-ffi.conf")
        # after the Lua module, which it needs
        enabled = sorted(os.listdir("/etc/nginx/modules-enabled"))
        assert enabled.index("50-mod-http-lua.conf") < enabled.index(
            os.path.basename(ENABLED))

        with open(SNIPPET, "w") as f:
            f.write("""
server {
    listen 127.0.0.1:%d;
    location = /c {
        content_by_lua_block {
            require "resty.nonblocking_ffi"
            local rt = assert(ngx.load_nonblocking_ffi(
                "%s/libnffi_example.so"))
            local ok, res = rt:echo(ngx.var.args)
            ngx.say(ok, " ", res, " ",
                    require("resty.nonblocking_ffi").version)
        }
    }
    location = /py {
        content_by_lua_block {
            require "resty.nonblocking_ffi"
            local rt = assert(ngx.load_nonblocking_ffi(
                "/usr/lib/nginx/modules/lib_nonblocking_ffi_python3.so",
                "%s/echo.py,init", { is_global = true }))
            ngx.say(rt:upper(ngx.var.args))
        }
    }
}
""" % (port, public, public))
        run("/usr/sbin/nginx", "-t")

        proc = subprocess.Popen(["/usr/sbin/nginx", "-g", "daemon off;"],
                                stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)

        def answer(path):
            assert proc.poll() is None, proc.stderr.read()
            try:
                return subprocess.run(
                    ["curl", "-sf", "http://127.0.0.1:%d%s" % (port, path)],
                    capture_output=True, text=True, timeout=10).stdout
            except subprocess.TimeoutExpired:
                return ""

        wait_for(lambda: answer("/c?hello"), 20, "the stock nginx")
        assert answer("/c?hello") == "true hello %s\n" % run(
            "dpkg-parsechangelog", "-S", "Version", cwd=REPO).strip()
        assert answer("/py?hello") == "trueHELLO\n"
    finally:
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGQUIT)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if os.path.exists(SNIPPET):
            os.unlink(SNIPPET)
        subprocess.run(["apt-get", "purge", "-y", "-q"] + PACKAGES, env=env,
                       capture_output=True)
        shutil.rmtree(public)

    for package in PACKAGES:
        assert not installed(package)
    assert not stock_nginx_running()
    after = snapshot()
    assert {p: after.get(p) for p in set(before) | set(after)
            if before.get(p) != after.get(p)} == {}
