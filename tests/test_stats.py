# SPDX-License-Identifier: BSD-2-Clause
"""Statistics per runtime: runtime:__stats(), the list of a worker's
runtimes, and the Prometheus page over every worker."""

import re

import pytest

from conftest import location
from harness import MEMCHECK, TEST_RUNTIME, wait_for

RT = ('local rt = assert(ngx.load_nonblocking_ffi(RUNTIME, "threads=2", '
      '{ max_queue = 4 }))\n')

# prints the figures of a __stats() table, one "name value" a line
SHOW_STATS = r"""
    local function show_stats(st)
        local names = {}
        for name, value in pairs(st) do
            if type(value) ~= "table" then names[#names + 1] = name end
        end
        for name, value in pairs(st.failed) do
            names[#names + 1] = "failed." .. name
        end
        table.sort(names)
        for _, name in ipairs(names) do
            local value = st[name]
            if name:find("^failed%.") then value = st.failed[name:sub(8)] end
            ngx.say(name, " ", tostring(value))
        end
    end
"""


def figures(text):
    return dict(line.split(" ", 1) for line in text.splitlines())


def test_stats_count_every_outcome(nginx):
    srv = nginx(server=location("/t", RT + SHOW_STATS + r"""
        assert(rt:echo("hello"))                      -- ok, 5 + 5 bytes
        assert(not rt:error("7"))                     -- rc 7
        assert(not rt:bad_length())                   -- bad answer
        assert(select(2, rt:delay("300", 0.01)) == "timeout")
        local held = {}
        for i = 1, 3 do
            held[i] = ngx.thread.spawn(function() return rt:delay("200") end)
        end
        -- 1 late delay and 3 held ones pending: the 4th call is refused
        assert(select(2, rt:echo("x")) == "queue full")
        for i = 1, 3 do assert(ngx.thread.wait(held[i])) end
        -- wait for the late answer of the timed-out call
        while rt:__pending() > 0 do ngx.sleep(0.01) end
        show_stats(rt:__stats())
    """) + location("/unloaded", RT + SHOW_STATS + r"""
        local other = assert(ngx.load_nonblocking_ffi(RUNTIME, "other"))
        assert(other:echo("x"))
        other:__unload()
        assert(select(2, other:echo("x")) == "unloaded")
        for _, st in ipairs(require("resty.nonblocking_ffi").runtimes()) do
            ngx.say(st.cfg, " loaded=", tostring(st.loaded),
                    " posted=", st.posted,
                    " unloaded=", st.failed.unloaded,
                    " at=", st.loaded_at > 1.7e9)
        end
    """, phase="content_by_lua_block"))
    got = figures(srv.get("/t"))
    assert got["posted"] == "7"              # the refused call is not
    assert got["answered_ok"] == "5"         # echo, 3 delays, the late one
    assert got["answered_error"] == "1"      # rc 7
    assert got["failed.bad_answer"] == "1"
    assert got["failed.timeout"] == "1"
    assert got["failed.queue_full"] == "1"
    assert got["failed.unloaded"] == "0"
    assert got["failed.cannot_yield"] == "0"
    assert got["late"] == "1"
    assert got["unclaimed"] == "0"
    assert got["in_flight"] == "0" and got["queued"] == "0"
    assert 1 <= int(got["queued_max"]) <= 4
    # requests: hello, 7, 300, 3 x 200, (bad_length: nil) = 5+1+3+9 bytes
    assert got["bytes_in"] == "18"
    # answers: hello, 3 x 200, "error 7"-like text of the error
    assert int(got["bytes_out"]) >= 5 + 9
    # delays of 200 ms: the p99 bucket is above 0.1 s, p50 below 1 s
    assert float(got["latency_p99"]) >= 0.1
    assert float(got["latency_sum"]) >= 3 * 0.2
    assert got["lib"].endswith("libnffi_test_runtime.so")
    assert got["loaded"] == "true"

    lines = srv.get("/unloaded").splitlines()
    assert "other loaded=false posted=1 unloaded=1 at=true" in lines
    assert any(line.startswith("threads=2 loaded=true posted=7 ")
               for line in lines), lines


def test_stats_latency_buckets_are_cumulative_powers_of_two(nginx):
    srv = nginx(server=location("/t", RT + r"""
        for i = 1, 20 do assert(rt:echo("x")) end
        assert(rt:delay("50"))
        local st = rt:__stats()
        ngx.say(#st.latency_le, " ", st.latency_le[1], " ",
                st.latency_le[2], " ", st.latency_le[27], " ",
                tostring(st.latency_le[28]))
        local prev = 0
        for i = 1, #st.latency_count do
            assert(st.latency_count[i] >= prev) prev = st.latency_count[i]
        end
        ngx.say(prev, " ", st.posted)
        -- the 50 ms call is the slowest: p99 of 21 calls, in the 64 ms
        -- bucket; the echoes are much faster
        ngx.say(st.latency_p99 * 1000 > 32, " ", st.latency_p50 < 0.05)
    """))
    lines = srv.get("/t").splitlines()
    assert lines[0] == "28 1e-06 2e-06 67.108864 inf"
    assert lines[1] == "21 21"
    assert lines[2] == "true true"


def test_stats_of_calls_refused_before_c(nginx):
    load = ('local rt = assert(ngx.load_nonblocking_ffi("%s", "threads=2", '
            '{ max_queue = 4 }))' % TEST_RUNTIME)
    header_filter = ("header_filter_by_lua_block { %s\n"
                     "ngx.header['X-Err'] = select(2, rt:echo('x')) }" % load)
    counted = location("/t", RT + r"""
        ngx.say(tostring((rt:echo("x"))))
    """, extra=header_filter)
    srv = nginx(server=counted + location("/stats", RT + r"""
        local st = rt:__stats()
        ngx.say(st.failed.cannot_yield, " ", st.posted)
        rt:__unload()
        assert(select(2, rt:echo("x")) == "unloaded")
        st = rt:__stats()
        ngx.say(st.failed.unloaded, " ", st.posted, " ", tostring(st.loaded))
        show(rt.__stats())
    """))
    status, body = srv.request("/t")
    assert status == 200 and body == b"true\n"
    assert srv.get("/stats").splitlines() == [
        "1 1", "1 1 false",
        "false 'bad runtime: call it as runtime:__stats()'"]


PROMETHEUS_INIT = r"""
    local prometheus = require "resty.nonblocking_ffi.prometheus"
    assert(prometheus.init("nffi_stats", { interval = 0.05 }))
    local rt = assert(ngx.load_nonblocking_ffi("%s", "threads=1"))
    ngx.timer.at(0, function()
        assert(rt:echo("from " .. ngx.worker.pid()))
    end)
""" % TEST_RUNTIME

METRICS = location("/metrics", r"""
    require("resty.nonblocking_ffi.prometheus").collect()
""")

SAMPLE = re.compile(r'^([a-z_]+)\{pid="(\d+)",lib="([^"]*)",cfg="([^"]*)"'
                    r'(?:,[a-z]+="[^"]*")?\} (\S+)$')


def scrape(srv):
    status, body = srv.request("/metrics")
    assert status == 200
    return body.decode()


@pytest.mark.skipif(MEMCHECK, reason="two workers need a master process; "
                    "memcheck runs master_process off")
def test_prometheus_page_shows_every_worker(nginx):
    srv = nginx(workers=2, http="lua_shared_dict nffi_stats 1m;",
                init_worker=PROMETHEUS_INIT, server=METRICS)

    # a worker may publish between its post and its answer, so wait for
    # the last figure its call changes
    def both_workers_answered():
        text = scrape(srv)
        pids = set(re.findall(r'^nonblocking_ffi_call_duration_seconds_count'
                              r'\{pid="(\d+)".*\} 1$', text, re.M))
        return text if len(pids) == 2 else None

    text = wait_for(both_workers_answered, 10, "both workers on the page")
    families, seen = [], set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            name = line.split()[2]
            assert name not in seen, "family %s given twice" % name
            seen.add(name)
            families.append(name)
        elif not line.startswith("# HELP "):
            match = SAMPLE.match(line)
            assert match, "not a sample: %r" % line
            # a family's samples follow its TYPE line
            assert match.group(1).startswith(families[-1]), line
            assert match.group(3).endswith("libnffi_test_runtime.so")
            assert match.group(4) == "threads=1"
    assert "nonblocking_ffi_call_duration_seconds" in seen
    for pid in set(re.findall(r'pid="(\d+)"', text)):
        labels = 'pid="%s",lib="%s",cfg="threads=1"' % (pid, TEST_RUNTIME)
        assert ('nonblocking_ffi_answers_total{%s,rc="ok"} 1' % labels
                in text)
        assert ('nonblocking_ffi_call_duration_seconds_bucket{%s,le="+Inf"}'
                ' 1' % labels in text)
        assert ('nonblocking_ffi_call_duration_seconds_count{%s} 1' % labels
                in text)
        assert 'nonblocking_ffi_runtime_loaded{%s} 1' % labels in text


def test_prometheus_misuse_is_reported(nginx):
    srv = nginx(http="lua_shared_dict nffi_stats 1m;", server=METRICS
                + location("/init", r"""
        local prometheus = require "resty.nonblocking_ffi.prometheus"
        show(prometheus.init("no_such_dict"))
        show(prometheus.init("nffi_stats", { interval = 0 }))
    """))
    status, body = srv.request("/metrics")
    assert status == 500 and b"init() was not called" in body
    assert srv.get("/init").splitlines() == [
        "nil 'bad dict_name: the name of a lua_shared_dict expected'",
        "nil 'bad opts.interval: seconds >= 0.01 expected'",
    ]
