# SPDX-License-Identifier: BSD-2-Clause

"""Go runtimes: the SDK (sdk/go), its examples (examples/go) and the Go traps.

Only one Go runtime can live in a process, so every test loads at most one
Go library into an nginx: lib_nonblocking_ffi_go.so (handlers echo, etcd,
selftest), or, in an nginx of its own, the seed-style raw runtime.
"""

import http.client
import json
import os
import re
import socket
import threading
import time

import pytest

from conftest import GO, GO_DICT, READ_ALL, WAIT_FOR_GO, location
from harness import (MEMCHECK, NOT_HERE, check_signals_reach_nginx, free_port,
                     wait_for)
from services_go import GO_LIB, demo_location

# Seen here: under memcheck the Go calls still work, but valgrind reports
# hundreds of invalid reads and writes inside the Go runtime itself (its
# own stacks and heap, vectorised scans past the end of C strings), so
# every test would fail on the report; Go does not support valgrind.
pytestmark = [
    pytest.mark.skipif(
        MEMCHECK, reason="Go is not supported under valgrind: memcheck "
        "reports hundreds of invalid accesses inside the Go runtime itself"),
    pytest.mark.skipif(
        not os.path.exists(GO_LIB),
        reason=NOT_HERE + "the Go library (make go needs the Go toolchain)"),
]

needs_master = pytest.mark.skipif(
    MEMCHECK, reason="memcheck runs nginx with master_process off")


def go(lua, lib):
    """Lua with GO bound to the path of the Go library."""
    return 'local GO = "%s"\n%s' % (lib, lua)


@pytest.fixture
def golib(go_libs):
    return go_libs[0]


@pytest.fixture
def rawlib(go_libs):
    return go_libs[1]


# --- echo -----------------------------------------------------------------


def test_echo_end_to_end(nginx, golib):
    srv = nginx(server=location("/t", go(r"""
        local rt = assert(ngx.load_nonblocking_ffi(GO, "echo"))
        local pre = assert(ngx.load_nonblocking_ffi(GO, "echo,>> "))
        show(rt:echo("hello"))
        show(rt:any_method_name("works"))
        show(rt:echo(""))
        show(rt:echo())
        show(pre:echo("prefixed"))
        show(rt == pre, rt == ngx.load_nonblocking_ffi(GO, "echo"))
        local all = {}
        for i = 0, 255 do all[#all + 1] = string.char(i) end
        local bin = table.concat(all)
        local big = string.rep(bin, 4096)
        for _, p in ipairs({ "\0", "a\0b", bin, big }) do
            local ok, res = rt:echo(p)
            ngx.say(ok, " ", #res, " ", res == p)
        end
    """, golib)))
    assert srv.get("/t").splitlines() == [
        "true 'hello'",
        "true 'works'",
        "true ''",
        "true nil",
        "true '>> prefixed'",
        "false true",
        "true 1 true",
        "true 3 true",
        "true 256 true",
        "true 1048576 true",
    ]
    srv.wait_log(r'\[info\] .*nffi: handler "echo" started', count=2)


def test_concurrent_calls_answered_out_of_order(nginx, golib):
    srv = nginx(server=location("/t", go(r"""
        local rt = assert(ngx.load_nonblocking_ffi(GO, "selftest"))
        -- later calls sleep less: answers come back out of order
        ngx.say(count_true(200, function(i)
            local ok, res = rt:sleep(tostring((200 - i) % 50))
            return ok and res == "slept " .. (200 - i) % 50
        end))
    """, golib)), workers=2)
    bodies = []

    def call():
        bodies.append(srv.get("/t"))

    clients = [threading.Thread(target=call) for _ in range(6)]
    for c in clients:
        c.start()
    for c in clients:
        c.join(60)
    assert [b.strip() for b in bodies] == ["200"] * 6


def test_method_names_a_handler_keeps_stay_intact(nginx, golib):
    srv = nginx(server=location("/t", go(r"""
        local rt = assert(ngx.load_nonblocking_ffi(GO, "selftest"))
        show(rt:remember_first())
        show(rt:remember_first())
        -- the module reuses the request buffers of those calls (tasks are
        -- pooled, 64 to a slab), large ones are freed
        for i = 1, 300 do
            assert(rt:echo(string.rep("z", i % 2 == 0 and 100 or 100000)))
        end
        show(rt:remember_second())
        show(rt:recall())
    """, golib)))
    assert srv.get("/t").splitlines() == [
        "true nil", "true nil", "true nil",
        "true 'remember_first remember_first remember_second'"]


def test_blocking_calls_delay_no_other_call(nginx, golib):
    """Handlers run on Serve's pollers, with no hand-off: calls that block
    (more of them than pollers wait, than CPUs) leave a poller for the
    next call."""
    srv = nginx(server=location("/t", go(r"""
        local rt = assert(ngx.load_nonblocking_ffi(GO, "selftest"))
        local sleepers = {}
        for i = 1, 8 do
            sleepers[i] = ngx.thread.spawn(rt.sleep, rt, "1000")
        end
        -- the sleeps were queued first; the echoes come back while every
        -- one of them still sleeps
        local fast = 0
        for i = 1, 20 do
            local ok, res = rt:echo("x" .. i)
            if ok and res == "x" .. i then fast = fast + 1 end
        end
        ngx.say(fast, " ", rt:__pending())
        local slept = 0
        for i = 1, 8 do
            local _, ok, res = ngx.thread.wait(sleepers[i])
            if ok and res == "slept 1000" then slept = slept + 1 end
        end
        ngx.say(slept, " ", rt:__pending())
    """, golib)))
    assert srv.get("/t").splitlines() == ["20 8", "8 0"]


def test_idle_pollers_wait_in_the_netpoller_and_cost_no_cpu(nginx, golib):
    """After a burst, Serve's two idle pollers are armed on the queue's
    wait fd (counted as sleeping), none spins, and the worker's threads use
    no CPU; a call then wakes one at once."""
    srv = nginx(server=location("/burst", go(r"""
        local rt = assert(ngx.load_nonblocking_ffi(GO, "echo"))
        local threads = {}
        for t = 1, 8 do
            threads[t] = ngx.thread.spawn(function()
                for i = 1, 200 do assert(rt:echo("x")) end
            end)
        end
        for t = 1, 8 do assert(ngx.thread.wait(threads[t])) end
        ngx.say("done")
    """, golib)) + location("/stats", go(r"""
        local rt = assert(ngx.load_nonblocking_ffi(GO, "echo"))
        local st = rt:__stats()
        ngx.say(st.pollers_sleeping, " ", st.pollers_spinning)
    """, golib)) + location("/call", go(r"""
        local rt = assert(ngx.load_nonblocking_ffi(GO, "echo"))
        local ok, res = rt:echo("after the idle time")
        ngx.say(ok, " ", res)
    """, golib)))
    assert srv.get("/burst").strip() == "done"
    wait_for(lambda: srv.get("/stats").split() == ["2", "0"], 10,
             "the two idle pollers to be armed, none spinning")

    worker = srv.worker_pids()[0]

    def cpu_ticks():
        total = 0
        for tid in os.listdir("/proc/%d/task" % worker):
            with open("/proc/%d/task/%s/stat" % (worker, tid)) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        return total

    before = cpu_ticks()
    time.sleep(1)       # the window the CPU is measured over
    # a tick is 10 ms: a poller spinning or woken in a loop would use
    # most of the 100 ticks of that second
    assert cpu_ticks() - before <= 3
    assert srv.get("/call").strip() == "true after the idle time"


def test_without_a_descriptor_for_the_wait_fd_pollers_wait_in_c(nginx,
                                                                  golib):
    """A runtime loaded while the worker can open no file descriptor gets
    no wait fd: Serve says so in the error log, and its pollers wait in the
    module instead; calls still work, a blocked one delaying no other."""
    srv = nginx(server=location("/t", go(r"""
        local ffi = require "ffi"
        ffi.cdef[[
            struct nffi_test_rlimit { unsigned long cur, max; };
            int getrlimit(int resource, struct nffi_test_rlimit *rlim);
            int setrlimit(int resource, const struct nffi_test_rlimit *rlim);
            int open(const char *path, int flags);
            int close(int fd);
        ]]
        local C, RLIMIT_NOFILE = ffi.C, 7
        local first = assert(ngx.load_nonblocking_ffi(GO, "echo"))
        show(first:echo("first"))

        -- a new descriptor must be below the limit: make the lowest free
        -- one the limit, so that none can be had
        local saved = ffi.new("struct nffi_test_rlimit")
        assert(C.getrlimit(RLIMIT_NOFILE, saved) == 0)
        local fd = C.open("/dev/null", 0)
        assert(fd >= 0 and C.close(fd) == 0)
        local low = ffi.new("struct nffi_test_rlimit", fd, saved.max)
        assert(C.setrlimit(RLIMIT_NOFILE, low) == 0)
        ngx.say(C.open("/dev/null", 0), " ", ffi.errno())

        -- the library is loaded already: no descriptor needed for it
        local rt = assert(ngx.load_nonblocking_ffi(GO, "selftest"))
        local slow = ngx.thread.spawn(rt.sleep, rt, "300")
        local ok, res = rt:echo("second")
        -- answered: Serve chose how its pollers wait before they took it
        assert(C.setrlimit(RLIMIT_NOFILE, saved) == 0)
        ngx.say(ok, " ", res, " ", rt:__pending())
        local _, ok2, res2 = ngx.thread.wait(slow)
        ngx.say(ok2, " ", res2)
    """, golib)))
    # EMFILE is 24; the echo came back while the sleep held a poller
    assert srv.get("/t").splitlines() == [
        "true 'first'", "-1 24", "true second 1", "true slept 300"]
    assert re.search(r"\[warn\].*nffi: no wait fd for the queue \(too many "
                     r"open files\): idle pollers wait in the module",
                     srv.log())


# --- errors, panics, bad cfg ----------------------------------------------


def test_errors_and_panics_become_rc(nginx, golib):
    srv = nginx(server=location("/t", go(r"""
        local rt = assert(ngx.load_nonblocking_ffi(GO, "selftest"))
        local pid = ngx.worker.pid()
        show(rt:error(""))
        show(rt:error("7"))
        show(rt:error("0"))
        show(rt:panic("boom"))
        show(rt:goexit())
        show(rt:no_such_method())
        show(rt["nil"](rt))
        -- the worker and the runtime survived all of it
        local ok, res = rt:echo("alive")
        show(ok, res, ngx.worker.pid() == pid)
    """, golib)))
    assert srv.get("/t").splitlines() == [
        "false 1 'something failed'",
        "false 7 'error 7'",
        "false 1 'error 0'",
        "false 2 'panic: boom'",
        "false 2 'handler ended its goroutine'",
        "false 404 'unknown method no_such_method'",
        "true nil",
        "true 'alive' true",
    ]
    # a panic is logged with its stack, at [error]
    srv.wait_log(r'\[error\] .*nffi: handler panicked in method "panic": '
                 r'boom\ngoroutine \d+ \[running\]')


def test_bad_cfg_makes_init_fail(nginx, golib, etcd):
    srv = nginx(server=location("/t", go(r"""
        local cfgs = {
            false, "", ",x", "nope", "nope,{}",
            "etcd", "etcd,{bad json", 'etcd,{"endpoints":[]}',
            'etcd,{"endpoints":["%s"],"no_such_field":1}',
            'etcd,{"endpoints":["%s"],"timeout":"soon"}',
            "selftest,fail", "selftest,panic",
        }
        for _, cfg in ipairs(cfgs) do
            local rt, err = ngx.load_nonblocking_ffi(GO, cfg or nil)
            ngx.say(tostring(rt), " ", (err:gsub("^[^:]*: ", "")))
        end
        -- the failures left nothing behind: the same library still loads
        local rt = assert(ngx.load_nonblocking_ffi(GO, "echo"))
        show(rt:echo("still fine"))
    """ % (etcd.endpoint, etcd.endpoint), golib)))
    rc = "nil lib_nonblocking_ffi_init() failed with rc %d: "
    handlers = "(echo, etcd, selftest)"
    # the reason reaches Lua too (the first line of it, cut to the room the
    # error has)
    expected = [
        rc % 1 + 'cfg is nil: name a handler %s, e.g. "name" or '
        '"name,<its cfg>"' % handlers,
        rc % 1 + 'cfg "" names no handler %s' % handlers,
        rc % 1 + 'cfg ",x" names no handler %s' % handlers,
        rc % 2 + 'no handler "nope" in this library (it has: echo, etcd, '
        'selftest)',
        rc % 2 + 'no handler "nope" in this library (it has: echo, etcd, '
        'selftest)',
        rc % 3 + 'handler "etcd": bad cfg "": EOF',
        rc % 3 + 'handler "etcd": bad cfg "{bad json": invalid character',
        rc % 3 + 'handler "etcd": cfg has no endpoints',
        rc % 3 + 'handler "etcd": bad cfg ',
        rc % 3 + 'handler "etcd": bad timeout',
        rc % 3 + 'handler "selftest": asked to fail',
        rc % 3 + 'handler "selftest": panic: asked to panic',
    ]
    lines = srv.get("/t").splitlines()
    assert len(lines) == len(expected) + 1
    assert lines[-1] == "true 'still fine'"
    for line, want in zip(lines, expected):
        assert line.startswith(want), (line, want)
    for pattern in [
            r"nffi: cfg is nil: name a handler \(echo, etcd, selftest\)",
            r'nffi: cfg "" names no handler',
            r'nffi: no handler "nope" in this library '
            r'\(it has: echo, etcd, selftest\)',
            r'nffi: handler "etcd": bad cfg "": EOF',
            r'nffi: handler "etcd": bad cfg "\{bad json": invalid character',
            r'nffi: handler "etcd": cfg has no endpoints',
            r'nffi: handler "etcd": bad cfg .*unknown field "no_such_field"',
            r'nffi: handler "etcd": bad timeout',
            r'nffi: handler "selftest": asked to fail',
            r'nffi: handler "selftest": panic: asked to panic']:
        srv.wait_log(r"\[error\] .*" + pattern)


# --- etcd -----------------------------------------------------------------


def etcd_location(path, lua, endpoint, lib):
    """Lua with rt, an etcd runtime, and helpers; answers are JSON text."""
    return location(path, go(r"""
        local rt = assert(ngx.load_nonblocking_ffi(GO,
            'etcd,{"endpoints":["%s"],"timeout":"5s"}'))
        -- a number field of a JSON answer
        local function field(res, name)
            return tonumber(res:match('"' .. name .. '":(%%d+)'))
        end
        local function must(ok, res, rsp)
            if not ok then error(tostring(res) .. " " .. tostring(rsp)) end
            return res
        end
    """ % endpoint + lua, lib))


def answers(srv, path):
    return [json.loads(line) for line in srv.get(path).splitlines()]


def test_etcd_put_get_delete(nginx, golib, etcd):
    srv = nginx(server=etcd_location("/t", r"""
        ngx.say(must(rt:put('{"key":"/t1/a","value":"one"}')))
        ngx.say(must(rt:get('{"key":"/t1/a"}')))
        must(rt:put('{"key":"/t1/a","value":"two"}'))
        ngx.say(must(rt:get('{"key":"/t1/a"}')))
        ngx.say(must(rt:delete('{"key":"/t1/a"}')))
        ngx.say(must(rt:get('{"key":"/t1/a"}')))
        ngx.say(must(rt:delete('{"key":"/t1/a"}')))
    """, etcd.endpoint, golib) + etcd_location("/bad", r"""
        show(rt:get('{"nokey":true}'))
        show(rt:put("not json"))
        show(rt:put())
        show(rt:compact('{"key":"x"}'))
    """, etcd.endpoint, golib))
    put, one, two, deleted, gone, again = answers(srv, "/t")
    rev = put["revision"]
    assert one == {"found": True, "key": "/t1/a", "value": "one",
                   "mod_revision": rev, "revision": rev}
    assert two == {"found": True, "key": "/t1/a", "value": "two",
                   "mod_revision": rev + 1, "revision": rev + 1}
    assert deleted == {"deleted": 1, "revision": rev + 2}
    assert gone == {"found": False, "key": "/t1/a", "revision": rev + 2}
    assert again == {"deleted": 0, "revision": rev + 2}

    bad = srv.get("/bad").splitlines()
    assert bad[0] == "false 400 'bad request: no key'"
    assert bad[1].startswith("false 400 'bad request: invalid character")
    assert bad[2].startswith("false 400 'bad request: unexpected end")
    assert bad[3] == "false 404 'unknown method compact'"


def test_etcd_watch_long_poll(nginx, golib, etcd):
    srv = nginx(server=etcd_location("/t", r"""
        local start = field(must(rt:get('{"key":"/t2/x"}')), "revision") + 1
        local function watch(from)
            return must(rt:watch('{"key":"/t2/","prefix":true,'
                                 .. '"start_revision":' .. from .. '}', 10))
        end
        -- the watch waits in its own coroutine while this one writes
        local watcher = ngx.thread.spawn(watch, start)
        must(rt:put('{"key":"/t2/x","value":"first"}'))
        local _, ev = ngx.thread.wait(watcher)
        ngx.say(ev)

        -- from next_revision on nothing is missed: the writes made before
        -- the next watch are its answer (one or more events at once)
        must(rt:put('{"key":"/t2/y","value":"second"}'))
        must(rt:delete('{"key":"/t2/x"}'))
        local seen = 0
        while seen < 2 do
            ev = watch(field(ev, "next_revision"))
            ngx.say(ev)
            local _, n = ev:gsub('"type":', "")
            seen = seen + n
        end
    """, etcd.endpoint, golib))
    got = answers(srv, "/t")
    rev = got[0]["events"][0]["mod_revision"]
    assert got[0] == {"events": [{"type": "PUT", "key": "/t2/x",
                                  "value": "first", "mod_revision": rev}],
                      "next_revision": rev + 1}
    events = [e for answer in got[1:] for e in answer["events"]]
    assert events == [
        {"type": "PUT", "key": "/t2/y", "value": "second",
         "mod_revision": rev + 1},
        {"type": "DELETE", "key": "/t2/x", "value": "",
         "mod_revision": rev + 2}]
    assert got[-1]["next_revision"] == rev + 3


def test_etcd_watch_is_cancelled_when_the_caller_gives_up(
        nginx, golib, etcd):
    srv = nginx(server=etcd_location("/t", r"""
        show(rt:watch('{"key":"/t3/never"}', 0.3))
        -- the handler saw that nobody waits any more and ended the watch:
        -- its (dropped) answer came back long before any event
        local deadline = ngx.now() + 10
        while rt:__pending() > 0 and ngx.now() < deadline do
            ngx.sleep(0.01)
            ngx.update_time()
        end
        show(rt:__pending())
        must(rt:put('{"key":"/t3/never","value":"v"}'))
        ngx.say(must(rt:get('{"key":"/t3/never"}')):match('"value":"(%w+)"'))
    """, etcd.endpoint, golib))
    assert srv.get("/t").splitlines() == ["false 'timeout'", "0", "v"]


def read_events(resp, n):
    """The next n server-sent events of resp: (id, data) pairs."""
    events, fields = [], {}
    while len(events) < n:
        line = resp.readline().decode()
        assert line, "the event stream ended after %r" % events
        line = line.rstrip("\n")
        if line == "":
            if "data" in fields:
                events.append((fields.get("id"), json.loads(fields["data"])))
            fields = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(": ")
            fields[name] = value
    return events


def test_etcd_watch_as_server_sent_events(nginx, golib, etcd):
    """The demo's /go/etcd/events, as make run serves it: the changes
    under a prefix arrive in order, an EventSource resumes after its
    Last-Event-ID, and a client going away cancels the watch in Go and
    in etcd."""
    srv = nginx(server=demo_location(
        "/go/etcd/events", ETCD_PORT=etcd.endpoint.split(":")[1]) +
        location("/pending", go(r"""
            local rt = assert(ngx.load_nonblocking_ffi(GO,
                'etcd,{"endpoints":["127.0.0.1:%s"]}'))
            ngx.print(rt:__pending())
        """ % etcd.endpoint.split(":")[1], golib)))
    # watchers of earlier tests' nginx go away with their connections
    wait_for(lambda: etcd.watchers() == 0, 10, "etcd to have no watcher")

    # from the next revision on, however soon the puts come; the headers
    # come at once, not with the first event or the first idle comment
    # (15 s)
    start = etcd.revision()
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
    conn.request("GET", "/go/etcd/events?prefix=/t6/",
                 headers={"Last-Event-ID": str(start)})
    resp = conn.getresponse()
    assert resp.status == 200
    assert resp.getheader("Content-Type") == "text/event-stream"
    etcd.v3("kv/put", key="/t6/a", value="1")
    etcd.v3("kv/put", key="/other", value="not under the prefix")
    etcd.v3("kv/put", key="/t6/b", value="2")
    etcd.v3("kv/put", key="/t6/a", value="3")
    etcd.v3("kv/deleterange", key="/t6/b")
    events = read_events(resp, 4)
    assert events == [
        (str(start + 1), {"type": "PUT", "key": "/t6/a", "value": "1",
                          "mod_revision": start + 1}),
        (str(start + 3), {"type": "PUT", "key": "/t6/b", "value": "2",
                          "mod_revision": start + 3}),
        (str(start + 4), {"type": "PUT", "key": "/t6/a", "value": "3",
                          "mod_revision": start + 4}),
        (str(start + 5), {"type": "DELETE", "key": "/t6/b", "value": "",
                          "mod_revision": start + 5}),
    ]
    assert etcd.watchers() == 1 and srv.get("/pending") == "1"

    # an EventSource that reconnects sends the last id it saw: the events
    # after it come from etcd's history
    again = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
    again.request("GET", "/go/etcd/events?prefix=/t6/",
                  headers={"Last-Event-ID": events[1][0]})
    assert read_events(again.getresponse(), 2) == events[2:]
    again.close()
    wait_for(lambda: etcd.watchers() == 1, 10,
             "the watch of the closed connection to end")

    conn.close()
    wait_for(lambda: etcd.watchers() == 0, 10,
             "etcd to see the watch cancelled")
    wait_for(lambda: srv.get("/pending") == "0", 10,
             "the Go handler to answer its stream")


def test_etcd_unreachable_is_an_error_not_a_hang(nginx, golib):
    srv = nginx(server=location("/t", go(r"""
        local rt = assert(ngx.load_nonblocking_ffi(GO,
            'etcd,{"endpoints":["127.0.0.1:%d"],"timeout":"300ms"}'))
        show(rt:put('{"key":"k","value":"v"}'))
    """ % free_port(), golib)))
    line = srv.get("/t").strip()
    assert line.startswith("false 1 'etcd: context deadline exceeded"), line


# --- streams (rt:__stream) ---------------------------------------------------

def stream_stats(srv):
    """What the selftest's streams saw (its stream_stats), through /stats."""
    return json.loads(srv.get("/stats"))


SELFTEST_STATS = location("/stats", go(r"""
    local rt = assert(ngx.load_nonblocking_ffi(GO, "selftest"))
    local ok, res = rt:stream_stats()
    ngx.print(res)
""", GO_LIB))


def test_streams_chunks_errors_and_the_two_kinds_of_call(nginx, golib):
    srv = nginx(server=location("/t", go(READ_ALL + r"""
        local rt = assert(ngx.load_nonblocking_ffi(GO, "selftest"))
        ngx.say(read_all(assert(rt:__stream("count", "3,5"))))
        ngx.say(read_all(assert(rt:__stream("count", "x"))))
        ngx.say(read_all(assert(rt:__stream("stream_error"))))
        ngx.say(read_all(assert(rt:__stream("stream_panic"))))
        ngx.say(read_all(assert(rt:__stream("nope"))))
        -- a stream method called as an ordinary call is refused
        show(rt:count("3,5"))
        -- an ordinary method streamed: its answer is the one chunk
        local s = assert(rt:__stream("echo", "a\0b"))
        show(s:read())
        show(s:read())
        -- and so it is for a handler that knows nothing of streams
        local echo = assert(ngx.load_nonblocking_ffi(GO, "echo"))
        s = assert(echo:__stream("any", "whole"))
        show(s:read())
        show(s:read())
        show(rt:echo("alive"))
    """, golib)))
    assert srv.get("/t").splitlines() == [
        "5a,5b,5c,end 0 nil",
        "end 400 count wants n,size[,ms]",
        "7p,end 7 failed midway",
        "7p,end 2 panic: stream boom",
        "end 404 unknown method nope",
        "false 405 'method count answers streams only: call it with "
        "rt:__stream(\"count\", req)'",
        "'a\x00b'",
        "nil 0",
        "'whole'",
        "nil 0",
        "true 'alive'",
    ]
    srv.wait_log(r'\[error\] .*nffi: handler panicked in method '
                 r'"stream_panic": stream boom\ngoroutine \d+ \[running\]')


def test_streams_both_ways_binary_safe(nginx, golib):
    srv = nginx(server=location("/t", go(r"""
        local rt = assert(ngx.load_nonblocking_ffi(GO, "selftest"))
        -- Lua's chunks echoed back, one for one, through small windows:
        -- neither side may finish alone
        local s = assert(rt:__stream("stream_echo", nil, { window = 8192 }))
        local sent = {}
        local writer = ngx.thread.spawn(function()
            for i = 1, 60 do
                local c = {}
                for j = 0, 255 do c[#c + 1] = string.char((i + j) % 256) end
                sent[i] = string.rep(table.concat(c), i)
                assert(s:write(sent[i]))
            end
            -- larger than the window: it passes alone
            sent[61] = string.rep("\0", 3 * 1024 * 1024)
            assert(s:write(sent[61]))
            assert(s:close_write())
            return true
        end)
        local got, same = {}, true
        while true do
            local chunk, rc, msg = s:read()
            if not chunk then ngx.say("end ", rc, " ", msg) break end
            got[#got + 1] = chunk
            same = same and chunk == sent[#got]
        end
        ngx.say(#got, " ", same, " ", select(2, ngx.thread.wait(writer)))
        -- io.Copy of what Lua writes, to its end
        s = assert(rt:__stream("sink"))
        for i = 1, 10 do assert(s:write(string.rep("x", 1000))) end
        assert(s:close_write())
        show(s:read())
        show(s:read())
    """, golib)))
    assert srv.get("/t").splitlines() == [
        "end 0 nil", "61 true true", "'read 10000 bytes'", "nil 0"]


def test_stream_window_bounds_go_and_delays_no_call(nginx, golib):
    """A Go producer faster than Lua waits in its Write (a blocking call
    into the module) while the window is full, and every other call goes
    through meanwhile; Lua closing the stream ends the Write with
    ErrClosed and cancels the handler's ctx."""
    srv = nginx(http=GO_DICT, server=SELFTEST_STATS + GO + location(
        "/t", go(r"""
        local rt = assert(ngx.load_nonblocking_ffi(GO, "selftest"))
        -- 64 KB chunks against a 256 KB window
        local s = assert(rt:__stream("flood", "65536",
                                     { window = 262144, timeout = 3600 }))
        ngx.say(#assert(s:read()))
        ngx.flush(true)
    """ + WAIT_FOR_GO + r"""
        -- the flood still waits in its Write: calls go through
        ngx.say(count_true(20, function(i)
            local ok, res = rt:echo("x" .. i)
            return ok and res == "x" .. i
        end))
        show(s:close())
        show(s:read())
    """, golib)))
    conn, resp = srv.open("/t", timeout=60)
    assert resp.readline().strip() == b"65536"
    # one chunk read: the producer sent what the window holds and waits
    wait_for(lambda: stream_stats(srv)["writing"] == 1 and
             stream_stats(srv)["sent"] >= 262144 // 65536, 10,
             "the Go producer to wait for the window")
    before = stream_stats(srv)
    assert before["sent"] <= 1 + 262144 // 65536
    assert before["running"] == 1 and before["closed"] == 0
    srv.get("/go")
    assert resp.read().decode().splitlines() == ["20", "true", "nil 'closed'"]
    conn.close()
    wait_for(lambda: stream_stats(srv)["running"] == 0, 10,
             "the flood to end")
    after = stream_stats(srv)
    assert after["closed"] == 1 and after["gone"] == 1
    assert after["sent"] <= 1 + 262144 // 65536


@pytest.mark.parametrize("method", ["flood", "idle"])
def test_a_client_that_goes_away_ends_its_go_stream(nginx, golib, method):
    """flood is in a Write when the client goes (ErrClosed), idle waits on
    its ctx (cancelled, the cause ErrCallerGone)."""
    srv = nginx(server=SELFTEST_STATS + location("/t", go(r"""
        local rt = assert(ngx.load_nonblocking_ffi(GO, "selftest"))
        local s = assert(rt:__stream(ngx.var.arg_m, "1000",
                                     { timeout = 3600 }))
        ngx.print("open\n")
        ngx.flush(true)
        while true do
            local chunk = s:read()
            if not chunk then break end
            ngx.print(chunk)
            if not ngx.flush(true) then break end
        end
    """, golib), extra="lua_check_client_abort on;"))
    sock = socket.create_connection(("127.0.0.1", srv.port))
    sock.sendall(b"GET /t?m=%s HTTP/1.1\r\nHost: x\r\n\r\n" % method.encode())
    assert b"open" in sock.recv(1000)
    wait_for(lambda: stream_stats(srv)["running"] == 1, 10,
             "the stream to run")
    sock.close()
    wait_for(lambda: stream_stats(srv)["running"] == 0, 10,
             "the Go handler to end")
    got = stream_stats(srv)
    assert got["gone"] == 1
    assert got["closed"] == (1 if method == "flood" else 0)


# --- lifecycle -------------------------------------------------------------


def test_caller_timeout_cancels_the_call_context(nginx, golib):
    srv = nginx(server=location("/t", go(r"""
        local rt = assert(ngx.load_nonblocking_ffi(GO, "selftest"))
        local t0 = ngx.now()
        show(rt:sleep("30000", 0.2))
        local deadline = ngx.now() + 10
        while rt:__pending() > 0 and ngx.now() < deadline do
            ngx.sleep(0.01)
            ngx.update_time()
        end
        -- far sooner than the 30 s the handler was asked to sleep
        ngx.say(rt:__pending(), " ", ngx.now() - t0 < 10)
    """, golib)))
    assert srv.get("/t").splitlines() == ["false 'timeout'", "0 true"]


def test_unload_then_load_again_in_the_same_worker(nginx, golib):
    srv = nginx(server=location("/t", go(r"""
        local rt = assert(ngx.load_nonblocking_ffi(GO, "selftest"))
        local function stat(r, name)
            return select(2, r:stats()):match('"' .. name .. '":(%d+)')
        end
        local pid, this = stat(rt, "pid"), stat(rt, "this")
        -- a call still running when the runtime is unloaded ends: its
        -- context is cancelled
        local sleeper = ngx.thread.spawn(function()
            return rt:sleep("30000", 20)
        end)
        local deadline = ngx.now() + 10
        while rt:__pending() == 0 and ngx.now() < deadline do
            ngx.sleep(0.01)
            ngx.update_time()
        end
        rt:__unload()
        show(select(2, ngx.thread.wait(sleeper)))
        show(rt:echo("x"))

        -- the library stays loaded: loading again calls its init again, in
        -- the same Go runtime (same process, state kept)
        local again = assert(ngx.load_nonblocking_ffi(GO, "selftest"))
        ngx.say(again ~= rt, " ", stat(again, "pid") == pid, " ",
                this, " ", stat(again, "this"), " ", stat(again, "inits"))
        show(again:echo("works"))
        -- and a library mapped once only
        local maps = assert(io.open("/proc/self/maps")):read("*a")
        local n = 0
        for line in maps:gmatch("[^\n]+") do
            if line:find("REAL_PATH", 1, true) and line:find("r%-xp") then
                n = n + 1
            end
        end
        ngx.say("executable mappings: ", n)
    """.replace("REAL_PATH", os.path.realpath(golib)), golib)))
    assert srv.get("/t").splitlines() == [
        "false 1 'nffi: the runtime was unloaded'",
        "false 'unloaded'",
        "true true 1 2 2",
        "true 'works'",
        "executable mappings: 1",
    ]
    srv.wait_log(r'nffi: handler "selftest" started', count=2)


def test_logging_into_the_nginx_error_log(nginx, golib):
    srv = nginx(server=location("/t", go(r"""
        local rt = assert(ngx.load_nonblocking_ffi(GO, "selftest"))
        show(rt:log("hello from Go"))
    """, golib)))
    assert srv.get("/t").strip() == "true nil"
    srv.wait_log(r"\[notice\] \d+#\d+: selftest: hello from Go")


# --- traps of Go inside nginx (DESIGN.md section 7) -------------------------


def test_exec_from_go_keeps_the_exit_status(nginx, golib):
    """nginx's SIGCHLD handler must not reap the children Go starts."""
    srv = nginx(server=location("/t", go(r"""
        local rt = assert(ngx.load_nonblocking_ffi(GO, "selftest"))
        local from_go, from_lua = 0, 0
        for i = 1, 20 do
            local code = i % 5 + 1
            local ok, res = rt:exec('["sh","-c","exit ' .. code .. '"]')
            if ok and res == '{"exit":' .. code .. '}' then
                from_go = from_go + 1
            else
                ngx.log(ngx.ERR, "go exec: ", res)
            end
            -- Lua's own children too, now that Go runs in this process
            if os.execute("exit " .. code) == code * 256 then
                from_lua = from_lua + 1
            end
        end
        -- 20 at once, from 20 goroutines
        local threads = {}
        for i = 1, 20 do
            threads[i] = ngx.thread.spawn(rt.exec, rt, '["true"]')
        end
        local together = 0
        for i = 1, 20 do
            local _, ok, res = ngx.thread.wait(threads[i])
            if ok and res == '{"exit":0}' then together = together + 1 end
        end
        ngx.say(from_go, " ", from_lua, " ", together)
    """, golib)))
    assert srv.get("/t").strip() == "20 20 20"


def test_go_sees_the_launch_environment(nginx, golib):
    """Go reads the environment nginx started with, not env NAME=value."""
    srv = nginx(
        env={"NFFI_GO_LAUNCH": "launch", "NFFI_GO_BOTH": "launch"},
        main="env NFFI_GO_BOTH=conf;\nenv NFFI_GO_CONF=conf;",
        server=location("/t", go(r"""
        local rt = assert(ngx.load_nonblocking_ffi(GO, "selftest"))
        for _, name in ipairs({ "NFFI_GO_LAUNCH", "NFFI_GO_BOTH",
                                "NFFI_GO_CONF" }) do
            ngx.say(name, " lua=", tostring(os.getenv(name)),
                    " go=", tostring(select(2, rt:getenv(name))))
        end
    """, golib)))
    assert srv.get("/t").splitlines() == [
        "NFFI_GO_LAUNCH lua=nil go=launch",
        "NFFI_GO_BOTH lua=conf go=launch",
        "NFFI_GO_CONF lua=conf go=nil",
    ]


@needs_master
def test_nginx_signals_with_go_loaded(nginx, golib):
    srv = nginx(main="user root;", server=location("/t", go(r"""
        local rt = assert(ngx.load_nonblocking_ffi(GO, "echo"))
        show(rt:echo(tostring(ngx.worker.pid())))
    """, golib)))
    # sent to the worker itself, QUIT may land on a Go thread
    check_signals_reach_nginx(srv, "/t")


# --- the seed's way: a raw cgo runtime, no SDK -------------------------------


def test_raw_seed_style_runtime(nginx, rawlib):
    # its own nginx: the raw library has a Go runtime of its own
    srv = nginx(server=location("/t", go(r"""
        local rt = assert(ngx.load_nonblocking_ffi(GO, '{"greeting":"hello"}'))
        show(rt:call('{"cmd":"get","key":"greeting"}'))
        show(rt:call('{"cmd":"put","key":"k","value":"v"}'))
        show(rt:call('{"cmd":"get","key":"k"}'))
        show(rt:call('{"cmd":"get","key":"none"}'))
        show(rt:call('{"cmd":"count"}'))
        show(rt:call('{"cmd":"drop"}'))
        local threads = {}
        for i = 1, 50 do
            threads[i] = ngx.thread.spawn(rt.call, rt,
                '{"cmd":"put","key":"k' .. i .. '","value":"' .. i .. '"}')
        end
        for i = 1, 50 do ngx.thread.wait(threads[i]) end
        show(rt:call('{"cmd":"count"}'))
        local other = assert(ngx.load_nonblocking_ffi(GO, "{}"))
        show(other:call('{"cmd":"count"}'))
        local _, err = ngx.load_nonblocking_ffi(GO, "not json")
        ngx.say((err:gsub("^.*: ", "")))
        _, err = ngx.load_nonblocking_ffi(GO)
        ngx.say((err:gsub("^.*: ", "")))
        rt:__unload()
        show(rt:call('{"cmd":"count"}'))
        show(other:call('{"cmd":"count"}'))
    """, rawlib)))
    assert srv.get("/t").splitlines() == [
        "true '{\"value\":\"hello\"}'",
        "true '{\"ok\":true}'",
        "true '{\"value\":\"v\"}'",
        "false 1 '{\"error\":\"not found\"}'",
        "true '{\"count\":2}'",
        "false 2 '{\"error\":\"unknown cmd drop\"}'",
        "true '{\"count\":52}'",
        "true '{\"count\":0}'",
        "lib_nonblocking_ffi_init() failed with rc -1",
        "lib_nonblocking_ffi_init() failed with rc -1",
        "false 'unloaded'",
        "true '{\"count\":0}'",
    ]
