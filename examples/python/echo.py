# SPDX-License-Identifier: BSD-2-Clause

"""The echo runtime: the smallest Python runtime worth loading.

    local rt = assert(ngx.load_nonblocking_ffi(
        "/path/to/build/lib_nonblocking_ffi_python3.so",
        "/path/to/examples/python/echo.py,init,2", { is_global = true }))
    local ok, res = rt:echo("hello")        --> true, "hello"
    local ok, rc, msg = rt:nosuch("x")      --> false, 404, "no method nosuch"

init serves on plain threads (the number after the second comma, 1 without
it); init_async serves the same methods from one asyncio event loop, where
"sleep" waits without holding up the other calls.
"""

import asyncio
import logging

import nonblocking_ffi

log = logging.getLogger("echo")


def handle(task):
    if task.method == "echo":
        return task.request
    if task.method == "upper":
        return (task.request or b"").upper()
    if task.method == "fail":
        raise ValueError("failing as asked")
    raise nonblocking_ffi.Error(404, "no method %s" % task.method)


async def handle_async(task):
    if task.method == "sleep":
        # "250" sleeps 250 ms, then answers with the request
        await asyncio.sleep(int(task.request or 0) / 1000)
        return task.request
    return handle(task)


def init(rest, tq):
    threads = int(rest) if rest else 1
    nonblocking_ffi.serve(tq, handle, threads=threads)
    log.info("serving on %d threads", threads)


def init_async(rest, tq):
    nonblocking_ffi.serve(tq, handle_async)
    log.info("serving on an asyncio event loop")
