# SPDX-License-Identifier: BSD-2-Clause

"""Rust runtimes: the SDK (sdk/rust) and its examples (examples/rust)
through a real nginx: lib_nonblocking_ffi_rust.so hosts the handlers echo,
echo_async, grpc, raw, selftest and the streams (stream, stream_async,
stream_stats); the gRPC tests start the example's nffi-grpc-server on a
free port."""

import socket
import threading
import time

import pytest

from conftest import location
from harness import SLOW, wait_for


def rs(lua, lib):
    """Lua with RS bound to the path of the Rust library."""
    return 'local RS = "%s"\n%s' % (lib, lua)


@pytest.fixture
def rslib(rust_lib):
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
    handlers = ("echo, echo_async, grpc, raw, selftest, stream, stream_async, "
                "stream_stats")
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


# --- gRPC ------------------------------------------------------------------


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


# --- streams ---------------------------------------------------------------


# streams on threads and on tokio: the same methods (examples/rust/src/
# stream.rs)
STREAM_CFGS = ("stream", "stream_async")

# reads a stream to its end: its chunks (NULs as \0, without newlines),
# then how it ended
READ_ALL = r"""
    local function read_all(s)
        local out = {}
        repeat
            local chunk, a, b = s:read()
            out[#out + 1] = chunk and (chunk:gsub("%z", "\\0"):gsub("\n", ""))
                or table.concat({ "end", tostring(a), tostring(b) }, " ")
        until not chunk
        return table.concat(out, ",")
    end
"""


def stats_location(lib):
    """/stats: the stream methods' counters of this worker."""
    return location("/stats", rs(r"""
        local stats = assert(ngx.load_nonblocking_ffi(RS, "stream_stats"))
        local _, text = stats:stats()
        ngx.say(text)
    """, lib))


def stream_stats(srv):
    """The counters of examples/rust/src/stream.rs: chunks sent, sends
    waiting, CLOSED results seen, streams running."""
    text = srv.get("/stats").split()
    return dict((k, int(v)) for k, v in (kv.split("=") for kv in text))


def stats_are(srv, **want):
    """Whether the counters named have these values."""
    got = stream_stats(srv)
    return all(got[k] == v for k, v in want.items())


def test_stream_chunks_in_order_binary_and_how_they_end(nginx, rslib):
    srv = nginx(server=location("/t", rs(READ_ALL + r"""
        for _, cfg in ipairs({ "stream", "stream_async" }) do
            local rt = assert(ngx.load_nonblocking_ffi(RS, cfg))
            ngx.say(read_all(assert(rt:__stream("count", "3"))))
            -- every byte value, one chunk each, in order
            local s = assert(rt:__stream("bytes", "256,1"))
            local got = {}
            while true do
                local chunk, status = s:read()
                if not chunk then got[#got + 1] = status break end
                got[#got + 1] = chunk:byte() .. "/" .. #chunk
            end
            local want = {}
            for i = 0, 255 do want[#want + 1] = i .. "/1" end
            want[#want + 1] = 0
            ngx.say(table.concat(got, " ") == table.concat(want, " "))
            -- large chunks, binary, past the window
            s = assert(rt:__stream("bytes", "40,100000"))
            local ok, n = true, 0
            while true do
                local chunk, status = s:read()
                if not chunk then ngx.say(ok, " ", n, " ", status) break end
                ok = ok and chunk == string.rep(string.char(n), 100000)
                n = n + 1
            end
            ngx.say(read_all(assert(rt:__stream("fail"))))
            ngx.say(read_all(assert(rt:__stream("panic"))))
            ngx.say(read_all(assert(rt:__stream("nosuch"))))
            ngx.say(read_all(assert(rt:__stream("count", "x"))))
            -- a streaming handler refuses an ordinary call
            show(rt:count("3"))
        end
        -- an ordinary handler answers a stream in one chunk
        for _, cfg in ipairs({ "echo", "echo_async" }) do
            local rt = assert(ngx.load_nonblocking_ffi(RS, cfg))
            ngx.say(read_all(assert(rt:__stream("echo", "a\0b"))))
        end
    """, rslib)))
    per_cfg = [
        "1,2,3,end 0 nil",
        "true",
        "true 40 0",
        "before,end 7 failed midway",
        "before,end 2 panic: mid-stream",
        "end 404 unknown method nosuch",
        'end 400 bad request "x": invalid digit found in string',
        "false 1 'nffi: method \"count\" streams its answer: call it with "
        "runtime:__stream(\"count\", req)'",
    ]
    assert srv.get("/t").splitlines() == per_cfg * 2 + [
        "a\\0b,end 0 nil"] * 2
    srv.wait_log(r'\[error\] .*nffi: handler panicked in method "panic": '
                 r'panic: mid-stream', count=2)


def test_stream_request_chunks_until_close_write(nginx, rslib):
    srv = nginx(server=location("/t", rs(READ_ALL + r"""
        for _, cfg in ipairs({ "stream", "stream_async" }) do
            local rt = assert(ngx.load_nonblocking_ffi(RS, cfg))
            -- one chunk back for each written, then the end's answer
            local s = assert(rt:__stream("upper", nil, { window = 4096 }))
            assert(s:write("ab\0c"))
            show(s:read())
            assert(s:write(string.rep("x", 10000)))
            local big = s:read()
            ngx.say(#big, " ", big == string.rep("X", 10000))
            assert(s:write("de"))
            assert(s:close_write())
            ngx.say(read_all(s))
            -- writes from one coroutine while another reads, through
            -- windows smaller than what passes
            s = assert(rt:__stream("upper", nil, { window = 2000 }))
            local writer = ngx.thread.spawn(function()
                for i = 1, 100 do
                    assert(s:write(string.rep(string.char(96 + i % 26), 1000)))
                end
                return s:close_write()
            end)
            local n, last = 0, nil
            while true do
                local chunk, status, msg = s:read()
                if not chunk then
                    ngx.say(n - #last, " ", last, " ", status, " ", msg)
                    break
                end
                n = n + #chunk
                last = chunk
            end
            show(ngx.thread.wait(writer))
        end
        -- std::io::copy from Lua's chunks to the answer's
        local rt = assert(ngx.load_nonblocking_ffi(RS, "stream"))
        local s = assert(rt:__stream("copy"))
        for i = 1, 50 do assert(s:write(string.rep("\0\1\2", 1000))) end
        assert(s:close_write())
        local got = {}
        while true do
            local chunk, status = s:read()
            if not chunk then break end
            got[#got + 1] = chunk
        end
        got = table.concat(got)
        ngx.say(got:sub(1, -13) == string.rep("\0\1\2", 50000), " ",
                got:sub(-12))
    """, rslib)))
    per_cfg = [
        "'AB\x00C'",
        "10000 true",
        "DE,10006 bytes,end 0 nil",
        "100000 100000 bytes 0 nil",
        "true true",
    ]
    assert srv.get("/t").splitlines() == per_cfg * 2 + [
        "true 150000 bytes"]


@pytest.mark.parametrize("cfg", STREAM_CFGS)
def test_stream_window_bounds_a_fast_producer(nginx, rslib, cfg):
    srv = nginx(server=location("/t", rs("local SLOW = %d\n" % SLOW + THREADS
                                         + r"""
        local rt = assert(ngx.load_nonblocking_ffi(RS, "%s"))
        local stats = assert(ngx.load_nonblocking_ffi(RS, "stream_stats"))
        local function counters() return select(2, stats:stats()) end
        -- 64 KB chunks against a 256 KB window
        local s = assert(rt:__stream("bytes", "100,65536",
                                     { window = 262144 }))
        local total = #assert(s:read())
        -- one chunk read, four in the window: the sixth waits for room,
        -- and nothing gets further while nobody reads
        settle(function()
            return counters() == "sent=5 waiting=1 closed=0 running=1"
        end)
        ngx.say(counters())
        while true do
            local chunk, status = s:read()
            if not chunk then ngx.say(total, " ", status) break end
            total = total + #chunk
        end
        ngx.say(counters())
    """ % cfg, rslib)))
    assert srv.get("/t").splitlines() == [
        "sent=5 waiting=1 closed=0 running=1",
        "%d 0" % (100 * 65536),
        "sent=100 waiting=0 closed=0 running=0",
    ]


@pytest.mark.parametrize("cfg", STREAM_CFGS)
def test_stream_client_gone_or_closed_stops_the_handler(nginx, rslib, cfg):
    srv = nginx(server=stats_location(rslib) + location("/t", rs(r"""
        local rt = assert(ngx.load_nonblocking_ffi(RS, "%s"))
        local s = assert(rt:__stream("bytes", "1000000,1000"))
        while true do
            local chunk, err = s:read()
            if not chunk then break end
            ngx.print(chunk)
            if not ngx.flush(true) then break end
        end
    """ % cfg, rslib), extra="lua_check_client_abort on;") + location(
        "/close", rs(r"""
        local rt = assert(ngx.load_nonblocking_ffi(RS, "%s"))
        -- the handler waits in a send (a full window) when Lua gives up
        local s = assert(rt:__stream("bytes", "1000,65536"))
        assert(s:read())
        show(s:close())
        show(s:read())
        -- and in a read of Lua's chunks
        s = assert(rt:__stream("upper"))
        show(s:close())
    """ % cfg, rslib)))
    sock = socket.create_connection(("127.0.0.1", srv.port))
    sock.sendall(b"GET /t HTTP/1.1\r\nHost: x\r\n\r\n")
    assert sock.recv(100)
    wait_for(lambda: stream_stats(srv)["sent"] > 10, 10 * SLOW,
             "chunks to flow")
    sock.close()
    # the handler sees CLOSED in its send, and ends
    wait_for(lambda: stats_are(srv, closed=1, waiting=0, running=0),
             20 * SLOW, "the handler to see the stream closed and stop")
    assert stream_stats(srv)["sent"] < 1000000

    assert srv.get("/close").splitlines() == [
        "true", "nil 'closed'", "true"]
    wait_for(lambda: stats_are(srv, closed=3, waiting=0, running=0),
             20 * SLOW, "both handlers to see their stream closed and stop")


def test_async_streams_wait_without_holding_threads(nginx, rslib):
    srv = nginx(server=stats_location(rslib) + location("/t", rs(
        "local SLOW = %d\n" % SLOW + r"""
        local rt = assert(ngx.load_nonblocking_ffi(RS, "stream_async"))
        -- 20 streams stuck on a full window, never read...
        local stuck = {}
        for i = 1, 20 do
            stuck[i] = assert(rt:__stream("bytes", "100,65536",
                                          { window = 65536 }))
        end
        -- ...while 100 more run at once on tokio's 2 threads: each sends
        -- 10 chunks 20 ms apart (200 ms), together far less than their sum
        ngx.update_time()
        local t0 = ngx.now()
        ngx.say(count_true(100, function(i)
            local s = assert(rt:__stream("count", "10,20", { window = 3 }))
            local n = 0
            while true do
                local chunk, status = s:read()
                if not chunk then return status == 0 and n == 10 end
                n = n + 1
                if chunk ~= n .. "\n" then return false end
            end
        end))
        ngx.update_time()
        ngx.say(ngx.now() - t0 < 2.5 * SLOW)
        for i = 1, 20 do stuck[i]:close() end
    """, rslib)))
    assert srv.get("/t").splitlines() == ["100", "true"]
    wait_for(lambda: stream_stats(srv)["running"] == 0, 20 * SLOW,
             "the stuck streams to stop")
    assert stream_stats(srv)["closed"] == 20
