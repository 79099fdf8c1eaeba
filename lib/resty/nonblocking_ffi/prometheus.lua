-- SPDX-License-Identifier: BSD-2-Clause

-- Every worker's runtime statistics as a Prometheus page.
--
-- Each worker has its own runtimes, so a scrape, which one worker serves,
-- sees the others only through shared memory: every worker publishes its
-- figures into a lua_shared_dict on a timer, and the page renders what the
-- dict holds (the serving worker publishes afresh first).  A worker that
-- exits stops publishing, and its entry expires.
--
--   lua_shared_dict nffi_stats 1m;
--   init_worker_by_lua_block {
--       require("resty.nonblocking_ffi.prometheus").init("nffi_stats")
--   }
--   location = /metrics {
--       content_by_lua_block {
--           require("resty.nonblocking_ffi.prometheus").collect()
--       }
--   }

local nffi = require "resty.nonblocking_ffi"

local ngx = ngx
local shared = ngx.shared
local worker_pid = ngx.worker.pid
local timer_every = ngx.timer.every
local encode_args = ngx.encode_args
local decode_args = ngx.decode_args
local concat = table.concat
local sort = table.sort
local type = type
local tonumber = tonumber
local huge = math.huge
local floor = math.floor
local ipairs = ipairs
local str_format = string.format
local str_gsub = string.gsub
local str_sub = string.sub


local LATENCY_LE = nffi.LATENCY_LE
local KEY_PREFIX = "nonblocking_ffi:"
local DEFAULT_INTERVAL = 5

-- the failure reasons of __stats().failed, in the page's order
local REASONS = { "timeout", "queue_full", "unloaded", "cannot_yield",
                  "bad_answer" }

-- what a worker publishes of each runtime, in __stats() names
local COUNTS = { "posted", "answered_ok", "answered_error", "late",
                 "unclaimed", "bytes_in", "bytes_out", "in_flight", "queued",
                 "queued_max", "pollers_sleeping", "pollers_spinning",
                 "loaded_at", "latency_sum" }


local _M = {}

local dict, interval


-- one worker's runtimes as a string: a line of query arguments each
local function snapshot()
    local lines = {}
    for _, st in ipairs(nffi.runtimes()) do
        local args = { lib = st.lib, cfg = st.cfg,
                       loaded = st.loaded and 1 or 0 }
        for _, name in ipairs(COUNTS) do
            args[name] = st[name]
        end
        for _, reason in ipairs(REASONS) do
            args["failed_" .. reason] = st.failed[reason]
        end
        for i, count in ipairs(st.latency_count) do
            args["le" .. i] = count
        end
        lines[#lines + 1] = encode_args(args)
    end
    return concat(lines, "\n")
end


local function publish()
    local ok, err = dict:set(KEY_PREFIX .. worker_pid(), snapshot(),
                             3 * interval)
    if not ok then
        ngx.log(ngx.ERR, "nonblocking_ffi: cannot publish statistics in ",
                "the shared dict: ", err)
    end
end


-- starts this worker's publishing: call it in init_worker_by_lua*
function _M.init(dict_name, opts)
    if type(dict_name) ~= "string" or shared[dict_name] == nil then
        return nil, "bad dict_name: the name of a lua_shared_dict expected"
    end

    local every = opts and opts.interval or DEFAULT_INTERVAL
    if type(every) ~= "number" or every < 0.01 then
        return nil, "bad opts.interval: seconds >= 0.01 expected"
    end

    dict, interval = shared[dict_name], every

    local ok, err = timer_every(interval, function(premature)
        if not premature then
            publish()
        end
    end)
    if not ok then
        return nil, "cannot start the publishing timer: " .. err
    end

    return true
end


local function label_value(value)
    value = str_gsub(value, "\\", "\\\\")
    value = str_gsub(value, "\n", "\\n")
    return (str_gsub(value, '"', '\\"'))
end


local function number(value)
    if value == huge then
        return "+Inf"
    end
    -- counters exactly (up to 2^53), fractions of a second to the ns
    if value == floor(value) then
        return str_format("%.17g", value)
    end
    return str_format("%.9g", value)
end


-- every published runtime of every worker: { labels = ..., args = ... }
local function published()
    local runtimes = {}
    for _, key in ipairs(dict:get_keys(0)) do
        if str_sub(key, 1, #KEY_PREFIX) == KEY_PREFIX then
            local pid = str_sub(key, #KEY_PREFIX + 1)
            local text = dict:get(key)
            for line in (text or ""):gmatch("[^\n]+") do
                local args = decode_args(line, 0)
                runtimes[#runtimes + 1] = {
                    args = args,
                    labels = str_format('pid="%s",lib="%s",cfg="%s"',
                                        label_value(pid),
                                        label_value(args.lib or ""),
                                        label_value(args.cfg or "")),
                }
            end
        end
    end
    sort(runtimes, function(a, b) return a.labels < b.labels end)
    return runtimes
end


-- the page's metric families: name, type, help, and its samples
local function families(runtimes, out)
    local function family(name, kind, help, samples)
        out[#out + 1] = "# HELP " .. name .. " " .. help
        out[#out + 1] = "# TYPE " .. name .. " " .. kind
        for _, rt in ipairs(runtimes) do
            samples(rt.labels, rt.args)
        end
    end

    local function sample(name, labels, value)
        out[#out + 1] = name .. "{" .. labels .. "} "
                        .. number(tonumber(value) or 0)
    end

    local function simple(name, kind, help, arg)
        family(name, kind, help, function(labels, args)
            sample(name, labels, args[arg])
        end)
    end

    simple("nonblocking_ffi_calls_posted_total", "counter",
           "Calls posted to the runtime's queue.", "posted")
    family("nonblocking_ffi_answers_total", "counter",
           "Answers taken from the runtime, by rc (ok: 0).",
           function(labels, args)
               sample("nonblocking_ffi_answers_total", labels .. ',rc="ok"',
                      args.answered_ok)
               sample("nonblocking_ffi_answers_total",
                      labels .. ',rc="error"', args.answered_error)
           end)
    family("nonblocking_ffi_local_failures_total", "counter",
           "Calls that failed in nginx, not in the runtime, by reason.",
           function(labels, args)
               for _, reason in ipairs(REASONS) do
                   sample("nonblocking_ffi_local_failures_total",
                          labels .. ',reason="' .. reason .. '"',
                          args["failed_" .. reason])
               end
           end)
    simple("nonblocking_ffi_late_answers_total", "counter",
           "Answers that came after their call timed out.", "late")
    simple("nonblocking_ffi_unclaimed_answers_total", "counter",
           "Answers that came when their caller had gone otherwise.",
           "unclaimed")
    simple("nonblocking_ffi_request_bytes_total", "counter",
           "Bytes of requests posted.", "bytes_in")
    simple("nonblocking_ffi_answer_bytes_total", "counter",
           "Bytes of answers taken.", "bytes_out")
    simple("nonblocking_ffi_calls_in_flight", "gauge",
           "Calls posted and not answered yet.", "in_flight")
    simple("nonblocking_ffi_calls_queued", "gauge",
           "Calls not yet taken by a poller.", "queued")
    simple("nonblocking_ffi_calls_queued_max", "gauge",
           "The most calls ever queued at once.", "queued_max")
    family("nonblocking_ffi_pollers", "gauge",
           "Poll threads waiting for calls, by state.",
           function(labels, args)
               sample("nonblocking_ffi_pollers", labels .. ',state="sleeping"',
                      args.pollers_sleeping)
               sample("nonblocking_ffi_pollers", labels .. ',state="spinning"',
                      args.pollers_spinning)
           end)
    simple("nonblocking_ffi_runtime_loaded", "gauge",
           "1 while the runtime is loaded, 0 once unloaded.", "loaded")
    simple("nonblocking_ffi_runtime_loaded_timestamp_seconds", "gauge",
           "When the runtime was loaded, in seconds since the epoch.",
           "loaded_at")

    local le = LATENCY_LE
    family("nonblocking_ffi_call_duration_seconds", "histogram",
           "Time from post to answer taken, in powers of two from 1 us.",
           function(labels, args)
               local name = "nonblocking_ffi_call_duration_seconds"
               for i = 1, #le do
                   sample(name .. "_bucket",
                          labels .. ',le="' .. number(le[i]) .. '"',
                          args["le" .. i])
               end
               sample(name .. "_sum", labels, args.latency_sum)
               sample(name .. "_count", labels, args["le" .. #le])
           end)
end


-- the page: this worker publishes afresh, then every worker's figures are
-- rendered in the Prometheus text format
function _M.collect()
    if dict == nil then
        ngx.status = 500
        ngx.say("resty.nonblocking_ffi.prometheus: init() was not called ",
                "in init_worker_by_lua*")
        return
    end

    publish()

    local out = {}
    families(published(), out)
    out[#out + 1] = ""

    ngx.header["Content-Type"] = "text/plain; version=0.0.4"
    ngx.print(concat(out, "\n"))
end


return _M
