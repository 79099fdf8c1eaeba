# SPDX-License-Identifier: BSD-2-Clause

"""Phases, aborted clients, reloads, worker exit and signals."""

import signal
import socket
import threading

import pytest

from conftest import location
from harness import (MEMCHECK, SLOW, TEST_RUNTIME,
                     check_signals_reach_nginx, wait_for)

needs_master = pytest.mark.skipif(
    MEMCHECK, reason="memcheck runs nginx with master_process off")

RESULTS = location("/results", r"""
    local results = ngx.shared.results
    for _, key in ipairs(results:get_keys()) do
        ngx.say(key, ": ", results:get(key))
    end
""")


def pending_location(cfg):
    return location("/pending", r"""
        local rt = assert(ngx.load_nonblocking_ffi(RUNTIME, "%s"))
        ngx.say(rt:__pending())
    """ % cfg)


def wait_pending(srv, count):
    wait_for(lambda: int(srv.get("/pending")) == count, 10 * SLOW,
             "%d calls in flight" % count)


def results(srv, count):
    """The shared dict's lines once it holds `count` entries."""
    def ready():
        lines = srv.get("/results").splitlines()
        return lines if len(lines) >= count else None
    return sorted(wait_for(ready, 10 * SLOW, "%d results" % count))


def test_calls_from_phases_that_cannot_yield(nginx):
    record = r"""
        local rt = assert(ngx.load_nonblocking_ffi("%s"))
        local ok, err = rt:echo("x")
        ngx.shared.results:set(ngx.get_phase(), tostring(ok) .. " " .. err)
    """ % TEST_RUNTIME
    srv = nginx(server=location("/t", 'ngx.say("body")', extra=(
        "header_filter_by_lua_block { %s }\n"
        "log_by_lua_block { %s }\n") % (record, record)) + RESULTS)
    assert srv.get("/t").strip() == "body"
    assert results(srv, 2) == [
        "header_filter: false cannot yield in the header_filter phase",
        "log: false cannot yield in the log phase",
    ]


def test_calls_from_server_rewrite_are_refused_before_posting(nginx):
    # lua-nginx-module 0.10.23 refuses ngx.semaphore waits there: the call
    # must not reach the runtime
    srv = nginx(server="""
        server_rewrite_by_lua_block {
            local rt = assert(ngx.load_nonblocking_ffi("%s", "sr"))
            local ok, err = rt:echo("x")
            ngx.shared.results:set("server_rewrite",
                                   tostring(ok) .. " " .. err .. " "
                                   .. rt:__pending())
        }
    """ % TEST_RUNTIME + RESULTS)
    assert results(srv, 1) == [
        "server_rewrite: false cannot yield in the server_rewrite phase 0"]


def test_calls_from_init_worker_and_from_a_timer(nginx):
    srv = nginx(init_worker=r"""
        local rt = assert(ngx.load_nonblocking_ffi("%s"))
        local ok, err = rt:echo("x")
        ngx.shared.results:set("init_worker", tostring(ok) .. " " .. err)
        ngx.timer.at(0, function()
            local ok, res = rt:delay("20")
            ngx.shared.results:set("timer", tostring(ok) .. " " .. res)
        end)
    """ % TEST_RUNTIME, server=RESULTS)
    assert results(srv, 2) == [
        "init_worker: false cannot yield in the init_worker phase",
        "timer: true 20",
    ]


def test_rewrite_and_access_phases_can_call(nginx):
    call = r"""
        local rt = assert(ngx.load_nonblocking_ffi("%s"))
        local ok, res = rt:echo(ngx.get_phase())
        ngx.shared.results:set(ngx.get_phase(), tostring(ok) .. " " .. res)
    """ % TEST_RUNTIME
    srv = nginx(server=location("/t", 'ngx.say("body")', extra=(
        "rewrite_by_lua_block { %s }\naccess_by_lua_block { %s }\n")
        % (call, call)) + RESULTS)
    assert srv.get("/t").strip() == "body"
    assert results(srv, 2) == ["access: true access",
                               "rewrite: true rewrite"]


def test_client_abort_mid_call(nginx):
    # each call lasts until all ten are in flight, also under valgrind
    slow = location("/slow", r"""
        local rt = assert(ngx.load_nonblocking_ffi(RUNTIME, "threads=2"))
        local ok, res = rt:delay("%d")
        ngx.shared.results:set("finished", "yes")
        ngx.say(res)
    """ % (300 * SLOW), extra="lua_check_client_abort on;")
    srv = nginx(server=slow + pending_location("threads=2")
                + location("/t", r"""
        local rt = assert(ngx.load_nonblocking_ffi(RUNTIME, "threads=2"))
        -- all of the aborted calls got their (late) answers
        local deadline = ngx.now() + %d
        while rt:__pending() > 0 and ngx.now() < deadline do
            ngx.sleep(0.01)
            ngx.update_time()
        end
        -- the killed coroutines' tasks go back to the pool; their
        -- semaphores got answers nobody waited for: none may wake a later
        -- call early
        collectgarbage()
        local right = 0
        for i = 1, 64 do
            local ok, res = rt:delay_echo("call " .. i)
            if ok and res == "call " .. i then right = right + 1 end
        end
        show(rt:__pending(), right, rt:echo("still fine"))
    """ % (10 * SLOW)) + RESULTS)
    for i in range(10):
        s = socket.create_connection(("127.0.0.1", srv.port))
        s.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        # closing once the call is in flight aborts the coroutine mid-wait
        wait_pending(srv, i + 1)
        s.close()
    assert srv.get("/t").strip() == "0 64 true 'still fine'"
    # no coroutine survived its client
    assert "finished" not in srv.get("/results")
    srv.wait_log(r"client prematurely closed connection", count=10)


@needs_master
def test_hup_reload_with_20_calls_in_flight(nginx):
    srv = nginx(server=location("/slow", r"""
        local rt = assert(ngx.load_nonblocking_ffi(RUNTIME, "threads=2"))
        ngx.say(select(2, rt:delay("700")))
    """) + location("/t", r"""
        local rt = assert(ngx.load_nonblocking_ffi(RUNTIME, "threads=2"))
        show(rt:echo(tostring(ngx.worker.pid())))
    """) + pending_location("threads=2"))
    old_worker = srv.worker_pids()
    bodies = []

    def call():
        bodies.append(srv.get("/slow"))

    threads = [threading.Thread(target=call) for _ in range(20)]
    for t in threads:
        t.start()
    # all 20 calls are waiting in the old worker
    wait_pending(srv, 20)
    srv.signal(signal.SIGHUP)
    for t in threads:
        t.join(30)
    assert [b.strip() for b in bodies] == ["700"] * 20
    srv.wait_log(r"worker process %d exited with code 0" % old_worker[0])
    # the new worker has its own runtime
    new = srv.get("/t").strip()
    assert new.startswith("true '") and str(old_worker[0]) not in new


def test_quit_with_a_never_answered_call_in_flight(nginx):
    srv = nginx(server=location("/never", r"""
        local rt = assert(ngx.load_nonblocking_ffi(RUNTIME))
        -- answers that will come while and after the worker exits
        for _, ms in ipairs({ "50", "400", "600", "1000" }) do
            rt:delay(ms, 0.01)
        end
        ngx.shared.results:set("waiting", "yes")
        ngx.say(rt:never(nil, 0.5))
    """) + RESULTS)
    answers = []

    def call():
        try:
            answers.append(srv.request("/never"))
        except OSError as e:
            # master_process off (memcheck) exits without waiting
            answers.append(e)

    t = threading.Thread(target=call)
    t.start()
    results(srv, 1)
    srv.stop()
    t.join(10)
    if not MEMCHECK:
        # a graceful quit lets the call time out and answer the client
        assert answers == [(200, b"falsetimeout\n")]
    srv.wait_log(r"\[notice\] \d+#\d+: exit")


def test_children_keep_their_exit_status(nginx):
    """nginx's SIGCHLD handler must not reap a runtime's or Lua's child."""
    srv = nginx(server=location("/t", r"""
        local rt = assert(ngx.load_nonblocking_ffi(RUNTIME, "threads=2"))
        local from_runtime, from_lua = 0, 0
        for i = 1, 20 do
            local ok, res = rt:spawn("exit " .. (i % 5 + 1))
            if ok and res == "exit " .. (i % 5 + 1) then
                from_runtime = from_runtime + 1
            else
                ngx.log(ngx.ERR, "runtime spawn: ", res)
            end
            -- LuaJIT returns the wait status, -1 when the child was lost
            local status = os.execute("exit " .. (i % 5 + 1))
            if status == (i % 5 + 1) * 256 then
                from_lua = from_lua + 1
            else
                ngx.log(ngx.ERR, "os.execute: ", status)
            end
        end
        ngx.say(from_runtime, " ", from_lua)
    """))
    assert srv.get("/t").strip() == "20 20"


@needs_master
def test_nginx_signals_still_work_with_runtimes_loaded(nginx):
    # workers reopen the logs on USR1: they need to reach the test's folder
    srv = nginx(main="user root;", server=location("/t", r"""
        local rt = assert(ngx.load_nonblocking_ffi(RUNTIME, "threads=4"))
        show(rt:echo(tostring(ngx.worker.pid())))
    """))
    check_signals_reach_nginx(srv, "/t")
