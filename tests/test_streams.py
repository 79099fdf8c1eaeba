# SPDX-License-Identifier: BSD-2-Clause

"""Streams: runtime:__stream(), chunks both ways, the window, giving up
(tests/runtimes/test_runtime.c, its stream_* methods)."""

import signal
import socket

import pytest

from conftest import (GO, GO_DICT, READ_ALL, STATS, WAIT_FOR_GO, counter,
                      location)
from harness import SLOW, wait_for


def test_chunks_arrive_in_order_then_the_final_status(nginx):
    srv = nginx(server=location("/t", READ_ALL + r"""
        local rt = assert(ngx.load_nonblocking_ffi(RUNTIME, "threads=2"))
        local s = assert(rt:__stream("stream_count", "3,5"))
        ngx.say(read_all(s))
        -- the end is repeated, and writing is over
        show(s:read())
        show(s:write("x"))
        show(s:close())
        -- a last chunk in the answer comes before the end
        s = assert(rt:__stream("stream_count", "2,1,0,done"))
        ngx.say(read_all(s))
        -- a runtime error after a chunk
        s = assert(rt:__stream("stream_error"))
        ngx.say(read_all(s))
        -- an ordinary method answers a stream in one chunk
        s = assert(rt:__stream("echo", "a\0b"))
        show(s:read())
        show(s:read())
        -- and a stream method of the example is still an ordinary call
        show(rt:echo("plain"))
    """))
    assert srv.get("/t").splitlines() == [
        "5a,5b,5c,end 0 nil",
        "nil 0",
        "nil 'answered'",
        "true",
        "1a,1b,4d,end 0 nil",
        "7p,end 7 failed midway",
        "'a\x00b'",
        "nil 0",
        "true 'plain'",
    ]


def test_large_streams_are_binary_safe_and_counted(nginx):
    srv = nginx(server=location("/t", READ_ALL + r"""
        local rt = assert(ngx.load_nonblocking_ffi(RUNTIME, "threads=1"))
        local before = rt:__stats()
        local s = assert(rt:__stream("stream_count", "64,65536"))
        local total = 0
        while true do
            local chunk, status = s:read()
            if not chunk then ngx.say("status ", status) break end
            total = total + #chunk
        end
        ngx.say("bytes ", total)
        s = assert(rt:__stream("stream_echo"))
        local sent = {}
        for i = 1, 20 do
            sent[i] = string.rep(string.char(i - 1), i * 1000)
            assert(s:write(sent[i]))
        end
        assert(s:close_write())
        local got = {}
        while true do
            local chunk, status, msg = s:read()
            if not chunk then ngx.say("end ", status, " ", msg) break end
            got[#got + 1] = chunk
        end
        ngx.say(table.concat(got) == table.concat(sent))
        local after = rt:__stats()
        ngx.say(after.bytes_out - before.bytes_out, " ",
                after.bytes_in - before.bytes_in, " ",
                after.answered_ok - before.answered_ok)
    """))
    echoed = sum(i * 1000 for i in range(1, 21))
    assert srv.get("/t").splitlines() == [
        "status 0", "bytes %d" % (64 * 65536), "end 0 nil", "true",
        "%d %d 2" % (64 * 65536 + echoed, echoed + len("64,65536"))]


def test_a_runtime_waits_while_lua_does_not_read(nginx):
    srv = nginx(http=GO_DICT, server=STATS + GO + location("/t", r"""
        local rt = assert(ngx.load_nonblocking_ffi(RUNTIME, "threads=1"))
        -- 64 KB chunks against a 256 KB window
        local s = assert(rt:__stream("stream_count", "100,65536",
                                     { window = 262144, timeout = 3600 }))
        local first = assert(s:read())
        ngx.say(#first)
        ngx.flush(true)
        -- the test looks at the runtime until it says go
    """ + WAIT_FOR_GO + r"""
        local total = #first
        while true do
            local chunk, status = s:read()
            if not chunk then ngx.say("status ", status) break end
            total = total + #chunk
        end
        ngx.say("bytes ", total)
    """))
    conn, resp = srv.open("/t", timeout=60)
    assert resp.readline().strip() == b"65536"
    # the runtime sent what the window holds, one chunk was read, and it
    # now waits in a send: it cannot get further while nobody reads
    wait_for(lambda: counter(srv, "sends_waiting") == 1, 10 * SLOW,
             "the runtime to wait for the window")
    sent = counter(srv, "chunks_sent")
    assert sent <= 1 + 262144 // 65536
    assert counter(srv, "sends_waiting") == 1
    srv.get("/go")
    rest = resp.read().decode().splitlines()
    conn.close()
    assert rest == ["status 0", "bytes %d" % (100 * 65536)]


def test_lua_writes_wait_while_the_runtime_does_not_read(nginx):
    srv = nginx(server=location("/t", r"""
        local rt = assert(ngx.load_nonblocking_ffi(RUNTIME, "threads=1"))
        -- the runtime reads a chunk every 20 ms; the window holds two
        local s = assert(rt:__stream("stream_sink", "20",
                                     { window = 20000 }))
        local t0 = ngx.now()
        for i = 1, 10 do
            assert(s:write(string.rep("x", 10000)))
        end
        ngx.update_time()
        -- ten chunks through a window of two: the writer waited
        ngx.say(ngx.now() - t0 >= 0.1)
        assert(s:close_write())
        show(s:read())
        -- a write larger than the window passes alone
        s = assert(rt:__stream("stream_sink", "0", { window = 10 }))
        show(s:write(string.rep("y", 1000)))
        show(s:write(""))
        assert(s:close_write())
        show(s:write("late"))
        show(s:read())
    """))
    # the runtime's answer (the bytes it read) is the last chunk
    assert srv.get("/t").splitlines() == [
        "true", "'100000'", "true", "true", "nil 'closed for writing'",
        "'1000'"]


def test_reading_and_writing_from_two_coroutines(nginx):
    srv = nginx(server=location("/t", r"""
        local rt = assert(ngx.load_nonblocking_ffi(RUNTIME, "threads=1"))
        -- an echo through small windows: neither side may finish alone
        local s = assert(rt:__stream("stream_echo", nil, { window = 4096 }))
        local writer = ngx.thread.spawn(function()
            for i = 1, 200 do
                local ok, err = s:write(string.rep(string.char(65 + i % 26),
                                                   1000))
                if not ok then return err end
            end
            s:close_write()
            return "written"
        end)
        local got, first = 0, nil
        while true do
            local chunk, status, msg = s:read()
            if not chunk then ngx.say("end ", status, " ", msg) break end
            got = got + #chunk
        end
        ngx.say(got, " ", select(2, ngx.thread.wait(writer)))
    """))
    assert srv.get("/t").splitlines() == ["end 0 nil", "200000 written"]


@pytest.mark.parametrize("late_ms", [0, 300])
def test_the_non_blocking_forms_wait_on_the_streams_fd(nginx, late_ms):
    # late: what the first AGAIN waited for came before the fd was made
    srv = nginx(server=location("/t", r"""
        local rt = assert(ngx.load_nonblocking_ffi(RUNTIME, "threads=1"))
        local s = assert(rt:__stream("stream_try", "50,30000,%d",
                                     { window = 65536 }))
        -- the runtime reads first: it waits until these come
        ngx.sleep(0.05)
        for i = 1, 5 do assert(s:write(string.rep("z", 1000))) end
        ngx.sleep(0.05)
        assert(s:close_write())
        -- it sends 1.5 MB through a 64 KB window: it waits for room
        local total, last = 0, nil
        while true do
            local chunk, status = s:read()
            if not chunk then ngx.say("end ", status) break end
            total = total + #chunk
            last = chunk
            if total < 200000 then ngx.sleep(0.001) end
        end
        -- its answer is the last chunk
        ngx.say(total - #last, " ", last)
    """ % late_ms))
    lines = srv.get("/t").splitlines()
    assert lines[0] == "end 0"
    assert lines[1].startswith("%d read=5000 waits=" % (50 * 30000))
    # it waited for Lua's chunks and for room, and was woken every time
    assert int(lines[1].split("waits=")[1]) >= 2


def test_a_reader_and_a_sender_wait_on_one_fd_at_once(nginx):
    srv = nginx(server=location("/t", r"""
        local rt = assert(ngx.load_nonblocking_ffi(RUNTIME, "threads=1"))
        -- small windows: the runtime's reader and sender threads both wait
        -- on the stream's fd, often at the same time
        local s = assert(rt:__stream("stream_duplex", "200,1000",
                                     { window = 2000 }))
        local writer = ngx.thread.spawn(function()
            for i = 1, 200 do
                assert(s:write(string.rep("w", 1000)))
            end
            return s:close_write()
        end)
        local total, last = 0, nil
        while true do
            local chunk, status, msg = s:read()
            if not chunk then ngx.say("end ", status, " ", msg) break end
            total = total + #chunk
            last = chunk
        end
        ngx.say(total - #last, " ", last, " ",
                select(2, ngx.thread.wait(writer)))
    """))
    assert srv.get("/t").splitlines() == [
        "end 0 nil", "200000 read=200000 true"]


def test_timeouts_idle_and_overall(nginx):
    srv = nginx(server=STATS + location("/t", r"""
        local slow = %d
        local rt = assert(ngx.load_nonblocking_ffi(RUNTIME, "threads=2"))
        -- a chunk every 300 ms: an idle timeout of 50 ms passes, the stream
        -- stays open and the next read gets the chunk
        local s = assert(rt:__stream("stream_count", "2,3," .. 300 * slow,
                                     { idle_timeout = 0.05 * slow }))
        show(s:read())
        show(s:read(1 * slow))
        s:close()
        -- an overall timeout ends the stream, and the runtime's next send
        -- fails
        s = assert(rt:__stream("stream_count", "5,3," .. 200 * slow,
                               { timeout = 0.3 * slow }))
        local chunks = 0
        while true do
            local chunk, err = s:read()
            if not chunk then ngx.say("stopped: ", err) break end
            chunks = chunks + 1
        end
        ngx.say(chunks)
        show(s:read())
        show(s:write("x"))
        show(s:close())
        ngx.say(rt:__stats().failed.timeout)
    """ % SLOW))
    assert srv.get("/t").splitlines() == [
        "nil 'timeout'", "'aaa'", "stopped: timeout", "1",
        "nil 'timeout'", "nil 'closed'", "true", "1"]
    wait_for(lambda: counter(srv, "closed_seen") >= 2, 10 * SLOW,
             "the runtimes' sends to fail")


def test_close_and_garbage_wake_a_runtime_blocked_in_a_send(nginx):
    srv = nginx(server=STATS + location("/t", r"""
        local rt = assert(ngx.load_nonblocking_ffi(RUNTIME, "threads=1"))
        local s = assert(rt:__stream("stream_count", "1000,65536"))
        assert(s:read())
        local arg = ngx.var.arg_how
        if arg == "close" then
            show(s:close())
            show(s:read())
        else
            s = nil
            collectgarbage()
            collectgarbage()
            ngx.say("collected")
        end
    """))
    before = counter(srv, "closed_seen")
    assert srv.get("/t?how=close").splitlines() == ["true", "nil 'closed'"]
    wait_for(lambda: counter(srv, "closed_seen") == before + 1, 10 * SLOW,
             "the runtime's send to fail after close()")
    assert srv.get("/t?how=gc").splitlines() == ["collected"]
    wait_for(lambda: counter(srv, "closed_seen") == before + 2, 10 * SLOW,
             "the runtime's send to fail after the stream was collected")
    wait_for(lambda: counter(srv, "sends_waiting") == 0, 10 * SLOW,
             "no send left waiting")


def test_a_client_that_goes_away_closes_its_stream(nginx):
    srv = nginx(server=STATS + location("/t", r"""
        local rt = assert(ngx.load_nonblocking_ffi(RUNTIME, "threads=1"))
        local s = assert(rt:__stream("stream_count", "100000,1000,5"))
        while true do
            local chunk, err = s:read()
            if not chunk then break end
            ngx.print(chunk)
            local ok = ngx.flush(true)
            if not ok then break end
        end
    """, extra="lua_check_client_abort on;"))
    before = counter(srv, "closed_seen")
    sock = socket.create_connection(("127.0.0.1", srv.port))
    sock.sendall(b"GET /t HTTP/1.1\r\nHost: x\r\n\r\n")
    assert sock.recv(100)
    sock.close()
    wait_for(lambda: counter(srv, "closed_seen") == before + 1, 20 * SLOW,
             "the runtime to see the stream closed")


def test_bad_arguments_and_misuse(nginx):
    srv = nginx(server=location("/t", r"""
        local rt = assert(ngx.load_nonblocking_ffi(RUNTIME, "threads=1"))
        show(rt.__stream("echo"))
        show(rt:__stream(nil))
        show(rt:__stream("__x"))
        show(rt:__stream("echo", 42))
        show(rt:__stream("echo", nil, 5))
        show(rt:__stream("echo", nil, { window = 0 }))
        show(rt:__stream("echo", nil, { window = 1.5 }))
        show(rt:__stream("echo", nil, { timeout = -1 }))
        show(rt:__stream("echo", nil, { idle_timeout = "x" }))
        show(ngx.load_nonblocking_ffi(RUNTIME, "w", { window = 0 }))
        show(ngx.load_nonblocking_ffi(RUNTIME, "w", { window = "1" }))
        local s = assert(rt:__stream("stream_sink", "0"))
        show(s.read())
        show(s:read(0))
        show(s:write(42))
        show(s:write())
        s:close()
        show(s:write("x"))
        show(s:read())
        show(s:close())
        -- the runtime's stream calls on an ordinary task, and misused
        show(rt:stream_misuse())
        s = assert(rt:__stream("stream_misuse"))
        show(s:read())
        show(s:read())
        local other = assert(ngx.load_nonblocking_ffi(RUNTIME, "other"))
        other:__unload()
        show(other:__stream("echo"))
    """))
    srv.expect(r"\[alert\].*stream_(send|read|try_read) on something that "
               r"is not a stream task")
    srv.expect(r"\[alert\].*stream_send with a negative length")
    srv.expect(r"\[alert\].*stream_read without room for the chunk")
    srv.expect(r"\[alert\].*stream_fd on something that is not a stream")
    assert srv.get("/t").splitlines() == [
        "nil 'bad runtime: call it as runtime:__stream(method, req, opts)'",
        "nil 'bad method: string not starting with __ expected'",
        "nil 'bad method: string not starting with __ expected'",
        "nil 'bad request: string or nil expected, got number'",
        "nil 'bad opts: table or nil expected'",
        "nil 'bad opts.window: integer from 1 to 2147483647 expected'",
        "nil 'bad opts.window: integer from 1 to 2147483647 expected'",
        "nil 'bad opts.timeout: 0.001 to 2147483 seconds expected'",
        "nil 'bad opts.idle_timeout: 0.001 to 2147483 seconds expected'",
        "nil 'bad opts.window: integer from 1 to 2147483647 expected'",
        "nil 'bad opts.window: integer from 1 to 2147483647 expected'",
        "nil 'bad stream: call it as stream:read(timeout)'",
        "nil 'bad timeout: 0.001 to 2147483 seconds expected'",
        "nil 'bad chunk: string expected, got number'",
        "nil 'bad chunk: string expected, got nil'",
        "nil 'closed'",
        "nil 'closed'",
        "true",
        "true '0 -3 -3 -3 -1'",
        "'1 -3 -3 -3 0'",
        "nil 0",
        "nil 'unloaded'",
    ]


def test_a_stream_of_an_unloaded_runtime_runs_to_its_end(nginx):
    srv = nginx(server=location("/t", READ_ALL + r"""
        local rt = assert(ngx.load_nonblocking_ffi(RUNTIME, "threads=1"))
        local s = assert(rt:__stream("stream_count", "20,100,10"))
        rt:__unload()
        ngx.say(read_all(s))
    """))
    out = srv.get("/t")
    assert out.count("100") == 20 and out.endswith("end 0 nil\n")


def test_worker_exit_wakes_a_runtime_blocked_in_a_send(nginx):
    srv = nginx(server=STATS + location("/t", r"""
        local rt = assert(ngx.load_nonblocking_ffi(RUNTIME, "threads=1"))
        local s = assert(rt:__stream("stream_count", "1000,65536"))
        ngx.print(assert(s:read()))
        ngx.flush(true)
        ngx.sleep(3600)
    """))
    conn, resp = srv.open("/t")
    assert len(resp.fp.read(65536)) == 65536
    wait_for(lambda: counter(srv, "sends_waiting") == 1, 10 * SLOW,
             "the runtime to wait for the window")
    # the worker exits at once (TERM) with the send blocked: it must not
    # hang there
    srv.signal(signal.SIGTERM)
    srv.proc.wait(20 * SLOW)
    conn.close()


def test_streams_from_a_timer_and_the_access_phase(nginx):
    srv = nginx(http="lua_shared_dict test 1m;", server=STATS + location(
        "/timer", r"""
        ngx.timer.at(0, function()
            local rt = assert(ngx.load_nonblocking_ffi(RUNTIME, "threads=1"))
            local s = assert(rt:__stream("stream_count", "3,2"))
            local got = {}
            while true do
                local chunk, status = s:read()
                if not chunk then got[#got + 1] = status break end
                got[#got + 1] = chunk
            end
            -- a stream left open ends with its timer
            assert(rt:__stream("stream_count", "1000,65536"):read())
            ngx.shared.test:set("timer", table.concat(got, " "))
        end)
        ngx.say("started")
    """) + location("/wait", r"""
        ngx.say(ngx.shared.test:get("timer"))
    """) + location("/access", r"""
        local rt = assert(ngx.load_nonblocking_ffi(RUNTIME, "threads=1"))
        local s = assert(rt:__stream("stream_count", "2,1"))
        ngx.ctx.got = assert(s:read()) .. assert(s:read())
        show(s:read())
        ngx.exit(ngx.HTTP_OK)
    """, phase="access_by_lua_block"))
    before = counter(srv, "closed_seen")
    assert srv.get("/timer") == "started\n"
    wait_for(lambda: srv.get("/wait") == "aa bb cc 0\n", 10 * SLOW,
             "the timer's stream")
    wait_for(lambda: counter(srv, "closed_seen") == before + 1, 10 * SLOW,
             "the stream the timer left open to close with it")
    status, body = srv.request("/access")
    assert (status, body) == (200, b"nil 0\n")
