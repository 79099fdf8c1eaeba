# SPDX-License-Identifier: BSD-2-Clause
"""Random inputs through a real nginx, where a fuzzer's harness would have
to fake nginx: the Lua library's argument checks, and the answer ABI
(respond()'s rc, pointer, length and second answers).

    python3 tests/fuzz_nginx.py [--seconds N] [--seed S] [TARGET...]

Targets: lua_args (load, calls, streams), respond. Each runs for N seconds
(default 60). A case fails when a call raises a Lua error, returns
something the README does not list, answers wrong, or when the error log
shows a crash or an unexpected [alert]. A failing case is printed with its
seed and Lua source, so that it can be replayed (--seed) and kept as a
regression test.
"""

import argparse
import hashlib
import os
import random
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import BUILD, TEST_RUNTIME, NginxServer  # noqa: E402

SERVER = r"""
    location = /lua {
        client_body_buffer_size 2m;
        client_max_body_size 2m;
        content_by_lua_block {
            local nffi = require "resty.nonblocking_ffi"
            ngx.req.read_body()
            local chunk = assert(loadstring(ngx.req.get_body_data()))
            local results = { pcall(chunk, nffi, "%s") }
            if not results[1] then
                ngx.say("raised ", tostring(results[2]))
                return
            end
            local shape = {}
            for i = 2, table.maxn(results) do
                local v = results[i]
                shape[#shape + 1] = type(v) == "string"
                    and ("string:" .. #v .. ":" .. ngx.md5(v))
                    or (type(v) == "number" and ("number:" .. v))
                    or (type(v) == "boolean" and ("boolean:" .. tostring(v)))
                    or type(v)
            end
            ngx.say(table.concat(shape, " "))
        }
    }
""" % TEST_RUNTIME


# --- Lua values

def lua_string(data):
    return '"' + "".join("\\%d" % b for b in data) + '"'


def random_bytes(rng):
    n = rng.choice([0, 1, 2, 5, 16, 100, 300, rng.randint(0, 70000)])
    alphabet = rng.choice([b"abc=,?/ ", bytes(range(256)), b"\x00a"])
    return bytes(rng.choice(alphabet) for _ in range(n))


def random_number(rng):
    return rng.choice([
        "0", "1", "-1", "0.5", "1e-9", "0.001", "2147483", "2147483647",
        "2147483648", "-2147483648", "-2147483649", "4294967296",
        "9007199254740993", "1e300", "-1e300", "0/0", "1/0", "-1/0",
        "100000", "100001", str(rng.randint(-10 ** 6, 10 ** 6)),
        repr(rng.uniform(-10, 10))])


def random_value(rng, depth=0):
    kind = rng.choice(["nil", "bool", "number", "string", "table",
                       "function", "null"] if depth < 2
                      else ["nil", "bool", "number", "string"])
    if kind == "nil":
        return "nil"
    if kind == "bool":
        return rng.choice(["true", "false"])
    if kind == "number":
        return random_number(rng)
    if kind == "string":
        return lua_string(random_bytes(rng))
    if kind == "function":
        return "function() end"
    if kind == "null":
        return "ngx.null"
    return random_table(rng, depth + 1)


OPTION_NAMES = ["max_queue", "is_global", "timeout", "spin", "loop_spin"]


def random_table(rng, depth=1):
    fields = []
    for _ in range(rng.randint(0, 4)):
        key = rng.choice(OPTION_NAMES + ["x", "1"])
        if key == "1":
            fields.append(random_value(rng, depth))
        else:
            fields.append("%s = %s" % (key, random_value(rng, depth)))
    return "{ " + ", ".join(fields) + " }"


# --- the targets: each returns (Lua source, check(shape) -> problem)

LOADED = ("(type(rt) == 'table' and getmetatable(rt) ~= nil)")


def case_load(rng):
    lib = rng.choice(["RUNTIME", "RUNTIME .. " + lua_string(random_bytes(rng)),
                      lua_string(b"nffi_test_runtime"),
                      lua_string(b"/nonexistent/x.so"),
                      random_value(rng)])
    cfg = rng.choice([lua_string(b"threads=1"), random_value(rng)])
    opts = rng.choice(["nil", random_table(rng), random_value(rng)])
    source = """
        local nffi, RUNTIME = ...
        local rt, err = nffi.load(%s, %s, %s)
        if %s then
            rt:__unload()
            return "loaded"
        end
        return rt, err
    """ % (lib, cfg, opts, LOADED)

    def check(shape):
        if shape == ["string:6:" + md5(b"loaded")]:
            return None
        if len(shape) == 2 and shape[0] == "nil" \
                and shape[1].startswith("string:"):
            return None
        return "load returned " + " ".join(shape)
    return source, check


METHODS = [b"echo", b"error", b"null", b"cstring", b"bad_length",
           b"error_nil", b"no_such_method", b"__unload", b"__pending",
           b"__stats", b"__x", b""]


def case_call(rng):
    method = rng.choice(METHODS + [random_bytes(rng)[:20]])
    this = rng.choice(["rt", "rt", "rt", random_value(rng)])
    req = rng.choice([lua_string(random_bytes(rng)), random_value(rng)])
    timeout = rng.choice(["nil", "nil", random_number(rng),
                          random_value(rng)])
    source = """
        local nffi, RUNTIME = ...
        local rt = assert(nffi.load(RUNTIME, "threads=1"))
        local method = rt[%s]
        if type(method) ~= "function" then
            return "no method", type(method)
        end
        return method(%s, %s, %s)
    """ % (lua_string(method), this, req, timeout)

    def check(shape):
        kinds = [s.split(":")[0] for s in shape]
        allowed = (
            # true, res | false, rc[, rsp] | false, "reason"
            shape[:1] == ["boolean:true"] and kinds[1:] in ([], ["string"])
            or shape[:1] == ["boolean:false"]
            and kinds[1:] in (["number"], ["number", "string"], ["string"])
            # __pending(), __stats(), __unload(), or no method at all
            or kinds in (["number"], ["table"], [])
            or shape[:1] == ["string:9:" + md5(b"no method")])
        return None if allowed else "call returned " + " ".join(shape)
    return source, check


def md5(data):
    return hashlib.md5(data).hexdigest()


STREAM_METHODS = [b"stream_count", b"stream_echo", b"stream_sink",
                  b"stream_error", b"echo", b"no_such_method", b"__x", b""]

# seconds that keep a case short: valid small ones, and invalid ones
SHORT_TIMEOUTS = ["nil", "0.05", "0.001", "0", "-1", "1/0", "0/0", "'1'",
                  "{}", "true", "2147484"]


def random_stream_opts(rng):
    fields = []
    for _ in range(rng.randint(0, 3)):
        key = rng.choice(["timeout", "idle_timeout", "window", "x"])
        value = (random_number(rng) if key in ("window", "x")
                 else rng.choice(SHORT_TIMEOUTS))
        fields.append("%s = %s" % (key, value))
    return "{ " + ", ".join(fields) + " }"


def case_stream(rng):
    method = rng.choice(STREAM_METHODS + [random_bytes(rng)[:20]])
    req = rng.choice([lua_string(b"3,100"), lua_string(b"100000,1000"),
                      lua_string(random_bytes(rng)[:30]),
                      random_value(rng)])
    opts = rng.choice(["nil", random_stream_opts(rng), random_value(rng)])
    ops = []
    for _ in range(rng.randint(0, 5)):
        ops.append(rng.choice([
            "s:read(%s)" % rng.choice(SHORT_TIMEOUTS),
            "s:write(%s)" % rng.choice([lua_string(random_bytes(rng)),
                                        random_value(rng)]),
            "s:close_write()", "s:close()",
            "s.read(%s)" % random_value(rng)]))
    source = """
        local nffi, RUNTIME = ...
        local rt = assert(nffi.load(RUNTIME, "threads=2", { timeout = 1 }))
        local opts = %s
        -- a read of stream_echo before any write waits for the runtime,
        -- which waits for the write: a case told to wait for days would
        -- do so, which is no finding; valid long timeouts are cut to 1 s
        if type(opts) == "table" and type(opts.timeout) == "number"
           and opts.timeout > 1 and opts.timeout <= 2147483 then
            opts.timeout = 1
        end
        local s, err = rt:__stream(%s, %s, opts)
        if s == nil then
            return "refused", err
        end
        -- every result is one of the README's shapes
        local function shape_ok(a, b, c)
            if a == true then return b == nil end
            if type(a) == "string" then return b == nil end
            if a ~= nil then return false end
            if type(b) == "number" then
                return c == nil or type(c) == "string"
            end
            return type(b) == "string" and c == nil
        end
        for _, op in ipairs({ %s }) do
            if not shape_ok(op()) then return "bad shape" end
        end
        s:close()
        return "ran"
    """ % (opts, lua_string(method), req,
           ", ".join("function() return %s end" % op for op in ops))

    def check(shape):
        if shape == ["string:3:" + md5(b"ran")]:
            return None
        if len(shape) == 2 and shape[0] == "string:7:" + md5(b"refused") \
                and shape[1].startswith("string:"):
            return None
        return "stream returned " + " ".join(shape)
    return source, check


def case_lua_args(rng):
    return rng.choice([case_load, case_call, case_stream])(rng)


NEGATIVE = "runtime answered with a negative length"


def case_respond(rng):
    rc = rng.choice([0, 0, 1, -1, 404, 2147483647, -2147483648])
    mode = rng.choice([0, 1, 1])
    size = rng.choice([1, 2, 10, 4096, rng.randint(1, 70000)])
    rsp_len = rng.choice([-1, -2147483648, 0, size - 1, size,
                          rng.randint(0, size)])
    nul = rng.choice([-1, rng.randint(0, size - 1)])
    twice = rng.choice([0, 0, 0, 1])
    req = b"%d %d %d %d %d %d" % (rc, mode, size, rsp_len, nul, twice)
    source = """
        local nffi, RUNTIME = ...
        local rt = assert(nffi.load(RUNTIME, "threads=2"))
        return rt:respond_as(%s)
    """ % lua_string(req)

    data = bytes(ord("a") + i % 26 for i in range(size))
    data = data[:size - 1] + b"\x00"
    if 0 <= nul < size:
        data = data[:nul] + b"\x00" + data[nul + 1:]
    if rsp_len < 0:
        expected = ["boolean:false", "string:%d:%s" % (
            len(NEGATIVE), md5(NEGATIVE.encode()))]
    else:
        if mode == 0:
            answer = "nil"
        else:
            body = data[:rsp_len] if rsp_len > 0 \
                else data[:data.index(b"\x00")]
            answer = "string:%d:%s" % (len(body), md5(body))
        expected = (["boolean:true", answer] if rc == 0
                    else ["boolean:false", "number:%d" % rc, answer])

    while expected[-1] == "nil":
        expected.pop()

    def check(shape):
        got = shape
        return None if got == expected else (
            "respond_as %s: got %s, want %s" % (req.decode(), shape,
                                                expected))
    return source, check


TARGETS = {"lua_args": case_lua_args, "respond": case_respond}


def run(target, seconds, seed, out):
    prefix = tempfile.mkdtemp(prefix="nffi-fuzz-")
    os.chmod(prefix, 0o755)
    srv = NginxServer(prefix, server=SERVER, env={"LD_LIBRARY_PATH": BUILD})
    # the runtime bugs a case may commit on purpose
    srv.expect(r"respond on a task that is not waiting for an answer")
    srv.start()
    rng = random.Random(seed)
    cases, problems = 0, []
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline and not problems:
            case_seed = rng.getrandbits(32)
            source, check = TARGETS[target](random.Random(case_seed))
            try:
                status, body = srv.request("/lua", method="POST",
                                           body=source.encode())
            except OSError as e:
                # a case that never ends is printed like any other
                status, body = None, str(e).encode()
            text = body.decode("utf-8", "replace").strip()
            if status is None:
                problem = "no response: %s" % text[:500]
            elif status != 200:
                problem = "HTTP %d: %s" % (status, text[:500])
            elif text.startswith("raised "):
                problem = text[:500]
            else:
                problem = check(text.split(" ") if text else [])
            if problem:
                problems.append("%s case seed %d: %s\n%s" % (
                    target, case_seed, problem, source[:2000]))
            cases += 1
    finally:
        srv.stop()
    problems += srv.problems()
    out.write("fuzz %s: %d cases in %d s (seed %d), %d problems\n"
              % (target, cases, seconds, seed, len(problems)))
    for problem in problems:
        out.write("PROBLEM: " + problem + "\n")
    return problems


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--seed", type=int,
                        default=int(time.time() * 1000) % 2 ** 32)
    parser.add_argument("targets", nargs="*", default=sorted(TARGETS))
    args = parser.parse_args()
    failed = []
    for target in args.targets:
        failed += run(target, args.seconds, args.seed, sys.stdout)
    print("fuzz: %s" % ("FAILED" if failed else "ok"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
