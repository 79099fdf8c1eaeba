# SPDX-License-Identifier: BSD-2-Clause
"""The runtime a reader copies, examples/c/example.c, does what its comment
and the README say."""

import os

from conftest import location
from harness import EXAMPLE, REPO


def test_example_echo_error_and_unknown_methods(nginx):
    srv = nginx(server=location("/t", r"""
        local rt = assert(ngx.load_nonblocking_ffi(EXAMPLE, "threads=2"))
        show(rt:echo("hello"))
        show(rt:echo())
        show(rt:echo(""))
        local ok, res = rt:echo("a\0b")
        show(ok, #res, res == "a\0b")
        show(rt:error("7"))
        show(rt:error())
        show(rt:other())
        show(rt:__pending())
    """))
    assert srv.get("/t").splitlines() == [
        "true 'hello'",
        "true nil",
        "true ''",
        "true 3 true",
        "false 7 'error 7'",
        "false 1 'error 1'",
        "false 404 'unknown method other'",
        "0",
    ]


def test_example_delay_answers_from_its_own_thread(nginx):
    # one poll thread: had it slept through each delay, 300 would come first
    srv = nginx(server=location("/t", r"""
        local rt = assert(ngx.load_nonblocking_ffi(EXAMPLE, "threads=1"))
        local order, threads = {}, {}
        for i, ms in ipairs({ "300", "100", "200" }) do
            threads[i] = ngx.thread.spawn(function()
                local ok, res = rt:delay(ms)
                order[#order + 1] = tostring(ok) .. " " .. tostring(res)
            end)
        end
        for i = 1, #threads do ngx.thread.wait(threads[i]) end
        ngx.say(table.concat(order, ", "))
    """))
    assert srv.get("/t").strip() == "true 100, true 200, true 300"


def test_example_cfg(nginx):
    srv = nginx(server=location("/t", r"""
        show(ngx.load_nonblocking_ffi(EXAMPLE) ~= nil)
        show(ngx.load_nonblocking_ffi(EXAMPLE, "threads=64") ~= nil)
        show(ngx.load_nonblocking_ffi(EXAMPLE, "threads=0"))
        show(ngx.load_nonblocking_ffi(EXAMPLE, "threads=65"))
        show(ngx.load_nonblocking_ffi(EXAMPLE, "workers=2"))
    """))
    failed = ("nil '%s: lib_nonblocking_ffi_init() failed with rc 1: cfg: "
              "nil or \"threads=N\" with N from 1 to 64 expected'" % EXAMPLE)
    assert srv.get("/t").splitlines() == ["true", "true"] + [failed] * 3


def test_readme_shows_the_example():
    with open(os.path.join(REPO, "README.md")) as f:
        readme = f.read()
    with open(os.path.join(REPO, "examples", "c", "example.c")) as f:
        example = f.read()
    section = readme[readme.index("## Writing a runtime in C"):]
    shown = section[section.index("```c\n") + 5:section.index("```\n")]
    # all of it but the license line
    assert shown == example.split("\n", 2)[2]


def test_example_count_streams_its_chunks(nginx):
    srv = nginx(server=location("/t", r"""
        local rt = assert(ngx.load_nonblocking_ffi(EXAMPLE, "threads=1"))
        local s = assert(rt:__stream("count", "3"))
        for i = 1, 4 do show(s:read()) end
        -- count is a stream method: an ordinary call does not know it
        show(rt:count("3"))
    """))
    assert srv.get("/t").splitlines() == [
        "'1", "'", "'2", "'", "'3", "'", "nil 0",
        "false 404 'unknown method count'"]
