-- SPDX-License-Identifier: BSD-2-Clause

-- The benchmark's workloads, run inside the nginx worker.  Every path
-- ("ffi", "go", "python", "python_async", "java", "rust", "rust_async",
-- "unix", "tcp", "thread", "floor") is a function that sends a payload and returns the echoed
-- payload, so the workloads time all paths the same way.

local ffi = require "ffi"
local semaphore = require "ngx.semaphore"

local C = ffi.C
local ngx = ngx
local tonumber = tonumber
local string_rep = string.rep
local string_char = string.char
local table_sort = table.sort
local table_concat = table.concat
local math_floor = math.floor
local band = bit.band
local rshift = bit.rshift

ffi.cdef[[
    typedef struct { long tv_sec; long tv_nsec; } nffi_bench_timespec_t;
    int clock_gettime(int clk_id, nffi_bench_timespec_t *tp);
]]

local CLOCK_MONOTONIC = 1
local ts = ffi.new("nffi_bench_timespec_t")

local function now_us()
    C.clock_gettime(CLOCK_MONOTONIC, ts)
    return tonumber(ts.tv_sec) * 1e6 + tonumber(ts.tv_nsec) / 1e3
end


local _M = {}

local config = {}

function _M.configure(cfg)
    config = cfg
end


local function be32(n)
    return string_char(band(rshift(n, 24), 255), band(rshift(n, 16), 255),
                       band(rshift(n, 8), 255), band(n, 255))
end


local function socket_path(address)
    return function()
        local sock = ngx.socket.tcp()
        local ok, err
        if address.unix then
            ok, err = sock:connect(address.unix)
        else
            ok, err = sock:connect("127.0.0.1", address.port)
        end
        if not ok then
            error("connect: " .. err)
        end
        return function(payload)
            local _, err = sock:send({ be32(#payload), payload })
            if err then error("send: " .. err) end
            local head, err = sock:receive(4)
            if not head then error("receive: " .. err) end
            local b1, b2, b3, b4 = head:byte(1, 4)
            local len = ((b1 * 256 + b2) * 256 + b3) * 256 + b4
            local body, err = sock:receive(len)
            if not body then error("receive: " .. err) end
            return body
        end, function() sock:close() end
    end
end


local function runtime_path(lib, cfg, is_global)
    return function()
        local opts = { spin = config.opts.spin,
                       loop_spin = config.opts.loop_spin,
                       is_global = is_global }
        local rt = assert(ngx.load_nonblocking_ffi(lib, cfg, opts))
        return function(payload)
            local ok, res = rt:echo(payload)
            if not ok then error("call failed: " .. tostring(res)) end
            return res
        end, function() end
    end
end


-- each maker returns call(payload) -> echoed payload, and close()
local makers = {
    ffi = function()
        return runtime_path(config.example, config.example_cfg)()
    end,

    go = function() return runtime_path(config.go, "echo")() end,

    python = function()
        return runtime_path(config.python, config.python_echo .. ",init",
                            true)()
    end,

    -- the same echo from one asyncio event loop (init_async)
    python_async = function()
        return runtime_path(config.python, config.python_echo
                            .. ",init_async", true)()
    end,

    -- the handler runs on the poll thread (examples/java, "init,0")
    java = function()
        return runtime_path(config.java, "example.Echo,init,0")()
    end,

    -- sdk/rust: one poll thread, and the tokio adapter on the queue's fd
    rust = function() return runtime_path(config.rust, "echo")() end,

    rust_async = function()
        return runtime_path(config.rust, "echo_async")()
    end,

    unix = function() return socket_path({ unix = config.unix })() end,

    tcp = function() return socket_path({ port = config.tcp_port })() end,

    thread = function()
        return function(payload)
            local ok, res = ngx.run_worker_thread("bench", "bench_echo",
                                                  "echo", payload)
            if not ok then error("worker thread: " .. tostring(res)) end
            return res
        end, function() end
    end,

    -- the floor: a light thread answers through ngx.semaphore, no other
    -- OS thread involved
    floor = function()
        local ask, answer = semaphore.new(), semaphore.new()
        local box, running = nil, true
        local peer = ngx.thread.spawn(function()
            while running do
                if ask:wait(10) and running then
                    answer:post()
                end
            end
        end)
        return function(payload)
            box = payload
            ask:post()
            answer:wait(10)
            return box
        end, function()
            running = false
            ask:post()
            ngx.thread.wait(peer)
        end
    end,
}


for name, maker in pairs(makers) do
    makers[name] = function()
        local ok, call, close = pcall(maker)
        if not ok then
            error(name .. ": " .. tostring(call))
        end
        return call, close
    end
end


local function payload_of(size)
    return string_rep("x", size)
end


-- n calls one after the other; with timed false, no clock is read
-- between the calls (the loop the ancestor's published table timed) and
-- only calls_per_s is reported
function _M.sequential(path, size, n, timed)
    local call, close = makers[path]()
    local payload = payload_of(size)

    for _ = 1, math.min(n, 200) do       -- warm up: JIT, pools, spin
        call(payload)
    end

    if not timed then
        local started = now_us()
        for _ = 1, n do
            if #call(payload) ~= size then error("bad echo size") end
        end
        local elapsed = now_us() - started
        close()
        return "calls_per_s=" .. math_floor(n / elapsed * 1e6)
    end

    local samples = ffi.new("double[?]", n)
    local started = now_us()
    for i = 0, n - 1 do
        local t0 = now_us()
        local res = call(payload)
        samples[i] = now_us() - t0
        if #res ~= size then error("bad echo size " .. #res) end
    end
    local elapsed = now_us() - started
    close()

    local sorted = {}
    for i = 0, n - 1 do sorted[i + 1] = samples[i] end
    table_sort(sorted)

    return table_concat({
        "calls_per_s=" .. math_floor(n / elapsed * 1e6),
        "p50_us=" .. sorted[math_floor(n * 0.5) + 1],
        "p99_us=" .. sorted[math_floor(n * 0.99) + 1],
    }, " ")
end


function _M.concurrent(path, size, n, coroutines)
    local payload = payload_of(size)
    local per = math_floor(n / coroutines)
    local threads = {}

    local started = now_us()
    for i = 1, coroutines do
        threads[i] = ngx.thread.spawn(function()
            local call, close = makers[path]()
            for _ = 1, per do
                if #call(payload) ~= size then error("bad echo size") end
            end
            close()
        end)
    end
    for i = 1, coroutines do
        local ok, err = ngx.thread.wait(threads[i])
        if not ok then error(err) end
    end
    local elapsed = now_us() - started

    return "calls_per_s=" .. math_floor(per * coroutines / elapsed * 1e6)
end


-- one call per HTTP request (the wrk workload)
local http_call

function _M.http_call()
    if not http_call then
        http_call = makers.ffi()
    end
    return http_call(payload_of(512))
end


return _M
