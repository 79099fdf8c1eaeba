# SPDX-License-Identifier: BSD-2-Clause
"""Type stubs of the nonblocking_ffi package (docs/python.md: an editor
set-up pointing at build/python, or the python/ folder beside an installed
lib_nonblocking_ffi_python3.so)."""

import asyncio
import logging
import threading
from typing import (Any, AsyncIterator, Awaitable, Callable, Iterator,
                    Optional, Union)

from _nonblocking_ffi import LOG_ALERT as LOG_ALERT
from _nonblocking_ffi import LOG_CRIT as LOG_CRIT
from _nonblocking_ffi import LOG_DEBUG as LOG_DEBUG
from _nonblocking_ffi import LOG_EMERG as LOG_EMERG
from _nonblocking_ffi import LOG_ERR as LOG_ERR
from _nonblocking_ffi import LOG_INFO as LOG_INFO
from _nonblocking_ffi import LOG_NOTICE as LOG_NOTICE
from _nonblocking_ffi import LOG_WARN as LOG_WARN
from _nonblocking_ffi import Chunk, Data, Task as Task
from _nonblocking_ffi import StreamClosed as StreamClosed
from _nonblocking_ffi import abi_version as abi_version
from _nonblocking_ffi import log as log
from _nonblocking_ffi import poll as poll
from _nonblocking_ffi import poll_batch as poll_batch
from _nonblocking_ffi import queue_fd as queue_fd
from _nonblocking_ffi import take as take

# handler(task) answers with its return value (or task.respond() itself);
# an async def handler runs on the runtime's asyncio loop; a generator
# (async or not) answers runtime:__stream() with the chunks it yields
Handler = Union[Callable[[Task], Data], Callable[[Task], Awaitable[Data]],
                Callable[[Task], Iterator[Chunk]],
                Callable[[Task], AsyncIterator[Chunk]],
                Callable[[Task], Awaitable[AsyncIterator[Chunk]]]]
Hook = Callable[[], Any]


class Error(Exception):
    """raise Error(rc, message) in a handler: Lua sees false, rc, message."""

    rc: int
    message: Union[str, bytes, None]

    def __init__(self, rc: int,
                 message: Union[str, bytes, None] = None) -> None: ...


class Server:
    """What serve() started, and returns."""

    tq: int
    handler: Handler
    loop: Optional[asyncio.AbstractEventLoop]
    stopped: threading.Event

    def wait(self, timeout: Optional[float] = None) -> bool: ...


def serve(tq: int, handler: Handler, threads: int = 1, *,
          on_start: Optional[Hook] = None, on_stop: Optional[Hook] = None,
          batch: int = 64, spin: int = 200) -> Server: ...


def nginx_level(levelno: int) -> int: ...


class NginxHandler(logging.Handler):
    def __init__(self, level: Union[int, str] = ...) -> None: ...
    def emit(self, record: logging.LogRecord) -> None: ...


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
