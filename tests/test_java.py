# SPDX-License-Identifier: BSD-2-Clause

"""The Java loader (lib_nonblocking_ffi_java.so) and the nonblocking.ffi API
(nonblocking-ffi.jar), on real nginx: `make java` first.

Test classes are compiled into a folder that nginx workers (user nobody)
can read.
"""

import glob
import http.client
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import textwrap
import threading

import pytest

from conftest import GO, GO_DICT, WAIT_FOR_GO, location
from harness import (BUILD, MEMCHECK, NGINX, NOT_HERE, SLOW, WORKER_USER,
                     NginxServer, check_signals_reach_nginx, free_port,
                     wait_for)
from services import PostgresServer

JAVA = os.path.join(BUILD, "lib_nonblocking_ffi_java.so")
JAR = os.path.join(BUILD, "java", "nonblocking-ffi.jar")
EXAMPLES = os.path.join(BUILD, "java", "examples")
TESTS = os.path.join(BUILD, "java", "tests")
JAVAC = shutil.which("javac")

LOAD_FAILED = "%s: lib_nonblocking_ffi_init() failed with rc %%d" % JAVA

pytestmark = [
    pytest.mark.skipif(
        MEMCHECK,
        reason="valgrind reports HotSpot's own stack banging and JIT code "
        "as invalid writes (about 2000 report lines for a bare JVM start, "
        "outside nginx): no run with a JVM could pass",
    ),
    pytest.mark.skipif(
        not (os.path.exists(JAVA) and os.path.exists(JAR) and JAVAC),
        reason=NOT_HERE + "the Java loader (make java needs javac and mvn)",
    ),
]

PRELUDE = r"""
    local JAVA = "%s"
    local function jload(cfg, opts)
        return ngx.load_nonblocking_ffi(JAVA, cfg, opts)
    end
""" % JAVA


def java_location(path, lua, **kw):
    """A location whose Lua has jload(cfg, opts) and show(...)."""
    return location(path, PRELUDE + lua, **kw)


def java_main(classpath=EXAMPLES + ":" + TESTS, extra=""):
    """The main-context lines: the class path (and more) for the JVM."""
    return "env NFFI_JAVA_CLASSPATH=%s;\n%s" % (classpath, extra)


def first_worker(srv):
    """The worker's pid: nginx accepts (on the master's socket) before it
    has forked its worker."""
    return wait_for(srv.worker_pids, 10, "the worker to start")[0]


def test_echo_example_and_binary_payloads(nginx):
    srv = nginx(
        main=java_main(),
        server=java_location(
            "/t",
            r"""
        local rt = assert(jload("example.Echo,init,2"))
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
        show(rt:error("7"))
        show(rt:nosuch("x"))
    """,
        ),
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
        "false 1 'java.lang.IllegalArgumentException: failing as asked'",
        "false 7 'error 7'",
        "false 404 'no method nosuch'",
    ]
    srv.wait_log(
        r"\[error\] .*nonblocking.ffi: the handler of a 'fail' call failed\n"
        r"java.lang.IllegalArgumentException: failing as asked\n"
        r"\s+at example.Echo.handle\(Echo.java:\d+\)"
    )
    srv.wait_log(r"\[info\] .*echo: serving on 2 threads")


class Classes:
    """Java sources compiled into a folder that nginx workers can read."""

    def __init__(self, folder):
        self.folder = folder

    def compile(self, sources, folder=None):
        """sources: {"pkg.Name": source}; returns the class folder."""
        out = folder or self.folder
        src = tempfile.mkdtemp(prefix="src-", dir=self.folder)
        paths = []
        for name, source in sources.items():
            path = os.path.join(src, name.replace(".", "/") + ".java")
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w") as f:
                f.write(textwrap.dedent(source))
            paths.append(path)
        subprocess.run([JAVAC, "--release", "17", "-cp", JAR, "-d", out]
                       + paths, check=True)
        shutil.rmtree(src)
        for root, dirs, files in os.walk(out):
            for d in dirs:
                os.chmod(os.path.join(root, d), 0o755)
            for f in files:
                os.chmod(os.path.join(root, f), 0o644)
        return out


@pytest.fixture
def classes():
    folder = tempfile.mkdtemp(prefix="nffi-java-")
    os.chmod(folder, 0o755)
    yield Classes(folder)
    shutil.rmtree(folder)


@pytest.mark.parametrize("env,message", [
    ("NFFI_JAVA_OPTS=-Xbogus", r"Unrecognized option: -Xbogus"),
    ("NFFI_JAVA_OPTS=-Xmx1k", r"Too small maximum heap"),
    ("JAVA_HOME=/nonexistent", r"nonblocking_ffi java: cannot load the JVM: "
     r"/nonexistent/lib/server/libjvm.so: cannot open shared object file"),
])
def test_a_jvm_that_cannot_start_fails_every_load(nginx, env, message):
    srv = nginx(
        main=java_main(extra="env %s;" % env),
        server=java_location(
            "/t",
            r"""
        show(jload("example.Echo,init"))
        show(jload("example.Echo,init,2"))
        show(ngx.worker.pid())
    """,
        ),
    )
    worker = first_worker(srv)
    no_jvm = ("nil '%s: the JVM did not start in this worker (see the "
              "error log)'" % (LOAD_FAILED % 3))
    assert srv.get("/t").splitlines() == [no_jvm, no_jvm, str(worker)]
    srv.wait_log(r"\[error\] .*" + message)
    if "JAVA_HOME" not in env:
        srv.wait_log(r"\[error\] .*nonblocking_ffi java: the JVM did not "
                     r"start")
    srv.wait_log(r"\[error\] .*nonblocking_ffi java: the JVM failed to start "
                 r"in this worker before")
    # the same worker still serves
    assert srv.get("/t").splitlines()[2] == str(worker)


def test_task_api_and_handler_failures(nginx):
    srv = nginx(
        main=java_main(),
        server=java_location(
            "/t",
            r"""
        local rt = assert(jload("jtest.TestRuntime,init"))
        show(rt:twice())
        show(rt:error())
        show(rt:error())
        show(rt:describe("x"))
        show(rt:describe())
        show(rt:pid())
    """,
        ),
    )
    worker = first_worker(srv)
    assert srv.get("/t").splitlines() == [
        "true 'first'",
        "false 1 'java.lang.Error: an Error, not an Exception'",
        "false 1 'java.lang.Error: an Error, not an Exception'",
        "true 'describe x false false Task[method=describe, answered=false]'",
        "true 'describe null false false Task[method=describe, "
        "answered=false]'",
        "true '%d'" % worker,
    ]
    srv.wait_log(r"\[info\] .*jtest: second answer: "
                 r"java.lang.IllegalStateException: task already answered")
    srv.wait_log(r"\[error\] .*nonblocking.ffi: the handler of a 'error' "
                 r"call failed\njava.lang.Error: an Error, not an Exception\n"
                 r"\s+at jtest.TestRuntime.handle", count=2)


def test_async_handler_answers_100_concurrent_calls_out_of_order(nginx):
    srv = nginx(
        main=java_main(),
        server=java_location(
            "/t",
            r"""
        local rt = assert(jload("example.Echo,initAsync"))
        local order = {}
        local n = count_true(100, function(i)
            -- the first calls sleep longest: answers come in reverse
            local ms = tostring((100 - i) * 4)
            local ok, res = rt:sleep(ms)
            order[#order + 1] = i
            return ok and res == ms
        end)
        ngx.say(n)
        ngx.say(order[1] > order[100] and "out of order" or "in order")
        show(rt:failAsync())
        show(rt:echo("a\0b"))
        show(rt:nosuch())
    """,
        ),
    )
    assert srv.get("/t").splitlines() == [
        "100",
        "out of order",
        "false 1 'java.lang.IllegalStateException: failing later as asked'",
        "true 'a\0b'",
        "false 404 'no method nosuch'",
    ]
    srv.wait_log(r"\[error\] .*nonblocking.ffi: the handler of a 'failAsync' "
                 r"call failed\njava.lang.IllegalStateException: failing "
                 r"later as asked")


def test_load_failures_answer_an_rc_and_log_why(nginx):
    srv = nginx(
        main=java_main(),
        server=java_location(
            "/t",
            r"""
        show(jload(nil))
        show(jload("jtest.TestRuntime"))
        show(jload(",init"))
        show(jload("jtest.TestRuntime,"))
        show(jload("jtest.NoSuchClass,init"))
        show(jload("jtest.TestRuntime,noSuchMethod"))
        show(jload("jtest.TestRuntime,wrongSignature"))
        show(jload("jtest.TestRuntime,notStatic"))
        show(jload("jtest.TestRuntime,initThrows,why"))
        show(jload("jtest.TestRuntime,initReturns,9"))
        show(jload("jtest.BadStatic,init"))
        show(jload("jtest.TestRuntime,badQueue"))
        -- the JVM is fine: a good load still works
        local rt = assert(jload("jtest.TestRuntime,init"))
        show(rt:marker())
    """,
        ),
    )
    bad_cfg = ': bad cfg: expected "class[?],method[,rest]"'
    # the reason reaches Lua too, cut to the room the error has
    reasons = [bad_cfg] * 4 + [
        ': class jtest.NoSuchClass not found (cfg "jtest.NoSuchClass,init");'
        " class path: ",
        ": class jtest.TestRuntime has no method noSuchMethod: expected "
        "public static void noSuchMethod(String rest, long queue)",
        ": method jtest.TestRuntime.wrongSignature has the wrong signature: ",
        ": method jtest.TestRuntime.notStatic has the wrong signature: ",
        ': jtest.TestRuntime.initThrows() threw (cfg "jtest.TestRuntime,'
        'initThrows"): java.lang.IllegalStateException: init failed as '
        "asked: why'",
        ": jtest.TestRuntime.initReturns() returned 9: the load failed'",
        ": the static initializer of jtest.BadStatic threw (cfg "
        '"jtest.BadStatic,init"): java.lang.IllegalStateException: static '
        "initializer failed as asked'",
        ': jtest.TestRuntime.badQueue() threw (cfg "jtest.TestRuntime,'
        'badQueue"): java.lang.IllegalArgumentException: not a queue of '
        "this worker",
    ]
    rc = [2, 2, 2, 2, 4, 5, 5, 5, 6, 9, 6, 6]
    lines = srv.get("/t").splitlines()
    assert len(lines) == len(rc) + 1 and lines[-1] == "true 'none'"
    for line, n, reason in zip(lines, rc, reasons):
        expected = "nil '%s%s" % (LOAD_FAILED % n, reason)
        assert line.startswith(expected[:len(line)]), (line, expected)
    log = [
        r'cfg is nil: expected "class\[\?\],method\[,rest\]"',
        r'malformed cfg "jtest.TestRuntime": expected',
        r'malformed cfg ",init": the class is empty',
        r'malformed cfg "jtest.TestRuntime,": the method is empty',
        r"class jtest.NoSuchClass not found \(cfg \"jtest.NoSuchClass,init\""
        r"\); class path: .*nonblocking-ffi.jar:.*examples:.*tests",
        r"class jtest.TestRuntime has no method noSuchMethod: expected "
        r"public static void noSuchMethod\(String rest, long queue\)",
        r"method jtest.TestRuntime.wrongSignature has the wrong signature: "
        r"public static void jtest.TestRuntime.wrongSignature\("
        r"java.lang.String\); expected",
        r"method jtest.TestRuntime.notStatic has the wrong signature: "
        r"public void jtest.TestRuntime.notStatic\(java.lang.String,long\)",
        r"jtest.TestRuntime.initThrows\(\) threw \(cfg "
        r"\"jtest.TestRuntime,initThrows\"\):\n"
        r"java.lang.IllegalStateException: init failed as asked: why\n"
        r"\s+at jtest.TestRuntime.initThrows\(TestRuntime.java:\d+\)",
        r"jtest.TestRuntime.initReturns\(\) returned 9: the load failed",
        r"the static initializer of jtest.BadStatic threw .*:\n"
        r"java.lang.IllegalStateException: static initializer failed as asked",
        r"jtest.TestRuntime.badQueue\(\) threw .*:\n"
        r"java.lang.IllegalArgumentException: not a queue of this worker",
    ]
    for line in log:
        srv.wait_log(r"\[error\] .*nonblocking_ffi java: " + line)


needs_nobody = pytest.mark.skipif(
    WORKER_USER != "", reason="workers run as root here: they read anything")


@needs_nobody
def test_a_class_path_the_worker_cannot_read_is_named(nginx):
    private = tempfile.mkdtemp(prefix="nffi-private-")
    try:
        os.chmod(private, 0o700)
        srv = nginx(
            main=java_main(classpath=private + ":/nonexistent/x.jar"),
            server=java_location(
                "/t", r"""show(jload("jtest.TestRuntime,init"))"""),
        )
        assert srv.get("/t").strip().startswith(
            "nil '%s: class jtest.TestRuntime not found" % (LOAD_FAILED % 4))
        srv.wait_log(
            r"\[error\] .*class jtest.TestRuntime not found .*class path: "
            r".*nonblocking-ffi.jar:%s \(not readable by user nobody\):"
            r"/nonexistent/x.jar \(does not exist\)" % private)
    finally:
        shutil.rmtree(private)


RELOADED = """
    // SPDX-License-Identifier: BSD-2-Clause
    package reload;

    import java.nio.charset.StandardCharsets;
    import nonblocking.ffi.Queue;
    import nonblocking.ffi.Server;

    public final class Reloaded {
        private Reloaded() {}

        public static void init(String rest, long queue) {
            byte[] answer = ("%s " + rest).getBytes(StandardCharsets.UTF_8);
            Server.serve(Queue.of(queue), task -> answer);
        }
    }
"""


def test_question_mark_loads_a_changed_class_afresh(nginx, classes):
    folder = classes.compile({"reload.Reloaded": RELOADED % "one"})
    srv = nginx(
        main=java_main(classpath=folder),
        server=java_location(
            "/t",
            r"""
        local rt, err = jload(ngx.unescape_uri(ngx.var.arg_cfg))
        if not rt then return ngx.say(err) end
        show(rt:version())
    """,
        ),
    )

    def version(cfg):
        return srv.get("/t?cfg=" + cfg).strip()

    assert version("reload.Reloaded,init,a") == "true 'one a'"
    assert version("reload.Reloaded%3F,init,b") == "true 'one b'"
    classes.compile({"reload.Reloaded": RELOADED % "version two"})
    # without "?" the class stays the one loaded first
    assert version("reload.Reloaded,init,c") == "true 'one c'"
    assert version("reload.Reloaded%3F,init,d") == "true 'version two d'"
    # the runtime loaded before the change keeps its class
    assert version("reload.Reloaded%3F,init,b") == "true 'one b'"


def test_two_runtimes_share_one_jvm(nginx):
    srv = nginx(
        main=java_main(),
        server=java_location(
            "/t",
            r"""
        local a = assert(jload("jtest.TestRuntime,init"))
        local b = assert(jload("jtest.Other,init,set by Other"))
        local e = assert(jload("example.Echo,init,1"))
        show(a:marker())
        show(b:anything())
        show(e:echo("e"))
        show(a:pid())
        -- the same cfg is the same runtime
        show(jload("jtest.Other,init,set by Other") == b)
    """,
        ),
    )
    worker = first_worker(srv)
    assert srv.get("/t").splitlines() == [
        "true 'set by Other'",
        "true 'other anything'",
        "true 'e'",
        "true '%d'" % worker,
        "true",
    ]
    # one JVM: it started once
    assert len(re.findall(r"\[info\] .*nonblocking_ffi java: the JVM "
                          r"started", srv.log())) == 1


def test_logging_reaches_the_error_log_at_its_level(nginx):
    srv = nginx(
        main=java_main(),
        server=java_location(
            "/t",
            r"""
        local rt = assert(jload("jtest.TestRuntime,init"))
        show(rt:log())
    """,
        ),
    )
    assert srv.get("/t").strip() == "true 'logged'"
    for line in [
        r"\[error\] .*jtest: a severe record",
        r"\[warn\] .*jtest: a warning record",
        r"\[info\] .*jtest: an info record",
        r"\[warn\] .*jtest: a record with an exception\n"
        r"java.lang.IllegalStateException: logged exception\n"
        r"\s+at jtest.TestRuntime.handle",
        r"\[info\] .*: a line on System.out\n",
        r"\[error\] .*: a line on System.err\n",
        r"\[warn\] .*jtest.system: a System.Logger warning",
        r"\[notice\] .*: a notice\nof two lines",
        r"\[error\] .*nonblocking_ffi java: uncaught exception in thread "
        r"\"jtest-dying\":\njava.lang.IllegalStateException: uncaught in a "
        r"thread",
    ]:
        srv.wait_log(line)
    # below the root logger's INFO
    assert "a fine record" not in srv.log()


def test_unload_stops_the_server_and_a_new_load_works(nginx):
    srv = nginx(
        main=java_main(),
        server=java_location(
            "/t",
            r"""
        local rt = assert(jload("jtest.TestRuntime,init"))
        show(rt:sleep("1"))
        rt:__unload()
        show(rt:sleep("1"))
        local again = assert(jload("jtest.TestRuntime,init"))
        show(again ~= rt)
        show(again:sleep("2"))
        again:__unload()
    """,
        ),
    )
    assert srv.get("/t").splitlines() == [
        "true '1'",
        "false 'unloaded'",
        "true",
        "true '2'",
    ]
    # onStop ran for both, after the pollers saw the end of their queue
    srv.wait_log(r"\[info\] .*jtest: stopped: ", count=2)


def test_a_call_that_times_out_is_seen_cancelled(nginx):
    srv = nginx(
        main=java_main(),
        server=java_location(
            "/t",
            r"""
        local rt = assert(jload("jtest.TestRuntime,init"))
        show(rt:cancelled(nil, 0.2))
    """,
        ),
    )
    assert srv.get("/t").strip() == "false 'timeout'"
    srv.wait_log(r"\[info\] .*jtest: cancelled seen: true")


needs_master = pytest.mark.skipif(
    MEMCHECK, reason="memcheck runs nginx with master_process off")


def caught_signals(pid):
    """The signal numbers that process pid has handlers for."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("SigCgt:"):
                mask = int(line.split()[1], 16)
                return {n for n in range(1, 65) if mask & (1 << (n - 1))}
    return set()


@needs_master
def test_signals_and_children_with_a_jvm_and_calls_in_flight(nginx):
    # workers reopen the logs on USR1: they need to reach the test's folder
    srv = nginx(
        main=java_main(extra="user root;"),
        init_worker=r"""
        package.loaded.jrt = assert(ngx.load_nonblocking_ffi(
            "%s", "jtest.TestRuntime,init"))
    """ % JAVA,
        server=location("/pid", "show(package.loaded.jrt:pid())")
        + location("/sleep", r"""
        local ok, res = package.loaded.jrt:sleep(ngx.var.arg_ms)
        ngx.say(ngx.worker.pid(), " ", ok, " ", res)
    """)
        + location("/pending", "ngx.say(package.loaded.jrt:__pending())")
        + location("/exec", r"""
        local rt = package.loaded.jrt
        local from_java, from_lua = 0, 0
        for i = 1, 10 do
            local code = i % 5 + 1
            local ok, res = rt:exec(tostring(code))
            if ok and res == tostring(code) then
                from_java = from_java + 1
            end
            if os.execute("exit " .. code) == code * 256 then
                from_lua = from_lua + 1
            end
        end
        ngx.say(from_java, " ", from_lua)
    """),
    )
    worker = first_worker(srv)
    assert srv.get("/pid").strip() == "true '%d'" % worker
    # HotSpot's suspend/resume signal is not USR2 (nginx's binary upgrade)
    caught = caught_signals(worker)
    assert 40 in caught, caught
    # no attach socket, no perf data file
    assert not os.path.exists("/tmp/.java_pid%d" % worker)
    assert not glob.glob("/tmp/hsperfdata_*/%d" % worker)
    # every JVM thread blocks nginx's signals: they land on the main thread
    nginx_signals = {signal.SIGHUP, signal.SIGINT, signal.SIGQUIT,
                     signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2,
                     signal.SIGALRM, signal.SIGCHLD, signal.SIGWINCH,
                     signal.SIGIO}
    threads = [int(t) for t in os.listdir("/proc/%d/task" % worker)
               if int(t) != worker]
    assert len(threads) >= 5, threads
    for tid in threads:
        with open("/proc/%d/task/%d/status" % (worker, tid)) as f:
            blocked = int(re.search(r"SigBlk:\s*([0-9a-f]+)",
                                    f.read()).group(1), 16)
        assert all(blocked & (1 << (s - 1)) for s in nginx_signals), (
            tid, hex(blocked))
    assert srv.get("/exec").strip() == "10 10"

    # 20 calls in flight in the old worker when the HUP comes
    answers = []

    def slow_call():
        answers.append(srv.get("/sleep?ms=700", timeout=30))

    callers = [threading.Thread(target=slow_call) for _ in range(20)]
    for c in callers:
        c.start()
    wait_for(lambda: srv.get("/pending").strip() == "20", 10,
             "20 calls in flight")
    srv.signal(signal.SIGHUP)
    for c in callers:
        c.join(30)
    assert len(answers) == 20
    assert {a.split(" ", 1)[1].strip() for a in answers} == {"true 700"}
    assert {a.split()[0] for a in answers} == {str(worker)}
    srv.wait_log(r"worker process %d exited with code 0" % worker)

    # USR2 sent to a worker: nginx ignores it, the JVM does not take it
    worker = first_worker(srv)
    assert srv.get("/pid").strip() == "true '%d'" % worker
    os.kill(worker, signal.SIGUSR2)
    srv.wait_log(r"signal 12 \(SIGUSR2\) received.*ignoring")
    assert srv.get("/pid").strip() == "true '%d'" % worker

    check_signals_reach_nginx(srv, "/pid")
    assert srv.get("/exec").strip() == "10 10"


def test_system_exit_ends_the_worker_and_says_so(nginx):
    srv = nginx(
        main=java_main(),
        server=java_location(
            "/t",
            r"""
        local rt = assert(jload("jtest.TestRuntime,init"))
        show(rt:exit("3"))
    """,
        )
        + location("/pid", "ngx.say(ngx.worker.pid())"),
    )
    worker = first_worker(srv)
    # the worker ends without answering
    with pytest.raises((OSError, http.client.HTTPException)):
        srv.request("/t")
    srv.wait_log(r"nonblocking_ffi java: the JVM exits with code 3 "
                 r"\(System.exit\(\)\?\): the worker process %d exits"
                 % worker)
    srv.wait_log(r"worker process %d exited with code 3" % worker)
    # nginx started another worker
    wait_for(lambda: srv.worker_pids() and srv.worker_pids() != [worker],
             10, "a new worker")
    assert srv.get("/pid").strip() != str(worker)


def test_a_class_path_entry_with_a_star_is_every_jar_of_its_folder(
        nginx, classes):
    # CLASSPATH alone, as for java
    folder = classes.compile({"reload.Reloaded": RELOADED % "from a jar"})
    lib = os.path.join(classes.folder, "lib")
    os.mkdir(lib)
    os.chmod(lib, 0o755)
    subprocess.run([os.path.join(os.path.dirname(os.path.realpath(JAVAC)),
                                 "jar"), "cf", os.path.join(lib, "app.jar"),
                    "-C", folder, "reload"], check=True)
    os.chmod(os.path.join(lib, "app.jar"), 0o644)
    srv = nginx(
        main="env CLASSPATH=%s/*;" % lib,
        server=java_location(
            "/t",
            r"""
        local rt = assert(jload("reload.Reloaded,init,x"))
        show(rt:version())
    """,
        ),
    )
    assert srv.get("/t").strip() == "true 'from a jar x'"


# --- the JDBC example against a real PostgreSQL ---------------------------

PG_JDBC = "/usr/share/java/postgresql.jar"


@pytest.fixture(scope="module")
def postgres():
    server = PostgresServer()
    try:
        yield server.start()
    finally:
        server.stop()


def jdbc_locations(url, pool=4):
    load = r"""
        local db = assert(jload("example.Jdbc,init,%d %s"))
    """ % (pool, url)
    return java_location("/sql", load + r"""
        ngx.req.read_body()
        local method = ngx.var.arg_m
        show(db[method](db, ngx.req.get_body_data()))
    """) + java_location("/sleep", load + r"""
        -- n calls of pg_sleep at once
        ngx.update_time()
        local t0 = ngx.now()
        local n = count_true(tonumber(ngx.var.arg_n), function()
            return (db:query("select pg_sleep(0.5)"))
        end)
        ngx.update_time()
        ngx.say(n, " ", ngx.now() - t0)
    """) + java_location("/unload", load + "db:__unload() show(db:get('x'))")


def test_jdbc_example_end_to_end(nginx, postgres):
    if not os.path.exists(PG_JDBC):
        pytest.fail(PG_JDBC + " is missing: run make -C shims/java deps")
    srv = nginx(
        main=java_main(classpath=EXAMPLES + ":" + PG_JDBC),
        server=jdbc_locations(postgres.jdbc_url),
    )

    def sql(method, body):
        status, out = srv.request("/sql?m=" + method, method="POST",
                                  body=body)
        assert status == 200, out
        return out.decode("latin-1").rstrip("\n")

    assert sql("exec", b"delete from kv") in ("true '0'", "true '1'")
    assert sql("put", b"greeting=hello\0\xffworld") == "true '1'"
    assert sql("put", b"greeting=hello again") == "true '1'"
    assert sql("put", b"bin=\0\x01\x02") == "true '1'"
    assert sql("get", b"greeting") == "true 'hello again'"
    assert sql("get", b"bin") == "true '\0\x01\x02'"
    assert sql("get", b"absent") == "true nil"
    assert sql("query", b"select k, length(v) as n from kv order by k") == (
        "true 'k\tn\nbin\t3\ngreeting\t11'")
    # the rows are in the real database
    assert postgres.sql("select encode(v, 'escape') from kv "
                        "where k = 'greeting'") == "hello again"
    assert sql("query", b"select nosuch") == (
        "false 2 '42703: ERROR: column \"nosuch\" does not exist\n"
        "  Position: 8'")
    assert sql("put", b"no equals sign") == "false 400 'put needs key=value'"
    assert sql("nosuch", b"") == "false 404 'no method nosuch'"

    # four connections: four half-second queries at once take about half
    # a second, not two
    n, took = srv.get("/sleep?n=4").split()
    assert n == "4" and float(took) < 1.5, took
    srv.wait_log(r"\[info\] .*jdbc: serving 4 connections to "
                 r"jdbc:postgresql://127.0.0.1:%d/" % postgres.port)

    # unload closes the pool: its connections leave the server
    def connections():
        return int(postgres.sql(
            "select count(*) from pg_stat_activity "
            "where application_name = 'PostgreSQL JDBC Driver'"))

    assert connections() == 4
    assert srv.get("/unload").strip() == "false 'unloaded'"
    srv.wait_log(r"\[info\] .*jdbc: connections closed")
    wait_for(lambda: connections() == 0, 10, "the connections to close")


def test_jdbc_example_load_fails_without_the_database(nginx):
    port = free_port()
    srv = nginx(
        main=java_main(classpath=EXAMPLES + ":" + PG_JDBC),
        server=java_location("/t", r"""
        show(jload("example.Jdbc,init,2 jdbc:postgresql://127.0.0.1:%d/x"))
    """ % port),
    )
    assert srv.get("/t").strip().startswith(
        "nil '%s: example.Jdbc.init() threw (cfg \"example.Jdbc,init\"): "
        "org.postgresql.util.PSQLException: Connection to 127.0.0.1:%d "
        "refused" % (LOAD_FAILED % 6, port))
    srv.wait_log(r"\[error\] .*nonblocking_ffi java: example.Jdbc.init\(\) "
                 r"threw .*:\norg.postgresql.util.PSQLException: Connection "
                 r"to 127.0.0.1:%d refused" % port)


def test_a_task_dropped_without_an_answer_is_answered(nginx):
    srv = nginx(
        main=java_main(),
        server=java_location(
            "/t",
            r"""
        local rt = assert(jload("jtest.TestRuntime,initLowLevel"))
        local dropped = ngx.thread.spawn(function()
            return rt:drop(nil, 20)
        end)
        -- the next calls find the dropped Task unreachable and collect it
        for i = 1, 100 do
            local ok, res = rt:gc()
            if rt:__pending() == 0 then break end
            ngx.sleep(0.05)
        end
        show(ngx.thread.wait(dropped))
    """,
        ),
    )
    assert srv.get("/t").strip() == (
        "true false 1 'the Java runtime dropped the call without answering "
        "it'")
    srv.wait_log(r'\[warn\] .*nonblocking_ffi java: a call of method "drop" '
                 r"was dropped without an answer: answered with rc 1")


def test_unload_waits_for_calls_in_flight_before_on_stop(nginx):
    srv = nginx(
        main=java_main(),
        server=java_location(
            "/t",
            r"""
        local rt = assert(jload("jtest.TestRuntime,initAsync"))
        -- posted before the unload (queued calls are still handed out),
        -- answered 300 ms after it
        local call = ngx.thread.spawn(function() return rt:sleep("300") end)
        rt:__unload()
        show(ngx.thread.wait(call))
    """,
        ),
    )
    assert srv.get("/t").strip() == "true true '300'"
    srv.wait_log(r"\[info\] .*jtest: async stopped")
    log = srv.log()
    assert log.index("jtest: answering sleep") < log.index(
        "jtest: async stopped")


def test_jvm_options_and_class_path_from_the_environment(nginx, classes):
    extra = classes.compile({"reload.Reloaded": RELOADED % "extra"})
    srv = nginx(
        main=java_main(extra="env \"NFFI_JAVA_OPTS=-Dnffi.a=one "
                             "-Dnffi.b=two -Xmx64m\";\n"
                             "env CLASSPATH=%s;" % extra),
        server=java_location(
            "/t",
            r"""
        local rt = assert(jload("jtest.TestRuntime,init"))
        show(rt:property("nffi.a"))
        show(rt:property("nffi.b"))
        show(rt:property("java.class.path"))
        local ok, mb = rt:maxMemoryMb()
        ngx.say(tonumber(mb) <= 64)
        -- a class found through CLASSPATH
        show(assert(jload("reload.Reloaded,init,y")):version())
    """,
        ),
    )
    assert srv.get("/t").splitlines() == [
        "true 'one'",
        "true 'two'",
        "true '%s:%s:%s:%s'" % (JAR, EXAMPLES, TESTS, extra),
        "true",
        "true 'extra y'",
    ]


NEWER_JDKS = sorted(glob.glob("/usr/lib/jvm/*-2[1-9]-*")
                    + glob.glob("/usr/lib/jvm/*-2[1-9]"))
NEWER_JDK = next((j for j in NEWER_JDKS
                  if os.path.exists(j + "/lib/server/libjvm.so")), None)


@pytest.mark.skipif(NEWER_JDK is None,
                    reason="no JDK 21 or later in /usr/lib/jvm")
def test_a_newer_jvm_from_java_home_serves_on_virtual_threads(nginx):
    srv = nginx(
        main=java_main(extra="env JAVA_HOME=%s;" % NEWER_JDK),
        server=java_location(
            "/t",
            r"""
        local rt = assert(jload("jtest.TestRuntime,init"))
        show(rt:property("java.home"))
        local ok, thread = rt:thread()
        ngx.say(ok, " ", thread:match("^VirtualThread") ~= nil)
        show(rt:echo_is_not_a_method())
    """,
        ),
    )
    worker = first_worker(srv)
    assert srv.get("/t").splitlines() == [
        "true '%s'" % NEWER_JDK,
        "true true",
        "true 'no method echo_is_not_a_method'",
    ]
    # its suspend/resume signal is moved too
    assert 40 in caught_signals(worker)


def nffi_threads(pid):
    """The threads of the API's servers (poll threads, default pools)."""
    names = []
    for tid in os.listdir("/proc/%d/task" % pid):
        try:
            with open("/proc/%d/task/%s/comm" % (pid, tid)) as f:
                name = f.read().strip()
        except OSError:
            continue
        if name.startswith("nffi-"):
            names.append(name)
    return names


def test_load_and_unload_cycles_leave_no_threads_behind(nginx):
    srv = nginx(
        main=java_main(),
        server=java_location(
            "/cycle",
            r"""
        for i = 1, tonumber(ngx.var.arg_n) do
            local rt = assert(jload("jtest.TestRuntime,init,4"))
            -- four calls at once: the pool starts its four threads
            local n = count_true(4, function()
                return (rt:sleep("20"))
            end)
            assert(n == 4)
            if ngx.var.arg_unload then rt:__unload() end
        end
        ngx.say("ok")
    """,
        ),
    )
    worker = first_worker(srv)
    # a loaded runtime: its poll thread and four pool threads
    assert srv.get("/cycle?n=1").strip() == "ok"
    assert len(nffi_threads(worker)) == 5, nffi_threads(worker)
    assert srv.get("/cycle?n=20&unload=1").strip() == "ok"
    srv.wait_log(r"jtest: stopped: ", count=20)
    # every unloaded runtime's poll thread and pool end
    wait_for(lambda: not nffi_threads(worker), 10,
             "the threads of 20 unloaded runtimes to end")


def test_binary_upgrade_with_a_jvm_loaded(tmp_path):
    """USR2 to a daemonized master starts a new master beside the old one,
    whose workers load their own JVM; WINCH and QUIT retire the old one."""
    srv = NginxServer(tmp_path / "nginx", main=java_main(), server=(
        java_location("/pid", r"""
        local rt = assert(jload("example.Echo,init,2"))
        local ok, res = rt:echo(tostring(ngx.worker.pid()))
        ngx.say(tostring(ok), " ", res)
    """)))
    pid_file = os.path.join(srv.prefix, "logs", "nginx.pid")
    started = []

    def read_pid(path):
        try:
            with open(path) as f:
                return int(f.read().strip())
        except (OSError, ValueError):
            return None

    def alive(pid):
        # a daemon's exit leaves a zombie where init does not reap it
        try:
            with open("/proc/%d/stat" % pid) as f:
                return f.read().rsplit(")", 1)[1].split()[0] != "Z"
        except OSError:
            return False

    def served_by():
        status, body = srv.request("/pid")
        ok, worker = body.decode().split()
        assert status == 200 and ok == "true"
        return int(worker)

    # daemon on: nginx refuses a binary upgrade while its first parent runs
    subprocess.run([NGINX, "-p", srv.prefix, "-c", srv.conf,
                    "-e", srv.error_log, "-g", "daemon on;"], check=True)
    try:
        old_master = wait_for(lambda: read_pid(pid_file), 10, "the pid file")
        started.append(old_master)
        old_worker = served_by()

        os.kill(old_master, signal.SIGUSR2)
        new_master = wait_for(
            lambda: (read_pid(pid_file) != old_master
                     and read_pid(pid_file)), 10, "the new master")
        started.append(new_master)
        assert read_pid(pid_file + ".oldbin") == old_master

        # the old workers stop taking connections, the new ones serve
        os.kill(old_master, signal.SIGWINCH)
        wait_for(lambda: not alive(old_worker), 20, "the old worker to go")
        worker = served_by()
        assert worker != old_worker and alive(worker)

        os.kill(old_master, signal.SIGQUIT)
        wait_for(lambda: not alive(old_master), 20, "the old master to go")
        assert served_by() == worker
    finally:
        for pid in reversed(started):
            if alive(pid):
                os.kill(pid, signal.SIGQUIT)
        for pid in started:
            wait_for(lambda: not alive(pid), 20, "nginx %d to quit" % pid)
    problems = srv.problems()
    assert not problems, problems
    log = srv.log()
    assert "start new binary process %d" % new_master in log
    assert "exited on signal" not in log


# --- streams: Task.send/read, answerStream/requestStream, serveStreams
# (tests/runtimes/java/jtest/Streams.java, examples/java/example/Streams.java)

# reads a stream to its end: each chunk (control bytes as \<code>), then
# the status
READ_ALL = r"""
    local function read_all(s)
        local out = {}
        while true do
            local chunk, a, b = s:read()
            if chunk == nil then
                out[#out + 1] = "end " .. tostring(a) .. " " .. tostring(b)
                return table.concat(out, "|")
            end
            out[#out + 1] = (chunk:gsub("[%z\1-\31]", function(c)
                return "\\" .. c:byte()
            end))
        end
    end
"""

# /stats: the counters of jtest.Streams (chunks sent, sends in progress,
# StreamClosedExceptions seen), and /pending: the calls of the stream
# runtime not answered yet
STREAM_STATS = java_location("/stats", r"""
        local _, text = assert(jload("jtest.Streams,initStats")):stats()
        ngx.say(text)
    """) + java_location("/pending", r"""
        ngx.say(assert(jload("jtest.Streams,init")):__pending())
    """)


def stream_stat(srv, name):
    return int(srv.get("/stats").split(name + "=")[1].split()[0])


def test_streams_send_and_read_in_order_and_binary_safe(nginx):
    srv = nginx(
        main=java_main(),
        server=java_location(
            "/t",
            READ_ALL + r"""
        local ex = assert(jload("example.Streams,init"))
        ngx.say(read_all(assert(ex:__stream("count", "3"))))
        local s = assert(ex:__stream("upper"))
        assert(s:write("abc")) assert(s:write("d\0e")) assert(s:close_write())
        ngx.say(read_all(s))
        -- a stream handler refuses an ordinary call
        show(ex:count("3"))
        ngx.say(read_all(assert(ex:__stream("nosuch"))))

        local rt = assert(jload("jtest.Streams,init"))
        -- chunk i of "produce" is #size bytes of byte i
        ngx.say(read_all(assert(rt:__stream("produce", "3,4"))))
        -- 20 chunks of every byte value, echoed chunk by chunk
        local all = {}
        for i = 0, 255 do all[#all + 1] = string.char(i) end
        all = table.concat(all)
        s = assert(rt:__stream("echo"))
        local sent, got = {}, {}
        for i = 1, 20 do
            sent[i] = all:sub(i) .. string.rep(all, i * 20)
            assert(s:write(sent[i]))
        end
        assert(s:close_write())
        while true do
            local chunk, status = s:read()
            if not chunk then break end
            got[#got + 1] = chunk
        end
        ngx.say(#got, " ", got[21], " ",
                table.concat(got, "", 1, 20) == table.concat(sent))
        -- through the InputStream and the OutputStream: bytes, not chunks
        s = assert(rt:__stream("copy"))
        local big = string.rep("z\0", 10000)
        assert(s:write("a\0b")) assert(s:write(big)) assert(s:write(""))
        assert(s:close_write())
        local copied = {}
        while true do
            local chunk, status = s:read()
            if not chunk then break end
            copied[#copied + 1] = chunk
        end
        local last = table.remove(copied)
        ngx.say(table.concat(copied) == "a\0b" .. big, " ", last)
        s = assert(rt:__stream("mixed"))
        assert(s:write("xyz"))
        ngx.say(read_all(s))
        show(rt:produce("1,1"))
    """,
        ),
    )
    assert srv.get("/t").splitlines() == [
        r"1\10|2\10|3\10|end 0 nil",
        r"ABC|D\0E|2 chunks|end 0 nil",
        "false 1 ''count' answers in a stream: call it with "
        "runtime:__stream(\"count\", req)'",
        "end 404 no stream nosuch",
        r"\0\0\0\0|\1\1\1\1|\2\2\2\2|end 0 nil",
        "21 chunks=20 true",
        "true copied=20003 again=-1 true",
        "first=x available=2 rest=yz|end 0 nil",
        "false 1 ''produce' answers in a stream: call it with "
        "runtime:__stream(\"produce\", req)'",
    ]
    srv.wait_log(r"\[info\] .*streams: serving streams")


def test_stream_errors_answers_and_handlers_of_the_other_kind(nginx):
    srv = nginx(
        main=java_main(),
        server=java_location(
            "/t",
            READ_ALL + r"""
        local rt = assert(jload("jtest.Streams,init"))
        -- an exception mid-stream ends it with rc != 0 and its message
        ngx.say(read_all(assert(rt:__stream("fail"))))
        ngx.say(read_all(assert(rt:__stream("failRc", "2"))))
        -- answered by the handler, which may not send after that
        ngx.say(read_all(assert(rt:__stream("respondThenSend"))))
        -- close() of the OutputStream ends writing to it, not the answer
        ngx.say(read_all(assert(rt:__stream("closedOut"))))
        -- the poll thread lived through all that
        ngx.say(read_all(assert(rt:__stream("produce", "1,2"))))

        -- an ordinary Handler: a stream call gets its answer as one chunk,
        -- and it may stream itself
        local plain = assert(jload("jtest.TestRuntime,init"))
        ngx.say(read_all(assert(plain:__stream("describe", "x"))))
        ngx.say(read_all(assert(plain:__stream("maybeStream"))))
        show(plain:maybeStream())
        show(plain:answerStream())
    """,
        ),
    )
    assert srv.get("/t").splitlines() == [
        "before|end 1 java.lang.IllegalStateException: failed midway",
        "before|end 7 stopped at 2",
        "last|end 0 nil",
        "task.send still works|end 0 nil",
        r"\0\0|end 0 nil",
        "describe x false false Task[method=describe, answered=false]"
        "|end 0 nil",
        "a|b|c|end 0 nil",
        "true 'plain'",
        "false 1 'java.lang.IllegalStateException: 'answerStream' was "
        "called with runtime:answerStream(), not runtime:__stream(): it has "
        "no stream'",
    ]
    srv.wait_log(r"\[error\] .*nonblocking.ffi: the handler of a 'fail' "
                 r"call failed\njava.lang.IllegalStateException: failed "
                 r"midway\n\s+at jtest.Streams.handle")
    srv.wait_log(r"\[info\] .*jtest.streams: send after respond: "
                 r"java.lang.IllegalStateException: task already answered")
    srv.wait_log(r"\[info\] .*jtest.streams: write after close: "
                 r"java.io.IOException: the answer stream of 'closedOut' "
                 r"was closed")
    # no stack trace for an NffiException
    assert "stopped at 2\n" not in srv.log()


def test_stream_window_holds_back_a_fast_producer(nginx):
    srv = nginx(
        main=java_main(),
        http=GO_DICT,
        server=STREAM_STATS + GO + java_location(
            "/t",
            r"""
        local rt = assert(jload("jtest.Streams,init"))
        -- 64 KB chunks against a 256 KB window
        local s = assert(rt:__stream("produce", "100,65536",
                                     { window = 262144, timeout = 3600 }))
        local first = assert(s:read())
        ngx.say(#first)
        ngx.flush(true)
    """ + WAIT_FOR_GO + r"""
        local total, i, ok = #first, 1, first == string.rep("\0", 65536)
        while true do
            local chunk, status = s:read()
            if not chunk then ngx.say("status ", status) break end
            ok = ok and chunk == string.rep(string.char(i % 256), 65536)
            total, i = total + #chunk, i + 1
        end
        ngx.say("bytes ", total, " ", ok)
    """,
        ),
    )
    conn, resp = srv.open("/t", timeout=60)
    assert resp.readline().strip() == b"65536"
    # one chunk read and four unread fill the window: the producer waits
    # in its sixth send, and gets no further while nobody reads
    waiting = ["sent=5", "sending=1"]
    wait_for(lambda: srv.get("/stats").split()[:2] == waiting, 10,
             "the producer to wait for the window")
    assert srv.get("/stats").split()[:2] == waiting
    srv.get("/go")
    rest = resp.read().decode().splitlines()
    conn.close()
    assert rest == ["status 0", "bytes %d true" % (100 * 65536)]
    assert srv.get("/stats").split()[:2] == ["sent=100", "sending=0"]


def test_a_closed_stream_is_seen_by_the_handler_and_still_answered(nginx):
    srv = nginx(
        main=java_main(),
        server=STREAM_STATS + java_location(
            "/t",
            r"""
        local rt = assert(jload("jtest.Streams,init"))
        local s
        if ngx.var.arg_how == "send" then
            -- the handler waits in a send: the window is full
            s = assert(rt:__stream("produce", "1000,65536"))
            assert(s:read())
        else
            -- the handler waits in a read: nothing more comes
            s = assert(rt:__stream("sink"))
            assert(s:write("x"))
        end
        show(s:close())
        show(s:read())
    """,
        ) + java_location(
            "/client",
            r"""
        local rt = assert(jload("jtest.Streams,init"))
        local s = assert(rt:__stream("produce", "100000,1000"))
        while true do
            local chunk = s:read()
            if not chunk then break end
            ngx.print(chunk)
            if not ngx.flush(true) then break end
        end
    """,
            extra="lua_check_client_abort on;",
        ),
    )
    for n, how in enumerate(["send", "read"], 1):
        assert srv.get("/t?how=" + how).splitlines() == [
            "true", "nil 'closed'"]
        wait_for(lambda: stream_stat(srv, "closed") == n, 10,
                 "the handler to see the stream closed in a " + how)
        # the Server answered the task (the answer is dropped)
        wait_for(lambda: srv.get("/pending").strip() == "0", 10,
                 "the task to be answered")
    srv.wait_log(r"\[info\] .*jtest.streams: closed seen in produce: "
                 r"stream closed: the Lua side gave up")
    srv.wait_log(r"\[info\] .*jtest.streams: closed seen in sink")
    srv.wait_log(r"\[info\] .*nonblocking.ffi: the Lua side of a 'sink' "
                 r"stream gave up")

    # a client that goes away closes the stream of its request
    sock = socket.create_connection(("127.0.0.1", srv.port))
    sock.sendall(b"GET /client HTTP/1.1\r\nHost: x\r\n\r\n")
    assert sock.recv(100)
    sock.close()
    wait_for(lambda: stream_stat(srv, "closed") == 3, 20,
             "the handler to see its client gone")
    wait_for(lambda: srv.get("/pending").strip() == "0", 10,
             "the task to be answered")
    assert stream_stat(srv, "sending") == 0


def test_an_answer_during_a_send_of_another_thread_waits_for_it(nginx):
    srv = nginx(
        main=java_main(),
        http=GO_DICT,
        server=STREAM_STATS + GO + java_location(
            "/t",
            r"""
        local rt = assert(jload("jtest.Streams,init"))
        -- 4 chunks fill the window; a thread of the handler sends more
        local s = assert(rt:__stream("detached", "100,1000,4",
                                     { window = 4000 }))
    """ + WAIT_FOR_GO + r"""
        local chunks = {}
        while true do
            local chunk, status, msg = s:read()
            if not chunk then
                chunks[#chunks + 1] = "end " .. tostring(status)
                break
            end
            chunks[#chunks + 1] = #chunk
        end
        ngx.say(table.concat(chunks, " "))
    """,
        ),
    )
    conn = http.client.HTTPConnection("127.0.0.1", srv.port,
                                      timeout=60 * SLOW)
    conn.request("GET", "/t")
    # the handler returned (the Server answers) while its thread sends
    srv.wait_log(r"jtest.streams: detached: the handler returns after 4")
    srv.get("/go")
    out = conn.getresponse().read().decode().strip()
    conn.close()
    # the send that waited when the answer came went through (unless the
    # answer came first), then the answer ended the stream
    thrown = (r"detached: java.lang.IllegalStateException: task already "
              r"answered after (\d+)")
    srv.wait_log(thrown)
    sent = int(re.search(thrown, srv.log()).group(1))
    assert sent in (4, 5)
    assert out == " ".join(["1000"] * sent + ["end 0"])
    wait_for(lambda: srv.get("/pending").strip() == "0", 10,
             "the task to be answered")


@pytest.mark.skipif(NEWER_JDK is None,
                    reason="no JDK 21 or later in /usr/lib/jvm")
def test_streams_run_on_platform_threads_beside_virtual_ones(nginx):
    srv = nginx(
        main=java_main(extra="env JAVA_HOME=%s;" % NEWER_JDK),
        server=java_location(
            "/t",
            r"""
        local rt = assert(jload("jtest.Streams,init"))
        show(assert(rt:__stream("thread")):read())
        -- more streams waiting in a send than the machine has cores: a
        -- blocked native call pins a virtual thread's carrier, so on
        -- virtual threads they would stop every other virtual thread
        local streams = {}
        for i = 1, 8 do
            streams[i] = assert(rt:__stream("produce", "1000,65536"))
            assert(streams[i]:read())
        end
        local plain = assert(jload("jtest.TestRuntime,init"))
        local ok, thread = plain:thread()
        ngx.say(ok, " ", thread:match("^VirtualThread") ~= nil)
        for i = 1, 8 do streams[i]:close() end
    """,
        ),
    )
    lines = srv.get("/t").splitlines()
    assert re.match(r"^'Thread\[#\d+,nffi-\d+-stream-0,", lines[0]), lines
    assert lines[1:] == ["true true"]
