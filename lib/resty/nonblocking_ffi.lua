-- SPDX-License-Identifier: BSD-2-Clause

-- lua-resty-nonblocking-ffi: call runtimes written in C, Go, Python, Java,
-- Rust... from nginx without blocking the worker.
--
-- require "resty.nonblocking_ffi" installs ngx.load_nonblocking_ffi().
-- The C side is ngx_http_lua_nonblocking_ffi_module (src/); a call posts a
-- task on the runtime's queue and waits on the task's semaphore through
-- ngx.semaphore's wait, so timeouts and aborted requests are handled by
-- lua-nginx-module itself.

local ffi = require "ffi"
local base = require "resty.core.base"
local semaphore = require "ngx.semaphore"   -- also declares the sema type

local C = ffi.C
local ffi_gc = ffi.gc
local ffi_str = ffi.string
local ffi_new = ffi.new
local get_phase = ngx.get_phase
local get_string_buf = base.get_string_buf
local get_request = base.get_request
local get_size_ptr = base.get_size_ptr
local sema_wait = semaphore.wait
local type = type
local setmetatable = setmetatable
local getmetatable = getmetatable
local math_floor = math.floor
local str_sub = string.sub
local subsystem = ngx.config and ngx.config.subsystem


if subsystem ~= "http" then
    error("resty.nonblocking_ffi supports lua-nginx-module's http subsystem "
          .. "only, not " .. tostring(subsystem), 2)
end


ffi.cdef[[
    typedef struct ngx_nffi_runtime_s ngx_nffi_runtime_t;

    /* the head of the C task (src/ngx_nffi.h): keep both in step */
    typedef struct {
        ngx_http_lua_sema_t  *sem;
        char                 *rsp;
        int                   rc;
        int                   rsp_len;       /* -1: nil */
        int                   bad_answer;    /* index in BAD_ANSWERS */
    } ngx_nffi_task_t;

    /* the head of a stream's chunk (src/ngx_nffi.h): keep both in step */
    typedef struct {
        void                 *node;
        unsigned              magic;
        int                   kind;
        void                 *task;
        void                 *next;
        char                 *data;
        size_t                len;
    } ngx_nffi_chunk_t;

    ngx_nffi_runtime_t *ngx_nffi_lua_load(const char *lib, size_t lib_len,
        const char *cfg, size_t cfg_len, int is_global, int max_queue,
        int spin, int loop_spin, int window, unsigned char *err,
        size_t *errlen);
    ngx_nffi_task_t *ngx_nffi_lua_post(ngx_nffi_runtime_t *rt,
        const char *method, size_t method_len, const char *req,
        size_t req_len, int window, const char **err);
    int ngx_nffi_lua_abandon(ngx_nffi_task_t *t, int timed_out);
    void ngx_nffi_lua_release(ngx_nffi_task_t *t);
    void ngx_nffi_lua_gc(ngx_nffi_task_t *t);
    void ngx_nffi_lua_unload(ngx_nffi_runtime_t *rt);
    int ngx_nffi_lua_pending(ngx_nffi_runtime_t *rt);
    void ngx_nffi_lua_failed(ngx_nffi_runtime_t *rt, int failure);
    ngx_nffi_chunk_t *ngx_nffi_lua_stream_next(ngx_nffi_task_t *t,
        int *state);
    int ngx_nffi_lua_stream_attach(ngx_nffi_task_t *t, ngx_http_request_t *r);
    void ngx_nffi_lua_stream_cancel(ngx_nffi_task_t *t, int timed_out);
    int ngx_nffi_lua_stream_write(ngx_nffi_task_t *t, const char *data,
        size_t len);
    void ngx_nffi_lua_stream_close_write(ngx_nffi_task_t *t);

    /* src/ngx_nffi_lua.c: keep both in step */
    typedef struct {
        const char  *lib;
        const char  *cfg;
        double       loaded_at;
        int          loaded;
        double       posted;
        double       answered_ok;
        double       answered_error;
        double       late;
        double       unclaimed;
        double       failures[5];     /* FAILURES */
        double       bytes_in;
        double       bytes_out;
        double       latency[28];     /* LATENCY_BUCKETS */
        double       latency_seconds;
        double       pending;
        double       queued;
        double       queued_max;
        double       sleeping;
        double       spinning;
    } ngx_nffi_lua_stats_t;

    int ngx_nffi_lua_stats(ngx_nffi_runtime_t *rt, ngx_nffi_lua_stats_t *out);
    ngx_nffi_runtime_t *ngx_nffi_lua_next_runtime(ngx_nffi_runtime_t *rt);

    int ngx_http_lua_nonblocking_ffi_abi_version(void);
]]


local module_loaded = pcall(function() return C.ngx_nffi_lua_load end)
if not module_loaded then
    error("resty.nonblocking_ffi needs ngx_http_lua_nonblocking_ffi_module: "
          .. "add 'load_module .../ngx_http_lua_nonblocking_ffi_module.so;' "
          .. "after ngx_http_lua_module to nginx.conf", 2)
end


local lua_load = C.ngx_nffi_lua_load
local lua_post = C.ngx_nffi_lua_post
local lua_abandon = C.ngx_nffi_lua_abandon
local lua_release = C.ngx_nffi_lua_release
local lua_gc = C.ngx_nffi_lua_gc
local lua_unload = C.ngx_nffi_lua_unload
local lua_pending = C.ngx_nffi_lua_pending
local lua_failed = C.ngx_nffi_lua_failed
local lua_stream_next = C.ngx_nffi_lua_stream_next
local lua_stream_attach = C.ngx_nffi_lua_stream_attach
local lua_stream_cancel = C.ngx_nffi_lua_stream_cancel
local lua_stream_write = C.ngx_nffi_lua_stream_write
local lua_stream_close_write = C.ngx_nffi_lua_stream_close_write
local lua_stats = C.ngx_nffi_lua_stats
local lua_next_runtime = C.ngx_nffi_lua_next_runtime

-- NGX_NFFI_FAILURE_* of src/ngx_nffi.h, 0-based there
local FAILURES = { "timeout", "queue_full", "unloaded", "cannot_yield",
                   "bad_answer" }
local FAILURE_UNLOADED, FAILURE_CANNOT_YIELD = 2, 3

-- NGX_NFFI_LATENCY_BUCKETS: bucket i holds calls answered within 2^i us,
-- the last one the rest
local LATENCY_BUCKETS = 28
local LATENCY_LE = {}
for i = 1, LATENCY_BUCKETS - 1 do
    LATENCY_LE[i] = 2 ^ (i - 1) / 1e6
end
LATENCY_LE[LATENCY_BUCKETS] = math.huge

-- NGX_NFFI_BAD_ANSWER_* of src/ngx_nffi.h
local BAD_ANSWERS = {
    "runtime answered with a negative length",
    "runtime answered with more than 2 GB",
}

local ERR_BUF_SIZE = 512
local DEFAULT_MAX_QUEUE = 65536
local DEFAULT_TIMEOUT = 60
local DEFAULT_SPIN = 200         -- docs/benchmark.md: the knob study
local DEFAULT_LOOP_SPIN = 200
local DEFAULT_WINDOW = 1024 * 1024
local INT_MIN, INT_MAX = -2147483648, 2147483647
-- C refuses it with the message that names the option and its bounds
local NOT_AN_INT = -1

-- method names with a cached caller; names past this get a new closure
-- per lookup, so that generated names cannot grow the worker
local CACHED_METHODS_MAX = 256

-- ngx.semaphore's wait reads only .sem, before it yields: one table will do
local waiting = { sem = nil }
local post_err = ffi_new("const char *[1]")

-- phases in which ngx.semaphore's wait works (lua-nginx-module 0.10.23
-- refuses it in server_rewrite, ssl_session_fetch and ssl_client_hello)
local can_wait = {
    rewrite = true, access = true, content = true, timer = true,
    ssl_cert = true,
}

-- the wait's timer takes whole milliseconds in a C int
local MIN_TIMEOUT = 0.001
local MAX_TIMEOUT = 2147483

-- runtime objects keep their state under integer keys, so that no method
-- name can shadow it; method names are strings
local PTR, TIMEOUT, KEY, LOADED_PTR, WINDOW = 1, 2, 3, 4, 5

-- loaded runtimes of this worker, by runtime_key()
local runtimes = {}


-- version: the project's version (CHANGELOG.md), the same as the module's
-- startup log line; abi_version: NONBLOCKING_FFI_ABI_VERSION of the loaded
-- module, the newest ABI a runtime may be built for
local _M = { version = "0.5.3",
             abi_version = C.ngx_http_lua_nonblocking_ffi_abi_version(),
             LATENCY_LE = LATENCY_LE }


local function valid_timeout(timeout)
    return type(timeout) == "number" and timeout >= MIN_TIMEOUT
           and timeout <= MAX_TIMEOUT
end


local function bad_runtime(usage)
    return false, "bad runtime: call it as runtime:" .. usage
end


-- the C runtime of a runtime object (kept after unload), or nil for
-- anything else, such as the argument of a call made with a dot
local function loaded_ptr(rt)
    return type(rt) == "table" and rt[LOADED_PTR] or nil
end


local function call(rt, method, req, timeout)
    if loaded_ptr(rt) == nil then
        return bad_runtime(method .. "(req)")
    end

    local ptr = rt[PTR]
    if ptr == nil then
        lua_failed(rt[LOADED_PTR], FAILURE_UNLOADED)
        return false, "unloaded"
    end

    local req_len = 0
    if req ~= nil then
        if type(req) ~= "string" then
            return false, "bad request: string or nil expected, got "
                          .. type(req)
        end
        req_len = #req
    end

    if timeout == nil then
        timeout = rt[TIMEOUT]

    elseif not valid_timeout(timeout) then
        return false, "bad timeout: 0.001 to 2147483 seconds expected"
    end

    local phase = get_phase()
    if not can_wait[phase] then
        lua_failed(ptr, FAILURE_CANNOT_YIELD)
        return false, "cannot yield in the " .. phase .. " phase"
    end

    local task = lua_post(ptr, method, #method, req, req_len, 0, post_err)
    if task == nil then
        return false, ffi_str(post_err[0])
    end

    -- if this coroutine dies while it waits, the finalizer lets go
    ffi_gc(task, lua_gc)

    waiting.sem = task.sem
    local ok, err = sema_wait(waiting, timeout)

    if not ok and lua_abandon(task, err == "timeout" and 1 or 0) == 0 then
        ffi_gc(task, nil)
        return false, err
    end

    ffi_gc(task, nil)

    local rc, rsp_len, bad = task.rc, task.rsp_len, task.bad_answer
    local rsp
    if rsp_len >= 0 then
        rsp = ffi_str(task.rsp, rsp_len)
    end

    lua_release(task)

    if bad ~= 0 then
        return false, BAD_ANSWERS[bad]
    end

    if rc == 0 then
        return true, rsp
    end

    return false, rc, rsp
end


local function unload(rt)
    if loaded_ptr(rt) == nil then
        return bad_runtime("__unload()")
    end

    local ptr = rt[PTR]
    if ptr == nil then
        return
    end

    rt[PTR] = nil
    if runtimes[rt[KEY]] == rt then
        runtimes[rt[KEY]] = nil
    end

    lua_unload(ptr)
end


-- calls posted and not answered yet (what max_queue bounds), also after
-- unload, while queued calls are still being answered
local function pending(rt)
    local ptr = loaded_ptr(rt)
    if ptr == nil then
        return bad_runtime("__pending()")
    end

    return lua_pending(ptr)
end


local stats_buf = ffi_new("ngx_nffi_lua_stats_t")


-- the latency below which a share q of the calls were answered: the upper
-- bound of the bucket where the share is reached (nil without calls)
local function quantile(le, cumulative, q)
    local total = cumulative[#cumulative]
    if total == 0 then
        return nil
    end
    for i = 1, #cumulative do
        if cumulative[i] >= q * total then
            return le[i]
        end
    end
end


-- a runtime's figures as a table (README, "Statistics"), or nil and why
local function stats_of(ptr)
    local st = stats_buf
    if lua_stats(ptr, st) ~= 0 then
        return nil, "not a runtime"
    end

    local failed = {}
    for i = 1, #FAILURES do
        failed[FAILURES[i]] = st.failures[i - 1]
    end

    local cumulative, count = {}, 0
    for i = 1, LATENCY_BUCKETS do
        count = count + st.latency[i - 1]
        cumulative[i] = count
    end

    return {
        lib = ffi_str(st.lib),
        cfg = st.cfg ~= nil and ffi_str(st.cfg) or nil,
        loaded_at = st.loaded_at,
        loaded = st.loaded ~= 0,
        posted = st.posted,
        answered_ok = st.answered_ok,
        answered_error = st.answered_error,
        late = st.late,
        unclaimed = st.unclaimed,
        failed = failed,
        bytes_in = st.bytes_in,
        bytes_out = st.bytes_out,
        in_flight = st.pending,
        queued = st.queued,
        queued_max = st.queued_max,
        pollers_sleeping = st.sleeping,
        pollers_spinning = st.spinning,
        latency_le = LATENCY_LE,
        latency_count = cumulative,
        latency_sum = st.latency_seconds,
        latency_p50 = quantile(LATENCY_LE, cumulative, 0.5),
        latency_p99 = quantile(LATENCY_LE, cumulative, 0.99),
    }
end


local function stats(rt)
    local ptr = loaded_ptr(rt)
    if ptr == nil then
        return bad_runtime("__stats()")
    end

    return stats_of(ptr)
end


-- streams (README, "Streams"): runtime:__stream() returns a stream object

-- ngx_nffi_lua_stream_next()'s *state
local STREAM_WAIT, STREAM_ANSWERED = 0, 1
local stream_state = ffi_new("int[1]")
local ngx_now = ngx.now

local stream_methods = {}
local stream_mt = { __index = stream_methods }


local function valid_window(window)
    return type(window) == "number" and window >= 1 and window <= INT_MAX
           and math_floor(window) == window
end


-- the caller's reference to the task goes once no coroutine of this stream
-- waits on its semaphore any more
local function stream_drop(s)
    local task = s.task
    if task == nil or s.reading or s.writing then
        return
    end

    s.task = nil
    ffi_gc(task, nil)
    lua_release(task)
end


local function stream_cancel(s, timed_out)
    if not s.over then
        s.over = true
        lua_stream_cancel(s.task, timed_out and 1 or 0)
    end
end


-- waits for the runtime's next move; returns true, or nil and why (the
-- idle timeout leaves the stream open, the overall one closes it)
local function stream_wait(s, flag, timeout)
    local remaining = s.deadline - ngx_now()
    if remaining <= 0 then
        stream_cancel(s, true)
        stream_drop(s)
        return nil, "timeout"
    end

    local overall = remaining <= timeout
    waiting.sem = s.task.sem
    s[flag] = true
    local ok, err = sema_wait(waiting, overall and remaining or timeout)
    s[flag] = false

    -- another coroutine of the stream closed it, ended it or timed out
    if s.closed or s.over then
        stream_drop(s)
        return nil, s.closed and "closed" or s.status and "answered"
                    or "timeout"
    end

    if not ok then
        if err == "timeout" and overall then
            stream_cancel(s, true)
            stream_drop(s)
        end
        return nil, err
    end

    return true
end


-- nil and how the stream ended: 0, or rc and the runtime's message, or the
-- reason the answer could not be delivered
local function stream_status(s)
    local status = s.status
    if status[1] == 0 or type(status[1]) == "string" then
        return nil, status[1]
    end
    return nil, status[1], status[2]
end


-- the answer that ended the stream: its last chunk, or nil and the status
local function stream_end(s)
    local task = s.task
    local rc, rsp_len, bad = task.rc, task.rsp_len, task.bad_answer
    local rsp
    if rsp_len >= 0 then
        rsp = ffi_str(task.rsp, rsp_len)
    end

    s.over = true
    stream_drop(s)

    if bad ~= 0 then
        s.status = { BAD_ANSWERS[bad] }
    elseif rc == 0 then
        s.status = { 0 }
        if rsp and rsp ~= "" then
            return rsp
        end
    else
        s.status = { rc, rsp }
    end

    return stream_status(s)
end


function stream_methods.read(s, timeout)
    if getmetatable(s) ~= stream_mt then
        return nil, "bad stream: call it as stream:read(timeout)"
    end

    if timeout == nil then
        timeout = s.idle_timeout

    elseif not valid_timeout(timeout) then
        return nil, "bad timeout: 0.001 to 2147483 seconds expected"
    end

    if s.status then
        return stream_status(s)
    end

    if s.closed then
        return nil, "closed"
    end

    if s.reading then
        return nil, "another coroutine reads this stream"
    end

    -- the overall timeout let the task go
    if s.over and s.task == nil then
        return nil, "timeout"
    end

    local state = stream_state
    while true do
        local chunk = lua_stream_next(s.task, state)
        if chunk ~= nil then
            return ffi_str(chunk.data, chunk.len)
        end

        if state[0] == STREAM_ANSWERED then
            return stream_end(s)
        end

        if state[0] ~= STREAM_WAIT then
            return nil, s.over and "timeout" or "closed"
        end

        local ok, err = stream_wait(s, "reading", timeout)
        if not ok then
            return nil, err
        end
    end
end


function stream_methods.write(s, chunk)
    if getmetatable(s) ~= stream_mt then
        return nil, "bad stream: call it as stream:write(chunk)"
    end

    if type(chunk) ~= "string" then
        return nil, "bad chunk: string expected, got " .. type(chunk)
    end

    if s.closed or s.over then
        return nil, s.status and "answered" or "closed"
    end

    if s.write_closed then
        return nil, "closed for writing"
    end

    if s.writing then
        return nil, "another coroutine writes this stream"
    end

    while true do
        local rc = lua_stream_write(s.task, chunk, #chunk)
        if rc == 0 then
            return true
        end

        if rc == -1 then
            -- the runtime answered: the next read returns what it said
            return nil, "answered"
        end

        if rc == -2 then
            return nil, "no memory"
        end

        local ok, err = stream_wait(s, "writing", s.idle_timeout)
        if not ok then
            return nil, err
        end
    end
end


function stream_methods.close_write(s)
    if getmetatable(s) ~= stream_mt then
        return nil, "bad stream: call it as stream:close_write()"
    end

    if not s.write_closed and s.task ~= nil and not s.over then
        lua_stream_close_write(s.task)
    end

    s.write_closed = true
    return true
end


function stream_methods.close(s)
    if getmetatable(s) ~= stream_mt then
        return nil, "bad stream: call it as stream:close()"
    end

    if not s.closed then
        s.closed = true
        if s.task ~= nil then
            stream_cancel(s, false)
            stream_drop(s)
        end
    end

    return true
end


local function open_stream(rt, method, req, opts)
    if loaded_ptr(rt) == nil then
        return nil, "bad runtime: call it as runtime:__stream(method, req, "
                    .. "opts)"
    end

    if type(method) ~= "string" or str_sub(method, 1, 2) == "__" then
        return nil, "bad method: string not starting with __ expected"
    end

    if req ~= nil and type(req) ~= "string" then
        return nil, "bad request: string or nil expected, got " .. type(req)
    end

    if opts ~= nil and type(opts) ~= "table" then
        return nil, "bad opts: table or nil expected"
    end

    local timeout = opts and opts.timeout or rt[TIMEOUT]
    if not valid_timeout(timeout) then
        return nil, "bad opts.timeout: 0.001 to 2147483 seconds expected"
    end

    local idle_timeout = opts and opts.idle_timeout or timeout
    if not valid_timeout(idle_timeout) then
        return nil, "bad opts.idle_timeout: 0.001 to 2147483 seconds expected"
    end

    local window = opts and opts.window or rt[WINDOW]
    if not valid_window(window) then
        return nil, "bad opts.window: integer from 1 to 2147483647 expected"
    end

    local ptr = rt[PTR]
    if ptr == nil then
        lua_failed(rt[LOADED_PTR], FAILURE_UNLOADED)
        return nil, "unloaded"
    end

    local phase = get_phase()
    if not can_wait[phase] then
        lua_failed(ptr, FAILURE_CANNOT_YIELD)
        return nil, "cannot yield in the " .. phase .. " phase"
    end

    local task = lua_post(ptr, method, #method, req, req and #req or 0,
                          window, post_err)
    if task == nil then
        return nil, ffi_str(post_err[0])
    end

    -- a stream collected before it was closed is closed then, and so is
    -- one whose request ends
    ffi_gc(task, lua_gc)
    if lua_stream_attach(task, get_request()) ~= 0 then
        ffi_gc(task, nil)
        lua_gc(task)
        return nil, "no memory"
    end

    return setmetatable({ task = task, deadline = ngx_now() + timeout,
                          idle_timeout = idle_timeout }, stream_mt)
end


local methods = { __unload = unload, __pending = pending, __stats = stats,
                  __stream = open_stream }
local cached_methods = 0


local function reserved()
    return false, "bad method: names starting with __ are reserved"
end


-- a function of its own: a closure made in __index would have every
-- return from __index close an upvalue (bytecode UCLO), which LuaJIT
-- cannot compile, and no loop that calls a method would ever be compiled
local function method_caller(name)
    return function(self, req, timeout)
        return call(self, name, req, timeout)
    end
end


local runtime_mt = {
    __index = function(rt, name)
        local method = methods[name]
        if method ~= nil or type(name) ~= "string" then
            return method
        end

        if str_sub(name, 1, 2) == "__" then
            return reserved
        end

        method = method_caller(name)
        if cached_methods < CACHED_METHODS_MAX then
            cached_methods = cached_methods + 1
            methods[name] = method
        end
        return method
    end,
}


-- an integer option for C, which checks its bounds
local function int_opt(value, default)
    if value == nil then
        return default
    end

    if type(value) == "number" and value >= INT_MIN and value <= INT_MAX
       and math_floor(value) == value
    then
        return value
    end

    return NOT_AN_INT
end


-- returns the options with defaults filled in, or nil and an error
local function check_opts(opts)
    if opts == nil then
        opts = {}

    elseif type(opts) ~= "table" then
        return nil, "bad opts: table or nil expected"
    end

    local is_global = opts.is_global
    if is_global == nil then
        is_global = false

    elseif type(is_global) ~= "boolean" then
        return nil, "bad opts.is_global: boolean expected"
    end

    local timeout = opts.timeout
    if timeout == nil then
        timeout = DEFAULT_TIMEOUT

    elseif not valid_timeout(timeout) then
        return nil, "bad opts.timeout: 0.001 to 2147483 seconds expected"
    end

    return {
        is_global = is_global,
        timeout = timeout,
        max_queue = int_opt(opts.max_queue, DEFAULT_MAX_QUEUE),
        spin = int_opt(opts.spin, DEFAULT_SPIN),
        loop_spin = int_opt(opts.loop_spin, DEFAULT_LOOP_SPIN),
        window = int_opt(opts.window, DEFAULT_WINDOW),
    }
end


-- "demo" -> "libdemo.so"; paths and file names are kept as they are
local function library_file(lib)
    if lib:find("/", 1, true) or lib:find("%.so$") or lib:find("%.so%.") then
        return lib
    end
    return "lib" .. lib .. ".so"
end


-- the length prefix keeps the key unambiguous whatever lib and cfg hold,
-- and nil and "" cfg apart
local function runtime_key(file, cfg)
    if cfg == nil then
        return #file .. ":" .. file
    end
    return #file .. ":" .. file .. "=" .. cfg
end


function _M.load(lib, cfg, opts)
    if type(lib) ~= "string" or lib == "" then
        return nil, "bad lib: non-empty string without NUL bytes expected"
    end

    if cfg ~= nil and type(cfg) ~= "string" then
        return nil, "bad cfg: string without NUL bytes or nil expected"
    end

    local checked, bad = check_opts(opts)
    if not checked then
        return nil, bad
    end

    if get_phase() == "init" then
        return nil, "cannot load a runtime in init_by_lua*: runtimes are per "
                    .. "worker process (threads do not survive fork); load "
                    .. "it in init_worker_by_lua* or later"
    end

    local file = library_file(lib)
    local key = runtime_key(file, cfg)
    local rt = runtimes[key]
    if rt then
        return rt
    end

    local err = get_string_buf(ERR_BUF_SIZE)
    local errlen = get_size_ptr()
    errlen[0] = ERR_BUF_SIZE

    local ptr = lua_load(file, #file, cfg, cfg and #cfg or 0,
                         checked.is_global and 1 or 0, checked.max_queue,
                         checked.spin, checked.loop_spin, checked.window, err,
                         errlen)
    if ptr == nil then
        return nil, ffi_str(err, errlen[0])
    end

    rt = { [PTR] = ptr, [TIMEOUT] = checked.timeout, [KEY] = key,
           [LOADED_PTR] = ptr, [WINDOW] = checked.window }
    setmetatable(rt, runtime_mt)
    runtimes[key] = rt

    return rt
end


-- every runtime loaded in this worker, unloaded ones too, newest first:
-- their __stats() tables
function _M.runtimes()
    local list = {}
    local ptr = lua_next_runtime(nil)
    while ptr ~= nil do
        list[#list + 1] = stats_of(ptr)
        ptr = lua_next_runtime(ptr)
    end
    return list
end


ngx.load_nonblocking_ffi = _M.load


return _M
