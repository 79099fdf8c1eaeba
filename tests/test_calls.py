# SPDX-License-Identifier: BSD-2-Clause

"""The seed's call API: results, payloads, errors, arguments."""

from conftest import location
from harness import BUILD, TEST_RUNTIME, abi_version

RT = 'local rt = assert(ngx.load_nonblocking_ffi(RUNTIME, "threads=2"))\n'


def test_echo_error_null_answers(nginx):
    srv = nginx(server=location("/t", RT + r"""
        show(rt:echo("hello"))
        show(rt:error("7"))
        show(rt:error_nil())
        show(rt:null())
        show(rt:cstring())
        show(rt:echo(""))
        show(rt:echo())
        show(rt:nosuch("x"))
    """))
    assert srv.get("/t").splitlines() == [
        "true 'hello'",
        "false 7 'error 7'",
        "false 2 nil",
        "true nil",
        "true 'a NUL-terminated answer'",
        "true ''",
        "true nil",
        "false 404 'unknown method nosuch'",
    ]


def test_binary_payloads_with_nul_bytes(nginx):
    srv = nginx(server=location("/t", RT + r"""
        local all = {}
        for i = 0, 255 do all[#all + 1] = string.char(i) end
        local payloads = { "\0", "a\0b", "\0\0\0x\0", table.concat(all) }
        for _, p in ipairs(payloads) do
            local ok, res = rt:echo(p)
            ngx.say(ok, " ", #res, " ", res == p)
        end
    """))
    assert srv.get("/t").splitlines() == [
        "true 1 true", "true 3 true", "true 5 true", "true 256 true"]


def test_four_megabyte_payloads(nginx):
    srv = nginx(server=location("/t", RT + r"""
        local chunk = {}
        for i = 0, 255 do chunk[#chunk + 1] = string.char(i) end
        local big = string.rep(table.concat(chunk), 4 * 1024 * 1024 / 256)
        for _ = 1, 3 do
            local ok, res = rt:echo(big)
            ngx.say(ok, " ", #res, " ", res == big)
        end
    """))
    assert srv.get("/t", timeout=60).splitlines() == \
        ["true 4194304 true"] * 3


def test_bad_arguments_are_results_not_errors(nginx):
    srv = nginx(server=location("/t", RT + r"""
        show(rt:echo({}))
        show(rt:echo(42))
        show(rt:echo("x", 0))
        show(rt:echo("x", -1))
        show(rt:echo("x", "soon"))
        show(rt:echo("x", 0.0001))
        show(rt:echo("x", 2^31))
        show(rt.echo("x"))
        show(rt.echo(nil))
        show(rt:echo("x", 5))
    """))
    bad_timeout = "false 'bad timeout: 0.001 to 2147483 seconds expected'"
    assert srv.get("/t").splitlines() == [
        "false 'bad request: string or nil expected, got table'",
        "false 'bad request: string or nil expected, got number'",
        bad_timeout, bad_timeout, bad_timeout, bad_timeout, bad_timeout,
        "false 'bad runtime: call it as runtime:echo(req)'",
        "false 'bad runtime: call it as runtime:echo(req)'",
        "true 'x'",
    ]


def test_runtime_answering_with_negative_length(nginx):
    srv = nginx(server=location("/t", RT + "show(rt:bad_length())"))
    assert srv.get("/t").strip() == \
        "false 'runtime answered with a negative length'"


def test_load_is_idempotent_per_lib_and_cfg(nginx):
    srv = nginx(server=location("/t", r"""
        local a = assert(ngx.load_nonblocking_ffi(RUNTIME, "threads=1"))
        local b = assert(ngx.load_nonblocking_ffi(RUNTIME, "threads=1"))
        local c = assert(ngx.load_nonblocking_ffi(RUNTIME, "threads=2"))
        local d = assert(ngx.load_nonblocking_ffi(RUNTIME))
        local e = assert(ngx.load_nonblocking_ffi(RUNTIME, nil))
        ngx.say(a == b, " ", a == c, " ", d == e, " ", d == a)
        show(c:echo("from c"), d:echo("from d"))
    """))
    assert srv.get("/t").splitlines() == [
        "true false true false", "true true 'from d'"]
    # init ran once per key: three runtimes in all, over two requests
    srv.get("/t")
    assert srv.log().count("nonblocking_ffi: loaded runtime") == 3


def test_library_by_path_file_name_and_short_name(nginx):
    srv = nginx(env={"LD_LIBRARY_PATH": BUILD}, server=location("/t", r"""
        for _, lib in ipairs({ RUNTIME, "libnffi_test_runtime.so",
                               "nffi_test_runtime" }) do
            local rt, err = ngx.load_nonblocking_ffi(lib, "name=" .. lib)
            if rt then show(rt:echo(lib)) else show(nil, err) end
        end
    """))
    assert srv.get("/t").splitlines() == [
        "true '%s'" % TEST_RUNTIME,
        "true 'libnffi_test_runtime.so'",
        "true 'nffi_test_runtime'",
    ]


def test_load_failures_return_nil_and_a_reason(nginx):
    srv = nginx(env={"LD_LIBRARY_PATH": BUILD}, server=location("/t", r"""
        show(ngx.load_nonblocking_ffi("/nonexistent/libnothing.so"))
        show(ngx.load_nonblocking_ffi("nothing_here"))
        show(ngx.load_nonblocking_ffi("nffi_no_init"))
        show(ngx.load_nonblocking_ffi(RUNTIME, "fail=7"))
        show(ngx.load_nonblocking_ffi(RUNTIME, "threads=1000"))
        show(ngx.load_nonblocking_ffi(nil))
        show(ngx.load_nonblocking_ffi(""))
        show(ngx.load_nonblocking_ffi(RUNTIME, 42))
        show(ngx.load_nonblocking_ffi(RUNTIME, nil, "opts"))
        show(ngx.load_nonblocking_ffi(RUNTIME, nil, { max_queue = 0 }))
        show(ngx.load_nonblocking_ffi(RUNTIME, nil, { max_queue = 1.5 }))
        show(ngx.load_nonblocking_ffi(RUNTIME, nil, { is_global = "yes" }))
        show(ngx.load_nonblocking_ffi(RUNTIME, nil, { timeout = 0 }))
        show(ngx.load_nonblocking_ffi(RUNTIME, nil, { spin = -1 }))
        -- a NUL would cut the path or the cfg
        show(ngx.load_nonblocking_ffi(RUNTIME .. "\0/anything"))
        show(ngx.load_nonblocking_ffi(RUNTIME, "threads=1\0threads=9"))
        -- false is no default, and no number
        show(ngx.load_nonblocking_ffi(RUNTIME, nil, { max_queue = false }))
        show(ngx.load_nonblocking_ffi(RUNTIME, nil, { timeout = false }))
        show(ngx.load_nonblocking_ffi(RUNTIME, nil, { spin = false }))
        show(ngx.load_nonblocking_ffi(RUNTIME, nil, { is_global = 0 }))
        show(ngx.load_nonblocking_ffi(RUNTIME, nil, { spin = 2^31 - 1 }))
        show(ngx.load_nonblocking_ffi(RUNTIME, nil, { spin = 100001 }))
        show(ngx.load_nonblocking_ffi(RUNTIME, nil, { loop_spin = -1 }))
        show(ngx.load_nonblocking_ffi(RUNTIME, nil, { loop_spin = 1e6 }))
        show(ngx.load_nonblocking_ffi(RUNTIME, nil, { loop_spin = "1" }))
        show(ngx.load_nonblocking_ffi(RUNTIME, nil, { max_queue = 2^31 }))
        -- a failed init is not cached: the same key loads once it works
        show(ngx.load_nonblocking_ffi(RUNTIME, "fail=7") ~= nil)
    """))
    lines = srv.get("/t").splitlines()
    assert lines[0].startswith("nil 'failed to load /nonexistent/libnothing"
                               ".so: /nonexistent/libnothing.so: cannot open")
    assert lines[1].startswith("nil 'failed to load libnothing_here.so: "
                               "libnothing_here.so: cannot open shared")
    assert lines[2] == ("nil 'libnffi_no_init.so exports neither "
                        "lib_nonblocking_ffi_init nor libffi_init'")
    assert lines[3] == ("nil '%s: lib_nonblocking_ffi_init() failed with "
                        "rc 7'" % TEST_RUNTIME)
    assert lines[4].endswith("lib_nonblocking_ffi_init() failed with rc -1'")
    bad_lib = "nil 'bad lib: non-empty string without NUL bytes expected'"
    bad_cfg = "nil 'bad cfg: string without NUL bytes or nil expected'"
    bad_max_queue = ("nil 'bad opts.max_queue: integer from 1 to 2147483647 "
                     "expected'")
    bad_timeout = "nil 'bad opts.timeout: 0.001 to 2147483 seconds expected'"
    bad_spin = "nil 'bad opts.spin: integer from 0 to 100000 expected'"
    bad_loop_spin = ("nil 'bad opts.loop_spin: integer from 0 to 100000 "
                     "expected'")
    bad_is_global = "nil 'bad opts.is_global: boolean expected'"
    assert lines[5:] == [
        bad_lib, bad_lib, bad_cfg,
        "nil 'bad opts: table or nil expected'",
        bad_max_queue, bad_max_queue, bad_is_global, bad_timeout, bad_spin,
        bad_lib, bad_cfg,
        bad_max_queue, bad_timeout, bad_spin, bad_is_global,
        bad_spin, bad_spin, bad_loop_spin, bad_loop_spin, bad_loop_spin,
        bad_max_queue,
        "false",
    ]


def test_lua_resty_ffi_compatibility(nginx):
    legacy = BUILD + "/libnffi_legacy_echo.so"
    srv = nginx(server=location("/t", r"""
        local resty_ffi = require "resty_ffi"
        local rt = assert(ngx.load_ffi("%s"))
        show(rt:anything("abc"))
        show(ngx.load_ffi == ngx.load_nonblocking_ffi)
    """ % legacy))
    assert srv.get("/t").splitlines() == ["true 'legacy:abc'", "true"]


def test_loading_in_init_by_lua_is_refused(nginx):
    srv = nginx(http=r"""
        init_by_lua_block {
            local nffi = require "resty.nonblocking_ffi"
            local rt, err = nffi.load("%s")
            package.loaded.init_result = tostring(rt) .. " " .. err
        }
    """ % TEST_RUNTIME, server=location("/t", r"""
        ngx.say(package.loaded.init_result)
    """))
    assert srv.get("/t").strip() == (
        "nil cannot load a runtime in init_by_lua*: runtimes are per worker "
        "process (threads do not survive fork); load it in "
        "init_worker_by_lua* or later")


def test_method_name_and_abi_version_reach_the_runtime(nginx):
    srv = nginx(server=location("/t", RT + r"""
        local ok, stats = rt:stats()
        ngx.say(stats:match("abi=%d+"))
    """))
    assert srv.get("/t").strip() == "abi=%d" % abi_version()


def test_loops_of_calls_and_stream_reads_compile(nginx):
    """LuaJIT compiles loops of calls and of stream reads: nothing in the
    library that it cannot compile (a method lookup that closed an upvalue
    on return aborted every trace through it, leaving callers' loops
    interpreted)."""
    srv = nginx(server=location("/t", RT + r"""
        local jit = require "jit"
        local funcinfo = require("jit.util").funcinfo
        local traceerr = require("jit.vmdef").traceerr
        local aborts = {}
        -- NYI: what LuaJIT cannot compile (an inner loop aborts a trace
        -- once, by design, and is compiled on its own)
        local function on_trace(what, _, func, pc, err, info)
            if what == "abort" then
                local where = funcinfo(func, pc)
                local why = string.format(traceerr[err], info)
                if why:find("^NYI") and where.source
                   and where.source:find("nonblocking_ffi")
                then
                    aborts[#aborts + 1] = where.loc .. " " .. why
                end
            end
        end
        jit.attach(on_trace, "trace")
        for _ = 1, 2000 do
            local ok, echoed = rt:echo("x")
            assert(ok and echoed == "x")
            ok, echoed = rt.echo(rt, "y")
            assert(ok and echoed == "y")
        end
        for _ = 1, 300 do
            local s = assert(rt:__stream("stream_count", "3,5"))
            local chunks = 0
            while s:read() do
                chunks = chunks + 1
            end
            assert(chunks == 3)
        end
        jit.attach(on_trace)
        ngx.say(#aborts, " ", table.concat(aborts, ", "))
    """))
    assert srv.get("/t").strip() == "0"
