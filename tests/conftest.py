# SPDX-License-Identifier: BSD-2-Clause

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import (EXAMPLE, NOT_HERE, REQUIRE_ALL,  # noqa: E402
                     TEST_RUNTIME, NginxServer)

# the language services' fixtures (etcd, the Go and Rust libraries, the
# gRPC server), for every test module
pytest_plugins = ["services_go", "services_rust"]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """NFFI_REQUIRE_ALL=1: a test skipped because its part is not built
    here fails instead."""
    outcome = yield
    report = outcome.get_result()
    if REQUIRE_ALL and report.skipped and NOT_HERE in str(report.longrepr):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) \
            else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = "NFFI_REQUIRE_ALL=1 and " + reason


# every location's Lua gets these: the paths of the test runtime
# (tests/runtimes/test_runtime.c) and of the example (examples/c/example.c),
# and a printer that shows each returned value with its type (nil, false
# and strings differ)
LUA_PRELUDE = r"""
    local RUNTIME, EXAMPLE = "%s", "%s"
    local function show(...)
        local out = {}
        for i = 1, select("#", ...) do
            local v = select(i, ...)
            out[i] = type(v) == "string" and ("'" .. v .. "'") or tostring(v)
        end
        ngx.say(table.concat(out, " "))
    end
    -- runs fn(i) in n light threads at once; how many returned true
    local function count_true(n, fn)
        local threads = {}
        for i = 1, n do threads[i] = ngx.thread.spawn(fn, i) end
        local count = 0
        for i = 1, n do
            local _, result = ngx.thread.wait(threads[i])
            if result == true then count = count + 1 end
        end
        return count
    end
""" % (TEST_RUNTIME, EXAMPLE)


def location(path, lua, phase="content_by_lua_block", extra=""):
    """An exact-match location running `lua` (with the prelude)."""
    return "location = %s { %s %s { %s\n%s } }\n" % (
        path, extra, phase, LUA_PRELUDE, lua)


# /go lets a location that waits with WAIT_FOR_GO go on (its server needs
# GO_DICT in http): the test looks at the runtime meanwhile
GO_DICT = "lua_shared_dict test 1m;"
GO = location("/go", "ngx.shared.test:set('go', true)")
WAIT_FOR_GO = r"""
        while not ngx.shared.test:get("go") do ngx.sleep(0.01) end
"""


# /stats: the test runtime's counters of this worker (its "stats" method)
STATS = location("/stats", r"""
    local stats = assert(ngx.load_nonblocking_ffi(RUNTIME, "stats"))
    local _, text = stats:stats()
    ngx.say(text)
""")


def counter(srv, name):
    """One of the test runtime's counters, read through STATS."""
    return int(srv.get("/stats").split(name + "=")[1].split()[0])


def read_all_lua(whole=0):
    """Lua defining read_all(s, timeout): reads a stream to its end; each
    chunk of up to `whole` bytes as it is, a longer one as its length and
    first byte; then the final status."""
    return r"""
    local function read_all(s, timeout)
        local out = {}
        while true do
            local chunk, a, b = s:read(timeout)
            if chunk == nil then
                out[#out + 1] = "end " .. tostring(a) .. " " .. tostring(b)
                return table.concat(out, ",")
            end
            out[#out + 1] = #chunk > %d and (#chunk .. chunk:sub(1, 1))
                            or chunk
        end
    end
""" % whole


# every chunk as its length and first byte
READ_ALL = read_all_lua()


@pytest.fixture
def nginx(tmp_path):
    """Starts nginx servers; stops them and checks their logs afterwards."""
    servers = []

    def start(**kw):
        server = NginxServer(tmp_path / ("nginx%d" % len(servers)), **kw)
        servers.append(server)
        return server.start()

    yield start

    problems = []
    for server in servers:
        try:
            server.stop()
        except AssertionError as e:
            problems.append(str(e))
        problems += server.problems()
    assert not problems, "\n".join(problems)
