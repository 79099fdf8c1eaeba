# SPDX-License-Identifier: BSD-2-Clause

"""Answer calls from Lua code in nginx, in Python, without blocking nginx.

Lua loads a Python module through the loader lib_nonblocking_ffi_python3.so:

    local rt = ngx.load_nonblocking_ffi(
        "/path/to/lib_nonblocking_ffi_python3.so",
        "/srv/app/handlers.py,init,some settings", { is_global = true })
    local ok, res = rt:echo("hello")

and the loader calls handlers.init("some settings", tq), which serves the
calls of queue tq:

    import nonblocking_ffi

    def echo(task):
        return task.request

    def init(rest, tq):
        nonblocking_ffi.serve(tq, echo, threads=2)

A handler that yields answers a stream (runtime:__stream() in Lua) chunk
by chunk:

    async def tokens(task):
        async for word in model(task.request):
            yield word

and reads the chunks Lua writes with task.read() (await task.aread()), or
by iterating the task.

The low level is poll(tq) -> Task or None (the runtime was unloaded), and
task.respond(rc, data); an event loop of one's own watches queue_fd(tq) and
calls take(tq), which never waits.  Python logging, print() and uncaught
exceptions go to the nginx error log.
"""

from _nonblocking_ffi import (
    LOG_ALERT,
    LOG_CRIT,
    LOG_DEBUG,
    LOG_EMERG,
    LOG_ERR,
    LOG_INFO,
    LOG_NOTICE,
    LOG_WARN,
    StreamClosed,
    Task,
    abi_version,
    log,
    poll,
    poll_batch,
    queue_fd,
    take,
)

from ._logging import NginxHandler, nginx_level
from ._serve import Error, Server, serve

__all__ = [
    "Error",
    "LOG_ALERT",
    "LOG_CRIT",
    "LOG_DEBUG",
    "LOG_EMERG",
    "LOG_ERR",
    "LOG_INFO",
    "LOG_NOTICE",
    "LOG_WARN",
    "NginxHandler",
    "Server",
    "StreamClosed",
    "Task",
    "abi_version",
    "log",
    "nginx_level",
    "poll",
    "poll_batch",
    "queue_fd",
    "serve",
    "take",
]
