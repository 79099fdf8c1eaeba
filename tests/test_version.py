# SPDX-License-Identifier: BSD-2-Clause
"""One project version everywhere; the ABI version a runtime was built for
is checked at load."""

import os
import re
import subprocess

import pytest

from conftest import location
from harness import (BUILD, EXAMPLE, NOT_HERE, REPO, TEST_RUNTIME,
                     abi_version)

FUTURE = os.path.join(BUILD, "libnffi_abi_future.so")
LEGACY = os.path.join(BUILD, "libnffi_legacy_echo.so")


def read(path):
    with open(os.path.join(REPO, path)) as f:
        return f.read()


def project_version():
    return re.search(r'#define NGX_NFFI_VERSION\s+"([^"]+)"',
                     read("src/ngx_nffi.h")).group(1)


def test_every_file_that_names_the_version_names_the_same():
    version = project_version()
    assert re.fullmatch(r"\d+\.\d+\.\d+", version)
    found = {
        "lib/resty/nonblocking_ffi.lua": re.search(
            r'version = "([^"]+)"', read("lib/resty/nonblocking_ffi.lua")),
        "CHANGELOG.md": re.search(r"^## (\S+)", read("CHANGELOG.md"), re.M),
        "dist.ini": re.search(r"^version = (\S+)", read("dist.ini"), re.M),
        "debian/changelog": re.search(r"^\S+ \(([^)-]+)",
                                      read("debian/changelog")),
    }
    rockspecs = [n for n in os.listdir(REPO) if n.endswith(".rockspec")]
    assert rockspecs == ["lua-resty-nonblocking-ffi-%s-1.rockspec" % version]
    found[rockspecs[0]] = re.search(r'^version = "([^"]+)-\d+"',
                                    read(rockspecs[0]), re.M)
    assert {name: m and m.group(1) for name, m in found.items()} == {
        name: version for name in found}


def test_version_from_lua_and_in_the_startup_log(nginx):
    srv = nginx(server=location("/t", r"""
        local nffi = require "resty.nonblocking_ffi"
        show(nffi.version, nffi.abi_version)
    """))
    assert srv.get("/t") == "'%s' %d\n" % (project_version(), abi_version())
    with open("/sys/devices/system/clocksource/clocksource0/"
              "current_clocksource") as f:
        tsc = f.read() == "tsc\n" and os.uname().machine == "x86_64"
    srv.wait_log(r"\[notice\] \d+#\d+: nonblocking_ffi %s \(ABI version %d\)"
                 r" ready, latencies timed with %s"
                 % (re.escape(project_version()), abi_version(),
                    "the time-stamp counter" if tsc else "CLOCK_MONOTONIC"))


def test_a_runtime_built_for_a_newer_abi_is_refused(nginx):
    srv = nginx(server=location("/t", r"""
        show(ngx.load_nonblocking_ffi("%s"))
        -- built with this header, and one without the symbol (lua-resty-ffi)
        show(ngx.load_nonblocking_ffi(RUNTIME) ~= nil)
        show(ngx.load_nonblocking_ffi("%s") ~= nil)
    """ % (FUTURE, LEGACY)))
    assert srv.get("/t").splitlines() == [
        "nil '%s was built for ABI version %d, newer than the ABI version %d"
        " of this ngx_http_lua_nonblocking_ffi_module (%s): upgrade the "
        "module, or build the runtime against the module's nonblocking_ffi.h'"
        % (FUTURE, abi_version() + 1, abi_version(), project_version()),
        "true", "true"]


def exported(lib):
    out = subprocess.run(["nm", "-D", "--defined-only", lib], check=True,
                         capture_output=True, text=True).stdout
    return re.findall(r"^[0-9a-f]+ (\w) lib_nonblocking_ffi_abi_built$", out,
                      re.M)


def test_runtimes_built_with_the_header_export_their_abi_version():
    # weak (V): every file of a runtime may include the header
    assert exported(TEST_RUNTIME) == ["V"]
    assert exported(EXAMPLE) == ["V"]
    assert exported(LEGACY) == []
    module = os.path.join(BUILD, "ngx_http_lua_nonblocking_ffi_module.so")
    assert exported(module) == []


@pytest.mark.parametrize("lib", ["lib_nonblocking_ffi_python3.so",
                                 "lib_nonblocking_ffi_java.so",
                                 "lib_nonblocking_ffi_go.so"])
def test_loaders_and_go_libraries_export_their_abi_version(lib):
    path = os.path.join(BUILD, lib)
    if not os.path.exists(path):
        pytest.skip(NOT_HERE + lib)
    assert exported(path) == ["V"]


def test_rust_libraries_export_their_abi_version(rust_lib):
    # one definition, in the export! macro: a plain data symbol
    assert exported(rust_lib) in (["D"], ["R"])
