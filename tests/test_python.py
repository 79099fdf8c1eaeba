# SPDX-License-Identifier: BSD-2-Clause

"""The Python loader (lib_nonblocking_ffi_python3.so) and the nonblocking_ffi
package, on real nginx: `make -C shims/python deps all` first.

Test modules are written to a folder that nginx workers (user nobody) can
read.
"""

import hashlib
import json
import os
import shutil
import signal
import tempfile
import textwrap
import threading
import time

import pytest

from conftest import location
from harness import BUILD, MEMCHECK, NOT_HERE, REPO, SLOW, wait_for
from services import RedisServer

PY = os.path.join(BUILD, "lib_nonblocking_ffi_python3.so")
VENV = os.path.join(BUILD, "python-venv")
ECHO = os.path.join(REPO, "examples", "python", "echo.py")
REDIS_EXAMPLE = os.path.join(REPO, "examples", "python", "redis_streams.py")

LOAD_FAILED = "%s: lib_nonblocking_ffi_init() failed with rc %%d" % PY

PRELUDE = r"""
    local PY = "%s"
    local ECHO = "%s"
    local function pyload(cfg, opts)
        return ngx.load_nonblocking_ffi(PY, cfg, opts or { is_global = true })
    end
""" % (
    PY,
    ECHO,
)

# any lines of a traceback, in a pattern for the error log
TB = r".*(?:\n.*)*?"

pytestmark = pytest.mark.skipif(
    not os.path.exists(PY),
    reason=NOT_HERE + "the Python loader (make python needs python3-dev)")

needs_master = pytest.mark.skipif(
    MEMCHECK, reason="memcheck runs nginx with master_process off"
)


def py_location(path, lua, **kw):
    """A location whose Lua has pyload(cfg, opts) and show(...)."""
    return location(path, PRELUDE + lua, **kw)


@pytest.fixture
def pynginx(nginx):
    """The nginx fixture.

    CPython keeps its own allocator under memcheck: with PYTHONMALLOC=malloc
    valgrind reports uninitialised reads in libpython3.11's int code
    (_PyLong_FromByteArray on zero-length ints, a false positive).  Leaks
    of Python objects are looked for by test_no_references_leak_per_call.
    """

    return nginx


class Modules:
    def __init__(self, folder):
        self.folder = folder

    def write(self, name, source, folder=None):
        """Writes name.py (name may have slashes); returns its path."""
        path = os.path.join(folder or self.folder, name + ".py")
        os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
        with open(path, "w") as f:
            f.write(textwrap.dedent(source))
        os.chmod(path, 0o644)
        return path


@pytest.fixture
def modules():
    """A folder for test modules that nginx workers can read."""
    folder = tempfile.mkdtemp(prefix="nffi-python-")
    os.chmod(folder, 0o755)
    yield Modules(folder)
    shutil.rmtree(folder)


# --- calls, payloads, answers -------------------------------------------


def test_echo_example_and_binary_payloads(pynginx):
    srv = pynginx(
        server=py_location(
            "/t",
            r"""
        local rt = assert(pyload(ECHO .. ",init,2"))
        local all = {}
        for i = 0, 255 do all[#all + 1] = string.char(i) end
        all = table.concat(all)
        for _, p in ipairs({ "hello", "", "\0", "a\0b", all,
                             string.rep(all, 16384) }) do
            local ok, res = rt:echo(p)
            ngx.say(ok, " ", #res, " ", res == p)
        end
        show(rt:echo())
        show(rt:upper("abc"))
        show(rt:fail("x"))
        show(rt:nosuch("x"))
    """,
        )
    )
    assert srv.get("/t").splitlines() == [
        "true 5 true",
        "true 0 true",
        "true 1 true",
        "true 3 true",
        "true 256 true",
        "true 4194304 true",
        "true nil",
        "true 'ABC'",
        "false 1 'ValueError: failing as asked'",
        "false 404 'no method nosuch'",
    ]
    srv.wait_log(
        r"\[error\] .*nonblocking_ffi: the handler of a 'fail' call failed\n"
        r"Traceback \(most recent call last\):\n(.*\n)*"
        r"ValueError: failing as asked"
    )
    srv.wait_log(r"\[info\] .*echo: serving on 2 threads")


LOW_LEVEL = """
    import threading

    import nonblocking_ffi

    KEPT = []


    def answer(task):
        m = task.method
        if m == "bytes":
            task.respond(0, b"\\x00bytes\\xff")
        elif m == "str":
            task.respond(0, "h\\u00e9llo")
        elif m == "none":
            task.respond(0)
        elif m == "bytearray":
            task.respond(0, bytearray(b"ba"))
        elif m == "memoryview":
            task.respond(0, memoryview(b"xmemoryviewx")[1:-1])
        elif m == "empty":
            task.respond(0, b"")
        elif m == "rc":
            task.respond(int(task.request), "rc " + task.request.decode())
        elif m == "rc_nil":
            task.respond(rc=-3)
        elif m == "describe":
            task.respond(0, "%s %r %s %s %r" % (
                task.method, task.request, task.answered, task.cancelled,
                task))
        elif m == "after":
            task.respond(0, "first")
            KEPT.append(task)
        elif m == "report_after":
            kept = KEPT.pop()
            try:
                kept.respond(0, "second")
                second = "no error"
            except RuntimeError as e:
                second = "%s: %s" % (type(e).__name__, e)
            task.respond(0, "%s / answered=%s cancelled=%s %r" % (
                second, kept.answered, kept.cancelled, kept))
        elif m == "drop":
            pass  # no answer: dropping the task answers it
        else:
            task.respond(404, "no method " + m)


    def poll_loop(tq):
        while True:
            task = nonblocking_ffi.poll(tq)
            if task is None:
                return
            answer(task)
            task = None


    def batch_loop(tq):
        while True:
            tasks = nonblocking_ffi.poll_batch(tq, max=8)
            if not tasks:
                return
            for task in tasks:
                answer(task)
            tasks = task = None


    def init(rest, tq):
        loop = batch_loop if rest == "batch" else poll_loop
        threading.Thread(target=loop, args=(tq,), daemon=True).start()
"""


@pytest.mark.parametrize("mode", ["poll", "batch"])
def test_low_level_poll_and_respond(pynginx, modules, mode):
    mod = modules.write("lowlevel", LOW_LEVEL)
    srv = pynginx(
        server=py_location(
            "/t",
            r"""
        local rt = assert(pyload("%s,init,%s"))
        show(rt:bytes())
        show(rt:str())
        show(rt:none())
        show(rt:bytearray())
        show(rt:memoryview())
        show(rt:empty())
        show(rt:rc("7"))
        show(rt:rc("-1"))
        show(rt:rc_nil())
        show(rt:describe("x"))
        show(rt:describe())
        show(rt:after())
        show(rt:report_after())
        show(rt:drop())
        show(rt:other())
    """ % (mod, mode),
        )
    )
    assert srv.get("/t").splitlines() == [
        "true '\0bytes\xff'".encode("latin-1").decode("utf-8", "replace"),
        "true 'h\u00e9llo'",
        "true nil",
        "true 'ba'",
        "true 'memoryview'",
        "true ''",
        "false 7 'rc 7'",
        "false -1 'rc -1'",
        "false -3 nil",
        "true 'describe b'x' False False "
        "<nonblocking_ffi.Task method='describe' answered=False>'",
        "true 'describe None False False "
        "<nonblocking_ffi.Task method='describe' answered=False>'",
        "true 'first'",
        "true 'RuntimeError: task already answered / answered=True "
        "cancelled=False <nonblocking_ffi.Task method='after' "
        "answered=True>'",
        "false 1 'the Python runtime dropped the call without answering it'",
        "false 404 'no method other'",
    ]
    srv.wait_log(
        r'\[warn\] .*nonblocking_ffi python: a call of method "drop" was '
        r"dropped without an answer: answered with rc 1"
    )


BAD_ARGUMENTS = """
    import asyncio

    import nonblocking_ffi

    TQ = None
    RESULTS = []
    serve = nonblocking_ffi.serve


    def attempt(what, call):
        try:
            call()
            RESULTS.append(what + ": no error")
        except Exception as e:
            RESULTS.append("%s: %s: %s" % (what, type(e).__name__, e))


    async def coroutine_handler(task):
        return None


    def handle(task):
        del RESULTS[:]
        attempt("rc str", lambda: task.respond("0", "x"))
        attempt("rc float", lambda: task.respond(1.5))
        attempt("rc huge", lambda: task.respond(2**40))
        attempt("no rc", lambda: task.respond())
        attempt("data int", lambda: task.respond(0, 42))
        attempt("data list", lambda: task.respond(0, ["x"]))
        attempt("data surrogate", lambda: task.respond(0, "\\udc80"))
        attempt("unknown keyword", lambda: task.respond(0, dat="x"))
        attempt("poll str", lambda: nonblocking_ffi.poll("tq"))
        attempt("poll unknown", lambda: nonblocking_ffi.poll(12345))
        attempt("poll negative", lambda: nonblocking_ffi.poll(-1))
        attempt("poll huge", lambda: nonblocking_ffi.poll(2**80))
        attempt("poll_batch max 0", lambda: nonblocking_ffi.poll_batch(TQ, 0))
        attempt("poll_batch max", lambda: nonblocking_ffi.poll_batch(TQ, 5000))
        attempt("take max 0", lambda: nonblocking_ffi.take(TQ, 0))
        attempt("take unknown", lambda: nonblocking_ffi.take(12345))
        attempt("queue_fd str", lambda: nonblocking_ffi.queue_fd("tq"))
        attempt("log level", lambda: nonblocking_ffi.log(99, "x"))
        attempt("log bytes", lambda: nonblocking_ffi.log(4, b"x"))
        attempt("new Task", lambda: nonblocking_ffi.Task())
        attempt("serve tq", lambda: nonblocking_ffi.serve(1, print))
        attempt("serve handler", lambda: nonblocking_ffi.serve(TQ, 42))
        attempt("serve threads", lambda: nonblocking_ffi.serve(TQ, print, 0))
        attempt("serve batch", lambda: serve(TQ, print, batch=0))
        attempt("serve hook", lambda: serve(TQ, print, on_stop=1))
        attempt("serve spin", lambda: serve(TQ, print, spin=-1))
        attempt(
            "serve async threads",
            lambda: nonblocking_ffi.serve(TQ, coroutine_handler, threads=2),
        )
        attempt("Error rc 0", lambda: nonblocking_ffi.Error(0, "x"))
        attempt("Error rc str", lambda: nonblocking_ffi.Error("1", "x"))
        attempt("Error rc huge", lambda: nonblocking_ffi.Error(2**40, "x"))
        # the task still takes its one answer
        return "\\n".join(RESULTS)


    def init(rest, tq):
        global TQ
        TQ = tq
        nonblocking_ffi.serve(tq, handle)
"""


def test_bad_arguments_raise_and_the_task_still_answers(pynginx, modules):
    mod = modules.write("badargs", BAD_ARGUMENTS)
    srv = pynginx(
        server=py_location(
            "/t",
            r"""
        local rt = assert(pyload("%s,init"))
        local ok, res = rt:check()
        ngx.say(ok)
        ngx.say(res)
    """ % mod,
        )
    )
    assert srv.get("/t").splitlines() == [
        "true",
        "rc str: TypeError: 'str' object cannot be interpreted as an integer",
        "rc float: TypeError: 'float' object cannot be interpreted as an "
        "integer",
        "rc huge: OverflowError: signed integer is greater than maximum",
        "no rc: TypeError: respond() missing required argument 'rc' (pos 1)",
        "data int: TypeError: data must be bytes, str or None, not int",
        "data list: TypeError: data must be bytes, str or None, not list",
        "data surrogate: UnicodeEncodeError: 'utf-8' codec can't encode "
        "character '\\udc80' in position 0: surrogates not allowed",
        "unknown keyword: TypeError: 'dat' is an invalid keyword argument "
        "for respond()",
        "poll str: TypeError: tq must be the int given to the configured "
        "function, not str",
        "poll unknown: ValueError: tq is not a queue of this worker: pass "
        "the int given to the configured function",
        "poll negative: ValueError: tq is not a queue of this worker: pass "
        "the int given to the configured function",
        "poll huge: ValueError: tq is not a queue of this worker: pass "
        "the int given to the configured function",
        "poll_batch max 0: ValueError: max must be 1 to 1024",
        "poll_batch max: ValueError: max must be 1 to 1024",
        "take max 0: ValueError: max must be 1 to 1024",
        "take unknown: ValueError: tq is not a queue of this worker: pass "
        "the int given to the configured function",
        "queue_fd str: TypeError: tq must be the int given to the "
        "configured function, not str",
        "log level: ValueError: level must be LOG_EMERG (1) to LOG_DEBUG (8), "
        "not 99",
        "log bytes: TypeError: log() argument 2 must be str, not bytes",
        "new Task: TypeError: cannot create 'nonblocking_ffi.Task' instances",
        "serve tq: ValueError: tq is not a queue of this worker: pass the int "
        "given to the configured function",
        "serve handler: TypeError: handler must be callable",
        "serve threads: ValueError: threads must be an int >= 1, not 0",
        "serve batch: ValueError: batch must be 1 to 1024, not 0",
        "serve hook: TypeError: on_stop must be callable",
        "serve spin: ValueError: spin must be an int >= 0, not -1",
        "serve async threads: ValueError: an async handler runs on one event "
        "loop: threads must be 1",
        "Error rc 0: ValueError: Error needs an int rc other than 0 (a C "
        "int), not 0",
        "Error rc str: ValueError: Error needs an int rc other than 0 (a C "
        "int), not '1'",
        "Error rc huge: ValueError: Error needs an int rc other than 0 (a C "
        "int), not 1099511627776",
    ]


HANDLERS = """
    import asyncio

    import nonblocking_ffi
    from nonblocking_ffi import Error


    def handle(task):
        m = task.method
        if m == "ok":
            return "ok " + task.request.decode()
        if m == "raise":
            raise KeyError("k")
        if m == "raise_bare":
            raise RuntimeError()
        if m == "error":
            raise Error(409, "conflict")
        if m == "error_bytes":
            raise Error(-2, b"\\x00raw")
        if m == "error_nil":
            raise Error(3)
        if m == "error_object":
            raise Error(4, ["not", "text"])
        if m == "bad_type":
            return 42
        if m == "surrogate":
            return "\\udc80"
        if m == "error_surrogate":
            raise Error(6, "\\udc80x")
        if m == "respond_self":
            task.respond(5, "self")
            return "ignored"
        if m == "respond_then_raise":
            task.respond(0, "answered")
            raise ValueError("after the answer")
        if m == "exit":
            raise SystemExit(3)
        return None


    def coroutine(task):
        return asyncio.sleep(0)


    async def handle_async(task):
        if task.method == "cancelled":
            raise asyncio.CancelledError()
        await asyncio.sleep(0)
        return handle(task)


    def init(rest, tq):
        if rest == "async":
            nonblocking_ffi.serve(tq, handle_async)
        elif rest == "coroutine":
            nonblocking_ffi.serve(tq, coroutine)
        else:
            nonblocking_ffi.serve(tq, handle, threads=2)
"""

HANDLER_CALLS = r"""
    show(rt:ok("x"))
    show(rt:raise())
    show(rt:raise_bare())
    show(rt:error())
    local ok, rc, res = rt:error_bytes()
    show(ok, rc, res == "\0raw")
    show(rt:error_nil())
    show(rt:error_object())
    show(rt:bad_type())
    show(rt:surrogate())
    show(rt:error_surrogate())
    show(rt:respond_self())
    show(rt:respond_then_raise())
    show(rt:exit())
    show(rt:none())
    show(rt:cancelled())
"""

HANDLER_ANSWERS = [
    "true 'ok x'",
    "false 1 'KeyError: 'k''",
    "false 1 'RuntimeError'",
    "false 409 'conflict'",
    "false -2 true",
    "false 3 nil",
    "false 4 '['not', 'text']'",
    "false 1 'TypeError: data must be bytes, str or None, not int'",
    "false 1 'UnicodeEncodeError: 'utf-8' codec can't encode character "
    "'\\udc80' in position 0: surrogates not allowed'",
    "false 6 ''\\udc80x''",
    "false 5 'self'",
    "true 'answered'",
    "false 1 'SystemExit: 3'",
    "true nil",
]


@pytest.mark.parametrize("mode", ["threads", "async"])
def test_handler_results_and_exceptions(pynginx, modules, mode):
    mod = modules.write("handlers", HANDLERS)
    srv = pynginx(
        server=py_location(
            "/t",
            'local rt = assert(pyload("%s,init,%s"))\n%s'
            % (mod, mode, HANDLER_CALLS),
        )
        + py_location(
            "/coroutine",
            r"""
        local rt = assert(pyload("%s,init,coroutine"))
        show(rt:x())
    """ % mod,
        )
    )
    assert srv.get("/t").splitlines() == HANDLER_ANSWERS + [
        "false 1 'CancelledError'" if mode == "async" else "true nil"
    ]
    # exceptions other than Error log their traceback
    for method, exc in [
        ("raise", "KeyError: 'k'"),
        ("raise_bare", "RuntimeError"),
        ("bad_type", "TypeError: data must be bytes, str or None, not int"),
        ("respond_then_raise", "ValueError: after the answer"),
        ("exit", "SystemExit: 3"),
    ]:
        srv.wait_log(
            r"\[error\] .*the handler of a '%s' call failed\n"
            r"Traceback%s\n%s\n" % (method, TB, exc)
        )
    assert "conflict" not in srv.log()
    if mode == "threads":
        assert srv.get("/coroutine").splitlines() == [
            "false 1 'TypeError: the handler returned an awaitable: serve() "
            "awaits handlers that are async def functions only'"
        ]


# --- loading ---------------------------------------------------------------

GOOD = """
    import nonblocking_ffi

    CONSTANT = 42


    class Refused(Exception):
        pass


    def init(rest, tq):
        nonblocking_ffi.serve(tq, lambda task: "good " + str(rest))


    def raises(rest, tq):
        return 1 / 0


    def returns_7(rest, tq):
        return 7


    def returns_huge(rest, tq):
        return 2**40


    def returns_object(rest, tq):
        nonblocking_ffi.serve(tq, lambda task: "object")
        return object()


    def bad_serve(rest, tq):
        nonblocking_ffi.serve(tq, lambda task: None, threads=0)


    def refusing_start(rest, tq):
        def start():
            raise Refused("no database")

        nonblocking_ffi.serve(tq, lambda task: None, on_start=start)


    def refusing_async_start(rest, tq):
        async def start():
            raise Refused("no database either")

        async def handle(task):
            return None

        nonblocking_ffi.serve(tq, handle, on_start=start)
"""


def test_load_failures_answer_an_rc_and_log_why(pynginx, modules):
    good = modules.write("good", GOOD)
    broken = modules.write(
        "broken", 'raise RuntimeError("broken at import")\n'
    )
    syntax = modules.write("syntax", "def f(:\n")
    srv = pynginx(
        server=py_location(
            "/t",
            r"""
        local cfgs = {
            "nocomma", ",init", "good,", "?,init",
            "no_such_module_xyz,init", "%(broken)s,init", "%(syntax)s,init",
            "%(good)s,missing", "%(good)s,CONSTANT", "%(good)s,Refused.nope",
            "%(good)s,raises", "%(good)s,returns_7", "%(good)s,returns_huge",
            "%(good)s,bad_serve", "%(good)s,refusing_start",
            "%(good)s,refusing_async_start",
        }
        show(pyload(nil))
        for _, cfg in ipairs(cfgs) do
            show(pyload(cfg))
        end
        -- the interpreter is fine, and so are the runtimes that loaded
        local rt = assert(pyload("%(good)s,init,after failures"))
        show(rt:x())
        rt = assert(pyload("%(good)s,returns_object"))
        show(rt:x())
    """ % {"good": good, "broken": broken, "syntax": syntax},
        )
    )
    bad_cfg = ': bad cfg: expected "module[?],function[,rest]"'
    reasons = [bad_cfg] * 5 + [
        ': cannot import "no_such_module_xyz" (cfg "no_such_module_xyz,'
        "init\"): ModuleNotFoundError: No module named "
        "'no_such_module_xyz''",
        ': cannot import "%s" (cfg "%s,init"): RuntimeError: broken at '
        "import" % (broken, broken),
        ': cannot import "%s" (cfg "%s,init"): SyntaxError: ' % (syntax,
                                                                 syntax),
        ': module "good" (%s) has no function "missing"' % good,
        ': "good.CONSTANT" is not callable but int',
        ': module "good" (%s) has no function "Refused.nope"' % good,
        ': good.raises() raised (cfg "%s,raises"): ZeroDivisionError: '
        "division by zero" % good,
        ": good.returns_7() returned 7: the load failed",
        ": good.returns_huge() returned 1099511627776, out of range",
        ': good.bad_serve() raised (cfg "%s,bad_serve"): ValueError: '
        "threads must be an int >= 1, not 0" % good,
        ': good.refusing_start() raised (cfg "%s,refusing_start"): '
        "Refused: no database" % good,
        ': good.refusing_async_start() raised (cfg "%s,'
        'refusing_async_start"): Refused: no database either' % good,
    ]
    rcs = [2, 2, 2, 2, 2, 4, 4, 4, 5, 5, 5, 6, 7, 6, 6, 6, 6]
    lines = srv.get("/t").splitlines()
    assert lines[-2:] == ["true 'good after failures'", "true 'object'"]
    # the reason of each failure reaches Lua, cut to the error's room
    for line, rc, reason in zip(lines, rcs, reasons):
        expected = "nil '%s%s" % (LOAD_FAILED % rc, reason)
        assert line.startswith(expected[:len(line) - 1]), (line, expected)
    assert len(lines) == len(rcs) + 2

    for line in [
        r'cfg is nil: expected "module\[\?\],function\[,rest\]"',
        r'malformed cfg "nocomma": expected "module\[\?\],function\[,rest\]"',
        r'malformed cfg ",init": the module is empty',
        r'malformed cfg "good,": the function is empty',
        r'malformed cfg "\?,init": the module is empty',
        r'cannot import "no_such_module_xyz" \(cfg "no_such_module_xyz,init"\)'
        r":\nTraceback@TB@ModuleNotFoundError: No module named "
        r"'no_such_module_xyz'\n",
        r'cannot import "%s"@TB@\nRuntimeError: broken at import\n' % broken,
        r'cannot import "%s"@TB@\nSyntaxError: invalid syntax\n' % syntax,
        r'module "good" \(%s\) has no function "missing"' % good,
        r'"good.CONSTANT" is not callable but int',
        r'module "good" \(%s\) has no function "Refused.nope"' % good,
        r'good.raises\(\) raised \(cfg "%s,raises"\):\n'
        r"Traceback \(most recent call last\):\n"
        r'  File "%s", line \d+, in raises\n'
        r"@TB@ZeroDivisionError: division by zero\n" % (good, good),
        r"good.returns_7\(\) returned 7: the load failed",
        r"good.returns_huge\(\) returned 1099511627776, out of range",
        r"good.bad_serve\(\) raised@TB@\nValueError: threads must be an "
        r"int >= 1, not 0\n",
        r"good.refusing_start\(\) raised@TB@\ngood.Refused: no database\n",
        r"good.refusing_async_start\(\) raised@TB@\ngood.Refused: no "
        r"database either\n",
    ]:
        line = line.replace("@TB@", TB)
        srv.wait_log(r"\[error\] .*nonblocking_ffi python: " + line)


def test_a_path_module_is_that_file_or_the_load_fails(pynginx, modules):
    # the same base name in two folders, and the name of a standard module
    # the interpreter has imported already: each would silently be the
    # module imported first
    first = modules.write("a/twin", GOOD)
    second = modules.write("b/twin", GOOD)
    shadow = modules.write("logging", GOOD)
    srv = pynginx(
        server=py_location(
            "/t",
            r"""
        show(pyload("%s,init") ~= nil)
        show(pyload("%s,init"))
        show(pyload("%s,init"))
    """ % (first, second, shadow),
        )
    )
    lines = srv.get("/t").splitlines()
    assert lines[:2] == [
        "true",
        "nil '%s: cannot import \"%s\": the name \"twin\" is already %s "
        "(rename the file)'" % (LOAD_FAILED % 4, second, first),
    ]
    assert lines[2].startswith(
        "nil '%s: cannot import \"%s\": the name \"logging\" is already /"
        % (LOAD_FAILED % 4, shadow))
    assert lines[2].endswith("(rename the file)'")
    srv.wait_log(
        r'cannot import "%s": the name "twin" is already %s \(rename'
        % (second, first)
    )
    srv.wait_log(
        r'cannot import "%s": the name "logging" is already /' % shadow
    )


def test_interpreter_that_cannot_start_fails_every_load(pynginx, modules):
    lua = r"""
        show(pyload(ngx.var.arg_lib and ngx.var.arg_lib .. ",init"
                    or ECHO .. ",init"))
        show(pyload(ECHO .. ",init_async"))
    """
    # no standard library there
    srv = pynginx(
        main="env PYTHONHOME=/nonexistent;", server=py_location("/t", lua)
    )
    assert srv.get("/t").splitlines() == ["nil '%s'" % (LOAD_FAILED % 3)] * 2
    srv.wait_log(
        r"\[error\] .*nonblocking_ffi python: the interpreter did not start: "
        r"init_fs_encoding: failed to get the Python codec"
    )
    srv.wait_log(
        r"\[error\] .*nonblocking_ffi python: the interpreter failed to start "
        r"in this worker before \(see above\)"
    )

    # a loader without its package (python/) beside it
    lonely = os.path.join(modules.folder, "lib_nonblocking_ffi_python3.so")
    shutil.copy(PY, lonely)
    os.chmod(lonely, 0o755)
    lua = r"""
        show(ngx.load_nonblocking_ffi("%s", ECHO .. ",init"))
        show(ngx.load_nonblocking_ffi("%s", ECHO .. ",init_async"))
    """ % (
        lonely,
        lonely,
    )
    srv = pynginx(server=py_location("/t", lua))
    failed = "nil '%s: lib_nonblocking_ffi_init() failed with rc 3'" % lonely
    assert srv.get("/t").splitlines() == [failed] * 2
    srv.wait_log(
        r"\[error\] .*nonblocking_ffi python: cannot import the "
        r"nonblocking_ffi package \(is python/ beside the loader\?\):\n"
        r"ModuleNotFoundError: No module named 'nonblocking_ffi'"
    )
    srv.wait_log(r"the interpreter failed to start in this worker before")


CFG_FORMS = """
    import nonblocking_ffi


    def init(rest, tq):
        answer = "%s %r %s" % (__name__, rest, type(tq).__name__)
        nonblocking_ffi.serve(tq, lambda task: answer)


    class App:
        @staticmethod
        def start(rest, tq):
            nonblocking_ffi.serve(tq, lambda task: "App.start %r" % rest)
"""


def test_cfg_forms_module_paths_and_pythonpath(pynginx, modules):
    cfgmod = modules.write("cfgmod", CFG_FORMS)
    folder = os.path.dirname(cfgmod)
    other = tempfile.mkdtemp(prefix="nffi-pythonpath-", dir=folder)
    os.chmod(other, 0o755)
    modules.write("onpath", CFG_FORMS, folder=other)
    modules.write("pkg/__init__", "", folder=other)
    modules.write("pkg/sub", CFG_FORMS, folder=other)
    srv = pynginx(
        main="env PYTHONPATH=%s;" % other,
        server=py_location(
            "/t",
            r"""
        for _, cfg in ipairs({
            "%(dir)s/cfgmod,init",
            "%(dir)s/cfgmod.py,init,",
            '%(dir)s/cfgmod.py,init,a,b,{"x": [1, 2]}',
            "%(dir)s/cfgmod.py,App.start,dotted",
            "onpath,init,from PYTHONPATH",
            "pkg.sub,init,in a package",
        }) do
            local rt, err = pyload(cfg)
            if rt then show(rt:x()) else show(rt, err) end
        end
    """ % {"dir": folder},
        ),
    )
    assert srv.get("/t").splitlines() == [
        "true 'cfgmod None int'",
        "true 'cfgmod '' int'",
        "true 'cfgmod 'a,b,{\"x\": [1, 2]}' int'",
        "true 'App.start 'dotted''",
        "true 'onpath 'from PYTHONPATH' int'",
        "true 'pkg.sub 'in a package' int'",
    ]


RELOADED = """
    import nonblocking_ffi

    VERSION = %r


    def init(rest, tq):
        nonblocking_ffi.serve(tq, lambda task: VERSION + " " + rest)
"""


def test_question_mark_reimports_a_changed_module(pynginx, modules):
    mod = modules.write("reloaded", RELOADED % "one")
    srv = pynginx(
        server=py_location(
            "/t",
            r"""
        local rt = assert(pyload(ngx.unescape_uri(ngx.var.arg_cfg)))
        show(rt:version())
    """,
        )
    )

    def version(cfg):
        return srv.get("/t?cfg=" + cfg.replace("?", "%3F")).strip()

    assert version(mod + "?,init,a") == "true 'one a'"
    modules.write("reloaded", RELOADED % "version two")
    # without "?" the module imported before is used
    assert version(mod + ",init,b") == "true 'one b'"
    assert version(mod + "?,init,c") == "true 'version two c'"
    assert version("reloaded,init,d") == "true 'version two d'"
    # a runtime loaded before keeps its code (and the load is cached)
    assert version(mod + "?,init,a") == "true 'one a'"


# --- concurrency -----------------------------------------------------------


def test_asyncio_handler_answers_100_concurrent_calls_out_of_order(pynginx):
    srv = pynginx(
        server=py_location(
            "/t",
            r"""
        local rt = assert(pyload(ECHO .. ",init_async"))
        local order, threads = {}, {}
        ngx.update_time()
        local start = ngx.now()
        for i = 1, 100 do
            threads[i] = ngx.thread.spawn(function()
                -- the later a call is made, the sooner it is answered
                local delay = tostring((100 - i) * 10)
                local ok, res = rt:sleep(delay)
                order[#order + 1] = i
                return ok and res == delay
            end)
        end
        local right = 0
        for i = 1, 100 do
            local _, ok = ngx.thread.wait(threads[i])
            right = right + (ok and 1 or 0)
        end
        ngx.update_time()
        ngx.say(right, " answers right")
        ngx.say(order[1] > 90, " ", order[100] < 10)
        ngx.say(ngx.now() - start)
    """,
        )
    )
    lines = srv.get("/t").splitlines()
    assert lines[:2] == ["100 answers right", "true true"]
    # one after the other they would take 49.5 s
    assert float(lines[2]) < 5 * SLOW


METHODS = """
    import nonblocking_ffi


    def handle(task):
        return task.method


    async def handle_async(task):
        return task.method


    def init(rest, tq):
        nonblocking_ffi.serve(tq, handle_async if rest == "async" else handle)
"""


@pytest.mark.parametrize("mode", ["threads", "async"])
def test_each_call_sees_its_own_method_name(pynginx, modules, mode):
    # the loader shares the str of a method name with the next call of the
    # same name: names that differ in length only, or after 64 bytes, and
    # names too long to be kept, one after the other
    mod = modules.write("methods", METHODS)
    srv = pynginx(
        server=py_location(
            "/t",
            r"""
        local rt = assert(pyload("%s,init,%s"))
        local long = string.rep("m", 64)
        local names = { "echo", "echo", "ohce", "ech", "echo2", long,
                        long:sub(1, 63) .. "n", long .. "x", long .. "y",
                        long .. "y", long, "echo", "é", "e" }
        for _, name in ipairs(names) do
            local ok, res = rt[name](rt, "x")
            ngx.say(ok and res == name and "same" or tostring(res))
        end
    """ % (mod, mode),
        )
    )
    assert srv.get("/t").splitlines() == ["same"] * 14


def test_plain_handler_threads_answer_in_parallel(pynginx, modules):
    mod = modules.write(
        "blocking",
        """
        import threading
        import time

        import nonblocking_ffi

        NAMES = set()


        def handle(task):
            NAMES.add(threading.current_thread().name)
            time.sleep(0.3)  # releases the GIL, as I/O does
            return ",".join(sorted(NAMES))


        def init(rest, tq):
            nonblocking_ffi.serve(tq, handle, threads=4)
        """,
    )
    srv = pynginx(
        server=py_location(
            "/t",
            r"""
        local rt = assert(pyload("%s,init"))
        ngx.update_time()
        local start = ngx.now()
        local threads = {}
        for i = 1, 4 do
            threads[i] = ngx.thread.spawn(function() return rt:block() end)
        end
        for i = 1, 4 do ngx.thread.wait(threads[i]) end
        ngx.update_time()
        ngx.say(ngx.now() - start)
        show(rt:names())
    """ % mod,
        )
    )
    elapsed, names = srv.get("/t").splitlines()
    assert float(elapsed) < 1.1 * SLOW
    assert names == "true 'nffi-poll-0,nffi-poll-1,nffi-poll-2,nffi-poll-3'"


LEAKS = """
    import gc
    import sys

    import nonblocking_ffi


    def handle(task):
        if task.method == "blocks":
            gc.collect()
            return str(sys.getallocatedblocks())
        if task.method == "error":
            raise nonblocking_ffi.Error(2, task.request)
        if task.method == "poll":
            # the low level: a task answered by hand
            task.respond(0, bytearray(task.request))
            return None
        return task.request


    async def handle_async(task):
        return handle(task)


    def init(rest, tq):
        if rest == "async":
            nonblocking_ffi.serve(tq, handle_async)
        else:
            nonblocking_ffi.serve(tq, handle, threads=2)
"""


@pytest.mark.parametrize("mode", ["threads", "async"])
def test_no_references_leak_per_call(pynginx, modules, mode):
    mod = modules.write("leaks", LEAKS)
    srv = pynginx(
        server=py_location(
            "/t",
            r"""
        local rt = assert(pyload("%s,init,%s"))
        local function calls(n)
            for i = 1, n do
                local req = string.rep("x", i %% 300)
                assert(select(2, rt:echo(req)) == req)
                assert(select(3, rt:error(req)) == req)
                assert(select(2, rt:poll(req)) == req)
                rt:echo()
            end
        end
        calls(300)
        local _, before = rt:blocks()
        calls(tonumber(ngx.var.arg_n))
        local _, after = rt:blocks()
        ngx.say(after - before)
    """ % (mod, mode),
        )
    )
    # 4 calls per round: a Task, its request and answer objects per call
    # would leave thousands of blocks behind
    assert int(srv.get("/t?n=%d" % (300 if MEMCHECK else 2000))) < 100


SHARED = """
    import sys
    import threading

    import nonblocking_ffi

    LOADS = []


    def init(rest, tq):
        LOADS.append(rest)

        def handle(task):
            return "%s %d %s" % (rest, id(sys), " ".join(LOADS))

        nonblocking_ffi.serve(tq, handle)


    async def handle_async(task):
        return "async %d" % id(sys)


    def init_async(rest, tq):
        nonblocking_ffi.serve(tq, handle_async)
"""


def test_runtimes_share_one_interpreter(pynginx, modules):
    mod = modules.write("shared", SHARED)
    srv = pynginx(
        server=py_location(
            "/t",
            r"""
        local a = assert(pyload("%(mod)s,init,a"))
        local b = assert(pyload("%(mod)s,init,b"))
        local c = assert(pyload("%(mod)s,init_async"))
        local d = assert(pyload(ECHO .. ",init"))
        local _, ra = a:x()
        local _, rb = b:x()
        local _, rc = c:x()
        local ida, idb, idc = ra:match(" (%%d+) "), rb:match(" (%%d+) "),
                              rc:match(" (%%d+)$")
        ngx.say((ra:gsub(" %%d+ ", " ")), " / ", (rb:gsub(" %%d+ ", " ")))
        ngx.say(ida == idb, " ", idb == idc)
        show(d:echo("d"))
    """ % {"mod": mod},
        )
    )
    assert srv.get("/t").splitlines() == [
        "a a b / b a b",
        "true true",
        "true 'd'",
    ]


# --- lifecycle -------------------------------------------------------------

LIFECYCLE = """
    import asyncio
    import threading

    import nonblocking_ffi

    EVENTS = []
    CANCELLED = []


    def init_sync(rest, tq):
        nonblocking_ffi.serve(
            tq,
            lambda task: "sync",
            threads=3,
            on_start=lambda: EVENTS.append("sync start"),
            on_stop=lambda: EVENTS.append("sync stop"),
        )


    async def handle_async(task):
        if task.method == "wait_cancel":
            while not task.cancelled:
                await asyncio.sleep(0.005)
            CANCELLED.append(task.method)
            return "too late"
        return "async"


    def init_async(rest, tq):
        async def start():
            EVENTS.append("async start")

        async def stop():
            EVENTS.append("async stop")

        nonblocking_ffi.serve(tq, handle_async, on_start=start, on_stop=stop)


    def report(task):
        if task.method == "threads":
            return str(threading.active_count())
        return " ".join(sorted(EVENTS + CANCELLED))


    def init_report(rest, tq):
        nonblocking_ffi.serve(tq, report)
"""


def test_unload_stops_the_threads_and_runs_on_stop(pynginx, modules):
    mod = modules.write("lifecycle", LIFECYCLE)
    srv = pynginx(
        server=py_location(
            "/t",
            r"""
        local report = assert(pyload("%(mod)s,init_report"))
        local _, before = report:threads()
        local s = assert(pyload("%(mod)s,init_sync"))
        local a = assert(pyload("%(mod)s,init_async"))
        show(s:x())
        show(a:x())
        show(a:wait_cancel("x", 0.05))
        local _, during = report:threads()
        ngx.say(during - before, " more threads")
        s:__unload()
        a:__unload()
        show(s:x())
        show(a:x())
        -- the threads end, the hooks run, the cancel was seen
        local deadline = ngx.now() + 10 * %(slow)d
        local _, now, events
        repeat
            ngx.sleep(0.01)
            ngx.update_time()
            _, now = report:threads()
            _, events = report:events()
        until (now == before and events:find("sync stop", 1, true)
               and events:find("async stop", 1, true)
               and events:find("wait_cancel", 1, true))
              or ngx.now() > deadline
        ngx.say(now - before, " more threads")
        ngx.say(events)
    """ % {"mod": mod, "slow": SLOW},
        )
    )
    assert srv.get("/t").splitlines() == [
        "true 'sync'",
        "true 'async'",
        "false 'timeout'",
        # 3 poll threads, and the event loop's thread: it takes its calls
        # itself, no poll thread feeds it
        "4 more threads",
        "false 'unloaded'",
        "false 'unloaded'",
        "0 more threads",
        "async start async stop sync start sync stop wait_cancel",
    ]


def test_worker_exits_without_waiting_for_busy_python_threads(
    pynginx, modules
):
    mod = modules.write(
        "busy",
        """
        import time

        import nonblocking_ffi


        def handle(task):
            time.sleep(60)


        def init(rest, tq):
            nonblocking_ffi.serve(tq, handle)
        """,
    )
    srv = pynginx(
        server=py_location(
            "/t",
            r"""
        local rt = assert(pyload("%s,init"))
        show(rt:sleep("x", 0.05))
    """ % mod,
        )
    )
    assert srv.get("/t").strip() == "false 'timeout'"
    start = time.monotonic()
    srv.stop()
    assert time.monotonic() - start < 10 * SLOW


@needs_master
def test_hup_reload_with_the_interpreter_loaded(pynginx):
    srv = pynginx(
        init_worker=r"""
        package.loaded.echo_rt = assert(ngx.load_nonblocking_ffi(
            "%s", "%s,init_async", { is_global = true }))
    """ % (PY, ECHO),
        server=py_location(
            "/t",
            r"""
        local rt = package.loaded.echo_rt
        local ok, res = rt:sleep(ngx.var.arg_ms or "0")
        ngx.say(ngx.worker.pid(), " ", ok, " ", res)
    """,
        )
        + location("/pending", "ngx.say(package.loaded.echo_rt:__pending())"),
    )
    old_pid = srv.get("/t").split()[0]
    slow = {}

    def slow_call():
        slow["answer"] = srv.get("/t?ms=500")

    caller = threading.Thread(target=slow_call)
    caller.start()
    # the slow call is in the old worker when the HUP comes
    wait_for(lambda: srv.get("/pending").strip() == "1", 10 * SLOW,
             "the slow call")
    srv.signal(signal.SIGHUP)
    new_pid = wait_for(
        lambda: (lambda pid: pid if pid != old_pid else None)(
            srv.get("/t").split()[0]
        ),
        10,
        "a new worker",
    )
    caller.join(10 * SLOW)
    assert slow["answer"].split()[1:] == ["true", "500"]
    srv.wait_log(r"worker process %s exited with code 0" % old_pid)
    assert srv.get("/t").split() == [new_pid, "true", "0"]


# --- logging, environment, signals ----------------------------------------

LOGGING = """
    import logging
    import sys
    import threading
    import warnings

    import nonblocking_ffi

    log = logging.getLogger("pylog")
    log.setLevel(logging.DEBUG)


    def handle(task):
        m = task.method
        if m == "levels":
            log.debug("debug record")
            log.info("info record")
            log.warning("warning record")
            log.error("error record")
            log.critical("critical record")
        elif m == "thread":
            thread = threading.Thread(
                target=lambda: log.warning(
                    "from the thread %s", threading.current_thread().name
                ),
                name="logger-thread",
            )
            thread.start()
            thread.join()
        elif m == "exception":
            try:
                {}["missing"]
            except KeyError:
                log.exception("caught it")
        elif m == "print":
            print("printed", "line")
            sys.stderr.write("stderr line\\npartial")
            sys.stderr.write(" line\\n")
        elif m == "thread_crash":
            thread = threading.Thread(target=lambda: 1 / 0, name="crasher")
            thread.start()
            thread.join()
        elif m == "warning":
            warnings.warn("mind the gap")
        elif m == "direct":
            nonblocking_ffi.log(nonblocking_ffi.LOG_NOTICE, "direct notice")
            nonblocking_ffi.log(nonblocking_ffi.LOG_ERR, "")
        elif m == "long":
            # nginx cuts entries at 2 KB: this one comes in pieces
            lines = ["line %04d" % i for i in range(400)]
            log.warning("long start\\n%s\\nlong end", "\\n".join(lines))
            log.warning("x" * 5000)
        return "logged"


    def init(rest, tq):
        nonblocking_ffi.serve(tq, handle, threads=2)
"""


def test_python_logging_reaches_the_error_log(pynginx, modules):
    mod = modules.write("pylog", LOGGING)
    srv = pynginx(
        log_level="debug",
        server=py_location(
            "/t",
            r"""
        local rt = assert(pyload("%s,init"))
        for _, m in ipairs({ "levels", "thread", "exception", "print",
                             "thread_crash", "warning", "direct",
                             "long" }) do
            local ok, res = rt[m](rt)
            ngx.say(m, " ", res)
        end
    """ % mod,
        ),
    )
    srv.expect(r"\[crit\] .*pylog: critical record")
    assert srv.get("/t").count("logged") == 8
    for line in [
        r"\[debug\] \d+#\d+: pylog: debug record\n",
        r"\[info\] \d+#\d+: pylog: info record\n",
        r"\[warn\] \d+#\d+: pylog: warning record\n",
        r"\[error\] \d+#\d+: pylog: error record\n",
        r"\[crit\] \d+#\d+: pylog: critical record\n",
        r"\[warn\] \d+#\d+: pylog: from the thread logger-thread\n",
        r"\[error\] \d+#\d+: pylog: caught it\nTraceback %s\n"
        r"KeyError: 'missing'\n" % TB,
        r"\[info\] \d+#\d+: printed line\n",
        r"\[error\] \d+#\d+: stderr line\n",
        r"\[error\] \d+#\d+: partial line\n",
        r"\[error\] \d+#\d+: nonblocking_ffi: exception in thread crasher\n"
        r"Traceback%s\nZeroDivisionError: division by zero\n" % TB,
        r"\[warn\] \d+#\d+: py.warnings: .*UserWarning: mind the gap",
        r"\[notice\] \d+#\d+: direct notice\n",
        r"\[error\] \d+#\d+: \n",
    ]:
        srv.wait_log(line)
    srv.wait_log(r"\[warn\] \d+#\d+: pylog: long start\n(line \d{4}\n)+")
    srv.wait_log(r"\[warn\] \d+#\d+: line \d{4}\n(line \d{4}\n)+long end\n")
    log = srv.log()
    assert all("line %04d\n" % i in log for i in range(400))
    assert log.count("x" * 1200) == 3 and "x" * 1901 not in log


def test_python_logging_follows_the_error_log_level(pynginx, modules):
    mod = modules.write("pylog", LOGGING)
    srv = pynginx(
        log_level="warn",
        server=py_location(
            "/t", 'show(assert(pyload("%s,init")):levels())' % mod
        ),
    )
    srv.expect(r"\[crit\] .*pylog: critical record")
    assert srv.get("/t").strip() == "true 'logged'"
    srv.wait_log(r"pylog: critical record")
    log = srv.log()
    assert "pylog: warning record" in log
    assert "info record" not in log and "debug record" not in log


ENVIRONMENT = """
    import decimal
    import json
    import os
    import signal
    import subprocess
    import sys
    import threading

    import nonblocking_ffi

    # nginx's signals: HUP, INT, QUIT, ALRM, TERM, USR1, USR2, CHLD, WINCH, IO
    NGINX_SIGNALS = [1, 2, 3, 14, 15, 10, 12, 17, 28, 29]


    def blocked(native_id):
        with open("/proc/self/task/%d/status" % native_id) as f:
            for line in f:
                if line.startswith("SigBlk:"):
                    mask = int(line.split()[1], 16)
        return all(mask & (1 << (signo - 1)) for signo in NGINX_SIGNALS)


    def handle(task):
        statuses = [
            subprocess.run(["/bin/sh", "-c", "exit %d" % i]).returncode
            for i in range(5)
        ]
        return json.dumps(
            {
                "executable": sys.executable,
                "prefix": sys.prefix,
                "base_prefix": sys.base_prefix,
                "PATH": os.environ.get("PATH"),
                "sigint": repr(signal.getsignal(signal.SIGINT)),
                "decimal": str(decimal.Decimal(1) / decimal.Decimal(7)),
                "_decimal": decimal.Decimal.__module__,
                "child statuses": statuses,
                "threads blocking nginx's signals": all(
                    blocked(t.native_id)
                    for t in threading.enumerate()
                    if t is not threading.main_thread()
                ),
                "encoding": sys.getfilesystemencoding(),
                "redis": __import__("importlib.util").util.find_spec("redis")
                is not None,
            },
            sort_keys=True,
        )


    def init(rest, tq):
        nonblocking_ffi.serve(tq, handle, threads=2)
"""


def environment(srv):
    return json.loads(srv.get("/t"))


@pytest.mark.parametrize("is_global", [True, False])
def test_no_signal_handlers_c_extensions_children_and_no_path(
    pynginx, modules, is_global
):
    mod = modules.write("environment", ENVIRONMENT)
    srv = pynginx(
        server=py_location(
            "/t",
            r"""
        local rt = assert(pyload("%s,init", { is_global = %s }))
        local ok, res = rt:x()
        ngx.print(res)
    """ % (mod, "true" if is_global else "false"),
        )
    )
    assert environment(srv) == {
        "executable": os.path.realpath("/usr/bin/python3"),
        "prefix": "/usr",
        "base_prefix": "/usr",
        "PATH": None,
        # Python installed no handler: nginx's is there, unknown to Python
        "sigint": "None",
        "decimal": "0.1428571428571428571428571429",
        # the C implementation: a C extension module from lib-dynload
        "_decimal": "decimal",
        "child statuses": [0, 1, 2, 3, 4],
        "threads blocking nginx's signals": True,
        "encoding": "utf-8",
        "redis": False,
    }


def test_virtualenv_from_the_environment(pynginx, modules):
    mod = modules.write("environment", ENVIRONMENT)
    lua = py_location(
        "/t",
        r"""
        local ok, res = assert(pyload("%s,init")):x()
        ngx.print(res)
    """ % mod,
    )
    srv = pynginx(main="env VIRTUAL_ENV=%s;" % VENV, server=lua)
    env = environment(srv)
    assert (env["executable"], env["prefix"], env["base_prefix"]) == (
        VENV + "/bin/python",
        VENV,
        "/usr",
    )
    assert env["redis"]

    srv = pynginx(main="env VIRTUAL_ENV=/nonexistent/venv;", server=lua)
    assert environment(srv)["prefix"] == "/usr"
    srv.wait_log(
        r'\[warn\] .*nonblocking_ffi python: VIRTUAL_ENV "/nonexistent/venv" '
        r"has no bin/python: ignored"
    )


# --- the real-world example: Redis Streams consumer groups ----------------


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


def redis_locations(settings):
    """POST /jobs submits its body; /jobs/ID answers the job's result."""
    load = r"""
        local rt = assert(pyload("%s,init,%s"))
    """ % (
        REDIS_EXAMPLE,
        json.dumps(settings).replace('"', '\\"'),
    )
    return (
        py_location(
            "/jobs",
            load + r"""
        ngx.req.read_body()
        local ok, res, err = rt:submit(ngx.req.get_body_data())
        if not ok then ngx.status = 500 end
        ngx.say(res, err and " " .. err or "")
    """,
        )
        + py_location(
            "/stats",
            load + r"""
        local ok, res = rt:stats()
        ngx.print(res)
    """,
        )
        + py_location(
            "/batch",
            load + r"""
        -- submits ?n jobs, then waits for all their results at once
        local ids, threads = {}, {}
        for i = 1, tonumber(ngx.var.arg_n) do
            local ok, id = rt:submit("job number " .. i .. " of the batch")
            ids[i] = id
        end
        for i, id in ipairs(ids) do
            threads[i] = ngx.thread.spawn(function()
                return select(2, rt:result(id))
            end)
        end
        local out = {}
        for i = 1, #threads do
            local _, res = ngx.thread.wait(threads[i])
            out[i] = res
        end
        ngx.print("[", table.concat(out, ","), "]")
    """,
        )
        # a prefix location: a regex one leaks in nginx under valgrind
        + "location /jobs/ { content_by_lua_block { %s %s } }"
        % (
            PRELUDE + load,
            r"""
        local ok, res, err = rt:result(ngx.var.uri:sub(#"/jobs/" + 1))
        if not ok then ngx.status = 500 end
        ngx.say(res, err and " " .. err or "")
    """,
        )
    )


def expected_result(payload):
    return {
        "words": len(payload.split()),
        "sha256": hashlib.sha256(payload.encode()).hexdigest(),
    }


def test_redis_streams_job_queue_end_to_end(pynginx, redis_server):
    stream = "jobs-e2e"
    settings = {"url": redis_server.url, "stream": stream, "consumers": 3}
    srv = pynginx(
        main="env VIRTUAL_ENV=%s;" % VENV,
        workers=2,
        server=redis_locations(settings),
    )
    status, body = srv.request("/jobs", method="POST", body=b"hello streams")
    assert status == 200
    job = body.decode().strip()
    assert redis_server.command("XLEN", stream) == "1"

    status, body = srv.request("/jobs/" + job)
    assert status == 200
    result = json.loads(body)
    assert result.pop("consumer").endswith(("-0", "-1", "-2"))
    assert result == dict(expected_result("hello streams"), id=job)

    # many at once, consumed by the consumers of both workers
    results = json.loads(srv.get("/batch?n=40"))
    assert [{k: r[k] for k in ("words", "sha256")} for r in results] == [
        expected_result("job number %d of the batch" % i) for i in range(1, 41)
    ]
    assert redis_server.command("XPENDING", stream, "workers").startswith("0")

    # errors are answers, with an rc
    assert srv.request("/jobs/not-an-id") == (
        500,
        b"400 bad job id 'not-an-id'\n",
    )
    assert srv.request("/jobs/1-1") == (500, b"404 no job 1-1\n")

    stats = json.loads(srv.get("/stats"))
    assert stats["length"] == 41 and stats["pending"] == 0
    assert stats["consumers"] >= 3


def test_redis_streams_claims_the_jobs_of_a_dead_consumer(
    pynginx, redis_server
):
    stream = "jobs-claim"
    # a consumer took a job and died before acknowledging it
    redis_server.command(
        "XGROUP", "CREATE", stream, "workers", "$", "MKSTREAM"
    )
    job = redis_server.command("XADD", stream, "*", "payload", "orphaned job")
    redis_server.command(
        "XREADGROUP",
        "GROUP",
        "workers",
        "ghost",
        "COUNT",
        "1",
        "STREAMS",
        stream,
        ">",
    )
    assert redis_server.command("XPENDING", stream, "workers").startswith("1")

    settings = {
        "url": redis_server.url,
        "stream": stream,
        "claim_idle_ms": 100,
        "claim_every_ms": 50,
        "wait_ms": 10000 * SLOW,
    }
    srv = pynginx(
        main="env VIRTUAL_ENV=%s;" % VENV, server=redis_locations(settings)
    )
    status, body = srv.request("/jobs/" + job)
    assert status == 200, body
    result = json.loads(body)
    assert result["consumer"] != "ghost"
    assert result["words"] == 2
    srv.wait_log(r"\[warn\] .*redis_streams: .* claimed job %s" % job)
    assert redis_server.command("XPENDING", stream, "workers").startswith("0")


def test_redis_streams_load_fails_without_redis(pynginx):
    settings = {"url": "redis://127.0.0.1:1/0"}
    srv = pynginx(
        main="env VIRTUAL_ENV=%s;" % VENV,
        server=py_location(
            "/t",
            r"""
        show(pyload("%s,init,%s"))
    """ % (REDIS_EXAMPLE, json.dumps(settings).replace('"', '\\"')),
        ),
    )
    assert srv.get("/t").strip().startswith(
        "nil '%s: redis_streams.init() raised (cfg \"%s,init\"): "
        "ConnectionError: " % (LOAD_FAILED % 6, REDIS_EXAMPLE))
    srv.wait_log(
        r"redis_streams.init\(\) raised%s\nredis.exceptions.ConnectionError"
        % TB
    )


LOOPS = """
    import asyncio
    import contextvars

    import nonblocking_ffi

    CALLER = contextvars.ContextVar("caller", default=None)


    async def handle(task):
        if task.method == "stop_loop":
            asyncio.get_running_loop().stop()
            return "stopping"
        if task.method == "sleep":
            await asyncio.sleep(int(task.request) / 1000)
        return task.request


    def init(rest, tq):
        nonblocking_ffi.serve(tq, handle, spin=int(rest))
"""


# outlasts 200 fast calls, also under valgrind
SLOW_CALL_MS = 10000 if MEMCHECK else 2000


@pytest.mark.parametrize("spin", ["0", "200"])
def test_asyncio_loop_serves_fast_calls_beside_slow_ones(
    pynginx, modules, spin
):
    mod = modules.write("loops", LOOPS)
    srv = pynginx(
        server=py_location(
            "/t",
            r"""
        local rt = assert(pyload("%s,init,%s"))
        -- a slow call holds one runner; 200 fast ones in a row pass it
        local slow_done = false
        local slow = ngx.thread.spawn(function()
            local ok, res = rt:sleep("%d", 120)
            slow_done = true
            return ok, res
        end)
        local right = 0
        for i = 1, 200 do
            local ok, res = rt:echo(tostring(i))
            if ok and res == tostring(i) then right = right + 1 end
        end
        ngx.say(right, " ", slow_done)
        show(ngx.thread.wait(slow))
        -- and as many at once as there are callers
        ngx.say(count_true(50, function(i)
            local ok, res = rt:sleep("100")
            return ok and res == "100"
        end))
    """ % (mod, spin, SLOW_CALL_MS),
        )
    )
    assert srv.get("/t").splitlines() == [
        "200 false", "true true '%d'" % SLOW_CALL_MS, "50"]


def test_asyncio_loop_stopped_by_the_application_refuses_calls(
    pynginx, modules
):
    mod = modules.write("loops", LOOPS)
    srv = pynginx(
        server=py_location(
            "/t",
            r"""
        local rt = assert(pyload("%s,init,200"))
        show(rt:stop_loop())
        show(rt:echo("after"))
        show(rt:echo("again"))
    """ % mod,
        )
    )
    assert srv.get("/t").splitlines() == [
        "true 'stopping'",
        "false 1 'the event loop of the runtime is closed'",
        "false 1 'the event loop of the runtime is closed'",
    ]
