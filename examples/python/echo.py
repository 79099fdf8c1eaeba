# SPDX-License-Identifier: BSD-2-Clause

"""The echo runtime: the smallest Python runtime worth loading.

    local rt = assert(ngx.load_nonblocking_ffi(
        "/path/to/build/lib_nonblocking_ffi_python3.so",
        "/path/to/examples/python/echo.py,init,2", { is_global = true }))
    local ok, res = rt:echo("hello")        --> true, "hello"
    local ok, rc, msg = rt:nosuch("x")      --> false, 404, "no method nosuch"

init serves on plain threads (the number after the second comma, 1 without
it); init_async serves the same methods from one asyncio event loop, where
"sleep" waits without holding up the other calls, and "tokens" streams the
words of its request one at a time, as a model streams its tokens:

    local s = assert(rt:__stream("tokens", "hello from python"))
    local word = s:read()                   --> "hello", then "from", ...
"""

import asyncio
import logging

import nonblocking_ffi

log = logging.getLogger("echo")

SENTENCE = "Every word of this sentence comes from a Python async generator"
# seconds between two tokens: enough to see them come one by one
TOKEN_DELAY = 0.1


def handle(task):
    if task.method == "echo":
        return task.request
    if task.method == "upper":
        return (task.request or b"").upper()
    if task.method == "fail":
        raise ValueError("failing as asked")
    raise nonblocking_ffi.Error(404, "no method %s" % task.method)


async def tokens(task):
    # an async generator: serve() sends each word as it is yielded
    for word in (task.request or SENTENCE.encode()).split():
        await asyncio.sleep(TOKEN_DELAY)
        yield word


async def handle_async(task):
    if task.method == "sleep":
        # "250" sleeps 250 ms, then answers with the request
        await asyncio.sleep(int(task.request or 0) / 1000)
        return task.request
    if task.method == "tokens":
        # the stream of a generator: rt:__stream("tokens", text) in Lua
        return tokens(task)
    return handle(task)


def init(rest, tq):
    threads = int(rest) if rest else 1
    nonblocking_ffi.serve(tq, handle, threads=threads)
    log.info("serving on %d threads", threads)


def init_async(rest, tq):
    nonblocking_ffi.serve(tq, handle_async)
    log.info("serving on an asyncio event loop")
