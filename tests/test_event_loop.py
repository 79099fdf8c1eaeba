# SPDX-License-Identifier: BSD-2-Clause

"""Runtimes that poll from an event loop of their own: the queue's fd and
task_take(), alone and beside blocking pollers (tests/runtimes, loops=N);
and runtimes that take or arm and wait on the queue's wait fd, as Go's
pollers do (armed=N)."""

import pytest

from conftest import STATS, counter, location
from harness import SLOW, wait_for

# the two kinds of poller that wait on an fd of their own
KINDS = ["loops", "armed"]


@pytest.mark.parametrize("kind", KINDS)
def test_event_loop_answers_binary_and_concurrent_calls(nginx, kind):
    srv = nginx(server=STATS + location("/t", r"""
        local rt = assert(ngx.load_nonblocking_ffi(RUNTIME,
                                                   "threads=0,%s=1"))
        show(rt:echo("a\0b"))
        local big = string.rep("x", 4 * 1024 * 1024)
        local ok, res = rt:echo(big)
        ngx.say(ok, " ", res == big)
        ngx.say(count_true(200, function(i)
            local ok, res = rt:echo("call " .. i)
            return ok and res == "call " .. i
        end))
    """ % kind))
    before = counter(srv, "loop_wakes")
    assert srv.get("/t").splitlines() == [
        "true 'a\x00b'", "true true", "200"]
    # each wake found work or followed one that did: no busy loop
    assert counter(srv, "loop_wakes") - before <= 202


@pytest.mark.parametrize("pollers", ["threads=1,loops=2",
                                     "threads=1,loops=1,armed=2"])
def test_event_loops_and_blocking_pollers_share_a_queue(nginx, pollers):
    srv = nginx(server=location("/t", r"""
        local rt = assert(ngx.load_nonblocking_ffi(RUNTIME,
            "%s,batch=8", { spin = 50 }))
        -- the runtime holds 100 calls until all are there, so every
        -- poller of the queue takes some and none may lose one
        ngx.say(count_true(100, function(i)
            local ok, res = rt:gather("100")
            return ok and res == "100"
        end))
        ngx.say(count_true(500, function(i)
            local ok, res = rt:echo(tostring(i))
            return ok and res == tostring(i)
        end))
    """ % pollers))
    assert srv.get("/t").splitlines() == ["100", "500"]


@pytest.mark.parametrize("kind", KINDS)
def test_unload_wakes_every_event_loop(nginx, kind):
    srv = nginx(server=STATS + location("/t", r"""
        -- idle: its pollers wait on their fd when unload comes
        local idle = assert(ngx.load_nonblocking_ffi(RUNTIME,
                                                     "threads=0,%s=3"))
        show(idle:echo("x"))
        idle:__unload()
        local busy = assert(ngx.load_nonblocking_ffi(RUNTIME,
                                                     "threads=0,%s=3,n=2"))
        local threads = {}
        for i = 1, 6 do
            threads[i] = ngx.thread.spawn(function()
                return busy:block("50")
            end)
        end
        -- calls being handled and queued when unload comes are answered
        busy:__unload()
        local answered = 0
        for i = 1, 6 do
            local _, ok, res = ngx.thread.wait(threads[i])
            if ok and res == "50" then answered = answered + 1 end
        end
        ngx.say("answered ", answered)
    """ % (kind, kind)))
    before = counter(srv, "pollers_ended")
    assert srv.get("/t").splitlines() == ["true 'x'", "answered 6"]
    wait_for(lambda: counter(srv, "pollers_ended") - before == 6, 10 * SLOW,
             "the six pollers to end after unload")


def test_event_loop_calls_with_bad_arguments_fail_with_an_alert(nginx):
    srv = nginx(server=location("/t", r"""
        local rt = assert(ngx.load_nonblocking_ffi(RUNTIME, "misuse"))
        show(rt:take_misuse())
    """))
    srv.expect(r"\[alert\].*nonblocking_ffi: (queue_fd|queue_wait_fd|"
               r"task_poll or task_take) (on something that is not a "
               r"runtime queue|without room for a task)")
    assert srv.get("/t").strip() == "true '-1 -1 -1 -1 -1 -1'"
    log = srv.log()
    assert ("[alert]" in log and "nonblocking_ffi: queue_fd on something "
            "that is not a runtime queue" in log)
    assert ("nonblocking_ffi: task_poll or task_take on something that is "
            "not a runtime queue" in log)
    assert ("nonblocking_ffi: task_poll or task_take without room for a "
            "task" in log)
    assert ("nonblocking_ffi: queue_wait_fd on something that is not a "
            "runtime queue" in log)


def test_a_blocked_armed_poller_leaves_calls_to_the_other(nginx):
    srv = nginx(server=location("/t", r"""
        local rt = assert(ngx.load_nonblocking_ffi(RUNTIME,
                                                   "threads=0,armed=2"))
        show(rt:echo("warm"))
        local slow = ngx.thread.spawn(function() return rt:block("1000") end)
        ngx.sleep(0.05)
        ngx.update_time()
        local started = ngx.now()
        show(rt:echo("fast"))
        ngx.update_time()
        ngx.say(ngx.now() - started < 0.5)
        show(select(2, ngx.thread.wait(slow)))
    """))
    assert srv.get("/t").splitlines() == [
        "true 'warm'", "true 'fast'", "true", "true '1000'"]
