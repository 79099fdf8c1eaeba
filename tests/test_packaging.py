# SPDX-License-Identifier: BSD-2-Clause
"""The Lua library as a LuaRocks rock and an OPM package."""

import os
import re
import shutil
import subprocess

import pytest

from harness import MEMCHECK, NOT_HERE, REPO

pytestmark = pytest.mark.skipif(MEMCHECK, reason="nothing in it runs under "
                                "valgrind: memcheck would only repeat it")

ROCKSPEC = [n for n in os.listdir(REPO) if n.endswith(".rockspec")]


def git_status():
    return subprocess.run(["git", "status", "--porcelain", "--ignored"],
                          cwd=REPO, capture_output=True, text=True,
                          check=True).stdout


@pytest.mark.skipif(shutil.which("luarocks") is None,
                    reason=NOT_HERE + "luarocks (Debian package luarocks)")
def test_luarocks_make_into_a_local_tree(tmp_path):
    tree = str(tmp_path / "tree")
    before = git_status()
    done = subprocess.run(["luarocks", "--tree", tree, "make", ROCKSPEC[0]],
                          cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    lua = os.path.join(tree, "share", "lua", "5.1")
    for name in ("resty/nonblocking_ffi.lua",
                 "resty/nonblocking_ffi/prometheus.lua", "resty_ffi.lua"):
        with open(os.path.join(lua, name)) as got, \
                open(os.path.join(REPO, "lib", name)) as want:
            assert got.read() == want.read(), name
    listed = subprocess.run(
        ["luarocks", "--tree", tree, "list", "--porcelain"],
        capture_output=True, text=True, check=True).stdout
    # the rockspec's version, as its file name says it
    version = ROCKSPEC[0][len("lua-resty-nonblocking-ffi-"):-len(".rockspec")]
    assert re.search(r"^lua-resty-nonblocking-ffi\t%s\tinstalled"
                     % re.escape(version), listed, re.M), listed
    # building in place leaves nothing behind in the checkout
    assert git_status() == before


def test_the_rock_and_opm_ship_every_lua_module():
    modules = set()
    for folder, _, files in os.walk(os.path.join(REPO, "lib")):
        for name in files:
            path = os.path.relpath(os.path.join(folder, name), REPO)
            modules.add(path)
    with open(os.path.join(REPO, ROCKSPEC[0])) as f:
        rock = set(re.findall(r'"(lib/[^"]+\.lua)"', f.read()))
    assert rock == modules
    with open(os.path.join(REPO, "dist.ini")) as f:
        dist = dict(re.findall(r"^(\w+) = (.*)$", f.read(), re.M))
    # opm ships lib_dir whole
    assert dist["lib_dir"] == "lib"
    assert dist["main_module"] == "lib/resty/nonblocking_ffi.lua"
    assert dist["license"] == "2bsd"
