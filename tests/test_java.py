# SPDX-License-Identifier: BSD-2-Clause

"""The Java loader (lib_nonblocking_ffi_java.so) and the nonblocking.ffi API
(nonblocking-ffi.jar), on real nginx: `make java` first.

Test classes are compiled into a folder that nginx workers (user nobody)
can read.
"""

import os
import shutil
import signal
import subprocess
import tempfile
import textwrap

import pytest

from conftest import location
from harness import BUILD, MEMCHECK, wait_for

JAVA = os.path.join(BUILD, "lib_nonblocking_ffi_java.so")
JAR = os.path.join(BUILD, "java", "nonblocking-ffi.jar")
EXAMPLES = os.path.join(BUILD, "java", "examples")
JAVAC = shutil.which("javac")

LOAD_FAILED = "%s: lib_nonblocking_ffi_init() failed with rc %%d" % JAVA

pytestmark = [
    pytest.mark.skipif(
        MEMCHECK,
        reason="valgrind cannot run HotSpot usefully: its JIT and signal-"
        "based safepoints make every run a flood of false reports, and a "
        "JVM start takes minutes under it",
    ),
    pytest.mark.skipif(
        not (os.path.exists(JAVA) and os.path.exists(JAR) and JAVAC),
        reason="the Java loader is not built (make java needs javac and mvn)",
    ),
]

PRELUDE = r"""
    local JAVA = "%s"
    local function jload(cfg, opts)
        return ngx.load_nonblocking_ffi(JAVA, cfg, opts)
    end
""" % JAVA


def java_location(path, lua, **kw):
    """A location whose Lua has jload(cfg, opts) and show(...)."""
    return location(path, PRELUDE + lua, **kw)


def java_main(classpath=EXAMPLES, extra=""):
    """The main-context lines: the class path (and more) for the JVM."""
    return "env NFFI_JAVA_CLASSPATH=%s;\n%s" % (classpath, extra)


def test_echo_example_and_binary_payloads(nginx):
    srv = nginx(
        main=java_main(),
        server=java_location(
            "/t",
            r"""
        local rt = assert(jload("example.Echo,init,2"))
        local all = {}
        for i = 0, 255 do all[#all + 1] = string.char(i) end
        all = table.concat(all)
        for _, p in ipairs({ "hello", "", "\0", "a\0b", all,
                             string.rep(all, 16384) }) do
            local ok, res = rt:echo(p)
            ngx.say(ok, " ", #res, " ", res == p)
        end
        show(rt:echo())
        show(rt:upper("abc"))
        show(rt:fail("x"))
        show(rt:error("7"))
        show(rt:nosuch("x"))
    """,
        ),
    )
    assert srv.get("/t").splitlines() == [
        "true 5 true",
        "true 0 true",
        "true 1 true",
        "true 3 true",
        "true 256 true",
        "true 4194304 true",
        "true nil",
        "true 'ABC'",
        "false 1 'java.lang.IllegalArgumentException: failing as asked'",
        "false 7 'error 7'",
        "false 404 'no method nosuch'",
    ]
    srv.wait_log(
        r"\[error\] .*nonblocking.ffi: the handler of a 'fail' call failed\n"
        r"java.lang.IllegalArgumentException: failing as asked\n"
        r"\s+at example.Echo.handle\(Echo.java:\d+\)"
    )
    srv.wait_log(r"\[info\] .*echo: serving on 2 threads")
