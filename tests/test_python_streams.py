# SPDX-License-Identifier: BSD-2-Clause

"""Python streams: generator handlers answering runtime:__stream() chunk by
chunk, on threads and on the asyncio loop, and the request stream Lua
writes, read with task.read(), `for chunk in task`, await task.aread().

`make -C shims/python all` first (the fixtures are test_python.py's).
"""

import json
import socket

import pytest

from conftest import GO, GO_DICT, WAIT_FOR_GO, read_all_lua
from harness import SLOW, wait_for
from test_python import TB, modules, py_location  # noqa: F401 (fixture)
from test_python import pytestmark  # noqa: F401 (skipped without Python)

HANDLERS = r'''
    import asyncio
    import inspect
    import json
    import queue
    import select
    import sys
    import threading
    import time

    import nonblocking_ffi
    from nonblocking_ffi import Error

    STATE = {"produced": 0, "ended": [], "misuse": [],
             "waits": {"read": 0, "send": 0}}


    def _sizes(task):
        n, size = (int(x) for x in task.request.split(b","))
        STATE["produced"] = 0
        return n, size


    def _ended(task):
        # in a finally block: how the generator ended
        exc = sys.exc_info()[0]
        STATE["ended"].append("%s %s" % (task.method, exc and exc.__name__))


    def count(task):
        n, size = _sizes(task)
        for i in range(n):
            STATE["produced"] += 1
            yield bytes([97 + i % 26]) * size
        return "done %d" % n


    async def acount(task):
        n, size = _sizes(task)
        for i in range(n):
            STATE["produced"] += 1
            yield bytes([97 + i % 26]) * size


    def words(task):
        yield from task.request.decode().split()


    async def awords(task):
        for word in task.request.decode().split():
            await asyncio.sleep(0)
            yield word


    def upper(task):
        yield task.request
        for chunk in task:
            yield chunk.upper()
        return "end"


    async def aupper(task):
        yield task.request
        async for chunk in task:
            yield chunk.upper()


    def total(task):
        n = chunks = 0
        while True:
            chunk = task.read()
            if chunk is None:
                return "%d bytes in %d chunks" % (n, chunks)
            n += len(chunk)
            chunks += 1


    async def atotal(task):
        n = chunks = 0
        while True:
            chunk = await task.aread()
            if chunk is None:
                return "%d bytes in %d chunks" % (n, chunks)
            n += len(chunk)
            chunks += 1


    def midway(task):
        yield "a"
        yield "b"
        if task.request == b"error":
            raise Error(7, "seven")
        raise ValueError("midway")


    async def amidway(task):
        for chunk in midway(task):
            await asyncio.sleep(0)
            yield chunk


    def forever(task):
        try:
            while True:
                yield "tick"
                time.sleep(0.005)
        finally:
            _ended(task)


    async def aforever(task):
        try:
            while True:
                yield "tick"
                await asyncio.sleep(0.005)
        finally:
            _ended(task)


    def bad(task):
        try:
            yield "ok"
            yield 42
        finally:
            _ended(task)


    def both(task):
        # a thread reads while this one sends: Lua's echo through the
        # windows of both directions
        chunks = queue.Queue()

        def reader():
            for chunk in task:
                chunks.put(chunk)
            chunks.put(None)

        thread = threading.Thread(target=reader)
        thread.start()
        n = 0
        while True:
            chunk = chunks.get()
            if chunk is None:
                break
            task.send(chunk)
            n += len(chunk)
        thread.join()
        return "echoed %d" % n


    async def duplex(task):
        # an echo from two coroutines: one reads Lua's chunks while the
        # other sends them back, both waiting on the stream's one fd
        chunks = asyncio.Queue()

        async def reader():
            async for chunk in task:
                await chunks.put(chunk)
            await chunks.put(None)

        reading = asyncio.ensure_future(reader())
        n = 0
        while True:
            chunk = await chunks.get()
            if chunk is None:
                break
            await task.asend(chunk)
            n += len(chunk)
        await reading
        return "echoed %d" % n


    def by_hand(task):
        # the non-blocking forms, waiting on the fd as an event loop would
        fd = task.stream_fd()
        waits = {"read": 0, "send": 0}

        def wait(what):
            waits[what] += 1
            STATE["waits"] = waits
            if not select.select([fd], [], [], 10)[0]:
                raise TimeoutError(what)

        got = []
        while True:
            try:
                chunk = task.try_read()
            except BlockingIOError:
                wait("read")
                continue
            if chunk is None:
                break
            got.append(chunk)
        for i in range(int(b"".join(got))):
            while True:
                try:
                    task.try_send(b"%d," % i)
                    break
                except BlockingIOError:
                    wait("send")
        task.respond(0, "waited to read %s, to send %s" % (
            waits["read"] > 0, waits["send"] > 0))


    async def leave(task):
        # leaves a coroutine waiting on the stream when it answers
        async def orphan():
            try:
                await task.aread()
            except RuntimeError as e:
                STATE["misuse"].append(str(e))

        STATE["orphan"] = asyncio.ensure_future(orphan())
        await asyncio.sleep(0)
        return "left"


    def reads(task):
        try:
            for chunk in task:
                pass
        finally:
            _ended(task)


    async def areads(task):
        try:
            async for chunk in task:
                pass
        finally:
            _ended(task)


    def busy(task):
        # respond() while another thread waits in a read of the task
        reader = threading.Thread(target=task.read)
        reader.start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                task.try_read()
            except BlockingIOError:
                time.sleep(0.001)
                continue
            except RuntimeError as e:
                STATE["misuse"].append(str(e))
            break
        try:
            task.respond(0, "too early")
        except RuntimeError as e:
            STATE["misuse"].append(str(e))
        # sending is not reading
        task.send("sent while another thread reads")
        reader.join()
        return "answered"


    def misuse(task):
        out = [task.stream, task.read(), list(task)]
        for call in (lambda: task.send("x"), lambda: task.try_send("x"),
                     task.stream_fd):
            try:
                call()
                out.append("no error")
            except RuntimeError as e:
                out.append(str(e))
        return repr(out)


    def answered(task):
        task.send("first")
        for chunk in (None, 1.5):
            try:
                task.send(chunk)
            except TypeError as e:
                task.send(str(e))
        task.send(b"")
        task.send(bytearray(b"ba"))
        task.respond(0, "last")
        for call in (lambda: task.send("x"), task.read, task.stream_fd):
            try:
                call()
            except RuntimeError as e:
                STATE["misuse"].append(str(e))


    def state(task):
        return json.dumps({k: v for k, v in STATE.items() if k != "orphan"})


    def plain(task):
        return "one chunk " + task.request.decode()


    SYNC = {"count": count, "words": words, "upper": upper, "total": total,
            "midway": midway, "forever": forever, "bad": bad, "both": both,
            "by_hand": by_hand, "misuse": misuse, "answered": answered,
            "reads": reads, "busy": busy,
            "state": state, "plain": plain, "gen": count}
    ASYNC = dict(SYNC, count=acount, words=awords, upper=aupper,
                 total=atotal, midway=amidway, forever=aforever,
                 duplex=duplex, leave=leave, reads=areads)


    def handle(task):
        return SYNC[task.method](task)


    async def handle_async(task):
        # an async def that returns the (async) generator of the method
        result = ASYNC[task.method](task)
        return await result if inspect.isawaitable(result) else result


    def init(rest, tq):
        if rest == "async":
            nonblocking_ffi.serve(tq, handle_async)
        elif rest == "async_generator":
            nonblocking_ffi.serve(tq, acount)
        elif rest == "generator":
            nonblocking_ffi.serve(tq, count)
        elif rest == "async_generator_on_threads":
            nonblocking_ffi.serve(tq, lambda task: acount(task))
        else:
            # one more thread than a stream holds: state() is answered
            nonblocking_ffi.serve(tq, handle, threads=3)
'''

# small chunks as they are, large ones as their length and first byte
READ_ALL = read_all_lua(100)

MODES = ["threads", "async"]


def stream_location(path, mod, mode, lua, **kw):
    """A location with read_all() and rt, the handlers' runtime in mode."""
    return py_location(path, READ_ALL + r"""
        local rt = assert(pyload("%s,init,%s"))
    """ % (mod, mode) + lua, **kw)


def stream_server(mod, mode, lua, **kw):
    """/t running lua (as stream_location), and /state: the handlers'
    STATE, for state(srv)."""
    return stream_location("/state", mod, mode, r"""
        ngx.print(select(2, rt:state()))
    """) + stream_location("/t", mod, mode, lua, **kw)


def state(srv):
    return json.loads(srv.get("/state"))


@pytest.mark.parametrize("mode", MODES)
def test_generators_stream_their_chunks_then_the_return_value(
        nginx, modules, mode):  # noqa: F811
    mod = modules.write("streams", HANDLERS)
    srv = nginx(server=stream_server(mod, mode, r"""
        ngx.say(read_all(assert(rt:__stream("count", "3,5"))))
        ngx.say(read_all(assert(rt:__stream("words", "streams from  python"))))
        -- an ordinary handler answers a stream in one chunk
        ngx.say(read_all(assert(rt:__stream("plain", "x"))))
        -- a plain generator (on the loop too, for an async handler)
        ngx.say(read_all(assert(rt:__stream("gen", "2,1"))))
        -- an ordinary call of a generator is refused: it never runs
        show(rt:count("7,1"))
        ngx.say((select(2, rt:state())):match('"produced": (%d+)'))
        local s = assert(rt:__stream("count", "64,65536"))
        local total, n = 0, 0
        while true do
            local chunk, status = s:read()
            if not chunk then ngx.say("status ", status) break end
            total, n = total + #chunk, n + 1
        end
        ngx.say(total, " bytes in ", n, " chunks")
    """))
    # an async generator cannot return a value: no last chunk
    threads = mode == "threads"
    assert srv.get("/t").splitlines() == [
        "aaaaa,bbbbb,ccccc%s,end 0 nil" % (",done 3" if threads else ""),
        "streams,from,python,end 0 nil",
        "one chunk x,end 0 nil",
        "a,b,done 2,end 0 nil",
        "false 1 'the method count streams its answer: call it with "
        "rt:__stream(\"count\", req)'",
        "2",
        "status 0",
        # the return value is a chunk of its own
        "%d bytes in 65 chunks" % (64 * 65536 + len("done 64")) if threads
        else "%d bytes in 64 chunks" % (64 * 65536),
    ]


@pytest.mark.parametrize("how", ["generator", "async_generator"])
def test_a_generator_function_is_a_handler(
        nginx, modules, how):  # noqa: F811
    mod = modules.write("streams", HANDLERS)
    srv = nginx(server=stream_location("/t", mod, how, r"""
        ngx.say(read_all(assert(rt:__stream("any", "2,3"))))
        show(rt:any("2,3"))
    """) + stream_location("/threads", mod, "async_generator_on_threads", r"""
        ngx.say(read_all(assert(rt:__stream("any", "2,3"))))
    """))
    assert srv.get("/t").splitlines() == [
        "aaa,bbb%s,end 0 nil" % (",done 2" if how == "generator" else ""),
        "false 1 'the method any streams its answer: call it with "
        "rt:__stream(\"any\", req)'",
    ]
    assert srv.get("/threads").splitlines() == [
        "end 1 TypeError: the handler returned an async generator: serve() "
        "runs those for async def handlers only"]
    srv.wait_log(r"\[error\] .*the handler of a 'any' call failed\n"
                 r"Traceback%s\nTypeError: the handler returned an async "
                 r"generator" % TB)


@pytest.mark.parametrize("mode", MODES)
def test_handlers_read_the_request_stream(
        nginx, modules, mode):  # noqa: F811
    mod = modules.write("streams", HANDLERS)
    srv = nginx(server=stream_location("/t", mod, mode, r"""
        -- a generator answers each chunk as it reads it
        local s = assert(rt:__stream("upper", "req", { window = 100 }))
        for _, w in ipairs({ "one", "two", string.rep("x", 1000) }) do
            assert(s:write(w))
            ngx.say(#s:read())
        end
        assert(s:close_write())
        ngx.say(read_all(s))
        -- an ordinary handler reads it to its end, through a small window
        s = assert(rt:__stream("total", nil, { window = 10 }))
        for i = 1, 50 do assert(s:write(string.rep("y", i))) end
        assert(s:close_write())
        ngx.say(read_all(s))
        -- nothing comes after the request of an ordinary call
        show(rt:total())
        -- close_write() before anything was written
        s = assert(rt:__stream("upper", "r"))
        assert(s:close_write())
        ngx.say(read_all(s))
    """))
    assert srv.get("/t").splitlines() == [
        "3", "3", "3",
        "1000X,end 0 nil" if mode == "async" else "1000X,end,end 0 nil",
        "1275 bytes in 50 chunks,end 0 nil",
        "true '0 bytes in 0 chunks'",
        "r,end 0 nil" if mode == "async" else "r,end,end 0 nil",
    ]


@pytest.mark.parametrize("mode,method", [("threads", "both"),
                                         ("async", "duplex")])
def test_reading_and_sending_at_once(nginx, modules, mode,  # noqa: F811
                                     method):
    mod = modules.write("streams", HANDLERS)
    srv = nginx(server=stream_location("/t", mod, mode, r"""
        -- an echo through small windows: neither side may finish alone,
        -- and the handler waits for room and for chunks at the same time
        -- (two threads, or two coroutines on the stream's one fd)
        local s = assert(rt:__stream("%s", nil, { window = 4096 }))
        local writer = ngx.thread.spawn(function()
            for i = 1, 200 do
                assert(s:write(string.rep(string.char(65 + i %% 26), 1000)))
            end
            return s:close_write()
        end)
        local got, last = 0, nil
        while true do
            local chunk, status, msg = s:read()
            if not chunk then ngx.say("end ", status, " ", msg) break end
            got = got + #chunk
            last = chunk
        end
        local _, written = ngx.thread.wait(writer)
        ngx.say(got - #last, " ", last, " ", written)
    """ % method))
    assert srv.get("/t").splitlines() == [
        "end 0 nil", "200000 echoed 200000 true"]


@pytest.mark.parametrize("mode", MODES)
def test_an_exception_mid_stream_ends_it_with_an_error(
        nginx, modules, mode):  # noqa: F811
    mod = modules.write("streams", HANDLERS)
    srv = nginx(server=stream_server(mod, mode, r"""
        ngx.say(read_all(assert(rt:__stream("midway"))))
        ngx.say(read_all(assert(rt:__stream("midway", "error"))))
        ngx.say(read_all(assert(rt:__stream("bad"))))
    """))
    assert srv.get("/t").splitlines() == [
        "a,b,end 1 ValueError: midway",
        "a,b,end 7 seven",
        "ok,end 1 TypeError: a chunk must be bytes or str, not int",
    ]
    # the generator that yielded what cannot be sent was closed
    assert state(srv)["ended"] == ["bad GeneratorExit"]
    for exc in ("ValueError: midway",
                "TypeError: a chunk must be bytes or str, not int"):
        srv.wait_log(r"\[error\] .*the handler of a '(midway|bad)' call "
                     r"failed\nTraceback%s\n%s\n" % (TB, exc))
    assert "seven" not in srv.log()


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("how", ["close", "timeout", "client"])
def test_a_stream_lua_gives_up_closes_its_generator(
        nginx, modules, mode, how):  # noqa: F811
    mod = modules.write("streams", HANDLERS)
    srv = nginx(server=stream_server(mod, mode, r"""
        local how = ngx.var.arg_how
        local s = assert(rt:__stream("forever", nil,
                                     { timeout = how == "timeout" and 0.3
                                                 or 60 }))
        local n = 0
        while true do
            local chunk, err = s:read()
            if not chunk then ngx.say(err) break end
            n = n + 1
            if how == "close" and n == 3 then
                ngx.say(n, " ", chunk, " ", s:close())
                show(s:read())
                break
            end
            if how == "client" then
                ngx.print(chunk, "\n")
                if not ngx.flush(true) then break end
            end
        end
    """, extra="lua_check_client_abort on;"))
    if how == "client":
        sock = socket.create_connection(("127.0.0.1", srv.port))
        sock.sendall(b"GET /t?how=client HTTP/1.1\r\nHost: x\r\n\r\n")
        received = b""
        while b"tick" not in received:
            data = sock.recv(1000)
            assert data, received
            received += data
        sock.close()
    else:
        assert srv.get("/t?how=" + how).splitlines() == (
            ["3 tick true", "nil 'closed'"] if how == "close"
            else ["timeout"])
    # the generator sees the end at its next chunk: closed, its finally
    # block ran
    wait_for(lambda: state(srv)["ended"], 10, "the generator to be closed")
    assert state(srv)["ended"] == ["forever GeneratorExit"]


@pytest.mark.parametrize("mode", MODES)
def test_a_handler_reading_sees_the_stream_closed(
        nginx, modules, mode):  # noqa: F811
    mod = modules.write("streams", HANDLERS)
    srv = nginx(server=stream_server(mod, mode, r"""
        local s = assert(rt:__stream("reads"))
        assert(s:write("x"))
        show(s:close())
    """))
    assert srv.get("/t") == "true\n"
    # its read raised StreamClosed: answered without a traceback
    wait_for(lambda: state(srv)["ended"], 10, "the handler to end")
    assert state(srv)["ended"] == ["reads StreamClosed"]
    assert "call failed" not in srv.log()


@pytest.mark.parametrize("mode", MODES)
def test_the_window_holds_back_a_fast_generator(
        nginx, modules, mode):  # noqa: F811
    mod = modules.write("streams", HANDLERS)
    srv = nginx(http=GO_DICT, server=GO + stream_server(
        mod, mode, r"""
        -- 64 KB chunks against a 256 KB window
        local s = assert(rt:__stream("count", "100,65536",
                                     { window = 262144, timeout = 3600 }))
        ngx.say(#assert(s:read()))
        ngx.flush(true)
    """ + WAIT_FOR_GO + r"""
        local total = 65536
        while true do
            local chunk, status = s:read()
            if not chunk then ngx.say("status ", status) break end
            total = total + #chunk
        end
        ngx.say("bytes ", total)
    """))
    conn, resp = srv.open("/t", timeout=60)
    assert resp.readline().strip() == b"65536"
    # one chunk read, four in the window, the sixth waits to be sent: the
    # generator gets no further while nobody reads
    bound = 2 + 262144 // 65536
    wait_for(lambda: state(srv)["produced"] >= bound, 10,
             "the generator to fill the window")
    assert state(srv)["produced"] == bound
    srv.get("/go")
    rest = resp.read().decode().splitlines()
    conn.close()
    assert rest == ["status 0", "bytes %d" % (100 * 65536 + (
        len("done 100") if mode == "threads" else 0))]
    assert state(srv)["produced"] == 100


def test_the_low_level_stream_calls_and_their_misuse(
        nginx, modules):  # noqa: F811
    mod = modules.write("streams", HANDLERS)
    srv = nginx(server=stream_server(mod, "threads", r"""
        local function wait_state(pattern)
            for _ = 1, 1000 * %d do
                if select(2, rt:state()):find(pattern) then return end
                ngx.sleep(0.01)
            end
            error("timed out waiting for " .. pattern)
        end
        -- the non-blocking forms, by hand: the handler waits on the fd for
        -- a chunk, then for room in the window
        local s = assert(rt:__stream("by_hand", nil, { window = 64 }))
        wait_state('"read": 1')
        assert(s:write("3"))
        assert(s:write("00"))
        assert(s:close_write())
        wait_state('"send": 1')
        local got = {}
        while true do
            local chunk, status = s:read()
            if not chunk then break end
            got[#got + 1] = chunk
        end
        local all = table.concat(got)
        ngx.say(#all, " ", all:sub(1, 8), " ", got[#got])
        -- the stream calls of an ordinary call
        show(rt:misuse())
        -- send() and respond() on a stream
        ngx.say(read_all(assert(rt:__stream("answered"))))
        -- respond() while another thread reads
        s = assert(rt:__stream("busy"))
        ngx.say(s:read())
        assert(s:close_write())
        ngx.say(read_all(s))
    """ % SLOW))
    numbers = "".join("%d," % i for i in range(300))
    last = "waited to read True, to send True"
    not_a_stream = ("'not a stream: this call came from runtime:method(), "
                    "answer it with respond() (or return the answer)'")
    assert srv.get("/t").splitlines() == [
        "%d 0,1,2,3, %s" % (len(numbers) + len(last), last),
        "true '[False, None, [], %s]'" % ", ".join([not_a_stream] * 3),
        "first,a chunk must be bytes or str, not NoneType,a chunk must be "
        "bytes or str, not float,ba,last,end 0 nil",
        "sent while another thread reads",
        "answered,end 0 nil",
    ]
    assert state(srv)["misuse"] == ["task already answered"] * 3 + [
        "another thread reads this task's stream",
        "another thread waits in a send or read of this task: answer once "
        "it returned"]


def test_a_coroutine_left_waiting_on_the_stream_is_woken_at_the_answer(
        nginx, modules):  # noqa: F811
    mod = modules.write("streams", HANDLERS)
    srv = nginx(server=stream_server(mod, "async", r"""
        ngx.say(read_all(assert(rt:__stream("leave"))))
        -- the loop stopped watching that stream's fd before the module
        -- closed it: the next stream's fd (often the same number) works
        local s = assert(rt:__stream("upper", "req", { window = 10 }))
        ngx.say(s:read())
        for i = 1, 5 do
            assert(s:write("chunk" .. i))
            ngx.say(s:read())
        end
        assert(s:close_write())
        ngx.say(read_all(s))
    """))
    assert srv.get("/t").splitlines() == [
        "left,end 0 nil", "req", "CHUNK1", "CHUNK2", "CHUNK3", "CHUNK4",
        "CHUNK5", "end 0 nil"]
    wait_for(lambda: state(srv)["misuse"], 10, "the orphan to wake")
    assert state(srv)["misuse"] == ["task already answered"]
