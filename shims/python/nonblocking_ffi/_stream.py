# SPDX-License-Identifier: BSD-2-Clause

"""Streams on an asyncio event loop: Task.aread(), Task.asend(), and
`async for chunk in task`.

They call the task's non-blocking try_read() and try_send(), and when those
raise BlockingIOError wait until the task's stream fd is readable, on the
running loop.

A reader and a sender coroutine may wait at once: asyncio takes one
reader callback per fd, so the coroutines waiting on a task's fd share one
registration, and a readable fd wakes them all (each retries, and waits
again if it must).  The module keeps the fd's signal per direction, so
neither takes the other's wake-up.
"""

import asyncio

from _nonblocking_ffi import _set_async

# task -> the _Wait of the coroutines that wait on its stream fd
_WAITS = {}


class _Wait:
    __slots__ = ("loop", "fd", "futures")

    def __init__(self, loop, fd):
        self.loop = loop
        self.fd = fd
        self.futures = []


async def _readable(task):
    """Until the task's stream fd is readable (or the task is released)."""
    wait = _WAITS.get(task)
    if wait is None:
        loop = asyncio.get_running_loop()
        wait = _Wait(loop, task.stream_fd())
        loop.add_reader(wait.fd, _wake, task, wait)
        _WAITS[task] = wait
    future = wait.loop.create_future()
    wait.futures.append(future)
    try:
        await future
    finally:
        if future in wait.futures:
            wait.futures.remove(future)
        if not wait.futures:
            _stop(task, wait)


def _wake(task, wait):
    # the fd stays readable until the try call of its direction: nobody
    # may stay registered without retrying
    futures, wait.futures = wait.futures, []
    _stop(task, wait)
    for future in futures:
        if not future.done():
            future.set_result(None)


def _stop(task, wait):
    # only while it is still this wait's: after release() the fd may be
    # another stream's
    if _WAITS.get(task) is wait:
        del _WAITS[task]
        wait.loop.remove_reader(wait.fd)


def release(task):
    """Before the task is answered: coroutines the handler left waiting on
    its stream stop watching the fd (the module closes it with the answer)
    and wake; their next call finds the task answered."""
    wait = _WAITS.get(task)
    if wait is not None:
        _wake(task, wait)


async def aread(task):
    while True:
        try:
            return task.try_read()
        except BlockingIOError:
            await _readable(task)


async def next_chunk(task):
    chunk = await aread(task)
    if chunk is None:
        raise StopAsyncIteration
    return chunk


async def asend(task, chunk):
    while True:
        try:
            return task.try_send(chunk)
        except BlockingIOError:
            await _readable(task)


_set_async(aread, next_chunk, asend)
