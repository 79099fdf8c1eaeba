# SPDX-License-Identifier: BSD-2-Clause
"""The core's diagnostics and bounds: debug trace, failure reports, memory
that stays flat (failing loads, generated method names, bursts of large
calls), loads that must be refused."""

import os
import re
import shutil
import tempfile

import pytest

from conftest import location
from harness import BUILD, MEMCHECK, TEST_RUNTIME, wait_for

RUNTIME_PATH = TEST_RUNTIME
RT = 'local rt = assert(ngx.load_nonblocking_ffi(RUNTIME, "threads=2"))\n'

# the worker's resident memory, in kB
# bytes malloc'ed and not freed, all arenas (LuaJIT has its own allocator)
MALLOCED = r"""
    local ffi = require "ffi"
    pcall(ffi.cdef, [[
        struct nffi_test_mallinfo2 {
            size_t arena, ordblks, smblks, hblks, hblkhd, usmblks, fsmblks,
                   uordblks, fordblks, keepcost;
        };
        struct nffi_test_mallinfo2 mallinfo2(void);
    ]])
    local function malloced_kb()
        local info = ffi.C.mallinfo2()
        return tonumber(info.uordblks + info.hblkhd) / 1024
    end
"""

RSS = r"""
    local function rss_kb()
        local f = assert(io.open("/proc/self/status"))
        local status = f:read("*a")
        f:close()
        return tonumber(status:match("VmRSS:%s*(%d+)"))
    end
"""


def test_one_call_leaves_a_debug_trace(nginx):
    srv = nginx(log_level="debug", server=location("/t", RT + r"""
        show(rt:echo("traced"))
        rt:__unload()
    """))
    assert srv.get("/t").strip() == "true 'traced'"
    log = srv.log()
    posted = re.search(r"nonblocking_ffi: task #(\d+) posted to \S+: "
                       r"echo\(\), 6 bytes, 1 pending", log)
    assert posted, log[-3000:]
    task = "task #%s " % posted.group(1)
    steps = ["posted to", "taken by a poller of", "answered, rc 0, 6 bytes",
             "answer delivered, rc 0, 6 bytes, caller woken", "freed"]
    where = [log.find("nonblocking_ffi: " + task + step) for step in steps]
    assert all(w >= 0 for w in where), list(zip(steps, where))
    assert where == sorted(where)
    assert "lib_nonblocking_ffi_init() of " + RUNTIME_PATH in log
    assert "unloaded runtime " + RUNTIME_PATH in log


def test_timeouts_and_queue_full_are_reported_once_a_second(nginx):
    srv = nginx(server=location("/t", r"""
        local rt = assert(ngx.load_nonblocking_ffi(RUNTIME, "rt=timeouts",
                                                   { max_queue = 20 }))
        for i = 1, 20 do
            local ok, err = rt:never("x", 0.001)
            assert(not ok and err == "timeout", err)
        end
        for i = 1, 5 do
            local ok, err = rt:never("x", 0.001)
            assert(not ok and err == "queue full", err)
        end
        ngx.say("ok")
    """))
    assert srv.get("/t").strip() == "ok"
    # the first timeout at once, the rest a second later, in one report
    srv.wait_log(r"\[warn\].*runtime \S+ & rt=timeouts: 1 calls timed out "
                 r"since the last report \(1 in all\), 1 pending")
    srv.wait_log(r"\[warn\].*runtime \S+ & rt=timeouts: 19 calls timed out "
                 r"since the last report \(20 in all\), \d+ pending")
    srv.wait_log(r"\[warn\].*runtime \S+ & rt=timeouts: 5 calls refused "
                 r"\(queue full\) since the last report \(5 in all\), "
                 r"20 pending")
    assert len(re.findall(r"calls timed out", srv.log())) == 2
    assert len(re.findall(r"calls refused", srv.log())) == 1


@pytest.mark.skipif(MEMCHECK, reason="measures memory; slow under valgrind")
def test_failing_loads_do_not_grow_the_worker(nginx):
    srv = nginx(env={"LD_LIBRARY_PATH": BUILD},
                server=location("/t", MALLOCED + r"""
        local function fail(n)
            for i = 1, n do
                assert(not ngx.load_nonblocking_ffi(RUNTIME, "fail=7"))
                assert(not ngx.load_nonblocking_ffi("nothing_here"))
                assert(not ngx.load_nonblocking_ffi("nffi_no_init"))
            end
        end
        fail(1000)
        local before = malloced_kb()
        fail(10000)
        ngx.say(math.floor(malloced_kb() - before))
    """))
    srv.expect(r"failed with rc 7")
    grown_kb = int(srv.get("/t", timeout=120).strip())
    # a runtime kept per failed init was about 400 bytes: 4 MB here
    assert grown_kb < 512, "the worker grew by %d kB" % grown_kb
    assert srv.log().count("loaded runtime") == 0


def test_generated_method_names_do_not_grow_the_worker(nginx):
    srv = nginx(server=location("/t", RT + r"""
        local function lookups(from, to)
            for i = from, to do
                local method = rt["generated_" .. i]
                assert(type(method) == "function")
            end
        end
        lookups(1, 1000)
        collectgarbage()
        collectgarbage()
        local before = collectgarbage("count")
        lookups(1001, 100000)
        collectgarbage()
        collectgarbage()
        ngx.say(math.floor(collectgarbage("count") - before))
        -- a generated name still calls the runtime
        show(rt["generated_" .. 99999](rt, "x"))
    """))
    lines = srv.get("/t", timeout=60).splitlines()
    # a cached closure per name was about 100 bytes: 10 MB here
    assert int(lines[0]) < 512, "Lua memory grew by %s kB" % lines[0]
    assert lines[1] == "false 404 'unknown method generated_99999'"


@pytest.mark.skipif(MEMCHECK, reason="measures memory; slow under valgrind")
def test_memory_returns_after_a_burst_of_large_calls(nginx):
    srv = nginx(server=location("/burst", RT + RSS + r"""
        local req = string.rep("r", tonumber(ngx.var.arg_size))
        local n = tonumber(ngx.var.arg_n)
        local answered = count_true(n, function()
            return rt:null(req)
        end)
        collectgarbage()
        ngx.say(answered, " ", rss_kb())
    """) + location("/rss", RSS + r"""
        ngx.say(rss_kb())
    """))
    # warm up: the pool, threads and Lua at their steady size
    answered, before_kb = srv.get("/burst?n=2000&size=100").split()
    assert answered == "2000"
    before_kb = int(before_kb)
    answered, peak_kb = srv.get("/burst?n=2000&size=60000",
                                timeout=60).split()
    assert answered == "2000"
    # 2000 x 60 KB request buffers are 120 MB: they must not stay held
    wait_for(lambda: int(srv.get("/rss")) < before_kb + 40000, 10,
             "the worker's memory to return after the burst (peak %s kB, "
             "before %d kB, now %s kB)" % (peak_kb, before_kb,
                                           srv.get("/rss").strip()))


def test_a_fifo_is_refused_without_blocking_the_worker(nginx):
    folder = tempfile.mkdtemp(prefix="nffi-fifo-")
    try:
        os.chmod(folder, 0o755)
        fifo = os.path.join(folder, "libfifo.so")
        os.mkfifo(fifo)
        srv = nginx(server=location("/t", r"""
            show(ngx.load_nonblocking_ffi("%s"))
        """ % fifo))
        assert srv.get("/t", timeout=10).strip() == (
            "nil 'failed to load %s: not a regular file'" % fifo)
    finally:
        shutil.rmtree(folder)


def test_short_name_and_file_name_are_one_runtime(nginx):
    srv = nginx(env={"LD_LIBRARY_PATH": BUILD}, server=location("/t", r"""
        local a = assert(ngx.load_nonblocking_ffi("nffi_test_runtime"))
        local b = assert(ngx.load_nonblocking_ffi("libnffi_test_runtime.so"))
        local c = assert(ngx.load_nonblocking_ffi("nffi_test_runtime", ""))
        ngx.say(a == b, " ", a == c)
    """))
    assert srv.get("/t").strip() == "true false"
    assert srv.log().count("loaded runtime") == 2


def test_dot_calls_of_reserved_methods_answer_like_calls(nginx):
    srv = nginx(server=location("/t", RT + r"""
        show(rt.__unload())
        show(rt.__pending())
        show(rt.__unload(42))
        show(rt:__pending())
        show(rt:echo("still loaded"))
    """))
    assert srv.get("/t").splitlines() == [
        "false 'bad runtime: call it as runtime:__unload()'",
        "false 'bad runtime: call it as runtime:__pending()'",
        "false 'bad runtime: call it as runtime:__unload()'",
        "0",
        "true 'still loaded'",
    ]


def test_require_refuses_other_subsystems(nginx):
    srv = nginx(server=location("/t", r"""
        package.loaded["resty.nonblocking_ffi"] = nil
        local subsystem = ngx.config.subsystem
        ngx.config.subsystem = "stream"
        local ok, err = pcall(require, "resty.nonblocking_ffi")
        ngx.config.subsystem = subsystem
        ngx.say(ok, " ", err)
    """))
    assert srv.get("/t").strip() == (
        "false resty.nonblocking_ffi supports lua-nginx-module's http "
        "subsystem only, not stream")


def test_pollers_spinning_the_most_see_unload(nginx):
    srv = nginx(server=location("/t", r"""
        local rt = assert(ngx.load_nonblocking_ffi(RUNTIME, "threads=2",
                                                   { spin = 100000 }))
        show(rt:echo("spun"))
        rt:__unload()
    """) + location("/ended", r"""
        local stats = assert(ngx.load_nonblocking_ffi(RUNTIME, "stats"))
        local _, text = stats:stats()
        ngx.say(text:match("pollers_ended=(%d+)"))
    """))
    assert srv.get("/t").strip() == "true 'spun'"
    # both pollers leave their spin and end
    wait_for(lambda: srv.get("/ended").strip() == "2", 10,
             "both pollers to end after unload")


def test_names_starting_with_two_underscores_are_reserved(nginx):
    srv = nginx(server=location("/t", RT + r"""
        show(rt:__other())
        show(rt["__" .. "anything"](rt, "x"))
        show(rt:_single("x"))
    """))
    assert srv.get("/t").splitlines() == [
        "false 'bad method: names starting with __ are reserved'",
        "false 'bad method: names starting with __ are reserved'",
        "false 404 'unknown method _single'",
    ]


def test_init_error_reaches_the_lua_caller(nginx):
    srv = nginx(server=location("/t", r"""
        show(ngx.load_nonblocking_ffi(RUNTIME, "fail=5,why=no route to db"))
        -- the next failure of the same queue has no stale reason
        show(ngx.load_nonblocking_ffi(RUNTIME, "fail=5,why=no route to db"))
        show(ngx.load_nonblocking_ffi(RUNTIME, "fail=6"))
    """))
    srv.expect(r"failed with rc")
    assert srv.get("/t").splitlines() == [
        "nil '%s: lib_nonblocking_ffi_init() failed with rc 5: no route to "
        "db'" % TEST_RUNTIME,
        "nil '%s: lib_nonblocking_ffi_init() failed with rc 5: no route to "
        "db'" % TEST_RUNTIME,
        "nil '%s: lib_nonblocking_ffi_init() failed with rc 6'"
        % TEST_RUNTIME,
    ]


@pytest.mark.skipif(MEMCHECK, reason="nginx sets worker_cpu_affinity in a "
                    "worker process, and memcheck runs without a master")
def test_a_worker_on_one_cpu_waits_for_answers_and_never_polls(nginx):
    """Pinned to one CPU, the worker shares it with its runtime threads,
    which cannot answer while the event loop polls: every answer comes
    through the eventfd, one read() of it by the main thread per sequential
    call, however large opts.loop_spin."""
    calls = 2000
    srv = nginx(main="worker_cpu_affinity 1;", server=location("/t", r"""
        local rt = assert(ngx.load_nonblocking_ffi(RUNTIME, nil,
                                                   { loop_spin = 100000 }))
        for _ = 1, tonumber(ngx.var.arg_n) do
            local ok, echoed = rt:echo("x")
            assert(ok and echoed == "x")
        end
        show(true)
    """))
    srv.wait_log(r"ready, latencies timed with [^,]+, one CPU: answers are "
                 r"waited for, not polled for")
    worker = srv.worker_pids()[0]

    def main_thread_reads():
        with open("/proc/%d/task/%d/io" % (worker, worker)) as f:
            return int(re.search(r"^syscr: (\d+)", f.read(), re.M).group(1))

    assert srv.get("/t?n=10").strip() == "true"
    before = main_thread_reads()
    assert srv.get("/t?n=%d" % calls).strip() == "true"
    assert main_thread_reads() - before >= calls
