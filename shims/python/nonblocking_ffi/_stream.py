# SPDX-License-Identifier: BSD-2-Clause

"""Streams on an asyncio event loop: Task.aread(), Task.asend(), and
`async for chunk in task`.

They call the task's non-blocking try_read() and try_send(), and when those
raise BlockingIOError wait until the task's stream fd is readable, on the
running loop.

One coroutine at a time: the fd serves both directions, and any try_ call
resets it, so a send while another coroutine waits for a chunk (or the
other way round) could take that coroutine's wake-up, and it would wait
until the stream's timeout.  Such a second coroutine is refused instead.
"""

import asyncio

from _nonblocking_ffi import _set_async

# task -> the _Wait of the coroutine that waits on its stream fd
_WAITS = {}


class _Wait:
    __slots__ = ("loop", "fd", "future")

    def __init__(self, loop, fd):
        self.loop = loop
        self.fd = fd
        self.future = loop.create_future()


def _alone(task):
    if task in _WAITS:
        raise RuntimeError(
            "another coroutine waits on this task's stream: on an event "
            "loop one coroutine at a time may read or send (the two "
            "directions share the stream's fd)")


async def _readable(task):
    """Until the task's stream fd is readable (or the task is released)."""
    loop = asyncio.get_running_loop()
    wait = _Wait(loop, task.stream_fd())
    loop.add_reader(wait.fd, _wake, wait.future)
    _WAITS[task] = wait
    try:
        await wait.future
    finally:
        _stop(task, wait)


def _wake(future):
    if not future.done():
        future.set_result(None)


def _stop(task, wait):
    # only while it is still this wait's: after release() the fd may be
    # another stream's
    if _WAITS.get(task) is wait:
        del _WAITS[task]
        wait.loop.remove_reader(wait.fd)


def release(task):
    """Before the task is answered: a coroutine the handler left waiting on
    its stream stops watching the fd (the module closes it with the answer)
    and wakes; its next call finds the task answered."""
    wait = _WAITS.get(task)
    if wait is not None:
        _stop(task, wait)
        _wake(wait.future)


async def aread(task):
    while True:
        _alone(task)
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
        _alone(task)
        try:
            return task.try_send(chunk)
        except BlockingIOError:
            await _readable(task)


_set_async(aread, next_chunk, asend)
