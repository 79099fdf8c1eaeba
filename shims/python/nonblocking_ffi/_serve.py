# SPDX-License-Identifier: BSD-2-Clause

"""serve(): answer the calls of a queue with a handler.

A plain function runs on `threads` poll threads, one call at a time each.
An async def function runs on one asyncio event loop, in a thread of its
own, as many calls at once as there are: the loop watches the queue's fd
and takes the calls itself, with no thread in between.  Either way the
handler gets a Task and returns the answer (bytes, str or None); an
exception answers the call with an rc that is not 0 and the exception's
message.

A handler that returns a generator (a def with yield on threads; on the
loop an async def with yield, or an async def that returns a generator)
answers a stream, runtime:__stream() in Lua: each chunk it yields is sent
as it comes, then what it returns is the last one.
"""

import asyncio
import inspect
import logging
import selectors
import threading
import time
import types

from _nonblocking_ffi import (
    POLL_BATCH_MAX,
    StreamClosed,
    _check_queue,
    _answer_take,
    _spin_until_readable,
    poll,
    poll_batch,
    queue_fd,
    take,
)

from . import _stream

__all__ = ["Error", "Server", "serve"]

logger = logging.getLogger("nonblocking_ffi")

# what a handler returns to answer a stream
_GENERATORS = (types.GeneratorType, types.AsyncGeneratorType)
_ASYNC_GENERATOR = types.AsyncGeneratorType

INT_MIN = -(2**31)
INT_MAX = 2**31 - 1


class Error(Exception):
    """Answers the call with rc and message; no traceback is logged.

    raise Error(404, "no such job") in a handler: Lua sees
    false, 404, "no such job".  message is str, bytes or None.
    """

    def __init__(self, rc, message=None):
        if (
            isinstance(rc, bool)
            or not isinstance(rc, int)
            or rc == 0
            or not INT_MIN <= rc <= INT_MAX
        ):
            raise ValueError(
                "Error needs an int rc other than 0 (a C int), not %r" % (rc,)
            )
        super().__init__(rc, message)
        self.rc = rc
        self.message = message

    def __str__(self):
        return "rc %d: %s" % (self.rc, self.message)


def _is_async(handler):
    return any(
        inspect.iscoroutinefunction(f) or inspect.isasyncgenfunction(f)
        for f in (handler, getattr(handler, "__call__", None))
    )


def _describe(exc):
    try:
        text = str(exc)
    except Exception:
        text = ""
    name = type(exc).__name__
    return "%s: %s" % (name, text) if text else name


def _answer(task, result):
    """Answers with what the handler returned, unless it answered itself."""
    if not task.answered:
        task.respond(0, result)


def _fail(task, exc):
    """Answers with an rc that is not 0 for the exception of a handler."""
    if isinstance(exc, Error):
        rc, message = exc.rc, exc.message
    elif isinstance(exc, StreamClosed):
        # Lua gave up: nobody reads the answer, and nothing went wrong here
        rc, message = 1, "the stream was closed"
    else:
        rc, message = 1, _describe(exc)
        logger.error(
            "the handler of a %r call failed",
            task.method,
            exc_info=(type(exc), exc, exc.__traceback__),
        )
    if task.answered:
        return
    try:
        task.respond(rc, message)
    except Exception:
        # a message that is not bytes or str, or not encodable
        task.respond(rc, ascii(message))


def _fail_safely(task, exc):
    try:
        _fail(task, exc)
    except BaseException:
        # (no memory): the task answers when it is dropped
        logger.exception("cannot answer a %r call", task.method)


def _not_a_stream(task):
    return Error(1, "the method %s streams its answer: call it with "
                 'rt:__stream("%s", req)' % (task.method, task.method))


def _close(gen):
    """Closes a generator that is not done (its finally blocks run)."""
    try:
        gen.close()
    except Exception:
        logger.exception("closing the generator of a stream failed")


async def _aclose(gen):
    if not inspect.isasyncgen(gen):
        _close(gen)
        return
    try:
        await gen.aclose()
    except Exception:
        logger.exception("closing the generator of a stream failed")


def _send_all(task, gen):
    """Sends what generator gen yields on the task's stream, waiting while
    the window is full; returns what gen returns, the last chunk."""
    if not task.stream:
        gen.close()
        raise _not_a_stream(task)
    while True:
        try:
            chunk = next(gen)
        except StopIteration as stop:
            return stop.value
        try:
            task.send(chunk)
        except BaseException:
            # StreamClosed, a chunk that is no bytes or str
            _close(gen)
            raise


async def _asend_all(task, gen):
    """_send_all() on the event loop, for an async generator or a plain
    one: the loop runs while the window is full."""
    if not task.stream:
        await _aclose(gen)
        raise _not_a_stream(task)
    is_async = inspect.isasyncgen(gen)
    while True:
        try:
            chunk = await gen.__anext__() if is_async else next(gen)
        except StopAsyncIteration:
            return None
        except StopIteration as stop:
            return stop.value
        try:
            await _stream.asend(task, chunk)
        except BaseException:
            await _aclose(gen)
            raise


def _release(task):
    """Before an answer on the loop: no coroutine may still watch the
    task's stream fd (one the handler left running)."""
    if _stream._WAITS:
        _stream.release(task)


# a wait shorter than this means a spin would have found the call
SHORT_SLEEP = 0.0002

# runners beyond this many end when they find no call
MAX_IDLE_RUNNERS = 16


class _Spinner:
    """Spins a while for the queue's fd before the event loop sleeps, as
    the module's blocking pollers do: a call that comes soon needs no
    wake-up of a sleeping thread then.  A spin that finds nothing halves
    the budget; one that finds a call, or a short sleep, doubles it."""

    def __init__(self, fd, spin):
        self.fd = fd
        self.spin = spin
        self.budget = spin

    def wait(self):
        if self.budget and _spin_until_readable(self.fd, self.budget):
            self._grow()
            return True
        self.budget //= 2
        return False

    def slept(self, seconds):
        if seconds < SHORT_SLEEP:
            self._grow()

    def _grow(self):
        self.budget = min(self.spin, self.budget * 2 + 1)


class _SpinningSelector(selectors.DefaultSelector):
    """The selector of an async handler's loop: spins before it sleeps."""

    def __init__(self, spinner):
        super().__init__()
        self._spinner = spinner

    def select(self, timeout=None):
        if timeout is not None and timeout < 0.001:
            return super().select(timeout)
        if self._spinner.wait():
            return super().select(0)
        start = time.monotonic()
        events = super().select(timeout)
        if events:
            self._spinner.slept(time.monotonic() - start)
        return events


class Server:
    """What serve() started, and returns.

    stopped is a threading.Event set once the runtime was unloaded and every
    call taken from its queue was answered (and on_stop ran); loop is the
    asyncio event loop of an async handler, None for a plain one.
    """

    def __init__(self, tq, handler, on_start, on_stop, batch, spin):
        self.tq = tq
        self.handler = handler
        self.loop = None
        self.stopped = threading.Event()
        self._on_start = on_start
        self._on_stop = on_stop
        self._batch = batch
        self._spin = spin
        self._lock = threading.Lock()
        self._running = 0
        self._serving = False
        self._closing = False
        self._drained = False
        self._fd = None
        self._spinner = None
        self._runners = set()
        self._idle = []

    def wait(self, timeout=None):
        """Waits until stopped; returns False if timeout came first."""
        return self.stopped.wait(timeout)

    # plain handlers: threads that poll and answer

    def _start_threads(self, threads):
        if self._on_start is not None:
            self._on_start()
        for i in range(threads):
            thread = threading.Thread(
                target=self._poll_loop, name="nffi-poll-%d" % i, daemon=True
            )
            with self._lock:
                self._running += 1
            try:
                thread.start()
            except BaseException:
                # the threads started so far end when the load fails
                self._poller_ended()
                raise

    def _poll_loop(self):
        try:
            while True:
                try:
                    task = poll(self.tq)
                except Exception:
                    # e.g. no memory for the Task: the module answered that
                    # call already; this thread keeps serving the others
                    logger.exception("poll failed")
                    continue
                if task is None:
                    break
                self._handle(task)
                task = None
        finally:
            self._poller_ended()

    def _handle(self, task):
        try:
            result = self.handler(task)
            if inspect.isawaitable(result):
                if inspect.iscoroutine(result):
                    result.close()
                raise TypeError(
                    "the handler returned an awaitable: serve() awaits "
                    "handlers that are async def functions only"
                )
            if inspect.isasyncgen(result):
                raise TypeError(
                    "the handler returned an async generator: serve() runs "
                    "those for async def handlers only"
                )
            if inspect.isgenerator(result):
                result = _send_all(task, result)
            _answer(task, result)
        except BaseException as exc:
            _fail_safely(task, exc)

    def _poller_ended(self):
        with self._lock:
            self._running -= 1
            last = self._running == 0
        if last:
            try:
                if self._on_stop is not None:
                    self._on_stop()
            except BaseException:
                logger.exception("on_stop failed")
            finally:
                self.stopped.set()

    # async handlers: one event loop that takes its calls from the queue,
    # served by runner tasks that each answer one call at a time and then
    # take the next one themselves, without a turn of the loop when it
    # has nothing else to do

    def _start_loop(self):
        self._fd = queue_fd(self.tq)
        if self._spin:
            self._spinner = _Spinner(self._fd, self._spin)
            selector = _SpinningSelector(self._spinner)
            self.loop = asyncio.SelectorEventLoop(selector)
        else:
            self.loop = asyncio.new_event_loop()
        thread = threading.Thread(
            target=self._run_loop, name="nffi-asyncio", daemon=True
        )
        thread.start()

        if self._on_start is not None:
            start = self._call_hook(self._on_start)
            future = asyncio.run_coroutine_threadsafe(start, self.loop)
            try:
                future.result()
            except BaseException:
                self.loop.call_soon_threadsafe(self.loop.stop)
                thread.join()
                raise

        self._serving = True
        self.loop.call_soon_threadsafe(
            self.loop.add_reader, self._fd, self._readable
        )

    def _run_loop(self):
        loop = self.loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
            # stopped (by _finish, or by the application): no more calls
            # are taken, also not while the loop runs below
            self._closing = True
            loop.remove_reader(self._fd)
            # what the application left running on the loop
            left = asyncio.all_tasks(loop)
            for task in left:
                task.cancel()
            if left:
                loop.run_until_complete(
                    asyncio.gather(*left, return_exceptions=True)
                )
            loop.run_until_complete(loop.shutdown_asyncgens())
        except BaseException:
            logger.exception("the event loop failed")
        finally:
            loop.close()
            self._refuse_calls()
            self.stopped.set()

    def _readable(self):
        """The queue's fd is readable: calls wait, or the runtime ended."""
        for task in self._take():
            self._assign(task)

    def _take(self):
        """The calls waiting now, [] at the end of the runtime."""
        try:
            tasks = take(self.tq, self._batch)
        except Exception:
            # e.g. no memory for a Task: the module answered those calls
            logger.exception("take failed")
            return []
        if tasks is None:
            self._end()
            return []
        return tasks

    def _assign(self, task):
        """Hands a call to an idle runner, or to a new one."""
        while self._idle:
            waiter = self._idle.pop()
            if not waiter.done():
                waiter.set_result(task)
                return
        runner = self.loop.create_task(self._runner(task))
        self._runners.add(runner)
        runner.add_done_callback(self._runners.discard)

    async def _runner(self, task):
        me = asyncio.current_task()
        loop = self.loop
        spinner = self._spinner
        # what asyncio's own loops keep: ready callbacks (a spinner comes
        # with such a loop only), a stop() asked for
        ready = getattr(loop, "_ready", None)
        stopping = hasattr(loop, "_stopping")
        while task is not None:
            try:
                result = self.handler(task)
                if type(result) is not _ASYNC_GENERATOR:
                    result = await result
                if isinstance(result, _GENERATORS):
                    result = await _asend_all(task, result)
                if _stream._WAITS:
                    _stream.release(task)
            except BaseException as exc:
                _release(task)
                _fail_safely(task, exc)
                result = None
            # the answer, and the next call in the same call into C (the
            # GIL let go once for both): one that waits now, or comes while
            # the runner spins for it when the loop has nothing else ready
            # to run.  One call, not a batch: the calls behind it keep the
            # fd readable, and the loop's reader hands them to other
            # runners while this one awaits.
            try:
                if (
                    self._drained
                    or self._closing
                    or (stopping and loop._stopping)
                    or me.cancelling()
                ):
                    _answer(task, result)
                    task = None
                elif spinner is None or ready:
                    task = _answer_take(task, result, self.tq, self._fd, 0)
                else:
                    budget = spinner.budget
                    task = _answer_take(task, result, self.tq, self._fd,
                                        budget)
                    # the spinner's rule, written out here: once per call
                    if task is None:
                        spinner.budget = budget // 2
                    elif budget < spinner.spin:
                        spinner.budget = min(spinner.spin, budget * 2 + 1)
            except BaseException as exc:
                # an answer that is no bytes or str: answered with the error
                # (no memory for the next call's Task: the module answered
                # that call, and this one is answered already)
                _fail_safely(task, exc)
                task = None
            if task is None:
                if (
                    me.cancelling()
                    or self._drained
                    or len(self._idle) >= MAX_IDLE_RUNNERS
                ):
                    # cancelled under a handler (the loop is closing), the
                    # runtime ended, or enough runners wait: done
                    return
                waiter = loop.create_future()
                self._idle.append(waiter)
                task = await waiter

    def _end(self):
        if self._drained:
            return
        self._drained = True
        self.loop.remove_reader(self._fd)
        for waiter in self._idle:
            if not waiter.done():
                waiter.set_result(None)
        self._idle.clear()
        self.loop.create_task(self._finish())

    def _refuse_calls(self):
        """The loop was stopped by the application while the runtime runs:
        nobody serves its calls any more, say so to each caller."""
        if self._drained or not self._serving:
            return
        while True:
            tasks = poll_batch(self.tq, self._batch)
            if not tasks:
                break
            for task in tasks:
                task.respond(1, "the event loop of the runtime is closed")
            tasks = None

    async def _finish(self):
        while self._runners:
            await asyncio.wait(list(self._runners))
        if self._on_stop is not None:
            try:
                await self._call_hook(self._on_stop)
            except BaseException:
                logger.exception("on_stop failed")
        self.loop.stop()

    @staticmethod
    async def _call_hook(hook):
        result = hook()
        if inspect.isawaitable(result):
            await result


def serve(
    tq, handler, threads=1, *, on_start=None, on_stop=None, batch=64, spin=200
):
    """Answers the calls of queue tq with handler(task); returns a Server.

    It returns at once: call it from the function named in cfg, which must
    not block.  handler(task) returns the answer: bytes, str (sent as
    UTF-8) or None (nil); raising Error(rc, message) answers with that rc,
    any other exception with rc 1 and "ExceptionName: message" (and logs the
    traceback).  A handler may answer with task.respond() itself instead.

    A handler that returns a generator answers a stream (runtime:__stream()
    in Lua): each chunk it yields (bytes or str) is sent as it comes,
    waiting while Lua has a window's worth unread, and what it returns is
    the last chunk; an exception ends the stream with an error as above.
    Once Lua gives up the generator is closed at its next chunk.  An
    ordinary call of such a handler is answered with an error that says to
    use runtime:__stream().

    A plain function runs on `threads` threads.  An async def function (or
    an object with an async __call__) runs on one asyncio event loop in a
    thread of its own, all calls at once; threads must be 1 then.

    on_start() runs before the first call, on the loop for an async handler
    (it may be async def then): an exception there makes serve() raise, and
    so the load fail.  on_stop() runs once the runtime is unloaded and every
    call was answered (at worker exit the worker does not wait for it: it
    may be cut short).  batch is how many calls
    the event loop of an async handler takes at once, and spin how many
    sched_yield() rounds it spins for the next call before it sleeps
    (adaptive, as the module's `spin` option; 0 never spins and keeps the
    event loop policy's own loop, uvloop for example).
    """
    _check_queue(tq)
    if not callable(handler):
        raise TypeError("handler must be callable")
    if (
        isinstance(threads, bool)
        or not isinstance(threads, int)
        or threads < 1
    ):
        raise ValueError("threads must be an int >= 1, not %r" % (threads,))
    if isinstance(batch, bool) or not isinstance(batch, int):
        raise ValueError("batch must be an int, not %r" % (batch,))
    if not 1 <= batch <= POLL_BATCH_MAX:
        raise ValueError("batch must be 1 to %d, not %d"
                         % (POLL_BATCH_MAX, batch))
    if isinstance(spin, bool) or not isinstance(spin, int) or spin < 0:
        raise ValueError("spin must be an int >= 0, not %r" % (spin,))
    for name, hook in (("on_start", on_start), ("on_stop", on_stop)):
        if hook is not None and not callable(hook):
            raise TypeError("%s must be callable" % name)

    server = Server(tq, handler, on_start, on_stop, batch, spin)
    if _is_async(handler):
        if threads != 1:
            raise ValueError(
                "an async handler runs on one event loop: threads must be 1"
            )
        server._start_loop()
    else:
        server._start_threads(threads)
    return server
