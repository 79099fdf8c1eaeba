# SPDX-License-Identifier: BSD-2-Clause
"""make install puts each file where nginx, LuaJIT and a C compiler look;
make uninstall removes exactly those files."""

import os
import subprocess

import pytest

from harness import BUILD, MEMCHECK, MODULES_DIR, NGINX, REPO

pytestmark = pytest.mark.skipif(MEMCHECK, reason="nothing in it runs under "
                                "valgrind: memcheck would only repeat it")

MODULE = "ngx_http_lua_nonblocking_ffi_module.so"


def tree(root):
    """Every file under root, as paths relative to it."""
    found = set()
    for folder, _, files in os.walk(root):
        for name in files:
            found.add(os.path.relpath(os.path.join(folder, name), root))
    return found


def make(*args):
    done = subprocess.run(["make", "-s"] + list(args), cwd=REPO,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def expected(prefix, modules, lua, include):
    files = {modules + "/" + MODULE,
             lua + "/resty/nonblocking_ffi.lua",
             lua + "/resty/nonblocking_ffi/prometheus.lua",
             lua + "/resty_ffi.lua",
             include + "/nonblocking_ffi.h"}
    if os.path.exists(os.path.join(BUILD, "lib_nonblocking_ffi_python3.so")):
        files.add(modules + "/lib_nonblocking_ffi_python3.so")
        files.add(modules + "/python/_nonblocking_ffi.pyi")
        package = os.path.join(BUILD, "python", "nonblocking_ffi")
        files |= {modules + "/python/nonblocking_ffi/" + name
                  for name in os.listdir(package)
                  if os.path.isfile(os.path.join(package, name))}
    if os.path.exists(os.path.join(BUILD, "lib_nonblocking_ffi_java.so")):
        files |= {modules + "/lib_nonblocking_ffi_java.so",
                  modules + "/java/nonblocking-ffi.jar"}
    return {f.lstrip("/") for f in files}


def test_install_and_uninstall_with_destdir(tmp_path):
    dest = str(tmp_path / "root")
    # files of others in the same folders stay
    others = {"usr/lib/nginx/modules/ngx_http_lua_module.so",
              "usr/share/lua/5.1/resty/core.lua", "usr/include/zlib.h"}
    for name in others:
        os.makedirs(os.path.dirname(os.path.join(dest, name)), exist_ok=True)
        open(os.path.join(dest, name), "w").close()

    make("install", "DESTDIR=" + dest, "PREFIX=/usr")
    ours = expected("/usr", "/usr/lib/nginx/modules", "/usr/share/lua/5.1",
                    "/usr/include")
    assert tree(dest) == others | ours
    for name in ours:
        assert os.stat(os.path.join(dest, name)).st_mode & 0o777 == 0o644

    # the installed module loads into nginx (nginx -t dlopens it)
    conf = tmp_path / "nginx.conf"
    conf.write_text(
        "load_module %s/ndk_http_module.so;\n"
        "load_module %s/ngx_http_lua_module.so;\n"
        "load_module %s/usr/lib/nginx/modules/%s;\n"
        "error_log %s/error.log;\npid %s/nginx.pid;\nevents {}\n"
        % (MODULES_DIR, MODULES_DIR, dest, MODULE, tmp_path, tmp_path))
    done = subprocess.run([NGINX, "-t", "-p", str(tmp_path), "-c", str(conf),
                           "-e", str(tmp_path / "error.log")],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr

    # a loader's Python caches are removed too
    if any("__init__.py" in name for name in ours):
        cache = os.path.join(dest, "usr/lib/nginx/modules/python/"
                             "nonblocking_ffi/__pycache__")
        os.makedirs(cache)
        open(os.path.join(cache, "__init__.cpython-311.pyc"), "w").close()

    make("uninstall", "DESTDIR=" + dest, "PREFIX=/usr")
    assert tree(dest) == others
    assert not os.path.exists(os.path.join(dest, "usr/lib/nginx/modules/"
                                           "python"))
    assert not os.path.exists(os.path.join(dest, "usr/share/lua/5.1/resty/"
                                           "nonblocking_ffi"))


def test_install_into_openresty_folders(tmp_path):
    dest = str(tmp_path / "root")
    dirs = ["NGINX_MODULES_DIR=/usr/local/openresty/nginx/modules",
            "LUA_LIB_DIR=/usr/local/openresty/lualib",
            "INCLUDE_DIR=/usr/local/openresty/include"]
    make("install", "DESTDIR=" + dest, *dirs)
    assert tree(dest) == expected(
        "/usr/local/openresty", "/usr/local/openresty/nginx/modules",
        "/usr/local/openresty/lualib", "/usr/local/openresty/include")
    make("uninstall", "DESTDIR=" + dest, *dirs)
    assert tree(dest) == set()
