# SPDX-License-Identifier: BSD-2-Clause

"""Many calls at once, bounded queues, timeouts, unload, misbehaving
runtimes."""

import re

from conftest import location
from harness import MEMCHECK


def test_100_concurrent_coroutines_answered_out_of_order(nginx):
    srv = nginx(server=location("/t", r"""
        local rt = assert(ngx.load_nonblocking_ffi(RUNTIME, "threads=2"))
        local finished = {}
        -- the runtime holds all 100 calls, then answers the last first
        local right = count_true(100, function(i)
            local ok, res = rt:gather("100")
            finished[#finished + 1] = i
            return ok and res == "100"
        end)
        ngx.say(right, " ", finished[1], " ", finished[100])
    """))
    right, first, last = srv.get("/t").split()
    assert right == "100"
    assert int(first) > int(last)


def test_100_concurrent_calls_with_distinct_requests(nginx):
    srv = nginx(server=location("/t", r"""
        local rt = assert(ngx.load_nonblocking_ffi(RUNTIME, "threads=3"))
        -- each answer belongs to its own call
        ngx.say(count_true(100, function(i)
            local req = string.rep(string.char(i), i) .. "\0" .. i
            local ok, res = rt:delay_echo(req)
            return ok and res == req
        end))
    """))
    assert srv.get("/t").strip() == "100"


def test_batch_polling_runtime(nginx):
    srv = nginx(server=location("/t", r"""
        local rt = assert(ngx.load_nonblocking_ffi(RUNTIME,
                                                   "threads=2,batch=16"))
        ngx.say(count_true(200, function(i)
            local ok, res = rt:echo(tostring(i))
            return ok and res == tostring(i)
        end))
    """))
    assert srv.get("/t").strip() == "200"


def test_queue_full_is_exact_and_recovers(nginx):
    srv = nginx(server=location("/t", r"""
        local rt = assert(ngx.load_nonblocking_ffi(RUNTIME, "queue=3",
                                                   { max_queue = 3 }))
        local threads = {}
        for i = 1, 3 do
            threads[i] = ngx.thread.spawn(function()
                return rt:delay("300")
            end)
        end
        -- three calls posted and unanswered: the fourth is refused
        show(rt:__pending(), rt:echo("fourth"))
        for i = 1, 3 do show(ngx.thread.wait(threads[i])) end
        show(rt:__pending(), rt:echo("usable again"))
    """))
    assert srv.get("/t").splitlines() == [
        "3 false 'queue full'",
        "true true '300'", "true true '300'", "true true '300'",
        "0 true 'usable again'",
    ]


def test_timeout_then_late_answer_is_dropped(nginx):
    srv = nginx(server=location("/t", r"""
        local rt = assert(ngx.load_nonblocking_ffi(RUNTIME, "threads=2"))
        show(rt:delay("400", 0.1))
        show(rt:__pending())
        -- the late answer arrives and is freed; the next calls are normal
        while rt:__pending() > 0 do ngx.sleep(0.01) end
        show(rt:echo("after"))
        show(rt:never(nil, 0.05))
    """))
    assert srv.get("/t").splitlines() == [
        "false 'timeout'", "1", "true 'after'", "false 'timeout'"]


def test_default_timeout_from_opts(nginx):
    srv = nginx(server=location("/t", r"""
        local rt = assert(ngx.load_nonblocking_ffi(RUNTIME, "t",
                                                   { timeout = 0.05 }))
        show(rt:never())
        show(rt:delay("10", 2))
    """))
    assert srv.get("/t").splitlines() == ["false 'timeout'", "true '10'"]


def test_runtime_learns_that_the_caller_gave_up(nginx):
    srv = nginx(server=location("/t", r"""
        local rt = assert(ngx.load_nonblocking_ffi(RUNTIME, "threads=2"))
        show(rt:wait_cancel(nil, 0.05))
        while rt:__pending() > 0 do ngx.sleep(0.01) end
        local _, stats = rt:stats()
        ngx.say(stats:match("cancels_seen=%d+"))
    """))
    assert srv.get("/t").splitlines() == ["false 'timeout'",
                                          "cancels_seen=1"]


def test_runtime_answering_twice_is_an_alert_not_a_crash(nginx):
    srv = nginx(server=location("/t", r"""
        local rt = assert(ngx.load_nonblocking_ffi(RUNTIME))
        for i = 1, 20 do
            local ok, res = rt:twice()
            if not ok or res ~= "first" then ngx.say("bad ", res) end
            show(rt:echo("next " .. i) == true)
        end
    """))
    srv.expect(r"\[alert\].*respond on a task that is not waiting for an "
               r"answer \(answered twice\?\), answer dropped")
    assert srv.get("/t").splitlines() == ["true"] * 20
    srv.wait_log(r"answered twice", count=20)


def test_calls_reach_the_runtime_in_the_order_they_were_made(nginx):
    # a call alone in flight is queued at once, the calls made while others
    # are in flight together at the end of the event loop's pass: one
    # poller sees them all in the callers' order, across passes too
    srv = nginx(server=location("/t", r"""
        local rt = assert(ngx.load_nonblocking_ffi(RUNTIME, "threads=1,o"))
        local threads = {}
        for i = 1, 60 do
            threads[i] = ngx.thread.spawn(function()
                return rt:taken_as()
            end)
            if i % 20 == 0 then
                ngx.sleep(0)
            end
        end
        local places = {}
        for i = 1, 60 do
            local _, ok, place = ngx.thread.wait(threads[i])
            places[i] = ok and tonumber(place)
        end
        local in_order = 0
        for i = 2, 60 do
            if places[i] and places[i] == places[i - 1] + 1 then
                in_order = in_order + 1
            end
        end
        ngx.say(in_order)
    """))
    assert srv.get("/t").strip() == "59"


def test_unload_answers_queued_calls_then_all_pollers_see_null(nginx):
    srv = nginx(server=location("/t", r"""
        local stats = assert(ngx.load_nonblocking_ffi(RUNTIME, "stats"))
        local rt = assert(ngx.load_nonblocking_ffi(RUNTIME, "threads=3"))
        local threads = {}
        for i = 1, 9 do
            threads[i] = ngx.thread.spawn(function()
                return rt:block("100")
            end)
        end
        -- 3 calls being handled, 6 still queued when unload comes
        rt:__unload()
        show(rt:__pending() > 0, rt:echo("after unload"))
        local answered = 0
        for i = 1, 9 do
            local _, ok, res = ngx.thread.wait(threads[i])
            if ok and res == "100" then answered = answered + 1 end
        end
        ngx.say("answered ", answered)
        local deadline = ngx.now() + 10
        local ended
        repeat
            ngx.sleep(0.01)
            ngx.update_time()
            ended = select(2, stats:stats()):match("pollers_ended=(%d+)")
        until ended == "3" or ngx.now() > deadline
        ngx.say("pollers ended ", ended)
        -- loading the same key again makes a new runtime
        local again = assert(ngx.load_nonblocking_ffi(RUNTIME, "threads=3"))
        show(again ~= rt, again:echo("again"))
    """))
    assert srv.get("/t").splitlines() == [
        "true false 'unloaded'", "answered 9", "pollers ended 3",
        "true true 'again'"]


def test_unload_answers_calls_made_just_before_it(nginx):
    # the first call is queued at once; the others wait for the end of the
    # event loop's pass, which comes after the unload: they must reach the
    # queue before it closes, or the poller sees the end without them
    srv = nginx(server=location("/t", r"""
        local ffi = require "ffi"
        ffi.cdef "int nffi_test_pollers_ended(void);"
        local lib = ffi.load(RUNTIME)
        local ended = lib.nffi_test_pollers_ended()
        local rt = assert(ngx.load_nonblocking_ffi(RUNTIME, "threads=1,u"))
        local threads = {}
        for i = 1, 5 do
            threads[i] = ngx.thread.spawn(function()
                return rt:echo("call " .. i, 5)
            end)
        end
        rt:__unload()
        -- no yield until the poller is gone
        local deadline = ngx.now() + 10
        while lib.nffi_test_pollers_ended() == ended
              and ngx.now() < deadline do
            ngx.update_time()
        end
        for i = 1, 5 do
            local _, ok, res = ngx.thread.wait(threads[i])
            ngx.say(ok, " ", res)
        end
    """))
    assert srv.get("/t").splitlines() == [
        "true call %d" % i for i in range(1, 6)]


def test_40_runtimes_in_one_worker(nginx):
    srv = nginx(server=location("/t", r"""
        local rts = {}
        for i = 1, 40 do
            rts[i] = assert(ngx.load_nonblocking_ffi(RUNTIME, "n=" .. i))
        end
        ngx.say(count_true(40, function(i)
            local ok, res = rts[i]:echo("runtime " .. i)
            return ok and res == "runtime " .. i
        end))
    """))
    assert srv.get("/t").strip() == "40"
    assert srv.log().count("nonblocking_ffi: loaded runtime") == 40


def test_runtime_log_messages_reach_the_error_log(nginx):
    srv = nginx(log_level="info", server=location("/t", r"""
        local rt = assert(ngx.load_nonblocking_ffi(RUNTIME))
        show(rt:log("4 an error from the runtime"))
        show(rt:log("5 a warning from the runtime"))
        show(rt:log("8 a debug line that info level filters"))
    """))
    assert srv.get("/t").splitlines() == ["true 'logged'"] * 3
    srv.wait_log(r"\[error\] \d+#\d+: an error from the runtime")
    srv.wait_log(r"\[warn\] \d+#\d+: a warning from the runtime")
    assert "a debug line" not in srv.log()


def test_many_sequential_calls_do_not_grow_memory(nginx):
    """Pooled tasks: steady state allocates nothing per call in C."""
    srv = nginx(server=location("/t", r"""
        local rt = assert(ngx.load_nonblocking_ffi(RUNTIME))
        local n = tonumber(ngx.var.arg_n)
        for i = 1, n do
            local ok = rt:echo("payload")
            if not ok then ngx.say("failed") return end
        end
        ngx.say("ok")
    """))
    n = 200 if MEMCHECK else 5000
    assert srv.get("/t?n=%d" % n).strip() == "ok"
    if MEMCHECK:
        return
    worker = srv.worker_pids()[0]

    def rss():
        with open("/proc/%d/status" % worker) as f:
            return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))

    before = rss()
    assert srv.get("/t?n=%d" % (n * 10)).strip() == "ok"
    # 50k calls; a leak of even 20 bytes per call would show as 1 MB
    assert rss() - before < 1024
