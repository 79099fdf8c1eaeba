# SPDX-License-Identifier: BSD-2-Clause

"""Rust runtimes: the SDK (sdk/rust) and its examples (examples/rust)
through a real nginx: lib_nonblocking_ffi_rust.so hosts the handlers echo,
echo_async, grpc, raw and selftest; the gRPC tests start the example's
nffi-grpc-server on a free port."""

import threading
import time

import pytest

from conftest import location
from harness import SLOW, wait_for
from services_rust import grpc_server, rust_lib  # noqa: F401 (fixtures)


def rs(lua, lib):
    """Lua with RS bound to the path of the Rust library."""
    return 'local RS = "%s"\n%s' % (lib, lua)


@pytest.fixture
def rslib(rust_lib):  # noqa: F811
    return rust_lib


# --- echo ------------------------------------------------------------------


def test_echo_blocking_and_async(nginx, rslib):
    srv = nginx(server=location("/t", rs(r"""
        local all = {}
        for i = 0, 255 do all[#all + 1] = string.char(i) end
        local bin = table.concat(all)
        local big = string.rep(bin, 4 * 4096)        -- 4 MB
        for _, cfg in ipairs({ "echo", "echo,2", "echo_async" }) do
            local rt = assert(ngx.load_nonblocking_ffi(RS, cfg))
            local ok, res = rt:echo("hello")
            show(ok, res, rt == ngx.load_nonblocking_ffi(RS, cfg))
            show(rt:any_name(""))
            show(rt:echo())
            for _, p in ipairs({ "\0", "a\0b", bin, big }) do
                local ok, res = rt:echo(p)
                ngx.say(ok, " ", #res, " ", res == p)
            end
        end
    """, rslib)))
    per_cfg = [
        "true 'hello' true",
        "true ''",
        "true ''",
        "true 1 true",
        "true 3 true",
        "true 256 true",
        "true 4194304 true",
    ]
    assert srv.get("/t").splitlines() == per_cfg * 3
    srv.wait_log(r'\[info\] .*nffi: handler "echo_async" started')


def test_100_concurrent_async_calls_answered_out_of_order(nginx, rslib):
    srv = nginx(server=location("/t", rs(r"""
        local rt = assert(ngx.load_nonblocking_ffi(RS, "selftest"))
        -- later calls sleep less: answers come back out of order, and all
        -- 100 are in flight at once (together far less than their sum)
        local t0 = ngx.now()
        ngx.say(count_true(100, function(i)
            local ms = (100 - i) % 50 + 50
            local ok, res = rt:sleep(tostring(ms))
            return ok and res == "slept " .. ms
        end))
        ngx.update_time()
        ngx.say(ngx.now() - t0 < 2.5)
        local echo = assert(ngx.load_nonblocking_ffi(RS, "echo_async"))
        ngx.say(count_true(100, function(i)
            local ok, res = echo:echo("call\0" .. i)
            return ok and res == "call\0" .. i
        end))
    """, rslib)))
    assert srv.get("/t").splitlines() == ["100", "true", "100"]


# --- errors, panics, dropped tasks, bad cfg ---------------------------------


def test_errors_panics_and_dropped_tasks(nginx, rslib):
    srv = nginx(server=location("/t", rs(r"""
        local pid = ngx.worker.pid()
        for _, cfg in ipairs({ "selftest", "selftest,blocking" }) do
            local rt = assert(ngx.load_nonblocking_ffi(RS, cfg))
            show(rt:error("7"))
            show(rt:error("0"))
            show(rt:error("x"))
            show(rt:panic("boom"))
            show(rt:nosuch())
            show(rt:echo("alive"))
        end
        local raw = assert(ngx.load_nonblocking_ffi(RS, "raw"))
        show(raw:drop("forgotten"))
        show(raw:echo())
        show(raw:echo("a\0b"))
        show(raw:method())
        -- the worker survived all of it
        ngx.say(ngx.worker.pid() == pid)
    """, rslib)))
    per_cfg = [
        "false 7 'error 7'",
        "false 1 'error 0'",
        "false 1 'invalid digit found in string'",
        "false 2 'panic: boom'",
        "false 404 'unknown method nosuch'",
        "true 'alive'",
    ]
    assert srv.get("/t").splitlines() == per_cfg * 2 + [
        "false 1 'nffi: the task was dropped without an answer'",
        "true nil",
        "true 'a\x00b'",
        "true 'method'",
        "true",
    ]
    srv.wait_log(r'\[error\] .*nffi: handler panicked in method "panic": '
                 r'panic: boom', count=2)


def test_bad_cfg_makes_init_fail(nginx, rslib):
    srv = nginx(server=location("/t", rs(r"""
        local cfgs = { false, "", ",x", "nope", "nope,{}", "echo,many",
                       "grpc", "grpc,not a url", "selftest,fail",
                       "selftest,panic" }
        for _, cfg in ipairs(cfgs) do
            local rt, err = ngx.load_nonblocking_ffi(RS, cfg or nil)
            ngx.say(tostring(rt), " ", (err:gsub("^[^:]*: ", "")))
        end
        -- the failures left nothing behind: the library still loads
        local rt = assert(ngx.load_nonblocking_ffi(RS, "echo"))
        show(rt:echo("still fine"))
    """, rslib)))
    rc = "nil lib_nonblocking_ffi_init() failed with rc %d: "
    handlers = "echo, echo_async, grpc, raw, selftest"
    expected = [
        rc % 1 + 'cfg is nil: name a handler (%s), e.g. "name" or '
        '"name,<its cfg>"' % handlers,
        rc % 1 + 'cfg "" names no handler (%s)' % handlers,
        rc % 1 + 'cfg ",x" names no handler (%s)' % handlers,
        rc % 2 + 'no handler "nope" in this library (it has: %s)'
        % handlers,
        rc % 2 + 'no handler "nope" in this library (it has: %s)'
        % handlers,
        rc % 3 + 'handler "echo": bad thread count "many": invalid digit',
        rc % 3 + 'handler "grpc": cfg has no server URL',
        rc % 3 + 'handler "grpc": bad URL "not a url"',
        rc % 3 + 'handler "selftest": asked to fail',
        rc % 3 + 'handler "selftest": panic: asked to panic',
    ]
    lines = srv.get("/t").splitlines()
    assert len(lines) == len(expected) + 1, lines
    assert lines[-1] == "true 'still fine'"
    for line, want in zip(lines, expected):
        assert line.startswith(want), (line, want)
    srv.wait_log(r'\[error\] .*nffi: no handler "nope" in this library',
                 count=2)
    srv.wait_log(r'\[error\] .*nffi: handler "selftest": panic: asked to '
                 r'panic')


# --- lifecycle ---------------------------------------------------------------


THREADS = r"""
    local function threads()
        local f = assert(io.open("/proc/self/status"))
        local n = tonumber(f:read("*a"):match("Threads:%s*(%d+)"))
        f:close()
        return n
    end
    -- waits (up to a deadline) until cond() holds; returns cond()
    local function settle(cond)
        local deadline = ngx.now() + 10 * SLOW
        while not cond() and ngx.now() < deadline do
            ngx.sleep(0.01)
            ngx.update_time()
        end
        return cond()
    end
"""


def test_unload_while_async_calls_run(nginx, rslib):
    srv = nginx(server=location("/t", rs("local SLOW = %d\n" % SLOW + THREADS
                                         + r"""
        local rt = assert(ngx.load_nonblocking_ffi(RS, "selftest"))
        -- tokio's threads start with the first async runtime
        show(rt:echo("warm"))
        local base = threads()
        local answered, unloaded, other = 0, 0, 0
        for round = 1, 3 do
            local r = assert(ngx.load_nonblocking_ffi(RS, "selftest"))
            local calls = {}
            for i = 1, 40 do
                calls[i] = ngx.thread.spawn(function()
                    return r:sleep(tostring(i % 4 * 50))
                end)
            end
            -- some are running, some queued, some answered when unload comes
            settle(function() return r:__pending() < 40 end)
            r:__unload()
            for i = 1, 40 do
                local _, ok, res = ngx.thread.wait(calls[i])
                if ok and res == "slept " .. i % 4 * 50 then
                    answered = answered + 1
                elseif ok == false and res == "unloaded" then
                    unloaded = unloaded + 1
                else
                    other = other + 1
                    ngx.log(ngx.ERR, "unexpected: ", tostring(ok), " ",
                            tostring(res))
                end
            end
            show(r:echo("after"))
            ngx.say(settle(function() return r:__pending() == 0 end))
        end
        ngx.say(answered + unloaded, " ", other)
        -- one tokio runtime for the library: unloads leave no thread behind
        ngx.say(settle(function() return threads() == base end))
        -- and blocking runtimes end their threads on unload
        for round = 1, 3 do
            local e = assert(ngx.load_nonblocking_ffi(RS, "echo,4"))
            show(e:echo("x"))
            e:__unload()
        end
        ngx.say(settle(function() return threads() == base end))
    """, rslib)))
    lines = srv.get("/t").splitlines()
    assert lines == ["true 'warm'"] + ["false 'unloaded'", "true"] * 3 + [
        "120 0", "true", "true 'x'", "true 'x'", "true 'x'", "true"], lines


def test_async_handler_sees_the_caller_give_up(nginx, rslib):
    srv = nginx(server=location("/t", rs("local SLOW = %d\n" % SLOW + THREADS
                                         + r"""
        local rt = assert(ngx.load_nonblocking_ffi(RS, "selftest"))
        show(rt:wait_cancel("", 0.2))
        -- the handler ended: its (dropped) answer came back
        ngx.say(settle(function() return rt:__pending() == 0 end))
    """, rslib)))
    assert srv.get("/t").splitlines() == ["false 'timeout'", "true"]
    srv.wait_log(r"\[info\] .*nffi_rust_examples::selftest: the caller gave "
                 r"up")


def test_log_records_reach_the_error_log(nginx, rslib):
    srv = nginx(server=location("/t", rs(r"""
        local rt = assert(ngx.load_nonblocking_ffi(RS, "selftest,blocking"))
        show(rt:log("hello from Rust"))
        show(rt:trace("traced"))
    """, rslib)))
    assert srv.get("/t").splitlines() == ["true ''", "true ''"]
    srv.wait_log(r"\[warn\] \d+#\d+: nffi_rust_examples::selftest: hello "
                 r"from Rust")
    srv.wait_log(r"\[error\] \d+#\d+: nffi_rust_examples::selftest: a "
                 r"tracing event request=traced")


# --- gRPC ----------------------------------------------------------------------


def grpc_location(path, lua, url, lib):
    return location(path, rs(r"""
        local rt = assert(ngx.load_nonblocking_ffi(RS, "grpc,%s"))
    """ % url + lua, lib))


def test_grpc_calls_share_one_connection(nginx, rslib, grpc_server):
    server = grpc_server()
    srv = nginx(server=grpc_location("/t", r"""
        show(rt:echo("hello\0grpc"))
        local big = string.rep("0123456789abcdef", 65536)     -- 1 MB
        local ok, res = rt:echo(big)
        ngx.say(ok, " ", res == big)
        show(rt:echo())
        show(rt:sleep("10"))
        show(rt:sleep("soon"))
        show(rt:nosuch())
        -- 100 calls at once, all in flight on the one HTTP/2 connection
        local t0 = ngx.now()
        ngx.say(count_true(100, function(i)
            local ok, res = rt:sleep("200")
            return ok and res == "slept 200"
        end))
        ngx.update_time()
        ngx.say(ngx.now() - t0 < 5)
        show(rt:connections())
    """, server.url, rslib))
    assert srv.get("/t").splitlines() == [
        "true 'hello\x00grpc'",
        "true true",
        "true ''",
        "true 'slept 10'",
        "false 400 'bad ms: invalid digit found in string'",
        "false 404 'unknown method nosuch'",
        "100",
        "true",
        "true '1'",
    ]
    assert len(server.lines("sleep 200")) == 100


def test_grpc_server_going_away_mid_call(nginx, rslib, grpc_server):
    server = grpc_server()
    srv = nginx(server=grpc_location("/slow", r"""
        local t0 = ngx.now()
        local ok, rc, msg = rt:sleep("60000", 30)
        ngx.update_time()
        ngx.say(ok, " ", rc, " ", msg)
        ngx.say(ngx.now() - t0 < 20)
    """, server.url, rslib) + grpc_location("/echo", r"""
        show(rt:echo("again"))
    """, server.url, rslib))
    assert srv.get("/echo").strip() == "true 'again'"

    got = []
    caller = threading.Thread(target=lambda: got.append(srv.get("/slow")))
    caller.start()
    wait_for(lambda: server.lines("sleep 60000"), 10 * SLOW,
             "the call to arrive")
    server.kill()
    caller.join(30 * SLOW)
    assert got, "the call did not end when the server went away"
    ok, rc, msg = got[0].splitlines()[0].split(" ", 2)
    # a clear gRPC error (unavailable, or unknown for a reset stream)
    assert ok == "false" and rc in ("14", "2"), got[0]
    assert msg.startswith(("Unavailable:", "Unknown:")), got[0]
    assert got[0].splitlines()[1] == "true"

    # while it is down, calls fail at once; once back, the channel reconnects
    t0 = time.monotonic()
    line = srv.get("/echo").strip()
    assert line.startswith("false 14 'Unavailable:"), line
    assert time.monotonic() - t0 < 10 * SLOW
    grpc_server(server.port)
    wait_for(lambda: srv.get("/echo").strip() == "true 'again'", 20,
             "the channel to reconnect")
